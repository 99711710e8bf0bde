"""Soft-symbol front end of the TM coding: the concatenated code (CCSDS 131.0-B-5
sections 3, 4 and 9) from demodulator soft symbols to transfer frames.

Transmit side: :func:`cadus_to_symbols` runs CADUs (``encode_cadus`` output) through
the convolutional encoder, continuously across CADUs and with no tail as a downlink
does, and maps the coded bits to BPSK (bits 0/1) or Gray-mapped QPSK (complex64,
I = first coded bit, Q = second, bit 1 -> +1); :func:`ideal_soft` and :func:`add_awgn`
make soft symbols of them for tests and channel simulations.

Receive side: :class:`SoftCaduSynchronizer` is a sans-I/O engine
(``receive_symbols`` / ``next_event`` / ``flush`` / ``stats``) that takes soft
symbols (positive = bit 1, 0 = erasure, GNU Radio's convention) with every receiver
ambiguity unresolved and resolves them itself, by trying hypotheses
(:class:`Hypothesis`) and locking on the one whose decoded stream carries Attached
Sync Markers (CCSDS 131.0-B-5 9.3.1) exactly one CADU apart, at any bit offset:

* **Symbol alignment**: which received symbol starts a C1/C2 pair (rate 1/2) or a
  puncturing period (3.4: 3, 4, 6 or 8 symbols at rates 2/3, 3/4, 5/6, 7/8): one
  Viterbi decoder per possible offset.  gr-satellites' CCSDS concatenated deframer
  does the same for rate 1/2 with two decoders, one delayed by a symbol.
* **180 degrees** (BPSK, and QPSK's 0/180 and 90/270 pairs): both connection vectors
  of 3.3.1 d), 1111001 and 1011011, have odd weight, so complementing the encoder
  input complements every output; with the G2 inversion of 3.3.1 e),
  ``NOT g2(NOT u) = g2(u) = NOT (NOT g2(u))``, so the rate-1/2 symbols are
  complemented too, and the punctured codes (no inversion) likewise.  An inverted
  symbol stream therefore decodes, in the same decoder, to the complemented bits,
  marked by the complemented ASM (``tests/test_soft_sync.py`` checks this for every
  rate rather than assuming it).  gr-satellites searches only for the true ASM and
  leaves this ambiguity to the user (gr-satellites issue #264).
* **QPSK quarter turns**: a carrier locked at 90 or 270 degrees is undone by turning
  the symbols back by 90 degrees, ``(I, Q) <- (Q, -I)``, which leaves at most the
  180-degree ambiguity above: two decoder groups, upright and quarter-turned.
* **NRZ-M** (3.3.3, conversion at the encoder input, undone after the decoder): with
  ``nrzm="auto"`` each decoded stream is searched both as it is and differentially
  decoded; no extra decoder is needed.  Under NRZ-M the 180-degree inversion is
  transparent (``Hypothesis.inverted`` is None).

Frame synchronization follows ``CaduSynchronizer``'s SEARCH -> CHECK -> LOCK machine
at bit level: a candidate ASM within ``asm_search_errors`` bit errors must be followed
by ``check_count`` more, one CADU apart, before lock is declared; a successful
Reed-Solomon decode never counts as proof of lock (for I = 1 and 2 the
pseudo-random sequence is itself a codeword).  While searching, every live
hypothesis has its decoder running (throughput divides by their number), a CADU's
worth of symbols at a time so that a lock found early in a long input stops the
others there; once locked only the locked one runs.  Locked, each expected ASM is checked against
``asm_lock_errors``; a block whose ASM is missed is held until the flywheel decides:
the next good ASM releases the held blocks to the R-S decoder, ``flywheel``
consecutive misses lose lock.  The receiver then goes back in its record of the
symbols to the first held block (less half a CADU, where a slipped marker can now
sit) and searches there again with every hypothesis, so a cycle slip (a symbol
dropped or inserted by the demodulator, a carrier phase jump) costs only the CADUs
that the slip touched.  Once re-locked, up to ``flywheel`` blocks of the new grid
before the confirming markers, back to that point, are decoded as well: after a
slip inside an ASM, or markers missed on an otherwise good grid, no frame is lost.
At :meth:`~SoftCaduSynchronizer.flush` blocks still held by the flywheel are decoded
on the locked grid (as ``CaduSynchronizer`` does), not searched again.

Aligned codeblocks are derandomized and R-S decoded by the same code path as
``CaduSynchronizer`` (``linkstack.coding.tm.decode_codeblocks``), and produce its
``FrameDecoded`` / ``CodeblockDropped`` events, here carrying the hypothesis, the
ASM bit errors and the R-S corrections; ``offset`` and ``at_symbol`` count coded
symbols from the first one received (for QPSK, two per complex symbol: I then Q).

With ``output="cadus"`` the synchronizer stops short of the R-S decoder and hands on
each aligned block as a :class:`CaduAligned` event instead: the ASM followed by the
decided codeblock octets, byte-aligned, complemented back under an inverted
hypothesis (NRZ-M undone), still randomized, so that a hard-decision
``CaduSynchronizer`` downstream (a ground endpoint) derandomizes, corrects and counts
as it does for an uncoded link (``linkstack.radio.coded`` feeds one that way).

Bad input is handled, never raised: NaN is an erasure, inf and huge values are
clipped (``linkstack.coding.viterbi.SOFT_LIMIT``); counts need not be even; pure noise
yields no lock (or, with loose thresholds, a false lock whose blocks R-S refuses,
each counted, until the flywheel drops it); a CADU cut by the end of
the input waits for the rest, and :meth:`SoftCaduSynchronizer.flush` reports it as
dropped (``truncated``).  Wrong types (hard 0/1 bits, complex symbols for BPSK, real
ones for QPSK) raise :class:`~linkstack.errors.LocalProtocolError`.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from linkstack.coding.convolutional import (
    PUNCTURE_PATTERNS,
    CodeRate,
    ConvolutionalEncoder,
    check_bits,
    check_rate,
    transmitted_positions,
    unpack_bits,
)
from linkstack.coding.tm import (
    ASM,
    ASM_BITS,
    CLAUSE_SYNC,
    CodeblockDropped,
    FrameDecoded,
    SyncLost,
    SyncState,
    TmCodingConfig,
    codeblock_event,
    decode_codeblocks,
)
from linkstack.coding.viterbi import (
    DEFAULT_TRACEBACK,
    SOFT_LIMIT,
    Backend,
    ViterbiDecoder,
    hard_to_soft,
)
from linkstack.errors import DropCounter, Dropped, Layer, LocalProtocolError

logger = logging.getLogger(__name__)

__all__ = [
    "MODULATIONS",
    "SOFT_OUTPUTS",
    "CaduAligned",
    "Hypothesis",
    "HypothesisLocked",
    "Modulation",
    "NrzmMode",
    "SoftCaduSynchronizer",
    "SoftOutput",
    "SoftSyncEvent",
    "SoftSyncStats",
    "add_awgn",
    "asm_distances",
    "cadus_to_bits",
    "cadus_to_symbols",
    "ideal_soft",
    "qpsk_map",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
C64 = npt.NDArray[np.complex64]

Modulation = Literal["bpsk", "qpsk"]
MODULATIONS: Final[tuple[Modulation, ...]] = get_args(Modulation)
NrzmMode = bool | Literal["auto"]
#: What an aligned block becomes: its transfer frame, R-S decoded ("frames"), or the
#: CADU itself, for a hard-decision synchronizer downstream ("cadus").
SoftOutput = Literal["frames", "cadus"]
SOFT_OUTPUTS: Final[tuple[SoftOutput, ...]] = get_args(SoftOutput)

_ASM_WORD: Final = int.from_bytes(ASM, "big")
_ASM_BITS_NP: Final = unpack_bits(ASM)
_SHIFTS: Final = np.arange(8, 0, -1, dtype=np.uint64)
_BUFFER_START: Final = 1 << 14  # initial capacity of a growable buffer (items)


# --------------------------------------------------------------------------- transmit side


def _check_modulation(modulation: str) -> Modulation:
    for known in MODULATIONS:
        if modulation == known:
            return known
    raise LocalProtocolError(f"modulation {modulation!r} is not one of {', '.join(MODULATIONS)}")


def cadus_to_bits(
    cadus: bytes | bytearray | memoryview, *, rate: CodeRate = "1/2", nrzm: bool = False
) -> U8:
    """Coded bits (0/1) of a CADU stream: NRZ-M if asked (3.3.3), then the
    convolutional code (3.3, punctured per 3.4), one continuous stream from the
    all-zeros state, no tail."""
    return ConvolutionalEncoder(rate, nrzm=nrzm).encode(unpack_bits(cadus))


def qpsk_map(bits: npt.ArrayLike) -> C64:
    """Gray-mapped QPSK of coded bits: I = first bit, Q = second, bit 1 -> +1
    (GNU Radio's sign convention); the bit count must be even."""
    array = check_bits(bits)
    if array.size % 2:
        raise LocalProtocolError(
            f"{array.size} coded bits do not fill whole QPSK symbols (two bits each)"
        )
    soft = hard_to_soft(array)
    mapped: C64 = (soft[0::2] + 1j * soft[1::2]).astype(np.complex64)
    return mapped


def cadus_to_symbols(
    cadus: bytes | bytearray | memoryview,
    *,
    rate: CodeRate = "1/2",
    nrzm: bool = False,
    modulation: Modulation = "bpsk",
) -> U8 | C64:
    """CADUs to channel symbols: coded bits (uint8 0/1) for BPSK, complex64 Gray-mapped
    symbols for QPSK (:func:`qpsk_map`).  :func:`ideal_soft` turns BPSK bits into
    +-1 soft symbols."""
    modulation = _check_modulation(modulation)
    bits = cadus_to_bits(cadus, rate=rate, nrzm=nrzm)
    return qpsk_map(bits) if modulation == "qpsk" else bits


def ideal_soft(bits: npt.ArrayLike) -> F32:
    """Noise-free soft symbols of coded bits: bit 1 -> +1.0, bit 0 -> -1.0 (float32)."""
    return hard_to_soft(bits)


def add_awgn(
    symbols: npt.ArrayLike, *, ebn0_db: float, rate: CodeRate, rng: np.random.Generator
) -> F32 | C64:
    """Ideal soft symbols (+-1 float, or +-1+-1j complex) through additive white Gaussian
    noise at Eb/N0 per information bit (the bits into the convolutional encoder):
    sigma^2 = 1 / (2 R Eb/N0) per coded bit, in each of I and Q for QPSK."""
    array = np.asarray(symbols)
    numerator, denominator = (int(x) for x in check_rate(rate).split("/"))
    sigma = np.sqrt(denominator / (2.0 * numerator * 10 ** (ebn0_db / 10)))
    if array.dtype.kind == "c":
        noise = rng.standard_normal(array.size) + 1j * rng.standard_normal(array.size)
        noisy_c: C64 = (array + sigma * noise).astype(np.complex64)
        return noisy_c
    noisy: F32 = (array + sigma * rng.standard_normal(array.size)).astype(np.float32)
    return noisy


def asm_distances(bits: U8) -> U8:
    """Bit errors between the ASM and the 32 bits starting at each position of ``bits``
    (``len(bits) - 31`` values; empty when shorter than the ASM)."""
    count = bits.size - ASM_BITS + 1
    if count <= 0:
        return np.zeros(0, np.uint8)
    octets = (bits.size + 7) // 8
    packed = np.zeros(octets + 4, np.uint64)
    packed[:octets] = np.packbits(bits)
    q = (count + 7) // 8
    # 40-bit windows starting at each octet q; the word starting at bit 8q + s is
    # (window >> (8 - s)) & 0xFFFFFFFF: one row of eight shifts per octet.
    window = (
        (packed[:q] << np.uint64(32))
        | (packed[1 : q + 1] << np.uint64(24))
        | (packed[2 : q + 2] << np.uint64(16))
        | (packed[3 : q + 3] << np.uint64(8))
        | packed[4 : q + 4]
    )
    words = window[:, None] >> _SHIFTS[None, :]
    words ^= np.uint64(_ASM_WORD)
    words &= np.uint64(0xFFFFFFFF)
    distances: U8 = np.bitwise_count(words).reshape(-1)[:count]
    return distances


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One way the received symbols can be misaligned or turned; the synchronizer tries
    every hypothesis its configuration allows and locks on the one that shows ASMs."""

    #: Where puncturing periods (rate 1/2: C1/C2 pairs) start: received coded symbol
    #: index modulo the period in symbols (2 at rate 1/2, 8 at rate 7/8).
    symbol_offset: int
    #: QPSK: the carrier sat a quarter turn off (90 or 270 degrees); undone by turning
    #: the symbols back, (I, Q) <- (Q, -I).  Always False for BPSK.
    quarter_turn: bool = False
    #: The decoded bits came out complemented (BPSK at 180 degrees; QPSK at 180 or
    #: 270): marked by the complemented ASM.  None under NRZ-M, which hides it.
    inverted: bool | None = False
    #: NRZ-M is undone after the Viterbi decoder (CCSDS 131.0-B-5 3.3.3).
    nrzm: bool = False

    def to_json(self) -> dict[str, int | bool | None]:
        """The hypothesis as the JSON lines of the command-line tools give it."""
        return {
            "symbol_offset": self.symbol_offset,
            "quarter_turn": self.quarter_turn,
            "inverted": self.inverted,
            "nrzm": self.nrzm,
        }

    @property
    def phases(self) -> tuple[int, ...]:
        """The carrier phase errors (degrees) this hypothesis undoes: one, or two
        180 degrees apart under NRZ-M."""
        base = 90 if self.quarter_turn else 0
        if self.inverted is None:
            return (base, base + 180)
        return (base + 180 if self.inverted else base,)


@dataclass(frozen=True, slots=True)
class HypothesisLocked:
    """Lock declared on ``hypothesis``; ``at_symbol`` is the coded-symbol index of the
    first ASM decoded under it."""

    hypothesis: Hypothesis
    at_symbol: int


@dataclass(frozen=True, slots=True)
class CaduAligned:
    """``output="cadus"``: one CADU as the receiver aligned it, in place of its frame.

    ``cadu`` is the ASM as sent (CCSDS 131.0-B-5 9.3.1; the decoded marker's errors are
    in ``asm_errors``) followed by the hard-decided codeblock octets, byte-aligned,
    complemented back under an inverted hypothesis and with NRZ-M undone: still
    randomized (10.4) and not R-S decoded, what a ``CaduSynchronizer`` takes.
    """

    cadu: bytes
    #: Coded-symbol index of its ASM (as ``FrameDecoded.offset``).
    offset: int
    asm_errors: int
    hypothesis: Hypothesis
    #: Kept by the flywheel although its ASM was missed.
    flywheeled: bool = False


SoftSyncEvent = FrameDecoded | Dropped | HypothesisLocked | SyncLost | CaduAligned


@dataclass(slots=True)
class SoftSyncStats:
    """Counters of a ``SoftCaduSynchronizer``."""

    symbols: int = 0  # coded symbols received (QPSK: two per complex symbol)
    searched_symbols: int = 0  # of those, received while no hypothesis was locked
    viterbi_symbols: int = 0  # symbols through a Viterbi decoder, all hypotheses summed
    cadus: int = 0  # codeblocks handed to the R-S decoder (output="cadus": CADUs handed on)
    frames: int = 0  # frames delivered
    corrected_symbols: int = 0  # R-S symbols corrected in delivered frames
    uncorrectable: int = 0  # codeblocks R-S refused
    truncated: int = 0  # CADUs cut by the end of the stream
    flywheeled: int = 0  # blocks decoded although their ASM was missed
    rejected_candidates: int = 0  # ASM candidates that the next marker did not confirm
    sync_losses: int = 0
    #: Re-acquisitions after a loss on another hypothesis or a shifted grid: symbol
    #: slips and carrier phase jumps.
    slips: int = 0
    #: Locks declared, per hypothesis.
    locks: Counter[Hypothesis] = field(default_factory=Counter)


# --------------------------------------------------------------------------- internals


class _Buffer:
    """An append-only numpy array addressed by absolute index, with a movable start."""

    __slots__ = ("_data", "_lo", "base", "end")

    def __init__(self, dtype: type[np.generic], base: int = 0) -> None:
        self._data: npt.NDArray[np.generic] = np.empty(_BUFFER_START, dtype)
        self._lo = 0
        self.base = base  # absolute index of the first item kept
        self.end = base  # absolute index one past the last item

    def append(self, values: npt.NDArray[np.generic]) -> None:
        count = values.size
        if count == 0:
            return
        live = self.end - self.base
        top = self._lo + live
        if top + count > self._data.size:
            if 2 * (live + count) > self._data.size:
                target = np.empty(2 * (live + count), self._data.dtype)
            else:
                target = self._data  # compact in place (numpy copes with the overlap)
            target[:live] = self._data[self._lo : top]
            self._data, self._lo, top = target, 0, live
        self._data[top : top + count] = values
        self.end += count

    def view(self, start: int, stop: int) -> npt.NDArray[np.generic]:
        """Items [start, stop) by absolute index; valid until the next append."""
        return self._data[self._lo + start - self.base : self._lo + stop - self.base]

    def trim(self, keep_from: int) -> None:
        keep = min(max(keep_from, self.base), self.end)
        self._lo += keep - self.base
        self.base = keep

    def clear(self, base: int) -> None:
        self._lo = 0
        self.base = self.end = base


class _Kind(Enum):
    """How a searcher reads its branch's decoded bits."""

    UPRIGHT = "upright"  # as decoded, true ASM
    INVERTED = "inverted"  # complemented, marked by the complemented ASM
    NRZM = "nrzm"  # differentially decoded (either polarity), true ASM


class _Branch:
    """One Viterbi decoder on one symbol alignment of one derotation."""

    __slots__ = ("bits", "decoder", "fed", "finished", "floor_bit", "group", "offset", "start")

    def __init__(
        self, group: int, offset: int, start: int, decoder: ViterbiDecoder, floor_bit: int
    ) -> None:
        self.group = group  # 0 upright, 1 quarter-turned (QPSK)
        self.offset = offset  # start % period
        self.start = start  # coded-symbol index of the decoder's first symbol
        self.decoder = decoder
        self.fed = start  # next symbol to hand to the decoder
        self.finished = False  # decoder flushed at end of stream
        self.floor_bit = floor_bit  # candidates start at or after this decoded bit
        self.bits = _Buffer(np.uint8)  # decoded bits, bit 0 = the decoder's first


@dataclass(slots=True)
class _Searcher:
    """SEARCH/CHECK on one reading of one branch."""

    branch: _Branch
    kind: _Kind
    hypothesis: Hypothesis
    scan: int = 0  # next decoded-bit position to test as a candidate
    held: list[tuple[int, int]] = field(default_factory=list)  # (bit, ASM errors)


@dataclass(slots=True)
class _Lock:
    branch: _Branch
    kind: _Kind
    hypothesis: Hypothesis
    next_pos: int  # decoded-bit position of the next expected ASM
    held: list[tuple[int, int]] = field(default_factory=list)  # missed, awaiting flywheel
    misses: int = 0


@dataclass(frozen=True, slots=True)
class _LostGrid:
    hypothesis: Hypothesis
    start: int  # the lost branch's first symbol
    position: int  # its bit position of the first unconfirmed block
    symbol: int  # the same, in coded symbols


# --------------------------------------------------------------------------- engine


class SoftCaduSynchronizer:
    """Soft symbols in, transfer frames out: Viterbi decoding, bit-level CADU sync and
    R-S decoding, with every receiver ambiguity found by trying hypotheses.

    ``coding`` gives the R-S / randomizer parameters and the synchronizer defaults
    (``check_count``, and ``asm_search_errors``, ``asm_lock_errors``, ``flywheel``
    unless given here).  ``rate`` is the convolutional code rate; ``nrzm`` True,
    False or "auto" (try both); ``modulation`` "bpsk" (real soft symbols, one per
    coded bit; float or signed int) or "qpsk" (complex symbols, I then Q);
    ``traceback`` the Viterbi survivor depth (default per rate); ``backend`` the
    Viterbi kernel; ``output`` "frames" (R-S decoded: ``FrameDecoded`` /
    ``CodeblockDropped``) or "cadus" (aligned CADUs: :class:`CaduAligned`).
    """

    def __init__(
        self,
        coding: TmCodingConfig,
        *,
        rate: CodeRate = "1/2",
        nrzm: NrzmMode = False,
        modulation: Modulation = "bpsk",
        asm_search_errors: int | None = None,
        asm_lock_errors: int | None = None,
        flywheel: int | None = None,
        traceback: int | None = None,
        backend: Backend = "auto",
        output: SoftOutput = "frames",
    ) -> None:
        if nrzm not in (True, False, "auto") or not isinstance(nrzm, bool | str):
            raise LocalProtocolError(f"nrzm {nrzm!r} is not True, False or 'auto'")
        if output not in SOFT_OUTPUTS:
            raise LocalProtocolError(f"output {output!r} is not one of {', '.join(SOFT_OUTPUTS)}")
        self.output: SoftOutput = output
        # Validated by TmCodingConfig's own checks.
        self.coding = replace(
            coding,
            asm_search_errors=(
                coding.asm_search_errors if asm_search_errors is None else asm_search_errors
            ),
            asm_lock_errors=coding.asm_lock_errors if asm_lock_errors is None else asm_lock_errors,
            flywheel=coding.flywheel if flywheel is None else flywheel,
        )
        self.rate: CodeRate = check_rate(rate)
        self.modulation: Modulation = _check_modulation(modulation)
        self.nrzm: NrzmMode = nrzm
        self._traceback = DEFAULT_TRACEBACK[self.rate] if traceback is None else traceback
        self._backend: Backend = backend
        ViterbiDecoder(self.rate, traceback=self._traceback, backend=backend)  # validates

        positions = transmitted_positions(self.rate)
        self._period_bits = len(PUNCTURE_PATTERNS[self.rate][0])
        self._period = len(positions)  # coded symbols per puncturing period
        # Index, within a period, of the first symbol carrying each input bit.
        self._first_symbol = tuple(
            min(k for k, position in enumerate(positions) if position // 2 == j)
            for j in range(self._period_bits)
        )
        self._groups = 2 if self.modulation == "qpsk" else 1
        if self.modulation == "qpsk":  # complex symbols start on even coded symbols
            offsets = sorted({(2 * m) % self._period for m in range(self._period)})
        else:
            offsets = list(range(self._period))
        self._offsets = tuple(offsets)
        kinds = {
            False: (_Kind.UPRIGHT, _Kind.INVERTED),
            True: (_Kind.NRZM,),
            "auto": (_Kind.UPRIGHT, _Kind.INVERTED, _Kind.NRZM),
        }
        self._kinds: tuple[_Kind, ...] = kinds[nrzm]
        self._cadu_bits = 8 * self.coding.cadu_length
        cadu_symbols = self._cadu_bits * self._period // self._period_bits
        self._margin = cadu_symbols // 2  # how far back a re-search looks for a slipped ASM
        self._slice = cadu_symbols  # symbols decoded per search step
        self._warmup = self._traceback * self._period // self._period_bits + self._period

        self.stats = SoftSyncStats()
        self.drops = DropCounter()
        self._events: deque[SoftSyncEvent] = deque()
        self._history = [_Buffer(np.float32) for _ in range(self._groups)]
        self._received = 0  # coded symbols received = end of the history
        self._flushing = False
        self._lock: _Lock | None = None
        self._lost: _LostGrid | None = None
        self._retro_floor: int | None = None  # symbol; set while re-searching after a loss
        self._branches: list[_Branch] = []
        self._searchers: list[_Searcher] = []
        self._start_search(0, after_loss=False)

    # ------------------------------------------------------------------ public surface

    @property
    def hypotheses(self) -> tuple[Hypothesis, ...]:
        """Every hypothesis this configuration searches."""
        return tuple(
            self._hypothesis(group, offset, kind)
            for group in range(self._groups)
            for offset in self._offsets
            for kind in self._kinds
        )

    @property
    def hypothesis(self) -> Hypothesis | None:
        """The locked hypothesis, or None while searching."""
        return None if self._lock is None else self._lock.hypothesis

    @property
    def state(self) -> SyncState:
        """LOCK, CHECK (a candidate awaits its confirming marker) or SEARCH."""
        if self._lock is not None:
            return SyncState.LOCK
        if any(searcher.held for searcher in self._searchers):
            return SyncState.CHECK
        return SyncState.SEARCH

    def receive_symbols(self, symbols: npt.ArrayLike) -> None:
        """Add soft symbols: real (positive = 1, 0 = erasure) for BPSK, complex for QPSK."""
        streams = self._prepare(symbols)
        count = streams[0].size
        if count == 0:
            return
        for history, stream in zip(self._history, streams, strict=True):
            history.append(stream)
        self._received += count
        self.stats.symbols += count
        if self._lock is None:
            self.stats.searched_symbols += count
        self._process()

    def next_event(self) -> SoftSyncEvent | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def flush(self) -> None:
        """End of stream: decode what the Viterbi decoders still hold, deliver held
        blocks, report a cut final CADU as dropped; then start over in SEARCH."""
        self._flushing = True
        self._process()
        lock = self._lock
        if lock is not None:
            self._deliver(lock, lock.held, flywheeled=True)
            lock.held = []
            bits = lock.branch.bits
            rest = bits.end - lock.next_pos
            if rest >= ASM_BITS:
                errors = self._asm_errors(lock.branch, lock.kind, lock.next_pos)
                if errors <= self.coding.asm_lock_errors:
                    offset = self._symbol(lock.branch, lock.next_pos)
                    detail = f"stream ended {rest} bits into a {self._cadu_bits}-bit CADU"
                    event = CodeblockDropped(
                        layer=Layer.TM_CODING,
                        reason="truncated",
                        clause=CLAUSE_SYNC,
                        octets=rest // 8,
                        detail=detail,
                        offset=offset,
                        asm_errors=errors,
                        hypothesis=lock.hypothesis,
                    )
                    logger.debug("< dropped %s", detail)
                    self.stats.truncated += 1
                    self._events.append(self.drops.count(event))
        self._flushing = False
        self._lock = None
        self._lost = None
        for history in self._history:
            history.clear(self._received)
        self._start_search(self._received, after_loss=False)

    # ------------------------------------------------------------------ input

    def _prepare(self, symbols: npt.ArrayLike) -> list[F32]:
        """One float32 stream per decoder group, NaN -> 0, clipped to +-SOFT_LIMIT."""
        array = np.asarray(symbols)
        if array.ndim != 1:
            raise LocalProtocolError(f"symbols must be a 1-D array, got shape {array.shape}")
        kind = array.dtype.kind
        if self.modulation == "qpsk":
            if kind != "c":
                raise LocalProtocolError(
                    f"QPSK symbols must be complex (I + jQ), got dtype {array.dtype}"
                )
            re = _clean(array.real)
            im = _clean(array.imag)
            upright = np.empty(2 * array.size, np.float32)
            upright[0::2], upright[1::2] = re, im
            turned = np.empty(2 * array.size, np.float32)  # times -j: (Q, -I)
            turned[0::2], turned[1::2] = im, -re
            return [upright, turned]
        if kind == "c":
            raise LocalProtocolError(
                "complex symbols given to a BPSK synchronizer: pass modulation='qpsk'"
            )
        if kind not in "fi" or array.dtype == np.bool_:
            raise LocalProtocolError(
                f"symbols of dtype {array.dtype} are not soft symbols: pass float (positive"
                " = 1, 0 = erasure) or signed integers; map hard 0/1 bits with ideal_soft()"
            )
        return [_clean(array)]

    # ------------------------------------------------------------------ processing

    def _process(self) -> None:
        while True:
            if self._lock is None:
                # A CADU's worth of symbols at a time, so that a lock found early in a
                # long input stops the other decoders there.
                fed = min((branch.fed for branch in self._branches), default=self._received)
                stop = min(self._received, fed + self._slice)
                for branch in self._branches:
                    self._feed(branch, stop)
                found = self._search()
                if found is not None:
                    self._acquire(found)
                elif stop >= self._received:
                    break
            else:
                self._feed(self._lock.branch, self._received)
                if not self._track(self._lock):
                    break
        self._trim()

    def _feed(self, branch: _Branch, stop: int) -> None:
        """Decode the branch's symbols up to ``stop`` (at end of stream: all its bits)."""
        if branch.finished:
            return
        if branch.fed < stop:
            chunk = self._history[branch.group].view(branch.fed, stop)
            self.stats.viterbi_symbols += chunk.size
            branch.bits.append(branch.decoder.decode(chunk))
            branch.fed = stop
        if self._flushing and stop >= self._received:
            branch.bits.append(branch.decoder.flush())
            branch.finished = True

    def _start_search(self, floor: int, *, after_loss: bool) -> None:
        """New decoders on every alignment, from ``floor`` (back by a margin after a loss,
        where the slipped ASM can sit a little before the expected place)."""
        self._retro_floor = floor - self._margin if after_loss else None
        lowest = self._history[0].base
        first = max(lowest, floor - self._margin - self._warmup) if after_loss else floor
        self._branches = []
        self._searchers = []
        for group in range(self._groups):
            for offset in self._offsets:
                start = first + (offset - first) % self._period
                decoder = ViterbiDecoder(
                    self.rate, traceback=self._traceback, backend=self._backend
                )
                branch = _Branch(group, offset, start, decoder, 0)
                if self._retro_floor is not None:
                    branch.floor_bit = self._first_bit_at(branch, self._retro_floor)
                self._branches.append(branch)
                for kind in self._kinds:
                    hypothesis = self._hypothesis(group, offset, kind)
                    self._searchers.append(_Searcher(branch, kind, hypothesis, branch.floor_bit))

    def _hypothesis(self, group: int, offset: int, kind: _Kind) -> Hypothesis:
        return Hypothesis(
            symbol_offset=offset,
            quarter_turn=group == 1,
            inverted=None if kind is _Kind.NRZM else kind is _Kind.INVERTED,
            nrzm=kind is _Kind.NRZM,
        )

    def _search(self) -> _Searcher | None:
        """Advance every searcher; the confirmed one whose first marker comes first."""
        cache: dict[tuple[int, bool], tuple[int, U8]] = {}
        confirmed = [
            (self._symbol(s.branch, s.held[0][0]), index, s)
            for index, s in enumerate(self._searchers)
            if self._advance(s, cache)
        ]
        return min(confirmed, key=lambda item: item[:2])[2] if confirmed else None

    def _distances(
        self, searcher: _Searcher, cache: dict[tuple[int, bool], tuple[int, U8]]
    ) -> tuple[int, U8]:
        """ASM distances of the searcher's stream from its scan position on, shared by
        the upright and inverted readings of a branch: (first position, distances)."""
        branch, nrzm = searcher.branch, searcher.kind is _Kind.NRZM
        key = (id(branch), nrzm)
        entry = cache.get(key)
        if entry is None or entry[0] > searcher.scan:
            stream = self._read(
                branch, _Kind.NRZM if nrzm else _Kind.UPRIGHT, searcher.scan, branch.bits.end
            )
            entry = cache[key] = (searcher.scan, asm_distances(stream))
        return entry

    def _advance(self, searcher: _Searcher, cache: dict[tuple[int, bool], tuple[int, U8]]) -> bool:
        """SEARCH -> CHECK on one searcher; True once check_count markers confirm."""
        cfg = self.coding
        branch = searcher.branch
        available = branch.bits.end
        threshold = cfg.asm_search_errors
        hits: npt.NDArray[np.intp] | None = None  # candidates from scan on, in this call
        errors_at_hits = np.zeros(0, np.uint8)
        while True:
            if not searcher.held:
                if searcher.scan + ASM_BITS > available:
                    return False
                if hits is None:  # scan only moves forward: found once per call
                    base, distances = self._distances(searcher, cache)
                    ahead = distances[searcher.scan - base :]
                    if searcher.kind is _Kind.INVERTED:  # the complemented ASM
                        found = np.flatnonzero(ahead >= ASM_BITS - threshold)
                        errors_at_hits = ASM_BITS - ahead[found]
                    else:
                        found = np.flatnonzero(ahead <= threshold)
                        errors_at_hits = ahead[found]
                    hits = searcher.scan + found
                index = int(np.searchsorted(hits, searcher.scan))
                if index == hits.size:
                    searcher.scan = available - ASM_BITS + 1
                    return False
                searcher.scan = int(hits[index])
                searcher.held = [(searcher.scan, int(errors_at_hits[index]))]
                continue
            following = searcher.held[-1][0] + self._cadu_bits
            if following + ASM_BITS > available:
                return False
            errors = self._asm_errors(branch, searcher.kind, following)
            if errors <= threshold:
                searcher.held.append((following, errors))
                if len(searcher.held) > cfg.check_count:
                    return True
            else:
                logger.debug(
                    "candidate ASM at symbol %d (%s) not confirmed",
                    self._symbol(branch, searcher.scan),
                    searcher.hypothesis,
                )
                self.stats.rejected_candidates += 1
                searcher.held = []
                searcher.scan += 1

    def _acquire(self, searcher: _Searcher) -> None:
        """CHECK -> LOCK on the confirmed searcher; the other hypotheses stop."""
        branch, held = searcher.branch, searcher.held
        retro: list[tuple[int, int]] = []
        if self._retro_floor is not None:
            position = held[0][0] - self._cadu_bits
            lowest = max(branch.floor_bit, branch.bits.base + 1)
            while len(retro) < self.coding.flywheel and position >= lowest:
                retro.insert(0, (position, self._asm_errors(branch, searcher.kind, position)))
                position -= self._cadu_bits
        first = (retro or held)[0][0]
        at_symbol = self._symbol(branch, first)
        hypothesis = searcher.hypothesis
        if self._lost is not None and not self._same_grid(self._lost, hypothesis, at_symbol):
            self.stats.slips += 1
        self.stats.locks[hypothesis] += 1
        self._events.append(HypothesisLocked(hypothesis, at_symbol))
        logger.info("< locked on %s at symbol %d", hypothesis, at_symbol)
        lock = _Lock(branch, searcher.kind, hypothesis, next_pos=held[-1][0])
        self._lock = lock
        self._lost = None
        self._retro_floor = None
        self._branches = []
        self._searchers = []
        self._deliver(lock, retro, flywheeled=True)
        self._deliver(lock, held[:-1], flywheeled=False)

    def _same_grid(self, lost: _LostGrid, hypothesis: Hypothesis, symbol: int) -> bool:
        if hypothesis != lost.hypothesis:
            return False
        cadu_symbols = self._cadu_bits * self._period / self._period_bits
        blocks = round((symbol - lost.symbol) / cadu_symbols)
        return self._symbol_at(lost.start, lost.position + blocks * self._cadu_bits) == symbol

    def _track(self, lock: _Lock) -> bool:
        """LOCK with flywheel; True when lock is lost (the search has restarted)."""
        cfg = self.coding
        ready: list[tuple[int, int]] = []
        while lock.next_pos + self._cadu_bits <= lock.branch.bits.end:
            errors = self._asm_errors(lock.branch, lock.kind, lock.next_pos)
            if errors <= cfg.asm_lock_errors:
                if lock.held:
                    self._deliver(lock, ready, flywheeled=False)
                    self._deliver(lock, lock.held, flywheeled=True)
                    ready, lock.held = [], []
                lock.misses = 0
                ready.append((lock.next_pos, errors))
            else:
                lock.misses += 1
                if lock.misses >= cfg.flywheel:
                    self._deliver(lock, ready, flywheeled=False)
                    self._lose(lock)
                    return True
                lock.held.append((lock.next_pos, errors))
            lock.next_pos += self._cadu_bits
        self._deliver(lock, ready, flywheeled=False)
        return False

    def _lose(self, lock: _Lock) -> None:
        """Back to search on every hypothesis, from the first unconfirmed block."""
        position = lock.held[0][0] if lock.held else lock.next_pos
        symbol = self._symbol(lock.branch, position)
        self._events.append(SyncLost(symbol, lock.hypothesis))
        logger.info("< sync lost on %s at symbol %d", lock.hypothesis, symbol)
        self.stats.sync_losses += 1
        self._lost = _LostGrid(lock.hypothesis, lock.branch.start, position, symbol)
        self._lock = None
        self._start_search(symbol, after_loss=True)

    def _deliver(self, lock: _Lock, blocks: list[tuple[int, int]], *, flywheeled: bool) -> None:
        """Derandomize and R-S decode aligned blocks (decoded-bit position, ASM errors)."""
        if not blocks:
            return
        n_block = self.coding.codeblock_length
        rows = np.empty((len(blocks), n_block), np.uint8)
        for row, (position, _) in enumerate(blocks):
            start = position + ASM_BITS
            rows[row] = np.packbits(self._read(lock.branch, lock.kind, start, start + 8 * n_block))
        if self.output == "cadus":
            self._deliver_cadus(lock, blocks, rows, flywheeled=flywheeled)
            return
        result = decode_codeblocks(rows, self.coding)
        corrected = result.corrected.tolist()
        for row, (position, errors) in enumerate(blocks):
            event = codeblock_event(
                self.coding,
                result.frames[row],
                tuple(corrected[row]),
                offset=self._symbol(lock.branch, position),
                asm_errors=errors,
                hypothesis=lock.hypothesis,
            )
            self.stats.cadus += 1
            self.stats.flywheeled += flywheeled
            if isinstance(event, FrameDecoded):
                self.stats.frames += 1
                self.stats.corrected_symbols += sum(event.corrected)
                self._events.append(event)
            else:
                self.stats.uncorrectable += 1
                self._events.append(self.drops.count(event))

    def _deliver_cadus(
        self,
        lock: _Lock,
        blocks: list[tuple[int, int]],
        rows: U8,
        *,
        flywheeled: bool,
    ) -> None:
        """``output="cadus"``: the aligned blocks as CADUs, neither derandomized nor decoded."""
        for row, (position, errors) in enumerate(blocks):
            self.stats.cadus += 1
            self.stats.flywheeled += flywheeled
            self._events.append(
                CaduAligned(
                    ASM + rows[row].tobytes(),
                    self._symbol(lock.branch, position),
                    errors,
                    lock.hypothesis,
                    flywheeled,
                )
            )

    def _trim(self) -> None:
        """Forget decoded bits and symbols no decision can come back to."""
        keep_symbol = self._received
        if self._lock is not None:
            lock = self._lock
            position = lock.held[0][0] if lock.held else lock.next_pos
            lock.branch.bits.trim(position - 1)
            keep_symbol = self._symbol(lock.branch, position)
        else:
            retro = 0 if self._retro_floor is None else self.coding.flywheel * self._cadu_bits
            for branch in self._branches:
                position = min(
                    (s.held[0][0] if s.held else s.scan)
                    for s in self._searchers
                    if s.branch is branch
                )
                branch.bits.trim(position - retro - 1)
                keep_symbol = min(keep_symbol, self._symbol(branch, max(position, 0)))
        keep = keep_symbol - self._margin - self._warmup - self._period
        for branch in self._branches:
            keep = min(keep, branch.fed)
        for history in self._history:
            history.trim(keep)

    # ------------------------------------------------------------------ bits and symbols

    def _read(self, branch: _Branch, kind: _Kind, start: int, stop: int) -> U8:
        """Decoded bits [start, stop) of a branch as the searcher's kind reads them."""
        raw: U8 = branch.bits.view(start, stop)  # type: ignore[assignment]
        if kind is _Kind.INVERTED:
            return raw ^ np.uint8(1)
        if kind is _Kind.NRZM:  # 131.0-B-5 3.3.3: a 1 is a change of level
            if start > branch.bits.base:
                before: U8 = branch.bits.view(start - 1, stop - 1)  # type: ignore[assignment]
            else:
                before = np.concatenate((np.zeros(1, np.uint8), raw[:-1]))
            return raw ^ before
        return raw

    def _asm_errors(self, branch: _Branch, kind: _Kind, position: int) -> int:
        window = self._read(branch, kind, position, position + ASM_BITS)
        return int(np.count_nonzero(window != _ASM_BITS_NP))

    def _symbol_at(self, start: int, bit: int) -> int:
        period, within = divmod(bit, self._period_bits)
        return start + period * self._period + self._first_symbol[within]

    def _symbol(self, branch: _Branch, bit: int) -> int:
        """Coded-symbol index where the decoded bit's first symbol was received."""
        return self._symbol_at(branch.start, bit)

    def _first_bit_at(self, branch: _Branch, symbol: int) -> int:
        """The first decoded bit whose first symbol is at or after ``symbol``."""
        if symbol <= branch.start:
            return 0
        period, within = divmod(symbol - branch.start, self._period)
        later = [j for j, first in enumerate(self._first_symbol) if first >= within]
        return period * self._period_bits + (later[0] if later else self._period_bits)


def _clean(array: npt.NDArray[np.generic]) -> F32:
    """Soft values as finite float32: NaN -> 0 (erasure), clipped to +-SOFT_LIMIT."""
    clipped = np.clip(array, -SOFT_LIMIT, SOFT_LIMIT)
    if clipped.dtype.kind == "f":
        np.copyto(clipped, 0.0, where=np.isnan(clipped))
    cleaned: F32 = np.ascontiguousarray(clipped, dtype=np.float32)
    return cleaned
