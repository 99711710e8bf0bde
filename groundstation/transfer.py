"""File delivery from the ground: ``groundstation upload``, ``models``, ``activate``,
``rollback`` and ``download`` over CFDP (docs/cfdp.md).

:class:`FileStation` drives the ground's CFDP entity over a live link (asyncio): PDUs go
up on APID CFDP_APID through COP-1, at most a window of frames ahead (flow control),
and come down on the CFDP TM VC.  The commands build on it:

- ``upload PATH`` puts each file of PATH (a checkpoint directory, or one file) to
  ``NAME/RELPATH`` in the store's staging area, then the manifest (SHA-256 of every
  file; HMAC under the manifest key when a key file is given), then asks the
  spacecraft to install it; a progress line shows octets acknowledged, rate, ETA and
  retransmissions on a terminal, ``--json`` prints one JSON object;
- ``models``, ``activate NAME``, ``rollback``: one request file up, one reply down;
- ``download REMOTE LOCAL``: the spacecraft puts ``outbox/REMOTE`` to the ground.

Requests and replies are small JSON files (``.ctl/ID.json``, ``.ctl/ID.reply.json``):
CFDP carries every byte both ways, nothing else is added to the link.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from linkstack.aio.filestore import RootedFilestore
from linkstack.cfdp.entity import (
    CfdpConfig,
    CfdpEntity,
    IncomingFile,
    Refusal,
    TransferFinished,
    default_cfdp_config,
)
from linkstack.cfdp.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    check_name,
    check_relative_path,
    manifest_key,
)
from linkstack.cfdp.wire import CFDP_APID, CONTROL_PREFIX, GROUND_ENTITY_ID, SPACECRAFT_ENTITY_ID
from linkstack.console.base import (
    EXIT_FAILED,
    EXIT_OK,
    LiveLine,
    RunError,
    UsageError,
    add_verbose_option,
    os_cause,
    positive_seconds,
    usage_errors,
)
from linkstack.endpoints import CfdpPduReceived, GroundEndpoint, LinkConfig
from linkstack.errors import LinkError, LocalProtocolError

PROG: Final = "groundstation"
DEFAULT_TIMEOUT_S: Final = 600.0
#: The file of the ground's next CFDP transaction sequence number, in the state dir.
SEQUENCE_FILE: Final = "cfdp-sequence"


def ground_cfdp_config() -> CfdpConfig:
    """The ground entity's CFDP parameters (the spacecraft's mirror them)."""
    return default_cfdp_config(local_id=GROUND_ENTITY_ID, remote_id=SPACECRAFT_ENTITY_ID)


class TransferError(LinkError):
    """A transfer or a request the spacecraft refused or that failed; the text says why."""


@dataclass(slots=True)
class Progress:
    """What a running upload has done, for the progress line and ``--json``."""

    total: int
    done: int = 0
    acknowledged: int = 0
    retransmitted_pdus: int = 0
    cop1_retransmissions: int = 0
    naks: int = 0
    #: Octets the spacecraft held already (an upload cut short, resumed).
    resumed: int = 0
    file_octets_sent: int = 0
    started: float = 0.0


class FileStation:
    """The ground's CFDP entity over one live link (construct inside a running loop)."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: LinkConfig | None = None,
        security: Any = None,
        first_sequence_number: int = 0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.workdir = workdir
        self.endpoint = GroundEndpoint(config or LinkConfig(), security)
        self.filestore = RootedFilestore(workdir)
        self.entity = CfdpEntity(
            ground_cfdp_config(),
            self.filestore,
            admit=self._admit,
            first_sequence_number=first_sequence_number,
        )
        vcid, _ = self.endpoint.config.route(CFDP_APID)
        self._fop = self.endpoint.fops[vcid]
        self._window = self.endpoint.config.fop_window
        self._link: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Future[TransferFinished] | None = None
        self._expected: dict[str, asyncio.Future[TransferFinished]] = {}
        #: Local destinations the spacecraft may write (downloads asked for).
        self._allowed: set[str] = set()

    def attach(self, link: Any) -> None:
        self._link = link
        self._pump(self._loop.time())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_receive(self, data: bytes, now: float) -> None:
        self.endpoint.receive_bytes(data, now)
        self._drain(now)
        self._pump(now)

    # -- what the commands use -------------------------------------------------------

    async def put(self, source: Path, dest: str, *, resume_from: int = 0) -> TransferFinished:
        """Send ``source`` to ``dest`` at the spacecraft (Class 2), wait for the end;
        ``resume_from``: the spacecraft holds that many octets of it already."""
        if self._sending is not None:
            raise LocalProtocolError(f"put({source}): a transfer is still running")
        self._sending = self._loop.create_future()
        self.entity.put(str(source.resolve()), dest, self._loop.time(), resume_from=resume_from)
        self._pump(self._loop.time())
        try:
            return await self._sending
        finally:
            self._sending = None

    def expect(self, dest: str) -> asyncio.Future[TransferFinished]:
        """Allow the spacecraft to put ``dest`` here and give the future of its end."""
        self._allowed.add(dest)
        future = self._loop.create_future()
        self._expected[dest] = future
        return future

    async def request(self, op: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request file up, its reply file down (see onboard/files.py)."""
        request_id = secrets.token_hex(8)
        path = self.workdir / "ctl" / f"{request_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(op))
        reply_name = f"{CONTROL_PREFIX}{request_id}.reply.json"
        reply = self.expect(reply_name)
        extra = op.get("dest")
        sent = await asyncio.wait_for(self.put(path, f"{CONTROL_PREFIX}{request_id}.json"), timeout)
        if not sent.ok:
            raise TransferError(f"request {op.get('op')} refused: {sent.reason}")
        del extra
        finished = await asyncio.wait_for(reply, timeout)
        if not finished.ok:
            raise TransferError(f"the reply to {op.get('op')} was lost: {finished.reason}")
        result: dict[str, Any] = json.loads(self.filestore.resolve(reply_name).read_text())
        return result

    # -- the link ----------------------------------------------------------------------

    def _admit(self, incoming: IncomingFile) -> Refusal | None:
        from spacepackets.cfdp import ConditionCode

        if incoming.dest_name in self._allowed:
            return None
        return Refusal(
            ConditionCode.FILESTORE_REJECTION, f"{incoming.dest_name!r} was not asked for"
        )

    def _drain(self, now: float) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, CfdpPduReceived):
                self.entity.receive_pdu(event.pdu, now)
        while (done := self.entity.next_event()) is not None:
            if not isinstance(done, TransferFinished):
                continue
            if done.sending:
                if self._sending is not None and not self._sending.done():
                    self._sending.set_result(done)
            else:
                future = self._expected.pop(done.dest_name, None)
                if future is not None and not future.done():
                    future.set_result(done)

    def _pump(self, now: float) -> None:
        while self._fop.backlog_length == 0 and self._fop.sent_queue_length < self._window:
            pdus = self.entity.pdus_to_send(now, 1)
            if not pdus:
                break
            self.endpoint.send_cfdp(pdus[0], now)
        if self._link is not None:
            for cltu in self.endpoint.data_to_send():
                self._link.send(cltu)
        self._schedule()

    def _schedule(self) -> None:
        times = [t for t in (self.endpoint.get_timer(), self.entity.get_timer()) if t is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if times:
            self._timer = self._loop.call_at(min(times), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        self.endpoint.handle_timer(now)
        self.entity.handle_timer(now)
        self._drain(now)
        self._pump(now)


# -- manifests -------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(path: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of a checkpoint directory, or of one file."""
    if path.is_file():
        return [(path.name, path)]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    out = [(p.relative_to(path).as_posix(), p) for p in files]
    return [(rel, p) for rel, p in out if rel != MANIFEST_NAME]


def build_manifest(name: str, path: Path, key: bytes | None) -> Manifest:
    files = model_files(path)
    if not files:
        raise UsageError(f"{path}: no files to upload")
    kind = "lora" if (path / "adapter_config.json").is_file() else "checkpoint"
    manifest = Manifest(
        name,
        kind,
        tuple(ManifestEntry(rel, p.stat().st_size, sha256_file(p)) for rel, p in files),
    )
    return manifest if key is None else manifest.signed(key)


def key_from_file(path: str) -> bytes:
    """The manifest key derived from the key file's master key (key id 0)."""
    from linkstack.sdls.keystore import load_key_file

    material = load_key_file(path).keys.material(0)
    if material is None:
        raise UsageError(f"{path}: no master key 0 to derive the manifest key from")
    return manifest_key(material.secret_octets())


# -- the commands ----------------------------------------------------------------------------


def add_file_commands(commands: Any) -> None:
    """``upload``, ``models``, ``activate``, ``rollback``, ``download``."""
    upload = commands.add_parser(
        "upload",
        help="upload a model (checkpoint directory, LoRA adapter or file) to the store",
        description="Put every file of PATH to the onboard store over CFDP (Class 2), then"
        " its manifest, and have the spacecraft verify and install it (docs/cfdp.md).",
    )
    upload.add_argument(
        "path", metavar="PATH", help="a checkpoint or adapter directory, or one file"
    )
    upload.add_argument("--as", dest="name", metavar="NAME", help="model name (default: PATH's)")
    _common(upload, "protect the link with SDLS (the link then authenticates the manifest)")
    upload.add_argument(
        "--manifest-keys",
        metavar="PATH",
        help="key file whose master key signs the manifest (default: --keys)",
    )
    upload.set_defaults(handler=_upload)

    models = commands.add_parser("models", help="list the onboard model store")
    _common(models)
    models.set_defaults(handler=_models)

    activate = commands.add_parser("activate", help="make an installed model the active one")
    activate.add_argument("name", metavar="NAME", help="an installed model (see models)")
    _common(activate)
    activate.set_defaults(handler=_activate)

    rollback = commands.add_parser("rollback", help="make the previous model active again")
    _common(rollback)
    rollback.set_defaults(handler=_rollback)

    download = commands.add_parser("download", help="download a file the spacecraft offers")
    download.add_argument("remote", metavar="REMOTE", help="path inside the onboard outbox")
    download.add_argument("local", metavar="LOCAL", help="where to write it")
    _common(download)
    download.set_defaults(handler=_download)


def _common(parser: argparse.ArgumentParser, keys_help: str | None = None) -> None:
    parser.add_argument("--link", required=True, metavar="URL", help="tcp://HOST:PORT or udp://")
    parser.add_argument(
        "--keys", metavar="PATH", help=keys_help or "SDLS key file (protect the link)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds for the whole command (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="where the CFDP sequence is kept")
    add_verbose_option(parser)


def _next_sequence(state_dir: str | None, count: int) -> int:
    """The first CFDP transaction sequence number of this run, reserving ``count``
    (rounded up to a block of 256: a run never reuses a number another run had, within
    the 65,536 of two octets, CCSDS 727.0-B-5 5.1.5)."""
    count = -(-(count + 1) // 256) * 256
    from groundstation.request_ids import default_state_dir

    directory = Path(state_dir) if state_dir else default_state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SEQUENCE_FILE
    try:
        first = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        first = secrets.randbelow(65536)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{(first + count) % 65536}\n")
    os.replace(temporary, path)
    return first


async def _session(
    args: argparse.Namespace,
    body: Callable[[FileStation], Any],
    *,
    transactions: int,
) -> Any:
    from linkstack.aio import LinkAddress, open_link

    with usage_errors():
        LinkAddress.parse(args.link)
    security = None
    keys = None
    if args.keys is not None:
        from linkstack.sdls.keystore import link_security

        keys = link_security(args.keys, role="ground")
        security = keys.security
    workdir = Path(tempfile.mkdtemp(prefix="groundstation-cfdp-"))
    try:
        station = FileStation(
            workdir,
            security=security,
            first_sequence_number=_next_sequence(args.state_dir, transactions),
        )
        try:
            link = await asyncio.wait_for(
                open_link(args.link, role="ground", on_receive=station.on_receive), 30.0
            )
        except (OSError, TimeoutError) as exc:
            cause = os_cause(exc) if isinstance(exc, OSError) else "timed out"
            raise RunError(f"cannot reach {args.link}: {cause}") from exc
        try:
            station.attach(link)
            return await asyncio.wait_for(body(station), args.timeout)
        except TimeoutError as exc:
            raise RunError(f"no answer from the spacecraft within {args.timeout:g} s") from exc
        finally:
            station.close()
            link.close()
            if keys is not None:
                keys.save_receive_state()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fail(reply: dict[str, Any], what: str) -> TransferError:
    return TransferError(f"{what}: {reply.get('reason')}: {reply.get('detail')}")


def _upload(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"PATH {args.path!r} does not exist")
    name = args.name or path.name
    try:
        check_name(name)
    except ManifestError as exc:
        raise UsageError(f"--as: {exc.detail}") from exc
    key_path = args.manifest_keys or args.keys
    key = None if key_path is None else key_from_file(key_path)
    manifest = build_manifest(name, path, key)
    files = model_files(path)
    progress = Progress(total=sum(p.stat().st_size for _, p in files))
    # The progress line goes to stderr, on a terminal only (not with --json).
    show = None if args.json or not stderr.isatty() else stderr

    async def body(station: FileStation) -> dict[str, Any]:
        progress.started = time.monotonic()
        ticker = asyncio.get_running_loop().create_task(_tick(station, progress, show))
        try:
            staged = await station.request({"op": "status", "name": name}, args.timeout)
            held = staged.get("files", {}) if staged.get("ok") else {}
            for rel, file in files:
                check_relative_path(rel)
                offset = _resumable(file, held.get(rel))
                progress.resumed += offset
                done = await station.put(file, f"{name}/{rel}", resume_from=offset)
                if not done.ok:
                    raise TransferError(f"{name}/{rel} refused: {done.reason}")
                progress.done += file.stat().st_size
            manifest_file = station.workdir / MANIFEST_NAME
            manifest_file.write_bytes(manifest.to_bytes())
            done = await station.put(manifest_file, f"{name}/{MANIFEST_NAME}")
            if not done.ok:
                raise TransferError(f"{name}/{MANIFEST_NAME} refused: {done.reason}")
            reply = await station.request({"op": "install", "name": name}, args.timeout)
        finally:
            ticker.cancel()
            _snapshot(station, progress)
        if not reply.get("ok"):
            raise _fail(reply, f"{name} not installed")
        return reply

    try:
        reply = asyncio.run(_session(args, body, transactions=len(files) + 2))
    except TransferError as exc:
        if show is not None:
            show.write("\n")
        return _report_failure(args, stdout, stderr, str(exc), progress)
    elapsed = max(time.monotonic() - progress.started, 1e-9)
    record = {
        "name": name,
        "ok": True,
        "model": reply.get("model"),
        "octets": progress.total,
        "seconds": round(elapsed, 3),
        "rate_bps": round(progress.total * 8 / elapsed),
        "retransmitted_pdus": progress.retransmitted_pdus,
        "cop1_retransmissions": progress.cop1_retransmissions,
        "naks": progress.naks,
        "resumed_octets": progress.resumed,
        "file_data_octets_sent": progress.file_octets_sent,
    }
    if args.json:
        stdout.write(json.dumps(record) + "\n")
    else:
        if show is not None:
            show.write("\n")
        digest = str(reply.get("model", {}).get("digest", ""))[:16]
        stderr.write(
            f"{PROG}: installed {name} ({progress.total} octets, digest {digest}...) in"
            f" {elapsed:.1f} s; {progress.retransmitted_pdus} PDUs resent,"
            f" {progress.cop1_retransmissions} COP-1 retransmissions\n"
        )
    return EXIT_OK


def _resumable(file: Path, held: Any) -> int:
    """How much of ``file`` the spacecraft holds already: the size of its staged copy
    when that is a prefix of ``file`` (same SHA-256), else 0 (send it all again)."""
    if not isinstance(held, dict):
        return 0
    size, digest = held.get("size"), held.get("sha256")
    if not isinstance(size, int) or not 0 < size <= file.stat().st_size:
        return 0
    prefix = hashlib.sha256()
    with file.open("rb") as handle:
        left = size
        while left and (chunk := handle.read(min(left, 1 << 20))):
            prefix.update(chunk)
            left -= len(chunk)
    return size if prefix.hexdigest() == digest else 0


def _snapshot(station: FileStation, progress: Progress) -> None:
    counters = station.entity.counters
    progress.file_octets_sent = counters.file_data_octets_sent
    progress.acknowledged = progress.done + station.entity.send_progress
    progress.retransmitted_pdus = counters.file_data_retransmitted
    progress.naks = counters.naks_received
    progress.cop1_retransmissions = station.endpoint.counters.tc_frames_retransmitted


async def _tick(station: FileStation, progress: Progress, live: TextIO | None) -> None:
    while True:
        _snapshot(station, progress)
        if live is not None:
            elapsed = max(time.monotonic() - progress.started, 1e-9)
            rate = progress.acknowledged / elapsed
            left = progress.total - progress.acknowledged
            eta = f"{left / rate:.0f} s" if rate > 0 else "?"
            live.write(
                f"\r{PROG}: {progress.acknowledged}/{progress.total} octets"
                f" {rate * 8 / 1000:.1f} kbit/s ETA {eta}"
                f" resent {progress.retransmitted_pdus + progress.cop1_retransmissions}\x1b[K"
            )
            live.flush()
        await asyncio.sleep(0.5)


def _report_failure(
    args: argparse.Namespace, stdout: TextIO, stderr: TextIO, reason: str, progress: Any
) -> int:
    if args.json:
        stdout.write(json.dumps({"ok": False, "error": reason}) + "\n")
    stderr.write(f"{PROG}: {reason}\n")
    return EXIT_FAILED


def _simple(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, op: dict[str, Any]) -> int:
    async def body(station: FileStation) -> dict[str, Any]:
        return await station.request(op, args.timeout)

    try:
        reply = asyncio.run(_session(args, body, transactions=1))
    except TransferError as exc:
        return _report_failure(args, stdout, stderr, str(exc), None)
    if not reply.get("ok"):
        return _report_failure(
            args, stdout, stderr, f"{op['op']}: {reply.get('reason')}: {reply.get('detail')}", None
        )
    if args.json:
        stdout.write(json.dumps(reply) + "\n")
    elif op["op"] == "models":
        for model in reply.get("models", []):
            mark = "*" if model["active"] else ("-" if model["previous"] else " ")
            stdout.write(
                f"{mark} {model['name']:24} {model['kind']:10} {model['size']:>12}"
                f" {model['digest'][:16]}\n"
            )
    else:
        stdout.write(f"active: {reply.get('active')} (previous: {reply.get('previous')})\n")
    return EXIT_OK


def _models(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    return _simple(args, stdout, stderr, {"op": "models"})


def _activate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    return _simple(args, stdout, stderr, {"op": "activate", "name": args.name})


def _rollback(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    return _simple(args, stdout, stderr, {"op": "rollback"})


def _download(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, live: LiveLine) -> int:
    local = Path(args.local)
    dest = f"dl/{secrets.token_hex(8)}"

    async def body(station: FileStation) -> dict[str, Any]:
        arrived = station.expect(dest)
        reply = await station.request(
            {"op": "download", "remote": args.remote, "dest": dest}, args.timeout
        )
        if not reply.get("ok"):
            raise _fail(reply, f"download {args.remote}")
        finished = await arrived
        if not finished.ok:
            raise TransferError(f"download {args.remote} failed: {finished.reason}")
        shutil.copyfile(station.filestore.resolve(dest), local)
        return reply

    try:
        reply = asyncio.run(_session(args, body, transactions=1))
    except TransferError as exc:
        return _report_failure(args, stdout, stderr, str(exc), None)
    except OSError as exc:
        raise RunError(f"cannot write {local}: {os_cause(exc)}") from exc
    if args.json:
        stdout.write(
            json.dumps(
                {"ok": True, "remote": args.remote, "local": str(local), "size": reply.get("size")}
            )
            + "\n"
        )
    else:
        stderr.write(f"{PROG}: {args.remote} -> {local} ({reply.get('size')} octets)\n")
    return EXIT_OK


__all__ = [
    "FileStation",
    "Progress",
    "TransferError",
    "add_file_commands",
    "build_manifest",
    "ground_cfdp_config",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(EXIT_FAILED)
