"""The model manifest: what an upload must hold before the spacecraft installs it.

A model (a checkpoint directory, a LoRA adapter) goes up as one CFDP transaction per
file into the store's staging area, then its manifest (docs/cfdp.md §3)::

    {"format": "linkstack-model-manifest", "version": 1, "name": "qwen-b",
     "kind": "checkpoint",
     "files": [{"path": "config.json", "size": 712, "sha256": "<64 hex>"}, ...],
     "mac": "<64 hex>"}                                 # absent when SDLS authenticates

The store installs the model only when every file's size and SHA-256 match and the
manifest is authentic: with SDLS on, the link authenticated every frame that carried it
(CCSDS 355.0-B-2); without SDLS, ``mac`` is HMAC-SHA256 (RFC 2104, FIPS 198-1) of the
manifest's canonical body under the manifest key, which both ends derive from the
master key of their key file (:func:`manifest_key`).

Pure codec, no I/O: the store (``onboard/store.py``) and the upload command
(``groundstation/transfer.py``) read and write the files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Final

from linkstack.errors import Layer, RemoteProtocolError

MANIFEST_FORMAT: Final = "linkstack-model-manifest"
MANIFEST_VERSION: Final = 1
#: The manifest's file name in a staged upload.
MANIFEST_NAME: Final = "manifest.json"
#: Model kinds the store knows.
KINDS: Final = ("checkpoint", "lora")
#: What a model name may be: one path component, no dot first (no "..", no hidden file).
_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: HMAC-SHA256 domain separation label of the manifest key (derived from a master key).
_KEY_LABEL: Final = b"linkstack model manifest MAC v1"
_CLAUSE: Final = "docs/cfdp.md 3"


class ManifestError(RemoteProtocolError):
    """A manifest (or a name in it) that the store must refuse; ``reason`` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(Layer.APPLICATION, reason, _CLAUSE, detail)


def check_name(name: str) -> str:
    """``name`` if it is a valid model name, else ManifestError ``bad-name``."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ManifestError("bad-name", f"model name {name!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]*")
    return name


def check_relative_path(path: str) -> str:
    """``path`` if it names a file strictly inside a directory, else ManifestError
    ``path-escape`` (absolute, ``..``, empty or ``.`` components, backslashes, NUL)."""
    parts = path.split("/") if isinstance(path, str) else []
    if (
        not parts
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ManifestError("path-escape", f"path {path!r} escapes the store")
    return path


def manifest_key(master_key: bytes) -> bytes:
    """The manifest MAC key: HMAC-SHA256(master key, label), so that the master key is
    never itself used as an HMAC key over data from the link."""
    return hmac.new(master_key, _KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of a model: its path inside the model directory, size and SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """A model's manifest; ``mac`` is None when the link authenticates it."""

    name: str
    kind: str
    files: tuple[ManifestEntry, ...]
    mac: str | None = None

    def body(self) -> bytes:
        """The canonical body the MAC and the digest cover (sorted keys, no spaces)."""
        document: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": self.name,
            "kind": self.kind,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical body: the model's identity in ``models`` listings."""
        return hashlib.sha256(self.body()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def signed(self, key: bytes) -> Manifest:
        return replace(self, mac=hmac.new(key, self.body(), hashlib.sha256).hexdigest())

    def mac_valid(self, key: bytes) -> bool:
        if self.mac is None:
            return False
        expected = hmac.new(key, self.body(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.mac)

    def to_bytes(self) -> bytes:
        document = json.loads(self.body())
        if self.mac is not None:
            document["mac"] = self.mac
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; ManifestError names what is wrong."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError("bad-manifest", f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ManifestError("bad-manifest", "not a JSON object")
        if document.get("format") != MANIFEST_FORMAT or document.get("version") != (
            MANIFEST_VERSION
        ):
            raise ManifestError(
                "bad-manifest",
                f"format {document.get('format')!r} version {document.get('version')!r}, "
                f"expected {MANIFEST_FORMAT!r} {MANIFEST_VERSION}",
            )
        kind = document.get("kind")
        if kind not in KINDS:
            raise ManifestError("bad-manifest", f"kind {kind!r} not one of {KINDS}")
        raw_files = document.get("files")
        if not isinstance(raw_files, list) or not raw_files:
            raise ManifestError("bad-manifest", "no files")
        files = []
        seen: set[str] = set()
        for entry in raw_files:
            if not isinstance(entry, dict):
                raise ManifestError("bad-manifest", f"file entry {entry!r} is not an object")
            path, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
            check_relative_path(path)  # type: ignore[arg-type]
            if path == MANIFEST_NAME or path in seen:
                raise ManifestError("bad-manifest", f"path {path!r} listed twice or reserved")
            seen.add(path)  # type: ignore[arg-type]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ManifestError("bad-manifest", f"{path}: size {size!r}")
            if not isinstance(digest, str) or re.fullmatch(r"[0-9a-f]{64}", digest) is None:
                raise ManifestError("bad-manifest", f"{path}: sha256 {digest!r}")
            files.append(ManifestEntry(path, size, digest))  # type: ignore[arg-type]
        mac = document.get("mac")
        if mac is not None and (not isinstance(mac, str) or len(mac) != 64):
            raise ManifestError("bad-manifest", f"mac {mac!r} is not 64 hex digits")
        return cls(check_name(document.get("name")), kind, tuple(files), mac)  # type: ignore[arg-type]


__all__ = [
    "KINDS",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "check_name",
    "check_relative_path",
    "manifest_key",
]
