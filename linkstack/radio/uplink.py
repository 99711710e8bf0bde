"""The TC uplink as BPSK IQ, sans-I/O: CLTUs in, samples out, and back.

:class:`CltuModulator` (the ground) sends each CLTU the way PLOP-2 does (CCSDS
201.0-B-3 4.3.3: the carrier stays up between CLTUs): an acquisition sequence of
alternating ones and zeros (4.2.1; its preferred minimum of 16 octets), the CLTU's bits
(CCSDS 231.0-B-4 5.2: start sequence, BCH codeblocks, tail sequence; uncoded below
that: the BCH code is the uplink's only code), and an idle sequence of the same pattern
(4.2.3) behind it.  The idle sequence also pushes the CLTU's last bits through the
filters on the way (the modulator's and the receiver's SRRC filters, a channel
flowgraph's resampler): an IQ stream that is only sent while there are CLTUs would
otherwise hold them until the next CLTU.  BPSK through the
:class:`~linkstack.radio.modem.Modulator` (bit 1 -> +1, SRRC, ``sps`` samples per
symbol); its ramp (alternating symbols) goes ahead of the first CLTU so that the
receiver's loops lock.

:class:`CltuReceiver` (the spacecraft) runs the samples through the
:class:`~linkstack.radio.modem.Demodulator` and slices its soft symbols into a
:class:`~linkstack.coding.cltu_sync.CltuBitSynchronizer`, which resolves the bit
offset and the BPSK phase ambiguity and hands on each CLTU re-aligned, as octets, for
the spacecraft's CLTU decoder (which corrects and counts the BCH codeblocks as it does
for a TCP or UDP link).
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.coding.cltu_sync import CltuBitStats, CltuBitSynchronizer
from linkstack.coding.convolutional import unpack_bits
from linkstack.coding.tc import DecoderMode
from linkstack.errors import LocalProtocolError
from linkstack.radio.modem import C64, Demodulator, DemodulatorStats, Modulator

logger = logging.getLogger(__name__)

__all__ = ["CltuModulator", "CltuReceiver"]

#: Acquisition sequence ahead of each CLTU, bits: 16 octets, the preferred minimum of
#: CCSDS 201.0-B-3 4.2.1.
ACQUISITION_BITS: Final = 128
#: Idle sequence behind each CLTU, bits (CCSDS 201.0-B-3 4.2.3 leaves its length free;
#: 4.3.3 recommends at least one octet between CLTUs): enough to carry the tail through
#: the filters on the way (the two SRRC filters of span 8 hold 8 symbols between them).
IDLE_BITS: Final = 128
#: Alternating symbols the modulator sends before the first CLTU (for the receiver's
#: AGC, timing and carrier loops, as the IQ downlink's ramp).
RAMP_SYMBOLS: Final = 1024
#: Samples per demodulator call.
BLOCK_SAMPLES: Final = 4096


def _alternating(count: int) -> npt.NDArray[np.uint8]:
    """``count`` bits of alternating ones and zeros, starting with a zero."""
    return (np.arange(count) % 2).astype(np.uint8)


class CltuModulator:
    """CLTUs in, BPSK samples out: acquisition sequence, CLTU, idle sequence each."""

    __slots__ = ("_modulator", "acquisition_bits", "idle_bits")

    def __init__(
        self,
        *,
        sps: int = 4,
        rolloff: float = 0.35,
        acquisition_bits: int = ACQUISITION_BITS,
        idle_bits: int = IDLE_BITS,
        ramp_symbols: int = RAMP_SYMBOLS,
    ) -> None:
        for name, value in (("acquisition_bits", acquisition_bits), ("idle_bits", idle_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LocalProtocolError(f"{name} must be an integer >= 0, got {value!r}")
        self._modulator = Modulator("bpsk", sps, rolloff, ramp_symbols=ramp_symbols)
        self.acquisition_bits = acquisition_bits
        self.idle_bits = idle_bits

    def modulate(self, cltu: bytes) -> C64:
        """The samples of one CLTU with its acquisition and idle sequences (the ramp
        first, on the first call)."""
        if not cltu:
            raise LocalProtocolError("an empty CLTU: nothing to modulate")
        bits = np.concatenate(
            (
                _alternating(self.acquisition_bits),
                unpack_bits(cltu),
                _alternating(self.idle_bits),
            )
        )
        return self._modulator.process(bits)


class CltuReceiver:
    """Samples in, re-aligned CLTU octets out (demodulator + bit-level CLTU search)."""

    __slots__ = ("demodulator", "samples", "synchronizer")

    def __init__(
        self,
        *,
        sps: int = 4,
        rolloff: float = 0.35,
        sample_rate: float = 38400.0,
        mode: DecoderMode = DecoderMode.CORRECT,
        start_sequence_errors: int = 1,
    ) -> None:
        self.demodulator = Demodulator("bpsk", sps, rolloff, sample_rate=sample_rate)
        self.synchronizer = CltuBitSynchronizer(
            mode=mode, start_sequence_errors=start_sequence_errors
        )
        self.samples = 0

    def receive(self, samples: npt.ArrayLike) -> list[bytes]:
        """The CLTUs these samples completed, in order."""
        array = np.asarray(samples)
        if array.ndim != 1:
            raise LocalProtocolError(f"samples must be a 1-D array, got shape {array.shape}")
        for start in range(0, array.size, BLOCK_SAMPLES):
            soft = self.demodulator.process(array[start : start + BLOCK_SAMPLES])
            if soft.size:
                self.synchronizer.receive_symbols(np.asarray(soft, np.float32))
        self.samples += array.size
        cltus: list[bytes] = []
        while (event := self.synchronizer.next_event()) is not None:
            cltus.append(event.cltu)
        return cltus

    @property
    def stats(self) -> tuple[DemodulatorStats, CltuBitStats]:
        """The demodulator's loops and the CLTU search's counters."""
        return self.demodulator.stats, self.synchronizer.stats
