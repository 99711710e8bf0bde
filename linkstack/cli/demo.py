"""``linkstack demo``: the whole system in one process, live.

A prompt typed on the ground is tokenized, uplinked as CLTUs through a simulated
channel, answered on board by Qwen-3 and streamed down as CADUs, then shown as it
arrives.  The ground station, the onboard service and the link are the same objects
``groundstation ask`` and ``onboard serve`` use, joined by a
:class:`~linkstack.aio.LoopbackLink` running on the event loop's clock.

Options are checked (and ``--capture``'s path) before the model loads; torch and
transformers are imported only then.  Ctrl-C cancels the request on board, prints what
arrived and exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linkstack.cli.main import Streams
from linkstack.console.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LiveLine,
    RunError,
    UsageError,
    add_session_options,
    add_verbose_option,
    logging_to,
    positive_seconds,
    probability,
)
from linkstack.console.options import add_generation_options, wire_params
from linkstack.radio.channel import CODINGS, PROFILE_NAMES, ChannelConfig, Outage

if TYPE_CHECKING:
    from groundstation.session import Outcome
    from groundstation.station import Update
    from linkstack.capture.recording import SessionRecorder
    from linkstack.inference.protocol import GenerationParams
    from linkstack.sdls.keystore import RoleSecurity
    from onboard.model import ModelHandle

DEFAULT_PROMPT = "Hello from the ground station. What do you see from orbit?"
DEFAULT_TIMEOUT_S = 600.0
#: ``--rekey-at``: the TC VC of key management, and the id of the new session key.
REKEY_VCID = 1
REKEY_KEY_ID = 140


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


def _decibels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of dB")
    return value


def _at_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run ground station, link and spacecraft in one process and stream an answer",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    demo.add_argument(
        "prompt",
        nargs="?",
        default=DEFAULT_PROMPT,
        metavar="PROMPT",
        help=f"prompt text (default {DEFAULT_PROMPT!r})",
    )
    demo.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='"embedded" (default), "embedded-full-vocab", "qwen3-0.6b-shape", or a local'
        " checkpoint directory",
    )
    demo.add_argument(
        "--profile", default="s-band", choices=PROFILE_NAMES, help="link profile (default s-band)"
    )
    demo.add_argument(
        "--ber",
        type=probability,
        metavar="X",
        help="raw bit error rate, both ways (with --coding conv: the uplink only)",
    )
    demo.add_argument(
        "--burst",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability a unit is hit by an error burst longer than R-S corrects"
        " (with --coding conv: the uplink only)",
    )
    demo.add_argument(
        "--drop", type=probability, default=0.0, metavar="P", help="probability a unit is lost"
    )
    demo.add_argument(
        "--duplicate",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability a unit arrives twice",
    )
    demo.add_argument(
        "--reorder",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability a unit is held back behind the next ones",
    )
    demo.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:SECONDS",
        help="loss of signal both ways, seconds after the start (repeatable)",
    )
    demo.add_argument(
        "--rekey-at",
        type=_at_seconds,
        metavar="S",
        help="S seconds after the request, rekey over the link on TC VC 1 while the answer"
        " streams on VC 0: an OTAR of a new session key and its activation, under keys"
        " made for this run, or with --keys under the key file's master key on the VC of"
        " its management SA (linkstack keys generate --management-vc 1)",
    )
    demo.add_argument(
        "--coding",
        default="none",
        choices=CODINGS,
        help="downlink channel code: none (bit errors at --ber; the default) or conv (the"
        " convolutional code over a noisy radio channel, see --ebn0 and --slips)",
    )
    demo.add_argument(
        "--ebn0",
        type=_decibels,
        metavar="DB",
        help="with --coding conv: signal to noise ratio per data bit (Eb/N0) in dB"
        " (default: no noise)",
    )
    demo.add_argument(
        "--slips",
        type=probability,
        metavar="P",
        help="with --coding conv: probability per frame that the receiver loses or gains"
        " one symbol",
    )
    add_generation_options(demo, seed_help="sampling and channel seed (default 0)")
    demo.add_argument(
        "--device", default=None, metavar="DEV", help="cpu, cuda, cuda:N (default: cuda if any)"
    )
    demo.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    demo.add_argument(
        "--json", action="store_true", help="print one JSON object at the end (docs/json.md)"
    )
    demo.add_argument(
        "--via-gnuradio",
        action="store_true",
        help="both directions as BPSK IQ through a GNU Radio channel flowgraph"
        " (examples/gnuradio_channel.py, run by /usr/bin/python3; --ebn0: the downlink's,"
        " default 6 dB)",
    )
    add_verbose_option(demo)
    add_session_options(
        demo,
        capture_help="record the session at the ground's end: CLTUs up, CADUs down, Space Packets",
        keys_help="protect both directions; each side keeps its IV counters in"
        " PATH.ground.counters / PATH.spacecraft.counters",
    )
    demo.set_defaults(handler=run)


def _channels(args: argparse.Namespace) -> tuple[ChannelConfig, ChannelConfig]:
    from linkstack.radio.channel import link_profile

    if args.coding != "conv":
        for option, value in (("--ebn0", args.ebn0), ("--slips", args.slips)):
            if value is not None:
                raise UsageError(f"{option} needs --coding conv")
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
    down = changes
    if args.coding == "conv":  # the noise is Eb/N0: no bit errors or bursts on the bits
        down = {
            **changes,
            "ber": 0.0,
            "burst_probability": 0.0,
            "coding": "conv",
            "ebn0_db": args.ebn0,
            "slip_probability": args.slips or 0.0,
        }
    return (
        dataclasses.replace(profile.uplink, **changes),
        dataclasses.replace(profile.downlink, **down),
    )


def run(args: argparse.Namespace, io: Streams) -> int:
    from linkstack.console.recording import check_capture_path

    if args.via_gnuradio:
        from linkstack.cli import gnuradio_demo

        return gnuradio_demo.run(args, io)
    uplink, downlink = _channels(args)
    params = wire_params(args)
    check_capture_path(args.capture, force=args.force)

    keys = both_ends_keys(args.keys)
    if keys is not None and args.rekey_at is not None and keys[0].management_sa is None:
        raise UsageError(
            f"--rekey-at with --keys {args.keys}: the key file has no management SA for"
            " key management on a TC VC of its own; make one with"
            " `linkstack keys generate PATH --management-vc 1`"
        )

    handle, params, prompt_ids = load_demo_model(args, io, params)
    if not args.json:
        io.stderr.write(
            f"linkstack demo: {handle.description}; profile {args.profile}; "
            f"{len(prompt_ids)} prompt ids up\n"
        )
    live = LiveLine(None if args.json else io.stdout)
    with logging_to(io.stderr, "linkstack", verbosity=args.verbose, live=live):
        outcome, record = asyncio.run(
            _demo(
                args,
                io,
                handle,
                prompt_ids,
                params,
                uplink=uplink,
                downlink=downlink,
                live=live,
                keys=keys,
            )
        )
    finish_demo(args, io, keys, record)
    if outcome.interrupted:
        io.stderr.write(
            f"linkstack demo: interrupted ({outcome.signal_name}) after"
            f" {len(outcome.answer.received_ids)} ids; Cancel sent for request"
            f" {outcome.answer.request_id}"
            + (", the spacecraft confirmed it\n" if outcome.cancel_confirmed else "\n")
        )
        return EXIT_INTERRUPTED
    return demo_status(io, record)


def _recorder(
    args: argparse.Namespace,
    uplink: ChannelConfig,
    downlink: ChannelConfig,
    keys: tuple[RoleSecurity, RoleSecurity] | None = None,
) -> contextlib.AbstractContextManager[SessionRecorder | None]:
    """``--capture``: the ground end's recorder on the running loop's clock."""
    from linkstack.console.recording import session_recorder
    from linkstack.radio.channel import LinkProfile

    return session_recorder(
        args.capture,
        side="ground",
        program="linkstack demo",
        clock=asyncio.get_running_loop().time,
        force=args.force,
        protection=None if keys is None else keys[0].metadata(),
        prompt=args.prompt,
        profile=LinkProfile(args.profile, uplink, downlink),
        seed=args.seed,
        link_url=f"loopback:{args.profile}",
        model=args.model,
        chat=not args.no_chat,
        timeout_s=args.timeout,
    )


def both_ends_keys(path: Path | str | None) -> tuple[RoleSecurity, RoleSecurity] | None:
    """``--keys``: the ground's and the spacecraft's security from one key file."""
    if path is None:
        return None
    from linkstack.sdls.keystore import link_security

    return link_security(path, role="ground"), link_security(path, role="spacecraft")


def load_demo_model(
    args: argparse.Namespace, io: Streams, params: GenerationParams
) -> tuple[ModelHandle, GenerationParams, tuple[int, ...]]:
    """Load ``--model`` (said on stderr unless ``--json``) and encode ``--prompt``: the
    handle, ``params`` stopping at the model's stop ids, and the prompt's ids."""
    from onboard.model import load_model

    if not args.json:
        io.stderr.write(f"linkstack demo: loading model {args.model} ...\n")
        io.stderr.flush()
    handle = load_model(args.model, device=args.device)
    params = dataclasses.replace(params, stop_ids=handle.stop_ids)
    prompt_ids = tuple(handle.tokenizer.encode_prompt(args.prompt, chat=not args.no_chat))
    return handle, params, prompt_ids


def finish_demo(
    args: argparse.Namespace,
    io: Streams,
    keys: tuple[RoleSecurity, RoleSecurity] | None,
    record: dict[str, Any],
) -> None:
    """Keep both ends' receive state in their counter files; the record under ``--json``."""
    for side in keys or ():
        side.save_receive_state()
    if args.json:
        io.stdout.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    io.stdout.flush()


def demo_status(io: Streams, record: dict[str, Any]) -> int:
    """The exit status of a finished demo: failed (said on stderr) on an error or when
    the ground received other ids than the model made."""
    if record["error"] is not None:
        io.stderr.write(f"linkstack demo: {record['error']}\n")
        return EXIT_FAILED
    if not record["match"]:
        io.stderr.write("linkstack demo: the ground received other ids than the model made\n")
        return EXIT_FAILED
    return EXIT_OK


async def _demo(
    args: argparse.Namespace,
    io: Streams,
    handle: ModelHandle,
    prompt_ids: tuple[int, ...],
    params: GenerationParams,
    *,
    uplink: ChannelConfig,
    downlink: ChannelConfig,
    live: LiveLine,
    keys: tuple[RoleSecurity, RoleSecurity] | None = None,
) -> tuple[Outcome, dict[str, Any]]:
    from groundstation.records import answer_summary
    from groundstation.session import await_answer, station_link
    from groundstation.station import GroundStation
    from linkstack.aio import LoopbackLink
    from linkstack.capture.recording import RecordingLink
    from linkstack.endpoints import (
        Apid,
        EphemeralSecurity,
        LinkConfig,
        TcRoute,
        ephemeral_security,
    )
    from linkstack.sdls import KeyMaterial
    from onboard.service import OnboardService

    # With a management SA in the key file, key management (and Set ARSN after a long
    # loss) goes up on its VC under it; both ends route it the same way.
    link_setup = station_link(None if keys is None else keys[0])
    config = link_setup.config
    ground_security, vc_security = link_setup.security, link_setup.vc_security
    spacecraft_security = None if keys is None else keys[1].security
    rekeying: EphemeralSecurity | None = None
    make_rekey: Callable[[], tuple[bytes, bytes]] | None = None
    rekey_key_id = REKEY_KEY_ID
    if args.rekey_at is not None and keys is not None:
        ring = keys[0].security.table.keys
        if rekey_key_id in ring:
            rekey_key_id = max(ring.ids()) + 1
        ground_keys = keys[0]

        def make_rekey() -> tuple[bytes, bytes]:
            return ground_keys.rekey_pdus(rekey_key_id, KeyMaterial(os.urandom(32)))

    elif args.rekey_at is not None:
        # Key management on a TC VC of its own, each VC under its own SA.
        config = LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, vcid=REKEY_VCID),))
        rekeying = ephemeral_security(config, os.urandom)
        ground_security, spacecraft_security = rekeying.security
        vc_security = rekeying.tc_vc_security
        ephemeral = rekeying

        def make_rekey() -> tuple[bytes, bytes]:
            return ephemeral.rekey(rekey_key_id)

    rekey_vcid = config.route(Apid.KEY_MANAGEMENT)[0]
    station = GroundStation(
        handle.tokenizer, config=config, security=ground_security, vc_security=vc_security
    )
    made: dict[int, tuple[int, ...]] = {}  # the ground's EndAck frees the core's copy
    service = OnboardService.for_model(
        handle,
        link_config=config,
        downlink_rate_bps=downlink.rate_bps,
        on_generated=made.__setitem__,
        security=spacecraft_security,
    )
    recording: list[SessionRecorder] = []  # the recorder, once open
    rekey_timer: asyncio.TimerHandle | None = None

    def to_ground(data: bytes, now: float) -> None:
        if recording:
            recording[0].received(data, now)
        station.on_receive(data, now)

    link = LoopbackLink(
        uplink=uplink,
        downlink=downlink,
        seed=args.seed,
        to_ground=to_ground,
        to_spacecraft=service.on_receive,
        tm_coding=config.tm_coding,
    )
    service.attach(link.spacecraft)
    transmitter = asyncio.create_task(service.run())
    try:
        with _recorder(args, uplink, downlink, keys) as recorder:
            if recorder is not None:
                recording.append(recorder)
                station.endpoint.packet_tap = recorder.tap
                station.attach(RecordingLink(link.ground, recorder))
            else:
                station.attach(link.ground)

            def show(update: Update) -> None:
                live.write(update.text)

            request = station.submit(prompt_ids, params, on_update=show)
            rekey_sent: list[float] = []
            if make_rekey is not None:
                loop = asyncio.get_running_loop()
                rekey_pdus = make_rekey

                def rekey() -> None:
                    for pdu in rekey_pdus():
                        station.send_key_management(pdu)
                    rekey_sent.append(loop.time() - request.sent_at)

                rekey_timer = loop.call_later(args.rekey_at, rekey)
            waiting = asyncio.create_task(await_answer(request, timeout=args.timeout))
            # The onboard transmitter never ends by itself: if it does, it failed, and the
            # ground would otherwise wait for its timeout on a dead downlink.
            await asyncio.wait({waiting, transmitter}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                raise RunError(f"the onboard downlink stopped: {transmitter.exception()!r}")
            outcome = waiting.result()
    finally:
        if rekey_timer is not None:
            rekey_timer.cancel()
        transmitter.cancel()
        await asyncio.gather(transmitter, return_exceptions=True)
        service.close()
        link.close()
    answer = outcome.answer
    if not args.json:
        live.end()
        io.stderr.write(f"linkstack demo: {answer_summary(answer)}\n")
    record = _record(
        args,
        outcome,
        params,
        ends=(station, service, link),
        generated=made.get(answer.request_id, ()),
    )
    record["security"] = _security_record(
        keys is not None or rekeying is not None, station, service
    )
    if make_rekey is not None:
        record["rekey"] = {
            "tc_vcid": rekey_vcid,
            "key_id": rekey_key_id,
            "sent_s": rekey_sent[0] if rekey_sent else None,
            "applied": [
                {
                    "procedure": event.procedure,
                    "key_ids": list(event.key_ids),
                    "at_s": at - request.sent_at,
                }
                for at, event in service.keys_changed
            ],
            "farm_vr": {str(vcid): farm.vr for vcid, farm in service.endpoint.farms.items()},
        }
        if not args.json:
            applied = ", ".join(e["procedure"] for e in record["rekey"]["applied"]) or "nothing"
            io.stderr.write(f"linkstack demo: rekey on TC VC {rekey_vcid}: {applied} applied\n")
    return outcome, record


def _security_record(enabled: bool, station: Any, service: Any) -> dict[str, Any]:
    """SDLS refusals at both ends (``sdls/<reason>`` drops), summed and per side."""
    from linkstack.sdls.keystore import security_record

    ground, spacecraft = station.endpoint.drops, service.endpoint.drops
    record = security_record(enabled, ground, spacecraft)
    record["ground"] = security_record(enabled, ground)
    record["spacecraft"] = security_record(enabled, spacecraft)
    return record


def _record(
    args: argparse.Namespace,
    outcome: Outcome,
    params: GenerationParams,
    *,
    ends: tuple[Any, Any, Any],
    generated: tuple[int, ...],
) -> dict[str, Any]:
    """The ground's record (groundstation.records) with what only the demo sees: the
    spacecraft's ids and counters, and the simulated channels."""
    from groundstation.records import answer_record, recovery_record

    station, service, link = ends
    answer = outcome.answer
    record = answer_record(
        answer,
        params,
        link=f"loopback:{args.profile}",
        model=args.model,
        chat=not args.no_chat,
    )
    onboard = service.core.counters
    record["recovery"] = recovery_record(
        answer,
        station.recovery_counters,
        ids_resent=onboard.ids_resent,
        ends_resent=onboard.ends_resent,
    )
    record["interrupted"] = outcome.interrupted
    record["generated_ids"] = list(generated)
    record["match"] = answer.error is None and list(answer.received_ids) == list(generated)
    record["frames_sent"] = service.endpoint.counters.cadus_sent
    record["spacecraft_counters"] = dataclasses.asdict(service.endpoint.counters)
    record["channels"] = {
        "uplink": dataclasses.asdict(link.uplink.stats),
        "downlink": dataclasses.asdict(link.downlink.stats),
    }
    if link.downlink.coded is not None:
        record["channels"]["downlink"]["coded"] = dataclasses.asdict(link.downlink.coded.stats)
    record["seed"] = args.seed
    record["profile"] = args.profile
    return record


if __name__ == "__main__":  # pragma: no cover
    from linkstack.cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))
