"""Streaming soft-decision Viterbi decoder for the CCSDS convolutional code.

Decodes the K = 7 code of CCSDS 131.0-B-5 3.3 (rate 1/2, G2 inverted) and its
punctured rates 2/3 ... 7/8 (3.4, no inversion; see ``linkstack.coding.convolutional``)
on a *continuous* symbol stream: CADUs back to back, no tail, start state unknown.
:class:`ViterbiDecoder` is a sans-I/O engine: :meth:`~ViterbiDecoder.decode` takes
symbols in chunks of any size (the trellis, the survivor memory and a part-period or
an odd symbol are carried to the next chunk) and returns the bits it has decided;
:meth:`~ViterbiDecoder.flush` ends the stream and returns the rest.

Symbols, one per transmitted code symbol, in transmission order:

* soft float (float16/32/64): positive = bit 1, negative = bit 0, magnitude =
  confidence; 0.0 is an erasure.  This is GNU Radio's convention (``binary_slicer_fb``,
  ``fec.cc_decoder``; nominal scale +-1).  NaN is taken as an erasure and values are
  clipped to +-``SOFT_LIMIT``, so NaN, inf or 1e300 cannot crash the decoder or poison
  its metrics; the scale does not matter otherwise (the decoder maximizes a
  correlation, which is scale-free).
* soft signed integers (int8 of a quantizer, int16 ...): the same convention.
* hard bits (uint8 0/1): map them with :func:`hard_to_soft` first.  Unsigned arrays
  are refused rather than guessed at, because libfec's offset-binary soft symbols
  (0..255, 128 = erasure) are uint8 too.

Punctured positions are filled with erasures; the decoder then runs the rate-1/2 trellis.

Decoding (the add-compare-select of Viterbi's algorithm on the 64-state trellis):
float32 path metrics, branch metric = correlation of the received pair with the
branch's expected symbols (+-1), the larger metric survives (ties go to the
predecessor whose oldest bit is 0).  Every ``NORMALIZE_INTERVAL`` steps the metric of
state 0 is subtracted from all 64.  Any state is reachable from any other in six
steps, so the metrics never spread by more than 24 ``SOFT_LIMIT``; with the drift
between two normalizations they stay within 60 ``SOFT_LIMIT`` of zero (float32 keeps
them exact enough, and finite) for a stream of any length.  Survivor decisions (one octet per
state and step) go to a ring buffer; every ``TRACEBACK_INTERVAL`` steps the decoder
traces back from the best state and releases the bits older than the traceback depth.
The schedule counts steps from the start of the stream, never from a chunk boundary,
so the output does not depend on how the symbols were chunked.

Latency: a decided bit leaves :meth:`decode` at most ``traceback + TRACEBACK_INTERVAL
- 1`` trellis steps after its symbols came in (plus less than one puncturing period).
The default depth per rate (``DEFAULT_TRACEBACK``) is at least 5K = 35, the classic
rule for rate 1/2; punctured codes have a smaller free distance and need longer
survivors, so the depth grows with the rate.  ``tests/test_viterbi.py`` checks that
the defaults lose no measurable coding gain against a traceback of 1024 (and that 5K
does lose some at rate 7/8).

Speed: the trellis runs in a numba-compiled kernel (the add-compare-select over the 32
butterflies of one step vectorizes to SIMD; the traceback is scalar).  Without numba
(not installed, or ``NUMBA_DISABLE_JIT``) a numpy implementation that vectorizes over
the 64 states of one step gives the same bits, a few hundred times slower (about
0.1 Mbit/s).  The kernel is
compiled on first use and cached on disk by numba (``cache=True``); the first decode of
a fresh install pays the compile (a few seconds: bench/bench_viterbi.py prints it),
later processes load the cache (a fraction of a second).  :func:`compile_kernels`
triggers it up front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Final, Literal, cast

import numpy as np
import numpy.typing as npt

from linkstack.coding.convolutional import (
    CONSTRAINT_LENGTH,
    G1_TAPS,
    G2_TAPS,
    MEMORY,
    PUNCTURE_PATTERNS,
    CodeRate,
    check_bits,
    check_rate,
    g2_inverted,
    nrzm_to_nrzl,
    transmitted_positions,
)
from linkstack.errors import LocalProtocolError

try:
    import numba

    _NUMBA_IMPORTED = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _NUMBA_IMPORTED = False

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRACEBACK",
    "MAX_TRACEBACK",
    "MIN_TRACEBACK",
    "NUMBA_AVAILABLE",
    "SOFT_LIMIT",
    "TRACEBACK_INTERVAL",
    "Backend",
    "ViterbiDecoder",
    "compile_kernels",
    "decode",
    "hard_to_soft",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Backend = Literal["auto", "numba", "numpy"]

STATES: Final = 1 << MEMORY  # 64
BUTTERFLIES: Final = STATES // 2
MIN_TRACEBACK: Final = 5 * CONSTRAINT_LENGTH  # 5K, the usual lower bound for rate 1/2
MAX_TRACEBACK: Final = 4096  # keeps the survivor ring (64 octets per step) small
DEFAULT_TRACEBACK: Final[dict[CodeRate, int]] = {
    "1/2": 96,
    "2/3": 128,
    "3/4": 160,
    "5/6": 192,
    "7/8": 256,
}
TRACEBACK_INTERVAL: Final = 256  # trellis steps between two tracebacks
NORMALIZE_INTERVAL: Final = 16  # trellis steps between two metric normalizations
SOFT_LIMIT: Final = 1.0e4  # soft symbols are clipped to +-SOFT_LIMIT

NUMBA_AVAILABLE: Final = _NUMBA_IMPORTED and not getattr(numba.config, "DISABLE_JIT", False)

# Kernel signature: (symbols, sign0, sign1, metrics, ring, t, emitted, depth, interval,
# final, out) -> (t, emitted, bits written to out).
_Kernel = Callable[
    [F32, F32, F32, F32, U8, int, int, int, int, bool, U8],
    tuple[int, int, int],
]


def _branch_signs(inverted: bool) -> tuple[F32, F32]:
    """Expected symbols (+-1) of butterfly j's branch from state 2j with input bit 0.

    States hold the last six input bits, the newest in bit 5: from state s, input u
    leads to ``(u << 5) | (s >> 1)``.  Butterfly j joins old states 2j and 2j+1 (they
    differ only in the oldest bit) to new states j (u = 0) and j + 32 (u = 1).  Both
    connection vectors tap the input and the oldest cell, so the four branches of a
    butterfly expect +-(c1, c2) of this one: the metrics are +bm, -bm, -bm, +bm.
    """
    sign0 = np.empty(BUTTERFLIES, np.float32)
    sign1 = np.empty(BUTTERFLIES, np.float32)
    for j in range(BUTTERFLIES):
        state = 2 * j
        # register bit d = u(t-d); u(t) = 0; u(t-1-k) is bit 5-k of the state
        register = sum(((state >> (MEMORY - 1 - k)) & 1) << (k + 1) for k in range(MEMORY))
        c1 = sum((register >> d) & 1 for d in G1_TAPS) & 1
        c2 = (sum((register >> d) & 1 for d in G2_TAPS) & 1) ^ int(inverted)
        sign0[j] = 1.0 if c1 else -1.0
        sign1[j] = 1.0 if c2 else -1.0
    return sign0, sign1


# --------------------------------------------------------------------------- numba kernel
# Written as plain typed Python (mypy checks it, numba compiles it).  The step is a
# function of its own: compiled apart, LLVM vectorizes its loop over the 32 butterflies
# (AVX2/AVX-512); written inline in the stream loop it stays scalar and runs about
# three times slower.


def _acs_step_py(  # noqa: PLR0917 - numba kernels take positional arrays
    old: F32, new: F32, row: U8, sign0: F32, sign1: F32, s0: np.float32, s1: np.float32
) -> None:
    for j in range(32):
        bm = sign0[j] * s0 + sign1[j] * s1
        a = old[2 * j]
        b = old[2 * j + 1]
        m00 = a + bm
        m01 = b - bm
        m10 = a - bm
        m11 = b + bm
        row[j] = m01 > m00
        row[j + 32] = m11 > m10
        new[j] = max(m00, m01)
        new[j + 32] = max(m10, m11)


def _traceback_py(  # noqa: PLR0917 - numba kernels take positional arrays
    metrics: F32, ring: U8, t: int, emitted: int, stop: int, out: U8, nout: int
) -> None:
    """Trace back from the best state at step t; write the bits of steps [emitted, stop)."""
    mask = ring.shape[0] - 1
    state = 0
    best = metrics[0]
    for j in range(1, 64):
        if metrics[j] > best:
            best = metrics[j]
            state = j
    for step in range(t - 1, emitted - 1, -1):
        decision = ring[step & mask, state]
        if step < stop:
            out[nout + step - emitted] = state >> 5
        state = ((state << 1) & 63) | decision


def _run_py(  # noqa: PLR0917 - numba kernels take positional arrays
    symbols: F32,
    sign0: F32,
    sign1: F32,
    metrics: F32,
    ring: U8,
    t: int,
    emitted: int,
    depth: int,
    interval: int,
    final: bool,
    out: U8,
) -> tuple[int, int, int]:
    mask = ring.shape[0] - 1
    pair = np.empty((2, 64), np.float32)
    pair[0, :] = metrics
    current = 0
    nout = 0
    for i in range(symbols.shape[0] // 2):
        old = pair[current]
        new = pair[1 - current]
        _acs_step(old, new, ring[t & mask], sign0, sign1, symbols[2 * i], symbols[2 * i + 1])
        current = 1 - current
        t += 1
        if t % NORMALIZE_INTERVAL == 0:
            reference = new[0]
            for j in range(64):
                new[j] -= reference
        if t % interval == 0 and t - depth > emitted:
            _traceback(new, ring, t, emitted, t - depth, out, nout)
            nout += t - depth - emitted
            emitted = t - depth
    if final and t > emitted:
        _traceback(pair[current], ring, t, emitted, t, out, nout)
        nout += t - emitted
        emitted = t
    metrics[:] = pair[current]
    return t, emitted, nout


def _jit(function: Callable[..., object]) -> Callable[..., object]:
    """numba's nopython compile, cached on disk where numba finds a writable place."""
    try:
        jitted = numba.njit(function, cache=True, boundscheck=False, nogil=True)
    except RuntimeError:  # pragma: no cover - no writable cache location
        jitted = numba.njit(function, boundscheck=False, nogil=True)
    return cast(Callable[..., object], jitted)


if NUMBA_AVAILABLE:
    _acs_step = _jit(_acs_step_py)
    _traceback = _jit(_traceback_py)
    _run_numba: _Kernel | None = cast(_Kernel, _jit(_run_py))
else:  # pragma: no cover - exercised only where numba is missing
    _acs_step = _acs_step_py
    _traceback = _traceback_py
    _run_numba = None


# --------------------------------------------------------------------------- numpy kernel
def _run_numpy(  # noqa: PLR0917 - numba kernels take positional arrays
    symbols: F32,
    sign0: F32,
    sign1: F32,
    metrics: F32,
    ring: U8,
    t: int,
    emitted: int,
    depth: int,
    interval: int,
    final: bool,
    out: U8,
) -> tuple[int, int, int]:
    """The same algorithm vectorized over the 64 states of one step (same float32 ops)."""
    mask = ring.shape[0] - 1
    old = metrics.copy()
    nout = 0
    for i in range(symbols.shape[0] // 2):
        bm = sign0 * symbols[2 * i] + sign1 * symbols[2 * i + 1]
        a = old[0::2]
        b = old[1::2]
        m00 = a + bm
        m01 = b - bm
        m10 = a - bm
        m11 = b + bm
        row = ring[t & mask]
        row[:32] = m01 > m00
        row[32:] = m11 > m10
        old = np.concatenate((np.maximum(m00, m01), np.maximum(m10, m11)))
        t += 1
        if t % NORMALIZE_INTERVAL == 0:
            old -= old[0]
        if t % interval == 0 and t - depth > emitted:
            _traceback_py(old, ring, t, emitted, t - depth, out, nout)
            nout += t - depth - emitted
            emitted = t - depth
    if final and t > emitted:
        _traceback_py(old, ring, t, emitted, t, out, nout)
        nout += t - emitted
        emitted = t
    metrics[:] = old
    return t, emitted, nout


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the decoder kernel now, not on first decode."""
    ViterbiDecoder(backend="auto").decode(np.zeros(2 * (DEFAULT_TRACEBACK["1/2"] + 1), np.float32))


@cache
def _warn_numpy_fallback() -> None:
    logger.warning("numba is not available: the Viterbi decoder runs its slow numpy kernel")


def _kernel(backend: Backend) -> _Kernel:
    if backend not in ("auto", "numba", "numpy"):
        raise LocalProtocolError(f"backend {backend!r} is not one of auto, numba, numpy")
    if backend == "numpy":
        return _run_numpy
    if _run_numba is not None:
        return _run_numba
    if backend == "numba":
        raise LocalProtocolError("backend 'numba' asked for, but numba is not importable")
    _warn_numpy_fallback()
    return _run_numpy


def hard_to_soft(bits: npt.ArrayLike) -> F32:
    """Hard decisions 0/1 to soft symbols -1.0/+1.0 (positive = bit 1)."""
    array = check_bits(bits)
    return array.astype(np.float32) * np.float32(2.0) - np.float32(1.0)


def _soft(symbols: npt.ArrayLike) -> F32:
    """Soft symbols as finite float32: NaN -> 0 (erasure), clipped to +-SOFT_LIMIT."""
    array = np.asarray(symbols)
    if array.ndim != 1:
        raise LocalProtocolError(f"symbols must be a 1-D array, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.float32)
    kind = array.dtype.kind
    if kind == "f":
        clipped = np.clip(array, -SOFT_LIMIT, SOFT_LIMIT)  # inf too; NaN stays NaN
        np.copyto(clipped, 0.0, where=np.isnan(clipped))
        return np.ascontiguousarray(clipped, dtype=np.float32)
    if kind == "i":
        as_float: F32 = np.clip(array, -SOFT_LIMIT, SOFT_LIMIT).astype(np.float32)
        return as_float
    raise LocalProtocolError(
        f"symbols of dtype {array.dtype} are not soft symbols: pass float (positive = 1, "
        "0 = erasure) or signed integers; map hard 0/1 bits with hard_to_soft()"
    )


class ViterbiDecoder:
    """Soft-decision Viterbi decoder engine for a continuous CCSDS convolutional stream.

    ``puncture`` is the code rate ("1/2" is the basic code with its G2 inversion);
    ``traceback`` the survivor depth in trellis steps (default ``DEFAULT_TRACEBACK``);
    ``nrzm`` undoes NRZ-M after decoding (131.0-B-5 3.3.3); ``backend`` forces the
    numba or the numpy kernel ("auto": numba where importable).

    The stream is assumed to start at a puncturing period boundary, with symbol
    alignment known (a receiver finds both from the encoded ASM).  :meth:`flush` ends
    the stream and returns the decoder to its initial state, ready for a new stream.
    """

    __slots__ = (
        "_emitted",
        "_interval",
        "_kernel",
        "_level",
        "_metrics",
        "_nrzm",
        "_pending",
        "_positions",
        "_rate",
        "_ring",
        "_sign0",
        "_sign1",
        "_t",
        "_through",
        "_traceback",
    )

    def __init__(
        self,
        puncture: CodeRate = "1/2",
        *,
        traceback: int | None = None,
        nrzm: bool = False,
        backend: Backend = "auto",
    ) -> None:
        rate = check_rate(puncture)
        depth = DEFAULT_TRACEBACK[rate] if traceback is None else traceback
        if isinstance(depth, bool) or not isinstance(depth, int | np.integer):
            raise LocalProtocolError(f"traceback must be an integer, got {depth!r}")
        if not MIN_TRACEBACK <= depth <= MAX_TRACEBACK:
            raise LocalProtocolError(
                f"traceback {depth} is outside [{MIN_TRACEBACK}, {MAX_TRACEBACK}] "
                f"(at least 5K = {MIN_TRACEBACK} trellis steps)"
            )
        self._rate: CodeRate = rate
        self._traceback = int(depth)
        self._interval = TRACEBACK_INTERVAL
        self._nrzm = nrzm
        self._kernel = _kernel(backend)
        self._sign0, self._sign1 = _branch_signs(g2_inverted(rate))
        self._positions = np.array(transmitted_positions(rate), np.intp)
        period_bits = len(PUNCTURE_PATTERNS[rate][0])
        # symbols of the period needed to complete bits 0..j of it
        self._through = np.array(
            [int(np.sum(self._positions < 2 * (j + 1))) for j in range(period_bits)], np.intp
        )
        rows = 1 << int(self._traceback + self._interval - 1).bit_length()
        self._ring = np.zeros((rows, STATES), np.uint8)
        self._metrics = np.zeros(STATES, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._t = 0
        self._emitted = 0
        self._level = 0

    @property
    def rate(self) -> CodeRate:
        return self._rate

    @property
    def traceback(self) -> int:
        """Survivor depth in trellis steps (decoded bits)."""
        return self._traceback

    @property
    def max_latency(self) -> int:
        """Most trellis steps a bit can wait inside the decoder before ``decode`` returns it."""
        return self._traceback + self._interval - 1 + len(PUNCTURE_PATTERNS[self._rate][0]) - 1

    @property
    def bits_out(self) -> int:
        """Bits returned since the stream started."""
        return self._emitted

    def reset(self) -> None:
        """Forget the stream: equal metrics (unknown start state), empty memory."""
        self._ring.fill(0)
        self._metrics.fill(0.0)
        self._pending = np.zeros(0, np.float32)
        self._t = 0
        self._emitted = 0
        self._level = 0

    def decode(self, symbols: npt.ArrayLike) -> U8:
        """Take the next soft symbols; return the bits decided so far (0/1 uint8)."""
        soft = _soft(symbols)
        if soft.size == 0:
            return np.zeros(0, np.uint8)
        if self._pending.size:
            soft = np.concatenate((self._pending, soft))
        per_period = self._positions.size
        periods = soft.size // per_period
        self._pending = soft[periods * per_period :].copy()
        if periods == 0:
            return np.zeros(0, np.uint8)
        return self._run(self._depuncture(soft[: periods * per_period], periods), final=False)

    def flush(self) -> U8:
        """End the stream: return the remaining bits and reset for a new stream.

        Trailing symbols that do not complete a bit (an odd symbol at rate 1/2) are
        dropped.
        """
        leftover = self._pending
        complete = int(np.sum(self._through <= leftover.size))
        tail = np.zeros(2 * len(PUNCTURE_PATTERNS[self._rate][0]), np.float32)
        tail[self._positions[: leftover.size]] = leftover
        bits = self._run(tail[: 2 * complete], final=True)
        self.reset()
        return bits

    def _depuncture(self, soft: F32, periods: int) -> F32:
        if self._rate == "1/2":
            return soft
        width = 2 * len(PUNCTURE_PATTERNS[self._rate][0])
        full = np.zeros((periods, width), np.float32)
        full[:, self._positions] = soft.reshape(periods, self._positions.size)
        return full.reshape(-1)

    def _run(self, pairs: F32, *, final: bool) -> U8:
        steps = pairs.size // 2
        out = np.empty(steps + self._t - self._emitted, np.uint8)
        self._t, self._emitted, written = self._kernel(
            pairs,
            self._sign0,
            self._sign1,
            self._metrics,
            self._ring,
            self._t,
            self._emitted,
            self._traceback,
            self._interval,
            final,
            out,
        )
        bits = out[:written]
        if self._nrzm and written:
            levels = bits
            bits = nrzm_to_nrzl(levels, level=self._level)
            self._level = int(levels[-1])
        return bits


def decode(
    symbols: npt.ArrayLike,
    puncture: CodeRate = "1/2",
    *,
    traceback: int | None = None,
    nrzm: bool = False,
    backend: Backend = "auto",
) -> U8:
    """Decode a whole stream at once (``decode`` then ``flush`` of a fresh decoder)."""
    decoder = ViterbiDecoder(puncture, traceback=traceback, nrzm=nrzm, backend=backend)
    return np.concatenate((decoder.decode(symbols), decoder.flush()))
