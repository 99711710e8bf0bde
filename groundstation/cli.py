"""``groundstation`` command: the ground end of linkstack as its own process.

``groundstation ask PROMPT --link tcp://HOST:PORT`` tokenizes PROMPT exactly as
``onboard generate`` does (same chat format, same flags, same stop ids, so the ids
the spacecraft generates match the reference run id for id), sends the request up
the link as role "ground" and shows the answer live on stdout, with the link
statistics on stderr.  With ``--json`` it prints one JSON object instead
(docs/json.md).

Ctrl-C (or SIGTERM) sends a Cancel up, waits a few seconds for the spacecraft to
confirm it, prints what arrived and a line saying it was interrupted, and exits 130.
A link that does not work (nothing listens, nothing comes down, frames protected with
other keys) is diagnosed within seconds instead of after the whole timeout.

Exit status (as every linkstack program): 0 a complete answer, 1 a request that
failed (timeout, an error reported by the spacecraft, a cancelled stream, a link or
tokenizer that cannot be opened), 2 bad options, 130 interrupted.  Never a
traceback.  torch is never imported: the tokenizer is linkstack.inference.tokenizer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from groundstation.records import answer_record, answer_summary, finish_name
from linkstack.console.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LiveLine,
    RunError,
    UsageError,
    add_session_options,
    add_verbose_option,
    new_parser,
    os_cause,
    positive_int,
    positive_number,
    positive_seconds,
    text_program,
    usage_errors,
)
from linkstack.console.options import add_generation_options, wire_params
from linkstack.errors import LinkError, LocalProtocolError

if TYPE_CHECKING:
    from groundstation.recovery import RecoveryCounters
    from groundstation.session import Outcome
    from groundstation.station import Answer
    from linkstack.capture.recording import SessionRecorder
    from linkstack.inference.protocol import GenerationParams
    from linkstack.inference.tokenizer import Tokenizer
    from linkstack.sdls.keystore import RoleSecurity

PROG: Final = "groundstation"

#: Model specs of ``onboard --model`` that are built in (not a checkpoint directory).
BUILT_IN_MODELS: Final = ("embedded", "embedded-full-vocab", "qwen3-0.6b-shape")
#: Stop ids of the built-in models: Qwen3 generation_config.json ``eos_token_id``
#: (the same as onboard/model.py ``_QWEN3_STOP_IDS``).
_QWEN3_GENERATION_EOS: Final = (151645, 151643)

DEFAULT_TIMEOUT_S: Final = 120.0

#: Kept for the modules that imported them from here.
_finish_name = finish_name


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(PROG, "Ground side of linkstack: prompts up, Qwen-3 token streams down.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ask = commands.add_parser(
        "ask",
        help="send a prompt over the link and show the answer as it arrives",
        description="Send PROMPT up the link, show the answer as it arrives, and print"
        " the link statistics on stderr.  Ctrl-C cancels the request on board.",
    )
    ask.add_argument("prompt", metavar="PROMPT", help="prompt text")
    ask.add_argument(
        "--link",
        required=True,
        metavar="URL",
        help="tcp://HOST:PORT, udp://HOST:PORT, or zmq://?tx=ENDPOINT&rx=ENDPOINT (BPSK IQ"
        " both ways, docs/radio.md)",
    )
    ask.add_argument("--json", action="store_true", help="print one JSON object (docs/json.md)")
    ask.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='whose tokenizer: "embedded" (default), "embedded-full-vocab", "qwen3-0.6b-shape"'
        " (all Qwen-3), or the checkpoint directory the spacecraft runs",
    )
    add_generation_options(ask)
    ask.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the whole answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_verbose_option(ask)
    add_session_options(
        ask,
        capture_help="record the session: CLTUs as sent, CADUs as received, Space Packets",
        keys_help="protect the uplink and verify the downlink; IV counters are kept in"
        " PATH.ground.counters",
    )
    ask.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the ground keeps its request-id counter (default"
        " $XDG_STATE_HOME/linkstack, else ~/.local/state/linkstack)",
    )
    ask.set_defaults(handler=_ask)

    replay = commands.add_parser(
        "replay",
        help="replay a recorded session through the ground side, on the recorded times",
        description="Feed the CADUs of a capture (linkstack pcapng) through a fresh ground"
        " station at their recorded times and print the conversation as `ask` printed it;"
        " or decode a plain file of concatenated CADUs, or demodulate and decode a pass"
        " recorded as IQ samples (REC.sigmf-meta, as `linkstack radio tx` writes it).",
    )
    replay.add_argument(
        "file",
        metavar="FILE",
        help="a .pcapng written with --capture, a SigMF recording (.sigmf-meta), or"
        " concatenated CADUs",
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
    _add_iq_options(replay)
    add_verbose_option(replay)
    replay.set_defaults(handler=_replay)
    _add_serve_commands(commands)
    from groundstation.transfer import add_file_commands

    add_file_commands(commands)
    return parser


# -- serve: the OpenAI-compatible gateway (groundstation/gateway/, docs/gateway.md) ---------

#: Hosts ``serve`` may listen on without ``--api-keys``.
_LOOPBACK_HOSTS: Final = ("127.0.0.1", "::1", "localhost")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0..65535)")
    return host, int(port)


def _add_serve_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve OpenAI-compatible HTTP endpoints over the link (many users at once)",
        description="Listen for HTTP on --http and serve /v1/models, /v1/chat/completions"
        " and /v1/completions (OpenAI-compatible, streaming as server-sent events) over one"
        " link to `onboard serve`, with an operator page at /.  Requests of every client"
        " share the link; a client that disconnects gets its request cancelled on board."
        "  Stops on SIGINT or SIGTERM (exit 0).  docs/gateway.md has the details.",
    )
    serve.add_argument(
        "--http",
        required=True,
        type=_host_port,
        metavar="HOST:PORT",
        help="where to listen for HTTP; port 0 picks a free one (printed when ready)",
    )
    serve.add_argument(
        "--link", required=True, metavar="URL", help="tcp://HOST:PORT or udp://HOST:PORT"
    )
    serve.add_argument(
        "--api-keys",
        metavar="FILE",
        help="API key file (groundstation api-key add; mode 0600): clients send"
        " 'Authorization: Bearer KEY'; required unless HOST is a loopback address",
    )
    serve.add_argument(
        "--keys",
        metavar="PATH",
        help="SDLS key file (linkstack keys generate): protect the uplink and verify the"
        " downlink; IV counters are kept in PATH.ground.counters",
    )
    serve.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help="whose tokenizer, as for ask (default embedded)",
    )
    serve.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="the model name /v1/models lists and requests give (default: SPEC, or the"
        " checkpoint directory's name)",
    )
    serve.add_argument(
        "--max-prompt-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="the uplink budget: longer prompts get 413 (default and most 16384)",
    )
    serve.add_argument(
        "--default-max-tokens",
        type=positive_int,
        default=256,
        metavar="N",
        help="max_tokens of a request that gives none (default 256)",
    )
    serve.add_argument(
        "--timeout",
        type=positive_seconds,
        default=300.0,
        metavar="S",
        help="seconds a request may take before it is cancelled on board (504; default 300)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS: PEM certificate chain")
    serve.add_argument("--tls-key", metavar="FILE", help="serve HTTPS: PEM private key")
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the ground keeps its request-id counter (as for ask)",
    )
    add_verbose_option(serve)
    serve.set_defaults(handler=_serve)

    api_key = commands.add_parser(
        "api-key",
        help="add a key to the gateway's API key file and print its token once",
        description="Add a key named NAME to FILE (made with mode 0600 if absent) and print"
        " its token on stdout, once: only its SHA-256 is stored.",
    )
    api_key.add_argument("action", choices=("add",), help="what to do")
    api_key.add_argument("file", metavar="FILE", help="the API key file")
    api_key.add_argument("name", metavar="NAME", help="who the key is for")
    api_key.add_argument(
        "--requests-per-minute",
        type=positive_int,
        default=60,
        metavar="N",
        help="the key's request rate (default 60)",
    )
    api_key.add_argument(
        "--operator", action="store_true", help="the key may open the operator page"
    )
    api_key.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    api_key.set_defaults(handler=_api_key)


def _api_key(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    from groundstation.gateway.auth import add_key

    try:
        token = add_key(
            args.file,
            args.name,
            requests_per_minute=args.requests_per_minute,
            operator=args.operator,
        )
    except OSError as exc:
        raise RunError(f"cannot write {args.file}: {os_cause(exc)}") from exc
    stdout.write(token + "\n")
    stderr.write(f"{PROG}: key {args.name!r} added to {args.file}; the token is shown once\n")
    return EXIT_OK


def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    from groundstation.gateway.app import GatewayConfig
    from groundstation.gateway.auth import ApiKeys
    from groundstation.gateway.server import ServeOptions, bind, serve
    from groundstation.request_ids import RequestIdAllocator
    from linkstack.aio import LinkAddress
    from linkstack.inference.protocol import MAX_PROMPT_IDS

    with usage_errors():
        LinkAddress.parse(args.link)
    host, port = args.http
    if args.api_keys is None and host not in _LOOPBACK_HOSTS:
        raise UsageError(f"--http {host}:{port} is not a loopback address: give --api-keys FILE")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    max_prompt = args.max_prompt_tokens or MAX_PROMPT_IDS
    if max_prompt > MAX_PROMPT_IDS:
        raise UsageError(f"--max-prompt-tokens {max_prompt} is over the link's {MAX_PROMPT_IDS}")
    from linkstack.inference.protocol import MAX_NEW_TOKENS

    if args.default_max_tokens > MAX_NEW_TOKENS:
        raise UsageError(
            f"--default-max-tokens {args.default_max_tokens} is over the link's {MAX_NEW_TOKENS}"
        )
    keys = None if args.api_keys is None else ApiKeys.load(args.api_keys)
    tokenizer = _load_tokenizer(args.model)
    model_name = args.model_name or (
        args.model if args.model in BUILT_IN_MODELS else Path(args.model).resolve().name
    )
    security: RoleSecurity | None = None
    if args.keys is not None:
        from linkstack.sdls.keystore import link_security

        security = link_security(args.keys, role="ground")
    options = ServeOptions(host, port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    try:
        sock = bind(options)
    except OSError as exc:
        raise RunError(f"cannot listen on {host}:{port}: {os_cause(exc)}") from exc
    config = GatewayConfig(
        model_name=model_name,
        stop_ids=default_stop_ids(args.model, tokenizer.eos_ids),
        link_url=args.link,
        max_prompt_tokens=max_prompt,
        default_max_tokens=args.default_max_tokens,
        request_timeout_s=args.timeout,
    )

    def ready(url: str) -> None:
        stderr.write(f"{PROG}: serving {url} (model {model_name}, link {args.link})\n")
        stderr.flush()

    try:
        gateway = asyncio.run(
            serve(
                sock,
                options,
                link_url=args.link,
                tokenizer=tokenizer,
                config=config,
                keys=keys,
                id_source=RequestIdAllocator.default(args.state_dir),
                security=security,
                open_link_timeout_s=30.0,
                on_ready=ready,
            )
        )
    except (OSError, TimeoutError) as exc:
        cause = os_cause(exc) if isinstance(exc, OSError) else "timed out"
        raise RunError(f"cannot open {args.link}: {cause}") from exc
    finally:
        sock.close()
    if security is not None:
        security.save_receive_state()
    counts = gateway.counters
    stderr.write(
        f"{PROG}: stopped; {counts['requests']} requests, {counts['refused']} refused,"
        f" {counts['disconnect_cancels']} cancelled for clients gone\n"
    )
    return EXIT_OK


# -- tokenizer and parameters, as onboard generate has them ------------------------------


def _load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer ``onboard --model SPEC`` uses: Qwen-3's, or the checkpoint's own."""
    from linkstack.inference.tokenizer import Tokenizer

    if spec in BUILT_IN_MODELS:
        return Tokenizer.qwen3()
    path = Path(spec)
    if not path.is_dir():
        raise UsageError(
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
            raise RunError(f"cannot read {file}: {exc}") from exc
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


def _ask(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    from linkstack.aio import LinkAddress
    from linkstack.console.recording import check_capture_path
    from linkstack.inference.protocol import PromptRequest

    with usage_errors():
        LinkAddress.parse(args.link)
    params = wire_params(args)
    check_capture_path(args.capture, force=args.force)

    tokenizer = _load_tokenizer(args.model)
    try:
        params = dataclasses.replace(
            params, stop_ids=default_stop_ids(args.model, tokenizer.eos_ids)
        )
        prompt_ids = tokenizer.encode_prompt(args.prompt, chat=not args.no_chat)
        # Build it once here so that an empty or overlong prompt is a usage error.
        PromptRequest(request_id=0, params=params, prompt_ids=tuple(prompt_ids))
    except LocalProtocolError as exc:
        raise UsageError(f"PROMPT: {exc}") from exc

    keys: RoleSecurity | None = None
    if args.keys is not None:
        from linkstack.sdls.keystore import link_security

        keys = link_security(args.keys, role="ground")

    outcome, recovery = asyncio.run(
        _exchange(
            args,
            tokenizer=tokenizer,
            prompt_ids=prompt_ids,
            params=params,
            live=None if args.json else live,
            keys=keys,
            stderr=stderr,
        )
    )
    answer = outcome.answer
    if keys is not None:
        keys.save_receive_state()
    from groundstation.records import recovery_record

    security = _security(keys is not None, answer)
    if args.json:
        record = answer_record(
            answer, params, link=args.link, model=args.model, chat=not args.no_chat
        )
        record["recovery"] = recovery_record(answer, recovery)
        record["security"] = security
        record["interrupted"] = outcome.interrupted
        record["diagnosis"] = None if outcome.diagnosis is None else outcome.diagnosis.message
        stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        live.end()
        stderr.write(f"{PROG}: {answer_summary(answer)}\n")
        if keys is not None:
            stderr.write(
                f"{PROG}: SDLS on; {security['mac_failures']} MAC failures,"
                f" {security['replays']} replays, {security['unknown_spi']} unknown SPI\n"
            )
    stdout.flush()
    return _exit_status(outcome, stderr)


def _exit_status(outcome: Outcome, stderr: TextIO) -> int:
    """Say how the answer ended, if not whole, and give the exit status."""
    answer = outcome.answer
    if outcome.interrupted:
        confirmed = (
            "the spacecraft confirmed it"
            if outcome.cancel_confirmed
            else "no confirmation came down in time"
        )
        stderr.write(
            f"{PROG}: interrupted ({outcome.signal_name}) after {len(answer.received_ids)}"
            f" ids; Cancel sent for request {answer.request_id}, {confirmed}\n"
        )
        return EXIT_INTERRUPTED
    if outcome.diagnosis is not None:
        stderr.write(f"{PROG}: {outcome.diagnosis.message}\n")
        return EXIT_FAILED
    if answer.error is not None:
        stderr.write(f"{PROG}: {answer.error}\n")
        return EXIT_FAILED
    if finish_name(answer.finish_reason) == "cancelled":
        stderr.write(f"{PROG}: request {answer.request_id} was cancelled on board\n")
        return EXIT_FAILED
    return EXIT_OK


def _security(enabled: bool, answer: Answer) -> dict[str, Any]:
    """The ``security`` entry of the ``--json`` record: SDLS refusals at the ground."""
    from linkstack.sdls.keystore import security_record

    return security_record(enabled, answer.drops)


def _recorder(
    args: argparse.Namespace, keys: RoleSecurity | None = None
) -> contextlib.AbstractContextManager[SessionRecorder | None]:
    """``--capture``: the ground's recorder on the running loop's clock, opened once
    the link is up."""
    from linkstack.console.recording import session_recorder

    return session_recorder(
        args.capture,
        side="ground",
        program="groundstation ask",
        clock=asyncio.get_running_loop().time,
        force=args.force,
        protection=None if keys is None else keys.metadata(),
        prompt=args.prompt,
        seed=args.seed,
        link_url=args.link,
        model=args.model,
        chat=not args.no_chat,
        timeout_s=args.timeout,
    )


#: ``replay`` options of an IQ recording: option dest -> the ``linkstack:`` field.
_IQ_OPTIONS: Final = {
    "modulation": "modulation",
    "sps": "sps",
    "conv_rate": "conv_rate",
    "interleave": "interleave",
    "frame_length": "frame_length",
    "rolloff": "rolloff",
    "nrzm": "nrzm",
}


def _add_iq_options(parser: argparse.ArgumentParser) -> None:
    iq = parser.add_argument_group(
        "IQ recordings (SigMF)",
        "how the downlink was modulated and coded; by default the recording's linkstack:"
        " fields, as `linkstack radio tx` writes them",
    )
    iq.add_argument(
        "--modulation", choices=("bpsk", "qpsk"), default=None, help="BPSK or Gray-mapped QPSK"
    )
    iq.add_argument(
        "--sps", type=positive_int, default=None, metavar="N", help="samples per symbol"
    )
    iq.add_argument(
        "--conv-rate",
        choices=("1/2", "2/3", "3/4", "5/6", "7/8"),
        default=None,
        help="convolutional code rate",
    )
    iq.add_argument(
        "--interleave", type=positive_int, default=None, metavar="I", help="R-S interleaving depth"
    )
    iq.add_argument(
        "--frame-length", type=positive_int, default=None, metavar="N", help="TM frame octets"
    )
    iq.add_argument(
        "--rolloff", type=positive_number, default=None, metavar="A", help="SRRC roll-off"
    )
    iq.add_argument("--nrzm", choices=("off", "on", "auto"), default=None, help="NRZ-M in use")


def _iq_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The IQ options given, as ``linkstack:`` field -> value."""
    given: dict[str, object] = {}
    for dest, name in _IQ_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            given[name] = {"off": False, "on": True}.get(value, value) if dest == "nrzm" else value
    return given


def _replay(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    """``groundstation replay FILE``: the recorded conversation, replayed."""
    from groundstation.replay import is_sigmf_path, replay_file

    overrides = _iq_overrides(args)
    if overrides and not is_sigmf_path(args.file):
        names = ", ".join(f"--{name.replace('_', '-')}" for name in overrides)
        raise UsageError(f"{names}: for a SigMF recording (.sigmf-meta) only")
    model, outcome = replay_file(
        args.file,
        model=args.model,
        tokenizer_for=_load_tokenizer,
        keys=args.keys,
        radio=overrides,
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
                f"{PROG}: {len(outcome['streams'])} stream(s),"
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
            stderr.write(f"{PROG}: {answer_summary(answer)}\n")
        if answer.error is not None:
            stderr.write(f"{PROG}: {answer.error}\n")
            status = EXIT_FAILED
        elif _finish_name(answer.finish_reason) == "cancelled":
            status = EXIT_FAILED
    for line in outcome.warnings:
        stderr.write(f"{PROG}: {line}\n")
    if any(record["replay"]["uplink"]["identical"] is False for record in outcome.records):
        stderr.write(
            f"{PROG}: the replayed ground sent other CLTUs than the recorded ones"
            f" ({len(outcome.uplink_replayed)} replayed, {len(outcome.uplink_recorded)} recorded)\n"
        )
    return status


async def _exchange(
    args: argparse.Namespace,
    *,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    live: LiveLine | None,
    keys: RoleSecurity | None,
    stderr: TextIO,
) -> tuple[Outcome, RecoveryCounters]:
    from groundstation.diagnosis import LinkDiagnosis
    from groundstation.request_ids import RequestIdAllocator
    from groundstation.session import await_answer, keyed_station
    from groundstation.station import Update
    from linkstack.aio import open_link
    from linkstack.capture.recording import RecordingLink

    url = args.link
    station = keyed_station(tokenizer, keys, id_source=RequestIdAllocator.default(args.state_dir))
    # Received units go to the recorder once it is open (after the link is).
    recording: list[SessionRecorder] = []

    def receive(data: bytes, now: float) -> None:
        if recording:
            recording[0].received(data, now)
        station.on_receive(data, now)

    try:
        link = await asyncio.wait_for(
            open_link(url, role="ground", on_receive=receive), args.timeout
        )
    except (OSError, TimeoutError) as exc:
        cause = os_cause(exc) if isinstance(exc, OSError) else "timed out"
        raise RunError(
            f"cannot reach {url}: {cause} (is `onboard serve --link {url}` running?)"
        ) from exc
    try:
        with _recorder(args, keys) as recorder:
            if recorder is not None:
                recording.append(recorder)
                station.endpoint.packet_tap = recorder.tap
                station.attach(RecordingLink(link, recorder))
            else:
                station.attach(link)

            def show(update: Update) -> None:
                if live is not None and update.text:
                    with contextlib.suppress(OSError):  # a closed pipe: the exit says
                        live.write(update.text)

            loop = asyncio.get_running_loop()
            diagnosis = LinkDiagnosis(url, started_at=loop.time(), key_path=args.keys)

            def diagnose(now: float) -> Any:
                return diagnosis.check(
                    now,
                    station.link_counters,
                    station.endpoint.drops,
                    link_error=link.failure,
                )

            def report(message: str) -> None:
                if live is not None:
                    live.end()
                stderr.write(f"{PROG}: {message}\n")
                stderr.flush()

            handle = station.submit(prompt_ids, params, on_update=show)
            outcome = await await_answer(
                handle, timeout=args.timeout, diagnose=diagnose, report=report
            )
            return outcome, station.recovery_counters
    finally:
        link.close()


# -- entry point -----------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``groundstation`` console script."""
    return text_program(
        PROG,
        build_parser(),
        None if argv is None else list(argv),
        stdout,
        stderr,
        failures=(LinkError,),
    )


if __name__ == "__main__":
    sys.exit(main())
