"""What a new user meets when things go wrong, with real processes on 127.0.0.1:
a port already in use, a peer that is down, keys that do not match, Ctrl-C in the
middle of an answer, ``-v`` beside a streamed answer, a capture that would overwrite a
file.  Each must be told clearly and quickly, with the common exit codes
(linkstack.console.base)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linkstack.sdls.keystore import generate_key_file
from tests.test_onboard_serve import ROOT, Server, free_port, onboard

#: Generous bounds for a run that must end long before them (no timing is asserted
#: beyond "it did not wait for its timeout").
ASK_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, xdg_cache_root: Path) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    return {
        **os.environ,
        "XDG_CACHE_HOME": str(xdg_cache_root),
        "XDG_STATE_HOME": str(state),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    one, other = directory / "k1.json", directory / "k2.json"
    generate_key_file(one)
    generate_key_file(other)
    return one, other


@pytest.fixture(scope="module")
def servers(env: dict[str, str], keys: tuple[Path, Path]) -> Iterator[dict[str, Server]]:
    """A plain server, a slow one (for Ctrl-C) and one with SDLS keys, started together."""
    options = {
        "plain": [],
        "slow": ["--downlink-rate", "40000"],
        "keyed": ["--keys", str(keys[0])],
    }
    started = {
        name: Server(
            onboard(
                "serve",
                "--link",
                "udp://127.0.0.1:0",
                "--device",
                "cpu",
                *extra,
                env=env,
                stderr=subprocess.PIPE,
            )
        )
        for name, extra in options.items()
    }
    yield started
    for server in started.values():
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def program(name: str, *argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
    module = {
        "groundstation": "groundstation.cli",
        "onboard": "onboard.cli",
        "linkstack": "linkstack.cli.main",
    }[name]
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ask(url: str, *argv: str, env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = program(
        "groundstation", "ask", "hello", "--link", url, "--timeout", str(ASK_TIMEOUT_S),
        *argv, env=env,
    )  # fmt: skip
    out, err = process.communicate(timeout=ASK_TIMEOUT_S + 30)
    return process.returncode, out, err, time.monotonic() - started


def test_port_already_in_use_fails_before_loading_the_model(env: dict[str, str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        url = f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        process = program("onboard", "serve", "--link", url, env=env)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip() == f"onboard: cannot open {url}: Address already in use"
    assert "loading model" not in err and "Traceback" not in err


def test_peer_down_is_reported_at_once(env: dict[str, str]) -> None:
    port = free_port(socket.SOCK_DGRAM)
    url = f"udp://127.0.0.1:{port}"
    code, out, err, elapsed = ask(url, env=env)
    assert code == 1
    assert out == ""
    assert f"groundstation: nothing answers at {url} (Connection refused)" in err
    assert f"`onboard serve --link {url}` running?" in err
    assert elapsed < ASK_TIMEOUT_S / 2  # told, not timed out
    tcp = f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    code, _, err, _ = ask(tcp, env=env)
    assert code == 1
    assert err.strip() == (
        f"groundstation: cannot reach {tcp}: Connection refused"
        f" (is `onboard serve --link {tcp}` running?)"
    )


def test_ground_without_keys_against_a_protected_spacecraft(
    servers: dict[str, Server], env: dict[str, str]
) -> None:
    code, _, err, elapsed = ask(servers["keyed"].wait_url(), "--json", env=env)
    assert code == 1
    assert "the spacecraft probably protects its downlink with SDLS" in err
    assert "give this ground the same --keys" in err
    assert elapsed < ASK_TIMEOUT_S / 2


def test_ground_with_other_keys_reports_mac_failures(
    servers: dict[str, Server], env: dict[str, str], keys: tuple[Path, Path]
) -> None:
    url = servers["keyed"].wait_url()
    code, out, err, _ = ask(url, "--keys", str(keys[1]), "--json", env=env)
    assert code == 1
    assert f"failed their MAC: it protects them with other keys than {keys[1]}" in err
    record = json.loads(out)
    assert record["diagnosis"] in err
    assert record["security"]["mac_failures"] >= 8


def test_ground_with_keys_against_a_plain_spacecraft(
    servers: dict[str, Server], env: dict[str, str], keys: tuple[Path, Path]
) -> None:
    url = servers["plain"].wait_url()
    code, _, err, _ = ask(url, "--keys", str(keys[0]), env=env)
    assert code == 1
    assert "refused by SDLS (sdls/unknown-spi): is it running without --keys" in err


def test_verbose_logs_never_enter_the_answer(
    servers: dict[str, Server], env: dict[str, str]
) -> None:
    url = servers["plain"].wait_url()
    code, out, err, _ = ask(url, "-v", "--max-new-tokens", "8", env=env)
    assert code == 0, err
    quiet = ask(url, "--max-new-tokens", "8", env=env)
    assert quiet[0] == 0
    assert out == quiet[1]  # stdout is the answer and nothing else
    assert "groundstation: linkstack.coding.tm: < sync acquired at" in err


def test_json_record_has_the_promised_fields_per_end(
    servers: dict[str, Server], env: dict[str, str]
) -> None:
    url = servers["plain"].wait_url()
    first = json.loads(ask(url, "--json", "--max-new-tokens", "4", env=env)[1])
    second = json.loads(ask(url, "--json", "--max-new-tokens", "4", env=env)[1])
    for record in (first, second):
        assert record["complete"] is True
        assert record["uplink_bits"] == record["counters"]["uplink_bits"] > 0
        assert record["recovery"]["resend_requests"] == 0
        assert set(record["security"]) >= {"enabled", "mac_failures"}
        assert "cadus_sent" not in record["counters"]  # spacecraft-only fields
        assert record["interrupted"] is False and record["diagnosis"] is None
    # Request ids go on across ground processes (the state in XDG_STATE_HOME).
    assert second["request_id"] == (first["request_id"] + 1) % 65536


def _read_until_text(process: subprocess.Popen[str], seen: threading.Event) -> list[str]:
    chunks: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read(1):
            chunks.append(chunk)
            if chunk.strip():
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    return chunks


def test_ctrl_c_cancels_on_board_and_frees_the_spacecraft(
    servers: dict[str, Server], env: dict[str, str]
) -> None:
    url = servers["slow"].wait_url()
    process = program(
        "groundstation", "ask", "hello", "--link", url, "--max-new-tokens", "3000",
        "--timeout", "300", env=env,
    )  # fmt: skip
    seen = threading.Event()
    chunks = _read_until_text(process, seen)
    assert seen.wait(ASK_TIMEOUT_S)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "".join(chunks).strip()  # the partial answer was shown
    assert "groundstation: interrupted (SIGINT) after" in err
    assert "Cancel sent for request" in err and "the spacecraft confirmed it" in err
    assert "Traceback" not in err
    # The slot is free: the next user is answered at once, not after 3000 ids.
    code, _, err, elapsed = ask(url, "--max-new-tokens", "4", env=env)
    assert code == 0, err
    assert elapsed < ASK_TIMEOUT_S / 2


def test_demo_refuses_to_overwrite_a_capture_before_loading(
    tmp_path: Path, env: dict[str, str]
) -> None:
    existing = tmp_path / "session.pcapng"
    existing.write_bytes(b"precious")
    process = program("linkstack", "demo", "hi", "--capture", str(existing), env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert str(existing) in err and "--force" in err
    assert "loading model" not in err
    assert existing.read_bytes() == b"precious"


def test_demo_ctrl_c_prints_what_arrived_and_exits_130(env: dict[str, str]) -> None:
    process = program(
        "linkstack", "demo", "hi", "--max-new-tokens", "4000", "--profile", "uhf", env=env
    )
    seen = threading.Event()
    chunks = _read_until_text(process, seen)
    assert seen.wait(120)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "".join(chunks).strip()
    assert "linkstack demo: interrupted (SIGTERM) after" in err
    assert "Traceback" not in err
