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
:func:`impair`, all of them in the order a downlink applies them.

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
rate, and cheaper):

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
output.  It is compiled by numba (``cache=True``) where numba imports, and otherwise
runs as plain Python (about a hundred times slower).

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
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from linkstack.errors import LocalProtocolError

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
    "Demodulator",
    "DemodulatorStats",
    "Impairments",
    "LoopConfig",
    "Modulation",
    "Modulator",
    "PulseShape",
    "add_noise",
    "compile_kernels",
    "gardner_gain",
    "impair",
    "loop_gains",
    "map_symbols",
    "modulate",
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
_STATE_SIZE: Final = _HIST + 8

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

    nout = 0
    for n in range(x.shape[0]):
        xr = float(x[n].real)
        xi = float(x[n].imag)
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
    return nout


_Kernel = Callable[[C64, F64, F64, C64], int]


def _jit(function: Callable[..., object]) -> Callable[..., object]:
    """numba's nopython compile, cached on disk where numba finds a writable place."""
    try:
        jitted = numba.njit(function, cache=True, boundscheck=False, nogil=True)
    except RuntimeError:  # pragma: no cover - no writable cache location
        jitted = numba.njit(function, boundscheck=False, nogil=True)
    return cast(Callable[..., object], jitted)


if NUMBA_AVAILABLE:
    _demodulate_numba: _Kernel | None = cast(_Kernel, _jit(_demodulate_py))
else:  # pragma: no cover - exercised only where numba is missing
    _demodulate_numba = None


@cache
def _warn_python_fallback() -> None:
    logger.warning("numba is not available: the demodulator runs its slow Python loop")


def _kernel(backend: Backend) -> _Kernel:
    if backend not in get_args(Backend):
        raise LocalProtocolError(
            f"backend {backend!r} is not one of {', '.join(get_args(Backend))}"
        )
    if backend == "python":
        return _demodulate_py
    if _demodulate_numba is not None:
        return _demodulate_numba
    if backend == "numba":
        raise LocalProtocolError("backend 'numba' asked for, but numba is not importable")
    _warn_python_fallback()
    return _demodulate_py


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the loop kernel now, not on first use."""
    Demodulator().process(np.zeros(64, np.complex64))


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
        "_history",
        "_invalid",
        "_kernel",
        "_params",
        "_samples",
        "_state",
        "_symbols",
        "_taps",
        "carrier_lock_threshold",
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
        self._kernel = _kernel(backend)
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
        filtered = self._matched_filter(block)
        # at most one symbol per sps (1 - _MAX_STEP) samples, and one pending
        bound = int(block.size / (self.shape.sps * (1.0 - _MAX_STEP))) + 2
        out = np.empty(bound, np.complex64)
        count = int(self._kernel(filtered, self._state, self._params, out))
        self._symbols += count
        if qpsk:
            soft_c: C64 = out[:count].copy()
            return soft_c
        soft: F32 = out[:count].real.copy()
        return soft

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
        per_symbol = float(state[_OMEGA]) / _TWO_PI
        per_sample = per_symbol * rate / sps
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
        )
