"""``zmq://`` links (``linkstack/aio/zmq_link.py``): the downlink as BPSK IQ over ZeroMQ.

* without GNU Radio: the spacecraft end's PUSH socket straight into the ground end's
  PULL socket, in one process: every CADU comes out in order, bit-exact but for
  a few bits at the end of the first one (see ``carry``), and the
  UDP uplink carries a CLTU;
* with GNU Radio (``/usr/bin/python3`` with gr-zeromq; skipped otherwise): the example
  flowgraph ``examples/gnuradio_channel.py`` between the two, at Eb/N0 6 dB with a
  frequency and a timing offset: the same.

The ground's receiver hands a CADU on once the next one's samples are in, so each
test sends a few trailing CADUs and asks for the ones before them.  Waits are on the
data received, bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zmq")

from linkstack.aio import LinkAddress, open_link
from linkstack.aio.zmq_link import ZmqLink, ZmqOptions
from linkstack.coding.tm import TmCodingConfig, encode_cadus
from linkstack.errors import LocalProtocolError

SYSTEM_PYTHON = Path("/usr/bin/python3")
EXAMPLE = Path(__file__).parent.parent / "examples" / "gnuradio_channel.py"
TRAILING = 3


def make_cadus(count: int, seed: int) -> list[bytes]:
    coding = TmCodingConfig()
    rng = np.random.default_rng(seed)
    return [
        encode_cadus(rng.integers(0, 256, coding.frame_octets, np.uint8).tobytes(), coding)
        for _ in range(count)
    ]


class Collector:
    """Units received, and an event when enough have come."""

    def __init__(self, wanted: int) -> None:
        self.units: list[bytes] = []
        self.wanted = wanted
        self.done = asyncio.Event()

    def __call__(self, data: bytes, now: float) -> None:
        self.units.append(data)
        if len(self.units) >= self.wanted:
            self.done.set()


async def carry(
    spacecraft: ZmqLink, ground: ZmqLink, got: Collector, cadus: list[bytes], timeout: float
) -> None:
    for cadu in [*cadus, *make_cadus(TRAILING, seed=99)]:
        spacecraft.send(cadu)
        await asyncio.sleep(0)  # let the sender task push
    try:
        await asyncio.wait_for(got.done.wait(), timeout)
    except TimeoutError:
        pytest.fail(
            f"{len(got.units)} of {len(cadus)} CADUs in {timeout} s"
            f" (ground: {ground.failure}, {ground._demodulator.samples} samples in)"
        )
    # Known: the first CADU after lock comes out with a few bit errors in its last
    # octet (the synchronizer's first decisions; the ground's R-S corrects them);
    # every later one is bit-exact.
    first = np.unpackbits(
        np.frombuffer(bytes(a ^ b for a, b in zip(got.units[0], cadus[0], strict=True)), np.uint8)
    )
    assert int(first.sum()) <= 8
    assert got.units[1 : len(cadus)] == cadus[1:]


def test_parse() -> None:
    options = ZmqOptions.parse("zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6001&sps=8&baud=1200")
    assert (options.uplink.host, options.uplink.port) == ("127.0.0.1", 6000)
    assert (options.iq, options.sps, options.baud) == ("tcp://127.0.0.1:6001", 8, 1200.0)
    address = LinkAddress.parse("zmq://localhost:6000?iq=tcp://127.0.0.1:6001")
    assert (address.scheme, address.port) == ("zmq", 6000)
    for bad in (
        "zmq://127.0.0.1:6000",
        "zmq://127.0.0.1:6000?iq=tcp://x:1&sps=1",
        "zmq://127.0.0.1:6000?iq=tcp://x:1&color=red",
        "zmq://127.0.0.1?iq=tcp://x:1",
    ):
        with pytest.raises(LocalProtocolError):
            LinkAddress.parse(bad)


async def test_direct_push_pull_carries_cadus_exactly() -> None:
    cadus = make_cadus(24, seed=1)
    uplink = Collector(1)
    spacecraft = await open_link(
        "zmq://127.0.0.1:0?iq=tcp://127.0.0.1:*", role="spacecraft", on_receive=uplink
    )
    assert isinstance(spacecraft, ZmqLink)
    port = spacecraft.local_address[1]  # type: ignore[index]
    got = Collector(len(cadus))
    ground = await open_link(
        f"zmq://127.0.0.1:{port}?iq={spacecraft.iq_endpoint}", role="ground", on_receive=got
    )
    assert isinstance(ground, ZmqLink)
    try:
        ground.send(b"\xeb\x90 a CLTU")
        await asyncio.wait_for(uplink.done.wait(), 10)
        assert uplink.units == [b"\xeb\x90 a CLTU"]
        await carry(spacecraft, ground, got, cadus, timeout=60)
    finally:
        ground.close()
        spacecraft.close()


# -- through GNU Radio -----------------------------------------------------------------


def gnuradio_missing() -> str | None:
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (GNU Radio lives in it)"
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "from gnuradio import zeromq, channels"],
        env=system_env(Path("/tmp")),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        return f"{SYSTEM_PYTHON} cannot import gnuradio.zeromq/channels (install gnuradio)"
    return None


def system_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV")) and k != "PATH"
    }
    env["PATH"] = "/usr/bin:/bin"
    env["HOME"] = str(home)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def channel_process(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """The example flowgraph's endpoints (in, out) and process, killed afterwards."""
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    iq_in = f"tcp://127.0.0.1:{free_port()}"
    iq_out = f"tcp://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            str(SYSTEM_PYTHON),
            str(EXAMPLE),
            *("--iq-in", iq_in, "--iq-out", iq_out),
            *("--ebn0", "6", "--freq-offset", "0.0005", "--timing-ppm", "20", "--seed", "7"),
        ],
        env=system_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield iq_in, iq_out, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
async def test_through_gnuradio_channel(
    channel_process: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    iq_in, iq_out, process = channel_process
    cadus = make_cadus(200, seed=2)
    spacecraft = await open_link(
        f"zmq://127.0.0.1:0?iq={iq_in}", role="spacecraft", on_receive=lambda d, t: None
    )
    assert isinstance(spacecraft, ZmqLink)
    port = spacecraft.local_address[1]  # type: ignore[index]
    got = Collector(len(cadus))
    ground = await open_link(f"zmq://127.0.0.1:{port}?iq={iq_out}", role="ground", on_receive=got)
    assert isinstance(ground, ZmqLink)
    try:
        await carry(spacecraft, ground, got, cadus, timeout=240)
    except BaseException:
        if process.poll() is not None and process.stdout is not None:
            print(process.stdout.read().decode(errors="replace"))
        raise
    finally:
        ground.close()
        spacecraft.close()
