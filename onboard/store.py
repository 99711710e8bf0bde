"""The onboard model store: staging, verified installation, activation, roll-back.

Layout under the store's root::

    staging/NAME/...        files of an upload in progress (CFDP writes them here)
    staging/NAME/manifest.json
    models/NAME/...         installed models, each with its manifest.json
    outbox/...              files the spacecraft offers for download (its logs, ...)
    state.json              {"active": NAME | null, "previous": NAME | null}

Rules (docs/cfdp.md §3):

- An upload is admitted (:meth:`ModelStore.admit`, called at the CFDP Metadata PDU,
  before a byte is written) only if its destination is ``NAME/PATH`` with a valid model
  name and a path that stays inside (no ``..``, no absolute path), the model is not
  installed already, and the file fits the free space less a reserve.
- A model is installed (:meth:`ModelStore.install`) only when its manifest parses, is
  authentic (the link authenticated it, SDLS on; or its HMAC verifies under the manifest
  key) and every file's size and SHA-256 match.  Files move from staging into a hidden
  temporary directory and then, in one ``rename(2)``, to ``models/NAME``: a crash leaves
  either no model or the whole model.  A refused upload's staging directory is removed;
  the installed models and the active one are never touched.
- :meth:`ModelStore.activate` makes an installed model the active one and keeps the
  one before as ``previous``; :meth:`ModelStore.rollback` swaps back.  ``state.json`` is
  written to a temporary file, fsync'ed and renamed over the old one.

What uses the active model (the service: new requests on the new model, requests in
flight finishing on the old one) reads :meth:`ModelStore.active_path`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from linkstack.cfdp.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    check_name,
    check_relative_path,
)
from linkstack.errors import LinkError, LocalProtocolError

logger = logging.getLogger(__name__)

STATE_FILE: Final = "state.json"
#: Free space kept back from uploads (logs, swap of the model runtime): 64 MiB.
DEFAULT_RESERVE_BYTES: Final = 64 * 1024 * 1024
_CHUNK: Final = 1 << 20


class StoreError(LinkError):
    """The store refused an operation; ``reason`` is a stable key, ``detail`` the words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One installed model as ``models`` lists it."""

    name: str
    kind: str
    #: SHA-256 of the manifest's canonical body (linkstack.cfdp.manifest).
    digest: str
    size: int
    active: bool
    previous: bool

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "digest": self.digest,
            "size": self.size,
            "active": self.active,
            "previous": self.previous,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    """The model store under ``root`` (created if missing)."""

    def __init__(
        self,
        root: Path | str,
        *,
        manifest_key: bytes | None = None,
        link_authenticated: bool = False,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        free_space: Callable[[], int] | None = None,
    ) -> None:
        """``manifest_key`` verifies manifest MACs; ``link_authenticated`` is True when
        SDLS authenticates every uplink frame (then a manifest needs no MAC);
        ``free_space`` (octets free, default from the file system) is for tests."""
        if not link_authenticated and manifest_key is None:
            logger.warning("model store: no manifest key and no SDLS: nothing can be installed")
        if reserve_bytes < 0:
            raise LocalProtocolError(f"reserve_bytes {reserve_bytes} is negative")
        self.root = Path(root)
        self.staging = self.root / "staging"
        self.models = self.root / "models"
        self.outbox = self.root / "outbox"
        for directory in (self.staging, self.models, self.outbox):
            directory.mkdir(parents=True, exist_ok=True)
        self._key = manifest_key
        self._link_authenticated = link_authenticated
        self.reserve_bytes = reserve_bytes
        self._free_space = free_space or (lambda: shutil.disk_usage(self.root).free)

    # -- state -------------------------------------------------------------------------

    def _state(self) -> dict[str, str | None]:
        path = self.root / STATE_FILE
        if not path.exists():
            return {"active": None, "previous": None}
        document = json.loads(path.read_text())
        return {"active": document.get("active"), "previous": document.get("previous")}

    def _write_state(self, state: dict[str, str | None]) -> None:
        path = self.root / STATE_FILE
        temporary = path.with_name(f".{STATE_FILE}.tmp")
        with temporary.open("w") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    @property
    def active(self) -> str | None:
        return self._state()["active"]

    @property
    def previous(self) -> str | None:
        return self._state()["previous"]

    def active_path(self) -> Path | None:
        """The directory of the active model, or None."""
        name = self.active
        return None if name is None else self.models / name

    # -- uploads -----------------------------------------------------------------------

    def split_destination(self, dest_name: str) -> tuple[str, str]:
        """(model name, path inside it) of a CFDP destination ``NAME/PATH``; StoreError
        ``path-escape`` or ``bad-name`` when it would leave the staging area."""
        try:
            check_relative_path(dest_name)
            name, _, inner = dest_name.partition("/")
            check_name(name)
            if not inner:
                raise ManifestError("path-escape", f"{dest_name!r} names no file inside a model")
        except ManifestError as exc:
            raise StoreError(exc.reason, exc.detail) from None
        return name, inner

    def staging_file(self, dest_name: str) -> Path:
        name, inner = self.split_destination(dest_name)
        return self.staging / name / inner

    def admit(self, dest_name: str, size: int) -> StoreError | None:
        """Why an upload of ``size`` octets to ``dest_name`` must be refused, or None."""
        try:
            name, _ = self.split_destination(dest_name)
        except StoreError as exc:
            return exc
        if (self.models / name).exists():
            return StoreError("duplicate", f"model {name!r} is installed already")
        free = self._free_space() - self.reserve_bytes
        if size > free:
            return StoreError(
                "no-space",
                f"{dest_name}: {size} octets, {max(free, 0)} free (reserve {self.reserve_bytes})",
            )
        return None

    def discard(self, name: str) -> None:
        """Remove what was staged for ``name`` (a refused or abandoned upload)."""
        check_name(name)
        shutil.rmtree(self.staging / name, ignore_errors=True)

    # -- installation ------------------------------------------------------------------

    def install(self, name: str) -> ModelInfo:
        """Verify the staged upload ``name`` and install it; StoreError says why not.

        A refused upload's staging directory is removed; nothing else changes.
        """
        try:
            check_name(name)
        except ManifestError as exc:
            raise StoreError(exc.reason, exc.detail) from None
        staged = self.staging / name
        try:
            manifest = self._verify(name, staged)
        except StoreError as exc:
            logger.warning("refused model %s: %s", name, exc)
            self.discard(name)
            raise
        temporary = self.models / f".{name}.installing"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        for entry in manifest.files:
            target = temporary / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / entry.path, target)
        (temporary / MANIFEST_NAME).write_bytes(manifest.to_bytes())
        os.replace(temporary, self.models / name)
        shutil.rmtree(staged, ignore_errors=True)
        logger.info("installed model %s (%s)", name, manifest.digest[:16])
        return self._info(name, manifest, self._state())

    def _verify(self, name: str, staged: Path) -> Manifest:
        if (self.models / name).exists():
            raise StoreError("duplicate", f"model {name!r} is installed already")
        manifest_path = staged / MANIFEST_NAME
        if not manifest_path.is_file():
            raise StoreError("no-manifest", f"{name}: no {MANIFEST_NAME} was uploaded")
        try:
            manifest = Manifest.from_bytes(manifest_path.read_bytes())
        except ManifestError as exc:
            raise StoreError(exc.reason, exc.detail) from None
        if manifest.name != name:
            raise StoreError("bad-manifest", f"manifest names {manifest.name!r}, upload {name!r}")
        if manifest.mac is not None and self._key is not None:
            if not manifest.mac_valid(self._key):
                raise StoreError("unauthenticated", f"{name}: manifest MAC does not verify")
        elif not self._link_authenticated:
            raise StoreError(
                "unauthenticated",
                f"{name}: manifest carries no MAC"
                if manifest.mac is None
                else f"{name}: no manifest key to verify its MAC",
            )
        for entry in manifest.files:
            path = staged / entry.path
            if not path.is_file():
                raise StoreError("missing-file", f"{name}/{entry.path} was not uploaded")
            size = path.stat().st_size
            if size != entry.size:
                raise StoreError(
                    "size-mismatch", f"{name}/{entry.path}: {size} octets, manifest {entry.size}"
                )
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise StoreError(
                    "digest-mismatch",
                    f"{name}/{entry.path}: SHA-256 {digest[:16]}...,"
                    f" manifest {entry.sha256[:16]}...",
                )
        return manifest

    # -- activation --------------------------------------------------------------------

    def activate(self, name: str) -> None:
        """Make ``name`` the active model; the active one before becomes ``previous``."""
        if not (self.models / name / MANIFEST_NAME).is_file():
            raise StoreError("not-installed", f"model {name!r} is not installed")
        state = self._state()
        if state["active"] == name:
            return
        self._write_state({"active": name, "previous": state["active"]})
        logger.info("activated model %s (previous %s)", name, state["active"])

    def rollback(self) -> str:
        """Make the previous model active again; returns its name."""
        state = self._state()
        previous = state["previous"]
        if previous is None or not (self.models / previous).is_dir():
            raise StoreError("no-previous", "no previous model to roll back to")
        self._write_state({"active": previous, "previous": state["active"]})
        return previous

    def list(self) -> list[ModelInfo]:
        state = self._state()
        out = []
        for directory in sorted(self.models.iterdir()):
            if directory.name.startswith(".") or not directory.is_dir():
                continue
            manifest = Manifest.from_bytes((directory / MANIFEST_NAME).read_bytes())
            out.append(self._info(directory.name, manifest, state))
        return out

    def _info(self, name: str, manifest: Manifest, state: dict[str, str | None]) -> ModelInfo:
        return ModelInfo(
            name=name,
            kind=manifest.kind,
            digest=manifest.digest,
            size=manifest.size,
            active=state["active"] == name,
            previous=state["previous"] == name,
        )

    # -- downloads ---------------------------------------------------------------------

    def outbox_file(self, remote: str) -> Path:
        """The offered file ``remote`` (a path inside ``outbox/``); StoreError if it
        escapes or does not exist."""
        try:
            check_relative_path(remote)
        except ManifestError as exc:
            raise StoreError(exc.reason, exc.detail) from None
        path = self.outbox / remote
        if not path.is_file():
            raise StoreError("no-such-file", f"{remote!r} is not offered")
        return path


__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "ModelInfo",
    "ModelStore",
    "StoreError",
    "sha256_file",
]
