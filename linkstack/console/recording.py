"""``--capture FILE`` of ``linkstack demo``, ``groundstation ask`` and ``onboard serve``:
the session's recorder, opened as a file.

``--capture FILE`` never replaces a recording by accident: :func:`check_capture_path`
refuses an existing file (unless ``--force``) and a directory that is missing or not
writable before anything slow starts, and :func:`open_recorder` creates the file only
when the session starts (``O_EXCL`` unless ``--force``, so a file that appeared in
between is refused too) and removes it again if the session fails before it recorded
anything.  Timestamps are Unix time: the wall clock read once at the start, plus the
session's monotonic clock since (:class:`~linkstack.capture.TimeReference`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping

from linkstack.capture import CaptureWriter, TimeReference, session_metadata
from linkstack.capture.recording import SessionRecorder, Side
from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import LinkProfile

__all__ = [
    "CaptureExists",
    "CapturePathError",
    "check_capture_path",
    "open_recorder",
    "session_recorder",
]


class CapturePathError(LocalProtocolError):
    """``--capture PATH`` cannot be written: ``problem`` says why."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"--capture {path}: {problem}")


class CaptureExists(CapturePathError):
    """``--capture PATH`` names a file that exists, and ``--force`` was not given."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "the file exists; pass --force to replace it")


def check_capture_path(path: str | None, *, force: bool = False) -> None:
    """``--capture PATH``, checked before the model loads or the link opens: raises
    :class:`CaptureExists` for an existing file unless ``force``, and
    :class:`CapturePathError` for a directory in the way, a directory that does not
    exist or is not writable, or (with ``force``) a file that cannot be written.
    Nothing is created or changed.  ``path`` None (no ``--capture``) passes."""
    if path is None:
        return
    if os.path.isdir(path):
        raise CapturePathError(path, "is a directory")
    if os.path.lexists(path):
        if not force:
            raise CaptureExists(path)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise CapturePathError(path, "the file exists and is not writable")
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CapturePathError(path, f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CapturePathError(path, f"directory {directory} is not writable")


def _create(path: str, *, force: bool) -> int:
    """A descriptor of ``path``, created now (``O_EXCL``), or emptied with ``force``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        return os.open(path, flags, 0o666)
    except FileExistsError as exc:
        raise CaptureExists(path) from exc
    except OSError as exc:
        raise CapturePathError(path, exc.strerror or str(exc)) from exc


def _remove_if_ours(path: str, fd: int) -> None:
    """Remove ``path`` if it is still the file open as ``fd`` (not one put in its place)."""
    with contextlib.suppress(OSError):
        ours = os.fstat(fd)
        there = os.stat(path, follow_symlinks=False)
        if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino):
            os.unlink(path)


@contextlib.contextmanager
def open_recorder(
    path: str | None,
    metadata: Mapping[str, object],
    *,
    side: Side,
    clock: Callable[[], float],
    record_packets: bool = True,
    split_cltus: bool = False,
    force: bool = False,
    wall_clock_ns: Callable[[], int] | None = None,
) -> Iterator[SessionRecorder | None]:
    """``--capture PATH``: a :class:`SessionRecorder` writing to PATH for the duration
    of the block (None when ``path`` is None).

    Enter it when the session starts (link open, model loaded), on the clock the
    session's times come from (``loop.time`` inside the running loop): the file is
    created then, with ``O_EXCL`` unless ``force`` (:class:`CaptureExists`), and
    ``clock()`` and ``wall_clock_ns()`` are read once, back to back, as the capture's
    :class:`~linkstack.capture.TimeReference`: its timestamps are that wall-clock start
    plus ``clock()`` since.  ``side`` is written into the metadata as ``side``.  If the
    block raises before a unit was recorded, the file is closed and removed (with
    ``force``, the file it replaced is gone too).  A file that cannot be written raises
    :class:`CapturePathError` naming it.
    """
    if path is None:
        yield None
        return
    recorded = dict(metadata)
    if recorded.setdefault("side", side) != side:
        raise LocalProtocolError(
            f"metadata side {recorded['side']!r} is not the recorder's side {side!r}"
        )
    fd = _create(path, force=force)
    stream = os.fdopen(fd, "wb")
    writer: CaptureWriter | None = None
    try:
        unix_ns = (wall_clock_ns or time.time_ns)()  # looked up now: a recorder may pin it
        reference = TimeReference(unix_ns=unix_ns, clock_s=clock())
        writer = CaptureWriter(stream, recorded, time_reference=reference)
        yield SessionRecorder(
            writer,
            side=side,
            clock=clock,
            record_packets=record_packets,
            split_cltus=split_cltus,
        )
    except BaseException:
        if writer is None or writer.units_written == 0:
            _remove_if_ours(path, fd)  # a failed start leaves no stub
        raise
    finally:
        try:
            stream.close()
        except OSError as exc:  # pragma: no cover - a full disk at close
            raise CapturePathError(path, exc.strerror or str(exc)) from exc


def session_recorder(
    path: str | None,
    *,
    side: Side,
    program: str,
    clock: Callable[[], float],
    force: bool = False,
    protection: Mapping[str, object] | None = None,
    prompt: str | None = None,
    split_cltus: bool = False,
    profile: LinkProfile | None = None,
    seed: int | None = None,
    **details: object,
) -> contextlib.AbstractContextManager[SessionRecorder | None]:
    """``--capture PATH`` of a program: :func:`open_recorder` with the session's metadata
    (:func:`~linkstack.capture.session_metadata` of the default link configuration,
    ``program``, and ``details`` such as ``link_url``, ``model``, ``timeout_s``).

    A protected session (``protection``: what :meth:`RoleSecurity.metadata
    <linkstack.sdls.keystore.RoleSecurity.metadata>` says, SPIs but never keys) records
    ciphertext only: no decoded Space Packets, no prompt in the metadata.
    """
    from linkstack.endpoints import LinkConfig

    metadata = session_metadata(
        LinkConfig(), profile=profile, seed=seed, side=side, program=program, **details
    )
    if protection is not None:
        metadata["security"] = dict(protection)
    elif prompt is not None:
        metadata["prompt"] = prompt
    return open_recorder(
        path,
        metadata,
        side=side,
        clock=clock,
        record_packets=protection is None,
        split_cltus=split_cltus,
        force=force,
    )
