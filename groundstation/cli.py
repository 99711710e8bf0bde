"""``groundstation`` command: the ground end of linkstack as its own process.

``groundstation ask PROMPT --link tcp://HOST:PORT`` tokenizes PROMPT exactly as
``onboard generate`` does (same chat format, same flags, same stop ids, so the ids
the spacecraft generates match the reference run id for id), sends the request up
the link as role "ground" and shows the answer live on stdout, with the link
statistics on stderr.  With ``--json`` it prints one JSON object instead.

Exit status: 0 a complete answer, 1 a request that failed (timeout, an error
reported by the spacecraft, a cancelled stream, a link or tokenizer that cannot be
opened), 2 bad options, 130 interrupted.  Never a traceback.  torch is never
imported: the tokenizer is :mod:`linkstack.tokenizer`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from linkstack.cli.options import add_generation_options, wire_params
from linkstack.errors import LinkError, LocalProtocolError

if TYPE_CHECKING:
    from groundstation.station import Answer
    from linkstack.inference_protocol import GenerationParams
    from linkstack.keystore import RoleSecurity
    from linkstack.recording import SessionRecorder
    from linkstack.tokenizer import Tokenizer

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

#: Model specs of ``onboard --model`` that are built in (not a checkpoint directory).
BUILT_IN_MODELS: Final = ("embedded", "qwen3-0.6b-shape")
#: Stop ids of the built-in models: Qwen3 generation_config.json ``eos_token_id``
#: (the same as onboard/model.py ``_QWEN3_STOP_IDS``).
_QWEN3_GENERATION_EOS: Final = (151645, 151643)

DEFAULT_TIMEOUT_S: Final = 120.0

logger = logging.getLogger(__name__)


class _UsageError(Exception):
    """Options that parse but make no sense: exit 2."""


class _RunError(Exception):
    """The request or its setup failed: exit 1 (the message is printed)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundstation",
        description="Ground side of linkstack: prompts up, Qwen-3 token streams down.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ask = commands.add_parser(
        "ask", help="send a prompt over the link and show the answer as it arrives"
    )
    ask.add_argument("prompt", metavar="PROMPT", help="prompt text")
    ask.add_argument(
        "--link", required=True, metavar="URL", help="tcp://HOST:PORT or udp://HOST:PORT"
    )
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='whose tokenizer: "embedded" (default), "qwen3-0.6b-shape" (both Qwen-3), '
        "or the checkpoint directory the spacecraft runs",
    )
    add_generation_options(ask)
    ask.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the whole answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    ask.add_argument("-v", "--verbose", action="store_true", help="log link events on stderr")
    ask.add_argument(
        "--capture",
        metavar="FILE.pcapng",
        help="record the session: CLTUs as sent, CADUs as received, Space Packets"
        " (with --keys: ciphertext only)",
    )
    ask.add_argument(
        "--keys",
        metavar="PATH",
        help="SDLS key file (linkstack keys generate): protect the uplink and verify the"
        " downlink; IV counters are kept in PATH.ground.counters",
    )
    ask.set_defaults(handler=_ask)

    replay = commands.add_parser(
        "replay",
        help="replay a recorded session through the ground side, on the recorded times",
        description="Feed the CADUs of a capture (linkstack pcapng) through a fresh ground"
        " station at their recorded times and print the conversation as `ask` printed it;"
        " or decode a plain file of concatenated CADUs.",
    )
    replay.add_argument(
        "file", metavar="FILE", help="a .pcapng written with --capture, or concatenated CADUs"
    )
    replay.add_argument("--json", action="store_true", help="print one JSON object per request")
    replay.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="whose tokenizer (default: the model the capture names, else embedded)",
    )
    replay.add_argument(
        "--keys",
        metavar="PATH",
        help="the SDLS key file of a protected session (its capture holds ciphertext only);"
        " nothing is written next to it",
    )
    replay.add_argument("-v", "--verbose", action="store_true", help="log link events on stderr")
    replay.set_defaults(handler=_replay)
    return parser


# -- tokenizer and parameters, as onboard generate has them ------------------------------


def _load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer ``onboard --model SPEC`` uses: Qwen-3's, or the checkpoint's own."""
    from linkstack.tokenizer import Tokenizer

    if spec in BUILT_IN_MODELS:
        return Tokenizer.qwen3()
    path = Path(spec)
    if not path.is_dir():
        raise _UsageError(
            f"--model {spec!r} is neither a built-in ({', '.join(BUILT_IN_MODELS)}) "
            "nor a checkpoint directory"
        )
    return Tokenizer.from_pretrained_dir(path)


def _eos_list(value: object) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _checkpoint_generation_eos(path: Path) -> list[int]:
    """``eos_token_id`` of generation_config.json, else of config.json (as transformers)."""
    for name in ("generation_config.json", "config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RunError(f"cannot read {file}: {exc}") from exc
        if isinstance(data, dict) and "eos_token_id" in data:
            return _eos_list(data["eos_token_id"])
    return []


def default_stop_ids(spec: str, eos_ids: Sequence[int]) -> tuple[int, ...]:
    """The stop ids ``onboard`` derives for ``--model SPEC``: the tokenizer's eos ids,
    then the generation config's, without repeats (onboard/model.py ``load_model``)."""
    generation = (
        list(_QWEN3_GENERATION_EOS)
        if spec in BUILT_IN_MODELS
        else _checkpoint_generation_eos(Path(spec))
    )
    return tuple(dict.fromkeys([*eos_ids, *generation]))


# -- the run -------------------------------------------------------------------------------


_FINISH_NAMES: Final = {0: "stop", 1: "max_tokens", 2: "cancelled", 3: "error"}


def _finish_name(reason: int | None) -> str | None:
    """The wire FinishReason under ``onboard generate``'s name for it."""
    return None if reason is None else _FINISH_NAMES.get(int(reason), str(reason))


def _ask(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from linkstack.aio import LinkAddress
    from linkstack.inference_protocol import PromptRequest

    try:
        LinkAddress.parse(args.link)
        params = wire_params(args)
    except LocalProtocolError as exc:
        raise _UsageError(str(exc)) from exc
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise _UsageError(f"--timeout {args.timeout} must be a positive number of seconds")

    tokenizer = _load_tokenizer(args.model)
    try:
        params = dataclasses.replace(
            params, stop_ids=default_stop_ids(args.model, tokenizer.eos_ids)
        )
        prompt_ids = tokenizer.encode_prompt(args.prompt, chat=not args.no_chat)
        # Build it once here so that an empty or overlong prompt is a usage error.
        PromptRequest(request_id=0, params=params, prompt_ids=tuple(prompt_ids))
    except LocalProtocolError as exc:
        raise _UsageError(f"prompt: {exc}") from exc

    keys: RoleSecurity | None = None
    if args.keys is not None:
        from linkstack.keystore import link_security

        keys = link_security(args.keys, role="ground")

    live = None if args.json else stdout
    with _recorder(args, keys) as recorder:
        answer = asyncio.run(
            _exchange(
                args.link,
                tokenizer=tokenizer,
                prompt_ids=prompt_ids,
                params=params,
                timeout=args.timeout,
                live=live,
                recorder=recorder,
                keys=keys,
            )
        )
    if keys is not None:
        keys.save_receive_state()
    security = _security(keys is not None, answer)
    if args.json:
        record = answer_record(
            answer, params, link=args.link, model=args.model, chat=not args.no_chat
        )
        record["security"] = security
        stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        if answer.text:
            stdout.write("\n")  # end the live line
        stderr.write(f"groundstation: {answer_summary(answer)}\n")
        if keys is not None:
            stderr.write(
                f"groundstation: SDLS on; {security['mac_failures']} MAC failures,"
                f" {security['replays']} replays, {security['unknown_spi']} unknown SPI\n"
            )
    stdout.flush()
    if answer.error is not None:
        stderr.write(f"groundstation: {answer.error}\n")
        return EXIT_FAILED
    if _finish_name(answer.finish_reason) == "cancelled":
        stderr.write(f"groundstation: request {answer.request_id} was cancelled onboard\n")
        return EXIT_FAILED
    return EXIT_OK


def _security(enabled: bool, answer: Answer) -> dict[str, Any]:
    """The ``security`` entry of the ``--json`` record: SDLS refusals at the ground."""
    from linkstack.keystore import security_record

    return security_record(enabled, answer.drops)


def _recorder(
    args: argparse.Namespace, keys: RoleSecurity | None = None
) -> contextlib.AbstractContextManager[SessionRecorder | None]:
    """``--capture``: the ground's recorder on the running loop's clock.

    A protected session (``keys``) records ciphertext only: no decoded Space Packets,
    no prompt in the metadata, only which SPIs protected it.
    """
    from linkstack.capture import session_metadata
    from linkstack.cli.capture import open_recorder
    from linkstack.endpoints import LinkConfig

    metadata = session_metadata(
        LinkConfig(),
        seed=args.seed,
        side="ground",
        program="groundstation ask",
        link_url=args.link,
        model=args.model,
        chat=not args.no_chat,
        timeout_s=args.timeout,
    )
    if keys is None:
        metadata["prompt"] = args.prompt
    else:
        metadata["security"] = keys.metadata()
    return open_recorder(
        args.capture,
        metadata,
        side="ground",
        clock=lambda: asyncio.get_running_loop().time(),
        record_packets=keys is None,
    )


def _replay(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """``groundstation replay FILE``: the recorded conversation, replayed."""
    from groundstation.replay import replay_file

    model, outcome = replay_file(
        args.file, model=args.model, tokenizer_for=_load_tokenizer, keys=args.keys
    )
    if outcome is None:
        return EXIT_OK  # pragma: no cover - replay_file returns a result or raises
    if isinstance(outcome, dict):  # a plain CADU stream
        if args.json:
            stdout.write(json.dumps(outcome, ensure_ascii=False) + "\n")
        else:
            for stream in outcome["streams"]:
                stdout.write(f"request {stream['request_id']}: {stream['text']}\n")
            stderr.write(
                f"groundstation: {len(outcome['streams'])} stream(s),"
                f" {outcome['counters']['frames_received']} frames,"
                f" {outcome['counters']['dropped']} dropped (tokenizer {model})\n"
            )
        return EXIT_OK
    status = EXIT_OK
    for answer, record in zip(outcome.answers, outcome.records, strict=True):
        if args.json:
            stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            stdout.write(answer.text + "\n")
            stderr.write(f"groundstation: {answer_summary(answer)}\n")
        if answer.error is not None:
            stderr.write(f"groundstation: {answer.error}\n")
            status = EXIT_FAILED
        elif _finish_name(answer.finish_reason) == "cancelled":
            status = EXIT_FAILED
    if any(record["replay"]["uplink"]["identical"] is False for record in outcome.records):
        stderr.write(
            "groundstation: the replayed ground sent other CLTUs than the recorded ones"
            f" ({len(outcome.uplink_replayed)} replayed, {len(outcome.uplink_recorded)} recorded)\n"
        )
    return status


async def _exchange(
    url: str,
    *,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    timeout: float,
    live: TextIO | None,
    recorder: SessionRecorder | None = None,
    keys: RoleSecurity | None = None,
) -> Answer:
    from groundstation.station import GroundStation, Update
    from linkstack.aio import open_link

    station = GroundStation(tokenizer, security=None if keys is None else keys.security)
    try:
        link = await asyncio.wait_for(
            open_link(
                url,
                role="ground",
                on_receive=station.on_receive
                if recorder is None
                else recorder.receiver(station.on_receive),
            ),
            timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise _RunError(f"cannot open link {url}: {exc or 'timed out'}") from exc
    try:
        if recorder is not None:
            station.endpoint.packet_tap = recorder.tap
        station.attach(link if recorder is None else recorder.link(link))

        shown = live

        def show(update: Update) -> None:
            nonlocal shown
            if shown is None or not update.text:
                return
            try:
                shown.write(update.text)
                shown.flush()
            except OSError:  # a closed pipe: stop showing, the exit reports it
                shown = None

        return await station.ask(prompt_ids, params, on_update=show, timeout=timeout)
    finally:
        link.close()


def _counters(answer: Answer) -> dict[str, Any]:
    counters = dataclasses.asdict(answer.counters)
    counters["uplink_bits"] = answer.counters.uplink_octets * 8
    return counters


def answer_record(
    answer: Answer, params: GenerationParams, *, link: str, model: str, chat: bool
) -> dict[str, Any]:
    """The ``--json`` object of an answer (``linkstack demo`` extends it)."""
    end = answer.end
    return {
        "link": link,
        "model": model,
        "params": {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "chat": chat,
            "stop_ids": list(params.stop_ids),
        },
        "request_id": answer.request_id,
        "prompt_ids": list(answer.prompt_ids),
        "received_ids": list(answer.received_ids),
        "text": answer.text,
        "finish_reason": _finish_name(answer.finish_reason),
        "error": None if answer.error is None else str(answer.error),
        "complete": answer.complete,
        "time_to_first_token_s": answer.time_to_first_token_s,
        "total_s": answer.total_s,
        "onboard": None
        if end is None
        else {
            "time_to_first_token_s": end.time_to_first_token_us / 1e6,
            "generation_s": end.generation_time_ms / 1e3,
            "tokens_per_s": end.tokens_per_s,
        },
        "missing": [[r.first_index, r.count] for r in answer.missing],
        "reassembly": dataclasses.asdict(answer.stats),
        "counters": _counters(answer),
        "drops": answer.drops,
    }


def answer_summary(answer: Answer) -> str:
    """One line of link statistics for stderr."""
    c = answer.counters
    ttft = (
        "no id"
        if answer.time_to_first_token_s is None
        else f"first id {answer.time_to_first_token_s * 1e3:.0f} ms"
    )
    return (
        f"{_finish_name(answer.finish_reason) or 'no end'}, "
        f"{len(answer.received_ids)} ids, {ttft}, total {answer.total_s:.2f} s; "
        f"up {c.cltus_sent} CLTU(s), {c.uplink_octets * 8} bits; "
        f"down {c.frames_received} frames, {c.frames_lost} lost, {c.dropped} dropped, "
        f"{c.rs_corrected_symbols} RS symbols corrected, {c.rs_uncorrectable} uncorrectable"
    )


# -- entry point -----------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_to(stream: TextIO, verbose: bool) -> Iterator[None]:
    """Library log records on ``stream`` for the duration of one command."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("groundstation: %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``groundstation`` console script."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _logging_to(err, args.verbose):
            return int(args.handler(args, out, err))
    except _UsageError as exc:
        err.write(f"groundstation: {exc}\n")
        return EXIT_USAGE
    except (_RunError, LinkError) as exc:
        err.write(f"groundstation: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
