"""CLTUs found in a bit stream: the start-sequence search at any bit offset and in
either polarity, for a TC uplink that arrives as demodulated bits.

:class:`~linkstack.coding.tc.CltuDecoder` reads an octet stream, as a TCP or UDP link
delivers it.  A demodulated uplink is bits: the first CLTU may start at any bit, and a
BPSK receiver locked at pi delivers every bit inverted.  :class:`CltuBitSynchronizer`
finds the start sequence (CCSDS 231.0-B-4 5.2.2, EB90) at every bit offset, upright
or complemented (the complemented start sequence 146F names an inverted stream), then
reads 64-bit codeblocks in that polarity and decides each with the book's BCH decoder
(:func:`~linkstack.coding.tc.decode_codeblock`, 231.0-B-4 3.5) until one is rejected
(event E4 of CCSDS 201.0-B-3 Table 3-2; the tail sequence of 231.0-B-4 5.2.4 is built
to be rejected), exactly where an octet decoder would stop.  Each CLTU is handed on as
octets, byte-aligned and upright: the start sequence as the book writes it, then the
codeblocks *as received* (not corrected) up to and including the one that ended it.
An octet :class:`~linkstack.coding.tc.CltuDecoder` downstream (the spacecraft
endpoint) then corrects, counts and delivers them as it does for any other link.

The BCH code cannot tell the polarity on its own terms once decoding has started: an
inverted codeblock has odd weight against the (x + 1) factor of g(x) and is always
rejected, so only the start sequence sets it, and each CLTU sets it afresh (a Costas
loop may slip by pi between CLTUs).

Between CLTUs a PLOP-2 uplink (CCSDS 201.0-B-3 4.3.3) sends the idle sequence,
alternating ones and zeros (4.2.3), after an acquisition sequence of the same pattern
(4.2.1); neither comes near the start sequence (Hamming distance 6 or more at every
offset, either polarity; 4 or more where either runs into a start sequence or out of a
tail sequence), so the search may tolerate ``start_sequence_errors`` = 1 there.

Engine surface: :meth:`~CltuBitSynchronizer.receive_bits` (0/1 octets, any chunking)
or :meth:`~CltuBitSynchronizer.receive_symbols` (soft symbols, positive = bit 1,
sliced at 0; NaN reads as 0), :meth:`~CltuBitSynchronizer.next_event`,
:meth:`~CltuBitSynchronizer.channel_deactivation` (E2: a CLTU in progress is handed
on as far as it got).  Bad input never raises; wrong types do
(:class:`~linkstack.errors.LocalProtocolError`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.coding.tc import (
    CODEBLOCK_OCTETS,
    MAX_CODEBLOCKS,
    START_SEQUENCE,
    TAIL_SEQUENCE,
    DecoderMode,
    decode_codeblock,
)
from linkstack.errors import LocalProtocolError, UncorrectableCodeword

logger = logging.getLogger(__name__)

__all__ = ["CltuBitStats", "CltuBitSynchronizer", "CltuFound"]

U8 = npt.NDArray[np.uint8]

#: The start sequence as bits, first transmitted bit first (CCSDS 231.0-B-4 5.2.2).
START_BITS: Final = np.unpackbits(np.frombuffer(START_SEQUENCE, np.uint8))
#: Bits per BCH codeblock (CCSDS 231.0-B-4 3.2).
CODEBLOCK_BITS: Final = 8 * CODEBLOCK_OCTETS
_TAIL_BITS: Final = np.unpackbits(np.frombuffer(TAIL_SEQUENCE, np.uint8))
#: Bits kept between searches: a start sequence cut by a chunk boundary is found.
_KEEP: Final = START_BITS.size - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CltuFound:
    """One CLTU as received, re-aligned to octets and upright."""

    #: Start sequence (as the book writes it), then the codeblocks as received up to and
    #: including the one that ended the CLTU (the tail, or a rejected codeblock).
    cltu: bytes
    #: Bit index (from the first bit received) of its start sequence's first bit.
    bit_offset: int
    #: The stream was complemented (the start sequence came as 146F).
    inverted: bool
    #: Bit errors in the start sequence.
    start_errors: int
    #: Codeblocks the BCH decoder accepted (the ending one not counted).
    codeblocks: int
    #: Decoding stopped at the tail sequence (received with at most 1 bit error);
    #: False: at a rejected codeblock, ``max_codeblocks`` or channel deactivation.
    ended_by_tail: bool


@dataclass(slots=True)
class CltuBitStats:
    """Counters of a :class:`CltuBitSynchronizer`."""

    #: Bits received.
    bits: int = 0
    #: CLTUs handed on (:class:`CltuFound` events).
    cltus: int = 0
    #: Of those, found in the complemented polarity.
    inverted: int = 0
    #: Codeblocks accepted.
    codeblocks: int = 0
    #: Start sequences followed by a rejected first codeblock (a false start, or noise).
    empty_starts: int = 0
    #: Bits passed over while searching for a start sequence.
    bits_skipped: int = 0


class CltuBitSynchronizer:
    """Bits in, re-aligned CLTU octets out (the receiving end of CCSDS 231.0-B-4 5.3
    for a bit stream of unknown offset and polarity).

    ``mode`` is the BCH decoding mode that decides where a CLTU ends, as the octet
    decoder downstream will decide it; ``start_sequence_errors`` (0 or 1) the bit
    errors the search tolerates in the start sequence; a CLTU longer than
    ``max_codeblocks`` codeblocks is cut there (the octet decoder abandons it).
    """

    __slots__ = (
        "_bits",
        "_codeblocks",
        "_events",
        "_found",
        "_origin",
        "max_codeblocks",
        "mode",
        "start_sequence_errors",
        "stats",
    )

    def __init__(
        self,
        *,
        mode: DecoderMode = DecoderMode.CORRECT,
        start_sequence_errors: int = 0,
        max_codeblocks: int = MAX_CODEBLOCKS,
    ) -> None:
        if start_sequence_errors not in (0, 1):
            raise LocalProtocolError(
                f"start_sequence_errors={start_sequence_errors!r}: the start sequence is"
                " searched with 0 or 1 bit error (CCSDS 231.0-B-4 5.3)"
            )
        if isinstance(max_codeblocks, bool) or not isinstance(max_codeblocks, int):
            raise LocalProtocolError(f"max_codeblocks={max_codeblocks!r} is not an integer")
        if max_codeblocks < 1:
            raise LocalProtocolError(f"max_codeblocks={max_codeblocks} must be at least 1")
        self.mode = mode
        self.start_sequence_errors = start_sequence_errors
        self.max_codeblocks = max_codeblocks
        self.stats = CltuBitStats()
        self._bits: U8 = np.zeros(0, np.uint8)
        self._origin = 0  # bit index of self._bits[0]
        # In DECODE: (bit offset, inverted, start errors) of the CLTU being read.
        self._found: tuple[int, bool, int] | None = None
        self._codeblocks: list[bytes] = []
        self._events: deque[CltuFound] = deque()

    # -- public surface -------------------------------------------------------------

    def receive_bits(self, bits: npt.ArrayLike) -> None:
        """Add hard bits (integers 0 or 1, or booleans; any chunking)."""
        array = np.asarray(bits)
        if array.ndim != 1 or not (
            array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
        ):
            raise LocalProtocolError(
                f"bits must be a 1-D array of 0/1 integers, got {array.dtype} of shape"
                f" {array.shape}"
            )
        if array.size and (int(array.min()) < 0 or int(array.max()) > 1):
            raise LocalProtocolError(
                f"bits must be 0 or 1, got values from {int(array.min())} to {int(array.max())}"
            )
        self._take(array.astype(np.uint8))

    def receive_symbols(self, soft: npt.ArrayLike) -> None:
        """Add soft BPSK symbols (real; positive = bit 1), sliced at zero."""
        array = np.asarray(soft)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
            raise LocalProtocolError(
                f"soft symbols must be a 1-D real float array, got {array.dtype} of shape"
                f" {array.shape}"
            )
        self._take((array > 0).astype(np.uint8))  # NaN > 0 is False: read as 0

    def channel_deactivation(self) -> None:
        """E2 (CCSDS 201.0-B-3 Table 3-2): the CLTU in progress is handed on as far as
        it got; the search starts afresh on the next bits."""
        if self._found is not None:
            if self._codeblocks:
                self._end(ended_by_tail=False, ending=b"")
            else:
                self.stats.empty_starts += 1
                self._found = None
        self.stats.bits_skipped += self._bits.size
        self._origin += self._bits.size
        self._bits = np.zeros(0, np.uint8)

    def next_event(self) -> CltuFound | None:
        """The oldest CLTU found, or None."""
        return self._events.popleft() if self._events else None

    # -- internals ------------------------------------------------------------------

    def _take(self, bits: U8) -> None:
        self.stats.bits += bits.size
        self._bits = np.concatenate((self._bits, bits)) if self._bits.size else bits
        pos = 0
        while True:
            if self._found is None:
                hit = self._search(pos)
                if hit is None:
                    end = max(pos, self._bits.size - _KEEP)
                    self.stats.bits_skipped += end - pos
                    pos = end
                    break
                at, inverted, errors = hit
                self.stats.bits_skipped += at - pos
                self._found = (self._origin + at, inverted, errors)
                self._codeblocks = []
                pos = at + START_BITS.size
                logger.debug("< start sequence at bit %d, inverted=%s", self._origin + at, inverted)
            else:
                if self._bits.size - pos < CODEBLOCK_BITS:
                    break
                pos = self._codeblock(pos)
        self._origin += pos
        self._bits = self._bits[pos:].copy()

    def _search(self, pos: int) -> tuple[int, bool, int] | None:
        """The first start sequence at or after ``pos``: (index, inverted, errors)."""
        bits = self._bits[pos:]
        if bits.size < START_BITS.size:
            return None
        windows = np.lib.stride_tricks.sliding_window_view(bits, START_BITS.size)
        distance = np.count_nonzero(windows != START_BITS, axis=1)
        upright = distance <= self.start_sequence_errors
        inverted = START_BITS.size - distance <= self.start_sequence_errors
        hits = np.flatnonzero(upright | inverted)
        if not hits.size:
            return None
        first = int(hits[0])
        flipped = bool(inverted[first])
        errors = int(distance[first])
        return pos + first, flipped, START_BITS.size - errors if flipped else errors

    def _codeblock(self, pos: int) -> int:
        """Decide the codeblock at ``pos``; the position after it."""
        assert self._found is not None  # only called in DECODE
        inverted = self._found[1]
        bits = self._bits[pos : pos + CODEBLOCK_BITS]
        octets = np.packbits(bits ^ 1 if inverted else bits).tobytes()
        end = pos + CODEBLOCK_BITS
        try:
            decode_codeblock(octets, mode=self.mode)
        except UncorrectableCodeword:
            upright = bits ^ 1 if inverted else bits
            is_tail = int(np.count_nonzero(upright != _TAIL_BITS)) <= 1
            if self._codeblocks:
                self._end(ended_by_tail=is_tail, ending=octets)
            else:
                self.stats.empty_starts += 1
                self._found = None
            # As the octet decoder: a rejected codeblock other than the tail is searched
            # again for the next start sequence (a CLTU cut short by the next one).
            return end if is_tail else pos
        self._codeblocks.append(octets)
        if len(self._codeblocks) >= self.max_codeblocks + 1:
            self._end(ended_by_tail=False, ending=b"")
        return end

    def _end(self, *, ended_by_tail: bool, ending: bytes) -> None:
        assert self._found is not None
        offset, inverted, errors = self._found
        accepted = len(self._codeblocks)
        event = CltuFound(
            cltu=START_SEQUENCE + b"".join(self._codeblocks) + ending,
            bit_offset=offset,
            inverted=inverted,
            start_errors=errors,
            codeblocks=accepted,
            ended_by_tail=ended_by_tail,
        )
        self.stats.cltus += 1
        self.stats.inverted += inverted
        self.stats.codeblocks += accepted
        self._events.append(event)
        self._found = None
        self._codeblocks = []
        logger.debug("< CLTU at bit %d: %d codeblocks, tail=%s", offset, accepted, ended_by_tail)
