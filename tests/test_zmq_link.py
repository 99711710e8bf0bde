"""``zmq://`` links (``linkstack/aio/zmq_link.py``): BPSK IQ over ZeroMQ.

* without GNU Radio: each end's PUSH socket straight into the other's PULL socket, in
  one process: every CADU comes out in order and bit-exact, and the CLTUs sent up
  come out exactly (the ``tx=``/``rx=`` form: IQ both ways) or as UDP datagrams (the ``iq=`` form);
* with GNU Radio (``/usr/bin/python3`` with gr-zeromq; skipped otherwise): the example
  flowgraph ``examples/gnuradio_channel.py`` between the two, the downlink at Eb/N0
  6 dB and the uplink at 9 dB, each with a frequency and a timing offset: the same.

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
from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu
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
            f" (ground: {ground.failure}, {ground.samples_received} samples in)"
        )
    # Every CADU bit-exact, the first one included: the lead and the CADUs are one
    # unbroken code sequence (a lead encoded out of order once cost the first CADU a
    # few bits in its last octet).
    assert got.units[: len(cadus)] == cadus


def make_cltus(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        encode_cltu(rng.integers(0, 256, int(rng.integers(10, 120)), np.uint8).tobytes(),
                    randomize=True)
        for _ in range(count)
    ]  # fmt: skip


def test_parse_the_iq_uplink_form() -> None:
    options = ZmqOptions.parse("zmq://?tx=tcp://127.0.0.1:6001&rx=tcp://127.0.0.1:6004&sps=8")
    assert options.uplink is None
    assert (options.tx, options.rx, options.sps) == (
        "tcp://127.0.0.1:6001",
        "tcp://127.0.0.1:6004",
        8,
    )
    for role in ("ground", "spacecraft"):
        assert options.transmit_endpoint(role) == "tcp://127.0.0.1:6001"  # type: ignore[arg-type]
        assert options.receive_endpoint(role) == "tcp://127.0.0.1:6004"  # type: ignore[arg-type]
    address = LinkAddress.parse("zmq://?tx=tcp://127.0.0.1:6001&rx=tcp://127.0.0.1:6004")
    assert (address.scheme, address.host, address.port) == ("zmq", "", 0)


def test_parse_the_udp_uplink_form() -> None:
    options = ZmqOptions.parse("zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6001&sps=8&baud=1200")
    assert options.uplink is not None
    assert (options.uplink.host, options.uplink.port) == ("127.0.0.1", 6000)
    assert (options.iq, options.sps, options.baud) == ("tcp://127.0.0.1:6001", 8, 1200.0)
    assert options.transmit_endpoint("spacecraft") == options.receive_endpoint("ground")
    assert options.transmit_endpoint("ground") is None  # the ground sends by UDP
    assert options.receive_endpoint("spacecraft") is None
    address = LinkAddress.parse("zmq://localhost:6000?iq=tcp://127.0.0.1:6001")
    assert (address.scheme, address.port) == ("zmq", 6000)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zmq://127.0.0.1:6000", "expected zmq://"),
        ("zmq://127.0.0.1:6000?iq=tcp://x:1&sps=1", "sps=1"),
        ("zmq://127.0.0.1:6000?iq=tcp://x:1&color=red", "unknown option 'color'"),
        ("zmq://127.0.0.1?iq=tcp://x:1", "needs HOST:PORT"),
        ("zmq://127.0.0.1:6000?iq=tcp://x:1&iq=tcp://x:2", "'iq' is given twice"),
        ("zmq://127.0.0.1:6000?iq=x:1", "'x:1' is not a ZeroMQ endpoint"),
        ("zmq://?tx=tcp://x:1", "expected zmq://"),
        ("zmq://?rx=tcp://x:1", "expected zmq://"),
        ("zmq://127.0.0.1:6000?tx=tcp://x:1&rx=tcp://x:2", "goes with iq="),
        ("zmq://127.0.0.1:6000?iq=tcp://x:1&tx=tcp://x:2", "without tx= and rx="),
        ("zmq://?tx=tcp://x:1&rx=tcp://x:2&rolloff=0", "rolloff=0"),
        ("zmq://?tx=tcp://x:1&rx=tcp://x:2&baud=fast", "could not convert"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message) as raised:
        LinkAddress.parse(url)
    assert repr(url) in str(raised.value)


async def test_direct_iq_both_ways() -> None:
    """The ``tx=``/``rx=`` form: CLTUs up and CADUs down, both as IQ."""
    cltus = make_cltus(5, seed=3)
    cadus = make_cadus(12, seed=4)
    ground_tx = f"tcp://127.0.0.1:{free_port()}"
    uplink = Collector(len(cltus))
    spacecraft = await open_link(
        f"zmq://?tx=tcp://127.0.0.1:*&rx={ground_tx}", role="spacecraft", on_receive=uplink
    )
    assert isinstance(spacecraft, ZmqLink)
    assert spacecraft.tx_endpoint is not None and spacecraft.local_address is None
    assert spacecraft.bound_url.startswith(f"zmq://?tx={spacecraft.tx_endpoint}&rx={ground_tx}&")
    got = Collector(len(cadus))
    ground = await open_link(
        f"zmq://?tx={ground_tx}&rx={spacecraft.tx_endpoint}", role="ground", on_receive=got
    )
    assert isinstance(ground, ZmqLink)
    try:
        for cltu in cltus:
            ground.send(cltu)
        try:
            await asyncio.wait_for(uplink.done.wait(), 60)
        except TimeoutError:
            pytest.fail(f"{len(uplink.units)} of {len(cltus)} CLTUs ({spacecraft.failure})")
        # Each CLTU as sent: start sequence, codeblocks and tail, re-aligned.
        assert uplink.units == cltus
        await carry(spacecraft, ground, got, cadus, timeout=60)
    finally:
        ground.close()
        spacecraft.close()


async def test_direct_push_pull_carries_cadus_exactly() -> None:
    cadus = make_cadus(24, seed=1)
    uplink = Collector(1)
    spacecraft = await open_link(
        "zmq://127.0.0.1:0?iq=tcp://127.0.0.1:*", role="spacecraft", on_receive=uplink
    )
    assert isinstance(spacecraft, ZmqLink)
    port = spacecraft.local_address[1]  # type: ignore[index]
    assert spacecraft.bound_url.startswith(f"zmq://127.0.0.1:{port}?iq={spacecraft.tx_endpoint}&")
    got = Collector(len(cadus))
    ground = await open_link(
        f"zmq://127.0.0.1:{port}?iq={spacecraft.tx_endpoint}", role="ground", on_receive=got
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
def channel_process(tmp_path: Path) -> Iterator[tuple[dict[str, str], subprocess.Popen[bytes]]]:
    """The example flowgraph's four endpoints and its process, stopped afterwards."""
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    ends = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("sc_tx", "gs_rx", "gs_tx", "sc_rx")}
    process = subprocess.Popen(
        [
            str(SYSTEM_PYTHON),
            str(EXAMPLE),
            *("--downlink-in", ends["sc_tx"], "--downlink-out", ends["gs_rx"]),
            *("--uplink-in", ends["gs_tx"], "--uplink-out", ends["sc_rx"]),
            *("--ebn0", "6", "--freq-offset", "0.0005", "--timing-ppm", "20", "--seed", "7"),
            *(
                "--uplink-ebn0",
                "9",
                "--uplink-freq-offset",
                "-0.0003",
                "--uplink-timing-ppm",
                "-30",
            ),
        ],
        env=system_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield ends, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
async def test_through_gnuradio_channel(
    channel_process: tuple[dict[str, str], subprocess.Popen[bytes]],
) -> None:
    ends, process = channel_process
    cltus = make_cltus(20, seed=5)
    cadus = make_cadus(200, seed=2)
    uplink = Collector(len(cltus))
    spacecraft = await open_link(
        f"zmq://?tx={ends['sc_tx']}&rx={ends['sc_rx']}", role="spacecraft", on_receive=uplink
    )
    assert isinstance(spacecraft, ZmqLink)
    got = Collector(len(cadus))
    ground = await open_link(
        f"zmq://?tx={ends['gs_tx']}&rx={ends['gs_rx']}", role="ground", on_receive=got
    )
    assert isinstance(ground, ZmqLink)
    try:
        for cltu in cltus:
            ground.send(cltu)
        await carry(spacecraft, ground, got, cadus, timeout=240)
        await asyncio.wait_for(uplink.done.wait(), 60)
        # Through noise the codeblocks may carry a corrected bit or two; the octet
        # decoder must recover every frame sent.
        sent = decode_all(cltus)
        assert decode_all(uplink.units) == sent and len(sent) == len(cltus)
    except BaseException:
        if process.poll() is not None and process.stdout is not None:
            print(process.stdout.read().decode(errors="replace"))
        raise
    finally:
        ground.close()
        spacecraft.close()


def decode_all(cltus: list[bytes]) -> list[bytes]:
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=True)
    out = []
    for cltu in cltus:
        decoder.receive_bytes(cltu)
        while (event := decoder.next_event()) is not None:
            if isinstance(event, CltuDecoded):
                out.append(event.data)
    return out
