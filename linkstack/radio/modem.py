"""The modem below the channel coding: BPSK and QPSK with root-raised-cosine pulses.

Sans-I/O: arrays and state in, arrays out; no clock, no files.  Time is counted in
samples and symbols; a sample rate, where one is given, only converts figures to hertz.

Transmit side
-------------
:class:`Modulator` maps channel symbols to complex baseband samples: BPSK (bit 1 ->
+1, GNU Radio's ``constellation_bpsk`` convention) or Gray-mapped QPSK (I = first bit,
Q = second, bit 1 -> +1, as ``linkstack.coding.soft.qpsk_map``), at ``sps`` samples per
symbol through a square-root raised-cosine (SRRC) filter of roll-off ``rolloff``
(0.35 by default; CCSDS 413.0-G-2 3.3.4 names SRRC shaping with a roll-off of 0.35 or
0.5 and an SRRC matched filter in the receiver).  Before the first data symbol it sends
``ramp_symbols`` idle symbols (alternating, or random from a generator passed in) so
that a receiver can acquire.  :meth:`Modulator.process` streams (the filter state is
carried across calls), :meth:`Modulator.flush` lets the last symbols out of the filter;
:func:`modulate` does a whole buffer.  Symbols have unit energy and the pulse
(:func:`rrc_taps`) unit energy, so the matched filter sampled at the symbol instants
returns the symbols themselves and the noise of :func:`add_noise` has variance N0 per
complex sample.

Channel impairments, for tests and benches (seeded by the generator passed in):
:func:`add_noise` (AWGN at Eb/N0 per information bit, given the code rate),
:func:`shift_frequency` (a carrier offset, a Doppler ramp, a phase), :func:`resample`
(a symbol clock off by some ppm: windowed-sinc fractional resampling), and
:func:`impair`, all of them in the order a downlink applies them, on a whole buffer;
:class:`PassChannel` does the same streaming, chunk by chunk, and adds a satellite
pass (:class:`~linkstack.radio.channel.LeoPass`): the slant range's delay on the
symbol clock and its phase on the carrier, so that a 10-minute pass never sits in
memory.

Receive side
------------
:class:`Demodulator` is a streaming engine: :meth:`~Demodulator.process` takes complex
samples in blocks of any size and returns soft symbols (float32 for BPSK, complex64
for QPSK; positive = bit 1, scaled so that ``|value|`` near 1 is a confident symbol,
the convention ``linkstack.coding.soft.SoftCaduSynchronizer`` reads); ``stats`` reports
the loops.  The chain follows Rice, *Digital Communications: A Discrete-Time Approach*
(2009), chapters 7 and 8, in the order of GNU Radio's ``symbol_sync_cc`` ->
``costas_loop_cc`` flowgraphs (with a symbol-rate FLL where those put the sample-rate
``fll_band_edge_cc`` first: it is enough for offsets of a few percent of the symbol
rate, and cheaper), behind a coarse carrier stage for offsets beyond that (an S-band
LEO pass reaches 55 kHz, a fifth of 256 kbaud):

0. coarse carrier acquisition and tracking: a sample-rate NCO turns the samples by
   its frequency before the matched filter.  The samples come in blocks of
   ``coarse_symbols`` symbols, counted from the first sample (so that chunking
   changes nothing).  At the end of each block, while the carrier is not locked,
   the block's spectrum of the M-th power (:func:`mth_power_spectrum`; averaged
   over up to ``coarse_blocks`` blocks) is searched for a line within
   ``coarse_range`` (:func:`coarse_frequency`); one that passes a detection test
   at a false-alarm probability of ``coarse_false_alarm`` on noise alone
   (:func:`detection_threshold`) and lies more than ``retune_threshold`` from the
   demodulator's own estimate retunes the NCO there and restarts the loops'
   frequency (acquisition, and re-acquisition after a loss of lock).  While the
   carrier is locked, the loops' frequency is handed over to the NCO at the end of
   each block (it reaches the loops when the samples it turned reach them), so the
   matched filter keeps the signal centred however far a Doppler ramp takes it
   and the loops track only what changed within a block (8 Hz at 1 kHz/s);
1. the SRRC matched filter (numpy, the same taps as the modulator);
2. an AGC: the power of the filtered samples, averaged over ``agc_symbols`` symbols
   (a plain mean over the first samples, then exponential), scales them to unit power;
3. symbol timing recovery: an interpolation-control NCO (Rice 8.4.3) strobes two
   interpolants per symbol, computed by a cubic Lagrange interpolator in Farrow form
   (Rice 8.4.2); Gardner's timing error detector (F. M. Gardner, "A BPSK/QPSK
   timing-error detector for sampled receivers", IEEE Trans. Commun. 34(5), 1986)
   drives a proportional-plus-integral loop filter;
4. carrier recovery at the symbol instants: a frequency-locked loop whose detector is
   the delay-and-multiply of the M-th power of consecutive symbols (M = 2 for BPSK, 4
   for QPSK: the power strips the modulation; unambiguous up to 1/(2M) of the symbol
   rate), and a Costas loop for the phase (BPSK: I * Q; QPSK: the hard-decision
   detector sign(I) Q - sign(Q) I), both feeding one NCO whose frequency integrator
   they share (an FLL-assisted PLL).  The loops shift gear on the lock indicators:
   while the carrier lock indicator (the mean of cos(M theta)) is below its threshold
   the FLL runs and the Costas loop is wide (``acquisition_bandwidth``); as it rises
   the FLL fades out and the Costas loop narrows to ``carrier_bandwidth``, because at
   low SNR the M-th power detector is far noisier than the Costas one.  The FLL also
   waits for the timing lock indicator: before the symbol clock is found its
   detector can pull the wrong way;
5. signal and noise powers by the M2M4 moment estimator (D. R. Pauluzzi and N. C.
   Beaulieu, "A comparison of SNR estimation techniques for the AWGN channel", IEEE
   Trans. Commun. 48(10), 2000; valid for constant-modulus PSK in complex Gaussian
   noise), which scale the soft symbols and give the SNR.

Loop gains follow Rice's appendix C (a second-order loop of normalized noise bandwidth
``B_n T`` and damping ``zeta``); the detector gains are those of unit-amplitude
symbols, the Gardner one computed from the raised-cosine pulse of the roll-off.  The
carrier ambiguities (BPSK 180 degrees, QPSK 90 degrees) are left to the frame
synchronizer, which resolves them.

The loops are sequential: one kernel runs them sample by sample over a block with all
loop state passed in and out, so that any chunking of the input gives bit-identical
output.  It, the NCO and :class:`PassChannel`'s interpolator are compiled by numba
(``cache=True``) where numba imports, and otherwise run as plain Python (about a
hundred times slower).

Bad input: NaN or infinite samples are replaced by zeros and counted
(``stats.invalid_samples``); a zero sample does not move the AGC, and the loops coast
through zeros on their frequency estimates.  Impulses are tamed three times: each
sample's contribution to the AGC power is limited to 4 times the current estimate, a
limiter after the AGC cuts the magnitude at 6 times the rms level, and each symbol's
contribution to the moments is limited to 10 times their current level.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import SPEED_OF_LIGHT_M_S, PassGeometry

try:
    import numba

    _NUMBA_IMPORTED = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _NUMBA_IMPORTED = False

logger = logging.getLogger(__name__)

__all__ = [
    "BITS_PER_SYMBOL",
    "MODULATIONS",
    "NUMBA_AVAILABLE",
    "Backend",
    "CoarseEstimate",
    "Demodulator",
    "DemodulatorStats",
    "Impairments",
    "LoopConfig",
    "Modulation",
    "Modulator",
    "PassChannel",
    "PulseShape",
    "add_noise",
    "coarse_frequency",
    "compile_kernels",
    "detection_threshold",
    "gardner_gain",
    "impair",
    "loop_gains",
    "map_symbols",
    "modulate",
    "mth_power_spectrum",
    "raised_cosine",
    "resample",
    "rrc_taps",
    "shift_frequency",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]
C128 = npt.NDArray[np.complex128]

Modulation = Literal["bpsk", "qpsk"]
MODULATIONS: Final[tuple[Modulation, ...]] = get_args(Modulation)
BITS_PER_SYMBOL: Final[dict[Modulation, int]] = {"bpsk": 1, "qpsk": 2}
Backend = Literal["auto", "numba", "python"]

NUMBA_AVAILABLE: Final = _NUMBA_IMPORTED and not getattr(numba.config, "DISABLE_JIT", False)

#: Largest samples-per-symbol factor accepted (a bound on filter lengths, not a limit
#: of the algorithms).
MAX_SPS: Final = 64
#: Largest SRRC span, symbols.
MAX_SPAN: Final = 64
_BLOCK: Final = 1 << 15  # samples per matched-filter block (keeps the passes in cache)


def _check_modulation(modulation: str) -> Modulation:
    for known in MODULATIONS:
        if modulation == known:
            return known
    raise LocalProtocolError(f"modulation {modulation!r} is not one of {', '.join(MODULATIONS)}")


# --------------------------------------------------------------------------- pulse shape


@dataclass(frozen=True, slots=True)
class PulseShape:
    """Modulation, samples per symbol, SRRC roll-off and span (symbols), validated."""

    modulation: Modulation = "bpsk"
    sps: int = 4
    rolloff: float = 0.35
    span: int = 8

    def __post_init__(self) -> None:
        _check_modulation(self.modulation)
        if isinstance(self.sps, bool) or not isinstance(self.sps, int | np.integer):
            raise LocalProtocolError(f"sps must be an integer, got {self.sps!r}")
        if not 2 <= self.sps <= MAX_SPS:
            raise LocalProtocolError(f"sps {self.sps} is outside [2, {MAX_SPS}]")
        if not 0.0 < self.rolloff <= 1.0:
            raise LocalProtocolError(f"rolloff {self.rolloff} is outside (0, 1]")
        if isinstance(self.span, bool) or not isinstance(self.span, int | np.integer):
            raise LocalProtocolError(f"span must be an integer, got {self.span!r}")
        if not 2 <= self.span <= MAX_SPAN or self.span % 2:
            raise LocalProtocolError(f"span {self.span} is not an even number in [2, {MAX_SPAN}]")

    @property
    def taps(self) -> F64:
        """The SRRC taps (:func:`rrc_taps`)."""
        return rrc_taps(self.sps, self.rolloff, self.span)


def rrc_taps(sps: int, rolloff: float = 0.35, span: int = 8) -> F64:
    """Square-root raised-cosine FIR taps: ``span * sps + 1`` of them, symmetric, unit
    energy (sum of squares 1).

    With t in symbol periods and a = ``rolloff``::

        h(t) = [sin(pi t (1 - a)) + 4 a t cos(pi t (1 + a))] / [pi t (1 - (4 a t)^2)]
        h(0) = 1 - a + 4 a / pi
        h(+-1/(4a)) = a / sqrt(2) [(1 + 2/pi) sin(pi/(4a)) + (1 - 2/pi) cos(pi/(4a))]

    (Rice, *Digital Communications*, A.3; the same pulse as GNU Radio's
    ``firdes.root_raised_cosine``, which scales it to unit DC gain instead).
    """
    shape = PulseShape("bpsk", sps, rolloff, span)
    a = float(shape.rolloff)
    t = np.arange(-(span * sps // 2), span * sps // 2 + 1, dtype=np.float64) / sps
    h = np.empty_like(t)
    zero = np.isclose(t, 0.0, atol=1e-12)
    edge = np.isclose(np.abs(4 * a * t), 1.0, atol=1e-9)
    rest = ~(zero | edge)
    tr = t[rest]
    h[rest] = (np.sin(np.pi * tr * (1 - a)) + 4 * a * tr * np.cos(np.pi * tr * (1 + a))) / (
        np.pi * tr * (1 - (4 * a * tr) ** 2)
    )
    h[zero] = 1 - a + 4 * a / np.pi
    h[edge] = (a / math.sqrt(2)) * (
        (1 + 2 / np.pi) * math.sin(np.pi / (4 * a)) + (1 - 2 / np.pi) * math.cos(np.pi / (4 * a))
    )
    taps: F64 = h / math.sqrt(float(np.sum(h * h)))
    return taps


def raised_cosine(t: npt.ArrayLike, rolloff: float) -> F64:
    """The raised-cosine pulse (the SRRC pulse through its matched filter), t in symbol
    periods: ``sinc(t) cos(pi a t) / (1 - (2 a t)^2)``, peak 1, zero at every other
    symbol instant (Nyquist's criterion)."""
    tt = np.asarray(t, dtype=np.float64)
    a = float(rolloff)
    denominator = 1.0 - (2.0 * a * tt) ** 2
    singular = np.isclose(denominator, 0.0, atol=1e-12)
    safe = np.where(singular, 1.0, denominator)
    p = np.sinc(tt) * np.cos(np.pi * a * tt) / safe
    limit = (np.pi / 4.0) * np.sinc(1.0 / (2.0 * a)) if a > 0 else 0.0
    values: F64 = np.where(singular, limit, p)
    return values


def gardner_gain(rolloff: float, *, step: float = 1e-4, terms: int = 64) -> float:
    """Slope at zero of Gardner's timing error detector ``-y(k - 1/2) [y(k - 1) - y(k)]``
    for independent unit-variance real symbols on the raised-cosine pulse, timing error
    in symbol periods (positive = late): the detector gain Kp of the timing loop."""

    def expected(tau: float) -> float:
        j = np.arange(-terms, terms + 1, dtype=np.float64)
        mid = raised_cosine(j - 0.5 + tau, rolloff)
        previous = raised_cosine(j - 1.0 + tau, rolloff)
        current = raised_cosine(j + tau, rolloff)
        return float(-np.sum(mid * (previous - current)))

    return (expected(step) - expected(-step)) / (2.0 * step)


# --------------------------------------------------------------------------- modulator


def map_symbols(symbols: npt.ArrayLike, modulation: Modulation) -> C128:
    """Channel symbols as unit-energy constellation points (complex128).

    * bits (uint8 or bool, 0/1): BPSK bit 1 -> +1; QPSK pairs, I = first bit, Q =
      second, bit 1 -> +1, scaled by 1/sqrt(2) (the count must be even);
    * BPSK: real numbers (nominal +-1) as they are;
    * QPSK: complex numbers on the +-1 +-1j grid (``qpsk_map``'s), scaled by 1/sqrt(2).
    """
    modulation = _check_modulation(modulation)
    array = np.asarray(symbols)
    if array.ndim != 1:
        raise LocalProtocolError(f"symbols must be a 1-D array, got shape {array.shape}")
    kind = array.dtype.kind
    if kind in "ub" and array.dtype.itemsize == 1:
        if array.size and int(array.max()) > 1:
            raise LocalProtocolError(
                f"bit arrays hold 0 and 1 only, found {int(array.max())} (uint8 input is bits)"
            )
        levels = array.astype(np.float64) * 2.0 - 1.0
        if modulation == "bpsk":
            bpsk: C128 = levels.astype(np.complex128)
            return bpsk
        if levels.size % 2:
            raise LocalProtocolError(
                f"{levels.size} bits do not fill whole QPSK symbols (two bits each)"
            )
        paired = np.empty(levels.size // 2, np.complex128)
        paired.real = levels[0::2] / math.sqrt(2.0)
        paired.imag = levels[1::2] / math.sqrt(2.0)
        return paired
    if modulation == "bpsk":
        if kind not in "fi":
            raise LocalProtocolError(
                f"BPSK symbols of dtype {array.dtype} are neither bits nor real levels"
            )
        real: C128 = array.astype(np.float64).astype(np.complex128)
        return real
    if kind != "c":
        raise LocalProtocolError(
            f"QPSK symbols of dtype {array.dtype} are neither bits nor complex points"
        )
    points: C128 = array.astype(np.complex128) / math.sqrt(2.0)
    return points


class Modulator:
    """Streaming PSK modulator: symbols in, SRRC-shaped complex64 samples out.

    ``ramp_symbols`` idle symbols precede the first data symbol: alternating +1/-1
    (QPSK: +(1+j)/-(1+j)), the densest transitions for a timing loop, or random
    constellation points drawn from ``ramp_rng`` when one is given.
    """

    __slots__ = ("_history", "_phases", "_ramp", "_started", "shape")

    def __init__(
        self,
        modulation: Modulation = "bpsk",
        sps: int = 4,
        rolloff: float = 0.35,
        *,
        span: int = 8,
        ramp_symbols: int = 256,
        ramp_rng: np.random.Generator | None = None,
    ) -> None:
        self.shape = PulseShape(modulation, sps, rolloff, span)
        if isinstance(ramp_symbols, bool) or not isinstance(ramp_symbols, int | np.integer):
            raise LocalProtocolError(f"ramp_symbols must be an integer, got {ramp_symbols!r}")
        if ramp_symbols < 0:
            raise LocalProtocolError(f"ramp_symbols {ramp_symbols} is negative")
        taps = self.shape.taps
        per_phase = -(-taps.size // sps)  # taps per polyphase branch
        padded = np.zeros(per_phase * sps)
        padded[: taps.size] = taps
        # _phases[p, j] = h[p + j sps]: output k sps + p = sum_j h[p + j sps] a[k - j]
        self._phases = padded.reshape(per_phase, sps).T.copy()
        self._history = np.zeros(per_phase - 1, np.complex128)
        self._ramp = self._ramp_symbols(int(ramp_symbols), ramp_rng)
        self._started = False

    def _ramp_symbols(self, count: int, rng: np.random.Generator | None) -> C128:
        if self.shape.modulation == "bpsk":
            if rng is None:
                ramp: C128 = np.where(np.arange(count) % 2 == 0, 1.0, -1.0).astype(np.complex128)
                return ramp
            return map_symbols(rng.integers(0, 2, count, np.uint8), "bpsk")
        if rng is None:
            alternating: C128 = np.where(np.arange(count) % 2 == 0, 1.0, -1.0) * (
                (1 + 1j) / math.sqrt(2.0)
            )
            return alternating
        return map_symbols(rng.integers(0, 2, 2 * count, np.uint8), "qpsk")

    def process(self, symbols: npt.ArrayLike) -> C64:
        """Samples of these symbols (``sps`` per symbol), after the ramp on the first
        call; the filter's memory carries over to the next call."""
        points = map_symbols(symbols, self.shape.modulation)
        if not self._started:
            self._started = True
            points = np.concatenate((self._ramp, points))
        return self._filter(points)

    def flush(self) -> C64:
        """The filter's tail: the samples still owed for the symbols given so far (the
        ramp too, if nothing was given).  The modulator can go on afterwards."""
        points = np.zeros(self._history.size, np.complex128)
        if not self._started:
            self._started = True
            points = np.concatenate((self._ramp, points))
        return self._filter(points)

    def _filter(self, points: C128) -> C64:
        sps = self.shape.sps
        count = points.size
        if count == 0:
            return np.zeros(0, np.complex64)
        memory = self._history.size
        extended = np.concatenate((self._history, points))
        out = np.zeros((count, sps), np.complex128)
        for p in range(sps):
            column = out[:, p]
            for j in range(self._phases.shape[1]):
                column += self._phases[p, j] * extended[memory - j : memory - j + count]
        self._history = extended[extended.size - memory :].copy() if memory else self._history
        samples: C64 = out.reshape(-1).astype(np.complex64)
        return samples


def modulate(
    symbols: npt.ArrayLike,
    modulation: Modulation = "bpsk",
    sps: int = 4,
    rolloff: float = 0.35,
    *,
    span: int = 8,
    ramp_symbols: int = 256,
    ramp_rng: np.random.Generator | None = None,
) -> C64:
    """A whole buffer: ramp, symbols, and the filter's tail."""
    modulator = Modulator(
        modulation, sps, rolloff, span=span, ramp_symbols=ramp_symbols, ramp_rng=ramp_rng
    )
    return np.concatenate((modulator.process(symbols), modulator.flush()))


# --------------------------------------------------------------------------- impairments


def _samples(samples: npt.ArrayLike) -> C128:
    array = np.asarray(samples)
    if array.ndim != 1:
        raise LocalProtocolError(f"samples must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "fic":
        raise LocalProtocolError(f"samples of dtype {array.dtype} are not numbers")
    converted: C128 = array.astype(np.complex128)
    return converted


def add_noise(
    samples: npt.ArrayLike,
    *,
    ebn0_db: float,
    modulation: Modulation,
    sps: int,
    rng: np.random.Generator,
    code_rate: float = 1.0,
    symbol_energy: float = 1.0,
) -> C64:
    """Complex white Gaussian noise at Eb/N0 per information bit.

    Eb = Es / (bits per symbol * code rate), Es = ``symbol_energy`` (1 for this
    modulator's output); with a unit-energy matched filter the noise variance per
    complex sample is N0 = Eb / (Eb/N0), half in I, half in Q.
    """
    array = _samples(samples)
    modulation = _check_modulation(modulation)
    if not 0.0 < code_rate <= 1.0:
        raise LocalProtocolError(f"code_rate {code_rate} is outside (0, 1]")
    PulseShape(modulation, sps)
    eb = symbol_energy / (BITS_PER_SYMBOL[modulation] * code_rate)
    n0 = eb / 10 ** (ebn0_db / 10)
    sigma = math.sqrt(n0 / 2.0)
    noise = rng.standard_normal(array.size) + 1j * rng.standard_normal(array.size)
    noisy: C64 = (array + sigma * noise).astype(np.complex64)
    return noisy


def shift_frequency(
    samples: npt.ArrayLike,
    *,
    sample_rate: float,
    offset_hz: float = 0.0,
    rate_hz_s: float = 0.0,
    phase: float = 0.0,
    start_s: float = 0.0,
) -> C64:
    """A carrier offset and a Doppler ramp: sample n (at time t = start_s + n / fs) is
    turned by ``phase + 2 pi (offset_hz t + rate_hz_s t^2 / 2)`` radians, so that the
    instantaneous offset is ``offset_hz + rate_hz_s t``."""
    array = _samples(samples)
    if not sample_rate > 0:
        raise LocalProtocolError(f"sample_rate {sample_rate} is not positive")
    t = start_s + np.arange(array.size, dtype=np.float64) / sample_rate
    angle = phase + 2.0 * np.pi * (offset_hz * t + 0.5 * rate_hz_s * t * t)
    shifted: C64 = (array * np.exp(1j * angle)).astype(np.complex64)
    return shifted


def resample(samples: npt.ArrayLike, *, ppm: float, half_taps: int = 12) -> C64:
    """A transmitter symbol clock fast by ``ppm`` parts per million: output sample n is
    the input interpolated at ``n (1 + ppm 1e-6)`` by a Blackman-windowed sinc of
    ``2 half_taps`` taps (zeros beyond the ends), its fractional delay rounded to
    1/``_RESAMPLE_PHASES`` of a sample; the output is shorter (longer for a negative
    ppm) by that ratio.  Independent of the demodulator's cubic interpolator."""
    array = _samples(samples)
    ratio = 1.0 + ppm * 1e-6
    if not 0.5 < ratio < 2.0:
        raise LocalProtocolError(f"clock offset {ppm} ppm is outside (-5e5, 1e6)")
    if not 1 <= half_taps <= 64:
        raise LocalProtocolError(f"half_taps {half_taps} is outside [1, 64]")
    if array.size == 0:
        return np.zeros(0, np.complex64)
    count = math.floor((array.size - 1) / ratio) + 1
    padded = np.concatenate(
        (np.zeros(half_taps, np.complex128), array, np.zeros(half_taps + 1, np.complex128))
    )
    offsets = np.arange(-half_taps + 1, half_taps + 1)
    table = _sinc_table(half_taps)
    out = np.empty(count, np.complex64)
    step = 1 << 15
    for start in range(0, count, step):
        t = np.arange(start, min(count, start + step), dtype=np.float64) * ratio
        base = np.floor(t).astype(np.int64)
        phase = np.rint((t - base) * _RESAMPLE_PHASES).astype(np.int64)
        base += phase // _RESAMPLE_PHASES  # a fraction rounded up to a whole sample
        phase %= _RESAMPLE_PHASES
        gathered = padded[base[:, None] + offsets[None, :] + half_taps]
        out[start : start + t.size] = np.sum(table[phase] * gathered, axis=1)
    return out


_RESAMPLE_PHASES: Final = 4096


@cache
def _sinc_table(half_taps: int) -> F64:
    """Windowed-sinc weights of taps -half_taps+1 .. half_taps for each fractional delay
    k / _RESAMPLE_PHASES (rows)."""
    offsets = np.arange(-half_taps + 1, half_taps + 1, dtype=np.float64)
    frac = np.arange(_RESAMPLE_PHASES, dtype=np.float64) / _RESAMPLE_PHASES
    distance = offsets[None, :] - frac[:, None]
    window = (
        0.42
        + 0.5 * np.cos(np.pi * distance / half_taps)
        + 0.08 * np.cos(2 * np.pi * distance / half_taps)
    )
    table: F64 = np.sinc(distance) * window
    return table


@dataclass(frozen=True, slots=True)
class Impairments:
    """A downlink's impairments, applied by :func:`impair` in this order: transmitter
    clock (``clock_ppm``), carrier (``offset_hz``, ``rate_hz_s``, ``phase``: drawn
    uniformly when None), receiver noise (``ebn0_db`` per information bit at
    ``code_rate``; None for none)."""

    clock_ppm: float = 0.0
    offset_hz: float = 0.0
    rate_hz_s: float = 0.0
    phase: float | None = 0.0
    ebn0_db: float | None = None
    code_rate: float = 1.0


def impair(
    samples: npt.ArrayLike,
    impairments: Impairments,
    *,
    modulation: Modulation,
    sps: int,
    sample_rate: float,
    rng: np.random.Generator,
) -> C64:
    """Apply :class:`Impairments` to modulator output (seeded by ``rng``)."""
    out = _samples(samples)
    if impairments.clock_ppm:
        out = _samples(resample(out, ppm=impairments.clock_ppm))
    phase = float(rng.uniform(0.0, 2.0 * np.pi)) if impairments.phase is None else impairments.phase
    shifted = shift_frequency(
        out,
        sample_rate=sample_rate,
        offset_hz=impairments.offset_hz,
        rate_hz_s=impairments.rate_hz_s,
        phase=phase,
    )
    if impairments.ebn0_db is None:
        return shifted
    return add_noise(
        shifted,
        ebn0_db=impairments.ebn0_db,
        modulation=modulation,
        sps=sps,
        rng=rng,
        code_rate=impairments.code_rate,
    )


#: Received samples between exact evaluations of the pass's delay and phase (linear
#: between: at 1 kHz/s and 1 Msample/s the phase is then off by at most
#: f' (G / fs)^2 / 8 = 1.3e-4 cycles).
PASS_GRID: Final = 1024


class PassChannel:
    """Streaming downlink impairments, a satellite pass included: transmitted samples
    in, received samples out, never the whole pass in memory.

    Received sample n, at ``t = start_s + n / sample_rate`` on the pass's time axis,
    is the transmitted stream at its emission time ``t - rho(t) / c``, ``rho`` the
    slant range of ``geometry`` (:class:`~linkstack.radio.channel.LeoPass`, or a
    :class:`~linkstack.radio.channel.SampledPass` of a contact; None: a fixed range),
    counted by a transmitter clock fast by ``clock_ppm``: at position
    ``p(n) = fs (1 + ppm 1e-6) (t - rho(t)/c - t0 + rho(t0)/c)`` of the transmitted
    samples (``t0 = start_s``; Blackman-windowed sinc of ``2 half_taps`` taps, as
    :func:`resample`), so that
    the symbol clock carries the pass's Doppler too (+-24 ppm at 7 km/s).  It is
    turned by ``phase + 2 pi (offset_hz t' + rate_hz_s t'^2 / 2) - 2 pi f_c (rho(t) -
    rho(t0)) / c`` (``t' = t - t0``), and white Gaussian noise at ``ebn0_db`` is added
    as :func:`add_noise` does.  Position and phase are exact every :data:`PASS_GRID`
    samples and linear between.  :meth:`process` returns the received samples whose
    transmitted samples have all come in; :meth:`flush` the rest, up to the one at the
    last transmitted sample.  Seeded by ``rng``; chunking does not change the signal,
    only the noise's draws.
    """

    __slots__ = (
        "_base",
        "_buffer",
        "_done",
        "_half",
        "_next",
        "_rho0",
        "_sigma",
        "_t0_delay",
        "_table",
        "geometry",
        "impairments",
        "rng",
        "sample_rate",
        "start_s",
    )

    def __init__(
        self,
        impairments: Impairments,
        *,
        sample_rate: float,
        modulation: Modulation,
        sps: int,
        rng: np.random.Generator,
        geometry: PassGeometry | None = None,
        start_s: float = 0.0,
        half_taps: int = 8,
    ) -> None:
        if not (math.isfinite(sample_rate) and sample_rate > 0):
            raise LocalProtocolError(f"sample_rate {sample_rate!r} is not positive")
        if not math.isfinite(start_s):
            raise LocalProtocolError(f"start_s {start_s!r} is not finite")
        if not 1 <= half_taps <= 64:
            raise LocalProtocolError(f"half_taps {half_taps} is outside [1, 64]")
        ratio = 1.0 + impairments.clock_ppm * 1e-6
        if not 0.5 < ratio < 2.0:
            raise LocalProtocolError(
                f"clock offset {impairments.clock_ppm} ppm is outside (-5e5, 1e6)"
            )
        if impairments.phase is None:
            impairments = replace(impairments, phase=float(rng.uniform(0.0, _TWO_PI)))
        self.impairments = impairments
        self.sample_rate = float(sample_rate)
        self.geometry = geometry
        self.start_s = float(start_s)
        self.rng = rng
        modulation = _check_modulation(modulation)
        PulseShape(modulation, sps)
        if impairments.ebn0_db is None:
            self._sigma = 0.0
        else:
            if not 0.0 < impairments.code_rate <= 1.0:
                raise LocalProtocolError(f"code_rate {impairments.code_rate} is outside (0, 1]")
            eb = 1.0 / (BITS_PER_SYMBOL[modulation] * impairments.code_rate)
            self._sigma = math.sqrt(eb / 10 ** (impairments.ebn0_db / 10) / 2.0)
        self._half = half_taps
        self._table = _sinc_table(half_taps)
        self._rho0 = 0.0 if geometry is None else geometry.range_m(self.start_s)
        self._t0_delay = self.start_s - self._rho0 / SPEED_OF_LIGHT_M_S
        self._buffer = np.zeros(0, np.complex64)
        self._base = 0  # transmitted index of _buffer[0]
        self._next = 0  # next received sample
        self._done = False

    @property
    def noise_power(self) -> float:
        """N0: the noise's power per complex sample (0 without noise)."""
        return 2.0 * self._sigma * self._sigma

    @property
    def samples_out(self) -> int:
        """Received samples produced so far."""
        return self._next

    def position(self, n: float) -> tuple[float, float]:
        """Received sample ``n``: the transmitted position it reads, and its phase in
        cycles (exact, not the grid's interpolation)."""
        t = self.start_s + n / self.sample_rate
        rho = self._rho0 if self.geometry is None else self.geometry.range_m(t)
        emitted = t - rho / SPEED_OF_LIGHT_M_S - self._t0_delay
        position = self.sample_rate * (1.0 + self.impairments.clock_ppm * 1e-6) * emitted
        dt = t - self.start_s
        cycles = (self.impairments.phase or 0.0) / _TWO_PI + (
            self.impairments.offset_hz * dt + 0.5 * self.impairments.rate_hz_s * dt * dt
        )
        if self.geometry is not None:
            cycles -= self.geometry.carrier_hz * (rho - self._rho0) / SPEED_OF_LIGHT_M_S
        return position, cycles

    def received_index(self, position: float) -> float:
        """The received sample (fractional) that reads transmitted ``position``: the
        inverse of :meth:`position`, by the secant method."""
        ratio = 1.0 + self.impairments.clock_ppm * 1e-6
        low = position / ratio
        high = low + 1.0
        f_low = self.position(low)[0] - position
        f_high = self.position(high)[0] - position
        for _ in range(20):
            if f_high == f_low:
                break
            low, high = high, high - f_high * (high - low) / (f_high - f_low)
            f_low, f_high = f_high, self.position(high)[0] - position
            if abs(f_high) < 1e-6:
                break
        return high

    def process(self, samples: npt.ArrayLike) -> C64:
        """Add transmitted samples; the received samples they complete."""
        if self._done:
            raise LocalProtocolError("the pass channel was flushed: no more samples")
        block = _samples(samples).astype(np.complex64)
        self._buffer = np.concatenate((self._buffer, block))
        # a received sample is complete when its last tap is in
        available = self._base + self._buffer.size - self._half - 1
        return self._produce(lambda position: position <= available, final=False)

    def flush(self) -> C64:
        """End of the transmission (zeros after it): the received samples up to the
        one that reads the last transmitted sample."""
        if self._done:
            return np.zeros(0, np.complex64)
        self._done = True
        last = self._base + self._buffer.size - 1
        self._buffer = np.concatenate((self._buffer, np.zeros(self._half + 2, np.complex64)))
        return self._produce(lambda position: position <= last, final=True)

    def _produce(self, fits: Callable[[float], bool], *, final: bool) -> C64:
        start = self._next
        grid_start = start - start % PASS_GRID
        points = [self.position(grid_start)]
        end = grid_start
        while True:  # whole grid steps whose end still fits
            candidate = self.position(end + PASS_GRID)
            if not fits(candidate[0]):
                break
            points.append(candidate)
            end += PASS_GRID
        if final:  # the part of the last grid step up to the last transmitted sample
            first_p, _ = points[-1]
            next_point = self.position(end + PASS_GRID)
            step = (next_point[0] - first_p) / PASS_GRID
            limit = self._base + self._buffer.size - self._half - 3  # the last real one
            extra = math.floor((limit - first_p) / step) + 1 if step > 0 else 0
            extra = min(max(extra, 0), PASS_GRID)
            if extra > 0:
                points.append(next_point)
                stop = end + extra
            else:
                stop = end
        else:
            stop = end
        count = max(0, stop - start)
        out = np.empty(count, np.complex64)
        if count:
            grid = np.asarray(points, dtype=np.float64)
            where = np.array([self._base, start, grid_start, PASS_GRID], np.float64)
            _channel_kernel()(self._buffer, where, grid, self._table, out)
            if self._sigma:
                noise = self.rng.standard_normal(2 * count, dtype=np.float32).view(np.complex64)
                out += np.float32(self._sigma) * noise
        self._next = start + count
        # forget transmitted samples no later received sample reads
        keep_from = math.floor(self.position(self._next)[0]) - self._half - 1
        drop = min(max(0, keep_from - self._base), self._buffer.size)
        if drop:
            self._buffer = self._buffer[drop:]
            self._base += drop
        return out


def _channel_py(tx: C64, where: F64, grid: F64, table: F64, out: C64) -> None:
    """Received samples of :class:`PassChannel`: windowed-sinc interpolation of ``tx``
    (zeros outside it) at positions, and turns by phases, linear between the rows
    ``(position, cycles)`` of ``grid``, one per ``where[3]`` received samples from
    received sample ``where[2]``; ``out[0]`` is received sample ``where[1]``, and
    ``tx[0]`` transmitted sample ``where[0]``."""
    base = where[0]
    start = where[1]
    grid_start = where[2]
    spacing = where[3]
    half = table.shape[1] // 2
    phases = table.shape[0]
    size = tx.shape[0]
    pairs = tx.view(np.float32)
    segment = -1
    position = cycles = step = turn = 0.0
    zr = 1.0
    zi = 0.0
    wr = 1.0
    wi = 0.0
    for k in range(out.shape[0]):
        n = start + k - grid_start
        j = int(n // spacing)
        if j != segment:  # a new grid step: exact values, then steps and a rotation
            segment = j
            offset = n - j * spacing
            last = j + 1 >= grid.shape[0]
            step = 0.0 if last else (grid[j + 1, 0] - grid[j, 0]) / spacing
            turn = 0.0 if last else (grid[j + 1, 1] - grid[j, 1]) / spacing
            position = grid[j, 0] + offset * step
            cycles = grid[j, 1] + offset * turn
            angle = _TWO_PI * (cycles - math.floor(cycles))
            zr = math.cos(angle)
            zi = math.sin(angle)
            wr = math.cos(_TWO_PI * turn)
            wi = math.sin(_TWO_PI * turn)
        whole = math.floor(position)
        row = math.floor((position - whole) * phases + 0.5)
        if row == phases:
            whole += 1
            row = 0
        index = int(whole - base)
        acc_r = 0.0
        acc_i = 0.0
        if index - half + 1 >= 0 and index + half < size:
            first = index - half + 1
            for m in range(2 * half):
                w = table[row, m]
                acc_r += w * pairs[2 * (first + m)]
                acc_i += w * pairs[2 * (first + m) + 1]
        else:
            for m in range(-half + 1, half + 1):
                i = index + m
                if 0 <= i < size:
                    w = table[row, m + half - 1]
                    acc_r += w * tx[i].real
                    acc_i += w * tx[i].imag
        out[k] = complex(acc_r * zr - acc_i * zi, acc_r * zi + acc_i * zr)
        position += step
        zr, zi = zr * wr - zi * wi, zr * wi + zi * wr


# --------------------------------------------------------------------------- loop kernel
# Loop state, one float64 array carried from block to block (indices):
_AGC_POWER: Final = 0  # AGC's power estimate of the filtered samples
_AGC_COUNT: Final = 1  # nonzero samples seen (a plain mean until the AGC's length)
_NEXT: Final = 2  # time of the next interpolant, samples after the newest sample's slot
_HALF: Final = 3  # samples from one interpolant to the next: half a symbol period
_TIMING_INT: Final = 4  # integrator of the timing loop filter (relative symbol rate)
_PHASE: Final = 5  # carrier phase at the next on-time interpolant, rad
_OMEGA: Final = 6  # carrier frequency, rad per symbol
_ON_TIME: Final = 7  # 1.0 when the next interpolant is an on-time one, 0.0 for a midpoint
_MID_RE: Final = 8  # last midpoint interpolant, carrier removed
_MID_IM: Final = 9
_PREV_RE: Final = 10  # last on-time interpolant, carrier removed, AGC-normalized
_PREV_IM: Final = 11
_POW_RE: Final = 12  # M-th power of the last on-time interpolant (the FLL's memory)
_POW_IM: Final = 13
_M2: Final = 14  # second moment of the on-time interpolants
_M4: Final = 15  # fourth moment
_SYMBOLS: Final = 16  # nonzero on-time interpolants seen (plain means until stats_symbols)
_CARRIER_LOCK: Final = 17  # mean cos(M theta)
_TIMING_LOCK: Final = 18  # mean (|on-time|^2 - |midpoint|^2) / (sum)
_TIMING_ERROR: Final = 19  # mean timing error, symbol periods
_CLOCK: Final = 20  # slow mean of the timing integrator (the clock offset statistic)
_HIST: Final = 21  # four filtered samples, re/im interleaved: x(m-1), x(m), x(m+1), x(m+2)
_HANDOVER_WAIT: Final = 29  # samples until a frequency handover reaches the loop (0: none)
_HANDOVER_OMEGA: Final = 30  # what the handover then takes off the loop's frequency, rad/symbol
_STATE_SIZE: Final = 31

# Parameters, one float64 array:
_P_HALF: Final = 0  # nominal half symbol period, sps / 2 samples
_P_K1T: Final = 1  # timing loop proportional gain
_P_K2T: Final = 2  # timing loop integral gain
_P_K1P: Final = 3  # Costas proportional gain
_P_K2P: Final = 4  # Costas integral gain
_P_KF: Final = 5  # FLL gain
_P_AGC_ALPHA: Final = 6  # 1 / AGC averaging length (samples)
_P_STATS_ALPHA: Final = 7  # 1 / statistics averaging length (symbols)
_P_MAX_OMEGA: Final = 8  # carrier frequency limit, rad per symbol
_P_MAX_RATE: Final = 9  # relative symbol clock limit
_P_QPSK: Final = 10  # 1.0 for QPSK
_P_KPT: Final = 11  # Gardner detector gain (for the timing error statistic)
_P_LOCK: Final = 12  # carrier lock threshold (the FLL is off above it)
_P_K1A: Final = 13  # Costas proportional gain while acquiring
_P_K2A: Final = 14  # Costas integral gain while acquiring
_P_TIMING_LOCK: Final = 15  # timing lock threshold (the FLL is off below it)
_PARAM_SIZE: Final = 16

_TWO_PI: Final = 2.0 * math.pi
_LIMIT: Final = 6.0  # the limiter after the AGC, in units of the rms level
_MAX_STEP: Final = 0.25  # bound on one symbol's relative period correction


def _demodulate_py(x: C64, state: F64, params: F64, out: C64) -> int:
    """Run AGC, timing and carrier loops over matched-filtered samples ``x``; write soft
    symbols (complex; BPSK's are real parts) to ``out``; return how many."""
    half0 = params[_P_HALF]
    k1t = params[_P_K1T]
    k2t = params[_P_K2T]
    k1p = params[_P_K1P]
    k2p = params[_P_K2P]
    kf = params[_P_KF]
    agc_alpha = params[_P_AGC_ALPHA]
    stats_alpha = params[_P_STATS_ALPHA]
    max_omega = params[_P_MAX_OMEGA]
    max_rate = params[_P_MAX_RATE]
    qpsk = params[_P_QPSK] > 0.5
    kpt = params[_P_KPT]
    lock_threshold = params[_P_LOCK]
    k1a = params[_P_K1A]
    k2a = params[_P_K2A]
    timing_threshold = params[_P_TIMING_LOCK]
    ref = 2.0 if qpsk else 1.0  # |symbol|^2 of the normalized constellation

    power = state[_AGC_POWER]
    agc_count = state[_AGC_COUNT]
    next_t = state[_NEXT]
    half = state[_HALF]
    timing_int = state[_TIMING_INT]
    phase = state[_PHASE]
    omega = state[_OMEGA]
    on_time = state[_ON_TIME] > 0.5
    mid_re = state[_MID_RE]
    mid_im = state[_MID_IM]
    prev_re = state[_PREV_RE]
    prev_im = state[_PREV_IM]
    pow_re = state[_POW_RE]
    pow_im = state[_POW_IM]
    m2 = state[_M2]
    m4 = state[_M4]
    symbols = state[_SYMBOLS]
    carrier_lock = state[_CARRIER_LOCK]
    timing_lock = state[_TIMING_LOCK]
    timing_error = state[_TIMING_ERROR]
    clock = state[_CLOCK]
    clock_alpha = stats_alpha / 16.0
    h0r = state[_HIST]
    h0i = state[_HIST + 1]
    h1r = state[_HIST + 2]
    h1i = state[_HIST + 3]
    h2r = state[_HIST + 4]
    h2i = state[_HIST + 5]
    h3r = state[_HIST + 6]
    h3i = state[_HIST + 7]
    handover_wait = state[_HANDOVER_WAIT]
    handover_omega = state[_HANDOVER_OMEGA]

    nout = 0
    for n in range(x.shape[0]):
        xr = float(x[n].real)
        xi = float(x[n].imag)
        # A frequency handed over to the sample-rate NCO reaches the loops once the
        # samples it turned have come through the matched filter and the interpolator.
        if handover_wait > 0.0:
            handover_wait -= 1.0
            if handover_wait <= 0.0:
                omega -= handover_omega
                handover_omega = 0.0
        # AGC: mean power of the nonzero samples, each limited to 4 times the estimate
        # (a step up of 20 dB is still followed within a few AGC time constants).
        p = xr * xr + xi * xi
        if p > 0.0:
            agc_count += 1.0
            alpha = 1.0 / agc_count
            alpha = max(alpha, agc_alpha)
            if agc_count > 1.0:
                p = min(p, 4.0 * power)
            power += alpha * (p - power)
        gain = 1.0 / math.sqrt(power) if power > 1e-300 else 0.0
        yr = gain * xr
        yi = gain * xi
        # Limiter: unit power puts a Gaussian-like signal above 6 with odds of e^-36;
        # an impulse is cut there before it can reach the loops and the moments.
        p = yr * yr + yi * yi
        if p > _LIMIT * _LIMIT:
            cut = _LIMIT / math.sqrt(p)
            yr *= cut
            yi *= cut
        h0r = h1r
        h0i = h1i
        h1r = h2r
        h1i = h2i
        h2r = h3r
        h2i = h3i
        h3r = yr
        h3i = yi
        # Interpolation control (Rice 8.4.3), written with the time of the next
        # interpolant rather than the NCO register (eta = W * time): the base point x(m)
        # is h1, mu the fraction of a sample from it towards h2.  At two samples per
        # symbol, two interpolants can fall between the same pair of samples.
        next_t -= 1.0
        while next_t < 1.0:
            mu = next_t
            # Cubic Lagrange interpolator in Farrow form (Rice 8.4.2), Horner in mu.
            c1r = -h0r / 3.0 - h1r / 2.0 + h2r - h3r / 6.0
            c1i = -h0i / 3.0 - h1i / 2.0 + h2i - h3i / 6.0
            c2r = h0r / 2.0 - h1r + h2r / 2.0
            c2i = h0i / 2.0 - h1i + h2i / 2.0
            c3r = -h0r / 6.0 + h1r / 2.0 - h2r / 2.0 + h3r / 6.0
            c3i = -h0i / 6.0 + h1i / 2.0 - h2i / 2.0 + h3i / 6.0
            yr = ((c3r * mu + c2r) * mu + c1r) * mu + h1r
            yi = ((c3i * mu + c2i) * mu + c1i) * mu + h1i
            if not on_time:
                # Midpoint: carrier removed at the phase half a symbol before the next
                # on-time interpolant.
                angle = phase - 0.5 * omega
                c = math.cos(angle)
                s = math.sin(angle)
                mid_re = yr * c + yi * s
                mid_im = yi * c - yr * s
                on_time = True
                next_t += half
                continue
            on_time = False
            c = math.cos(phase)
            s = math.sin(phase)
            zr = yr * c + yi * s
            zi = yi * c - yr * s
            p = zr * zr + zi * zi
            if p > 0.0:
                symbols += 1.0
                alpha = max(1.0 / symbols, stats_alpha)
                if symbols > 1.0:  # e^-10 odds for a Gaussian-like symbol, stops impulses
                    p = min(p, 10.0 * m2)
                m2 += alpha * (p - m2)
                m4 += alpha * (p * p - m4)
            inv = 1.0 / math.sqrt(m2 / ref) if m2 > 1e-300 else 0.0
            nr = zr * inv
            ni = zi * inv
            mr = mid_re * inv
            mi = mid_im * inv
            # Gardner's detector, positive when the strobes are late.
            et = -(mr * (prev_re - nr) + mi * (prev_im - ni))
            et = min(max(et, -2.0 * ref), 2.0 * ref)
            # Costas detector (~ theta for a unit-amplitude constellation).
            if qpsk:
                sr = 1.0 if nr >= 0.0 else -1.0
                si = 1.0 if ni >= 0.0 else -1.0
                ep = 0.5 * (sr * ni - si * nr)
                ur = nr * nr - ni * ni
                ui = 2.0 * nr * ni
                ur, ui = ur * ur - ui * ui, 2.0 * ur * ui
                norm = 16.0
            else:
                ep = nr * ni
                ur = nr * nr - ni * ni
                ui = 2.0 * nr * ni
                norm = 1.0
            ep = min(max(ep, -1.0), 1.0)
            # Delay-and-multiply of the M-th powers: ~ sin(M * residual rotation per symbol).
            ef = (ui * pow_re - ur * pow_im) / norm
            ef = min(max(ef, -1.0), 1.0)
            pow_re = ur
            pow_im = ui
            # Loop filters: timing (relative symbol rate -> interpolant spacing), carrier
            # (the shared NCO).  The symbol period moves linearly with the loop's output and
            # from this interpolant on, so that the integrator converges on the mean period
            # (a step per sample, changed at the next sample, would bias it by the jitter).
            timing_int = min(max(timing_int + k2t * et, -max_rate), max_rate)
            v = min(max(k1t * et + timing_int, -_MAX_STEP), _MAX_STEP)
            half = half0 * (1.0 - v)
            next_t += half
            # Gear shift: while the carrier lock indicator is below its threshold the FLL
            # runs and the Costas loop is wide; both fade to tracking as it rises (the FLL
            # detector is far noisier than the Costas loop's at low SNR).
            acquiring = max(0.0, 1.0 - carrier_lock / lock_threshold)
            k1 = k1p + acquiring * (k1a - k1p)
            k2 = k2p + acquiring * (k2a - k2p)
            phase += omega + k1 * ep
            # The FLL's detector means nothing before the symbol clock is found (it can pull
            # the wrong way): it also fades in with the timing lock indicator.
            timed = min(1.0, max(0.0, timing_lock / timing_threshold))
            fll = acquiring * timed * kf
            omega = min(max(omega + k2 * ep + fll * ef, -max_omega), max_omega)
            if phase > math.pi:
                phase -= _TWO_PI * math.floor((phase + math.pi) / _TWO_PI)
            elif phase < -math.pi:
                phase += _TWO_PI * math.floor((math.pi - phase) / _TWO_PI)
            # Lock indicators and statistics.
            q = nr * nr + ni * ni
            if q > 0.0:
                # cos(M theta): (+-1 +-1j)^4 = -4, so QPSK's fourth power is negated
                lock = -ur / (q * q) if qpsk else ur / q
                carrier_lock += stats_alpha * (lock - carrier_lock)
                both = q + mr * mr + mi * mi
                timing_lock += stats_alpha * ((q - mr * mr - mi * mi) / both - timing_lock)
                timing_error += stats_alpha * (et / kpt - timing_error)
                clock += clock_alpha * (timing_int - clock)
            prev_re = nr
            prev_im = ni
            # Soft symbols: divided by the signal amplitude of the M2M4 estimate.
            signal = math.sqrt(max(2.0 * m2 * m2 - m4, 1e-4 * m2 * m2))
            scale = 1.0 / math.sqrt(signal / ref) if signal > 1e-300 else 0.0
            out[nout] = complex(zr * scale, zi * scale)
            nout += 1

    state[_AGC_POWER] = power
    state[_AGC_COUNT] = agc_count
    state[_NEXT] = next_t
    state[_HALF] = half
    state[_TIMING_INT] = timing_int
    state[_PHASE] = phase
    state[_OMEGA] = omega
    state[_ON_TIME] = 1.0 if on_time else 0.0
    state[_MID_RE] = mid_re
    state[_MID_IM] = mid_im
    state[_PREV_RE] = prev_re
    state[_PREV_IM] = prev_im
    state[_POW_RE] = pow_re
    state[_POW_IM] = pow_im
    state[_M2] = m2
    state[_M4] = m4
    state[_SYMBOLS] = symbols
    state[_CARRIER_LOCK] = carrier_lock
    state[_TIMING_LOCK] = timing_lock
    state[_TIMING_ERROR] = timing_error
    state[_CLOCK] = clock
    state[_HIST] = h0r
    state[_HIST + 1] = h0i
    state[_HIST + 2] = h1r
    state[_HIST + 3] = h1i
    state[_HIST + 4] = h2r
    state[_HIST + 5] = h2i
    state[_HIST + 6] = h3r
    state[_HIST + 7] = h3i
    state[_HANDOVER_WAIT] = handover_wait
    state[_HANDOVER_OMEGA] = handover_omega
    return nout


# The sample-rate NCO ahead of the matched filter (the coarse carrier correction), one
# float64 array carried from block to block:
_NCO_PHASE: Final = 0  # phase at the next sample, cycles in [-1/2, 1/2)
_NCO_FREQUENCY: Final = 1  # cycles per sample
_NCO_RE: Final = 2  # phasor exp(-2 pi j phase) at the next sample
_NCO_IM: Final = 3
_NCO_RUN: Final = 4  # samples since the phasor was last computed from the phase
_NCO_SIZE: Final = 5
#: The NCO's phasor runs by complex multiplication and is recomputed from the phase
#: every _NCO_EXACT samples (its rounding error stays near 1e-14).
_NCO_EXACT: Final = 64


def _mix_py(x: C64, nco: F64, out: C64) -> None:
    """``out = x exp(-2 pi j phase(n))``, the phase advancing by the NCO's frequency
    per sample; ``nco`` is carried over, so any chunking gives identical output."""
    phase = nco[_NCO_PHASE]
    frequency = nco[_NCO_FREQUENCY]
    zr = nco[_NCO_RE]
    zi = nco[_NCO_IM]
    run = int(nco[_NCO_RUN])
    wr = math.cos(_TWO_PI * frequency)
    wi = -math.sin(_TWO_PI * frequency)
    for n in range(x.shape[0]):
        if run == 0:
            zr = math.cos(_TWO_PI * phase)
            zi = -math.sin(_TWO_PI * phase)
        xr = float(x[n].real)
        xi = float(x[n].imag)
        out[n] = complex(xr * zr - xi * zi, xr * zi + xi * zr)
        zr, zi = zr * wr - zi * wi, zr * wi + zi * wr
        phase += frequency
        if phase >= 0.5:
            phase -= 1.0
        elif phase < -0.5:
            phase += 1.0
        run += 1
        if run == _NCO_EXACT:
            run = 0
    nco[_NCO_PHASE] = phase
    nco[_NCO_RE] = zr
    nco[_NCO_IM] = zi
    nco[_NCO_RUN] = float(run)


_Kernel = Callable[[C64, F64, F64, C64], int]
_Mixer = Callable[[C64, F64, C64], None]


def _jit(function: Callable[..., object]) -> Callable[..., object]:
    """numba's nopython compile, cached on disk where numba finds a writable place."""
    try:
        jitted = numba.njit(function, cache=True, boundscheck=False, nogil=True)
    except RuntimeError:  # pragma: no cover - no writable cache location
        jitted = numba.njit(function, boundscheck=False, nogil=True)
    return cast(Callable[..., object], jitted)


if NUMBA_AVAILABLE:
    _demodulate_numba: _Kernel | None = cast(_Kernel, _jit(_demodulate_py))
    _mix_numba: _Mixer | None = cast(_Mixer, _jit(_mix_py))
else:  # pragma: no cover - exercised only where numba is missing
    _demodulate_numba = None
    _mix_numba = None


_ChannelKernel = Callable[..., None]


@cache
def _channel_kernel() -> _ChannelKernel:
    """The pass channel's loop, compiled on first use where numba imports."""
    if NUMBA_AVAILABLE:
        return cast(_ChannelKernel, _jit(_channel_py))
    return _channel_py  # pragma: no cover - exercised only where numba is missing


@cache
def _warn_python_fallback() -> None:
    logger.warning("numba is not available: the demodulator runs its slow Python loop")


def _kernel(backend: Backend) -> tuple[_Kernel, _Mixer]:
    if backend not in get_args(Backend):
        raise LocalProtocolError(
            f"backend {backend!r} is not one of {', '.join(get_args(Backend))}"
        )
    if backend == "python":
        return _demodulate_py, _mix_py
    if _demodulate_numba is not None and _mix_numba is not None:
        return _demodulate_numba, _mix_numba
    if backend == "numba":
        raise LocalProtocolError("backend 'numba' asked for, but numba is not importable")
    _warn_python_fallback()
    return _demodulate_py, _mix_py


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the loop kernel and the NCO now, not on
    first use."""
    Demodulator().process(np.zeros(64, np.complex64))


# --------------------------------------------------------------------------- coarse carrier


@dataclass(frozen=True, slots=True)
class CoarseEstimate:
    """What :func:`coarse_frequency` found in a spectrum of the M-th power."""

    #: Carrier frequency, cycles per sample (the peak's over M).
    frequency: float
    #: The peak's power over the mean power of the bins searched.
    ratio: float
    #: The ratio that noise alone passes with the false-alarm probability asked for.
    threshold: float

    @property
    def detected(self) -> bool:
        return self.ratio > self.threshold


def mth_power_spectrum(samples: npt.ArrayLike, *, order: int, band: float) -> F64:
    """Power spectrum (``numpy.fft`` bin order) of the ``order``-th power of the
    samples, after an ideal low-pass of half-width ``band`` cycles per sample.

    Raising M-PSK to the M-th power strips the modulation (M theta_k is a multiple of
    2 pi), which leaves a line at M times the carrier offset (Rice, *Digital
    Communications*, 7.5; the open-loop "M-th power" frequency estimator of U.
    Mengali and A. N. D'Andrea, *Synchronization Techniques for Digital Receivers*,
    1997, 3.4).  The low-pass (bins beyond ``band`` zeroed, circularly) keeps the
    noise outside the signal's band out of the power, which would otherwise swamp
    the fourth power at 4 samples per symbol.
    """
    block = np.asarray(samples, dtype=np.complex128)
    if block.ndim != 1 or block.size < 2:
        raise LocalProtocolError(f"need a 1-D block of at least 2 samples, got shape {block.shape}")
    if order not in (1, 2, 4, 8):
        raise LocalProtocolError(f"order {order} is not 1, 2, 4 or 8")
    if not 0.0 < band <= 0.5:
        raise LocalProtocolError(f"band {band} is outside (0, 0.5] cycles per sample")
    spectrum = np.fft.fft(block)
    spectrum[np.abs(np.fft.fftfreq(block.size)) > band] = 0.0
    powered = np.fft.ifft(spectrum) ** order
    transformed = np.fft.fft(powered)
    power: F64 = transformed.real**2 + transformed.imag**2
    return power


@cache
def detection_threshold(blocks: int, bins: int, false_alarm: float) -> float:
    """The peak-to-mean ratio that noise alone exceeds with probability ``false_alarm``
    in a spectrum averaged over ``blocks`` blocks and searched over ``bins`` bins.

    A noise bin's power over its mean is exponential, the mean of ``blocks`` of them
    Gamma(B, 1/B): P(> t) = exp(-B t) sum_{k<B} (B t)^k / k!, the union bound over the
    bins; solved for t by bisection."""
    if blocks < 1 or bins < 1 or not 0.0 < false_alarm < 1.0:
        raise LocalProtocolError(
            f"blocks {blocks}, bins {bins}, false_alarm {false_alarm}: need >= 1, >= 1, (0, 1)"
        )

    def tail(t: float) -> float:
        x = blocks * t
        term = total = 1.0
        for k in range(1, blocks):
            term *= x / k
            total += term
        return bins * math.exp(-x) * total

    low, high = 0.0, 1.0
    while tail(high) > false_alarm:
        high *= 2.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if tail(middle) > false_alarm:
            low = middle
        else:
            high = middle
    return high


def coarse_frequency(
    power: npt.ArrayLike,
    *,
    order: int,
    span: float,
    blocks: int = 1,
    false_alarm: float = 1e-6,
) -> CoarseEstimate:
    """The carrier offset in a spectrum of :func:`mth_power_spectrum` (or a sum of
    ``blocks`` of them): the strongest bin within ``+-span`` cycles per sample of
    carrier (``+-order * span`` in the spectrum, which must stay below 1/2: beyond,
    the M-th power aliases), refined by a parabola through it and its neighbours'
    amplitudes, divided by ``order``."""
    values = np.asarray(power, dtype=np.float64)
    size = values.size
    if values.ndim != 1 or size < 4:
        raise LocalProtocolError(
            f"need a 1-D spectrum of at least 4 bins, got shape {values.shape}"
        )
    if not 0.0 < order * span < 0.5:
        raise LocalProtocolError(
            f"span {span} cycles/sample at order {order} is outside (0, 1/(2 order)):"
            " the M-th power would alias"
        )
    frequencies = np.fft.fftfreq(size)
    searched = np.flatnonzero(np.abs(frequencies) <= order * span)
    if searched.size < 3:
        raise LocalProtocolError(f"span {span} covers fewer than 3 of {size} bins")
    peak = int(searched[np.argmax(values[searched])])
    mean = float(np.mean(values[searched]))
    ratio = float(values[peak]) / mean if mean > 0.0 else 0.0
    left, middle, right = np.sqrt(values[[(peak - 1) % size, peak, (peak + 1) % size]])
    curvature = left - 2.0 * middle + right
    delta = 0.5 * (left - right) / curvature if curvature < 0.0 else 0.0
    frequency = (float(frequencies[peak]) + float(delta) / size) / order
    threshold = detection_threshold(blocks, int(searched.size), false_alarm)
    return CoarseEstimate(frequency, ratio, threshold)


# --------------------------------------------------------------------------- demodulator


def loop_gains(bandwidth: float, damping: float, detector_gain: float) -> tuple[float, float]:
    """Proportional and integral gains (K1, K2) of a second-order loop with a PI filter,
    normalized noise bandwidth ``B_n T`` and damping ``zeta`` (Rice, appendix C.2, NCO
    gain 1, one update per symbol)."""
    theta = bandwidth / (damping + 1.0 / (4.0 * damping))
    d = 1.0 + 2.0 * damping * theta + theta * theta
    return 4.0 * damping * theta / (d * detector_gain), 4.0 * theta * theta / (d * detector_gain)


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """The demodulator's managed parameters (bandwidths are ``B_n T``, per symbol)."""

    #: Symbol timing loop noise bandwidth.
    timing_bandwidth: float = 0.005
    #: Costas loop noise bandwidth, tracking.
    carrier_bandwidth: float = 0.01
    #: Costas loop noise bandwidth while acquiring (carrier lock indicator at 0; the
    #: bandwidth moves linearly to ``carrier_bandwidth`` as the indicator rises to
    #: its threshold).
    acquisition_bandwidth: float = 0.04
    #: FLL noise bandwidth (a first-order loop: B_n T = K / 4).
    fll_bandwidth: float = 0.002
    #: Damping of the two second-order loops.
    damping: float = 1.0 / math.sqrt(2.0)
    #: AGC averaging length, symbols.
    agc_symbols: int = 64
    #: Averaging length of the moments (SNR, soft-symbol scale) and lock indicators.
    stats_symbols: int = 256
    #: Carrier frequency limit, cycles per symbol (the FLL detector is unambiguous up
    #: to 1/4 for BPSK, 1/8 for QPSK).
    max_frequency: float = 0.05
    #: Symbol clock limit, relative (0.005 = 5000 ppm).
    max_clock_offset: float = 0.005
    #: Carrier lock indicator (mean cos(M theta)) above which the carrier is locked
    #: and the FLL off (it fades out linearly below); None: 0.2 for BPSK, 0.1 for
    #: QPSK (the fourth power loses more to noise: locked, about 0.55 and 0.35 at Eb/N0
    #: 6 dB with the rate-1/2 code, Es/N0 3 and 6 dB, and 0.4 and 0.15 at Eb/N0 3 to
    #: 3.5 dB; unlocked, 0 +- 0.03).
    carrier_lock_threshold: float | None = None
    #: Timing lock indicator above which the symbol clock is locked (the FLL fades in
    #: below it).  Locked, about 0.08 to 0.15 at Es/N0 3 to 6 dB, 0.35 without noise;
    #: unlocked, 0 +- 0.03.
    timing_lock_threshold: float = 0.05
    #: Coarse carrier acquisition (:func:`coarse_frequency`): the largest carrier
    #: offset searched, cycles per symbol, by the spectrum of the M-th power of the
    #: samples; 0 turns it off (the loops alone, within ``max_frequency``).  None:
    #: 0.25 (an S-band LEO pass peaks at 55 kHz, 0.215 of 256 kbaud), less where that
    #: would be ambiguous at this ``sps``: at most 0.9 * sps / (2 M).
    coarse_range: float | None = None
    #: Symbols per coarse block (times ``sps``: samples): the FFT length of the
    #: estimator and the period at which the loops' frequency is handed over to the
    #: sample-rate NCO.  2048: the blind acquisition is over within the 1024 idle
    #: symbols and 1024 lead bits that ``IqTransmitter`` sends before the first CADU.
    coarse_symbols: int = 2048
    #: Blocks whose spectra the estimator averages, at most, before it starts over.
    coarse_blocks: int = 8
    #: While unlocked, the demodulator is retuned to a detected coarse estimate that
    #: differs from its own by more than this, cycles per symbol (closer ones are
    #: left to the FLL).
    retune_threshold: float = 0.01
    #: Probability that noise alone passes the coarse estimator's detection test,
    #: per test (one per block while unlocked).
    coarse_false_alarm: float = 1e-6

    def __post_init__(self) -> None:
        for name in (
            "timing_bandwidth",
            "carrier_bandwidth",
            "acquisition_bandwidth",
            "fll_bandwidth",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.1:
                raise LocalProtocolError(f"{name} {value} is outside [0, 0.1] (B_n T per symbol)")
        if not 0.1 <= self.damping <= 10.0:
            raise LocalProtocolError(f"damping {self.damping} is outside [0.1, 10]")
        for name in ("agc_symbols", "stats_symbols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} {value!r} is not a positive integer")
        if not 0.0 < self.max_frequency <= 0.125:
            raise LocalProtocolError(f"max_frequency {self.max_frequency} is outside (0, 0.125]")
        if self.carrier_lock_threshold is not None and not 0.0 < self.carrier_lock_threshold < 1:
            raise LocalProtocolError(
                f"carrier_lock_threshold {self.carrier_lock_threshold} is outside (0, 1)"
            )
        if not 0.0 < self.max_clock_offset <= 0.05:
            raise LocalProtocolError(
                f"max_clock_offset {self.max_clock_offset} is outside (0, 0.05]"
            )
        if self.coarse_range is not None and not 0.0 <= self.coarse_range <= 1.0:
            raise LocalProtocolError(f"coarse_range {self.coarse_range} is outside [0, 1]")
        symbols = self.coarse_symbols
        if (
            isinstance(symbols, bool)
            or not isinstance(symbols, int)
            or not 128 <= symbols <= 1 << 18
            or symbols % _NCO_EXACT
        ):
            raise LocalProtocolError(
                f"coarse_symbols {symbols!r} is not a multiple of {_NCO_EXACT} in [128, 2^18]"
            )
        blocks = self.coarse_blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 64:
            raise LocalProtocolError(f"coarse_blocks {blocks!r} is not an integer in [1, 64]")
        if not 0.0 <= self.retune_threshold <= 0.5:
            raise LocalProtocolError(
                f"retune_threshold {self.retune_threshold} is outside [0, 0.5]"
            )
        if not 0.0 < self.coarse_false_alarm < 0.5:
            raise LocalProtocolError(
                f"coarse_false_alarm {self.coarse_false_alarm} is outside (0, 0.5)"
            )


@dataclass(frozen=True, slots=True)
class DemodulatorStats:
    """A snapshot of the demodulator's loops."""

    #: Samples received (including invalid ones).
    samples: int
    #: Soft symbols produced.
    symbols: int
    #: NaN or infinite samples, replaced by zeros.
    invalid_samples: int
    #: Carrier frequency offset estimate, cycles per sample.
    frequency_offset: float
    #: The same, cycles per symbol (a fraction of the symbol rate).
    frequency_offset_symbol: float
    #: The same in Hz, where the demodulator was given a sample rate.
    frequency_offset_hz: float | None
    #: Symbol clock offset estimate, parts per million (positive = fast transmitter):
    #: the timing loop's integrator averaged over 16 ``stats_symbols``.
    clock_offset_ppm: float
    #: Mean timing error (Gardner's detector over its gain), symbol periods.
    timing_error: float
    #: Carrier lock indicator: mean cos(M theta) of the symbols, 1 locked, ~0 not.
    carrier_lock: float
    #: Timing lock indicator: mean (|on-time|^2 - |midpoint|^2) / their sum.
    timing_lock: float
    #: Both indicators above their thresholds.
    locked: bool
    #: Es/N0 estimate (M2M4), dB; per complex symbol.
    es_n0_db: float
    #: The sample-rate NCO's frequency (coarse estimate and handovers), cycles per
    #: sample; part of ``frequency_offset``.
    nco_frequency: float = 0.0
    #: Times the coarse estimator retuned the NCO (acquisitions, re-acquisitions).
    retunes: int = 0


class Demodulator:
    """Streaming PSK demodulator engine: complex samples in, soft symbols out.

    ``process(samples)`` accepts any count (zero included) and returns the soft
    symbols completed so far: float32 (BPSK) or complex64 (QPSK), positive = bit 1,
    ``|value|`` ~ 1 for a confident symbol; the carrier phase ambiguity is left to the
    frame synchronizer.  Chunked and whole-buffer processing give identical output.
    A symbol leaves about half the matched filter's span after its samples came in
    (plus two samples of interpolator look-ahead); :meth:`flush` lets the last ones
    out at the end of a stream.
    """

    __slots__ = (
        "_band",
        "_blocks",
        "_coarse_span",
        "_fill",
        "_handover_delay",
        "_history",
        "_invalid",
        "_kernel",
        "_mixer",
        "_nco",
        "_order",
        "_params",
        "_raw",
        "_retunes",
        "_samples",
        "_spectrum",
        "_state",
        "_symbols",
        "_taps",
        "carrier_lock_threshold",
        "coarse_range",
        "loops",
        "sample_rate",
        "shape",
    )

    def __init__(
        self,
        modulation: Modulation = "bpsk",
        sps: int = 4,
        rolloff: float = 0.35,
        *,
        span: int = 8,
        loops: LoopConfig | None = None,
        sample_rate: float | None = None,
        backend: Backend = "auto",
    ) -> None:
        self.shape = PulseShape(modulation, sps, rolloff, span)
        self.loops = LoopConfig() if loops is None else loops
        if sample_rate is not None and not sample_rate > 0:
            raise LocalProtocolError(f"sample_rate {sample_rate} is not positive")
        self.sample_rate = sample_rate
        self._kernel, self._mixer = _kernel(backend)
        threshold = self.loops.carrier_lock_threshold
        if threshold is None:
            threshold = 0.1 if self.shape.modulation == "qpsk" else 0.2
        self.carrier_lock_threshold: float = threshold
        self._taps = self.shape.taps.astype(np.float32)
        self._history = np.zeros(self._taps.size - 1, np.complex64)
        qpsk = self.shape.modulation == "qpsk"
        loops_ = self.loops
        kpt = gardner_gain(self.shape.rolloff) * (2.0 if qpsk else 1.0)
        k1t, k2t = loop_gains(loops_.timing_bandwidth, loops_.damping, kpt)
        k1p, k2p = loop_gains(loops_.carrier_bandwidth, loops_.damping, 1.0)
        k1a, k2a = loop_gains(loops_.acquisition_bandwidth, loops_.damping, 1.0)
        m = 4.0 if qpsk else 2.0
        params = np.zeros(_PARAM_SIZE)
        params[_P_HALF] = sps / 2.0
        params[_P_K1T] = k1t
        params[_P_K2T] = k2t
        params[_P_K1P] = k1p
        params[_P_K2P] = k2p
        params[_P_K1A] = k1a
        params[_P_K2A] = k2a
        params[_P_TIMING_LOCK] = loops_.timing_lock_threshold
        params[_P_KF] = 4.0 * loops_.fll_bandwidth / m
        params[_P_AGC_ALPHA] = 1.0 / (loops_.agc_symbols * sps)
        params[_P_STATS_ALPHA] = 1.0 / loops_.stats_symbols
        params[_P_MAX_OMEGA] = _TWO_PI * loops_.max_frequency
        params[_P_MAX_RATE] = loops_.max_clock_offset
        params[_P_QPSK] = 1.0 if qpsk else 0.0
        params[_P_KPT] = kpt
        params[_P_LOCK] = self.carrier_lock_threshold
        self._params = params
        state = np.zeros(_STATE_SIZE)
        state[_HALF] = sps / 2.0
        state[_NEXT] = 1.0
        state[_ON_TIME] = 1.0
        self._state = state
        self._samples = 0
        self._symbols = 0
        self._invalid = 0
        # Coarse acquisition: the M-th power spectrum of each block of coarse_samples
        # raw samples (averaged while unlocked), and the NCO that takes the bulk of
        # the carrier offset off the samples before the matched filter.
        order = 4 if qpsk else 2
        self._order = order
        unambiguous = 0.9 * sps / (2.0 * order)  # cycles per symbol
        coarse = loops_.coarse_range
        if coarse is None:
            coarse = min(0.25, unambiguous)
        elif coarse > unambiguous:
            raise LocalProtocolError(
                f"coarse_range {coarse} cycles/symbol is beyond the {unambiguous:.3f} that"
                f" the {order}th power leaves unambiguous at sps {sps}"
            )
        self.coarse_range: float = coarse
        self._coarse_span = coarse / sps  # cycles per sample
        # the signal's band: the pulse's (1 + rolloff) / 2 around an offset of at most
        # the range, cycles per sample
        self._band = min(0.5, (coarse + (1.0 + self.shape.rolloff) / 2.0) / sps)
        self._raw = np.zeros(loops_.coarse_symbols * sps if coarse > 0 else 0, np.complex64)
        self._fill = 0
        self._spectrum: F64 | None = None
        self._blocks = 0
        self._retunes = 0
        self._nco = np.zeros(_NCO_SIZE)
        self._nco[_NCO_RE] = 1.0
        # a handover reaches the loops when its first sample is at the centre of the
        # matched filter and the interpolator has it (the loops would otherwise take
        # the frequency off some symbols twice)
        self._handover_delay = float(span * sps // 2 + 2)

    def process(self, samples: npt.ArrayLike) -> F32 | C64:
        """Soft symbols of these samples (and of those held from earlier calls)."""
        array = np.asarray(samples)
        if array.ndim != 1:
            raise LocalProtocolError(f"samples must be a 1-D array, got shape {array.shape}")
        if array.dtype.kind not in "fic":
            raise LocalProtocolError(f"samples of dtype {array.dtype} are not numbers")
        with np.errstate(over="ignore", invalid="ignore"):
            block = np.ascontiguousarray(array, dtype=np.complex64)
        bad = ~np.isfinite(block)
        invalid = int(np.count_nonzero(bad))
        if invalid:
            block = block.copy()
            block[bad] = 0
            self._invalid += invalid
        self._samples += block.size
        qpsk = self.shape.modulation == "qpsk"
        if block.size == 0:
            return np.zeros(0, np.complex64) if qpsk else np.zeros(0, np.float32)
        # at most one symbol per sps (1 - _MAX_STEP) samples, and one pending per segment
        segments = 1 + (block.size // self._raw.size if self._raw.size else 0)
        bound = int(block.size / (self.shape.sps * (1.0 - _MAX_STEP))) + 2 * segments + 2
        out = np.empty(bound, np.complex64)
        count = 0
        if not self._raw.size:  # no coarse acquisition: the loops alone
            filtered = self._matched_filter(block)
            count = int(self._kernel(filtered, self._state, self._params, out))
        else:
            # Segments end where coarse blocks end (counted from the first sample),
            # so that a retune or handover happens at the same sample whatever the
            # chunking.
            start = 0
            mixed = np.empty(block.size, np.complex64)
            while start < block.size:
                stop = min(block.size, start + self._raw.size - self._fill)
                segment = block[start:stop]
                self._raw[self._fill : self._fill + segment.size] = segment
                self._fill += segment.size
                self._mixer(segment, self._nco, mixed[start:stop])
                filtered = self._matched_filter(mixed[start:stop])
                count += int(self._kernel(filtered, self._state, self._params, out[count:]))
                if self._fill == self._raw.size:
                    self._fill = 0
                    self._end_of_block()
                start = stop
        self._symbols += count
        if qpsk:
            soft_c: C64 = out[:count].copy()
            return soft_c
        soft: F32 = out[:count].real.copy()
        return soft

    def _symbol_period(self) -> float:
        """Samples per symbol, as the timing loop has it."""
        return self.shape.sps * (1.0 - float(self._state[_TIMING_INT]))

    def _end_of_block(self) -> None:
        """At the end of each coarse block: locked, hand the loops' frequency over to
        the NCO (so that the matched filter sees the carrier centred however far a
        pass's Doppler ramp takes it); unlocked, add the block's M-th power spectrum
        to the average and retune the NCO to a detected peak that the FLL would not
        reach."""
        state = self._state
        period = self._symbol_period()
        if state[_CARRIER_LOCK] > self.carrier_lock_threshold:
            self._spectrum = None
            self._blocks = 0
            omega = float(state[_OMEGA] - state[_HANDOVER_OMEGA])  # not yet handed over
            frequency = self._nco[_NCO_FREQUENCY] + omega / (_TWO_PI * period)
            limit = self._coarse_span + self.loops.max_frequency / self.shape.sps
            frequency = min(max(frequency, -limit), limit)
            handed = (frequency - self._nco[_NCO_FREQUENCY]) * _TWO_PI * period
            self._nco[_NCO_FREQUENCY] = frequency
            state[_HANDOVER_OMEGA] += handed
            state[_HANDOVER_WAIT] = self._handover_delay
            return
        power = mth_power_spectrum(self._raw, order=self._order, band=self._band)
        self._spectrum = power if self._spectrum is None else self._spectrum + power
        self._blocks += 1
        estimate = coarse_frequency(
            self._spectrum,
            order=self._order,
            span=self._coarse_span,
            blocks=self._blocks,
            false_alarm=self.loops.coarse_false_alarm,
        )
        if estimate.detected:
            own = self._nco[_NCO_FREQUENCY] + float(state[_OMEGA] - state[_HANDOVER_OMEGA]) / (
                _TWO_PI * period
            )
            if abs(estimate.frequency - own) * self.shape.sps > self.loops.retune_threshold:
                logger.debug(
                    "coarse retune: %.6f -> %.6f cycles/sample (peak %.0f, threshold %.0f)",
                    own,
                    estimate.frequency,
                    estimate.ratio,
                    estimate.threshold,
                )
                self._nco[_NCO_FREQUENCY] = estimate.frequency
                state[_OMEGA] = 0.0
                state[_HANDOVER_OMEGA] = 0.0
                state[_HANDOVER_WAIT] = 0.0
                state[_POW_RE] = 0.0
                state[_POW_IM] = 0.0
                self._retunes += 1
        if estimate.detected or self._blocks >= self.loops.coarse_blocks:
            self._spectrum = None
            self._blocks = 0

    def flush(self) -> F32 | C64:
        """End of stream: the soft symbols still held in the matched filter and the
        interpolator (their samples are all in), by feeding them half a filter span and
        the interpolator's look-ahead of zeros.  Zeros move no loop but the phase and
        timing NCOs; the demodulator may go on afterwards, as if after a gap."""
        zeros = np.zeros(self._taps.size // 2 + 3, np.complex64)
        samples, invalid = self._samples, self._invalid
        soft = self.process(zeros)
        self._samples, self._invalid = samples, invalid
        return soft

    def _matched_filter(self, block: C64) -> C64:
        """FIR with the SRRC taps, history carried over: a fixed sum order per output
        (tap 0 first), so that the result does not depend on the chunking."""
        memory = self._history.size
        extended = np.concatenate((self._history, block))
        out = np.empty(block.size, np.complex64)
        taps = self._taps
        pairs_in = extended.view(np.float32)
        pairs_out = out.view(np.float32)
        scratch = np.empty(2 * min(block.size, _BLOCK), np.float32)
        for start in range(0, block.size, _BLOCK):
            count = min(_BLOCK, block.size - start)
            acc = pairs_out[2 * start : 2 * (start + count)]
            tmp = scratch[: 2 * count]
            # out[n] = sum_k h[k] x[n - k]; x[n] sits at extended[memory + n].
            base = 2 * (memory + start)
            np.multiply(pairs_in[base : base + 2 * count], taps[0], out=acc)
            for k in range(1, taps.size):
                lo = base - 2 * k
                np.multiply(pairs_in[lo : lo + 2 * count], taps[k], out=tmp)
                np.add(acc, tmp, out=acc)
        self._history = extended[extended.size - memory :].copy()
        return out

    @property
    def stats(self) -> DemodulatorStats:
        """The loops' estimates and counters now."""
        state = self._state
        sps = self.shape.sps
        rate = 1.0 / (1.0 - float(state[_CLOCK]))  # symbol rate, relative to nominal
        nco = float(self._nco[_NCO_FREQUENCY])
        per_sample = float(state[_OMEGA] - state[_HANDOVER_OMEGA]) / _TWO_PI * rate / sps + nco
        per_symbol = per_sample * sps / rate
        m2 = float(state[_M2])
        m4 = float(state[_M4])
        signal = math.sqrt(max(2.0 * m2 * m2 - m4, 0.0))
        noise = m2 - signal
        if signal <= 0.0:
            es_n0_db = -math.inf
        elif noise <= 0.0:
            es_n0_db = math.inf
        else:
            es_n0_db = 10.0 * math.log10(signal / noise)
        carrier_lock = float(state[_CARRIER_LOCK])
        timing_lock = float(state[_TIMING_LOCK])
        return DemodulatorStats(
            samples=self._samples,
            symbols=self._symbols,
            invalid_samples=self._invalid,
            frequency_offset=per_sample,
            frequency_offset_symbol=per_symbol,
            frequency_offset_hz=None if self.sample_rate is None else per_sample * self.sample_rate,
            clock_offset_ppm=(rate - 1.0) * 1e6,
            timing_error=float(state[_TIMING_ERROR]),
            carrier_lock=carrier_lock,
            timing_lock=timing_lock,
            locked=carrier_lock > self.carrier_lock_threshold
            and timing_lock > self.loops.timing_lock_threshold,
            es_n0_db=es_n0_db,
            nco_frequency=nco,
            retunes=self._retunes,
        )
