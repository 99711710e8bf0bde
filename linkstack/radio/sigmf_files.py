"""SigMF recording files: the one module of :mod:`linkstack.radio` that touches files.

:func:`write_recording` writes ``<base>.sigmf-data`` (the samples, streamed chunk by
chunk) and then ``<base>.sigmf-meta``; :func:`read_recording` opens a recording from
its ``.sigmf-meta`` path, its ``.sigmf-data`` path or its base name and returns a
:class:`Recording` whose :meth:`Recording.iter_samples` streams the samples in chunks,
so a long pass never sits whole in memory.  :func:`write_raw_iq` and
:func:`read_raw_iq` do the same for a bare IQ file, whose sample rate and datatype the
user gives (``samp_rate``, as GNU Radio names it).

The ``sigmf`` package (https://github.com/sigmf/sigmf-python) does the SigMF side:
``sigmf.sigmffile.get_sigmf_filenames`` resolves the file names,
``SigMFFile.validate`` checks a metadata document against the SigMF JSON schema (on
write and on read), ``SigMFFile.set_data_file`` computes ``core:sha512`` over the data
file and ``SigMFFile.tofile`` writes the metadata.  The samples are read and written
here, in chunks, with the conversions of :mod:`linkstack.radio.recording` (``sigmf``
reads a data file through a memory map and scales fixed-point samples by powers of
two, where linkstack uses full scales of 32767, 127 and 127.5).

What is wrong with a recording is a typed
:class:`~linkstack.radio.recording.RecordingError` naming the field or file at fault.
One problem does not stop the reading: a data file that ends in a partial sample
(cut short, or a ``core:datatype`` that contradicts it) gives its whole samples, and
the :class:`~linkstack.radio.recording.TruncatedRecording` is reported in
:attr:`Recording.problems` and logged (raised with ``strict=True``).  NaN samples of a
``cf32_le`` file are read as they are; the demodulator copes with them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jsonschema  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
from sigmf import SigMFFile  # type: ignore[import-untyped]
from sigmf.error import SigMFError  # type: ignore[import-untyped]
from sigmf.sigmffile import get_sigmf_filenames  # type: ignore[import-untyped]

from linkstack.errors import LocalProtocolError
from linkstack.radio.recording import (
    C64,
    CaduAnnotation,
    Datatype,
    EmptyRecording,
    MetadataError,
    MetadataNotJson,
    RecordingError,
    RecordingExists,
    RecordingMeta,
    TruncatedRecording,
    check_annotations,
    decode_samples,
    encode_samples,
    from_sigmf,
    parse_datatype,
    to_sigmf,
)

logger = logging.getLogger(__name__)

#: Samples per chunk when streaming (512 KiB of complex64).
DEFAULT_CHUNK: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class WrittenRecording:
    """What :func:`write_recording` or :func:`write_raw_iq` wrote."""

    #: The ``.sigmf-meta`` file; ``None`` for a raw IQ file.
    meta_path: Path | None
    data_path: Path
    sample_count: int
    #: Samples written as 0 because they were NaN or infinite.
    non_finite: int
    #: Samples clipped to the datatype's full scale.
    clipped: int


@dataclass(frozen=True, slots=True)
class Recording:
    """An open recording: its metadata, annotations and a streaming view of its samples."""

    meta: RecordingMeta
    annotations: tuple[CaduAnnotation, ...]
    data_path: Path
    #: The ``.sigmf-meta`` file; ``None`` for a raw IQ file.
    meta_path: Path | None
    #: Whole samples in the data file.
    sample_count: int
    #: Problems found that did not stop the reading (a :class:`TruncatedRecording`).
    problems: tuple[RecordingError, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.sample_count / self.meta.sample_rate

    def iter_samples(
        self, chunk: int = DEFAULT_CHUNK, *, start: int = 0, count: int | None = None
    ) -> Iterator[C64]:
        """Samples ``start`` to ``start + count`` (to the end by default), as complex64
        arrays of at most ``chunk`` samples, read from the file as they are needed."""
        end = self._window(start, count)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise LocalProtocolError(f"chunk must be a number of samples >= 1, got {chunk!r}")
        datatype = self.meta.datatype
        size = datatype.sample_size
        with open(self.data_path, "rb") as stream:
            stream.seek(start * size)
            position = start
            while position < end:
                want = min(chunk, end - position)
                block = stream.read(want * size)
                if len(block) < want * size:
                    raise TruncatedRecording(
                        self.data_path.name,
                        f"the file shrank while being read: sample {position + len(block) // size}"
                        f" of {self.sample_count} is missing",
                        whole_samples=position + len(block) // size,
                        cut_bytes=len(block) % size,
                    )
                position += want
                yield decode_samples(block, datatype)

    def read_samples(self, start: int = 0, count: int | None = None) -> C64:
        """Samples ``start`` to ``start + count`` (to the end by default) in one array."""
        end = self._window(start, count)
        parts = list(self.iter_samples(max(end - start, 1), start=start, count=end - start))
        return parts[0] if parts else np.zeros(0, np.complex64)

    def _window(self, start: int, count: int | None) -> int:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise LocalProtocolError(f"start must be a sample index >= 0, got {start!r}")
        end = self.sample_count if count is None else start + count
        if count is not None and (isinstance(count, bool) or count < 0):
            raise LocalProtocolError(f"count must be >= 0, got {count!r}")
        if end > self.sample_count:
            raise LocalProtocolError(
                f"samples {start}..{end} lie beyond the recording's {self.sample_count}"
            )
        return end


def write_recording(
    path_base: str | Path,
    samples: npt.NDArray[np.generic] | Iterable[npt.NDArray[np.generic]],
    meta: RecordingMeta,
    annotations: Iterable[CaduAnnotation] = (),
    *,
    force: bool = False,
) -> WrittenRecording:
    """Write ``<base>.sigmf-data`` and ``<base>.sigmf-meta``.

    ``samples`` is one 1-D array or an iterable of 1-D arrays (chunks, written as they
    come), full scale 1.0.  ``annotations`` are read once the samples are written, so
    that a generator of chunks may add to a list passed here as it goes (a streamed
    transmission learns where its CADUs land as it makes them).  ``path_base`` may
    also end in ``.sigmf-meta`` or ``.sigmf-data``.  Refuses (:class:`RecordingExists`)
    to replace either file unless ``force``; refuses an empty recording and
    annotations past the last sample, and then leaves no file behind.
    """
    names = get_sigmf_filenames(path_base)
    meta_path, data_path = Path(names["meta_fn"]), Path(names["data_fn"])
    _validate(SigMFFile(metadata=to_sigmf(meta)), meta_path.name)  # before any data
    if not force:
        for path in (meta_path, data_path):
            if path.exists():
                raise RecordingExists(str(path), "already exists; pass force=True to replace it")
    written = _write_data(data_path, samples, meta.datatype, force=force)
    try:
        notes = tuple(annotations)
        handle = SigMFFile(metadata=to_sigmf(meta, notes))
        _validate(handle, meta_path.name)
        if written.sample_count == 0:
            raise EmptyRecording("samples", "no samples to write: a recording needs at least one")
        check_annotations(notes, written.sample_count)
        handle.set_data_file(data_file=data_path)  # counts the samples, sets core:sha512
        handle.tofile(meta_path, overwrite=True)
    except (RecordingError, SigMFError, OSError) as exc:
        data_path.unlink(missing_ok=True)
        if isinstance(exc, SigMFError):
            raise RecordingError(meta_path.name, f"sigmf refused to write it: {exc}") from exc
        raise
    logger.debug("> %s: %d %s samples", data_path, written.sample_count, meta.datatype)
    return WrittenRecording(
        meta_path, data_path, written.sample_count, written.non_finite, written.clipped
    )


def read_recording(path: str | Path, *, strict: bool = False) -> Recording:
    """Open the SigMF recording at ``path`` (its ``.sigmf-meta``, ``.sigmf-data`` or base).

    The metadata is read and checked at once, the samples only when asked for.  With
    ``strict`` a truncated data file raises instead of being reported.
    """
    names = get_sigmf_filenames(path)
    meta_path, data_path = Path(names["meta_fn"]), Path(names["data_fn"])
    if not meta_path.is_file():
        raise RecordingError(
            str(meta_path),
            "no such metadata file (for a bare IQ file, use read_raw_iq with its samp_rate"
            " and datatype)",
        )
    try:
        document = json.loads(meta_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MetadataNotJson(meta_path.name, f"not UTF-8 text, so not JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MetadataNotJson(
            meta_path.name, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    meta, notes = from_sigmf(document)
    _validate(SigMFFile(metadata=document), meta_path.name)
    return _open_data(data_path, meta, notes, meta_path, strict=strict)


def write_raw_iq(
    path: str | Path,
    samples: npt.NDArray[np.generic] | Iterable[npt.NDArray[np.generic]],
    datatype: Datatype | str,
    *,
    force: bool = False,
) -> WrittenRecording:
    """Write bare IQ samples in ``datatype``, with no metadata file."""
    data_path = Path(path)
    kind = parse_datatype(datatype)
    if not force and data_path.exists():
        raise RecordingExists(str(data_path), "already exists; pass force=True to replace it")
    written = _write_data(data_path, samples, kind, force=force)
    if written.sample_count == 0:
        data_path.unlink(missing_ok=True)
        raise EmptyRecording("samples", "no samples to write: a recording needs at least one")
    return written


def read_raw_iq(
    path: str | Path,
    *,
    samp_rate: float,
    datatype: Datatype | str,
    center_frequency: float | None = None,
    strict: bool = False,
) -> Recording:
    """Open a bare IQ file, whose sample rate and datatype the caller knows."""
    meta = RecordingMeta(
        sample_rate=samp_rate, datatype=parse_datatype(datatype), center_frequency=center_frequency
    )
    return _open_data(Path(path), meta, (), None, strict=strict)


def _open_data(
    data_path: Path,
    meta: RecordingMeta,
    notes: tuple[CaduAnnotation, ...],
    meta_path: Path | None,
    *,
    strict: bool,
) -> Recording:
    if not data_path.is_file():
        raise RecordingError(str(data_path), "no such data file")
    octets = data_path.stat().st_size
    size = meta.datatype.sample_size
    whole, cut = divmod(octets, size)
    problems: list[RecordingError] = []
    if cut:
        problem = TruncatedRecording(
            data_path.name,
            f"{octets} octets are not whole {meta.datatype} samples of {size} octets:"
            f" the last {cut} are a partial sample, not read (the file was cut short,"
            " or core:datatype contradicts the data)",
            whole_samples=whole,
            cut_bytes=cut,
        )
        if strict:
            raise problem
        logger.warning("%s", problem)
        problems.append(problem)
    if whole == 0:
        raise EmptyRecording(
            data_path.name,
            f"no samples: the file holds {octets} octets, less than one {size}-octet"
            f" {meta.datatype} sample",
        )
    check_annotations(notes, whole)
    logger.debug("< %s: %d %s samples", data_path, whole, meta.datatype)
    return Recording(meta, notes, data_path, meta_path, whole, tuple(problems))


def _write_data(
    data_path: Path,
    samples: npt.NDArray[np.generic] | Iterable[npt.NDArray[np.generic]],
    datatype: Datatype,
    *,
    force: bool,
) -> WrittenRecording:
    chunks = [samples] if isinstance(samples, np.ndarray) else samples
    count = non_finite = clipped = 0
    try:
        with open(data_path, "wb" if force else "xb") as stream:
            for chunk in chunks:
                encoded = encode_samples(chunk, datatype)
                stream.write(encoded.data)
                count += len(encoded.data) // datatype.sample_size
                non_finite += encoded.non_finite
                clipped += encoded.clipped
    except FileExistsError:
        raise RecordingExists(str(data_path), "already exists; pass force=True") from None
    except RecordingError:
        data_path.unlink(missing_ok=True)
        raise
    if non_finite:
        logger.warning("%s: %d NaN or infinite samples written as 0", data_path, non_finite)
    return WrittenRecording(None, data_path, count, non_finite, clipped)


def _validate(handle: SigMFFile, where: str) -> None:
    """Check a metadata document against the SigMF schema, with the ``sigmf`` package."""
    try:
        handle.validate()
    except jsonschema.ValidationError as exc:
        field = ".".join(str(part) for part in exc.absolute_path) or where
        raise MetadataError(field, f"breaks the SigMF schema: {exc.message}") from None
