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

Skipped, with the reason, where ``/usr/bin/python3`` cannot import gnuradio.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linkstack.cli.main import Streams
from linkstack.cli.main import main as linkstack_main
from tests.test_zmq_link import EXAMPLE, SYSTEM_PYTHON, free_port, gnuradio_missing, system_env

pytest.importorskip("zmq")

ROOT = Path(__file__).resolve().parent.parent
GENERATION = ["--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.95", "--seed", "42"]
READY_TIMEOUT = 180.0
ASK_TIMEOUT = 240


@dataclass
class Program:
    """A running process; a thread collects its lines and sets ``ready`` on the first
    line starting with ``marker`` (or when the process ends)."""

    process: subprocess.Popen[str]
    marker: str
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    ready_line: str = ""

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stderr or self.process.stdout
        assert stream is not None
        for line in stream:
            self.lines.append(line)
            if not self.ready_line and line.startswith(self.marker):
                self.ready_line = line
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> str:
        assert self.ready.wait(READY_TIMEOUT), f"no {self.marker!r} line: {self.text()}"
        assert self.ready_line, f"ended before {self.marker!r}: {self.text()}"
        return self.ready_line

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self, signum: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)


def python_env(xdg_cache_root: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_root), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def linkstack_program(module: str, *argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


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
    channel = Program(
        subprocess.Popen(
            [
                str(SYSTEM_PYTHON),
                str(EXAMPLE),
                *("--downlink-in", ends["sc_tx"], "--downlink-out", ends["gs_rx"]),
                *("--uplink-in", ends["gs_tx"], "--uplink-out", ends["sc_rx"]),
                *("--ebn0", "6", "--freq-offset", "0.0005", "--timing-ppm", "20"),
                *("--uplink-ebn0", "9", "--uplink-freq-offset", "-0.0003"),
                *("--uplink-timing-ppm", "-30", "--seed", "11"),
            ],
            env=system_env(tmp_path),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ),
        "channel: ",
    )
    spacecraft_url = f"zmq://?tx={ends['sc_tx']}&rx={ends['sc_rx']}"
    serve = Program(
        linkstack_program(
            "onboard.cli", "serve", "--link", spacecraft_url, "--device", "cpu", env=env
        ),
        "onboard: serving on ",
    )
    reference = linkstack_program(
        "onboard.cli", "generate", "hi", "--json", *GENERATION, "--device", "cpu", env=env
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
    ],
)
def test_demo_via_gnuradio_refuses_simulated_channel_options(
    option: list[str], message: str
) -> None:
    code, out, err = demo("hi", "--via-gnuradio", *option)
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_via_gnuradio_delivers_the_ids_the_model_made(
    xdg_cache_home: Path, qwen3_tokenizer: object
) -> None:
    reason = gnuradio_missing()
    if reason:
        pytest.skip(reason)
    code, out, err = demo(
        "hi", "--via-gnuradio", "--json", "--device", "cpu", "--max-new-tokens", "12",
        "--seed", "3", "--timeout", str(ASK_TIMEOUT),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert record["received_ids"] == record["generated_ids"] and len(record["generated_ids"]) == 12
    assert record["gnuradio"]["exit_status"] == 0  # stopped cleanly on SIGTERM
    assert record["spacecraft_counters"]["cltus_received"] >= 1
