"""A live link through GNU Radio, three real processes: ``onboard serve --link zmq://``,
the channel flowgraph ``examples/gnuradio_channel.py`` (run by ``/usr/bin/python3``,
where Debian's GNU Radio lives) and ``groundstation ask --link zmq://``.

Both directions are IQ (the ``zmq://?tx=...&rx=...`` form): the prompt goes up as
BPSK CLTUs through the flowgraph's uplink path (Eb/N0 9 dB, offsets), the answer comes
down as coded BPSK CADUs through its downlink path (Eb/N0 6 dB, offsets).  The ids
``groundstation ask --json`` receives must be those ``onboard generate --json`` makes
for the same prompt and seed, bit-exact; then the spacecraft stops on SIGINT and the
flowgraph on SIGTERM, each with status 0 and no traceback.  Readiness is read from
each program's own line (``onboard: serving on``, ``channel:``), never slept for.

The flowgraph's Doppler ramp (``--doppler-hz PEAK --doppler-rate-hz-s RATE``, one per
direction): a pure carrier pushed through both paths comes out at the S-curve
``-PEAK tanh(RATE (t - T0) / PEAK)`` plus the constant offset, measured sample by
sample; and CADUs through a pass sweeping +-3 % of the symbol rate at 6 dB (CLTUs up
through their own ramp at 9 dB) all arrive after acquisition.

Skipped, with the reason, where ``/usr/bin/python3`` cannot import gnuradio.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from linkstack.aio import open_link
from linkstack.aio.zmq_link import ZmqLink
from linkstack.cli.main import Streams
from linkstack.cli.main import main as linkstack_main
from linkstack.sdls.keystore import generate_key_file
from tests.test_onboard_serve import Program, onboard, python_env
from tests.test_zmq_link import (
    EXAMPLE,
    SYSTEM_PYTHON,
    Collector,
    carry,
    decode_all,
    free_port,
    gnuradio_missing,
    make_cadus,
    make_cltus,
    system_env,
)

zmq = pytest.importorskip("zmq")

ROOT = Path(__file__).resolve().parent.parent
GENERATION = ["--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.95", "--seed", "42"]
READY_TIMEOUT = 180.0
ASK_TIMEOUT = 240
#: Samples per ZeroMQ message in exchange().
CHUNK = 8192


@pytest.fixture
def live_link(
    tmp_path: Path, xdg_cache_root: Path, qwen3_tokenizer: object
) -> Iterator[tuple[dict[str, str], Program, Program, subprocess.Popen[str]]]:
    """The four endpoints, the flowgraph, ``onboard serve`` and the reference run, all
    started at once (the model loads overlap); killed at the end if still running."""
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    ends = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("sc_tx", "gs_rx", "gs_tx", "sc_rx")}
    env = python_env(xdg_cache_root)
    channel = channel_program(
        tmp_path,
        ends,
        *("--ebn0", "6", "--freq-offset", "0.0005", "--timing-ppm", "20"),
        *("--uplink-ebn0", "9", "--uplink-freq-offset", "-0.0003"),
        *("--uplink-timing-ppm", "-30", "--seed", "11"),
    )
    spacecraft_url = f"zmq://?tx={ends['sc_tx']}&rx={ends['sc_rx']}"
    serve = Program(
        onboard(
            *("serve", "--link", spacecraft_url, "--device", "cpu"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
        "onboard: serving on ",
        ready_timeout=READY_TIMEOUT,
    )
    reference = onboard(
        *("generate", "hi", "--json", *GENERATION, "--device", "cpu"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield ends, channel, serve, reference
    finally:
        for process in (reference, serve.process, channel.process):
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_ask_through_the_gnuradio_channel_matches_onboard_generate(
    live_link: tuple[dict[str, str], Program, Program, subprocess.Popen[str]],
    xdg_cache_root: Path,
    tmp_path: Path,
) -> None:
    ends, channel, serve, reference = live_link
    out, err = reference.communicate(timeout=READY_TIMEOUT)
    assert reference.returncode == 0, err
    expected = json.loads(out)["generated_ids"]
    assert len(expected) == 12

    assert "uplink" in channel.wait_ready()
    ready = serve.wait_ready()
    # The URL it serves on, bound ports resolved: both directions IQ.
    assert ready.split()[3].startswith(f"zmq://?tx={ends['sc_tx']}&rx={ends['sc_rx']}&")

    ground_url = f"zmq://?tx={ends['gs_tx']}&rx={ends['gs_rx']}"
    ask = subprocess.run(
        [
            sys.executable,
            *("-m", "groundstation.cli", "ask", "hi", "--link", ground_url, "--json"),
            *GENERATION,
            *("--timeout", str(ASK_TIMEOUT), "--state-dir", str(tmp_path / "state")),
        ],
        cwd=ROOT,
        env=python_env(xdg_cache_root),
        text=True,
        capture_output=True,
        timeout=ASK_TIMEOUT + 60,
        check=False,
    )
    context = f"ask: {ask.stderr}\nserve: {serve.text()}\nchannel: {channel.text()}"
    assert ask.returncode == 0, context
    record: dict[str, Any] = json.loads(ask.stdout)
    assert record["received_ids"] == expected, context
    counters = record["counters"]
    assert counters["frames_received"] > 0 and counters["rs_uncorrectable"] == 0, counters

    assert serve.stop(signal.SIGINT) == 0, serve.text()
    assert channel.stop(signal.SIGTERM) == 0, channel.text()
    assert "Traceback" not in serve.text() + channel.text() + ask.stderr
    stopped = [line for line in serve.lines if line.startswith("onboard: stopped;")]
    assert stopped and "1 requests accepted" in stopped[0], serve.text()


# -- the flowgraph's Doppler ramp ---------------------------------------------------------------


def doppler_hz(
    t: npt.NDArray[np.float64], peak: float, rate: float, t0: float
) -> npt.NDArray[np.float64]:
    """The pass's S-curve as issue #12 and the flowgraph's docstring state it."""
    result: npt.NDArray[np.float64] = -peak * np.tanh(rate * (t - t0) / peak)
    return result


def channel_program(tmp_path: Path, ends: dict[str, str], *argv: str) -> Program:
    """The flowgraph, both paths, with these options, started."""
    return Program(
        subprocess.Popen(
            [
                str(SYSTEM_PYTHON),
                str(EXAMPLE),
                *("--downlink-in", ends["sc_tx"], "--downlink-out", ends["gs_rx"]),
                *("--uplink-in", ends["gs_tx"], "--uplink-out", ends["sc_rx"]),
                *argv,
            ],
            env=system_env(tmp_path),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ),
        "channel: ",
        ready_timeout=READY_TIMEOUT,
    )


def start_channel(tmp_path: Path, ends: dict[str, str], *argv: str) -> Program:
    """The flowgraph, both paths, with these options; its ready line awaited."""
    channel = channel_program(tmp_path, ends, *argv)
    channel.wait_ready()
    return channel


@pytest.fixture
def ends() -> Iterator[dict[str, str]]:
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    yield {name: f"tcp://127.0.0.1:{free_port()}" for name in ("sc_tx", "gs_rx", "gs_tx", "sc_rx")}


def exchange(
    sends: dict[str, npt.NDArray[np.complex64]], wanted: dict[str, int], timeout_s: float = 120
) -> dict[str, npt.NDArray[np.complex64]]:
    """Push each array of samples (raw complex64, in messages of ``CHUNK``) from a PUSH
    socket bound at its endpoint, and pull from each ``wanted`` endpoint until that many
    samples are in; the first ``wanted`` samples of each.

    GNU Radio's ``push_sink`` gives up a call when no receiver is there yet, and is
    called again only when new samples reach it: so while samples are missing and none
    came for a second, each array's last message is sent once more (what comes out
    beyond ``wanted`` is not looked at)."""
    context = zmq.Context()
    try:
        pushes = []
        for endpoint, samples in sends.items():
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
            push.bind(endpoint)
            chunks = [samples[i : i + CHUNK].astype("<c8").tobytes()
                      for i in range(0, samples.size, CHUNK)]  # fmt: skip
            pushes.append((push, chunks))
        pulls: dict[Any, str] = {}
        poller = zmq.Poller()
        for endpoint in wanted:
            pull = context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.connect(endpoint)
            poller.register(pull, zmq.POLLIN)
            pulls[pull] = endpoint
        got: dict[str, list[npt.NDArray[np.complex64]]] = {e: [] for e in wanted}
        count = dict.fromkeys(wanted, 0)
        for push, chunks in pushes:
            for chunk in chunks:
                push.send(chunk)
        deadline = time.monotonic() + timeout_s
        while any(count[e] < n for e, n in wanted.items()):
            ready = dict(poller.poll(1000))
            if not ready:
                assert time.monotonic() < deadline, f"{timeout_s} s; samples in: {count}"
                for push, chunks in pushes:
                    push.send(chunks[-1])
            for socket_ in ready:
                endpoint = pulls[socket_]
                got[endpoint].append(np.frombuffer(socket_.recv(), "<c8"))
                count[endpoint] += got[endpoint][-1].size
        return {e: np.concatenate(got[e])[: wanted[e]] for e in wanted}
    finally:
        context.destroy(linger=0)


def test_the_flowgraph_applies_the_doppler_s_curve_in_each_direction(
    ends: dict[str, str], tmp_path: Path
) -> None:
    # 8 s of a pure carrier at 8000 samples/s (not the default rate: Hz and s scale with
    # it).  Down: +-400 Hz, 100 Hz/s, culmination at 4 s, on top of a constant 0.01
    # cycles/sample (80 Hz); up: +-250 Hz, 200 Hz/s, the default culmination 3 PEAK / RATE.
    fs, n = 8000.0, 64_000
    channel = start_channel(
        tmp_path, ends, "--samp-rate", "8000",
        "--doppler-hz", "400", "--doppler-rate-hz-s", "100", "--doppler-culmination", "4",
        "--freq-offset", "0.01",
        "--uplink-doppler-hz", "250", "--uplink-doppler-rate-hz-s", "200",
    )  # fmt: skip
    try:
        assert channel.ready_line == (
            f"channel: downlink {ends['sc_tx']} -> {ends['gs_rx']}, Eb/N0 None dB, offset 0.01"
            " cycles/sample, 0.0 ppm, Doppler +-400 Hz at 100 Hz/s, culmination at 4 s of"
            f" 8000 samples/s; uplink {ends['gs_tx']} -> {ends['sc_rx']}, Eb/N0 None dB,"
            " offset 0.0 cycles/sample, 0.0 ppm, Doppler +-250 Hz at 200 Hz/s, culmination"
            " at 3.75 s of 8000 samples/s\n"
        )
        # channel_model holds a few samples back: push more than is measured.
        carrier = np.ones(n + CHUNK, np.complex64)
        out = exchange({ends["sc_tx"]: carrier, ends["gs_tx"]: carrier}, dict.fromkeys(
            (ends["gs_rx"], ends["sc_rx"]), n))  # fmt: skip
    finally:
        channel.stop(signal.SIGTERM)
    # The frequency between samples k and k + 1 is the mean of f over that interval: f
    # at its middle, to within f'' / (24 fs^2) (below 1e-6 Hz here).  Measured to within
    # 3e-4 Hz (float32 samples); one sample late would be 0.013 Hz off.
    t = (np.arange(n - 1, dtype=np.float64) + 0.5) / fs
    for endpoint, expected in (
        (ends["gs_rx"], 0.01 * fs + doppler_hz(t, 400.0, 100.0, 4.0)),
        (ends["sc_rx"], doppler_hz(t, 250.0, 200.0, 3.75)),
    ):
        y = out[endpoint].astype(np.complex128)
        assert np.allclose(np.abs(y), 1.0, atol=1e-4)  # a rotation: the amplitude stays
        measured = np.angle(y[1:] * np.conj(y[:-1])) * fs / (2 * np.pi)
        error = np.abs(measured - expected)
        assert error.max() < 0.002, (endpoint, int(error.argmax()), float(error.max()))
    # The S-curve's landmarks, read off the measurement: +PEAK tanh(1) at the start, 0 at
    # culmination (the constant offset down), falling at RATE there, -PEAK tanh(1) at 8 s.
    down = np.angle(out[ends["gs_rx"]][1:] * np.conj(out[ends["gs_rx"]][:-1])) * fs / (2 * np.pi)
    culmination = int(4 * fs)
    assert abs(down[culmination] - 80.0) < 0.1
    slope = (down[culmination + 400] - down[culmination - 400]) / (800 / fs)
    assert abs(slope + 100.0) < 0.5
    assert abs(down[0] - (80.0 + 400.0 * np.tanh(1.0))) < 0.1
    assert abs(down[-1] - (80.0 - 400.0 * np.tanh(1.0))) < 0.1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--doppler-hz", "300"], "--doppler-hz and --doppler-rate-hz-s go together"),
        (["--doppler-hz", "-3", "--doppler-rate-hz-s", "5"],
         "--doppler-hz -3.0 is not a positive number of Hz"),
        (["--uplink-in", "tcp://127.0.0.1:1", "--uplink-out", "tcp://127.0.0.1:2",
          "--uplink-doppler-culmination", "5"],
         "--uplink-doppler-culmination needs --uplink-doppler-hz and --uplink-doppler-rate-hz-s"),
        (["--uplink-doppler-hz", "3", "--uplink-doppler-rate-hz-s", "5"],
         "--uplink-doppler-... needs the uplink (--uplink-in, --uplink-out)"),
        (["--doppler-hz", "19000", "--doppler-rate-hz-s", "5", "--freq-offset", "0.01"],
         "--freq-offset 0.01 cycles/sample and --doppler-hz reach 19384 Hz, not below half the"
         " sample rate (19200 Hz)"),
        (["--samp-rate", "0"], "--samp-rate 0.0 is not a positive number of samples/s"),
    ],
)  # fmt: skip
def test_the_flowgraph_refuses_a_bad_doppler(
    ends: dict[str, str], tmp_path: Path, argv: list[str], message: str
) -> None:
    done = subprocess.run(
        [str(SYSTEM_PYTHON), str(EXAMPLE), *argv],
        env=system_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == f"gnuradio_channel.py: error: {message}"


@pytest.mark.slow
async def test_cadus_and_cltus_through_a_doppler_pass(ends: dict[str, str], tmp_path: Path) -> None:
    # Down: 40 CADUs (85 s of signal at 38400 samples/s) through a pass of +-288 Hz, 3 %
    # of the 9600 baud symbol rate, falling at 30 Hz/s at culmination (28.8 s, the
    # default): from +287 Hz through 0 to -288 Hz, at Eb/N0 6 dB, with a 20 ppm clock.
    # Up: 20 CLTUs at 9 dB through a ramp of their own, +-250 Hz at 400 Hz/s.
    channel = start_channel(
        tmp_path, ends, "--ebn0", "6", "--timing-ppm", "20", "--seed", "5",
        "--doppler-hz", "288", "--doppler-rate-hz-s", "30",
        "--uplink-ebn0", "9", "--uplink-doppler-hz", "250", "--uplink-doppler-rate-hz-s", "400",
        "--uplink-doppler-culmination", "1",
    )  # fmt: skip
    cltus = make_cltus(20, seed=5)
    cadus = make_cadus(40, seed=3)
    uplink = Collector(len(cltus))
    got = Collector(len(cadus))
    spacecraft = await open_link(
        f"zmq://?tx={ends['sc_tx']}&rx={ends['sc_rx']}", role="spacecraft", on_receive=uplink
    )
    ground = await open_link(
        f"zmq://?tx={ends['gs_tx']}&rx={ends['gs_rx']}", role="ground", on_receive=got
    )
    assert isinstance(spacecraft, ZmqLink) and isinstance(ground, ZmqLink)
    try:
        for cltu in cltus:
            ground.send(cltu)
        # Every CADU bit-exact, the first one included.
        await carry(spacecraft, ground, got, cadus, timeout=300)
        # The ground's demodulator followed the pass down to its end, -PEAK.
        tracked = ground._downlink_receiver.receiver.stats.demodulator.frequency_offset_hz
        assert tracked is not None and abs(tracked + 288.0) < 5.0, tracked
        await asyncio.wait_for(uplink.done.wait(), 120)
        sent = decode_all(cltus)
        assert decode_all(uplink.units) == sent and len(sent) == len(cltus)
        assert channel.stop(signal.SIGTERM) == 0, channel.text()
        assert "Traceback" not in channel.text()
    finally:
        ground.close()
        spacecraft.close()
        if channel.process.poll() is None:
            channel.process.kill()
            channel.process.wait()


# -- linkstack demo --via-gnuradio ------------------------------------------------------------


def demo(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = linkstack_main(["demo", *argv], Streams(io.BytesIO(), stdout, stderr))
    return code, stdout.getvalue().decode(), stderr.getvalue()


def test_demo_via_gnuradio_without_gnuradio_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # The venv's Python has no GNU Radio: as if Debian's packages were missing.
    monkeypatch.setenv("LINKSTACK_GNURADIO_PYTHON", sys.executable)
    code, out, err = demo("hi", "--via-gnuradio", "--device", "cpu")
    assert (code, out) == (1, "")
    assert err == (
        f"linkstack: --via-gnuradio: {sys.executable} cannot import gnuradio (install"
        " Debian's gnuradio and gr-zeromq, or set LINKSTACK_GNURADIO_PYTHON)\n"
    )
    monkeypatch.setenv("LINKSTACK_GNURADIO_PYTHON", "/nonexistent/python3")
    code, out, err = demo("hi", "--via-gnuradio")
    assert code == 1 and len(err.splitlines()) == 1
    assert "cannot run /nonexistent/python3" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--ber", "0.001"], "--ber is a simulated channel's option"),
        (["--outage", "1:2"], "--outage is a simulated channel's option"),
        (["--capture", "x.pcapng"], "--capture is not supported with --via-gnuradio"),
        (["--rekey-at", "1"], "--rekey-at is not supported with --via-gnuradio"),
    ],
)
def test_demo_via_gnuradio_refuses_simulated_channel_options(
    option: list[str], message: str
) -> None:
    code, out, err = demo("hi", "--via-gnuradio", *option)
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


def test_demo_via_gnuradio_refuses_an_unusable_key_file_first(tmp_path: Path) -> None:
    # Before GNU Radio is looked for and before the model loads: one line, exit 1.
    keys = tmp_path / "keys.json"
    generate_key_file(keys)
    keys.chmod(0o640)
    code, out, err = demo("hi", "--via-gnuradio", "--keys", str(keys))
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1 and str(keys) in err and "mode 0640" in err


@pytest.mark.slow
@pytest.mark.parametrize("with_keys", [False, True], ids=["clear", "sdls"])
def test_demo_via_gnuradio_delivers_the_ids_the_model_made(
    xdg_cache_home: Path, qwen3_tokenizer: object, tmp_path: Path, with_keys: bool
) -> None:
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    keys = tmp_path / "keys.json"
    if with_keys:  # SDLS both ways, as the plain demo with --keys
        generate_key_file(keys)
    code, out, err = demo(
        "hi", "--via-gnuradio", "--json", "--device", "cpu", "--max-new-tokens", "12",
        "--seed", "3", "--timeout", str(ASK_TIMEOUT),
        *(["--keys", str(keys)] if with_keys else []),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert record["received_ids"] == record["generated_ids"] and len(record["generated_ids"]) == 12
    assert record["gnuradio"]["exit_status"] == 0  # stopped cleanly on SIGTERM
    assert record["spacecraft_counters"]["cltus_received"] >= 1
    security = record["security"]
    assert security["enabled"] is with_keys
    assert (security["mac_failures"], security["replays"], security["unknown_spi"]) == (0, 0, 0)
    assert security["ground"]["enabled"] is security["spacecraft"]["enabled"] is with_keys
    if with_keys:
        # Each side's counters saved next to the key file, private; no key in the output.
        for role in ("ground", "spacecraft"):
            assert (tmp_path / f"keys.json.{role}.counters").stat().st_mode & 0o777 == 0o600
        for entry in json.loads(keys.read_text())["keys"]:
            assert entry["key"].lower() not in (out + err).lower()
