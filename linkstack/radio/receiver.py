"""IQ in, frames out, and back: the coded PSK downlink end to end, sans-I/O.

:class:`IqTransmitter` turns TM Transfer Frames into complex baseband samples:
``encode_cadus`` (Reed-Solomon, pseudo-randomizer, ASM; CCSDS 131.0-B-5 sections 4,
9 and 10), the convolutional code (section 3: K = 7, rate 1/2 or punctured, NRZ-M at
the encoder input if asked), one continuous stream from the all-zeros state with no
tail, then the :class:`~linkstack.radio.modem.Modulator` (BPSK or Gray-mapped QPSK,
SRRC pulses).  With the samples it gives one
:class:`~linkstack.radio.recording.CaduAnnotation` per CADU: the sample at the peak of
its first channel symbol's pulse and the samples its symbols span, so that a SigMF
recording says where each CADU was sent.  Ahead of the first CADU go the
modulator's uncoded ramp (for the receiver's AGC and loops) and ``lead_bits`` bits of
the CCSDS pseudo-random sequence (131.0-B-5 10.4) through the encoder: a Viterbi
decoder that starts on the ramp needs some valid code sequence before it decides
the first ASM's bits reliably (at Eb/N0 6 dB without it, the first ASM came out with
4 bit errors, beyond the search threshold).  :meth:`IqTransmitter.flush` ends the burst:
``tail_bits`` zero bits through the encoder (so that the Viterbi decoder can decide
the last CADU's bits; at rate 1/2 they alternate the BPSK symbols, a timing loop's
best pattern), then the modulator's filter tail.

:class:`IqReceiver` is a streaming engine, ``receive_samples`` / ``next_event`` /
``flush``: the :class:`~linkstack.radio.modem.Demodulator` (matched filter, AGC,
symbol timing, carrier loops) feeds its soft symbols to a
:class:`~linkstack.coding.soft.SoftCaduSynchronizer`, which resolves the symbol
alignment and the carrier phase ambiguity, Viterbi-decodes, finds the ASMs and
R-S decodes.  Each CADU it decodes or drops becomes one :class:`CaduReceived` event
with its place in the recording (sample index and time, ``sample / sample_rate``)
and what the demodulator measured there (carrier frequency offset in Hz, Es/N0),
with the synchronizer's hypothesis, ASM bit errors and R-S corrections; each lock
and loss of lock a :class:`SyncChanged`.  With ``output="cadus"`` the synchronizer
stops short of the R-S decoder: each CADU found is a :class:`CaduReceived` with
status ``"aligned"`` and the ``cadu`` as received (ASM, then the decided codeblock,
still randomized; :class:`~linkstack.coding.soft.CaduAligned`), for a ground endpoint
whose own synchronizer derandomizes, corrects and counts, as it does for CADUs from
any other link.

Where a CADU sits: the demodulator works in blocks of ``block_samples`` samples and
the receiver notes, after each, how many symbols it has produced and what its loops
estimate.  A symbol index is turned into a sample index by interpolating between
those notes, less the matched filter's delay (half its span) and the interpolator's
look-ahead; the result is good to a symbol or two, which is what an annotation
needs.  The loops' figures are those of the block in which the CADU's first symbol
came out.  Notes older than ``history_cadus`` CADUs are forgotten (the synchronizer
never reports further back than its flywheel); an event that is older still gets
the oldest note kept.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.coding.convolutional import (
    CodeRate,
    ConvolutionalEncoder,
    check_rate,
    unpack_bits,
)
from linkstack.coding.soft import (
    CaduAligned,
    Hypothesis,
    HypothesisLocked,
    NrzmMode,
    SoftCaduSynchronizer,
    SoftOutput,
    SoftSyncStats,
)
from linkstack.coding.tm import (
    CodeblockDropped,
    FrameDecoded,
    SyncLost,
    TmCodingConfig,
    encode_cadus,
    pseudo_random_sequence,
)
from linkstack.errors import Dropped, LocalProtocolError
from linkstack.radio.modem import (
    BITS_PER_SYMBOL,
    C64,
    Demodulator,
    DemodulatorStats,
    LoopConfig,
    Modulation,
    Modulator,
)
from linkstack.radio.recording import CaduAnnotation

logger = logging.getLogger(__name__)

__all__ = [
    "CaduReceived",
    "IqReceiver",
    "IqTransmitter",
    "ReceiverEvent",
    "ReceiverStats",
    "SyncChanged",
    "TransmittedBlock",
    "code_rate_value",
]

#: Samples per demodulator block: the resolution of the receiver's notes.
DEFAULT_BLOCK_SAMPLES: Final = 4096
#: CADUs' worth of notes kept.
DEFAULT_HISTORY_CADUS: Final = 32
#: Uncoded idle symbols the modulator sends first (BPSK and QPSK lock within them at
#: Eb/N0 6 dB, 1 % carrier offset, 100 ppm; 256 lost QPSK's first CADU now and then).
DEFAULT_RAMP_SYMBOLS: Final = 1024
#: Bits of the CCSDS pseudo-random sequence sent through the encoder before the first
#: CADU, so that the receiver's Viterbi decoders meet a valid code sequence (not the
#: uncoded ramp) before the first ASM; per bit of a symbol, so that QPSK's lead lasts
#: as long as BPSK's and the first ASM comes after the blind carrier search's first
#: block (with half the symbols QPSK lost its first CADU now and then).
DEFAULT_LEAD_BITS: Final = 1024
#: Zero bits sent through the encoder after the last CADU (about 2.5 times the rate
#: 1/2 Viterbi traceback).
DEFAULT_TAIL_BITS: Final = 256
#: The Demodulator's interpolator decides a symbol two samples after its instant.
_INTERPOLATOR_LOOKAHEAD: Final = 2

# TM Transfer Frame primary header, CCSDS 132.0-B-3 4.1.2:
#   octet 0-1: version (2) | spacecraft id (10) | VCID (3) | OCF flag (1)
#   octet 2: master channel frame count, octet 3: VC frame count
_VCID_SHIFT: Final = 1  # CCSDS 132.0-B-3 4.1.2.3, bits 12-14 of the header
_VCID_MASK: Final = 0x7
_VC_COUNT_OCTET: Final = 3  # CCSDS 132.0-B-3 4.1.2.6
_HEADER_OCTETS: Final = 6  # CCSDS 132.0-B-3 4.1.2


def code_rate_value(rate: CodeRate) -> Fraction:
    """The code rate as a number (information bits per coded bit)."""
    numerator, denominator = check_rate(rate).split("/")
    return Fraction(int(numerator), int(denominator))


# --------------------------------------------------------------------------- transmitter


@dataclass(frozen=True, slots=True)
class TransmittedBlock:
    """Samples of some frames and where each of their CADUs starts."""

    samples: C64
    annotations: tuple[CaduAnnotation, ...]


class IqTransmitter:
    """TM frames in, complex baseband samples and CADU annotations out (streaming).

    Sample indices count from the first sample this transmitter produced.
    """

    __slots__ = (
        "_bits_per_symbol",
        "_cadus",
        "_coded_bits",
        "_encoder",
        "_modulator",
        "_ramp_symbols",
        "_spare",
        "_started",
        "coding",
        "lead_bits",
        "modulation",
        "rate",
        "tail_bits",
    )

    def __init__(
        self,
        coding: TmCodingConfig,
        *,
        rate: CodeRate = "1/2",
        nrzm: bool = False,
        modulation: Modulation = "bpsk",
        sps: int = 4,
        rolloff: float = 0.35,
        span: int = 8,
        ramp_symbols: int = DEFAULT_RAMP_SYMBOLS,
        ramp_rng: np.random.Generator | None = None,
        lead_bits: int | None = None,
        tail_bits: int = DEFAULT_TAIL_BITS,
    ) -> None:
        self.coding = coding
        self.rate: CodeRate = check_rate(rate)
        self._modulator = Modulator(
            modulation, sps, rolloff, span=span, ramp_symbols=ramp_symbols, ramp_rng=ramp_rng
        )
        self.modulation: Modulation = self._modulator.shape.modulation
        if lead_bits is None:
            lead_bits = DEFAULT_LEAD_BITS * BITS_PER_SYMBOL[self.modulation]
        for name, value in (("lead_bits", lead_bits), ("tail_bits", tail_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LocalProtocolError(f"{name} must be an integer >= 0, got {value!r}")
        self.lead_bits = lead_bits
        self.tail_bits = tail_bits
        self._started = False
        self._encoder = ConvolutionalEncoder(self.rate, nrzm=nrzm)
        self._bits_per_symbol = BITS_PER_SYMBOL[self.modulation]
        self._ramp_symbols = ramp_symbols
        self._coded_bits = 0  # coded bits produced so far (spare ones included)
        self._cadus = 0
        self._spare = np.zeros(0, np.uint8)  # QPSK: a coded bit waiting for its pair

    @property
    def cadus(self) -> int:
        """CADUs sent so far."""
        return self._cadus

    def transmit(
        self, frames: bytes | bytearray | memoryview | Iterable[bytes]
    ) -> TransmittedBlock:
        """Samples of these frames (concatenated whole frames of the configured length,
        or an iterable of frames), with one annotation per CADU."""
        n_frame = self.coding.frame_octets
        if isinstance(frames, bytes | bytearray | memoryview):
            data = bytes(frames)
            if len(data) % n_frame:
                raise LocalProtocolError(
                    f"{len(data)} octets are not whole {n_frame}-octet frames"
                    f" ({len(data) % n_frame} left over)"
                )
            listed = [data[i : i + n_frame] for i in range(0, len(data), n_frame)]
        else:
            listed = [bytes(frame) for frame in frames]
        shape = self._modulator.shape
        delay = shape.span * shape.sps // 2  # the pulse's peak, after the filter
        notes: list[CaduAnnotation] = []
        coded: list[npt.NDArray[np.uint8]] = []
        if not self._started:
            self._started = True
            lead = self._encoder.encode(
                unpack_bits(pseudo_random_sequence(-(-self.lead_bits // 8)))[: self.lead_bits]
            )
            self._coded_bits += lead.size
            coded.append(lead)
        for frame in listed:
            bits = self._encoder.encode(unpack_bits(encode_cadus(frame, self.coding)))
            first = self._coded_bits // self._bits_per_symbol
            last = -(-(self._coded_bits + bits.size) // self._bits_per_symbol)
            notes.append(
                CaduAnnotation(
                    sample_start=(self._ramp_symbols + first) * shape.sps + delay,
                    sample_count=(last - first) * shape.sps,
                    comment=f"CADU {self._cadus}",
                    vcid=_vcid(frame),
                    vc_count=_vc_count(frame),
                )
            )
            self._coded_bits += bits.size
            self._cadus += 1
            coded.append(bits)
        samples = self._modulate(np.concatenate(coded) if coded else np.zeros(0, np.uint8))
        logger.debug("> %d CADUs, %d samples", len(notes), samples.size)
        return TransmittedBlock(samples, tuple(notes))

    def flush(self) -> C64:
        """End of the burst: ``tail_bits`` zero bits through the encoder (a spare QPSK
        bit paired with a 0 bit), and the modulator's filter tail."""
        lead: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        if not self._started:  # nothing sent: the lead alone
            self._started = True
            lead = self._encoder.encode(
                unpack_bits(pseudo_random_sequence(-(-self.lead_bits // 8)))[: self.lead_bits]
            )
        bits = np.concatenate((lead, self._encoder.encode(np.zeros(self.tail_bits, np.uint8))))
        self._coded_bits += bits.size
        if self._bits_per_symbol == 2 and (self._spare.size + bits.size) % 2:
            bits = np.concatenate((bits, np.zeros(1, np.uint8)))
        samples = self._modulate(bits)
        return np.concatenate((samples, self._modulator.flush()))

    def _modulate(self, bits: npt.NDArray[np.uint8]) -> C64:
        """Coded bits to samples; QPSK keeps an odd last bit for the next call."""
        if self._bits_per_symbol == 2:
            if self._spare.size:
                bits = np.concatenate((self._spare, bits))
            whole = bits.size - bits.size % 2
            self._spare = bits[whole:].copy()
            bits = bits[:whole]
        return self._modulator.process(bits.astype(np.uint8))


def _vcid(frame: bytes) -> int | None:
    if len(frame) < _HEADER_OCTETS:
        return None
    return (frame[1] >> _VCID_SHIFT) & _VCID_MASK


def _vc_count(frame: bytes) -> int | None:
    if len(frame) < _HEADER_OCTETS:
        return None
    return frame[_VC_COUNT_OCTET]


# --------------------------------------------------------------------------- receiver


@dataclass(frozen=True, slots=True, kw_only=True)
class CaduReceived:
    """One CADU decoded or dropped, and where in the recording."""

    #: "decoded", "aligned" (``output="cadus"``), or the drop's reason
    #: (``uncorrectable``, ``truncated``...).
    status: str
    #: The transfer frame, when decoded.
    frame: bytes | None
    #: Sample index of the CADU's first symbol (approximate: a symbol or two).
    sample: int
    #: The same in seconds from the first sample (``sample / sample_rate``).
    time_s: float
    #: The carrier frequency offset the demodulator tracked there, Hz.
    frequency_offset_hz: float
    #: Its Es/N0 estimate there (M2M4), dB per channel symbol.
    snr_db: float
    #: The synchronizer's hypothesis (alignment, phase, NRZ-M).
    hypothesis: Hypothesis | None
    #: Bit errors in the ASM.
    asm_errors: int
    #: R-S symbols corrected per codeword (-1 where uncorrectable).
    corrected: tuple[int, ...]
    #: Coded symbols from the first one demodulated (two per QPSK symbol).
    symbol: int
    #: Why it was dropped, in words ("" when decoded).
    detail: str = ""
    #: ``output="cadus"``: the CADU as received (status "aligned"); None otherwise.
    cadu: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncChanged:
    """The synchronizer locked ("locked") or lost lock ("sync_lost")."""

    event: str
    sample: int
    time_s: float
    hypothesis: Hypothesis | None


ReceiverEvent = CaduReceived | SyncChanged


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """The receiver's counters: the demodulator's loops and the synchronizer's counts."""

    samples: int
    demodulator: DemodulatorStats
    sync: SoftSyncStats


@dataclass(frozen=True, slots=True)
class _Note:
    symbols: int  # channel symbols produced by the end of the block
    samples: int  # samples received by the end of the block
    frequency_offset_hz: float
    snr_db: float


class IqReceiver:
    """Complex samples in, :class:`CaduReceived` / :class:`SyncChanged` events out."""

    __slots__ = (
        "_bits_per_symbol",
        "_block",
        "_delay",
        "_events",
        "_keep_symbols",
        "_notes",
        "_samples",
        "demodulator",
        "sample_rate",
        "synchronizer",
    )

    def __init__(
        self,
        coding: TmCodingConfig,
        *,
        sample_rate: float,
        rate: CodeRate = "1/2",
        nrzm: NrzmMode = False,
        modulation: Modulation = "bpsk",
        sps: int = 4,
        rolloff: float = 0.35,
        span: int = 8,
        loops: LoopConfig | None = None,
        block_samples: int = DEFAULT_BLOCK_SAMPLES,
        history_cadus: int = DEFAULT_HISTORY_CADUS,
        output: SoftOutput = "frames",
    ) -> None:
        if not (isinstance(sample_rate, int | float) and math.isfinite(sample_rate)):
            raise LocalProtocolError(f"sample_rate {sample_rate!r} is not a number of Hz")
        self.demodulator = Demodulator(
            modulation, sps, rolloff, span=span, loops=loops, sample_rate=sample_rate
        )
        self.sample_rate = float(sample_rate)
        self.synchronizer = SoftCaduSynchronizer(
            coding,
            rate=rate,
            nrzm=nrzm,
            modulation=self.demodulator.shape.modulation,
            output=output,
        )
        for name, value in (("block_samples", block_samples), ("history_cadus", history_cadus)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} must be an integer >= 1, got {value!r}")
        self._block = block_samples
        self._bits_per_symbol = BITS_PER_SYMBOL[self.demodulator.shape.modulation]
        rate_value = code_rate_value(self.synchronizer.rate)
        cadu_symbols = math.ceil(8 * coding.cadu_length / rate_value / self._bits_per_symbol)
        self._keep_symbols = history_cadus * cadu_symbols
        self._delay = span * sps // 2 + _INTERPOLATOR_LOOKAHEAD
        self._notes: deque[_Note] = deque()
        self._events: deque[ReceiverEvent] = deque()
        self._samples = 0

    # ------------------------------------------------------------------ public surface

    def receive_samples(self, samples: npt.ArrayLike) -> None:
        """Add complex samples (any count; NaN and infinite ones are read as zeros)."""
        array = np.asarray(samples)
        if array.ndim != 1:
            raise LocalProtocolError(f"samples must be a 1-D array, got shape {array.shape}")
        for start in range(0, array.size, self._block):
            self._demodulate(self.demodulator.process(array[start : start + self._block]))
            self._samples += min(self._block, array.size - start)

    def flush(self) -> None:
        """End of the recording: the symbols still in the demodulator, then the
        synchronizer's held and cut blocks."""
        self._demodulate(self.demodulator.flush())
        self.synchronizer.flush()
        self._drain()

    def next_event(self) -> ReceiverEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def stats(self) -> ReceiverStats:
        return ReceiverStats(self._samples, self.demodulator.stats, self.synchronizer.stats)

    # ------------------------------------------------------------------ internals

    def _demodulate(self, soft: npt.NDArray[np.generic]) -> None:
        stats = self.demodulator.stats
        self._notes.append(
            _Note(
                stats.symbols,
                stats.samples,
                stats.frequency_offset_hz or 0.0,
                stats.es_n0_db,
            )
        )
        while len(self._notes) > 2 and self._notes[1].symbols < stats.symbols - self._keep_symbols:
            self._notes.popleft()
        if soft.size:
            self.synchronizer.receive_symbols(soft)
        self._drain()

    def _place(self, coded_symbol: int) -> tuple[int, _Note]:
        """The sample index of a coded symbol, and the note of its block."""
        symbol = coded_symbol // self._bits_per_symbol
        notes = self._notes
        keys = [note.symbols for note in notes]
        index = min(bisect_right(keys, symbol), len(notes) - 1)
        note = notes[index]
        if index == 0:
            before_symbols, before_samples = 0, 0
        else:
            before_symbols, before_samples = notes[index - 1].symbols, notes[index - 1].samples
        span = note.symbols - before_symbols
        if span > 0:
            fraction = (symbol - before_symbols) / span
            position = before_samples + fraction * (note.samples - before_samples)
        else:
            position = float(note.samples)
        return max(0, round(position) - self._delay), note

    def _drain(self) -> None:
        while (event := self.synchronizer.next_event()) is not None:
            if isinstance(event, FrameDecoded | CodeblockDropped):
                sample, note = self._place(event.offset)
                self._events.append(
                    CaduReceived(
                        status="decoded" if isinstance(event, FrameDecoded) else event.reason,
                        frame=event.frame if isinstance(event, FrameDecoded) else None,
                        sample=sample,
                        time_s=sample / self.sample_rate,
                        frequency_offset_hz=note.frequency_offset_hz,
                        snr_db=note.snr_db,
                        hypothesis=event.hypothesis,
                        asm_errors=event.asm_errors,
                        corrected=tuple(event.corrected),
                        symbol=event.offset,
                        detail="" if isinstance(event, FrameDecoded) else event.detail,
                    )
                )
            elif isinstance(event, CaduAligned):
                sample, note = self._place(event.offset)
                self._events.append(
                    CaduReceived(
                        status="aligned",
                        frame=None,
                        sample=sample,
                        time_s=sample / self.sample_rate,
                        frequency_offset_hz=note.frequency_offset_hz,
                        snr_db=note.snr_db,
                        hypothesis=event.hypothesis,
                        asm_errors=event.asm_errors,
                        corrected=(),
                        symbol=event.offset,
                        cadu=event.cadu,
                    )
                )
            elif isinstance(event, Dropped):  # a drop without a place (none today)
                sample, note = self._place(self.synchronizer.stats.symbols)
                self._events.append(
                    CaduReceived(
                        status=event.reason,
                        frame=None,
                        sample=sample,
                        time_s=sample / self.sample_rate,
                        frequency_offset_hz=note.frequency_offset_hz,
                        snr_db=note.snr_db,
                        hypothesis=None,
                        asm_errors=0,
                        corrected=(),
                        symbol=self.synchronizer.stats.symbols,
                        detail=event.detail,
                    )
                )
            elif isinstance(event, HypothesisLocked | SyncLost):
                at = event.at_symbol if isinstance(event, HypothesisLocked) else event.offset
                sample, _ = self._place(at)
                self._events.append(
                    SyncChanged(
                        event="locked" if isinstance(event, HypothesisLocked) else "sync_lost",
                        sample=sample,
                        time_s=sample / self.sample_rate,
                        hypothesis=event.hypothesis,
                    )
                )
