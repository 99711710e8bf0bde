"""SigMF recordings, sans-I/O: sample datatypes, the metadata model, CADU annotations.

An SDR pass is kept as a SigMF recording (the SigMF specification,
https://github.com/sigmf/SigMF): a ``.sigmf-meta`` JSON document and a ``.sigmf-data``
file of raw samples.  This module owns everything about a recording that is not a
file: it turns complex64 numpy samples into the bytes of a SigMF datatype and back,
holds the metadata in a frozen :class:`RecordingMeta` and one :class:`CaduAnnotation`
per CADU found or sent, and turns both into the SigMF metadata document and back,
validating each field.  :mod:`linkstack.radio.sigmf_files` reads and writes the files
(with the ``sigmf`` package).

Datatypes (SigMF specification, "Dataset Format"), all complex, one channel:

========== ======= ===========================================================
datatype   octets  complex64 value of a component ``c`` on the wire
========== ======= ===========================================================
``cf32_le`` 8      ``c`` as is (float32 little-endian)
``ci16_le`` 4      ``c / 32767`` (int16 little-endian; full scale 32767)
``ci8``     2      ``c / 127`` (int8; full scale 127)
``cu8``     2      ``(c - 127.5) / 127.5`` (uint8, the RTL-SDR's format)
========== ======= ===========================================================

Writing quantizes to the nearest code, clips components beyond full scale and
replaces non-finite samples (NaN or infinite, in either component) by 0; both are
counted (:class:`EncodedSamples`), never raised.  Reading gives the samples as they
are: a ``cf32_le`` file may hold NaN samples (a receiver's glitch), and they reach
the caller as NaN; the demodulator (:mod:`linkstack.radio.modem`) is the one that
copes with them.

Errors are a :class:`RecordingError` (a :class:`~linkstack.errors.LinkError`) whose
``field`` names the metadata field or the part of the recording at fault::

    RecordingError          .field, .detail
    ├── UnknownDatatype     core:datatype is not one linkstack reads or writes
    ├── MetadataError       a field is missing, of the wrong type, or out of range
    │   └── MetadataNotJson the metadata file does not parse as JSON
    ├── RecordingMismatch   the metadata contradicts the data (an annotation past the end)
    ├── EmptyRecording      no sample at all
    ├── TruncatedRecording  a partial last sample: the whole ones are read, the cut reported
    └── RecordingExists     refusing to overwrite a recording without force
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.errors import LinkError

C64 = npt.NDArray[np.complex64]

# SigMF specification, "Global Object", "Captures Array", "Annotations Array".
GLOBAL: Final = "global"
CAPTURES: Final = "captures"
ANNOTATIONS: Final = "annotations"
DATATYPE_KEY: Final = "core:datatype"
SAMPLE_RATE_KEY: Final = "core:sample_rate"
DESCRIPTION_KEY: Final = "core:description"
EXTENSIONS_KEY: Final = "core:extensions"
NUM_CHANNELS_KEY: Final = "core:num_channels"
DATASET_KEY: Final = "core:dataset"
METADATA_ONLY_KEY: Final = "core:metadata_only"
TRAILING_BYTES_KEY: Final = "core:trailing_bytes"
OFFSET_KEY: Final = "core:offset"
SAMPLE_START_KEY: Final = "core:sample_start"
SAMPLE_COUNT_KEY: Final = "core:sample_count"
FREQUENCY_KEY: Final = "core:frequency"
DATETIME_KEY: Final = "core:datetime"
HEADER_BYTES_KEY: Final = "core:header_bytes"
LABEL_KEY: Final = "core:label"
COMMENT_KEY: Final = "core:comment"

#: The ``linkstack`` extension namespace (SigMF specification, "Extension Namespaces").
NAMESPACE: Final = "linkstack"
#: Version of the ``linkstack:`` fields, declared in ``core:extensions``.
EXTENSION_VERSION: Final = "1.0.0"
VCID_KEY: Final = "linkstack:vcid"
VC_COUNT_KEY: Final = "linkstack:vc_count"
SNR_KEY: Final = "linkstack:snr_db"

MAX_VCID: Final = 7  # CCSDS 132.0-B-3 4.1.2.3 (3-bit Virtual Channel ID)
VC_COUNT_MODULUS: Final = 256  # CCSDS 132.0-B-3 4.1.2.6 (8-bit VC Frame Count)

_EXTENSION_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*\Z")

ExtensionValue = str | int | float | bool


class RecordingError(LinkError):
    """A recording, or the request to make one, is not usable.

    ``field`` names the SigMF field (``core:sample_rate``, ``annotations[3]``...) or
    the part of the recording (``data``, the file name) at fault; ``detail`` says
    what is wrong, with the values.
    """

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


class UnknownDatatype(RecordingError):
    """``core:datatype`` names no datatype linkstack reads or writes."""


class MetadataError(RecordingError):
    """A metadata field is missing, of the wrong type or out of range."""


class MetadataNotJson(MetadataError):
    """The metadata file does not parse as JSON."""


class RecordingMismatch(RecordingError):
    """The metadata contradicts the data file (an annotation past its last sample)."""


class EmptyRecording(RecordingError):
    """The recording holds no sample at all."""


class TruncatedRecording(RecordingError):
    """The data file ends in a partial sample.

    Its whole samples are still read; this error is *reported* by the reader
    (``Recording.problems``) rather than raised, unless it was asked to be strict.
    Either the file was cut (a recorder stopped mid-write) or ``core:datatype``
    contradicts the data (a wrong sample size).
    """

    def __init__(self, field: str, detail: str, *, whole_samples: int, cut_bytes: int) -> None:
        super().__init__(field, detail)
        #: Whole samples in the file, all of which are read.
        self.whole_samples = whole_samples
        #: Octets of the partial last sample, which are not.
        self.cut_bytes = cut_bytes


class RecordingExists(RecordingError):
    """A recording file already exists and overwriting was not forced."""


class Datatype(StrEnum):
    """The SigMF datatypes linkstack reads and writes (SigMF specification, "Dataset Format")."""

    CF32_LE = "cf32_le"
    CI16_LE = "ci16_le"
    CI8 = "ci8"
    CU8 = "cu8"

    @property
    def sample_size(self) -> int:
        """Octets of one complex sample."""
        return _FORMATS[self][0].itemsize * 2


# numpy component dtype, full scale, offset: complex value = (code - offset) / scale.
_FORMATS: Final[dict[Datatype, tuple[np.dtype[np.generic], float, float]]] = {
    Datatype.CF32_LE: (np.dtype("<f4"), 1.0, 0.0),
    Datatype.CI16_LE: (np.dtype("<i2"), 32767.0, 0.0),
    Datatype.CI8: (np.dtype("i1"), 127.0, 0.0),
    Datatype.CU8: (np.dtype("u1"), 127.5, 127.5),
}


def parse_datatype(name: object) -> Datatype:
    """The :class:`Datatype` named ``name``, or :class:`UnknownDatatype`."""
    if isinstance(name, str):
        try:
            return Datatype(name.lower())
        except ValueError:
            pass
    known = ", ".join(d.value for d in Datatype)
    raise UnknownDatatype(DATATYPE_KEY, f"{name!r} is not a datatype linkstack reads ({known})")


@dataclass(frozen=True, slots=True)
class EncodedSamples:
    """Samples as the bytes of a datatype, with what quantization had to change."""

    data: bytes
    #: Samples written as 0 because a component was NaN or infinite.
    non_finite: int
    #: Samples with a component beyond full scale, written at full scale.
    clipped: int


def encode_samples(samples: npt.ArrayLike, datatype: Datatype) -> EncodedSamples:
    """Complex samples (full scale 1.0) as the bytes of ``datatype``."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise RecordingError("samples", f"need a 1-D array of samples, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise RecordingError("samples", f"need numeric samples, got dtype {array.dtype}")
    values = array.astype(np.complex128)
    pairs = np.empty((values.size, 2), np.float64)
    pairs[:, 0] = values.real
    pairs[:, 1] = values.imag
    bad = ~np.isfinite(pairs).all(axis=1)
    pairs[bad] = 0.0
    component, scale, offset = _FORMATS[datatype]
    clipped = 0
    if datatype is Datatype.CF32_LE:
        codes = pairs.astype(component)
    else:
        info = np.iinfo(component)  # type: ignore[type-var]  # an integer dtype here
        raw = np.rint(pairs * scale + offset)
        low = float(info.min) if offset else -scale
        out_of_range = (raw < low) | (raw > info.max)
        clipped = int(out_of_range.any(axis=1).sum())
        codes = np.clip(raw, low, info.max).astype(component)
    return EncodedSamples(codes.tobytes(), int(bad.sum()), clipped)


def decode_samples(data: bytes | bytearray | memoryview, datatype: Datatype) -> C64:
    """The bytes of whole ``datatype`` samples as complex64 samples (full scale 1.0)."""
    size = datatype.sample_size
    if len(data) % size:
        raise RecordingError(
            "data",
            f"{len(data)} octets are not whole {datatype} samples of {size} octets"
            f" ({len(data) % size} left over)",
        )
    component, scale, offset = _FORMATS[datatype]
    codes = np.frombuffer(data, dtype=component)
    if datatype is Datatype.CF32_LE:
        samples: C64 = codes.view(np.dtype("<c8")).astype(np.complex64)
        return samples
    pairs = ((codes.astype(np.float32) - np.float32(offset)) / np.float32(scale)).reshape(-1, 2)
    out: C64 = (pairs[:, 0] + 1j * pairs[:, 1]).astype(np.complex64)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingMeta:
    """What a recording says about its samples (the SigMF global object and capture 0)."""

    #: Samples per second (``core:sample_rate``); required by linkstack.
    sample_rate: float
    #: How the samples are stored (``core:datatype``).
    datatype: Datatype
    #: Centre frequency in Hz of the first capture (``core:frequency``), if known.
    center_frequency: float | None = None
    #: ``core:description``.
    description: str = ""
    #: Time of the first sample, ISO 8601 UTC (``core:datetime`` of capture 0), if known.
    datetime: str | None = None
    #: ``linkstack:<name>`` global fields (spacecraft id, coding, modulation...), by name.
    extensions: Mapping[str, ExtensionValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "datatype", parse_datatype(self.datatype))
        rate = self.sample_rate
        if not _is_number(rate) or not math.isfinite(rate) or rate <= 0:
            raise MetadataError(
                SAMPLE_RATE_KEY, f"needs a positive sample rate in Hz, got {rate!r}"
            )
        frequency = self.center_frequency
        if frequency is not None and (not _is_number(frequency) or not math.isfinite(frequency)):
            raise MetadataError(FREQUENCY_KEY, f"needs a finite frequency in Hz, got {frequency!r}")
        if not isinstance(self.description, str):
            raise MetadataError(DESCRIPTION_KEY, f"needs a string, got {self.description!r}")
        if self.datetime is not None and not isinstance(self.datetime, str):
            raise MetadataError(DATETIME_KEY, f"needs an ISO 8601 string, got {self.datetime!r}")
        for name, value in self.extensions.items():
            key = f"{NAMESPACE}:{name}"
            if not isinstance(name, str) or not _EXTENSION_NAME.match(name):
                raise MetadataError(key, "extension names are lower-case identifiers")
            if not isinstance(value, str | int | float | bool) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise MetadataError(key, f"needs a string, number or boolean, got {value!r}")
        object.__setattr__(self, "extensions", dict(self.extensions))


@dataclass(frozen=True, slots=True, kw_only=True)
class CaduAnnotation:
    """One CADU found in (or sent into) a recording: a SigMF annotation."""

    #: Index of its first sample (``core:sample_start``).
    sample_start: int
    #: Samples it spans (``core:sample_count``); ``None`` when the annotation has none.
    sample_count: int | None
    #: ``core:label``.
    label: str = "CADU"
    #: ``core:comment``.
    comment: str = ""
    #: Virtual Channel ID of its frame (``linkstack:vcid``).
    vcid: int | None = None
    #: Virtual Channel Frame Count of its frame (``linkstack:vc_count``).
    vc_count: int | None = None
    #: Signal-to-noise ratio the receiver measured, in dB (``linkstack:snr_db``).
    snr_db: float | None = None

    def __post_init__(self) -> None:
        _check_index(SAMPLE_START_KEY, self.sample_start)
        if self.sample_count is not None:
            _check_index(SAMPLE_COUNT_KEY, self.sample_count)
        for key, text in ((LABEL_KEY, self.label), (COMMENT_KEY, self.comment)):
            if not isinstance(text, str):
                raise MetadataError(key, f"needs a string, got {text!r}")
        if self.vcid is not None and (not _is_int(self.vcid) or not 0 <= self.vcid <= MAX_VCID):
            raise MetadataError(
                VCID_KEY, f"{self.vcid!r} is no VCID 0..{MAX_VCID} (CCSDS 132.0-B-3 4.1.2.3)"
            )
        if self.vc_count is not None and (
            not _is_int(self.vc_count) or not 0 <= self.vc_count < VC_COUNT_MODULUS
        ):
            raise MetadataError(
                VC_COUNT_KEY,
                f"{self.vc_count!r} is no VC frame count 0..{VC_COUNT_MODULUS - 1}"
                " (CCSDS 132.0-B-3 4.1.2.6)",
            )
        if self.snr_db is not None and (not _is_number(self.snr_db) or math.isnan(self.snr_db)):
            raise MetadataError(SNR_KEY, f"needs a number of dB, got {self.snr_db!r}")

    @property
    def sample_end(self) -> int:
        """Index one past its last sample (its start when it has no count)."""
        return self.sample_start + (self.sample_count or 0)


def to_sigmf(meta: RecordingMeta, annotations: Iterable[CaduAnnotation] = ()) -> dict[str, object]:
    """The SigMF metadata document (without ``core:version``, which the writer adds)."""
    global_object: dict[str, object] = {
        DATATYPE_KEY: meta.datatype.value,
        SAMPLE_RATE_KEY: float(meta.sample_rate),
        EXTENSIONS_KEY: [{"name": NAMESPACE, "version": EXTENSION_VERSION, "optional": True}],
    }
    if meta.description:
        global_object[DESCRIPTION_KEY] = meta.description
    for name, value in meta.extensions.items():
        global_object[f"{NAMESPACE}:{name}"] = value
    capture: dict[str, object] = {SAMPLE_START_KEY: 0}
    if meta.center_frequency is not None:
        capture[FREQUENCY_KEY] = float(meta.center_frequency)
    if meta.datetime is not None:
        capture[DATETIME_KEY] = meta.datetime
    entries = []
    for note in sorted(annotations, key=lambda a: a.sample_start):
        entry: dict[str, object] = {SAMPLE_START_KEY: note.sample_start}
        if note.sample_count is not None:
            entry[SAMPLE_COUNT_KEY] = note.sample_count
        if note.label:
            entry[LABEL_KEY] = note.label
        if note.comment:
            entry[COMMENT_KEY] = note.comment
        if note.vcid is not None:
            entry[VCID_KEY] = note.vcid
        if note.vc_count is not None:
            entry[VC_COUNT_KEY] = note.vc_count
        if note.snr_db is not None:
            entry[SNR_KEY] = float(note.snr_db)
        entries.append(entry)
    return {GLOBAL: global_object, CAPTURES: [capture], ANNOTATIONS: entries}


def from_sigmf(document: object) -> tuple[RecordingMeta, tuple[CaduAnnotation, ...]]:
    """The metadata and annotations of a SigMF metadata document, checked field by field.

    Fields linkstack does not use are ignored.  Refused: a missing ``core:datatype``
    or ``core:sample_rate``, a datatype linkstack does not read, several channels, and
    the Non-Conforming Dataset fields (``core:dataset``, ``core:header_bytes``...).
    """
    top = _mapping(document, "metadata")
    global_object = _mapping(top.get(GLOBAL), GLOBAL)
    if DATATYPE_KEY not in global_object:
        raise MetadataError(
            DATATYPE_KEY, "missing: the metadata does not say how samples are stored"
        )
    datatype = parse_datatype(global_object[DATATYPE_KEY])
    if SAMPLE_RATE_KEY not in global_object:
        raise MetadataError(
            SAMPLE_RATE_KEY, "missing: linkstack needs the sample rate to demodulate a recording"
        )
    channels = global_object.get(NUM_CHANNELS_KEY, 1)
    if channels != 1:
        raise MetadataError(NUM_CHANNELS_KEY, f"linkstack reads one channel, not {channels!r}")
    for key in (DATASET_KEY, METADATA_ONLY_KEY, TRAILING_BYTES_KEY):
        if global_object.get(key):
            raise MetadataError(key, "Non-Conforming and metadata-only datasets are not supported")
    if global_object.get(OFFSET_KEY, 0) != 0:
        raise MetadataError(
            OFFSET_KEY, "recordings that do not start at sample 0 are not supported"
        )
    captures = _sequence(top.get(CAPTURES, []), CAPTURES)
    first: Mapping[str, object] = {}
    for index, item in enumerate(captures):
        capture = _mapping(item, f"{CAPTURES}[{index}]")
        if capture.get(HEADER_BYTES_KEY):
            raise MetadataError(
                f"{CAPTURES}[{index}].{HEADER_BYTES_KEY}",
                "Non-Conforming datasets are not supported",
            )
        if index == 0:
            first = capture
    extensions = {
        key.split(":", 1)[1]: value
        for key, value in global_object.items()
        if key.startswith(f"{NAMESPACE}:")
    }
    description = global_object.get(DESCRIPTION_KEY, "")
    meta = RecordingMeta(
        sample_rate=global_object[SAMPLE_RATE_KEY],  # type: ignore[arg-type]  # checked there
        datatype=datatype,
        center_frequency=first.get(FREQUENCY_KEY),  # type: ignore[arg-type]
        description=description,  # type: ignore[arg-type]
        datetime=first.get(DATETIME_KEY),  # type: ignore[arg-type]
        extensions=extensions,  # type: ignore[arg-type]
    )
    notes = []
    for index, item in enumerate(_sequence(top.get(ANNOTATIONS, []), ANNOTATIONS)):
        where = f"{ANNOTATIONS}[{index}]"
        entry = _mapping(item, where)
        if SAMPLE_START_KEY not in entry:
            raise MetadataError(f"{where}.{SAMPLE_START_KEY}", "missing")
        try:
            notes.append(
                CaduAnnotation(
                    sample_start=entry[SAMPLE_START_KEY],  # type: ignore[arg-type]
                    sample_count=entry.get(SAMPLE_COUNT_KEY),  # type: ignore[arg-type]
                    label=entry.get(LABEL_KEY, ""),  # type: ignore[arg-type]
                    comment=entry.get(COMMENT_KEY, ""),  # type: ignore[arg-type]
                    vcid=entry.get(VCID_KEY),  # type: ignore[arg-type]
                    vc_count=entry.get(VC_COUNT_KEY),  # type: ignore[arg-type]
                    snr_db=entry.get(SNR_KEY),  # type: ignore[arg-type]
                )
            )
        except MetadataError as exc:
            raise MetadataError(f"{where}.{exc.field}", exc.detail) from None
    return meta, tuple(notes)


def check_annotations(annotations: Sequence[CaduAnnotation], sample_count: int) -> None:
    """Raise :class:`RecordingMismatch` for the first annotation past ``sample_count``."""
    for index, note in enumerate(annotations):
        if note.sample_start >= sample_count or note.sample_end > sample_count:
            raise RecordingMismatch(
                f"{ANNOTATIONS}[{index}]",
                f"samples {note.sample_start}..{note.sample_end} lie beyond the data's"
                f" {sample_count} samples",
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_index(key: str, value: object) -> None:
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise MetadataError(key, f"needs a sample index >= 0, got {value!r}")


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise MetadataError(where, f"needs a JSON object, got {type(value).__name__}")
    return value


def _sequence(value: object, where: str) -> Sequence[object]:
    if not isinstance(value, list):
        raise MetadataError(where, f"needs a JSON array, got {type(value).__name__}")
    return value
