"""``onboard`` command: the spacecraft side of linkstack.

``onboard generate PROMPT`` runs the model on the spot, with no link: the
reference that any link run must reproduce id for id.  With ``--json`` it prints
one JSON object (``prompt_ids``, ``generated_ids``, ``text``, ``finish_reason``,
``error``, ``model``, ``params``) and nothing time-dependent; without it, it
streams the text and prints a one-line summary with the timing on stderr.

Exit status: 0 success, 1 a model that cannot be loaded or a generation that
failed (a message on stderr, never a traceback), 2 bad options, 130 interrupted.
torch and transformers are imported only once the options have parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from linkstack.cli.options import add_generation_options, wire_params
from linkstack.errors import LinkError

if TYPE_CHECKING:
    from linkstack.aio import TcpLink, UdpLink
    from linkstack.keystore import RoleSecurity
    from linkstack.recording import SessionRecorder

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """Options that parse but make no sense together: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard", description="Spacecraft side of linkstack: Qwen-3 onboard."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate", help="generate from a prompt on the spot (no link): the reference run"
    )
    gen.add_argument("prompt", metavar="PROMPT", help="prompt text")
    _add_model_options(gen)
    add_generation_options(gen)
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(handler=_generate)

    serve = commands.add_parser(
        "serve", help="the spacecraft: serve PromptRequests over a link until SIGINT/SIGTERM"
    )
    serve.add_argument(
        "--link",
        required=True,
        metavar="URL",
        help="tcp://HOST:PORT (listen) or udp://HOST:PORT (bind); port 0 picks a free one",
    )
    _add_model_options(serve)
    serve.add_argument(
        "--downlink-rate",
        type=float,
        default=None,
        metavar="BPS",
        help="downlink bit rate the CADUs are paced at (default: unpaced)",
    )
    serve.add_argument(
        "--max-queue", type=int, default=8, metavar="N", help="requests waiting (default 8)"
    )
    serve.add_argument(
        "--housekeeping-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between Housekeeping messages (default 10)",
    )
    serve.add_argument(
        "--capture",
        metavar="FILE.pcapng",
        help="record the session on board: CLTUs as received, CADUs as sent, Space Packets"
        " (with --keys: ciphertext only)",
    )
    serve.add_argument(
        "--keys",
        metavar="PATH",
        help="SDLS key file (linkstack keys generate): verify the uplink and protect the"
        " downlink; IV counters are kept in PATH.spacecraft.counters",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=_serve)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='"embedded" (default), "qwen3-0.6b-shape", or a local checkpoint directory',
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on CUDA, float32 on CPU",
    )


def _generate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from linkstack.errors import LocalProtocolError
    from onboard.generation import (
        FinishReason,
        GenerationParams,
        GenerationRequestError,
        generate,
    )
    from onboard.model import load_model
    from onboard.service import params_from_wire

    try:
        # Checked as the generator checks them first (its messages), then as the
        # link carries them: the reference run uses what a PromptRequest would.
        GenerationParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
        wire = wire_params(args)
    except (GenerationRequestError, LocalProtocolError) as exc:
        raise _UsageError(str(exc)) from exc
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    params = params_from_wire(dataclasses.replace(wire, stop_ids=handle.stop_ids))
    tokenizer = handle.tokenizer
    prompt_ids = tokenizer.encode_prompt(args.prompt, chat=not args.no_chat)
    try:
        if args.json:
            result = generate(handle, prompt_ids, params)
        else:
            decoder = tokenizer.incremental_decoder(skip_special=True)

            def show(token_id: int) -> None:
                stdout.write(decoder.push([token_id]))
                stdout.flush()

            result = generate(handle, prompt_ids, params, on_token=show)
            stdout.write(decoder.flush() + "\n")
    except GenerationRequestError as exc:
        raise _UsageError(str(exc)) from exc
    error = None if result.error is None else f"{result.error.kind}: {result.error.message}"
    if args.json:
        record: dict[str, Any] = {
            "model": handle.spec,
            "params": {
                "max_new_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
                "chat": not args.no_chat,
                "stop_ids": list(handle.stop_ids),
            },
            "prompt_ids": list(result.prompt_ids),
            "generated_ids": list(result.generated_ids),
            "text": tokenizer.decode(result.generated_ids, skip_special=True),
            "finish_reason": str(result.finish_reason),
            "error": error,
        }
        stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        timing = result.timing
        stderr.write(
            f"onboard: {result.finish_reason}, {timing.tokens} ids, "
            f"first id {timing.first_token_s * 1e3:.0f} ms, "
            f"{timing.decode_tokens_per_s:.1f} ids/s ({handle.description})\n"
        )
    if result.finish_reason is FinishReason.ERROR:
        stderr.write(f"onboard: generation failed: {error}\n")
        return EXIT_FAILED
    return EXIT_OK


def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    import asyncio

    from linkstack.aio import LinkAddress
    from linkstack.errors import LocalProtocolError

    try:
        LinkAddress.parse(args.link)
    except LocalProtocolError as exc:
        raise _UsageError(str(exc)) from exc
    if args.downlink_rate is not None and not args.downlink_rate > 0:
        raise _UsageError(f"--downlink-rate {args.downlink_rate} bit/s must be positive")
    if args.max_queue < 1:
        raise _UsageError(f"--max-queue {args.max_queue} must be >= 1")
    if not args.housekeeping_interval > 0:
        raise _UsageError(
            f"--housekeeping-interval {args.housekeeping_interval} s must be positive"
        )
    keys: RoleSecurity | None = None
    if args.keys is not None:
        from linkstack.keystore import link_security

        keys = link_security(args.keys, role="spacecraft")
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("onboard: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        from onboard.model import load_model

        handle = load_model(args.model, device=args.device, dtype=args.dtype)
        return asyncio.run(_serve_link(args, handle, stderr, keys))
    finally:
        root.removeHandler(handler)


def _bound_url(link: UdpLink | TcpLink, scheme: str, fallback: str) -> str:
    """The address the link actually holds (port 0 resolved), as a URL."""
    address = link.local_address
    if address is None:
        return fallback
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"{scheme}://{host}:{address[1]}"


async def _serve_link(
    args: argparse.Namespace, handle: Any, stderr: TextIO, keys: RoleSecurity | None = None
) -> int:
    import asyncio

    from linkstack.capture import session_metadata
    from linkstack.cli.capture import open_recorder
    from linkstack.endpoints import LinkConfig

    metadata = session_metadata(
        LinkConfig(),
        side="spacecraft",
        program="onboard serve",
        link_url=args.link,
        model=args.model,
    )
    if keys is not None:  # a protected session: ciphertext only, SPIs but never keys
        metadata["security"] = keys.metadata()
    loop = asyncio.get_running_loop()
    with open_recorder(
        args.capture,
        metadata,
        side="spacecraft",
        clock=loop.time,
        record_packets=keys is None,
        split_cltus=args.link.startswith("tcp:"),
    ) as recorder:
        try:
            return await _serve_recorded(args, handle, stderr, recorder, keys)
        finally:
            if recorder is not None:
                recorder.flush(loop.time())


async def _serve_recorded(
    args: argparse.Namespace,
    handle: Any,
    stderr: TextIO,
    recorder: SessionRecorder | None,
    keys: RoleSecurity | None = None,
) -> int:
    import asyncio
    import signal

    from linkstack.aio import LinkAddress, open_link
    from onboard.service import OnboardService

    service = OnboardService.for_model(
        handle,
        max_queue=args.max_queue,
        housekeeping_interval=args.housekeeping_interval,
        downlink_rate_bps=args.downlink_rate,
        security=None if keys is None else keys.security,
    )
    try:
        link = await open_link(
            args.link,
            role="spacecraft",
            on_receive=service.on_receive
            if recorder is None
            else recorder.receiver(service.on_receive),
        )
    except OSError as exc:
        raise LinkOpenError(f"cannot open {args.link}: {exc}") from exc
    if recorder is not None:
        service.endpoint.packet_tap = recorder.tap
    service.attach(link if recorder is None else recorder.link(link))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = loop.create_task(service.run())
    url = _bound_url(link, LinkAddress.parse(args.link).scheme, args.link)
    stderr.write(f"onboard: serving on {url} ({handle.description})\n")
    stderr.flush()
    stopper = loop.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # the transmitter never ends on its own: re-raise what stopped it
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for task in (runner, stopper):
            task.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        service.close()
        if keys is not None:
            keys.save_receive_state()
        counters = service.core.counters
        stderr.write(
            f"onboard: stopped; {counters.requests_accepted} requests accepted, "
            f"{counters.requests_refused} refused, {counters.tokens_sent} ids sent; "
            f"{_security_line(keys is not None, service.endpoint.drops)}\n"
        )
    return EXIT_OK


def _security_line(enabled: bool, drops: Any) -> str:
    """The SDLS counters of the stop line (never a key)."""
    from linkstack.keystore import security_record

    if not enabled:
        return "SDLS off"
    record = security_record(True, drops)
    return (
        f"SDLS on, {record['mac_failures']} MAC failures, {record['replays']} replays,"
        f" {record['outside_window']} outside the window, {record['unknown_spi']} unknown SPI"
    )


class LinkOpenError(LinkError):
    """The link could not be opened (address in use, no such interface...)."""


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``onboard`` console script."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    try:
        return int(args.handler(args, out, err))
    except _UsageError as exc:
        err.write(f"onboard: {exc}\n")
        return EXIT_USAGE
    except LinkError as exc:
        err.write(f"onboard: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
