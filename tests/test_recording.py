"""SigMF recordings: datatypes, metadata, annotations, files, and every bad input.

The independent check is the ``sigmf`` package itself (https://github.com/sigmf/sigmf-python):
what linkstack writes, ``sigmf.sigmffile.fromfile`` opens, validates (schema and
``core:sha512``) and reads back, compared field by field and sample by sample.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from sigmf import sigmffile

from linkstack.errors import LinkError, LocalProtocolError
from linkstack.radio.recording import (
    CaduAnnotation,
    Datatype,
    EmptyRecording,
    MetadataError,
    MetadataNotJson,
    RecordingError,
    RecordingExists,
    RecordingMeta,
    RecordingMismatch,
    TruncatedRecording,
    UnknownDatatype,
    decode_samples,
    encode_samples,
    from_sigmf,
    to_sigmf,
)
from linkstack.radio.sigmf_files import (
    read_raw_iq,
    read_recording,
    write_raw_iq,
    write_recording,
)

#: Largest error a round trip may make: half a quantization step.
STEP = {
    Datatype.CF32_LE: 1e-7,
    Datatype.CI16_LE: 0.5 / 32767 + 1e-7,
    Datatype.CI8: 0.5 / 127 + 1e-7,
    Datatype.CU8: 0.5 / 127.5 + 1e-7,
}


def signal(n: int = 1000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n) + 1j * rng.uniform(-1, 1, n)
    return x.astype(np.complex64)


def meta_for(datatype: Datatype = Datatype.CF32_LE) -> RecordingMeta:
    return RecordingMeta(
        sample_rate=250_000.0,
        datatype=datatype,
        center_frequency=2_245_000_000.0,
        description="pass over the ground station",
        datetime="2025-03-01T12:00:00.000Z",
        extensions={"scid": 42, "modulation": "bpsk", "coded": True},
    )


NOTES = (
    CaduAnnotation(sample_start=10, sample_count=100, comment="rx", vcid=0, vc_count=7, snr_db=6.5),
    CaduAnnotation(sample_start=300, sample_count=100, label="CADU", vcid=7, vc_count=255),
    CaduAnnotation(sample_start=500, sample_count=None, label="marker"),
)


# --- sans-I/O: datatypes ----------------------------------------------------------


@pytest.mark.parametrize("datatype", list(Datatype))
def test_encode_decode_round_trip_within_quantization(datatype: Datatype) -> None:
    x = signal()
    encoded = encode_samples(x, datatype)
    assert len(encoded.data) == x.size * datatype.sample_size
    assert (encoded.non_finite, encoded.clipped) == (0, 0)
    y = decode_samples(encoded.data, datatype)
    assert y.dtype == np.complex64
    assert np.max(np.abs(y.real - x.real)) <= STEP[datatype]
    assert np.max(np.abs(y.imag - x.imag)) <= STEP[datatype]


@pytest.mark.parametrize(
    ("datatype", "raw", "value"),
    [
        # Provenance: the full scales this module documents (ci16 32767, ci8 127,
        # cu8 offset and scale 127.5), worked by hand.
        (Datatype.CI16_LE, np.array([32767, -32767], "<i2").tobytes(), 1 - 1j),
        (Datatype.CI8, np.array([127, -127], "i1").tobytes(), 1 - 1j),
        (Datatype.CU8, bytes([255, 0]), 1 - 1j),
        (Datatype.CF32_LE, np.array([0.5, -0.25], "<f4").tobytes(), 0.5 - 0.25j),
    ],
)
def test_full_scale_codes(datatype: Datatype, raw: bytes, value: complex) -> None:
    assert decode_samples(raw, datatype)[0] == np.complex64(value)
    assert encode_samples(np.array([value]), datatype).data == raw


@pytest.mark.parametrize("datatype", list(Datatype))
def test_nan_written_as_zero_and_counted(datatype: Datatype) -> None:
    x = np.array([0.5, complex(np.nan, 0.2), complex(0.1, np.inf), 2 + 0j, -0.5j])
    encoded = encode_samples(x, datatype)
    y = decode_samples(encoded.data, datatype)
    assert encoded.non_finite == 2
    assert abs(y[1]) <= 2 * STEP[datatype] and abs(y[2]) <= 2 * STEP[datatype]  # cu8 has no 0
    if datatype is Datatype.CF32_LE:
        assert encoded.clipped == 0 and y[3] == 2
    else:
        assert encoded.clipped == 1 and abs(y[3] - 1) <= STEP[datatype]


def test_decode_refuses_partial_samples() -> None:
    with pytest.raises(RecordingError, match="not whole ci16_le samples"):
        decode_samples(b"\x00" * 5, Datatype.CI16_LE)


def test_encode_refuses_2d() -> None:
    with pytest.raises(RecordingError, match="1-D") as info:
        encode_samples(np.zeros((2, 2)), Datatype.CU8)
    assert info.value.field == "samples"


@pytest.mark.parametrize("name", ["ri16_le", "cf64_le", "ci16_be", "", 7])
def test_unknown_datatype(name: object) -> None:
    with pytest.raises(UnknownDatatype, match="core:datatype") as info:
        RecordingMeta(sample_rate=1.0, datatype=name)  # type: ignore[arg-type]
    assert isinstance(info.value, LinkError)


# --- sans-I/O: metadata and annotations ----------------------------------------------


def test_metadata_document_round_trip() -> None:
    meta = meta_for()
    document = to_sigmf(meta, NOTES)
    assert document["global"]["linkstack:scid"] == 42  # type: ignore[index]
    assert from_sigmf(json.loads(json.dumps(document))) == (meta, NOTES)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_rate": 0.0}, "core:sample_rate"),
        ({"sample_rate": float("nan")}, "core:sample_rate"),
        ({"sample_rate": "fast"}, "core:sample_rate"),
        ({"center_frequency": float("inf")}, "core:frequency"),
        ({"extensions": {"Bad-Name": 1}}, "linkstack:Bad-Name"),
        ({"extensions": {"ok": [1]}}, "linkstack:ok"),
    ],
)
def test_meta_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"sample_rate": 1e6, "datatype": "cu8"}
    with pytest.raises(MetadataError) as info:
        RecordingMeta(**(base | kwargs))  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_start": -1}, "core:sample_start"),
        ({"sample_count": 1.5}, "core:sample_count"),
        ({"vcid": 8}, "linkstack:vcid"),
        ({"vc_count": 256}, "linkstack:vc_count"),
        ({"vc_count": True}, "linkstack:vc_count"),
        ({"snr_db": float("nan")}, "linkstack:snr_db"),
        ({"label": 3}, "core:label"),
    ],
)
def test_annotation_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"sample_start": 0, "sample_count": 10}
    with pytest.raises(MetadataError) as info:
        CaduAnnotation(**(base | kwargs))  # type: ignore[arg-type]
    assert info.value.field == field


def test_missing_sample_rate() -> None:
    document = to_sigmf(meta_for())
    del document["global"]["core:sample_rate"]  # type: ignore[attr-defined]
    with pytest.raises(MetadataError, match="sample rate") as info:
        from_sigmf(document)
    assert info.value.field == "core:sample_rate"


def test_bad_annotation_in_document_names_its_index() -> None:
    document = to_sigmf(meta_for(), NOTES)
    document["annotations"][1]["linkstack:vcid"] = 9  # type: ignore[index]
    with pytest.raises(MetadataError) as info:
        from_sigmf(document)
    assert info.value.field == "annotations[1].linkstack:vcid"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"core:num_channels": 2}, "core:num_channels"),
        ({"core:dataset": "x.bin"}, "core:dataset"),
    ],
)
def test_unsupported_layouts(patch: dict[str, object], field: str) -> None:
    document = to_sigmf(meta_for())
    document["global"].update(patch)  # type: ignore[attr-defined]
    with pytest.raises(MetadataError) as info:
        from_sigmf(document)
    assert info.value.field == field


def test_metadata_not_an_object() -> None:
    with pytest.raises(MetadataError, match="JSON object"):
        from_sigmf([1, 2])


# --- files ----------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(Datatype))
def test_file_round_trip_every_datatype(tmp_path: Path, datatype: Datatype) -> None:
    x = signal(4096)
    written = write_recording(tmp_path / "pass", x, meta_for(datatype), NOTES)
    assert written.sample_count == 4096
    assert written.meta_path == tmp_path / "pass.sigmf-meta"
    assert written.data_path.stat().st_size == 4096 * datatype.sample_size
    rec = read_recording(tmp_path / "pass")
    assert rec.meta == meta_for(datatype)
    assert rec.annotations == NOTES
    assert rec.sample_count == 4096 and rec.problems == ()
    assert rec.duration_s == pytest.approx(4096 / 250_000)
    y = rec.read_samples()
    assert np.max(np.abs(y - x)) <= STEP[datatype] * 1.5


@pytest.mark.parametrize("suffix", ["", ".sigmf-meta", ".sigmf-data"])
def test_read_accepts_meta_data_or_base(tmp_path: Path, suffix: str) -> None:
    write_recording(tmp_path / "p.2025", signal(10), meta_for())
    rec = read_recording(str(tmp_path / "p.2025") + suffix)
    assert rec.data_path == tmp_path / "p.2025.sigmf-data"


@pytest.mark.parametrize("datatype", list(Datatype))
def test_sigmf_package_reads_what_we_write(tmp_path: Path, datatype: Datatype) -> None:
    x = signal(777)
    write_recording(tmp_path / "rec", x, meta_for(datatype), NOTES)
    encoded = decode_samples(encode_samples(x, datatype).data, datatype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not an integer number of samples" etc.
        handle = sigmffile.fromfile(str(tmp_path / "rec.sigmf-meta"), autoscale=False)
    handle.validate()
    assert handle.get_global_field("core:datatype") == datatype.value
    assert handle.get_global_field("core:sample_rate") == 250_000.0
    assert handle.get_global_field("core:description") == "pass over the ground station"
    assert handle.get_global_field("linkstack:scid") == 42
    assert handle.get_captures()[0]["core:frequency"] == 2_245_000_000.0
    assert handle.get_global_field("core:sha512")
    notes = handle.get_annotations()
    assert [(n["core:sample_start"], n.get("core:sample_count")) for n in notes] == [
        (10, 100),
        (300, 100),
        (500, None),
    ]
    assert notes[0]["linkstack:snr_db"] == 6.5 and notes[1]["linkstack:vc_count"] == 255
    assert handle.sample_count == 777
    raw = handle.read_samples()  # the integer codes, unscaled: compare with our scaling
    _, scale, offset = {
        Datatype.CF32_LE: (0, 1.0, 0.0),
        Datatype.CI16_LE: (0, 32767.0, 0.0),
        Datatype.CI8: (0, 127.0, 0.0),
        Datatype.CU8: (0, 127.5, 127.5),
    }[datatype]
    theirs = (raw.real - offset) / scale + 1j * (raw.imag - offset) / scale
    np.testing.assert_allclose(theirs, encoded, atol=1e-6)


def test_chunked_reading_equals_whole(tmp_path: Path) -> None:
    x = signal(10_001)
    write_recording(tmp_path / "r", x, meta_for(Datatype.CI16_LE))
    rec = read_recording(tmp_path / "r.sigmf-data")
    whole = rec.read_samples()
    for chunk in (1, 7, 4096, 10_001, 1 << 20):
        parts = list(rec.iter_samples(chunk))
        assert all(len(p) <= chunk for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(rec.read_samples(100, 50), whole[100:150])
    window = np.concatenate(list(rec.iter_samples(16, start=9_990)))
    np.testing.assert_array_equal(window, whole[9_990:])


def test_write_streams_chunks(tmp_path: Path) -> None:
    x = signal(3000)
    chunks = (x[i : i + 512] for i in range(0, 3000, 512))
    written = write_recording(tmp_path / "s", chunks, meta_for(), NOTES)
    assert written.sample_count == 3000
    np.testing.assert_array_equal(read_recording(tmp_path / "s").read_samples(), x)


def test_read_window_misuse(tmp_path: Path) -> None:
    write_recording(tmp_path / "r", signal(10), meta_for())
    rec = read_recording(tmp_path / "r")
    with pytest.raises(LocalProtocolError, match="beyond"):
        rec.read_samples(5, 6)
    with pytest.raises(LocalProtocolError, match="chunk"):
        next(rec.iter_samples(0))
    with pytest.raises(LocalProtocolError, match="start"):
        rec.read_samples(-1)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    write_recording(tmp_path / "r", signal(10), meta_for())
    before = (tmp_path / "r.sigmf-data").read_bytes()
    with pytest.raises(RecordingExists, match="force"):
        write_recording(tmp_path / "r", signal(20), meta_for())
    assert (tmp_path / "r.sigmf-data").read_bytes() == before
    written = write_recording(tmp_path / "r", signal(20), meta_for(), force=True)
    assert written.sample_count == read_recording(tmp_path / "r").sample_count == 20


def test_nan_samples_on_write_are_zero_and_counted(tmp_path: Path) -> None:
    x = signal(10)
    x[3] = np.nan
    written = write_recording(tmp_path / "n", x, meta_for(Datatype.CI8))
    assert written.non_finite == 1
    assert read_recording(tmp_path / "n").read_samples()[3] == 0


def test_nan_samples_in_a_cf32_file_are_read_as_given(tmp_path: Path) -> None:
    write_recording(tmp_path / "n", signal(10), meta_for())
    data = tmp_path / "n.sigmf-data"
    samples = np.fromfile(data, "<c8")
    samples[4] = complex(np.nan, np.nan)
    samples.tofile(data)
    meta_file = tmp_path / "n.sigmf-meta"
    document = json.loads(meta_file.read_text())
    del document["global"]["core:sha512"]  # we changed the data
    meta_file.write_text(json.dumps(document))
    y = read_recording(tmp_path / "n").read_samples()
    assert np.isnan(y[4]) and np.isfinite(y[5])


def test_raw_iq_round_trip(tmp_path: Path) -> None:
    x = signal(5000)
    written = write_raw_iq(tmp_path / "pass.cu8", x, "cu8")
    assert written.meta_path is None and not (tmp_path / "pass.cu8.sigmf-meta").exists()
    rec = read_raw_iq(tmp_path / "pass.cu8", samp_rate=2.048e6, datatype="cu8")
    assert rec.meta.sample_rate == 2.048e6 and rec.annotations == ()
    y = np.concatenate(list(rec.iter_samples(1000)))
    assert np.max(np.abs(y - x)) <= STEP[Datatype.CU8] * 1.5
    with pytest.raises(RecordingExists):
        write_raw_iq(tmp_path / "pass.cu8", x, "cu8")
    with pytest.raises(UnknownDatatype):
        read_raw_iq(tmp_path / "pass.cu8", samp_rate=1e6, datatype="sc16")
    with pytest.raises(MetadataError, match="core:sample_rate"):
        read_raw_iq(tmp_path / "pass.cu8", samp_rate=0, datatype="cu8")


# --- bad input --------------------------------------------------------------------


def test_truncated_data_file_reads_whole_samples_and_reports_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = signal(100)
    write_recording(tmp_path / "t", x, meta_for(Datatype.CI16_LE))
    data = tmp_path / "t.sigmf-data"
    data.write_bytes(data.read_bytes()[:-3])  # a partial last sample (4-octet samples)
    meta_file = tmp_path / "t.sigmf-meta"
    document = json.loads(meta_file.read_text())
    del document["global"]["core:sha512"]
    meta_file.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        rec = read_recording(tmp_path / "t")
    assert rec.sample_count == 99
    [problem] = rec.problems
    assert isinstance(problem, TruncatedRecording)
    assert (problem.whole_samples, problem.cut_bytes) == (99, 1)
    assert "partial sample" in caplog.text
    y = rec.read_samples()
    assert len(y) == 99 and np.max(np.abs(y - x[:99])) <= STEP[Datatype.CI16_LE] * 1.5
    with pytest.raises(TruncatedRecording, match="1 are a partial sample"):
        read_recording(tmp_path / "t", strict=True)


def test_datatype_contradicting_file_length(tmp_path: Path) -> None:
    (tmp_path / "c.sigmf-data").write_bytes(bytes(10))  # 10 octets: not whole cf32 samples
    meta = RecordingMeta(sample_rate=1e6, datatype=Datatype.CF32_LE)
    document = to_sigmf(meta)
    document["global"]["core:version"] = "1.2.0"  # type: ignore[index]
    (tmp_path / "c.sigmf-meta").write_text(json.dumps(document))
    rec = read_recording(tmp_path / "c")
    assert rec.sample_count == 1
    assert "core:datatype contradicts the data" in str(rec.problems[0])


@pytest.mark.parametrize("octets", [0, 5])
def test_empty_recording(tmp_path: Path, octets: int) -> None:
    write_recording(tmp_path / "e", signal(4), meta_for())
    (tmp_path / "e.sigmf-data").write_bytes(bytes(octets))
    with pytest.raises(EmptyRecording, match="no samples"):
        read_recording(tmp_path / "e")


def test_writing_an_empty_recording_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(EmptyRecording, match="at least one"):
        write_recording(tmp_path / "e", np.zeros(0, np.complex64), meta_for())
    assert list(tmp_path.iterdir()) == []


def test_annotation_beyond_the_end(tmp_path: Path) -> None:
    write_recording(tmp_path / "a", signal(1000), meta_for(), NOTES)
    data = tmp_path / "a.sigmf-data"
    data.write_bytes(data.read_bytes()[: 350 * 8])  # ends inside annotation 1 (300..400)
    meta_file = tmp_path / "a.sigmf-meta"
    document = json.loads(meta_file.read_text())
    del document["global"]["core:sha512"]
    meta_file.write_text(json.dumps(document))
    with pytest.raises(RecordingMismatch, match="beyond the data's 350 samples") as info:
        read_recording(tmp_path / "a")
    assert info.value.field == "annotations[1]"


def test_writing_annotations_beyond_the_end_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingMismatch):
        write_recording(tmp_path / "a", signal(100), meta_for(), NOTES)
    assert list(tmp_path.iterdir()) == []


def test_unknown_datatype_in_file(tmp_path: Path) -> None:
    write_recording(tmp_path / "u", signal(4), meta_for())
    meta_file = tmp_path / "u.sigmf-meta"
    document = json.loads(meta_file.read_text())
    document["global"]["core:datatype"] = "rf32_le"
    meta_file.write_text(json.dumps(document))
    with pytest.raises(UnknownDatatype, match="'rf32_le' is not a datatype"):
        read_recording(tmp_path / "u")


def test_missing_sample_rate_in_file(tmp_path: Path) -> None:
    write_recording(tmp_path / "m", signal(4), meta_for())
    meta_file = tmp_path / "m.sigmf-meta"
    document = json.loads(meta_file.read_text())
    del document["global"]["core:sample_rate"]
    meta_file.write_text(json.dumps(document))
    with pytest.raises(MetadataError, match="core:sample_rate: missing"):
        read_recording(tmp_path / "m")


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00"])
def test_meta_file_not_json(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "j.sigmf-meta").write_bytes(content)
    (tmp_path / "j.sigmf-data").write_bytes(bytes(8))
    with pytest.raises(MetadataNotJson, match="not") as info:
        read_recording(tmp_path / "j")
    assert info.value.field == "j.sigmf-meta"


def test_schema_violation_names_the_field(tmp_path: Path) -> None:
    write_recording(tmp_path / "s", signal(4), meta_for())
    meta_file = tmp_path / "s.sigmf-meta"
    document = json.loads(meta_file.read_text())
    document["global"]["core:author"] = 5  # the schema wants a string; linkstack ignores it
    meta_file.write_text(json.dumps(document))
    with pytest.raises(MetadataError, match="SigMF schema") as info:
        read_recording(tmp_path / "s")
    assert info.value.field == "global.core:author"


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="read_raw_iq"):
        read_recording(tmp_path / "nothing")
    write_recording(tmp_path / "d", signal(4), meta_for())
    (tmp_path / "d.sigmf-data").unlink()
    with pytest.raises(RecordingError, match="no such data file"):
        read_recording(tmp_path / "d")
