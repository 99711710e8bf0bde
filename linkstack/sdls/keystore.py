"""Key files and IV-counter persistence for SDLS: the only file I/O of the security layer.

Key file (JSON, UTF-8, mode 0600, written atomically)::

    {
      "format": "linkstack-sdls-keys",
      "version": 1,
      "keys": [
        {"key_id": 0,   "state": "ACTIVE", "key": "<64 hex digits>"},   # master key (< 128)
        {"key_id": 128, "state": "ACTIVE", "key": "<64 hex digits>"}    # session keys
      ],
      "security_associations": [
        {"spi": 1, "link": "TC", "vcids": [0],
         "service_type": "SA_AUTHENTICATED_ENCRYPTION", "key_id": 128,
         "iv_length": 12, "sn_length": 0, "pad_length_length": 0, "mac_length": 16,
         "arsn_window": 64, "max_arsn_jump": null, "abm": null, "replaces": null,
         "arsn_source": null, "reservation_step": null, "map_id": null, "management": false}
      ]
    }

``state`` is a :class:`~linkstack.sdls.KeyState` name; a DESTROYED key has ``"key": null``.
``abm`` is hex or null (the Yamcs standard mask): over the frame header, or over the frame
header and the Security Header (one mask bit per header bit, 355.0-B-2 4.2.2.6).
``arsn_source`` is ``"IV"``, ``"SN"`` or null (CryptoLib's rule); the fields added after
version 1 first shipped may be left out (their defaults are today's behaviour).  Unknown
SA fields are refused; a bad one is a one-line :class:`KeyFileError` naming the SA and the
field (docs/interop.md lists every field against CryptoLib's SA table).

Counter file (JSON, mode 0600, written atomically and fsync'ed before any counter
value inside a new reservation is used)::

    {
      "format": "linkstack-sdls-counters",
      "version": 1,
      "tx": {"spi-1": 1025, "mkid-0": 17},   # first value NOT reserved, per sending counter
      "rx": {"2": 4711},                      # highest ARSN accepted, per receiving SPI
      "otar_rx": {"0": 16}                    # highest OTAR IV accepted, per master key
    }

The reservation rule: before a counter hands out a value from a new block, the file
holds ``tx[label] >= value + 1``; after a crash the counter resumes at ``tx[label]``,
skipping the unused rest of the block.  See :class:`CounterStore`.

Several processes may share one counter file (two ``groundstation ask --keys K`` at
once send under the same key, and AES-GCM must never see an IV twice under one key,
NIST SP 800-38D 8.2.1).  Every write therefore happens under an exclusive
``flock(2)`` on a lock file beside the counter file (``NAME.lock``, mode 0600, empty;
the counter file itself is replaced by ``rename(2)`` at each write, so it cannot carry
the lock) and is a read-merge-write: the file is re-read under the lock, ``tx``,
``rx`` and ``otar_rx`` are merged with what the process holds by taking the larger
value per entry, and the result is written atomically and fsync'ed before the lock is
released.  A new block starts at ``max(tx[label] in the file, the counter's next
value)``, so a counter another process advanced jumps forward, and no process (say a
stale one saving its receive windows on exit) can roll a mark back.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from linkstack.errors import LocalProtocolError
from linkstack.sdls import (
    ArsnSource,
    KeyActivationPdu,
    KeyManager,
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    LinkSecurity,
    SaTable,
    SecurityAssociation,
    ServiceType,
    TxCounter,
    build_otar,
    is_master_key_id,
    master_counter_label,
)

KEY_FILE_FORMAT: Final = "linkstack-sdls-keys"
COUNTER_FILE_FORMAT: Final = "linkstack-sdls-counters"
FORMAT_VERSION: Final = 1
FILE_MODE: Final = 0o600
#: Suffix of the lock file beside a counter file (``flock(2)``, see :class:`CounterStore`).
LOCK_SUFFIX: Final = ".lock"
#: Counter values reserved per write; a crash loses at most this many IVs.
DEFAULT_BLOCK: Final = 1024

#: Defaults of :func:`generate_key_file`: TC VC 0 (spacecraft receives) and TM VCs 0-7.
DEFAULT_MASTER_KEY_ID: Final = 0
DEFAULT_TC_KEY_ID: Final = 128
DEFAULT_TM_KEY_ID: Final = 129
DEFAULT_TC_SPI: Final = 1
DEFAULT_TM_SPI: Final = 2
#: ``management_vcid``: the TC management SA (Set / Read ARSN, CCSDS 355.1-B-1).
DEFAULT_MANAGEMENT_SPI: Final = 3
DEFAULT_MANAGEMENT_KEY_ID: Final = 130
#: The CryptoLib-strict profile (``linkstack keys generate --profile cryptolib``): the TC
#: data SA accepts ARSN last+1 .. last+5 only, as CryptoLib's in-memory SA table sets its
#: SAs (``arsnw = 5``, sadb_routine_inmemory ``sa_init``), with nothing behind
#: (``arsn_window`` 1); the sender reserves 4 IVs per counter-file write, one less than
#: the window, so a ground that crashes with one frame lost on the way still resumes
#: inside it; and a management SA on TC VC 1 to get back in after a long loss.
CRYPTOLIB_MAX_ARSN_JUMP: Final = 5
CRYPTOLIB_RESERVATION_STEP: Final = 4
CRYPTOLIB_MANAGEMENT_VCID: Final = 1

_SA_FIELDS: Final = frozenset(
    {
        "spi",
        "link",
        "vcids",
        "service_type",
        "key_id",
        "iv_length",
        "sn_length",
        "pad_length_length",
        "mac_length",
        "arsn_window",
        "max_arsn_jump",
        "abm",
        "replaces",
        "arsn_source",
        "reservation_step",
        "map_id",
        "management",
    }
)
#: SA fields that are integers (or null where the SA allows it).
_SA_INT_FIELDS: Final = (
    "spi",
    "key_id",
    "iv_length",
    "sn_length",
    "pad_length_length",
    "mac_length",
    "arsn_window",
    "max_arsn_jump",
    "reservation_step",
    "map_id",
    "replaces",
)


class KeyFileError(LocalProtocolError):
    """A key or counter file cannot be used; the message names the path, never a key."""


class InsecureKeyFile(KeyFileError):
    """Group or others may access the key file."""


class KeyFileExists(KeyFileError):
    """Refused to overwrite an existing file."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    """What a key file holds."""

    keys: KeyRing
    sas: tuple[SecurityAssociation, ...]

    def sa_table(self, **options: Any) -> SaTable:
        return SaTable(self.sas, self.keys, **options)


# -- atomic writing ------------------------------------------------------------------------


def write_private_file(path: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to ``path`` (mode 0600) so that readers see old or new, never half.

    The key files here and the gateway's API key file (groundstation/gateway/auth.py).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    # pid and random octets: a stray file of a killed process with the same pid is no clash
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have narrowed nothing, but be sure
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no check-then-write race
            except FileExistsError:
                raise KeyFileExists(f"{path} exists; refusing to overwrite it") from None
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_json(path: Path, what: str, *, max_octets: int | None = None) -> Any:
    """Read a JSON file only if group and others have no access to it.

    ``what`` names the file in every message ("key file", "API key file"); a file over
    ``max_octets`` (when given) is refused.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise InsecureKeyFile(
                f"{what} {path} has mode {mode:04o}; group/others must have no access"
                f" (chmod 600 {path})"
            )
        chunks = []
        size = 0
        while (max_octets is None or size <= max_octets) and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if max_octets is not None and size > max_octets:
        raise KeyFileError(f"{what} {path} is over {max_octets} octets")
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The message of a JSON error may quote the document: give the position only.
        position = getattr(exc, "pos", getattr(exc, "start", "?"))
        raise KeyFileError(f"{what} {path} is not valid JSON (at octet {position})") from None


# -- key files -----------------------------------------------------------------------------


def _sa_to_json(sa: SecurityAssociation) -> dict[str, Any]:
    return {
        "spi": sa.spi,
        "link": sa.link.name,
        "vcids": sorted(sa.vcids),
        "service_type": sa.service_type.name,
        "key_id": sa.key_id,
        "iv_length": sa.iv_length,
        "sn_length": sa.sn_length,
        "pad_length_length": sa.pad_length_length,
        "mac_length": sa.mac_length,
        "arsn_window": sa.arsn_window,
        "max_arsn_jump": sa.max_arsn_jump,
        "abm": sa.abm.hex() if sa.abm is not None else None,
        "replaces": sa.replaces,
        "arsn_source": sa.arsn_source.name if sa.arsn_source is not None else None,
        "reservation_step": sa.reservation_step,
        "map_id": sa.map_id,
        "management": sa.management,
    }


def key_file_text(keys: KeyRing, sas: Iterable[SecurityAssociation]) -> str:
    """The JSON document for ``keys`` and ``sas`` (holds key material: keep it private)."""
    entries = []
    for key_id in keys.ids():
        material = keys.material(key_id)
        entries.append(
            {
                "key_id": key_id,
                "state": keys.state(key_id).name,
                "key": material.secret_octets().hex() if material is not None else None,
            }
        )
    document = {
        "format": KEY_FILE_FORMAT,
        "version": FORMAT_VERSION,
        "keys": entries,
        "security_associations": [_sa_to_json(sa) for sa in sas],
    }
    return json.dumps(document, indent=2) + "\n"


def write_key_file(
    path: Path | str, keys: KeyRing, sas: Iterable[SecurityAssociation], *, overwrite: bool = False
) -> None:
    """Write a key file atomically with mode 0600."""
    sas = tuple(sas)
    SaTable(sas, keys)  # refuse an inconsistent set before it reaches the disk
    write_private_file(Path(path), key_file_text(keys, sas), overwrite=overwrite)


def default_security_associations(
    *,
    management_vcid: int | None = None,
    max_arsn_jump: int | None = None,
    reservation_step: int | None = None,
) -> tuple[SecurityAssociation, ...]:
    """TC VC 0 under key 128 (SPI 1), TM VCs 0-7 under key 129 (SPI 2).

    ``max_arsn_jump`` W makes the TC SA CryptoLib-strict (``arsnw`` W: ARSN last+1 ..
    last+W, nothing behind), reserving ``reservation_step`` IVs per write (default
    the smaller of W and 1,024).  ``management_vcid`` adds the TC management SA (SPI 3,
    key 130) on that VC, which must not be VC 0: Set ARSN travels there, under an SA
    with no window limit (docs/interop.md).
    """
    strict: dict[str, Any] = {}
    if max_arsn_jump is not None:
        strict = {"arsn_window": 1, "max_arsn_jump": max_arsn_jump}
    if reservation_step is not None:
        strict["reservation_step"] = reservation_step
    sas = [
        SecurityAssociation(
            spi=DEFAULT_TC_SPI,
            link=Link.TC,
            vcids=frozenset({0}),
            key_id=DEFAULT_TC_KEY_ID,
            **strict,
        ),
        SecurityAssociation(
            spi=DEFAULT_TM_SPI, link=Link.TM, vcids=frozenset(range(8)), key_id=DEFAULT_TM_KEY_ID
        ),
    ]
    if management_vcid is not None:
        if management_vcid == 0:
            raise LocalProtocolError(
                "management SA on TC VC 0, the VC of the requests: give it a VC of its own"
                " (1..63), or a long loss there locks it out too"
            )
        sas.append(
            SecurityAssociation(
                spi=DEFAULT_MANAGEMENT_SPI,
                link=Link.TC,
                vcids=frozenset({management_vcid}),
                key_id=DEFAULT_MANAGEMENT_KEY_ID,
                management=True,
            )
        )
    return tuple(sas)


def generate_key_file(
    path: Path | str,
    *,
    overwrite: bool = False,
    random_octets: Callable[[int], bytes] = os.urandom,
    management_vcid: int | None = None,
    max_arsn_jump: int | None = None,
    reservation_step: int | None = None,
) -> KeyFile:
    """A new key file: master key 0 and session keys 128 (TC) and 129 (TM), all ACTIVE;
    with ``management_vcid`` also key 130 for the management SA (see
    :func:`default_security_associations` for the options)."""
    sas = default_security_associations(
        management_vcid=management_vcid,
        max_arsn_jump=max_arsn_jump,
        reservation_step=reservation_step,
    )
    keys = KeyRing(
        (key_id, KeyMaterial(random_octets(32)), KeyState.ACTIVE)
        for key_id in (DEFAULT_MASTER_KEY_ID, *(sa.key_id for sa in sas if sa.key_id is not None))
    )
    write_key_file(path, keys, sas, overwrite=overwrite)
    return KeyFile(keys, sas)


def _field(entry: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = entry.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise KeyFileError(f"{where}: field {name!r} missing or not {kind.__name__}")
    return value


def _enum_field(entry: dict[str, Any], name: str, enum: Any, where: str) -> Any:
    value = entry.get(name)
    names = [m.name for m in enum]
    if value not in names:
        raise KeyFileError(f"{where}: field {name!r} is {value!r}, not one of {names}")
    return enum[value]


def _sa_from_json(entry: dict[str, Any], where: str) -> SecurityAssociation:
    """One SA of a key file; a one-line :class:`KeyFileError` naming the field."""
    for name in _SA_INT_FIELDS:
        value = entry.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise KeyFileError(f"{where}: field {name!r} is {value!r}, not an integer")
    if not isinstance(entry.get("management", False), bool):
        raise KeyFileError(f"{where}: field 'management' is not true or false")
    options = dict(entry)
    options["link"] = _enum_field(entry, "link", Link, where)
    options["service_type"] = _enum_field(entry, "service_type", ServiceType, where)
    vcids = _field(entry, "vcids", list, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vcids):
        raise KeyFileError(f"{where}: field 'vcids' is {vcids!r}, not a list of integers")
    options["vcids"] = frozenset(vcids)
    if entry.get("arsn_source") is not None:
        options["arsn_source"] = _enum_field(entry, "arsn_source", ArsnSource, where)
    abm = entry.get("abm")
    if abm is not None:
        try:
            options["abm"] = bytes.fromhex(abm) if isinstance(abm, str) else None
        except ValueError:
            options["abm"] = None
        if options["abm"] is None:
            raise KeyFileError(f"{where}: field 'abm' is not hex digits (or null)")
    if "spi" not in entry:
        raise KeyFileError(f"{where}: field 'spi' missing")
    try:
        return SecurityAssociation(**options)
    except LocalProtocolError as exc:
        raise KeyFileError(f"{where}: {exc}") from None


def load_key_file(path: Path | str) -> KeyFile:
    """Read a key file; refuses one that group or others can access."""
    path = Path(path)
    document = read_private_json(path, "key file")
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(f"key file {path}: 'format' is not {KEY_FILE_FORMAT!r}")
    if document.get("version") != FORMAT_VERSION:
        raise KeyFileError(f"key file {path}: version {document.get('version')!r} unsupported")
    keys = KeyRing()
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyFileError(f"key file {path}: 'keys' is not a list")
    for index, entry in enumerate(raw_keys):
        where = f"key file {path}, keys[{index}]"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where}: not an object")
        key_id = _field(entry, "key_id", int, where)
        state_name = _field(entry, "state", str, where)
        try:
            state = KeyState[state_name]
        except KeyError:
            raise KeyFileError(f"{where}: state {state_name!r} unknown") from None
        hex_key = entry.get("key")
        try:
            octets = bytes.fromhex(hex_key) if isinstance(hex_key, str) else None
        except ValueError:
            octets = None
        if octets is None or len(octets) != 32:
            if state == KeyState.DESTROYED and hex_key is None:
                octets = bytes(32)
            else:
                raise KeyFileError(f"{where} (key {key_id}): 'key' is not 64 hex digits")
        try:
            keys.add(key_id, KeyMaterial(octets), state)
        except LocalProtocolError as exc:
            raise KeyFileError(f"{where}: {exc}") from None
    raw_sas = document.get("security_associations")
    if not isinstance(raw_sas, list):
        raise KeyFileError(f"key file {path}: 'security_associations' is not a list")
    sas = []
    for index, entry in enumerate(raw_sas):
        where = f"key file {path}, security_associations[{index}]"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where}: not an object")
        unknown = set(entry) - _SA_FIELDS
        if unknown:
            raise KeyFileError(f"{where}: unknown fields {sorted(unknown)}")
        sas.append(_sa_from_json(entry, where))
    try:
        SaTable(sas, keys)
    except LocalProtocolError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
    return KeyFile(keys, tuple(sas))


# -- counter persistence --------------------------------------------------------------------


@dataclass(slots=True)
class CounterRecord:
    """The counter file's content."""

    tx: dict[str, int] = field(default_factory=dict)
    rx: dict[int, int] = field(default_factory=dict)
    otar_rx: dict[int, int] = field(default_factory=dict)


_K = TypeVar("_K")


def _max_merge(ours: Mapping[_K, int], theirs: Mapping[_K, int]) -> dict[_K, int]:
    """Every key of both, with the larger value: counters and windows only go up."""
    merged = dict(ours)
    for key, value in theirs.items():
        if key not in merged or value > merged[key]:
            merged[key] = value
    return merged


def _merge_records(ours: CounterRecord, theirs: CounterRecord) -> CounterRecord:
    return CounterRecord(
        tx=_max_merge(ours.tx, theirs.tx),
        rx=_max_merge(ours.rx, theirs.rx),
        otar_rx=_max_merge(ours.otar_rx, theirs.otar_rx),
    )


class CounterStore:
    """The counter file of one end: sending reservations and receiving windows.

    Usage on the sending side, once per frame::

        store.ensure(counter)            # persists a new block when none is left
        frame = sdls.protect_tm(..., counter=counter, ...)

    ``ensure`` writes and fsyncs the new mark before confirming it to the counter, so
    a crash at any point never reuses an IV.

    Several stores (in several processes) may share one file: every write takes an
    exclusive ``flock(2)`` on :attr:`lock_path`, re-reads the file and merges it with
    :attr:`record` by the larger value per entry before writing, and a reservation
    starts above every mark the file (or this store) knows for the label.  Reading
    needs no lock: the file is only ever replaced whole.  :attr:`record` is what this
    store last read or wrote.
    """

    def __init__(self, path: Path | str, *, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise LocalProtocolError(f"reservation block {block} < 1")
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self.block = block
        self.record = self._load()

    def _load(self) -> CounterRecord:
        """The file's content, or an empty record when there is no file yet."""
        if not self.path.exists():
            return CounterRecord()
        document = read_private_json(self.path, "counter file")
        if not isinstance(document, dict) or document.get("format") != COUNTER_FILE_FORMAT:
            raise KeyFileError(f"counter file {self.path}: 'format' is not {COUNTER_FILE_FORMAT!r}")
        try:
            return CounterRecord(
                tx={str(k): int(v) for k, v in document.get("tx", {}).items()},
                rx={int(k): int(v) for k, v in document.get("rx", {}).items()},
                otar_rx={int(k): int(v) for k, v in document.get("otar_rx", {}).items()},
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise KeyFileError(f"counter file {self.path}: {type(exc).__name__} {exc}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive ``flock(2)`` of the counter file (blocks until free).

        The lock file is created with mode 0600 and refused, like the counter file,
        when group or others may access it (they could hold the lock forever).  It is
        opened afresh for each write, so a forked child never shares the parent's lock.
        """
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(self.lock_path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
                os.fchmod(fd, FILE_MODE)  # whatever the umask
            except FileExistsError:
                fd = os.open(self.lock_path, flags)
        except OSError as exc:
            raise KeyFileError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from None
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                raise InsecureKeyFile(
                    f"lock file {self.lock_path} has mode {mode:04o}; group/others must have"
                    f" no access (chmod 600 {self.lock_path})"
                )
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, record: CounterRecord) -> None:
        """Write ``record`` atomically and durably (lock held); it becomes :attr:`record`."""
        document = {
            "format": COUNTER_FILE_FORMAT,
            "version": FORMAT_VERSION,
            "tx": dict(sorted(record.tx.items())),
            "rx": {str(k): v for k, v in sorted(record.rx.items())},
            "otar_rx": {str(k): v for k, v in sorted(record.otar_rx.items())},
        }
        write_private_file(self.path, json.dumps(document, indent=2) + "\n", overwrite=True)
        self.record = record

    def save(self) -> None:
        """Merge :attr:`record` into the file (larger value per entry) and write it."""
        with self._locked():
            self._write(_merge_records(self._load(), self.record))

    def counter(self, sa: SecurityAssociation) -> TxCounter:
        """The sending counter of ``sa``, resumed at its persisted mark (1 when new)."""
        counter = TxCounter.for_sa(sa, next_value=1)
        return TxCounter(
            counter.label, limit=counter.limit, next_value=self._mark(self.record, counter)
        )

    def master_counter(self, master_key_id: int) -> TxCounter:
        """The OTAR IV counter of a master key, resumed at its persisted mark."""
        label = master_counter_label(master_key_id)
        draft = TxCounter(label, limit=(1 << 96) - 1)
        return TxCounter(label, limit=draft.limit, next_value=self._mark(self.record, draft))

    def _mark(self, record: CounterRecord, counter: TxCounter) -> int:
        """The first value of ``counter`` that ``record`` leaves unreserved (1 when new)."""
        mark = record.tx.get(counter.label, 1)
        if not 1 <= mark <= counter.limit + 1:
            raise KeyFileError(
                f"counter file {self.path}: {counter.label} = {mark} outside 1..{counter.limit + 1}"
            )
        return mark

    def reserve(self, counter: TxCounter, block: int | None = None) -> int:
        """Persist a new block for ``counter``, then confirm it; returns the new mark.

        Under the lock: re-read the file, move ``counter`` past every value the file or
        this store has seen reserved for its label (another process may have used
        them), plan the block, write and fsync, and only then confirm it.
        """
        with self._locked():
            known = _merge_records(self._load(), self.record)
            counter.advance_to(self._mark(known, counter))
            mark = counter.plan_reservation(block or self.block)
            known.tx[counter.label] = max(known.tx.get(counter.label, 1), mark)
            self._write(known)
        counter.confirm_reservation(mark)
        return mark

    def ensure(self, counter: TxCounter, block: int | None = None) -> None:
        """Reserve a block (``block`` values, default :attr:`block`) when ``counter``
        has no reserved value left."""
        if counter.remaining_reserved <= 0:
            self.reserve(counter, block)

    def save_window(self, spi: int, highest: int) -> None:
        """Persist one receive window's highest ARSN now (merged by the larger value).

        The spacecraft calls it on every frame that moves a window, before the frame
        is delivered (``SaTable.on_window_advance``): after a crash it resumes exactly
        there, so it accepts no replay and refuses nothing the ground sends next.
        """
        with self._locked():
            known = _merge_records(self._load(), self.record)
            known.rx[spi] = max(known.rx.get(spi, highest), highest)
            self._write(known)

    def save_receive_state(self, table: SaTable, manager: KeyManager | None = None) -> None:
        """Persist the receive windows (and OTAR IVs) so a restart accepts no replay.

        Merged by the larger value with what the file holds: a process that exits after
        another never lowers a window or a sending mark.
        """
        ours = CounterRecord(
            tx=dict(self.record.tx),
            rx=_max_merge(self.record.rx, table.replay_state()),
            otar_rx=(
                _max_merge(self.record.otar_rx, manager.otar_state())
                if manager is not None
                else dict(self.record.otar_rx)
            ),
        )
        with self._locked():
            self._write(_merge_records(self._load(), ours))


def save_keys(path: Path | str, key_file: KeyFile) -> None:
    """Rewrite a key file after key management changed the ring (OTAR, activation...)."""
    write_key_file(path, key_file.keys, key_file.sas, overwrite=True)


# -- one end's security for a program (``--keys PATH``) -------------------------------------

Role = Literal["ground", "spacecraft"]
#: The link each role sends on: the ground sends TC, the spacecraft TM.
_SEND_LINK: Final[dict[str, Link]] = {"ground": Link.TC, "spacecraft": Link.TM}


@dataclass(slots=True)
class RoleSecurity:
    """One end's SDLS from a key file: its :class:`LinkSecurity` and its counter file."""

    security: LinkSecurity
    #: The role's counter file; None for a replay, which never writes state.
    store: CounterStore | None
    #: SPI of the TC SA (ground sends) and of the TM SA (spacecraft sends).
    tc_spi: int
    tm_spi: int
    #: The ground's sender on the TC management SA (Set ARSN, 355.1-B-1), sharing
    #: :attr:`security`'s table; None without a ``management`` SA in the key file.
    management: LinkSecurity | None = None
    #: SPI of the key file's management SA (both roles); None without one.
    management_spi: int | None = None
    #: OTAR IV counters of the master keys (:meth:`rekey_pdus`), by master key id.
    _master_counters: dict[int, TxCounter] = field(default_factory=dict)

    @property
    def management_sa(self) -> SecurityAssociation | None:
        """The management SA: route APID KEY_MANAGEMENT to its VC
        (``linkstack.endpoints.route_key_management``), at both ends."""
        if self.management_spi is None:
            return None
        return self.security.table[self.management_spi]

    @property
    def vc_security(self) -> dict[int, LinkSecurity]:
        """The ground's sending SDLS per TC VC besides :attr:`security`'s: the management
        SA's VC (``GroundEndpoint(vc_security=...)``); empty without one."""
        sa = self.management_sa
        if sa is None or self.management is None:
            return {}
        return {vcid: self.management for vcid in sorted(sa.vcids)}

    def rekey_pdus(self, key_id: int, material: KeyMaterial) -> tuple[bytes, bytes]:
        """The OTAR of session key ``key_id`` (CCSDS 355.1-B-1) under the lowest ACTIVE
        master key of the ring, then its activation: send both on APID KEY_MANAGEMENT.

        The master key's IV counter resumes from, and reserves in, the counter file
        (label ``mkid-N``) before the OTAR is built, so no IV repeats under it across
        runs.  This end's ring holds the key ACTIVE from now on; the key file is not
        rewritten (:func:`save_keys` does that).
        """
        keys = self.security.table.keys
        masters = [
            k for k in keys.ids() if is_master_key_id(k) and keys.state(k) == KeyState.ACTIVE
        ]
        if not masters:
            raise LocalProtocolError(f"no ACTIVE master key in the ring {sorted(keys.ids())}")
        master = masters[0]
        counter = self._master_counters.get(master)
        if counter is None:
            counter = (
                TxCounter(master_counter_label(master), limit=(1 << 96) - 1)
                if self.store is None
                else self.store.master_counter(master)
            )
            self._master_counters[master] = counter
        if self.store is None:
            _unpersisted_reserve(counter)
        else:
            self.store.ensure(counter)
        otar = build_otar(
            keys, master_key_id=master, counter=counter, new_keys=[(key_id, material)]
        )
        keys.add(key_id, material, KeyState.PREACTIVE)
        keys.transition(key_id, KeyState.ACTIVE)
        return otar.to_bytes(), KeyActivationPdu((key_id,)).to_bytes()

    def save_receive_state(self) -> None:
        """Persist the receive window (on a clean exit), so a restart accepts no replay."""
        if self.store is not None:
            self.store.save_receive_state(self.security.table)

    def metadata(self) -> dict[str, object]:
        """What a capture may say about the protection: SPIs only, never a key."""
        sa = self.security.send_sa
        return {
            "protected": True,
            "tc_spi": self.tc_spi,
            "tm_spi": self.tm_spi,
            "service_type": sa.service_type.name,
        }


def _send_spi(key_file: KeyFile, link: Link, path: Path) -> int:
    spis = sorted(sa.spi for sa in key_file.sas if sa.link == link and not sa.management)
    if not spis:
        raise KeyFileError(f"key file {path}: no {link.name} security association")
    return spis[0]


def counter_path(key_path: Path | str, role: Role, state_dir: Path | str | None = None) -> Path:
    """The counter file of ``role`` for ``key_path``: ``KEYS.ROLE.counters`` beside it
    (or in ``state_dir``), one per role so that the two ends never share one; processes
    of the same role do, under its lock (see :class:`CounterStore`)."""
    key_path = Path(key_path)
    directory = Path(state_dir) if state_dir is not None else key_path.parent
    return directory / f"{key_path.name}.{role}.counters"


def _unpersisted_reserve(counter: TxCounter) -> None:
    """A replay's reservation: nothing is written (the replay radiates nothing)."""
    if counter.remaining_reserved <= 0:
        counter.confirm_reservation(counter.plan_reservation(DEFAULT_BLOCK))


def _step_for(sa: SecurityAssociation, block: int | None) -> int:
    """The reservation step of ``sa``: ``block`` when given (within the window), else
    the SA's own (:attr:`SecurityAssociation.effective_reservation_step`)."""
    if block is None:
        return sa.effective_reservation_step
    if block < 1 or (sa.max_arsn_jump is not None and block > sa.max_arsn_jump):
        raise LocalProtocolError(
            f"reservation block {block} for SA {sa.spi}: needs 1..{sa.max_arsn_jump}"
            " (its max_arsn_jump), or a restart jumps past the receiver's window"
        )
    return block


def link_security(
    key_path: Path | str,
    *,
    role: Role,
    state_dir: Path | str | None = None,
    persist: bool = True,
    block: int | None = None,
    persist_windows: bool | None = None,
) -> RoleSecurity:
    """The SDLS of ``role`` ("ground" or "spacecraft") from the key file ``key_path``.

    Refuses a key file group or others can read (:class:`InsecureKeyFile`, naming the
    path).  The role sends under the first TC SA that is not a management SA (ground)
    or the first TM SA (spacecraft) and accepts every SA of the file; the ground also
    gets the TC management SA, if the file has one, as :attr:`RoleSecurity.management`
    (both roles get its SPI, :attr:`RoleSecurity.management_spi`, to route APID
    KEY_MANAGEMENT to its VC).
    With ``persist`` its counter file (:func:`counter_path`) resumes the sending
    counters and the receive windows and is written before each new block of IVs:
    ``block`` IVs, default the SA's ``reservation_step`` (other processes of the same
    role may share it, see :class:`CounterStore`).  ``persist_windows`` (default: on
    for the spacecraft) also writes a receive window each time it moves, so that a
    crash loses no window; otherwise they are written by
    :meth:`RoleSecurity.save_receive_state`.  Without ``persist`` (a replay) the
    counters start at 1 and nothing is written.
    """
    if role not in _SEND_LINK:
        raise LocalProtocolError(f"role {role!r} is neither 'ground' nor 'spacecraft'")
    key_path = Path(key_path)
    key_file = load_key_file(key_path)
    tc_spi = _send_spi(key_file, Link.TC, key_path)
    tm_spi = _send_spi(key_file, Link.TM, key_path)
    send_spi = tc_spi if role == "ground" else tm_spi
    management_spi = next(
        (sa.spi for sa in sorted(key_file.sas, key=_by_spi) if sa.management), None
    )
    sends_management = role == "ground" and management_spi is not None
    if not persist:
        table = key_file.sa_table()
        security = LinkSecurity(
            table=table,
            send_spi=send_spi,
            counter=TxCounter.for_sa(table[send_spi]),
            reserve=_unpersisted_reserve,
        )
        management = (
            None
            if not sends_management or management_spi is None
            else LinkSecurity(
                table=table,
                send_spi=management_spi,
                counter=TxCounter.for_sa(table[management_spi]),
                reserve=_unpersisted_reserve,
            )
        )
        return RoleSecurity(security, None, tc_spi, tm_spi, management, management_spi)
    store = CounterStore(counter_path(key_path, role, state_dir))
    windows = role == "spacecraft" if persist_windows is None else persist_windows
    table = key_file.sa_table(
        replay_state=store.record.rx,
        on_window_advance=store.save_window if windows else None,
    )

    def sender(spi: int) -> LinkSecurity:
        sa = table[spi]
        step = _step_for(sa, block)
        return LinkSecurity(
            table=table,
            send_spi=spi,
            counter=store.counter(sa),
            reserve=lambda counter: store.ensure(counter, step),
        )

    management = sender(management_spi) if sends_management and management_spi is not None else None
    return RoleSecurity(sender(send_spi), store, tc_spi, tm_spi, management, management_spi)


def _by_spi(sa: SecurityAssociation) -> int:
    return sa.spi


#: ``sdls/<reason>`` drop keys counted under their own name in :func:`security_record`.
_COUNTED: Final = {
    "mac_failures": "sdls/mac-mismatch",
    "replays": "sdls/replay",
    "outside_window": "sdls/outside-window",
    "unknown_spi": "sdls/unknown-spi",
}


def security_record(enabled: bool, *drops: Mapping[str, int]) -> dict[str, object]:
    """The ``security`` entry of a ``--json`` record, from endpoints' drop counters
    (``"layer/reason" -> count``; several are summed)."""
    total: dict[str, int] = {}
    for counts in drops:
        for key, n in counts.items():
            if key.startswith("sdls/"):
                total[key] = total.get(key, 0) + n
    record: dict[str, object] = {"enabled": enabled}
    record.update({name: total.get(key, 0) for name, key in _COUNTED.items()})
    record["other"] = sum(n for key, n in total.items() if key not in _COUNTED.values())
    record["drops"] = dict(sorted(total.items()))
    return record


__all__ = [
    "COUNTER_FILE_FORMAT",
    "CRYPTOLIB_MANAGEMENT_VCID",
    "CRYPTOLIB_MAX_ARSN_JUMP",
    "CRYPTOLIB_RESERVATION_STEP",
    "DEFAULT_BLOCK",
    "KEY_FILE_FORMAT",
    "LOCK_SUFFIX",
    "CounterRecord",
    "CounterStore",
    "InsecureKeyFile",
    "KeyFile",
    "KeyFileError",
    "KeyFileExists",
    "Role",
    "RoleSecurity",
    "counter_path",
    "default_security_associations",
    "generate_key_file",
    "key_file_text",
    "link_security",
    "load_key_file",
    "read_private_json",
    "save_keys",
    "security_record",
    "write_key_file",
    "write_private_file",
]
