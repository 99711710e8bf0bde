"""``linkstack demo --via-gnuradio``: the demo's ground station and spacecraft in this
process, the radio channel between them in a GNU Radio flowgraph.

The flowgraph is ``examples/gnuradio_channel.py``, run by the Python that has GNU
Radio (``/usr/bin/python3``, Debian's packages; ``LINKSTACK_GNURADIO_PYTHON`` names
another).  Both directions are IQ over ZeroMQ (:mod:`linkstack.aio.zmq_link`, the
``zmq://?tx=...&rx=...`` form): the prompt goes up as BPSK CLTUs through the
flowgraph's uplink path, the answer comes down as coded BPSK CADUs through its
downlink path, each with noise, a carrier and a clock offset (the downlink at
``--ebn0`` dB, 6 by default; the uplink at :data:`UPLINK_EBN0_DB`).  The simulated
channel's options (``--profile`` figures, ``--ber``, ``--burst``...) do not apply.

``--keys FILE`` protects both directions with SDLS as the plain demo does (the same
key file, each side's counters next to it, saved at the end; ``security`` in the
record).  ``--capture`` is refused: a capture describes the simulated link it was made
on (``loopback:PROFILE`` and its channel settings), and there is no such description
of the flowgraph's channel yet.  ``--rekey-at`` is refused too: it needs a second TC
VC and keys made for the run, which this path does not set up.

GNU Radio missing, or the example not there: one line, exit 1, before the model loads.
The flowgraph is stopped (SIGTERM) when the answer is in, on success and on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from linkstack.cli.demo import both_ends_keys, demo_status, finish_demo, load_demo_model
from linkstack.console.base import LiveLine, RunError, UsageError
from linkstack.console.options import wire_params

if TYPE_CHECKING:
    from linkstack.cli.main import Streams
    from linkstack.sdls.keystore import RoleSecurity

#: The interpreter with GNU Radio, unless LINKSTACK_GNURADIO_PYTHON names another.
SYSTEM_PYTHON: Final = "/usr/bin/python3"
#: The flowgraph, in the source tree.
EXAMPLE: Final = Path(__file__).resolve().parents[2] / "examples" / "gnuradio_channel.py"
DEFAULT_EBN0_DB: Final = 6.0
#: The uplink's Eb/N0: hard-decision BCH codeblocks need more than the downlink's
#: Viterbi-decoded stream (at 6 dB about a third of 20-codeblock CLTUs fail).
UPLINK_EBN0_DB: Final = 9.0
#: Carrier offsets (cycles per sample) and sample clock errors (ppm) of the two paths.
DOWNLINK_OFFSET: Final = (0.0005, 20.0)
UPLINK_OFFSET: Final = (-0.0003, -30.0)
READY_TIMEOUT_S: Final = 120.0
#: Options of the simulated channel that a GNU Radio channel replaces.
SIMULATED_OPTIONS: Final = {
    "ber": "--ber",
    "burst": "--burst",
    "drop": "--drop",
    "duplicate": "--duplicate",
    "reorder": "--reorder",
    "slips": "--slips",
}


def check_options(args: argparse.Namespace) -> None:
    """Options that mean nothing over the flowgraph are a usage error."""
    for name, option in SIMULATED_OPTIONS.items():
        if getattr(args, name, None):
            raise UsageError(f"{option} is a simulated channel's option: not with --via-gnuradio")
    if getattr(args, "capture", None) is not None:
        raise UsageError(
            "--capture is not supported with --via-gnuradio (yet): a capture describes a"
            " simulated link"
        )
    if getattr(args, "rekey_at", None) is not None:
        raise UsageError("--rekey-at is not supported with --via-gnuradio (yet)")
    if getattr(args, "outage", None):
        raise UsageError("--outage is a simulated channel's option: not with --via-gnuradio")
    if getattr(args, "coding", "none") not in ("none", "conv"):
        raise UsageError("--coding: the flowgraph's downlink is always coded (conv)")


def gnuradio_python() -> str:
    """The interpreter to run the flowgraph, checked: it imports gnuradio's zeromq and
    channels modules.  Raises RunError (one line) if not."""
    python = os.environ.get("LINKSTACK_GNURADIO_PYTHON", SYSTEM_PYTHON)
    if not EXAMPLE.is_file():
        raise RunError(
            f"--via-gnuradio: the flowgraph {EXAMPLE} is missing (a source checkout has it)"
        )
    try:
        done = subprocess.run(
            [python, "-c", "from gnuradio import channels, zeromq"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except OSError as exc:
        raise RunError(
            f"--via-gnuradio: cannot run {python}: {exc.strerror or exc} (GNU Radio's Python;"
            " install Debian's gnuradio, or set LINKSTACK_GNURADIO_PYTHON)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise RunError(f"--via-gnuradio: {python} did not import gnuradio in 120 s") from exc
    if done.returncode:
        raise RunError(
            f"--via-gnuradio: {python} cannot import gnuradio (install Debian's gnuradio"
            " and gr-zeromq, or set LINKSTACK_GNURADIO_PYTHON)"
        )
    return python


def _free_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def run(args: argparse.Namespace, io: Streams) -> int:
    """``linkstack demo --via-gnuradio``."""
    check_options(args)
    params = wire_params(args)
    keys = both_ends_keys(args.keys)  # as the plain demo: a bad key file is refused first
    python = gnuradio_python()
    handle, params, prompt_ids = load_demo_model(args, io, params)
    live = LiveLine(None if args.json else io.stdout)
    record = asyncio.run(
        _run(
            args,
            io,
            python=python,
            handle=handle,
            prompt_ids=prompt_ids,
            params=params,
            live=live,
            keys=keys,
        )
    )
    finish_demo(args, io, keys, record)
    return demo_status(io, record)


async def _run(
    args: argparse.Namespace,
    io: Streams,
    *,
    python: str,
    handle: Any,
    prompt_ids: tuple[int, ...],
    params: Any,
    live: LiveLine,
    keys: tuple[RoleSecurity, RoleSecurity] | None = None,
) -> dict[str, Any]:
    from groundstation.records import answer_record, answer_summary
    from groundstation.session import await_answer
    from groundstation.station import GroundStation
    from linkstack.aio.zmq_link import ZmqLink, open_zmq
    from linkstack.sdls.keystore import security_record
    from onboard.service import OnboardService

    ebn0 = DEFAULT_EBN0_DB if args.ebn0 is None else args.ebn0
    made: dict[int, tuple[int, ...]] = {}
    station = GroundStation(handle.tokenizer, security=None if keys is None else keys[0].security)
    service = OnboardService.for_model(
        handle,
        on_generated=made.__setitem__,
        security=None if keys is None else keys[1].security,
    )
    down_out, up_out = _free_endpoint(), _free_endpoint()
    any_port = "tcp://127.0.0.1:*"
    spacecraft: ZmqLink = await open_zmq(
        f"zmq://?tx={any_port}&rx={up_out}", role="spacecraft", on_receive=service.on_receive
    )
    ground: ZmqLink | None = None
    flowgraph: asyncio.subprocess.Process | None = None
    transmitter: asyncio.Task[None] | None = None
    try:
        ground = await open_zmq(
            f"zmq://?tx={any_port}&rx={down_out}", role="ground", on_receive=station.on_receive
        )
        flowgraph = await asyncio.create_subprocess_exec(
            python,
            str(EXAMPLE),
            *("--downlink-in", str(spacecraft.tx_endpoint), "--downlink-out", down_out),
            *("--uplink-in", str(ground.tx_endpoint), "--uplink-out", up_out),
            *("--ebn0", f"{ebn0:g}", "--uplink-ebn0", f"{UPLINK_EBN0_DB:g}"),
            *(
                "--freq-offset",
                f"{DOWNLINK_OFFSET[0]:g}",
                "--timing-ppm",
                f"{DOWNLINK_OFFSET[1]:g}",
            ),
            *("--uplink-freq-offset", f"{UPLINK_OFFSET[0]:g}"),
            *("--uplink-timing-ppm", f"{UPLINK_OFFSET[1]:g}", "--seed", str(args.seed)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ""},
        )
        ready = await _ready_line(flowgraph)
        if not args.json:
            io.stderr.write(f"linkstack demo: {handle.description}; GNU Radio {ready}\n")
            io.stderr.flush()
        service.attach(spacecraft)
        station.attach(ground)
        transmitter = asyncio.create_task(service.run())
        request = station.submit(list(prompt_ids), params, on_update=lambda u: live.write(u.text))
        outcome = await await_answer(request, timeout=args.timeout)
    finally:
        if transmitter is not None:
            transmitter.cancel()
            await asyncio.gather(transmitter, return_exceptions=True)
        service.close()
        spacecraft.close()
        if ground is not None:
            ground.close()
        status = await _stop(flowgraph)
    answer = outcome.answer
    if not args.json:
        live.end()
        io.stderr.write(f"linkstack demo: {answer_summary(answer)}\n")
    link = f"gnuradio:{EXAMPLE.name}"
    record = answer_record(answer, params, link=link, model=args.model, chat=not args.no_chat)
    generated = made.get(answer.request_id, ())
    record["generated_ids"] = list(generated)
    record["match"] = answer.error is None and list(answer.received_ids) == list(generated)
    record["spacecraft_counters"] = {
        "cltus_received": service.endpoint.counters.cltus_received,
        "tc_corrected_bits": service.endpoint.counters.tc_corrected_bits,
        "cadus_sent": service.endpoint.counters.cadus_sent,
    }
    # SDLS refusals at both ends, summed and per side, as the plain demo reports them.
    ground_drops, spacecraft_drops = station.endpoint.drops, service.endpoint.drops
    record["security"] = security_record(keys is not None, ground_drops, spacecraft_drops)
    record["security"]["ground"] = security_record(keys is not None, ground_drops)
    record["security"]["spacecraft"] = security_record(keys is not None, spacecraft_drops)
    record["gnuradio"] = {
        "downlink_ebn0_db": ebn0,
        "uplink_ebn0_db": UPLINK_EBN0_DB,
        "downlink_offset": list(DOWNLINK_OFFSET),
        "uplink_offset": list(UPLINK_OFFSET),
        "exit_status": status,
    }
    return record


async def _ready_line(process: asyncio.subprocess.Process) -> str:
    """The flowgraph's ``channel: ...`` line; RunError if it ends or says nothing."""
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while raw := await process.stdout.readline():
                line = raw.decode(errors="replace").rstrip()
                if line.startswith("channel: "):
                    # Keep its output drained: a full pipe would stall the flowgraph.
                    asyncio.get_running_loop().create_task(_drain(process.stdout))
                    return line.removeprefix("channel: ")
                lines.append(line)
    except TimeoutError:
        raise RunError(
            f"--via-gnuradio: the flowgraph did not start in {READY_TIMEOUT_S:g} s"
        ) from None
    last = lines[-1] if lines else "no output"
    raise RunError(f"--via-gnuradio: the flowgraph stopped before it ran: {last}")


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


async def _stop(process: asyncio.subprocess.Process | None) -> int | None:
    """SIGTERM the flowgraph and wait for it (kill after 20 s); its exit status."""
    if process is None:
        return None
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode
