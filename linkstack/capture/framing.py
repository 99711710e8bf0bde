"""Cutting a pcapng file into whole blocks, and the cut tail a crash leaves.

Every pcapng block (draft-ietf-opsawg-pcapng 3.1) is its Block Type, its Block Total
Length, a body, and the Block Total Length again, a multiple of 4 octets in all.
:class:`BlockFramer` reads a capture block by block and checks each block's lengths
before python-pcapng parses it; :class:`BlockStream` hands python-pcapng those whole
blocks as the stream it reads.

Crashes: the writer puts each block on the stream in one ``write`` followed by a
``flush``, so a recorder killed mid-session (``kill -9``) leaves every block it wrote
whole but the one being written.  The framer reads such a file up to its last whole
block and says what it dropped (:class:`TruncatedTail`): the start of a block the file
ends inside (a Section Header, Interface Description or Enhanced Packet Block, draft
4.1 to 4.3, whose own lengths do not contradict the cut), or a zero-filled tail (what
a file system may leave after a power loss).  Any other damage, in the middle of the
file or at its end, is a :class:`~linkstack.capture.CaptureError` at the offset of the
block at fault.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, Final

from linkstack.capture.errors import CaptureError

__all__ = [
    "MAX_BLOCK_OCTETS",
    "PCAPNG_MAGIC",
    "BlockFramer",
    "BlockStream",
    "TailReason",
    "TruncatedTail",
]

#: Largest block this reader accepts; a CADU is at most 4 + 255*8 octets and a
#: datagram at most 65535, so anything near this is a corrupted length.
MAX_BLOCK_OCTETS: Final = 1 << 20

PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"  # Section Header Block type (draft 4.1)
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D  # Section Header Block, after its length (draft 4.1)
_BLOCK_IDB: Final = 0x00000001  # Interface Description Block type (draft 4.2)
_BLOCK_EPB: Final = 0x00000006  # Enhanced Packet Block type (draft 4.3)
#: Block Type, Block Total Length, ..., Block Total Length again (draft 3.1): the
#: smallest block is these three 32-bit fields.
_BLOCK_HEADER_OCTETS: Final = 8
_BLOCK_TRAILER_OCTETS: Final = 4
_MIN_BLOCK_OCTETS: Final = _BLOCK_HEADER_OCTETS + _BLOCK_TRAILER_OCTETS
_BLOCK_ALIGN: Final = 4  # Block Total Length is a multiple of 4 (draft 3.1)
#: Enhanced Packet Block (draft 4.3): type, length, Interface ID, Timestamp (Upper),
#: Timestamp (Lower), Captured Packet Length, Original Packet Length, then the packet
#: data padded to 32 bits, the options, and the trailing length.
_EPB_CAPTURED_LENGTH_AT: Final = 20
_EPB_FIXED_OCTETS: Final = 28
#: Option Code and Option Length, 16 bits each, then the value padded to 32 bits; code
#: 0, opt_endofopt, ends the list (draft 3.5).
_OPTION_HEADER_OCTETS: Final = 4
_OPT_ENDOFOPT: Final = 0
#: What a zero-filled tail is checked in: read this many octets at a time.
_TAIL_CHUNK_OCTETS: Final = 1 << 16


class TailReason(StrEnum):
    """What the octets after a capture's last whole block are."""

    CUT_BLOCK = "cut-block"  # the start of a block the file ends inside
    ZERO_FILL = "zero-fill"  # zeros, as a file system may leave after a power loss


@dataclass(frozen=True, slots=True)
class TruncatedTail:
    """The end of a capture that holds no whole block: a recording cut short (a crash,
    ``kill -9``, a full disk).  The units before it were read; these octets were not."""

    #: File offset where the last whole block ends: the first octet not read.
    offset: int
    #: Octets from there to the end of the file.
    octets: int
    reason: TailReason

    def __str__(self) -> str:
        what = {
            TailReason.CUT_BLOCK: "the start of a block the file ends inside",
            TailReason.ZERO_FILL: "zeros",
        }[self.reason]
        return (
            f"tail cut: the last {self.octets} octets, from file offset {self.offset}, are"
            f" {what} (a recording cut short); the units before them were read"
        )

    def to_json(self) -> dict[str, object]:
        return {"offset": self.offset, "octets": self.octets, "reason": self.reason.value}


def _trailing_zeros_start(data: bytes) -> int:
    """Where the run of zero octets that ends ``data`` begins (``len(data)`` if none)."""
    return len(data.rstrip(b"\x00"))


def _epb_end(prefix: bytes, order: str) -> int | None:
    """Where the Enhanced Packet Block that ``prefix`` begins ends, as its own fields
    (Captured Packet Length, the options up to opt_endofopt, draft 4.3 and 3.5) say;
    None when ``prefix`` ends before they say it.  An EPB without options ends after its
    packet data: that cannot be told from a prefix, so it also gives None."""
    if len(prefix) < _EPB_FIXED_OCTETS:
        return None
    (captured,) = struct.unpack_from(order + "I", prefix, _EPB_CAPTURED_LENGTH_AT)
    at = _EPB_FIXED_OCTETS + -(-captured // _BLOCK_ALIGN) * _BLOCK_ALIGN
    while at + _OPTION_HEADER_OCTETS <= len(prefix):
        code, length = struct.unpack_from(order + "HH", prefix, at)
        at += _OPTION_HEADER_OCTETS
        if code == _OPT_ENDOFOPT:
            return int(at) + _BLOCK_TRAILER_OCTETS
        at += -(-length // _BLOCK_ALIGN) * _BLOCK_ALIGN
    return None


class BlockFramer:
    """Cuts a capture into whole blocks (draft 3.1: type, total length, body, the total
    length again), checking each block's lengths before python-pcapng parses it.

    Where the file ends inside a block, or is zeros from inside a block to its end, the
    framer stops there and keeps what it dropped in :attr:`tail`; any other bad block
    is a :class:`CaptureError` at its offset.
    """

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream
        #: Octets read from the file so far: the offset of the next one.
        self.position = 0
        #: File offset of the block framed last.
        self.block_start = 0
        self._order: str | None = None  # struct byte order of the section
        self.tail: TruncatedTail | None = None

    def _read(self, size: int) -> bytes:
        data = self._head[self.position : self.position + size]
        while len(data) < size:  # a pipe or raw stream may return fewer octets
            more = self._stream.read(size - len(data))
            if not more:
                break
            data += more
        self.position += len(data)
        return data

    def next_block(self) -> bytes | None:
        """The next whole block, None at the end of the file or of its last whole block."""
        if self.tail is not None:
            return None
        start = self.block_start = self.position
        block = self._read(_BLOCK_HEADER_OCTETS)
        if not block:
            return None
        if len(block) < _BLOCK_HEADER_OCTETS:
            self._ends_inside(start, block, declared=None)
            return None
        if block[:4] == PCAPNG_MAGIC:
            if self._order is not None:
                raise CaptureError(
                    "a second section: concatenated captures are not supported", offset=start
                )
            block += self._read(4)
            if len(block) < _BLOCK_HEADER_OCTETS + 4:
                self._ends_inside(start, block, declared=None)
                return None
            orders = [
                o for o in "<>" if struct.unpack_from(o + "I", block, 8)[0] == _BYTE_ORDER_MAGIC
            ]
            if not orders:
                raise CaptureError(
                    f"corrupted section header: byte-order magic {block[8:12].hex()},"
                    f" not {_BYTE_ORDER_MAGIC:08x} in either byte order (draft 4.1)",
                    offset=start,
                )
            self._order = orders[0]
        elif self._order is None:  # pragma: no cover - the reader checked the SHB type
            raise CaptureError("no section header", offset=start)
        (length,) = struct.unpack_from(self._order + "I", block, 4)
        if not _MIN_BLOCK_OCTETS <= length <= MAX_BLOCK_OCTETS or length % _BLOCK_ALIGN:
            self._bad(
                start,
                block,
                f"corrupted block length: {length} octets (a block is {_MIN_BLOCK_OCTETS} to"
                f" {MAX_BLOCK_OCTETS} octets here, a multiple of {_BLOCK_ALIGN}; draft 3.1)",
            )
            return None
        block += self._read(length - len(block))
        if len(block) < length:
            self._ends_inside(start, block, declared=length)
            return None
        (trailer,) = struct.unpack_from(self._order + "I", block, length - _BLOCK_TRAILER_OCTETS)
        if trailer != length:
            self._bad(
                start,
                block,
                f"corrupted block: its trailing length {trailer} is not its leading"
                f" length {length} (draft 3.1)",
            )
            return None
        return block

    def _cut(self, start: int, octets: int, reason: TailReason) -> None:
        self.tail = TruncatedTail(offset=start, octets=octets, reason=reason)

    def _ends_inside(self, start: int, prefix: bytes, *, declared: int | None) -> None:
        """The file ends inside the block at ``start``: a cut tail if ``prefix`` can be
        the start of a block this format writes, else a CaptureError."""
        if not prefix.strip(b"\x00"):
            self._cut(start, len(prefix), TailReason.ZERO_FILL)
            return
        # The writer writes a Section Header, then Interface Descriptions, then
        # Enhanced Packet Blocks: a cut block is one of these.
        if start == 0 or self._order is None:
            types = [PCAPNG_MAGIC]
        else:
            types = [struct.pack(self._order + "I", kind) for kind in (_BLOCK_IDB, _BLOCK_EPB)]
        kind = prefix[:4]
        if not any(t.startswith(kind) for t in types):
            raise CaptureError(
                f"corrupted block: the file ends with {len(prefix)} octets that begin no"
                f" block of a linkstack capture (block type {kind.hex()})",
                offset=start,
            )
        epb = self._order is not None and start != 0 and kind == types[-1]
        if declared is not None and epb and self._order is not None:
            # An Enhanced Packet Block whose own fields end before the file does has a
            # corrupted length, not a cut: the blocks after it are in the file.  Zeros at
            # the end are left out: they may be a zero-filled end, not the block's own.
            whole = prefix[: _trailing_zeros_start(prefix)]
            end = _epb_end(whole, self._order)
            if end is not None and end != declared:
                raise CaptureError(
                    f"corrupted block length: {declared} octets, but its packet and options"
                    f" end at {end} (draft 4.3)",
                    offset=start,
                )
        self._cut(start, len(prefix), TailReason.CUT_BLOCK)

    def _bad(self, start: int, block: bytes, problem: str) -> None:
        """The block at ``start`` is bad: a cut tail if zeros run from inside it (its
        trailing length or earlier) to the end of the file, else a CaptureError."""
        zeros_from = _trailing_zeros_start(block)
        rest = 0
        if zeros_from <= len(block) - _BLOCK_TRAILER_OCTETS:
            while chunk := self._read(_TAIL_CHUNK_OCTETS):
                if chunk.strip(b"\x00"):
                    break
                rest += len(chunk)
            else:
                self._cut(start, len(block) + rest, TailReason.ZERO_FILL)
                return
        raise CaptureError(problem, offset=start)


class BlockStream:
    """The stream python-pcapng reads: the framer's whole blocks, one after another."""

    def __init__(self, framer: BlockFramer) -> None:
        self._framer = framer
        self._block = b""
        self._at = 0
        self._served = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:  # pragma: no cover - python-pcapng always reads a given size
            raise CaptureError("read of an unbounded size", offset=self._framer.block_start)
        data = b""
        while len(data) < size:
            if self._at == len(self._block):
                block = self._framer.next_block()
                if block is None:
                    break
                self._block, self._at = block, 0
            piece = self._block[self._at : self._at + size - len(data)]
            self._at += len(piece)
            data += piece
        self._served += len(data)
        return data

    def tell(self) -> int:
        """python-pcapng checks alignment with it."""
        return self._served
