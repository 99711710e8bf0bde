"""Coded downlink stage of the simulated channel: CADUs through the TM convolutional
code, BPSK and white Gaussian noise, and back to CADU octets (sans-I/O, seeded).

A :class:`CodedDownlink` has two halves, run by a ``Channel`` whose config says
``coding="conv"`` (:mod:`linkstack.radio.channel`), or by a test directly:

* **transmitter** (:meth:`CodedDownlink.transmit`): each CADU goes through one
  :class:`~linkstack.coding.convolutional.ConvolutionalEncoder` (CCSDS 131.0-B-5 3.3:
  rate 1/2, K = 7, G2 inverted) that carries its state from CADU to CADU, with no
  tail, as a downlink that transmits continuously does; the coded bits come out
  packed eight to the octet, twice the CADU's length, and travel through the
  channel's timing, loss, duplication, reordering and outages as one unit;
* **receiver** (:meth:`CodedDownlink.receive`): the coded bits of a unit that arrives
  are mapped to BPSK soft symbols (bit 1 -> +1), turned by the session's carrier
  phase ambiguity (0 or 180 degrees, drawn once), given additive white Gaussian
  noise at ``ebn0_db`` per information bit (``linkstack.coding.soft.add_awgn``:
  sigma^2 = 1 / (2 R Eb/N0), R = 1/2), and, with ``slip_probability`` per unit,
  slipped by one symbol (one dropped or one inserted, at a uniform place).  Ahead of
  the first unit the receiver hears a random number (0 .. ``START_OFFSET_SYMBOLS`` - 1)
  of symbols of noise, so that it starts at an unknown symbol and bit offset.  A
  :class:`~linkstack.coding.soft.SoftCaduSynchronizer` with ``output="cadus"`` then
  resolves the pair offset and the inversion, Viterbi-decodes, finds the ASMs and
  hands back each CADU re-aligned: the ASM and the decided codeblock octets,
  inversion undone, still randomized, so that the ground endpoint's own
  ``CaduSynchronizer`` derandomizes, R-S corrects and counts as on an uncoded link.

A CADU leaves the receiver once the symbols of the next one have come in (the Viterbi
decoder decides a bit some 35 to 100 bits after it arrives, and lock needs two
markers one CADU apart): on a link that sends idle frames, one frame later.

Randomness comes from the ``numpy.random.Generator`` passed in, drawn in this order:
the phase, the start offset (at construction); at the first unit received, the noise
symbols ahead of it; per unit received, its noise, then the slip (whether, where,
drop or insert, the inserted symbol's noise).  :class:`CodedStats` counts what
happened.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.coding.convolutional import ConvolutionalEncoder, unpack_bits
from linkstack.coding.soft import (
    CaduAligned,
    Hypothesis,
    HypothesisLocked,
    SoftCaduSynchronizer,
    add_awgn,
    ideal_soft,
)
from linkstack.coding.tm import SyncLost, TmCodingConfig
from linkstack.errors import LocalProtocolError

logger = logging.getLogger(__name__)

__all__ = ["CODE_RATE", "START_OFFSET_SYMBOLS", "CodedDownlink", "CodedStats"]

#: The inner code: the basic convolutional code, CCSDS 131.0-B-5 3.3.
CODE_RATE: Final = "1/2"
#: Noise symbols the receiver hears before the first transmitted one: uniform in
#: 0 .. START_OFFSET_SYMBOLS - 1, which covers both pair offsets and every bit offset
#: within the ASM (an implementation choice).
START_OFFSET_SYMBOLS: Final = 64

F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class CodedStats:
    """What a coded downlink did, counted since it was created."""

    #: CADUs through the encoder (lost ones included: the transmitter sent them).
    cadus_encoded: int = 0
    #: Coded symbols transmitted (two per CADU bit).
    symbols_sent: int = 0
    #: Coded symbols into the receiver: the start offset's noise, duplicates and slips
    #: included, lost units not.
    symbols_received: int = 0
    #: Received symbols whose hard decision differs from the symbol sent, the carrier
    #: phase undone: channel bit errors before the Viterbi decoder.
    raw_bit_errors: int = 0
    #: Units slipped by one symbol, dropped or inserted.
    slips: int = 0
    symbols_dropped: int = 0
    symbols_inserted: int = 0
    #: The session's carrier phase ambiguity, degrees (0 or 180).
    phase_deg: int = 0
    #: Noise symbols ahead of the first transmitted one.
    start_offset: int = 0
    #: Re-aligned CADUs handed on (flywheeled ones included).
    cadus_delivered: int = 0
    #: Of those, kept by the receiver's flywheel although their ASM was missed.
    flywheeled: int = 0
    #: Locks the receiver declared, and losses of lock.
    locks: int = 0
    sync_losses: int = 0
    #: Locks on another hypothesis than the lock before (a slip flips the pair offset).
    hypothesis_changes: int = 0
    #: The hypothesis the receiver is locked on; None while it searches.
    hypothesis: Hypothesis | None = None


class CodedDownlink:
    """The coded downlink's transmitter and receiver: ``transmit`` each CADU sent,
    ``receive`` each unit that arrives, in arrival order."""

    __slots__ = (
        "_encoder",
        "_inverted",
        "_last_locked",
        "_receiver",
        "_sigma",
        "coding",
        "ebn0_db",
        "rng",
        "slip_probability",
        "stats",
    )

    def __init__(
        self,
        coding: TmCodingConfig,
        *,
        ebn0_db: float | None,
        slip_probability: float = 0.0,
        rng: np.random.Generator,
    ) -> None:
        """``coding`` is the link's TM coding (its CADU length is the receiver's grid);
        ``ebn0_db`` None gives noise-free symbols."""
        if ebn0_db is not None and not math.isfinite(ebn0_db):
            raise LocalProtocolError(f"ebn0_db {ebn0_db} is not a finite number of dB")
        if not 0.0 <= slip_probability <= 1.0:
            raise LocalProtocolError(f"slip_probability {slip_probability} outside 0..1")
        self.coding = coding
        self.ebn0_db = ebn0_db
        self.slip_probability = slip_probability
        self.rng = rng
        # sigma^2 = 1 / (2 R Eb/N0) per coded symbol, as add_awgn (R = 1/2).
        self._sigma = 0.0 if ebn0_db is None else math.sqrt(1.0 / 10 ** (ebn0_db / 10))
        self._encoder = ConvolutionalEncoder(CODE_RATE)
        self._receiver = SoftCaduSynchronizer(coding, rate=CODE_RATE, output="cadus")
        self._inverted = bool(rng.integers(2))
        self.stats = CodedStats(
            phase_deg=180 if self._inverted else 0,
            start_offset=int(rng.integers(START_OFFSET_SYMBOLS)),
        )
        self._last_locked: Hypothesis | None = None

    @property
    def inverted(self) -> bool:
        """The session's carrier sits at 180 degrees."""
        return self._inverted

    def transmit(self, cadu: bytes) -> bytes:
        """The coded bits of the next CADU of the stream, packed (MSB first)."""
        if len(cadu) != self.coding.cadu_length:
            raise LocalProtocolError(
                f"a unit of {len(cadu)} octets on a coded downlink: CADUs of this link"
                f" are {self.coding.cadu_length} octets"
            )
        coded = self._encoder.encode(unpack_bits(cadu))
        self.stats.cadus_encoded += 1
        self.stats.symbols_sent += coded.size
        return np.packbits(coded).tobytes()

    def receive(self, on_air: bytes) -> list[bytes]:
        """One unit's coded bits as they arrive: the CADUs the receiver completed, in
        order (none while it searches; otherwise mostly one, a unit behind)."""
        stats = self.stats
        sent = unpack_bits(on_air)
        if stats.symbols_received == 0 and stats.start_offset:
            ahead = self.rng.integers(0, 2, stats.start_offset, dtype=np.uint8)
            sent = np.concatenate((ahead, sent))
        symbols = ideal_soft(sent)
        if self._inverted:
            symbols = -symbols
        if self.ebn0_db is not None:
            noisy = add_awgn(symbols, ebn0_db=self.ebn0_db, rate=CODE_RATE, rng=self.rng)
            symbols = np.asarray(noisy, np.float32)
        expected = sent ^ np.uint8(self._inverted)
        stats.raw_bit_errors += int(np.count_nonzero((symbols > 0) != expected.astype(bool)))
        symbols = self._slip(symbols)
        stats.symbols_received += symbols.size
        self._receiver.receive_symbols(symbols)
        return self._drain()

    def _slip(self, symbols: F32) -> F32:
        """With ``slip_probability``: one symbol dropped or inserted at a uniform place."""
        if self.slip_probability <= 0 or self.rng.random() >= self.slip_probability:
            return symbols
        where = int(self.rng.integers(symbols.size))
        self.stats.slips += 1
        if self.rng.integers(2):
            self.stats.symbols_dropped += 1
            logger.debug("~ symbol %d dropped", self.stats.symbols_received + where)
            dropped: F32 = np.delete(symbols, where)
            return dropped
        self.stats.symbols_inserted += 1
        logger.debug("~ symbol inserted before %d", self.stats.symbols_received + where)
        extra = np.float32(self._sigma * self.rng.standard_normal())
        inserted: F32 = np.insert(symbols, where, extra)
        return inserted

    def _drain(self) -> list[bytes]:
        stats = self.stats
        cadus: list[bytes] = []
        while (event := self._receiver.next_event()) is not None:
            if isinstance(event, CaduAligned):
                cadus.append(event.cadu)
                stats.cadus_delivered += 1
                stats.flywheeled += event.flywheeled
            elif isinstance(event, HypothesisLocked):
                stats.locks += 1
                if self._last_locked is not None and event.hypothesis != self._last_locked:
                    stats.hypothesis_changes += 1
                self._last_locked = stats.hypothesis = event.hypothesis
            elif isinstance(event, SyncLost):
                stats.sync_losses += 1
                stats.hypothesis = None
        return cadus
