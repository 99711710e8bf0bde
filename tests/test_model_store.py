"""The onboard model store (onboard/store.py) and the model manifest codec
(linkstack/cfdp/manifest.py): staging, verification, activation, roll-back, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from linkstack.cfdp.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    manifest_key,
)
from onboard.store import ModelStore, StoreError

KEY = manifest_key(bytes(range(32)))
FILES = {"config.json": b'{"a": 1}', "weights/model.safetensors": bytes(range(256)) * 40}


def _manifest(name: str, files: dict[str, bytes], *, key: bytes | None = KEY) -> Manifest:
    manifest = Manifest(
        name,
        "checkpoint",
        tuple(
            ManifestEntry(path, len(data), hashlib.sha256(data).hexdigest())
            for path, data in sorted(files.items())
        ),
    )
    return manifest if key is None else manifest.signed(key)


def _stage(
    store: ModelStore, name: str, files: dict[str, bytes], manifest: Manifest | None = None
) -> None:
    for path, data in files.items():
        target = store.staging_file(f"{name}/{path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    manifest = manifest or _manifest(name, files)
    store.staging_file(f"{name}/{MANIFEST_NAME}").write_bytes(manifest.to_bytes())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "staging" not in p.parts
    }


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", manifest_key=KEY, reserve_bytes=0)


def test_install_activate_and_roll_back(store: ModelStore) -> None:
    _stage(store, "qwen-a", FILES)
    info = store.install("qwen-a")
    assert (info.name, info.kind, info.size, info.active) == ("qwen-a", "checkpoint", 10_248, False)
    assert info.digest == _manifest("qwen-a", FILES).digest
    assert not (store.staging / "qwen-a").exists()
    assert (store.models / "qwen-a" / "weights/model.safetensors").read_bytes() == (
        FILES["weights/model.safetensors"]
    )
    store.activate("qwen-a")
    second = dict(FILES, **{"config.json": b'{"a": 2}'})
    _stage(store, "qwen-b", second)
    store.install("qwen-b")
    store.activate("qwen-b")
    assert [(m.name, m.active, m.previous) for m in store.list()] == [
        ("qwen-a", False, True),
        ("qwen-b", True, False),
    ]
    assert store.active_path() == store.models / "qwen-b"
    assert store.rollback() == "qwen-a"
    assert (store.active, store.previous) == ("qwen-a", "qwen-b")


def test_link_authenticated_manifest_needs_no_mac(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, link_authenticated=True, reserve_bytes=0)
    _stage(store, "m", FILES, _manifest("m", FILES, key=None))
    assert store.install("m").name == "m"


@pytest.mark.parametrize(
    ("tamper", "reason", "detail"),
    [
        (
            "corrupt",
            "digest-mismatch",
            "m/weights/model.safetensors: SHA-256",
        ),
        ("no-mac", "unauthenticated", "m: manifest carries no MAC"),
        ("wrong-mac", "unauthenticated", "m: manifest MAC does not verify"),
        ("short", "size-mismatch", "m/config.json: 3 octets, manifest 8"),
        ("missing", "missing-file", "m/config.json was not uploaded"),
        ("no-manifest", "no-manifest", "m: no manifest.json was uploaded"),
        ("renamed", "bad-manifest", "manifest names 'other', upload 'm'"),
    ],
)
def test_refused_upload_changes_nothing_on_board(
    store: ModelStore, tamper: str, reason: str, detail: str
) -> None:
    _stage(store, "good", FILES)
    store.install("good")
    store.activate("good")
    before = _snapshot(store.root)
    files = dict(FILES)
    manifest = _manifest("m", FILES)
    if tamper == "corrupt":
        files["weights/model.safetensors"] = b"\xff" + files["weights/model.safetensors"][1:]
    elif tamper == "no-mac":
        manifest = _manifest("m", FILES, key=None)
    elif tamper == "wrong-mac":
        manifest = _manifest("m", FILES, key=manifest_key(b"another master key"))
    elif tamper == "short":
        files["config.json"] = b"{}\n"
    elif tamper == "missing":
        del files["config.json"]
    elif tamper == "renamed":
        manifest = _manifest("other", FILES)
    _stage(store, "m", files, manifest)
    if tamper == "no-manifest":
        (store.staging / "m" / MANIFEST_NAME).unlink()
    with pytest.raises(StoreError) as caught:
        store.install("m")
    assert caught.value.reason == reason
    assert caught.value.detail.startswith(detail)
    assert _snapshot(store.root) == before
    assert not (store.staging / "m").exists()
    assert (store.active, [m.name for m in store.list()]) == ("good", ["good"])


@pytest.mark.parametrize(
    ("dest", "reason"),
    [
        ("../escape", "path-escape"),
        ("m/../../escape", "path-escape"),
        ("/etc/passwd", "path-escape"),
        ("m/a\\b", "path-escape"),
        ("m", "path-escape"),
        ("m//x", "path-escape"),
        (".hidden/x", "bad-name"),
    ],
)
def test_admit_refuses_paths_that_escape(store: ModelStore, dest: str, reason: str) -> None:
    refusal = store.admit(dest, 10)
    assert refusal is not None and refusal.reason == reason
    assert list(store.staging.iterdir()) == []


def test_admit_checks_free_space_and_duplicates(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, manifest_key=KEY, reserve_bytes=1000, free_space=lambda: 5000)
    assert store.admit("m/config.json", 4000) is None
    refusal = store.admit("m/config.json", 4001)
    assert refusal is not None
    assert (refusal.reason, refusal.detail) == (
        "no-space",
        "m/config.json: 4001 octets, 4000 free (reserve 1000)",
    )
    _stage(store, "m", FILES)
    store.install("m")
    duplicate = store.admit("m/config.json", 1)
    assert duplicate is not None
    assert (duplicate.reason, duplicate.detail) == ("duplicate", "model 'm' is installed already")


def test_activate_and_rollback_misuse(store: ModelStore) -> None:
    with pytest.raises(StoreError, match="not-installed: model 'nope' is not installed"):
        store.activate("nope")
    with pytest.raises(StoreError, match="no-previous"):
        store.rollback()


def test_outbox_files(store: ModelStore) -> None:
    (store.outbox / "logs").mkdir()
    (store.outbox / "logs" / "serve.log").write_text("hello")
    assert store.outbox_file("logs/serve.log").read_text() == "hello"
    with pytest.raises(StoreError, match="path-escape"):
        store.outbox_file("../state.json")
    with pytest.raises(StoreError, match="no-such-file"):
        store.outbox_file("logs/none.log")


# -- the manifest codec --------------------------------------------------------------------


def test_manifest_round_trips_and_signs() -> None:
    manifest = _manifest("m", FILES)
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    assert manifest.mac_valid(KEY)
    assert not manifest.mac_valid(manifest_key(b"x"))
    assert manifest.digest == hashlib.sha256(manifest.body()).hexdigest()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"\xff", "bad-manifest"),
        (b"[]", "bad-manifest"),
        (b'{"format": "x", "version": 1}', "bad-manifest"),
        (
            b'{"format": "linkstack-model-manifest", "version": 1, "name": "m", "kind": "lora",'
            b' "files": [{"path": "../x", "size": 1, "sha256": "' + b"0" * 64 + b'"}]}',
            "path-escape",
        ),
        (
            b'{"format": "linkstack-model-manifest", "version": 1, "name": "../m", "kind": "lora",'
            b' "files": [{"path": "x", "size": 1, "sha256": "' + b"0" * 64 + b'"}]}',
            "bad-name",
        ),
        (
            b'{"format": "linkstack-model-manifest", "version": 1, "name": "m", "kind": "lora",'
            b' "files": [{"path": "x", "size": -1, "sha256": "' + b"0" * 64 + b'"}]}',
            "bad-manifest",
        ),
    ],
)
def test_bad_manifests_are_refused(text: bytes, reason: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_bytes(text)
    assert caught.value.reason == reason
