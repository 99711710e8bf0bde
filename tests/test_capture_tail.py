"""Captures cut short: every cut of the last block and every cut of the file, zero-filled
ends, damage that is not a cut (still a CaptureError), and garbage of every kind."""

from __future__ import annotations

import io
import random
import struct

import pytest

from linkstack.capture import (
    CaptureError,
    CaptureWriter,
    TailReason,
    TruncatedTail,
    read_capture,
    summarize,
)
from linkstack.errors import LocalProtocolError
from tests.test_capture import Session, block_offsets, make_session, read_error

#: The page size a file system zero-fills in after a power loss.
PAGE = 4096
#: Blocks before the first unit: the Section Header and three Interface Descriptions.
HEADER_BLOCKS = 4


@pytest.fixture(scope="module")
def session() -> Session:
    return make_session()


def test_every_cut_of_the_last_block_reads_every_block_before_it(session: Session) -> None:
    data = session.data
    last = block_offsets(data)[-1]
    whole = read_capture(io.BytesIO(data[:last]))  # a cut at a block boundary: a whole file
    assert whole.truncated is None
    assert list(whole.units) == session.units[:-1]
    for cut in range(last + 1, len(data)):
        capture = read_capture(io.BytesIO(data[:cut]))
        assert list(capture.units) == session.units[:-1], cut
        assert capture.truncated == TruncatedTail(last, cut - last, TailReason.CUT_BLOCK), cut
        assert str(capture.truncated).startswith(f"tail cut: the last {cut - last} octets,")


def test_every_cut_of_the_last_block_then_zeros_to_the_page_end(session: Session) -> None:
    """What a power loss may leave: the file's length runs to a page end, zeros after
    what was written."""
    data = session.data
    last = block_offsets(data)[-1]
    for cut in range(last + 1, len(data)):
        padded = data[:cut] + bytes(-cut % PAGE or PAGE)
        capture = read_capture(io.BytesIO(padded))
        # Where the octets cut are zeros themselves (the high octets of the trailing
        # length), the zeros make the block whole again.
        restored = padded[: len(data)] == data
        assert list(capture.units) == session.units[: None if restored else -1], cut
        if restored:
            assert capture.truncated == TruncatedTail(
                len(data), len(padded) - len(data), TailReason.ZERO_FILL
            )
            continue
        tail = capture.truncated
        assert tail is not None
        assert (tail.offset, tail.octets) == (last, len(padded) - last), cut


def test_every_cut_of_the_file_reads_the_whole_blocks_or_names_the_header_cut(
    session: Session,
) -> None:
    data = session.data
    offsets = block_offsets(data)
    ends = [*offsets[1:], len(data)]
    first_unit = offsets[HEADER_BLOCKS]
    for cut in range(len(data) + 1):
        if cut < first_unit:
            if cut == 0:
                continue  # the empty file: "empty file", tested with the foreign files
            error = read_error(data[:cut])
            assert "truncated file" in str(error), cut
            assert error.offset == max(o for o in offsets if o <= cut), cut
            continue
        capture = read_capture(io.BytesIO(data[:cut]))
        whole = sum(1 for end in ends[HEADER_BLOCKS:] if end <= cut)
        assert list(capture.units) == session.units[:whole], cut
        if cut in offsets or cut == len(data):
            assert capture.truncated is None, cut
        else:
            start = max(o for o in offsets if o < cut)
            assert capture.truncated == TruncatedTail(start, cut - start, TailReason.CUT_BLOCK)


@pytest.mark.parametrize("zeros", [1, 4, 7, PAGE, 3 * PAGE + 5])
def test_a_zero_filled_end_after_whole_blocks(session: Session, zeros: int) -> None:
    capture = read_capture(io.BytesIO(session.data + bytes(zeros)))
    assert list(capture.units) == session.units
    assert capture.truncated == TruncatedTail(len(session.data), zeros, TailReason.ZERO_FILL)
    assert "are zeros (a recording cut short)" in str(capture.truncated)
    summary = summarize(capture)
    assert summary.truncated == capture.truncated
    assert summary.to_json()["truncated"] == {
        "offset": len(session.data),
        "octets": zeros,
        "reason": "zero-fill",
    }


def test_zeros_from_inside_the_last_block(session: Session) -> None:
    """The last block's start written, zeros from inside it (its length field, its data
    or its trailing length) to the end of the file."""
    data = session.data
    last = block_offsets(data)[-1]
    for start in (last + 4, last + 8, last + 40, len(data) - 4):
        damaged = data[:start] + bytes(len(data) - start + PAGE)
        capture = read_capture(io.BytesIO(damaged))
        assert list(capture.units) == session.units[:-1], start
        tail = capture.truncated
        assert tail is not None and (tail.offset, tail.octets) == (last, len(damaged) - last)


# -- the writer: whole blocks, each in one write, then a flush ------------------------------


class Spy(io.BytesIO):
    """A stream that logs its writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def write(self, data: object) -> int:
        self.calls.append(("write", len(data)))  # type: ignore[arg-type]
        return super().write(data)  # type: ignore[arg-type]

    def flush(self) -> None:
        self.calls.append(("flush", 0))
        super().flush()


class Sip(io.RawIOBase):
    """A raw stream that takes at most 7 octets per write, as a raw stream may."""

    def __init__(self, take: int | None = 7) -> None:
        self.data = bytearray()
        self._take = take

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int | None:
        if self._take is None:
            return None  # a non-blocking stream that would block
        piece = bytes(data)[: self._take]  # type: ignore[call-overload]
        self.data += piece
        return len(piece)


def test_each_block_goes_out_in_one_write_then_a_flush(session: Session) -> None:
    stream = Spy()
    writer = CaptureWriter(stream, session.metadata)
    offsets = block_offsets(session.data)
    assert stream.calls == [("write", offsets[HEADER_BLOCKS]), ("flush", 0)]
    stream.calls.clear()
    writer.record_downlink(b"\x1a\xcf\xfc\x1d" + bytes(20), 1.0)
    writer.record_uplink(b"\xeb\x90" + bytes(16), 2.0)
    (first, second) = block_offsets(stream.getvalue())[HEADER_BLOCKS:]
    assert stream.calls == [
        ("write", second - first),
        ("flush", 0),
        ("write", len(stream.getvalue()) - second),
        ("flush", 0),
    ]


def test_short_writes_of_a_raw_stream_are_completed(session: Session) -> None:
    sip = Sip()
    writer = CaptureWriter(sip, session.metadata)  # type: ignore[arg-type]
    writer.record_uplink(b"\xeb\x90" + bytes(16), 2.0)
    capture = read_capture(io.BytesIO(bytes(sip.data)))
    assert [u.data for u in capture.units] == [b"\xeb\x90" + bytes(16)]
    with pytest.raises(LocalProtocolError, match=r"took None of \d+ octets: a non-blocking stream"):
        CaptureWriter(Sip(take=None), {})  # type: ignore[arg-type]


# -- damage that is not a cut tail stays an error ------------------------------------------


def test_a_corrupted_trailing_length_is_an_error_anywhere(session: Session) -> None:
    data = session.data
    offsets = block_offsets(data)
    ends = [*offsets[1:], len(data)]
    for start, end in zip(offsets, ends, strict=True):
        damaged = bytearray(data)
        damaged[end - 4] ^= 0x40  # the last block too: a whole block, wrongly closed
        error = read_error(bytes(damaged))
        assert "trailing length" in str(error) or "corrupted" in str(error), start
        assert error.offset == start, start


def test_an_inflated_block_length_in_the_middle_is_an_error(session: Session) -> None:
    """A length that runs past the end of the file is not a cut when the block's own
    fields end before it: the blocks after it are still in the file."""
    data = session.data
    offsets = block_offsets(data)
    for start in offsets[HEADER_BLOCKS:-1]:
        damaged = bytearray(data)
        length = len(data) - start + 64
        damaged[start + 4 : start + 8] = struct.pack("<I", length)
        error = read_error(bytes(damaged))
        assert f"corrupted block length: {length} octets, but its packet and options" in str(error)
        assert error.offset == start


def test_a_shortened_block_length_in_the_middle_is_an_error(session: Session) -> None:
    data = session.data
    for start in block_offsets(data)[HEADER_BLOCKS:-1]:
        damaged = bytearray(data)
        (length,) = struct.unpack_from("<I", data, start + 4)
        damaged[start + 4 : start + 8] = struct.pack("<I", length - 8)
        error = read_error(bytes(damaged))
        assert "corrupted" in str(error) and error.offset == start


def test_zeros_in_the_middle_are_an_error(session: Session) -> None:
    data = session.data
    offsets = block_offsets(data)
    start = offsets[HEADER_BLOCKS + 1]
    damaged = data[:start] + bytes(64) + data[start + 64 :]
    error = read_error(damaged)
    assert "corrupted block length: 0 octets" in str(error)
    assert error.offset == start


def test_garbage_after_the_last_block_is_an_error(session: Session) -> None:
    for garbage in (b"\x00junk", b"\xff" * 3, b"\x06\x00\x00\x00\xff\xff\xff\xff" + bytes(20)):
        error = read_error(session.data + garbage)
        assert "corrupted" in str(error), garbage
        assert error.offset == len(session.data), garbage


def test_a_second_section_is_an_error(session: Session) -> None:
    error = read_error(session.data + session.data)
    assert "a second section" in str(error)
    assert error.offset == len(session.data)


# -- garbage ----------------------------------------------------------------------------------


def _outcome(data: bytes) -> str:
    try:
        capture = read_capture(io.BytesIO(data))
        summarize(capture)
    except CaptureError as exc:
        assert str(exc)
        return "error"
    return "cut" if capture.truncated is not None else "ok"


def test_random_files_parse_or_raise_capture_error() -> None:
    rng = random.Random(1)
    outcomes = []
    for _ in range(300):
        body = rng.randbytes(rng.randrange(0, 2000))
        outcomes.append(_outcome(b"\x0a\x0d\x0d\x0a" + body))  # our magic, then noise
        outcomes.append(_outcome(rng.randbytes(rng.randrange(1, 200))))
    assert set(outcomes) == {"error"}


def test_cut_and_damaged_captures_parse_or_raise_capture_error(session: Session) -> None:
    """Fuzz: cut anywhere, then flip octets, append noise or zeros; read_capture (and the
    summary) returns or raises CaptureError, never anything else."""
    rng = random.Random(2025)
    seen = set()
    for _ in range(600):
        data = bytearray(session.data[: rng.randrange(len(session.data) + 1)])
        for _ in range(rng.choice((0, 1, 3))):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        tail = rng.choice((b"", bytes(rng.randrange(1, 600)), rng.randbytes(rng.randrange(1, 40))))
        seen.add(_outcome(bytes(data) + tail))
    assert seen == {"cut", "error"} or seen == {"ok", "cut", "error"}
