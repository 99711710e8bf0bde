"""File delivery on board: the spacecraft's CFDP entity, the model store, and the file
requests of the ground (docs/cfdp.md §4).

Uploads land in the store's staging area (a destination ``NAME/PATH``), admitted or
refused at their Metadata PDU by :meth:`ModelStore.admit
<onboard.store.ModelStore.admit>`.  The ground's requests are small JSON files it puts
to ``.ctl/ID.json``; each is answered with a JSON file put back to the ground as
``.ctl/ID.reply.json``::

    {"op": "models"}                               -> {"ok": true, "models": [...]}
    {"op": "install", "name": N}                   -> {"ok": true, "model": {...}}
    {"op": "activate", "name": N}                  -> {"ok": true, "active": N, "previous": P}
    {"op": "rollback"}                             -> {"ok": true, "active": P, ...}
    {"op": "download", "remote": R, "dest": D}     -> the file outbox/R put to D, then the reply
    any refusal                                    -> {"ok": false, "reason": K, "detail": T}

Sans-asyncio: the service feeds it PDUs (``receive_pdu``), takes its PDUs for the
downlink (``pdus_to_send``) and runs its timers (``get_timer`` / ``handle_timer``).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from spacepackets.cfdp import ConditionCode

from linkstack.aio.filestore import RootedFilestore
from linkstack.cfdp.entity import (
    CfdpConfig,
    CfdpEntity,
    IncomingFile,
    Refusal,
    TransferFinished,
    default_cfdp_config,
)
from linkstack.cfdp.manifest import MANIFEST_NAME, ManifestError, check_name, check_relative_path
from linkstack.cfdp.wire import CONTROL_PREFIX, GROUND_ENTITY_ID, SPACECRAFT_ENTITY_ID
from onboard.store import ModelStore, StoreError

logger = logging.getLogger(__name__)

#: A request or reply file is small; anything larger is refused.
MAX_CONTROL_OCTETS: Final = 64 * 1024


class _StoreFilestore(RootedFilestore):
    """Where CFDP reads and writes on board: ``.ctl/X`` under the store's root, every
    other relative name (``NAME/PATH``, admitted) under ``staging/``; absolute paths
    (files this end sends) as given."""

    def __init__(self, store: ModelStore) -> None:
        super().__init__(store.root)
        self.staging = store.staging

    def resolve(self, path: Path | str) -> Path:
        path = Path(path)
        if path.is_absolute():
            return path
        if path.parts and path.parts[0] == CONTROL_PREFIX.rstrip("/"):
            return self.root / path
        return self.staging / path


class OnboardFiles:
    """The spacecraft's file service over CFDP."""

    def __init__(
        self,
        store: ModelStore,
        *,
        config: CfdpConfig | None = None,
        on_activate: Callable[[str, Path], object] | None = None,
    ) -> None:
        """``on_activate(name, directory)`` runs after a model becomes the active one (the
        service switches new requests to it)."""
        self.store = store
        self.control = store.root / "ctl"
        self.control.mkdir(exist_ok=True)
        self.filestore = _StoreFilestore(store)
        self.entity = CfdpEntity(
            config
            or default_cfdp_config(local_id=SPACECRAFT_ENTITY_ID, remote_id=GROUND_ENTITY_ID),
            self.filestore,
            admit=self._admit,
        )
        self.on_activate = on_activate
        #: Puts waiting for the sender (one transaction at a time): (source, dest).
        self._puts: deque[tuple[str, str]] = deque()
        #: Requests answered, by id: a repeated request is answered again, not redone.
        self.replies: dict[str, dict[str, Any]] = {}
        self.refusals: list[TransferFinished] = []
        self._current: str | None = None

    # -- the service's side ------------------------------------------------------------

    def receive_pdu(self, pdu: bytes, now: float) -> None:
        self.entity.receive_pdu(pdu, now)
        self._events(now)

    def pdus_to_send(self, now: float, limit: int | None = None) -> list[bytes]:
        self._start_put(now)
        return self.entity.pdus_to_send(now, limit)

    def get_timer(self) -> float | None:
        return self.entity.get_timer()

    def handle_timer(self, now: float) -> None:
        self.entity.handle_timer(now)
        self._events(now)

    # -- admission ---------------------------------------------------------------------

    def _admit(self, incoming: IncomingFile) -> Refusal | None:
        dest = incoming.dest_name
        if dest.startswith(CONTROL_PREFIX):
            try:
                check_relative_path(dest)
            except ManifestError as exc:
                return Refusal(ConditionCode.FILESTORE_REJECTION, f"{exc.reason}: {exc.detail}")
            if incoming.size > MAX_CONTROL_OCTETS:
                return Refusal(
                    ConditionCode.FILE_SIZE_ERROR,
                    f"request of {incoming.size} octets, at most {MAX_CONTROL_OCTETS}",
                )
            return None
        refusal = self.store.admit(dest, incoming.size)
        if refusal is None:
            # CFDP writes NAME/PATH: under staging/.
            return None
        condition = (
            ConditionCode.FILE_SIZE_ERROR
            if refusal.reason == "no-space"
            else ConditionCode.FILESTORE_REJECTION
        )
        return Refusal(condition, f"{refusal.reason}: {refusal.detail}")

    # -- transactions ------------------------------------------------------------------

    def _events(self, now: float) -> None:
        while (event := self.entity.next_event()) is not None:
            if not isinstance(event, TransferFinished):
                continue
            if event.sending:
                # A reply went down (or was given up): its file is no longer needed.
                if self._current is not None and Path(self._current).parent == self.control:
                    Path(self._current).unlink(missing_ok=True)
                self._current = None
                continue
            if not event.ok:
                self.refusals.append(event)
                continue
            if event.dest_name.startswith(CONTROL_PREFIX):
                self._request(event.dest_name, now)
        self._start_put(now)

    def _request(self, dest_name: str, now: float) -> None:
        path = self.filestore.resolve(dest_name)
        request_id = Path(dest_name).stem
        try:
            request = json.loads(path.read_text())
            reply = self.replies.get(request_id) or self._execute(request)
        except (ValueError, UnicodeDecodeError) as exc:
            reply = {"ok": False, "reason": "bad-request", "detail": str(exc)}
        finally:
            path.unlink(missing_ok=True)
        self.replies[request_id] = reply
        out = self.control / f"{request_id}.reply.json"
        out.write_text(json.dumps(reply))
        self._puts.append((str(out), f"{CONTROL_PREFIX}{request_id}.reply.json"))
        logger.info(
            "request %s %s: %s",
            request_id,
            request.get("op") if isinstance(request, dict) else "?",
            reply.get("ok"),
        )

    def _execute(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "reason": "bad-request", "detail": "not a JSON object"}
        op = request.get("op")
        try:
            if op == "models":
                return {"ok": True, "models": [m.to_json() for m in self.store.list()]}
            if op == "status":
                return {"ok": True, "files": self._staged(str(request.get("name")))}
            if op == "install":
                info = self.store.install(str(request.get("name")))
                return {"ok": True, "model": info.to_json()}
            if op == "activate":
                name = str(request.get("name"))
                self.store.activate(name)
                self._activated(name)
                return {"ok": True, "active": name, "previous": self.store.previous}
            if op == "rollback":
                name = self.store.rollback()
                self._activated(name)
                return {"ok": True, "active": name, "previous": self.store.previous}
            if op == "download":
                source = self.store.outbox_file(str(request.get("remote")))
                dest = str(request.get("dest"))
                check_relative_path(dest)
                self._puts.append((str(source), dest))
                return {"ok": True, "size": source.stat().st_size, "dest": dest}
        except StoreError as exc:
            return {"ok": False, "reason": exc.reason, "detail": exc.detail}
        except ManifestError as exc:
            return {"ok": False, "reason": exc.reason, "detail": exc.detail}
        return {"ok": False, "reason": "bad-request", "detail": f"unknown op {op!r}"}

    def _staged(self, name: str) -> dict[str, dict[str, Any]]:
        """What staging holds of upload ``name``: each file's size and SHA-256, so that
        the ground resumes an upload cut short where it stopped (docs/cfdp.md §5)."""
        from onboard.store import sha256_file

        try:
            check_name(name)
        except ManifestError as exc:
            raise StoreError(exc.reason, exc.detail) from None
        root = self.store.staging / name
        if not root.is_dir():
            return {}
        out = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel == MANIFEST_NAME or rel.endswith(".resume"):
                continue
            out[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        return out

    def _activated(self, name: str) -> None:
        if self.on_activate is not None:
            self.on_activate(name, self.store.models / name)

    def _start_put(self, now: float) -> None:
        if self._puts and not self.entity.sending:
            source, dest = self._puts.popleft()
            self._current = source
            self.entity.put(source, dest, now)


__all__ = ["CONTROL_PREFIX", "OnboardFiles", "default_cfdp_config"]
