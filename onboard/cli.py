"""``onboard`` command: the spacecraft side of linkstack.

``onboard generate PROMPT`` runs the model on the spot, with no link: the
reference that any link run must reproduce id for id.  With ``--json`` it prints
one JSON object (``prompt_ids``, ``generated_ids``, ``text``, ``finish_reason``,
``error``, ``model``, ``params``) and nothing time-dependent; without it, it
streams the text and prints a one-line summary with the timing on stderr.

``onboard serve`` binds its link first, then loads the model, then opens
``--capture``: a port in use or a capture that would overwrite a file fails at once,
not after a long load.

Exit status (as every linkstack program): 0 success, 1 a model that cannot be loaded,
a link that cannot be opened or a generation that failed (a message on stderr, never a
traceback), 2 bad options, 130 interrupted.  torch and transformers are imported only
once the options have parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from linkstack.console.base import (
    EXIT_FAILED,
    EXIT_OK,
    LiveLine,
    UsageError,
    add_session_options,
    add_verbose_option,
    new_parser,
    os_cause,
    positive_int,
    positive_number,
    text_program,
    usage_errors,
)
from linkstack.console.options import add_generation_options, wire_params
from linkstack.errors import LinkError

if TYPE_CHECKING:
    from pathlib import Path

    from linkstack.aio import TcpLink, UdpLink
    from linkstack.aio.zmq_link import ZmqLink
    from linkstack.sdls.keystore import RoleSecurity
    from onboard.model import ModelHandle
    from onboard.service import OnboardService

PROG: Final = "onboard"
#: Seconds between two looks at the uplink's SDLS refusals (serve).
_DIAGNOSIS_INTERVAL_S: Final = 1.0
#: Uplink frames refused before the spacecraft names the likely cause.
_DIAGNOSIS_MIN_DROPS: Final = 3


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(PROG, "Spacecraft side of linkstack: Qwen-3 on board.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="generate from a prompt on the spot (no link): the reference run",
        description="Generate from PROMPT with no link: the ids any link run must reproduce.",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="prompt text")
    _add_model_options(gen)
    add_generation_options(gen)
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_verbose_option(gen)
    gen.set_defaults(handler=_generate)

    serve = commands.add_parser(
        "serve",
        help="the spacecraft: serve PromptRequests over a link until SIGINT/SIGTERM",
        description="Bind the link, load the model and answer PromptRequests from the"
        " ground until SIGINT or SIGTERM.",
    )
    serve.add_argument(
        "--link",
        required=True,
        metavar="URL",
        help="tcp://HOST:PORT (listen) or udp://HOST:PORT (bind), port 0 picks a free one;"
        " or zmq://?tx=ENDPOINT&rx=ENDPOINT (BPSK IQ both ways, docs/radio.md)",
    )
    _add_model_options(serve)
    serve.add_argument(
        "--downlink-rate",
        type=positive_number,
        default=None,
        metavar="BPS",
        help="downlink bit rate the CADUs are paced at (default: unpaced)",
    )
    serve.add_argument(
        "--max-queue",
        "--queue",
        dest="max_queue",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests waiting (default 8); more are refused QUEUE_FULL with a"
        " retry-after hint (docs/protocol.md §8.2)",
    )
    serve.add_argument(
        "--max-batch",
        type=positive_int,
        default=4,
        metavar="N",
        help="requests decoded together, one forward pass per step (default 4)",
    )
    serve.add_argument(
        "--inexact-batching",
        action="store_true",
        help="plain batched matrix products: faster on a GPU, but an id may then differ"
        " from a single run's at a near tie (docs/architecture.md)",
    )
    serve.add_argument(
        "--store",
        metavar="DIR",
        help="the model store (docs/cfdp.md): accept CFDP uploads into DIR/staging, install"
        " verified models, answer groundstation upload/models/activate/download; serves the"
        " store's active model if it has one",
    )
    serve.add_argument(
        "--manifest-keys",
        metavar="PATH",
        help="key file whose master key verifies manifest MACs (without --keys, whose"
        " SDLS then authenticates the manifests itself)",
    )
    serve.add_argument(
        "--housekeeping-interval",
        type=positive_number,
        default=10.0,
        metavar="S",
        help="seconds between Housekeeping messages (default 10)",
    )
    add_session_options(
        serve,
        capture_help="record the session on board: CLTUs as received, CADUs as sent, Space Packets",
        keys_help="verify the uplink and protect the downlink; IV counters are kept in"
        " PATH.spacecraft.counters",
    )
    add_verbose_option(serve)
    serve.set_defaults(handler=_serve)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='"embedded" (default), "embedded-full-vocab", "qwen3-0.6b-shape", or a local'
        " checkpoint directory",
    )
    parser.add_argument(
        "--device", default=None, metavar="DEV", help="cpu, cuda, cuda:N (default: cuda if any)"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on CUDA, float32 on CPU",
    )


def _load(args: argparse.Namespace, stderr: TextIO) -> ModelHandle:
    """The model of ``--model``, with a line saying so (a real checkpoint takes a while;
    ``--json`` keeps stderr for errors)."""
    from onboard.model import load_model

    if not args.json:
        stderr.write(f"{PROG}: loading model {args.model} ...\n")
        stderr.flush()
    return load_model(args.model, device=args.device, dtype=args.dtype)


def _generate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    from linkstack.inference.protocol import FinishReason
    from onboard.generation import GenerationRequestError, generate

    # Checked as the link carries them: the reference run uses what a PromptRequest would.
    wire = wire_params(args)
    handle = _load(args, stderr)
    params = dataclasses.replace(wire, stop_ids=handle.stop_ids)
    tokenizer = handle.tokenizer
    prompt_ids = tokenizer.encode_prompt(args.prompt, chat=not args.no_chat)
    try:
        if args.json:
            result = generate(handle, prompt_ids, params)
        else:
            decoder = tokenizer.incremental_decoder(skip_special=True)

            def show(token_id: int) -> None:
                live.write(decoder.push([token_id]))

            result = generate(handle, prompt_ids, params, on_token=show)
            live.write(decoder.flush())
            live.end()
    except GenerationRequestError as exc:
        raise UsageError(str(exc)) from exc
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
            "finish_reason": result.finish_reason.label,
            "error": error,
        }
        stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        timing = result.timing
        stderr.write(
            f"{PROG}: {result.finish_reason.label}, {timing.tokens} ids, "
            f"first id {timing.first_token_s * 1e3:.0f} ms, "
            f"{timing.decode_tokens_per_s:.1f} ids/s ({handle.description})\n"
        )
    if result.finish_reason is FinishReason.ERROR:
        stderr.write(f"{PROG}: generation failed: {error}\n")
        return EXIT_FAILED
    return EXIT_OK


def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    import asyncio

    from linkstack.aio import LinkAddress
    from linkstack.console.recording import check_capture_path

    with usage_errors():
        LinkAddress.parse(args.link)
    check_capture_path(args.capture, force=args.force)
    keys: RoleSecurity | None = None
    if args.keys is not None:
        from linkstack.sdls.keystore import link_security

        keys = link_security(args.keys, role="spacecraft")
    return asyncio.run(_serve_link(args, stderr, keys))


def _bound_url(link: UdpLink | TcpLink | ZmqLink, scheme: str, fallback: str) -> str:
    """The address the link actually holds (port 0 resolved), as a URL."""
    from linkstack.aio import zmq_link

    if isinstance(link, zmq_link.ZmqLink):
        return link.bound_url
    address = link.local_address
    if address is None:
        return fallback
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"{scheme}://{host}:{address[1]}"


async def _serve_link(args: argparse.Namespace, stderr: TextIO, keys: RoleSecurity | None) -> int:
    """Bind, then load the model (units heard meanwhile are dropped: COP-1 sends them
    again), then open the capture and serve."""
    import asyncio

    from linkstack.aio import LinkAddress, open_link
    from linkstack.capture.recording import RecordingLink
    from linkstack.console.recording import session_recorder
    from linkstack.endpoints import LinkConfig, route_key_management
    from onboard.service import OnboardService

    deliver: list[Any] = []  # the service's receiver, once there is a service

    def on_receive(data: bytes, now: float) -> None:
        if deliver:
            deliver[0](data, now)

    try:
        link = await open_link(args.link, role="spacecraft", on_receive=on_receive)
    except OSError as exc:
        raise LinkOpenError(f"cannot open {args.link}: {os_cause(exc)}") from exc
    try:
        url = _bound_url(link, LinkAddress.parse(args.link).scheme, args.link)
        files = None if args.store is None else _open_store(args, keys)
        model = args.model
        if files is not None and files.store.active is not None:
            model = str(files.store.active_path())
            stderr.write(f"{PROG}: the store's active model is {files.store.active}\n")
        stderr.write(f"{PROG}: bound {url}; loading model {model} ...\n")
        stderr.flush()
        from onboard.model import load_model

        handle = await asyncio.to_thread(load_model, model, device=args.device, dtype=args.dtype)
        service = OnboardService.for_model(
            handle,
            max_queue=args.max_queue,
            max_batch=args.max_batch,
            exact=not args.inexact_batching,
            housekeeping_interval=args.housekeeping_interval,
            downlink_rate_bps=args.downlink_rate,
            security=None if keys is None else keys.security,
            # A management SA in the key file: key management on its own TC VC.
            link_config=route_key_management(
                LinkConfig(), None if keys is None else keys.management_sa
            ),
        )
        service.files = files
        loop = asyncio.get_running_loop()
        if files is not None:
            files.on_activate = _swapper(args, service, stderr)
        with session_recorder(
            args.capture,
            side="spacecraft",
            program="onboard serve",
            clock=loop.time,
            force=args.force,
            protection=None if keys is None else keys.metadata(),
            split_cltus=args.link.startswith("tcp:"),
            link_url=args.link,
            model=args.model,
        ) as recorder:
            if recorder is None:
                deliver.append(service.on_receive)
                service.attach(link)
            else:
                deliver.append(recorder.receiver(service.on_receive))
                service.endpoint.packet_tap = recorder.tap
                service.attach(RecordingLink(link, recorder))
            stderr.write(f"{PROG}: serving on {url} ({handle.description})\n")
            stderr.flush()
            try:
                await _serve_until_stopped(service, stderr, secured=keys is not None)
            finally:
                service.close()
                if recorder is not None:
                    recorder.flush(loop.time())
    finally:
        link.close()
    if keys is not None:
        keys.save_receive_state()
    counters = service.core.counters
    stderr.write(
        f"{PROG}: stopped; {counters.requests_accepted} requests accepted, "
        f"{counters.requests_refused} refused, {counters.tokens_sent} ids sent; "
        f"{_security_line(keys is not None, service.endpoint.drops)}\n"
    )
    return EXIT_OK


def _swapper(args: argparse.Namespace, service: OnboardService, stderr: TextIO) -> Any:
    """What an activation (or roll-back) does: load the model in a thread, then hand
    new requests to it; requests in flight finish on the model they started on."""
    import asyncio

    from onboard.batching import BatchEngine
    from onboard.model import load_model

    tasks: set[asyncio.Task[None]] = set()

    async def swap(name: str, directory: Path) -> None:
        try:
            handle = await asyncio.to_thread(
                load_model, str(directory), device=args.device, dtype=args.dtype
            )
        except LinkError as exc:
            stderr.write(f"{PROG}: cannot load activated model {name}: {exc}\n")
            return
        service.replace_engine(
            BatchEngine(handle, max_batch=args.max_batch, exact=not args.inexact_batching)
        )
        stderr.write(f"{PROG}: serving model {name} ({handle.description})\n")
        stderr.flush()

    def on_activate(name: str, directory: Path) -> None:
        task = asyncio.get_running_loop().create_task(swap(name, directory))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_activate


def _open_store(args: argparse.Namespace, keys: RoleSecurity | None) -> Any:
    """``--store``: the model store and the file service over CFDP."""
    from linkstack.sdls.keystore import load_key_file
    from onboard.files import OnboardFiles
    from onboard.store import ModelStore

    key_path = args.manifest_keys or args.keys
    manifest_key = None
    if key_path is not None:
        from linkstack.cfdp.manifest import manifest_key as derive

        material = load_key_file(key_path).keys.material(0)
        if material is None:
            raise UsageError(f"{key_path}: no master key 0 to derive the manifest key from")
        manifest_key = derive(material.secret_octets())
    store = ModelStore(args.store, manifest_key=manifest_key, link_authenticated=keys is not None)
    return OnboardFiles(store)


async def _serve_until_stopped(service: OnboardService, stderr: TextIO, *, secured: bool) -> None:
    """Run the transmitter until SIGINT/SIGTERM, naming the likely cause once when the
    uplink's frames are refused for SDLS reasons."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = loop.create_task(service.run())
    stopper = loop.create_task(stop.wait())
    told = False
    try:
        while True:
            done, _ = await asyncio.wait(
                {runner, stopper},
                timeout=_DIAGNOSIS_INTERVAL_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if runner in done:
                runner.result()  # the transmitter never ends on its own: re-raise
            if stopper in done:
                return
            if not told and (cause := _uplink_diagnosis(service, secured=secured)):
                stderr.write(f"{PROG}: {cause}\n")
                stderr.flush()
                told = True
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for task in (runner, stopper):
            task.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)


def _uplink_diagnosis(service: OnboardService, *, secured: bool) -> str | None:
    """Why the ground's frames are refused, when nothing from it was ever accepted."""
    counters, drops = service.endpoint.counters, service.endpoint.drops
    if counters.messages_received:
        return None
    sdls = sum(n for key, n in drops.items() if key.startswith("sdls/"))
    if secured and sdls >= _DIAGNOSIS_MIN_DROPS:
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(drops.items()) if k.startswith("sdls/"))
        return (
            f"{sdls} uplink frames refused by SDLS ({reasons}): is the ground running"
            " without --keys, or with another key file?"
        )
    if not secured and sum(drops.values()) >= _DIAGNOSIS_MIN_DROPS:
        return (
            f"{sum(drops.values())} uplink frames arrived but none carried a readable"
            " message: the ground probably protects its uplink with SDLS; start with the"
            " same --keys"
        )
    return None


def _security_line(enabled: bool, drops: Any) -> str:
    """The SDLS counters of the stop line (never a key)."""
    from linkstack.sdls.keystore import security_record

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
    return text_program(
        PROG,
        build_parser(),
        None if argv is None else list(argv),
        stdout,
        stderr,
        failures=(LinkError,),
        # A server logs what it does (INFO) by default; -v adds every frame.
        quiet_level=lambda args: int(args.command == "serve"),
    )


if __name__ == "__main__":
    sys.exit(main())
