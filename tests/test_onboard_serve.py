"""``onboard serve`` as a real process over UDP and TCP on 127.0.0.1.

A GroundEndpoint on a real link (``open_link(..., role="ground")``) sends a
PromptRequest with the prompt ids ``onboard generate --json`` reports and the same
parameters, and must receive exactly the ids that command generated.  Then a
malformed packet: an ErrorReport comes back and the next request is still served.
SIGINT stops the process with status 0.

Both servers and the reference run start together at module setup, so that their
model loads overlap.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linkstack.aio import TcpLink, open_link
from linkstack.endpoints import LinkConfig
from linkstack.inference.protocol import (
    Apid,
    ErrorReason,
    ErrorReport,
    GenerationParams,
    PromptRequest,
)
from linkstack.inference.tokenizer import Tokenizer
from onboard.cli import main
from tests.test_onboard_service import Station, of_type

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_ARGS = ["--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.95"]
REFERENCE_ARGS += ["--seed", "42", "--device", "cpu"]
READY_TIMEOUT = 120.0


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def python_env(xdg_cache_root: Path) -> dict[str, str]:
    """The environment of a program under test: this checkout first on the path, the
    session's model cache, no network for the hub."""
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_root), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def onboard(*argv: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "onboard.cli", *argv],
        cwd=ROOT,
        env=env,
        text=True,
        **kwargs,
    )


@dataclass
class Program:
    """A running process; a thread collects the lines of its stderr (of its stdout where
    stderr is not piped) and sets ``ready`` on the first line starting with ``marker``,
    or when the process ends.  The process-level tests of the programs share it."""

    process: subprocess.Popen[str]
    marker: str
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    ready_line: str = ""
    ready_timeout: float = READY_TIMEOUT

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
        self.ready.set()  # the process ended: stop waiting

    def wait_ready(self) -> str:
        """The ready line, once it came (fails if the process ended first)."""
        assert self.ready.wait(self.ready_timeout), f"no {self.marker!r} line: {self.text()}"
        assert self.ready_line, f"ended before {self.marker!r}: {self.text()}"
        return self.ready_line

    def wait_url(self) -> str:
        """The first word after the marker: where a server says it serves."""
        return self.wait_ready().removeprefix(self.marker).split()[0]

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self, signum: int = signal.SIGINT) -> int:
        """Send ``signum`` unless the process has ended; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)


@dataclass
class Server(Program):
    """A running ``onboard serve``."""

    marker: str = "onboard: serving on "


@dataclass
class Processes:
    servers: dict[str, Server]
    reference: subprocess.Popen[str]


@pytest.fixture(scope="module")
def processes(qwen3_tokenizer: Tokenizer, xdg_cache_root: Path) -> Iterator[Processes]:
    env = python_env(xdg_cache_root)
    servers = {}
    for scheme, kind in (("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)):
        url = f"{scheme}://127.0.0.1:{free_port(kind)}"
        argv = ["serve", "--link", url, "--device", "cpu", "--max-queue", "4"]
        servers[scheme] = Server(onboard(*argv, env=env, stderr=subprocess.PIPE))
    reference = onboard(
        "generate", "hi", "--json", *REFERENCE_ARGS, env=env, stdout=subprocess.PIPE
    )
    yield Processes(servers, reference)
    for proc in [reference, *(s.process for s in servers.values())]:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def reference_run(processes: Processes) -> dict[str, Any]:
    out, _ = processes.reference.communicate(timeout=READY_TIMEOUT)
    assert processes.reference.returncode == 0
    record: dict[str, Any] = json.loads(out)
    return record


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
async def test_serve_over_a_real_link_matches_onboard_generate(
    scheme: str, processes: Processes, reference_run: dict[str, Any]
) -> None:
    server = processes.servers[scheme]
    url = server.wait_url()
    assert url.startswith(f"{scheme}://127.0.0.1:")
    station = Station(LinkConfig())
    station.link = await open_link(url, role="ground", on_receive=station.receive)
    if isinstance(station.link, TcpLink):
        # TcpLink.send discards what it gets while it has no connection (octets_unsent), so
        # a lost request would show only as a timeout.  open_link makes the ground's TCP
        # writable before it returns: this wait returns at once and guards against a regression.
        await asyncio.wait_for(station.link.connected.wait(), 10)
    try:
        p = reference_run["params"]
        wire = GenerationParams.from_floats(
            max_new_tokens=p["max_new_tokens"],
            temperature=p["temperature"],
            top_p=p["top_p"],
            seed=p["seed"],
            stop_ids=p["stop_ids"],
        )
        prompt = tuple(reference_run["prompt_ids"])
        station.send(PromptRequest(request_id=1, params=wire, prompt_ids=prompt))
        ids, _ = await station.stream(1)
        assert ids == reference_run["generated_ids"]

        station.send_raw(Apid.REQUEST, b"\x21\x00\x01")  # a truncated PromptRequest
        await station.wait_for(lambda: bool(of_type(station.messages, ErrorReport)))
        (report,) = of_type(station.messages, ErrorReport)
        assert (report.request_id, report.reason) == (None, ErrorReason.UNKNOWN_MESSAGE)
        assert report.detail.startswith("truncated")

        station.send(PromptRequest(request_id=2, params=wire, prompt_ids=prompt))
        ids, _ = await station.stream(2)
        assert ids == reference_run["generated_ids"]
    finally:
        station.link.close()
    assert server.stop() == 0
    log = server.text()
    assert "Traceback" not in log
    assert "request 1: MAX_TOKENS, 12 ids" in log or "request 1: STOP_ID" in log
    assert "uplink packet dropped: truncated" in log
    assert "onboard: stopped; 2 requests accepted" in log


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--link", "ftp://x"], "scheme must be tcp:// or udp://, got 'ftp'"),
        (["serve", "--link", "udp://127.0.0.1"], "expected udp://HOST:PORT"),
        (["serve", "--link", "tcp://h:1", "--downlink-rate", "0"], "0 is not a positive number"),
        (
            ["serve", "--link", "tcp://h:1", "--max-queue", "0"],
            "--max-queue/--queue: 0 must be 1 or more",
        ),
        (["serve"], "the following arguments are required: --link"),
    ],
)
def test_serve_bad_options_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_serve_bad_link_as_a_process_prints_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onboard.cli", "serve", "--link", "ftp://x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == ("onboard: link 'ftp://x': scheme must be tcp:// or udp://, got 'ftp'\n")


def test_serve_on_a_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["serve", "--link", f"tcp://127.0.0.1:{port}", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"cannot open tcp://127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_generate_refuses_params_the_link_cannot_carry(capsys: pytest.CaptureFixture[str]) -> None:
    # onboard generate converts its floats as a PromptRequest carries them (thousandths).
    assert main(["generate", "hi", "--temperature", "0.7001"]) == 2
    assert "--temperature 0.7001 is not a multiple of 0.001" in capsys.readouterr().err
    assert main(["generate", "hi", "--max-new-tokens", "16385"]) == 2
    assert "--max-new-tokens 16385 must be in 1..16384" in capsys.readouterr().err
