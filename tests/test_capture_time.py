"""Timestamps in Unix time from a :class:`TimeReference`, read back as seconds since the
start; older captures (no reference) read exactly as before; interface descriptions
true for the side that recorded."""

from __future__ import annotations

import datetime
import io
import json
import struct
from fractions import Fraction
from pathlib import Path

import pytest

from linkstack.capture import (
    TIME_REFERENCE_KEY,
    CaptureError,
    CaptureWriter,
    TimeReference,
    interface_descriptions,
    read_capture,
    session_metadata,
    summarize,
)
from linkstack.endpoints import LinkConfig
from linkstack.errors import LocalProtocolError
from tests.test_capture import dpkt_blocks

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
#: 2025-06-15T14:40:00.123456789Z, as ``date -u -d @1750000000.123456789`` prints it.
UNIX_NS = 1_750_000_000_123_456_789
#: A loop clock some hours after boot, not a whole number of nanoseconds.
CLOCK_S = 12_345.678_901_234_5
STEP = 0.001953125  # 2**-9 s


def written(reference: TimeReference | None, times: list[float], **metadata: object) -> bytes:
    stream = io.BytesIO()
    writer = CaptureWriter(stream, metadata, time_reference=reference)
    for t in times:
        writer.record_uplink(b"\xeb\x90", t)
    return stream.getvalue()


def epb_ns(data: bytes) -> list[int]:
    """Each Enhanced Packet Block's timestamp, read by dpkt."""
    return [(b.ts_high << 32) | b.ts_low for b in dpkt_blocks(data)[4:]]


def test_times_are_unix_time_in_the_file_and_since_the_start_when_read() -> None:
    reference = TimeReference(unix_ns=UNIX_NS, clock_s=CLOCK_S)
    times = [CLOCK_S + k * STEP for k in range(5)] + [CLOCK_S + 3600.25]
    data = written(reference, times, side="ground")
    offsets = [round((Fraction(t) - Fraction(CLOCK_S)) * 10**9) for t in times]
    assert epb_ns(data) == [UNIX_NS + n for n in offsets]
    capture = read_capture(io.BytesIO(data))
    assert [u.t for u in capture.units] == [n / 10**9 for n in offsets]
    assert capture.units[0].t == 0.0
    assert capture.units[-1].t == 3600.25
    assert capture.time_reference == reference


def test_the_metadata_holds_the_reference() -> None:
    reference = TimeReference(unix_ns=UNIX_NS, clock_s=CLOCK_S)
    capture = read_capture(io.BytesIO(written(reference, [CLOCK_S], seed=1)))
    assert capture.metadata[TIME_REFERENCE_KEY] == {
        "unix_ns": UNIX_NS,
        "unix_s": 1_750_000_000.123_456_789,
        "utc": "2025-06-15T15:06:40.123456789Z",
        "clock_s": CLOCK_S,
    }
    assert capture.metadata["seed"] == 1
    moment = datetime.datetime.fromisoformat(reference.utc.replace("Z", "+00:00")[:26] + "+00:00")
    assert moment.timestamp() == pytest.approx(UNIX_NS / 10**9, abs=1e-6)
    summary = summarize(capture)
    assert summary.time_reference == reference
    assert summary.to_json()["started_utc"] == "2025-06-15T15:06:40.123456789Z"


def test_a_time_before_the_reference_counts_back_from_it() -> None:
    reference = TimeReference(unix_ns=UNIX_NS, clock_s=CLOCK_S)
    capture = read_capture(io.BytesIO(written(reference, [CLOCK_S - 0.5])))
    assert capture.units[0].t == -0.5


def test_without_a_reference_times_are_stored_as_given() -> None:
    data = written(None, [1.5, 2.0])
    assert epb_ns(data) == [1_500_000_000, 2_000_000_000]
    capture = read_capture(io.BytesIO(data))
    assert capture.time_reference is None
    assert TIME_REFERENCE_KEY not in capture.metadata
    assert [u.t for u in capture.units] == [1.5, 2.0]


def test_a_capture_without_a_reference_reads_its_times_as_before() -> None:
    """A capture written before the time reference (linkstack 0.1.0 as released, kept in
    tests/data): ``t`` is the recorded nanoseconds, unchanged."""
    data = (Path(__file__).parent / "data" / "v1-s-band-clean.pcapng").read_bytes()
    capture = read_capture(io.BytesIO(data))
    assert capture.time_reference is None and capture.truncated is None
    assert [u.t for u in capture.units] == [ns / 10**9 for ns in epb_ns(data)]


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.glob("*.pcapng")))
def test_the_committed_captures_carry_their_recording_time(name: str) -> None:
    """captures/record.py pins the wall-clock start: Unix time there, session time back."""
    from captures.record import RECORDED_AT_NS

    data = (CAPTURES / name).read_bytes()
    capture = read_capture(io.BytesIO(data))
    reference = capture.time_reference
    assert reference is not None and capture.truncated is None
    assert reference.unix_ns == RECORDED_AT_NS
    assert reference.utc.startswith("2025-12-01T00:00:00")
    times = [u.t for u in capture.units]
    assert times == sorted(times)
    for t, ns in zip(times, epb_ns(data), strict=True):
        assert ns == RECORDED_AT_NS + round((t - reference.clock_s) * 10**9)


def test_the_writer_refuses_a_reference_in_the_metadata_and_bad_references() -> None:
    stream = io.BytesIO()
    with pytest.raises(LocalProtocolError, match="'time_reference' is the writer's own"):
        CaptureWriter(stream, {TIME_REFERENCE_KEY: {"unix_ns": 1}})
    assert stream.getvalue() == b""
    with pytest.raises(LocalProtocolError, match="is not a TimeReference"):
        CaptureWriter(stream, {}, time_reference=UNIX_NS)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="unix_ns -1 outside"):
        TimeReference(unix_ns=-1)
    with pytest.raises(LocalProtocolError, match=r"unix_ns 1\.5 is not an integer"):
        TimeReference(unix_ns=1.5)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="unix_ns True is not an integer"):
        TimeReference(unix_ns=True)
    with pytest.raises(LocalProtocolError, match="clock_s nan is not a finite"):
        TimeReference(unix_ns=0, clock_s=float("nan"))
    writer = CaptureWriter(io.BytesIO(), {}, time_reference=TimeReference(unix_ns=10, clock_s=5.0))
    with pytest.raises(LocalProtocolError, match="outside 0"):
        writer.record_uplink(b"\xeb\x90", 4.0)  # 1 s before a start 10 ns after 1970
    assert writer.units_written == 0


@pytest.mark.parametrize(
    "entry",
    [
        {"unix_ns": "1750000000000000000"},
        {"unix_ns": -1},
        {"unix_ns": True},
        {"unix_ns": 1.5e18},
        {"unix_s": 1.75e9},
        {"unix_ns": UNIX_NS, "clock_s": "5"},
        [UNIX_NS],
        "2025-06-15T15:06:40Z",
    ],
    ids=["string", "negative", "bool", "float", "missing", "clock-string", "list", "text"],
)
def test_a_reference_that_does_not_parse_is_a_capture_error(
    entry: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TimeReference, "to_json", lambda self: entry)
    data = written(TimeReference(unix_ns=UNIX_NS, clock_s=5.0), [5.0])
    with pytest.raises(CaptureError, match="time_reference in the metadata does not parse"):
        read_capture(io.BytesIO(data))


def idb_descriptions(data: bytes) -> list[str]:
    return [
        next(o.data for o in b.opts if o.code == 3).decode()  # if_description (draft 4.2)
        for b in dpkt_blocks(data)[1:4]
    ]


@pytest.mark.parametrize(
    ("side", "words"),
    [
        ("ground", ["as sent by the ground", "as received by the ground", "by the ground"]),
        (
            "spacecraft",
            ["as received by the spacecraft", "as sent by the spacecraft", "by the spacecraft"],
        ),
        (None, ["Uplink CLTUs (CCSDS 231.0-B-4)", "Downlink CADUs (CCSDS 131.0-B-5)", "UDP"]),
    ],
)
def test_interface_descriptions_say_which_side_recorded(side: str | None, words: list[str]) -> None:
    metadata = (
        session_metadata(LinkConfig())
        if side is None
        else session_metadata(LinkConfig(), side=side)
    )
    stream = io.BytesIO()
    CaptureWriter(stream, metadata)
    descriptions = idb_descriptions(stream.getvalue())
    assert descriptions == list(interface_descriptions(side).values())
    for description, word in zip(descriptions, words, strict=True):
        assert word in description
    assert read_capture(io.BytesIO(stream.getvalue())).metadata.get("side") == side


def test_descriptions_name_no_other_side() -> None:
    ground = " ".join(interface_descriptions("ground").values())
    spacecraft = " ".join(interface_descriptions("spacecraft").values())
    assert "spacecraft" not in ground.replace("spacecraft 198.51.100.1", "")
    assert "by the ground" not in spacecraft
    assert interface_descriptions("moon") == interface_descriptions(None)


def test_struct_of_the_timestamp_fields() -> None:
    """The 64-bit timestamp is split high/low as the draft's 4.3 says: a check against
    the raw octets, not dpkt."""
    data = written(TimeReference(unix_ns=UNIX_NS, clock_s=0.0), [0.0])
    epb = len(data) - 4 - struct.unpack_from("<I", data, len(data) - 4)[0] + 4
    high, low = struct.unpack_from("<II", data, epb + 12)
    assert (high << 32) | low == UNIX_NS
    json.loads(json.dumps(read_capture(io.BytesIO(data)).metadata))
