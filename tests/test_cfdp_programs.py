"""The file commands as real processes: ``onboard serve --store`` and ``groundstation
upload / models / activate / rollback / download`` over TCP on 127.0.0.1.

A second seeded Qwen-3 checkpoint (the embedded model's weights moved by seeded noise)
is uploaded, verified and installed, activated, and served: ``groundstation ask``
then gets exactly the ids ``onboard generate --model`` gives for that checkpoint.
Roll-back restores the first model.  Refusals (a duplicate, an unauthenticated
manifest, a path that escapes) come back with their reason and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linkstack.sdls.keystore import generate_key_file
from tests.test_onboard_serve import Server, free_port, onboard, python_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120.0
ASK = ["--max-new-tokens", "10", "--seed", "7", "--temperature", "0"]


@dataclass
class Rig:
    tmp: Path
    env: dict[str, str]
    url: str
    store: Path
    keys: Path
    servers: list[Server] = field(default_factory=list)

    def serve(self, *extra: str) -> Server:
        argv = ["serve", "--link", self.url, "--store", str(self.store), *extra]
        argv += ["--manifest-keys", str(self.keys), "--device", "cpu"]
        server = Server(onboard(*argv, env=self.env, stderr=subprocess.PIPE))
        self.servers.append(server)
        server.wait_ready()
        assert server.process.poll() is None, server.text()
        return server

    def ground(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "groundstation.cli", *argv],
            cwd=ROOT,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=180,
            check=False,
        )

    def link(self) -> list[str]:
        return ["--link", self.url, "--state-dir", str(self.tmp / "state")]


def _checkpoint(directory: Path, seed: int | None) -> Path:
    """The embedded model saved as a bfloat16 checkpoint (half the octets of float32);
    ``seed``: its weights moved by seeded noise, a second model whose ids differ."""
    import torch

    from onboard.model import load_model, save_checkpoint

    handle = load_model("embedded", device="cpu", dtype="bfloat16")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in handle.model.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(noise * 0.2)
    return save_checkpoint(handle, directory)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, xdg_cache_root: Path) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("cfdp-programs")
    env = python_env(xdg_cache_root)
    keys = tmp / "keys.json"
    generate_key_file(keys)
    rig = Rig(tmp, env, f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}", tmp / "store", keys)
    (rig.store / "outbox" / "logs").mkdir(parents=True)
    (rig.store / "outbox" / "logs" / "serve.log").write_bytes(b"boot ok\n" * 1000)
    yield rig
    for server in rig.servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def _reference(rig: Rig, checkpoint: Path) -> subprocess.Popen[str]:
    """``onboard generate --model CHECKPOINT``: the ids the link run must give."""
    argv = ["generate", "hi", "--model", str(checkpoint), *ASK, "--device", "cpu", "--json"]
    return subprocess.Popen(
        [sys.executable, "-m", "onboard.cli", *argv],
        cwd=ROOT,
        env=rig.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _ids(process: subprocess.Popen[str]) -> list[int]:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    ids: list[int] = json.loads(out)["generated_ids"]
    return ids


def _wait_for(server: Server, text: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not any(text in line for line in server.lines):
        assert time.monotonic() < deadline, "".join(server.lines)
        time.sleep(0.1)


def test_upload_activate_ask_and_roll_back(rig: Rig) -> None:
    first = _checkpoint(rig.tmp / "qwen-a", None)
    second = _checkpoint(rig.tmp / "qwen-b", 1)
    references = {name: _reference(rig, path) for name, path in (("a", first), ("b", second))}
    server = rig.serve()
    keys = ["--manifest-keys", str(rig.keys)]

    for name, path in (("qwen-a", first), ("qwen-b", second)):
        result = rig.ground("upload", str(path), "--as", name, *rig.link(), *keys, "--json")
        assert result.returncode == 0, result.stderr
        record = _json(result)
        assert record["ok"] and record["model"]["name"] == name
        assert record["octets"] == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    # Installed bit for bit: every file's SHA-256 equals the original's.
    for rel in ("model.safetensors", "config.json", "tokenizer.json"):
        installed = rig.store / "models" / "qwen-b" / rel
        assert hashlib.sha256(installed.read_bytes()).digest() == (
            hashlib.sha256((second / rel).read_bytes()).digest()
        )
    listing = _json(rig.ground("models", *rig.link(), "--json"))
    assert [(m["name"], m["kind"], m["active"]) for m in listing["models"]] == [
        ("qwen-a", "checkpoint", False),
        ("qwen-b", "checkpoint", False),
    ]

    # Refusals: each with its reason, nothing on board changed.
    before = sorted(p.relative_to(rig.store) for p in (rig.store / "models").rglob("*"))
    duplicate = rig.ground("upload", str(second), "--as", "qwen-b", *rig.link(), *keys)
    assert duplicate.returncode == 1
    assert "refused: duplicate: model 'qwen-b' is installed already" in duplicate.stderr
    unsigned = rig.ground("upload", str(second), "--as", "qwen-c", *rig.link())
    assert unsigned.returncode == 1
    assert "qwen-c not installed: unauthenticated: qwen-c: manifest carries no MAC" in (
        unsigned.stderr
    )
    escape = rig.ground("download", "../state.json", str(rig.tmp / "x"), *rig.link())
    assert escape.returncode == 1
    assert "path-escape: path '../state.json' escapes the store" in escape.stderr
    after = sorted(p.relative_to(rig.store) for p in (rig.store / "models").rglob("*"))
    assert after == before
    assert list((rig.store / "staging").iterdir()) == []

    # A file the spacecraft offers.
    local = rig.tmp / "serve.log"
    got = rig.ground("download", "logs/serve.log", str(local), *rig.link())
    assert got.returncode == 0, got.stderr
    assert local.read_bytes() == b"boot ok\n" * 1000

    # Activation: new requests run on the activated model, with no restart.
    expected = {name: _ids(process) for name, process in references.items()}
    assert expected["a"] != expected["b"]

    def ask(checkpoint: Path) -> list[int]:
        answer = rig.ground("ask", "hi", "--model", str(checkpoint), *ASK, "--link", rig.url)
        assert answer.returncode == 0, answer.stderr
        result = rig.ground(
            "ask", "hi", "--model", str(checkpoint), *ASK, "--link", rig.url, "--json"
        )
        ids: list[int] = json.loads(result.stdout)["received_ids"]
        return ids

    assert rig.ground("activate", "qwen-a", *rig.link()).returncode == 0
    _wait_for(server, "serving model qwen-a")
    assert ask(first) == expected["a"]
    assert rig.ground("activate", "qwen-b", *rig.link()).returncode == 0
    _wait_for(server, "serving model qwen-b")
    assert ask(second) == expected["b"]
    listing = _json(rig.ground("models", *rig.link(), "--json"))
    assert [(m["name"], m["active"], m["previous"]) for m in listing["models"]] == [
        ("qwen-a", False, True),
        ("qwen-b", True, False),
    ]
    # Roll-back restores the first model.
    rolled = _json(rig.ground("rollback", *rig.link(), "--json"))
    assert (rolled["active"], rolled["previous"]) == ("qwen-a", "qwen-b")
    deadline = time.monotonic() + READY_TIMEOUT
    while sum("serving model qwen-a" in line for line in server.lines) < 2:
        assert time.monotonic() < deadline, "".join(server.lines)
        time.sleep(0.1)
    assert ask(first) == expected["a"]
    # A restart serves the store's active model.
    assert server.stop() == 0
    server = rig.serve()
    assert any("the store's active model is qwen-a" in line for line in server.lines)
    # A round trip first: the reply proves the serving loop (and its SIGINT handler) runs.
    listing = _json(rig.ground("models", *rig.link(), "--json"))
    assert [(m["name"], m["active"]) for m in listing["models"]] == [
        ("qwen-a", True),
        ("qwen-b", False),
    ]
    assert server.stop() == 0


def test_kill_of_onboard_serve_mid_upload_then_resume(rig: Rig) -> None:
    model = rig.tmp / "big"
    model.mkdir()
    payload = os.urandom(6_000_000)
    (model / "weights.bin").write_bytes(payload)
    staged = rig.store / "staging" / "big" / "weights.bin"
    keys = ["--manifest-keys", str(rig.keys)]
    server = rig.serve()
    upload = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "groundstation.cli",
            "upload",
            str(model),
            "--as",
            "big",
            *rig.link(),
            *keys,
            "--json",
        ],
        cwd=ROOT,
        env=rig.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (staged.exists() and staged.stat().st_size > 2_000_000):
        assert time.monotonic() < deadline, "the upload did not get going"
        assert upload.poll() is None, upload.communicate()
        time.sleep(0.05)
    server.process.kill()  # SIGKILL halfway: no chance to clean up
    server.process.wait()
    upload.kill()
    upload.wait()
    kept = staged.stat().st_size
    assert 2_000_000 < kept < len(payload)
    assert staged.read_bytes() == payload[:kept]

    server = rig.serve()
    result = rig.ground("upload", str(model), "--as", "big", *rig.link(), *keys, "--json")
    assert result.returncode == 0, result.stderr
    record = _json(result)
    assert record["ok"] and record["resumed_octets"] == kept
    # What went up: the rest of the file, the manifest and two small requests, no more.
    assert len(payload) - kept <= record["file_data_octets_sent"] < len(payload) - kept + 2_000
    installed = rig.store / "models" / "big" / "weights.bin"
    assert hashlib.sha256(installed.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert server.stop() == 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Wireshark)")
def test_capture_holds_cfdp_pdus_that_tshark_dissects(rig: Rig) -> None:
    model = rig.tmp / "small"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(9_000))
    capture = rig.tmp / "onboard.pcapng"
    server = rig.serve("--capture", str(capture))
    keys = ["--manifest-keys", str(rig.keys)]
    result = rig.ground("upload", str(model), "--as", "small", *rig.link(), *keys, "--json")
    assert result.returncode == 0, result.stderr
    assert server.stop() == 0
    shown = subprocess.run(
        ["tshark", "-r", str(capture), "-d", "udp.port==52001,ccsds", "-Y", "cfdp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for summary in (
        "Metadata PDU",
        "File Data PDU",
        "EOF (No error)",
        "ACK PDU (EOF)",
        "Finished PDU (No error)",
        "ACK PDU (Finished)",
    ):
        assert summary in shown, shown
