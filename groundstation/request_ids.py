"""Request ids that stay unique across ground processes and restarts.

The wire request id is a u16 that the ground assigns and must not reuse while the
spacecraft still holds a request with it (queued, running, streaming, or kept for
resend; docs/protocol.md §4 and §8.1).  A :class:`~groundstation.station.GroundStation`
alone counts from ``first_request_id`` in memory, so every new ``groundstation ask``
process would start again at the same id.  :class:`RequestIdAllocator` is the
station's ``id_source`` for that case: the next id lives in a small JSON state file
shared by every ground process of the machine::

    {"version": 1, "next_request_id": 4711}

* each allocation takes an exclusive ``fcntl.flock`` on a sibling lock file
  (``request-ids.json.lock``, never replaced, so every process locks the same
  inode), reads the file, writes the next id to a temporary file in the same
  directory, fsyncs it and renames it over the state file (atomic on POSIX), then
  releases the lock: two processes never get the same id and a crash leaves
  either the old or the new file, never half of one;
* ids wrap modulo 2**16;
* a missing state file (first use on this machine) or an unreadable one starts at
  a random id drawn from ``os.urandom``, so two machines, or a machine that lost
  its state, start far apart rather than both at 0;
* when the state cannot be used at all (directory not writable, lock held for
  ``lock_timeout_s``, no home directory) the allocator logs a warning once and
  goes on in memory from a random id: the ask never fails for it, and its ids are
  then unique within this process only.

Default location: ``$XDG_STATE_HOME/linkstack/request-ids.json`` when
``XDG_STATE_HOME`` is an absolute path (the XDG Base Directory specification
ignores relative ones), else ``~/.local/state/linkstack/request-ids.json``.

This is the ground's file I/O for request ids; the station itself never touches a
file, it only calls the ``id_source`` it was given.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from groundstation.station import REQUEST_ID_MODULUS
from linkstack.errors import LocalProtocolError

logger = logging.getLogger(__name__)

#: Name of the state file inside the state directory.
STATE_FILE_NAME: Final = "request-ids.json"
#: Version of the state file's layout (the ``version`` key).
STATE_VERSION: Final = 1
#: Seconds to wait for another process's lock before going on in memory.
DEFAULT_LOCK_TIMEOUT_S: Final = 5.0
_LOCK_POLL_S: Final = 0.005


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/linkstack``, else ``~/.local/state/linkstack``.

    Raises RuntimeError when neither ``XDG_STATE_HOME`` nor a home directory is known.
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "linkstack"
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    return base / ".local" / "state" / "linkstack"


class RequestIdAllocator:
    """The next request id from a state file shared by the machine's ground processes.

    Call it (or :meth:`allocate`) for each id; pass it as ``GroundStation(...,
    id_source=allocator)``.  ``path`` is the state file; ``None`` keeps no state
    (random start, in memory, with a warning).
    """

    def __init__(
        self,
        path: Path | str | None,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not lock_timeout_s >= 0:
            raise LocalProtocolError(f"lock_timeout_s {lock_timeout_s} must be zero or positive")
        #: The state file, or None when none is kept.
        self.path = None if path is None else Path(path)
        self._lock_timeout_s = lock_timeout_s
        self._random_bytes = random_bytes
        #: Set once the state file failed (or when there is none): ids then continue
        #: from here, in memory.
        self._memory_next: int | None = None

    @classmethod
    def default(
        cls,
        state_dir: Path | str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> RequestIdAllocator:
        """The allocator on ``state_dir/request-ids.json``, by default in
        :func:`default_state_dir`; without a home directory it keeps no state."""
        try:
            directory = (
                Path(state_dir).expanduser()
                if state_dir is not None
                else default_state_dir(environ)
            )
        except RuntimeError as exc:  # Path.home(): no HOME and no password entry
            logger.warning("request ids: no state directory (%s)", exc)
            return cls(None, lock_timeout_s=lock_timeout_s, random_bytes=random_bytes)
        return cls(
            directory / STATE_FILE_NAME, lock_timeout_s=lock_timeout_s, random_bytes=random_bytes
        )

    @property
    def persistent(self) -> bool:
        """Ids come from the state file (False without one, or once it failed)."""
        return self.path is not None and self._memory_next is None

    def __call__(self) -> int:
        return self.allocate()

    def allocate(self) -> int:
        """The next id, 0..65535; never raises for the state file's trouble."""
        request_id = self._memory_next
        if request_id is None:
            if self.path is None:
                request_id = self._start_in_memory("no state file")
            else:
                try:
                    return self._allocate_from_file(self.path)
                except OSError as exc:  # TimeoutError (the lock) included
                    request_id = self._start_in_memory(f"cannot use {self.path}: {exc}")
        self._memory_next = (request_id + 1) % REQUEST_ID_MODULUS
        return request_id

    # -- internals --------------------------------------------------------------------

    def _random_id(self) -> int:
        return int.from_bytes(self._random_bytes(2), "big") % REQUEST_ID_MODULUS

    def _start_in_memory(self, why: str) -> int:
        start = self._random_id()
        logger.warning(
            "request ids: %s; continuing in memory from random id %d "
            "(unique within this process only)",
            why,
            start,
        )
        return start

    def _allocate_from_file(self, path: Path) -> int:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # XDG: 0700 when created
        lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock(lock_fd, path)
            request_id = self._read_next(path)
            self._write_next(path, (request_id + 1) % REQUEST_ID_MODULUS)
        finally:
            os.close(lock_fd)  # releases the flock
        logger.debug("request ids: %d from %s", request_id, path)
        return request_id

    def _lock(self, fd: int, path: Path) -> None:
        """Exclusive flock, waiting at most ``lock_timeout_s`` (a stopped process may
        hold it; a dead one releases it with its descriptors)."""
        deadline = time.monotonic() + self._lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"lock of {path} held by another process for {self._lock_timeout_s} s"
                    ) from None
                time.sleep(_LOCK_POLL_S)

    def _read_next(self, path: Path) -> int:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            start = self._random_id()
            logger.info("request ids: new state file %s, starting at random id %d", path, start)
            return start
        try:
            state = json.loads(raw)
            value = state["next_request_id"] if state.get("version") == STATE_VERSION else None
        except (ValueError, AttributeError, KeyError) as exc:  # JSON, not an object, no key
            value, problem = None, f"{type(exc).__name__}: {exc}"
        else:
            problem = f"content {raw[:60]!r}"
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 0 <= value < REQUEST_ID_MODULUS
        ):
            return value
        start = self._random_id()
        logger.warning(
            "request ids: state file %s is not a version %d state (%s); starting again at "
            "random id %d",
            path,
            STATE_VERSION,
            problem,
            start,
        )
        return start

    @staticmethod
    def _write_next(path: Path, next_id: int) -> None:
        """Write the state to a temporary file, fsync, rename over ``path``, fsync the
        directory: the file always holds a whole state, the old or the new."""
        payload = json.dumps({"version": STATE_VERSION, "next_request_id": next_id}) + "\n"
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "STATE_FILE_NAME",
    "STATE_VERSION",
    "RequestIdAllocator",
    "default_state_dir",
]
