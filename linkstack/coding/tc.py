"""TC synchronization and channel coding: BCH codeblocks, CLTUs, TC randomizer.

CCSDS 231.0-B-4 (TC Synchronization and Channel Coding), BCH option only (the LDPC
option of section 4 is not implemented).  Sending end: :func:`encode_cltu`.  Receiving
end: the :class:`CltuDecoder` engine, which finds CLTUs in an arbitrary octet stream.

Clause numbers of 231.0-B-4 follow its section layout (3 BCH, 5 CLTU, 6 randomizer);
the receiving-end states and events are those the book inherited from CCSDS 201.0-B-3
3.3.4 (Tables 3-1, 3-2, Figure 3-5) and Annex B3, which were checked verbatim.

Codeblock (64 bits, first transmitted bit on the left)::

    0                                   55 56            62  63
    +--------------------------------------+----------------+----+
    |  56 information bits I0..I55         | ~P0 ... ~P6    | F0 |
    |  (TC data, randomized if selected)   | complemented   | =0 |
    +--------------------------------------+----------------+----+

The code is the (63,56) modified BCH code with g(x) = x^7 + x^6 + x^2 + 1
= (x + 1)(x^6 + x + 1): minimum distance 4, so it corrects one error or detects two
(and detects every odd number of errors in DETECT mode).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.errors import (
    DropCounter,
    Dropped,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
    UncorrectableCodeword,
)

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

# ---------------------------------------------------------------------------------
# Wire constants
# ---------------------------------------------------------------------------------

#: CLTU start sequence 1110 1011 1001 0000.
START_SEQUENCE: Final = b"\xeb\x90"  # CCSDS 231.0-B-4 5.2.2
#: CLTU tail sequence: a non-correctable codeblock, C5 x 7 then 79.
TAIL_SEQUENCE: Final = b"\xc5\xc5\xc5\xc5\xc5\xc5\xc5\x79"  # CCSDS 231.0-B-4 5.2.4
#: Information octets per BCH codeblock (56 bits).
INFO_OCTETS: Final = 7  # CCSDS 231.0-B-4 3.2
#: Octets per BCH codeblock: 56 information + 7 parity + 1 filler bit.
CODEBLOCK_OCTETS: Final = 8  # CCSDS 231.0-B-4 3.2
#: Fill data completing the last codeblock: alternating bits starting with 0.
FILL_OCTET: Final = 0x55  # CCSDS 231.0-B-4 3.4
#: g(x) = x^7 + x^6 + x^2 + 1, the x^7 term implied.
BCH_GENERATOR: Final = 0b1000101  # CCSDS 231.0-B-4 3.3
#: The 7 parity bits are sent complemented; the filler bit (LSB) is always 0.
PARITY_COMPLEMENT: Final = 0xFE  # CCSDS 231.0-B-4 3.3
#: TC randomizer h(x) = x^8 + x^6 + x^4 + x^3 + x^2 + x + 1, register preset to all ones.
RANDOMIZER_PERIOD: Final = 255  # CCSDS 231.0-B-4 6.2
#: Largest TC Transfer Frame, and the codeblocks it fills.
MAX_TC_FRAME_OCTETS: Final = 1024  # CCSDS 232.0-B-4 4.1.2.7.2
MAX_CODEBLOCKS: Final = -(-MAX_TC_FRAME_OCTETS // INFO_OCTETS)  # 147

_CLAUSE_DECODE: Final = "CCSDS 231.0-B-4 3.5"
_CLAUSE_RECEPTION: Final = "CCSDS 231.0-B-4 5.3; 201.0-B-3 3.3.4, B3"


class DecoderMode(Enum):
    """The two codeblock decoding modes the book allows (CCSDS 231.0-B-4 3.5)."""

    #: Single-error correction: a syndrome naming one bit is corrected.
    CORRECT = "correct"
    #: Error detection only: any non-zero syndrome rejects the codeblock.
    DETECT = "detect"


class DecoderState(IntEnum):
    """CLTU reception states (CCSDS 201.0-B-3 Table 3-1, kept by 231.0-B-4)."""

    #: No bit lock: not modelled by a byte-stream engine, which starts in SEARCH.
    S1_INACTIVE = 1
    #: Searching the stream for the Start Sequence.
    S2_SEARCH = 2
    #: Decoding codeblocks until one is rejected (E4).
    S3_DECODE = 3


# ---------------------------------------------------------------------------------
# TC randomizer (Bit Transition Generator)
# ---------------------------------------------------------------------------------


def _randomizer_sequence() -> bytes:
    """One period of the TC sequence, first output bit as the MSB of octet 0."""
    register = 0xFF  # x8..x1 all ones
    out = bytearray()
    for _ in range(RANDOMIZER_PERIOD):
        octet = 0
        for _ in range(8):
            octet = (octet << 1) | (register & 1)
            taps = register ^ (register >> 1) ^ (register >> 2)
            feedback = (taps ^ (register >> 3) ^ (register >> 4) ^ (register >> 6)) & 1
            register = (register >> 1) | (feedback << 7)
        out.append(octet)
    return bytes(out)


#: One period (255 octets) of the TC pseudo-random sequence: FF 39 9E 5A 68 ...
RANDOMIZER_SEQUENCE: Final = _randomizer_sequence()
_RANDOMIZER_ARRAY: Final = np.frombuffer(RANDOMIZER_SEQUENCE, dtype=np.uint8)


def randomize(data: bytes) -> bytes:
    """XOR ``data`` with the TC sequence restarted at its first octet; self-inverse.

    CCSDS 231.0-B-4 6.3: the generator is reset to all ones at the start of each CLTU.
    """
    if not data:
        return b""
    arr = np.frombuffer(data, dtype=np.uint8)
    reps = -(-len(data) // RANDOMIZER_PERIOD)
    return (arr ^ np.tile(_RANDOMIZER_ARRAY, reps)[: len(data)]).tobytes()


derandomize = randomize
_apply_randomizer = randomize  # reachable inside functions whose flag is named ``randomize``


# ---------------------------------------------------------------------------------
# BCH(63,56) tables
# ---------------------------------------------------------------------------------


def _bit_remainders() -> list[int]:
    """Remainder of x^(62-k) mod g(x) for information bit k, shifted into bits 7..1."""
    rems = []
    for k in range(56):
        reg = 0
        for bit in (1 if i == k else 0 for i in range(56)):
            feedback = ((reg >> 6) & 1) ^ bit
            reg = (reg << 1) & 0x7F
            if feedback:
                reg ^= BCH_GENERATOR
        rems.append(reg << 1)
    return rems


def _build_tables() -> tuple[U8, npt.NDArray[np.int8]]:
    bit_rem = _bit_remainders()
    table = np.zeros((INFO_OCTETS, 256), dtype=np.uint8)
    for pos in range(INFO_OCTETS):
        for value in range(256):
            acc = 0
            for b in range(8):
                if value & (0x80 >> b):
                    acc ^= bit_rem[pos * 8 + b]
            table[pos, value] = acc
    # Syndrome (7 bits, index = syndrome >> 1) -> bit position 0..62, or -1.
    locator = np.full(128, -1, dtype=np.int8)
    for k, rem in enumerate(bit_rem):
        locator[rem >> 1] = k
    for p in range(7):  # parity bit P_p sits at codeblock bit 56 + p
        locator[(0x80 >> p) >> 1] = 56 + p
    return table, locator


#: _PARITY[j, v]: contribution of value v in information octet j to the remainder.
#: _LOCATOR[s >> 1]: codeblock bit in error for syndrome s, -1 when uncorrectable.
_PARITY, _LOCATOR = _build_tables()
_POSITIONS: Final = np.arange(INFO_OCTETS)
_POPCOUNT: Final = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
_TAIL_ARRAY: Final = np.frombuffer(TAIL_SEQUENCE, dtype=np.uint8)


def _parity_octets(info: U8) -> U8:
    """Parity octets (complemented, filler 0) for an (n, 7) array of information."""
    parity: U8 = np.bitwise_xor.reduce(_PARITY[_POSITIONS, info], axis=1)
    return parity ^ np.uint8(PARITY_COMPLEMENT)


def bch_encode(info: bytes) -> bytes:
    """Codeblocks for ``info``, whose length must be a multiple of 7 octets.

    CCSDS 231.0-B-4 3.3: systematic encoding, complemented parity, filler bit 0.
    """
    if len(info) % INFO_OCTETS:
        raise LocalProtocolError(
            f"BCH information of {len(info)} octets is not a multiple of {INFO_OCTETS} "
            "(CCSDS 231.0-B-4 3.2)"
        )
    blocks = np.frombuffer(info, dtype=np.uint8).reshape(-1, INFO_OCTETS)
    out = np.empty((blocks.shape[0], CODEBLOCK_OCTETS), dtype=np.uint8)
    out[:, :INFO_OCTETS] = blocks
    out[:, INFO_OCTETS] = _parity_octets(blocks)
    return out.tobytes()


@dataclass(frozen=True, slots=True)
class _BatchResult:
    info: U8  # (accepted, 7), corrected
    corrected_bits: int
    rejected: bool  # a codeblock after the accepted ones was rejected


def _decode_batch(blocks: U8, mode: DecoderMode) -> _BatchResult:
    """Decode an (n, 8) array up to, not including, the first rejected codeblock."""
    info = blocks[:, :INFO_OCTETS]
    syndrome = (_parity_octets(info) ^ blocks[:, INFO_OCTETS]) & np.uint8(PARITY_COMPLEMENT)
    if mode is DecoderMode.DETECT:
        bad = syndrome != 0
        location = None
    else:
        location = _LOCATOR[syndrome >> 1]
        bad = (syndrome != 0) & (location < 0)
    rejected = bool(bad.any())
    accepted = int(np.argmax(bad)) if rejected else blocks.shape[0]
    info = info[:accepted].copy()
    corrected = 0
    if location is not None:
        rows = np.flatnonzero(syndrome[:accepted])
        corrected = len(rows)
        if corrected:
            where = location[rows].astype(np.intp)
            in_info = where < INFO_OCTETS * 8
            rows, where = rows[in_info], where[in_info]
            info[rows, where >> 3] ^= (0x80 >> (where & 7)).astype(np.uint8)
    return _BatchResult(info=info, corrected_bits=corrected, rejected=rejected)


def decode_codeblock(codeblock: bytes, *, mode: DecoderMode) -> tuple[bytes, int]:
    """The 7 information octets of one codeblock and the number of bits corrected.

    Raises :class:`UncorrectableCodeword` (reason ``"codeblock-rejected"``) when the
    codeblock is rejected in ``mode``; a length other than 8 octets is caller misuse
    (:class:`LocalProtocolError`).  The filler bit is outside the code and ignored.
    """
    if len(codeblock) != CODEBLOCK_OCTETS:
        raise LocalProtocolError(
            f"a BCH codeblock is {CODEBLOCK_OCTETS} octets, got {len(codeblock)} "
            "(CCSDS 231.0-B-4 3.2)"
        )
    blocks = np.frombuffer(codeblock, dtype=np.uint8).reshape(1, CODEBLOCK_OCTETS)
    result = _decode_batch(blocks, mode)
    if result.rejected:
        raise UncorrectableCodeword(
            Layer.TC_CODING, "codeblock-rejected", _CLAUSE_DECODE, f"mode {mode.value}"
        )
    return result.info.tobytes(), result.corrected_bits


# ---------------------------------------------------------------------------------
# CLTU, sending end
# ---------------------------------------------------------------------------------


def encode_cltu(frame: bytes, *, randomize: bool, randomize_fill: bool = True) -> bytes:
    """One CLTU carrying ``frame``: start sequence, codeblocks, tail sequence.

    The last codeblock is completed with 0x55 fill (CCSDS 231.0-B-4 3.4).  With
    ``randomize`` the TC randomizer is applied before BCH encoding (6.3); by default
    the fill is randomized with the frame, ``randomize_fill=False`` randomizes only
    the frame octets (as Yamcs does).  A receiver derandomizes all decoded octets
    either way and the fill is removed above it, so both decode identically.
    """
    if not frame:
        raise LocalProtocolError("a CLTU carries at least one octet of data (CCSDS 231.0-B-4 5.2)")
    fill = -len(frame) % INFO_OCTETS
    if randomize and randomize_fill:
        data = _apply_randomizer(frame + bytes([FILL_OCTET]) * fill)
    elif randomize:
        data = _apply_randomizer(frame) + bytes([FILL_OCTET]) * fill
    else:
        data = frame + bytes([FILL_OCTET]) * fill
    return START_SEQUENCE + bch_encode(data) + TAIL_SEQUENCE


# ---------------------------------------------------------------------------------
# CLTU, receiving end
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CltuDecoded:
    """A CLTU whose decoding stopped (E4 or end of channel) after >= 1 good codeblock."""

    #: Information octets of the accepted codeblocks, derandomized, fill included.
    data: bytes
    #: Codeblocks accepted (the tail and the rejected codeblock are not counted).
    codeblocks: int
    #: Bits corrected in those codeblocks (0 in DETECT mode).
    corrected_bits: int
    #: True when decoding stopped at the tail sequence (received with at most 1 bit error);
    #: False when it stopped at a rejected data codeblock or at channel deactivation, in
    #: which case the frame is likely incomplete and the layer above must reject it.
    ended_by_tail: bool


@dataclass(slots=True)
class CltuDecoderStats:
    """Counters of a :class:`CltuDecoder`."""

    #: CLTUs that delivered data (:class:`CltuDecoded` events).
    cltus: int = 0
    #: Codeblocks accepted.
    codeblocks: int = 0
    #: Bits corrected.
    corrected_bits: int = 0
    #: Codeblocks rejected, not counting tail sequences.
    rejected_codeblocks: int = 0
    #: Tail sequences that ended a CLTU.
    tails: int = 0
    #: Octets discarded while searching for a start sequence.
    octets_skipped: int = 0


_SEARCH_BATCH: Final = 32  # codeblocks decoded per numpy pass


class CltuDecoder:
    """Receiving end of CCSDS 231.0-B-4: start-sequence search and codeblock decoding.

    Feed octets in any chunking with :meth:`receive_bytes`; read events with
    :meth:`next_event`: :class:`CltuDecoded` or :class:`Dropped`.  Bad input never
    raises.

    States (201.0-B-3 Table 3-1): the engine starts in S2 SEARCH (the caller feeding
    octets stands for E1, channel activation).  The search is octet-aligned and
    accepts the 16-bit start sequence with at most ``start_sequence_errors`` bit
    errors (0 or 1).  On E3 it enters S3 DECODE and decodes codeblocks in ``mode``;
    the information octets of accepted codeblocks are data transferred to the layer
    above (201.0-B-3 B3 (d), (g)).  The first rejected codeblock (E4) ends the CLTU
    and returns to SEARCH (B3 (h)); the tail sequence ends a CLTU that way because it
    is built to be uncorrectable (231.0-B-4 5.2.4).  The data already decoded is
    still delivered, as the book delivers it, in one :class:`CltuDecoded` event;
    ``ended_by_tail`` says whether the rejected codeblock was the tail.  If the very
    first codeblock is rejected nothing was decoded and a :class:`Dropped` event is
    queued.  :meth:`channel_deactivation` (E2) ends a CLTU in progress the same way.

    Two receiver safeguards that are not in the book: the octets of a rejected
    codeblock other than the tail are searched again for a start sequence, so a CLTU
    cut short by the next one does not lose the next one; and a CLTU longer than
    ``max_codeblocks`` (default: the 147 of a 1024-octet frame) is abandoned.
    """

    def __init__(
        self,
        mode: DecoderMode = DecoderMode.CORRECT,
        randomize: bool = False,
        *,
        start_sequence_errors: int = 0,
        max_codeblocks: int = MAX_CODEBLOCKS,
    ) -> None:
        if start_sequence_errors not in (0, 1):
            raise LocalProtocolError(
                f"start_sequence_errors={start_sequence_errors}: the start sequence is "
                "searched with 0 or 1 bit error"
            )
        if max_codeblocks < 1:
            raise LocalProtocolError(f"max_codeblocks={max_codeblocks} must be at least 1")
        self.mode = mode
        self.randomize = randomize
        self.start_sequence_errors = start_sequence_errors
        self.max_codeblocks = max_codeblocks
        self.state = DecoderState.S2_SEARCH
        self.stats = CltuDecoderStats()
        self.drops = DropCounter()
        self._buffer = bytearray()
        self._events: deque[CltuDecoded | Dropped] = deque()
        self._chunks: list[bytes] = []
        self._codeblocks = 0
        self._corrected = 0

    # -- public surface -------------------------------------------------------------

    def receive_bytes(self, data: bytes) -> None:
        """Take received octets; any chunking, any garbage."""
        self._buffer += data
        pos = 0
        while True:
            if self.state is DecoderState.S2_SEARCH:
                found = self._search(pos)
                if found is None:
                    keep = len(START_SEQUENCE) - 1
                    end = max(pos, len(self._buffer) - keep)
                    self.stats.octets_skipped += end - pos
                    pos = end
                    break
                self.stats.octets_skipped += found - pos
                pos = found + len(START_SEQUENCE)
                self._start_cltu()
            else:
                new_pos = self._decode(pos)
                if new_pos is None:
                    break
                pos = new_pos
        del self._buffer[:pos]

    def channel_deactivation(self) -> None:
        """E2: the channel went away; a CLTU in progress ends, partial octets are lost."""
        if self.state is DecoderState.S3_DECODE:
            if self._codeblocks:
                self._end_cltu(ended_by_tail=False)
            else:
                self._abandon(
                    UncorrectableCodeword(
                        Layer.TC_CODING,
                        "channel-deactivation",
                        _CLAUSE_RECEPTION,
                        "start sequence found, no codeblock completed",
                    ),
                    octets=len(START_SEQUENCE) + len(self._buffer),
                )
        else:
            self.stats.octets_skipped += len(self._buffer)
        self._buffer.clear()
        self.state = DecoderState.S2_SEARCH

    def next_event(self) -> CltuDecoded | Dropped | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    # -- internals ------------------------------------------------------------------

    def _search(self, pos: int) -> int | None:
        buf = self._buffer
        if self.start_sequence_errors == 0:
            found = buf.find(START_SEQUENCE, pos)
            return None if found < 0 else found
        if len(buf) - pos < len(START_SEQUENCE):
            return None
        arr = np.frombuffer(buf[pos:], dtype=np.uint8)  # a copy: buf stays resizable
        distance = _POPCOUNT[arr[:-1] ^ START_SEQUENCE[0]] + _POPCOUNT[arr[1:] ^ START_SEQUENCE[1]]
        hits = np.flatnonzero(distance <= self.start_sequence_errors)
        return pos + int(hits[0]) if len(hits) else None

    def _start_cltu(self) -> None:
        logger.debug("< start sequence")
        self.state = DecoderState.S3_DECODE
        self._chunks = []
        self._codeblocks = 0
        self._corrected = 0

    def _decode(self, pos: int) -> int | None:
        """Decode whole codeblocks from ``pos``; the new position, or None to wait."""
        available = (len(self._buffer) - pos) // CODEBLOCK_OCTETS
        if available == 0:
            return None
        room = self.max_codeblocks - self._codeblocks + 1  # +1: room for the tail
        count = min(available, _SEARCH_BATCH, room)
        end = pos + count * CODEBLOCK_OCTETS
        blocks = np.frombuffer(self._buffer[pos:end], dtype=np.uint8)  # a copy
        result = _decode_batch(blocks.reshape(count, CODEBLOCK_OCTETS), self.mode)
        accepted = result.info.shape[0]
        if accepted:
            self._chunks.append(result.info.tobytes())
            self._codeblocks += accepted
            self._corrected += result.corrected_bits
        pos += accepted * CODEBLOCK_OCTETS
        if result.rejected:
            return self._reject(pos)
        if self._codeblocks > self.max_codeblocks:
            self._abandon(
                UncorrectableCodeword(
                    Layer.TC_CODING,
                    "too-many-codeblocks",
                    _CLAUSE_RECEPTION,
                    f"no tail after {self.max_codeblocks} codeblocks",
                ),
                octets=len(START_SEQUENCE) + self._codeblocks * CODEBLOCK_OCTETS,
            )
        return pos

    def _reject(self, pos: int) -> int:
        """E4 on the codeblock at ``pos``; returns where the search resumes."""
        block = np.frombuffer(self._buffer[pos : pos + CODEBLOCK_OCTETS], dtype=np.uint8)
        is_tail = int(_POPCOUNT[block ^ _TAIL_ARRAY].sum()) <= 1
        if is_tail:
            self.stats.tails += 1
        else:
            self.stats.rejected_codeblocks += 1
        if self._codeblocks:
            self._end_cltu(ended_by_tail=is_tail)
        else:
            reason, detail = (
                ("empty-cltu", "tail sequence right after the start sequence")
                if is_tail
                else ("first-codeblock-rejected", f"mode {self.mode.value}")
            )
            self._abandon(
                UncorrectableCodeword(Layer.TC_CODING, reason, _CLAUSE_RECEPTION, detail),
                octets=len(START_SEQUENCE) + (CODEBLOCK_OCTETS if is_tail else 0),
            )
        self.state = DecoderState.S2_SEARCH
        return pos + CODEBLOCK_OCTETS if is_tail else pos

    def _end_cltu(self, *, ended_by_tail: bool) -> None:
        data = b"".join(self._chunks)
        if self.randomize:
            data = _apply_randomizer(data)
        event = CltuDecoded(
            data=data,
            codeblocks=self._codeblocks,
            corrected_bits=self._corrected,
            ended_by_tail=ended_by_tail,
        )
        logger.debug(
            "< CLTU %d codeblocks, %d corrected, tail=%s",
            event.codeblocks,
            event.corrected_bits,
            ended_by_tail,
        )
        self.stats.cltus += 1
        self.stats.codeblocks += self._codeblocks
        self.stats.corrected_bits += self._corrected
        self._events.append(event)
        self._chunks = []
        self.state = DecoderState.S2_SEARCH

    def _abandon(self, exc: RemoteProtocolError, *, octets: int) -> None:
        logger.debug("< CLTU abandoned: %s", exc)
        self._events.append(self.drops.count(Dropped.from_error(exc, octets=octets)))
        self._chunks = []
        self.state = DecoderState.S2_SEARCH
