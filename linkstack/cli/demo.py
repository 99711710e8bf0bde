"""``linkstack demo``: the whole system in one process, live.

A prompt typed on the ground is tokenized, uplinked as CLTUs through a simulated
channel, answered on board by Qwen-3 and streamed down as CADUs, then shown as it
arrives.  The ground station, the onboard service and the link are the same objects
``groundstation ask`` and ``onboard serve`` use, joined by a
:class:`~linkstack.aio.LoopbackLink` running on the event loop's clock.

torch and transformers are imported only once the options have parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from linkstack.channel import PROFILE_NAMES, ChannelConfig, Outage
from linkstack.cli.main import EXIT_FAILED, EXIT_OK, CliError, Streams
from linkstack.cli.options import add_generation_options, wire_params

if TYPE_CHECKING:
    from groundstation.station import Answer, Update
    from linkstack.aio import LoopbackLink
    from linkstack.inference_protocol import GenerationParams
    from linkstack.keystore import RoleSecurity
    from linkstack.recording import SessionRecorder
    from onboard.model import ModelHandle

DEFAULT_PROMPT = "Hello from the ground station. What do you see from orbit?"
DEFAULT_TIMEOUT_S = 600.0


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in 0..1")
    return value


def _outage(text: str) -> Outage:
    start, sep, duration = text.partition(":")
    try:
        outage = Outage(float(start), float(duration)) if sep else None
    except ValueError:
        outage = None
    if outage is None or not (math.isfinite(outage.start) and math.isfinite(outage.duration)):
        raise argparse.ArgumentTypeError(f"{text!r} is not START:SECONDS")
    if outage.start < 0 or outage.duration <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: START must be >= 0 and SECONDS > 0")
    return outage


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run ground station, link and spacecraft in one process and stream an answer",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    demo.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, metavar="PROMPT")
    demo.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='"embedded" (default), "qwen3-0.6b-shape", or a local checkpoint directory',
    )
    demo.add_argument(
        "--profile", default="s-band", choices=PROFILE_NAMES, help="link profile (default s-band)"
    )
    demo.add_argument("--ber", type=_probability, metavar="X", help="raw bit error rate, both ways")
    demo.add_argument(
        "--burst",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability a unit is hit by an error burst longer than R-S corrects",
    )
    demo.add_argument("--drop", type=_probability, default=0.0, metavar="P", help="unit loss")
    demo.add_argument("--duplicate", type=_probability, default=0.0, metavar="P")
    demo.add_argument("--reorder", type=_probability, default=0.0, metavar="P")
    demo.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:SECONDS",
        help="loss of signal both ways, seconds after the start (repeatable)",
    )
    add_generation_options(demo, seed_help="sampling and channel seed (default 0)")
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    demo.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="give up after S s"
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object at the end")
    demo.add_argument(
        "--capture",
        metavar="FILE.pcapng",
        help="record the session at the ground's end: CLTUs up, CADUs down, Space Packets"
        " (with --keys: ciphertext only)",
    )
    demo.add_argument(
        "--keys",
        metavar="PATH",
        help="SDLS key file (linkstack keys generate): protect both directions; each side"
        " keeps its IV counters in PATH.ground.counters / PATH.spacecraft.counters",
    )
    demo.set_defaults(handler=run)


def _channels(args: argparse.Namespace) -> tuple[ChannelConfig, ChannelConfig]:
    from linkstack.channel import link_profile

    profile = link_profile(args.profile)
    changes: dict[str, Any] = {
        "burst_probability": args.burst,
        "loss_probability": args.drop,
        "duplicate_probability": args.duplicate,
        "reorder_probability": args.reorder,
        "outages": tuple(args.outage),
    }
    if args.burst:
        # Longer than R-S corrects: 16 symbols per codeword, interleaved I deep.
        changes["burst_length_bits"] = 8 * (17 * 5 + 1)
    if args.ber is not None:
        changes["ber"] = args.ber
    return (
        dataclasses.replace(profile.uplink, **changes),
        dataclasses.replace(profile.downlink, **changes),
    )


def run(args: argparse.Namespace, io: Streams) -> int:
    from linkstack.errors import LocalProtocolError

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CliError(f"--timeout {args.timeout} must be a positive number of seconds")
    try:
        uplink, downlink = _channels(args)
        params = wire_params(args)
    except LocalProtocolError as exc:
        raise CliError(str(exc)) from exc

    keys: tuple[RoleSecurity, RoleSecurity] | None = None
    if args.keys is not None:
        from linkstack.keystore import link_security

        keys = (
            link_security(args.keys, role="ground"),
            link_security(args.keys, role="spacecraft"),
        )

    from onboard.model import load_model

    handle = load_model(args.model, device=args.device)
    params = dataclasses.replace(params, stop_ids=handle.stop_ids)
    prompt_ids = tuple(handle.tokenizer.encode_prompt(args.prompt, chat=not args.no_chat))
    if not args.json:
        io.stderr.write(
            f"linkstack demo: {handle.description}; profile {args.profile}; "
            f"{len(prompt_ids)} prompt ids up\n"
        )
    with _recorder(args, uplink, downlink, keys) as recorder:
        record = asyncio.run(
            _demo(
                args,
                io,
                handle,
                prompt_ids,
                params,
                uplink=uplink,
                downlink=downlink,
                recorder=recorder,
                keys=keys,
            )
        )
    for side in keys or ():
        side.save_receive_state()
    if args.json:
        io.stdout.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    io.stdout.flush()
    if record["error"] is not None:
        io.stderr.write(f"linkstack demo: {record['error']}\n")
        return EXIT_FAILED
    if not record["match"]:
        io.stderr.write("linkstack demo: the ground received other ids than the model made\n")
        return EXIT_FAILED
    return EXIT_OK


def _recorder(
    args: argparse.Namespace,
    uplink: ChannelConfig,
    downlink: ChannelConfig,
    keys: tuple[RoleSecurity, RoleSecurity] | None = None,
) -> contextlib.AbstractContextManager[SessionRecorder | None]:
    """``--capture``: the ground end's recorder on the running loop's clock.

    A protected session (``keys``) records ciphertext only: no decoded Space Packets,
    no prompt in the metadata, only which SPIs protected it.
    """
    from linkstack.capture import session_metadata
    from linkstack.channel import LinkProfile
    from linkstack.cli.capture import open_recorder
    from linkstack.endpoints import LinkConfig

    metadata = session_metadata(
        LinkConfig(),
        profile=LinkProfile(args.profile, uplink, downlink),
        seed=args.seed,
        side="ground",
        program="linkstack demo",
        link_url=f"loopback:{args.profile}",
        model=args.model,
        chat=not args.no_chat,
        timeout_s=args.timeout,
    )
    if keys is None:
        metadata["prompt"] = args.prompt
    else:
        metadata["security"] = keys[0].metadata()
    return open_recorder(
        args.capture,
        metadata,
        side="ground",
        clock=lambda: asyncio.get_running_loop().time(),
        record_packets=keys is None,
    )


async def _demo(
    args: argparse.Namespace,
    io: Streams,
    handle: ModelHandle,
    prompt_ids: tuple[int, ...],
    params: GenerationParams,
    *,
    uplink: ChannelConfig,
    downlink: ChannelConfig,
    recorder: SessionRecorder | None = None,
    keys: tuple[RoleSecurity, RoleSecurity] | None = None,
) -> dict[str, Any]:
    from groundstation.cli import answer_summary
    from groundstation.station import GroundStation
    from linkstack.aio import LoopbackLink
    from linkstack.endpoints import LinkConfig
    from onboard.service import OnboardService

    config = LinkConfig()
    ground_sec, spacecraft_sec = (None, None) if keys is None else keys
    station = GroundStation(
        handle.tokenizer,
        config=config,
        security=None if ground_sec is None else ground_sec.security,
    )
    made: dict[int, tuple[int, ...]] = {}  # the ground's EndAck frees the core's copy
    service = OnboardService.for_model(
        handle,
        link_config=config,
        downlink_rate_bps=downlink.rate_bps,
        on_generated=made.__setitem__,
        security=None if spacecraft_sec is None else spacecraft_sec.security,
    )
    link = LoopbackLink(
        uplink=uplink,
        downlink=downlink,
        seed=args.seed,
        to_ground=station.on_receive if recorder is None else recorder.receiver(station.on_receive),
        to_spacecraft=service.on_receive,
    )
    service.attach(link.spacecraft)
    if recorder is not None:
        station.endpoint.packet_tap = recorder.tap
    station.attach(link.ground if recorder is None else recorder.link(link.ground))
    transmitter = asyncio.create_task(service.run())

    def show(update: Update) -> None:
        if not args.json and update.text:
            io.stdout.write(update.text.encode())
            io.stdout.flush()

    asking = asyncio.create_task(
        station.ask(prompt_ids, params, on_update=show, timeout=args.timeout)
    )
    try:
        # The onboard transmitter never ends by itself: if it does, it failed, and the
        # ground would otherwise wait for its timeout on a dead downlink.
        await asyncio.wait({asking, transmitter}, return_when=asyncio.FIRST_COMPLETED)
        if not asking.done():
            asking.cancel()
            failure = transmitter.exception()
            raise CliError(f"the onboard downlink stopped: {failure!r}")
        answer = asking.result()
    finally:
        transmitter.cancel()
        await asyncio.gather(transmitter, asking, return_exceptions=True)
        service.close()
        link.close()
    generated = made.get(answer.request_id, ())
    if not args.json:
        io.stdout.write(b"\n")
        io.stderr.write(f"linkstack demo: {answer_summary(answer)}\n")
    record = _record(args, answer, params=params, generated=generated, link=link, service=service)
    record["recovery"] = _recovery_record(answer, station, service)
    record["security"] = _security_record(keys is not None, station, service)
    return record


def _security_record(enabled: bool, station: Any, service: Any) -> dict[str, Any]:
    """SDLS refusals at both ends (``sdls/<reason>`` drops), summed and per side."""
    from linkstack.keystore import security_record

    ground, spacecraft = station.endpoint.drops, service.endpoint.drops
    record = security_record(enabled, ground, spacecraft)
    record["ground"] = security_record(enabled, ground)
    record["spacecraft"] = security_record(enabled, spacecraft)
    return record


def _recovery_record(answer: Answer, station: Any, service: Any) -> dict[str, Any]:
    """What the link and the recovery did to get the answer whole (docs/protocol.md §10)."""
    recovery, onboard = station.recovery_counters, service.core.counters
    return {
        "tc_frames_retransmitted": answer.counters.tc_frames_retransmitted,
        "cop1_alerts": answer.counters.cop1_alerts,
        "resend_requests": recovery.resend_requests,
        "token_ranges_requested": recovery.ranges_requested,
        "token_ids_requested": recovery.ids_requested,
        "token_ids_resent": onboard.ids_resent,
        "ends_resent": onboard.ends_resent,
        "end_acks": recovery.end_acks,
        "tokens_lost": recovery.tokens_lost,
        "lost_ranges": [[r.first_index, r.count] for r in answer.lost],
        "duplicate_ids_dropped": answer.stats.duplicate_ids,
    }


def _record(
    args: argparse.Namespace,
    answer: Answer,
    *,
    params: GenerationParams,
    generated: tuple[int, ...],
    link: LoopbackLink,
    service: Any,
) -> dict[str, Any]:
    from groundstation.cli import answer_record

    record = answer_record(
        answer, params, link=f"loopback:{args.profile}", model=args.model, chat=not args.no_chat
    )
    record["generated_ids"] = list(generated)
    record["match"] = answer.error is None and list(answer.received_ids) == list(generated)
    record["uplink_bits"] = record["counters"]["uplink_bits"]
    ground, spacecraft = answer.counters, service.endpoint.counters
    record["frames_sent"] = spacecraft.cadus_sent
    record["frames_received"] = ground.frames_received
    record["frames_dropped"] = ground.dropped
    record["rs_symbols_corrected"] = ground.rs_corrected_symbols
    record["spacecraft_counters"] = dataclasses.asdict(service.endpoint.counters)
    record["channels"] = {
        "uplink": dataclasses.asdict(link.uplink.stats),
        "downlink": dataclasses.asdict(link.downlink.stats),
    }
    record["seed"] = args.seed
    record["profile"] = args.profile
    return record


if __name__ == "__main__":  # pragma: no cover
    from linkstack.cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))
