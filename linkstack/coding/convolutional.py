"""The CCSDS convolutional code, CCSDS 131.0-B-5 section 3: encoder, puncturing, NRZ-M.

Basic code (131.0-B-5 3.3.1): rate 1/2, constraint length K = 7, connection vectors
G1 = 1111001 (171 octal) and G2 = 1011011 (133 octal), the G2 output inverted; the
symbols go out C1(1), C2(1), C1(2), C2(2)... (3.3.2).  Written in the connection
vectors, the leftmost bit taps the encoder input and the rightmost the oldest delay::

    input u(t) --+--[D]--[D]--[D]--[D]--[D]--[D]
                 |   u(t-1) ...            u(t-6)
    C1(t) = u(t) ^ u(t-1) ^ u(t-2) ^ u(t-3) ^ u(t-6)              G1 = 171
    C2(t) = NOT (u(t) ^ u(t-2) ^ u(t-3) ^ u(t-5) ^ u(t-6))        G2 = 133, inverted

GNU Radio and libfec write the same code with the polynomials bit-reversed (bit i taps
delay i), a negative value meaning an inverted output: ``[79, -109]`` (0x4F, -0x6D).

Punctured codes (131.0-B-5 3.4): rates 2/3, 3/4, 5/6 and 7/8 are the same K = 7 code
*without* the G2 inversion ("Symbol inversion: None"), thinned by the puncturing
patterns of the book's table (``PUNCTURE_PATTERNS``; 1 = transmitted); the symbols
that remain go out in time order, C1 before C2 within a bit time, e.g. rate 3/4:
C1(1) C2(1) C2(2) C1(3).

NRZ-M (131.0-B-5 3.3.3 b) and its note 1): when differential encoding is used to
resolve the BPSK phase ambiguity, the NRZ-L to NRZ-M conversion is done at the
*input* of the convolutional encoder (a 1 is a change of level, a 0 no change), and
undone at the output of the decoder.  Differential encoding after the encoder is
not advised by the book and is not offered here.

Bits and symbols are numpy ``uint8`` arrays of 0/1, one bit per element; ``unpack_bits``
and ``pack_bits`` convert from and to octets, most significant bit first.  Every
encoder call is vectorized (one pass of array XORs, no Python loop per bit).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from linkstack.errors import LocalProtocolError

__all__ = [
    "CODE_RATES",
    "CONSTRAINT_LENGTH",
    "G1",
    "G1_TAPS",
    "G2",
    "G2_TAPS",
    "GNURADIO_POLYNOMIALS",
    "MEMORY",
    "PUNCTURE_PATTERNS",
    "CodeRate",
    "ConvolutionalEncoder",
    "check_bits",
    "check_rate",
    "encode",
    "g2_inverted",
    "nrzl_to_nrzm",
    "nrzm_to_nrzl",
    "pack_bits",
    "puncture",
    "transmitted_positions",
    "unpack_bits",
]

U8 = npt.NDArray[np.uint8]

CodeRate = Literal["1/2", "2/3", "3/4", "5/6", "7/8"]
CODE_RATES: Final[tuple[CodeRate, ...]] = get_args(CodeRate)

CONSTRAINT_LENGTH: Final = 7  # K, CCSDS 131.0-B-5 3.3.1 c)
MEMORY: Final = CONSTRAINT_LENGTH - 1  # delay cells; 2**MEMORY = 64 trellis states
G1: Final = 0o171  # connection vector 1111001, CCSDS 131.0-B-5 3.3.1 d)
G2: Final = 0o133  # connection vector 1011011, CCSDS 131.0-B-5 3.3.1 d)
# The same code as GNU Radio's fec.cc_encoder/cc_decoder and libfec's
# set_viterbi27_polynomial take it: bit i taps delay i, negative = inverted output.
GNURADIO_POLYNOMIALS: Final = (79, -109)

# Puncturing patterns, CCSDS 131.0-B-5 3.4 (its table; 130.1-G table 4-1 repeats it):
# rate -> (C1 row, C2 row), one column per input bit of the period, 1 = transmitted.
PUNCTURE_PATTERNS: Final[dict[CodeRate, tuple[str, str]]] = {
    "1/2": ("1", "1"),
    "2/3": ("10", "11"),
    "3/4": ("101", "110"),
    "5/6": ("10101", "11010"),
    "7/8": ("1000101", "1111010"),
}


def _taps(vector: int) -> tuple[int, ...]:
    """Delays tapped by a connection vector written input-first (leftmost bit = delay 0)."""
    return tuple(d for d in range(CONSTRAINT_LENGTH) if (vector >> (MEMORY - d)) & 1)


G1_TAPS: Final = _taps(G1)  # (0, 1, 2, 3, 6)
G2_TAPS: Final = _taps(G2)  # (0, 2, 3, 5, 6)


def check_rate(rate: str) -> CodeRate:
    """``rate`` if it is one of the book's code rates, else :class:`LocalProtocolError`."""
    for known in CODE_RATES:
        if rate == known:
            return known
    raise LocalProtocolError(
        f"code rate {rate!r} is not one of {', '.join(CODE_RATES)} (CCSDS 131.0-B-5 3.3, 3.4)"
    )


def g2_inverted(rate: CodeRate) -> bool:
    """Whether the C2 symbols are inverted: only for the basic rate-1/2 code.

    CCSDS 131.0-B-5 3.3.1 e) (inversion on the output path of G2) against 3.4
    (punctured codes: symbol inversion none).
    """
    return check_rate(rate) == "1/2"


def transmitted_positions(rate: CodeRate) -> tuple[int, ...]:
    """Where the transmitted symbols of one puncturing period sit in the rate-1/2 stream.

    Position ``2 j`` is C1 of bit ``j`` of the period, ``2 j + 1`` its C2; the tuple is
    in transmission order.  Rate 3/4: ``(0, 1, 3, 4)`` = C1(1) C2(1) C2(2) C1(3).
    """
    c1_row, c2_row = PUNCTURE_PATTERNS[check_rate(rate)]
    return tuple(
        2 * j + branch
        for j in range(len(c1_row))
        for branch, row in enumerate((c1_row, c2_row))
        if row[j] == "1"
    )


def _period_mask(rate: CodeRate) -> U8:
    c1_row, c2_row = PUNCTURE_PATTERNS[rate]
    return np.array([int(c) for pair in zip(c1_row, c2_row, strict=True) for c in pair], np.uint8)


def check_bits(bits: npt.ArrayLike, what: str = "bits") -> U8:
    """A 1-D uint8 array of 0/1, or :class:`LocalProtocolError` naming what is wrong."""
    array = np.asarray(bits)
    if array.ndim != 1:
        raise LocalProtocolError(f"{what} must be a 1-D array, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.uint8)
    if array.dtype.kind not in "biu":
        raise LocalProtocolError(f"{what} must be integers 0/1, got dtype {array.dtype}")
    if array.dtype.kind != "b" and (array.min() < 0 or array.max() > 1):
        raise LocalProtocolError(
            f"{what} must be 0 or 1, got values in [{array.min()}, {array.max()}]"
        )
    return np.ascontiguousarray(array, dtype=np.uint8)


def unpack_bits(data: bytes | bytearray | memoryview) -> U8:
    """Octets to bits, most significant bit first (the CCSDS transmission order)."""
    return np.unpackbits(np.frombuffer(bytes(data), np.uint8))


def pack_bits(bits: npt.ArrayLike) -> bytes:
    """Bits to octets, most significant bit first; the bit count must be a multiple of 8."""
    array = check_bits(bits)
    if array.size % 8:
        raise LocalProtocolError(f"{array.size} bits do not make whole octets")
    return np.packbits(array).tobytes()


def nrzl_to_nrzm(bits: npt.ArrayLike, *, level: int = 0) -> U8:
    """NRZ-L data to NRZ-M levels: a 1 changes the level, a 0 keeps it (131.0-B-5 3.3.3).

    ``level`` is the level before the first bit; the last element of the result is the
    level to pass with the next chunk of a stream.
    """
    array = check_bits(bits)
    if level not in (0, 1):
        raise LocalProtocolError(f"NRZ-M level must be 0 or 1, got {level!r}")
    if array.size == 0:
        return array
    out: U8 = np.bitwise_xor.accumulate(array)
    if level:
        out ^= 1
    return out


def nrzm_to_nrzl(levels: npt.ArrayLike, *, level: int = 0) -> U8:
    """NRZ-M levels back to NRZ-L data (131.0-B-5 3.3.3 note 1: at the decoder output).

    ``level`` is the level before the first element (the last level of the previous
    chunk).  Inverting every level leaves the result unchanged but for its first bit.
    """
    array = check_bits(levels, "levels")
    if level not in (0, 1):
        raise LocalProtocolError(f"NRZ-M level must be 0 or 1, got {level!r}")
    if array.size == 0:
        return array
    out = array.copy()
    out[0] ^= level
    out[1:] ^= array[:-1]
    return out


def puncture(symbols: npt.ArrayLike, rate: CodeRate, *, phase: int = 0) -> U8:
    """Keep the transmitted symbols of a rate-1/2 stream C1(1) C2(1) C1(2) C2(2)...

    ``phase`` is the position, in input bits, of the first pair within the puncturing
    period (0 for a stream that starts with the pattern).  Rate "1/2" returns a copy.
    A trailing odd symbol (half a pair) is refused.
    """
    array = check_bits(symbols, "symbols")
    rate = check_rate(rate)
    if array.size % 2:
        raise LocalProtocolError(f"{array.size} symbols are not whole C1/C2 pairs")
    mask = _period_mask(rate)
    period = mask.size // 2
    if not 0 <= phase < period:
        raise LocalProtocolError(f"phase {phase} is outside the rate-{rate} period of {period}")
    keep = np.resize(np.roll(mask, -2 * phase), array.size).astype(bool)
    kept: U8 = array[keep]
    return kept


class ConvolutionalEncoder:
    """Streaming CCSDS convolutional encoder: bits in, channel symbols (0/1) out.

    The shift register, the position in the puncturing period and the NRZ-M level
    are carried from one :meth:`encode` call to the next, so a stream encoded in
    chunks of any size equals the same stream encoded at once.  The register starts
    all zeros; the NRZ-M level starts at 0.  No tail is appended: the channel carries
    a continuous stream (CADUs back to back).
    """

    __slots__ = ("_history", "_inverted", "_level", "_mask", "_nrzm", "_phase", "_rate")

    def __init__(self, rate: CodeRate = "1/2", *, nrzm: bool = False) -> None:
        self._rate: CodeRate = check_rate(rate)
        self._nrzm = nrzm
        self._inverted = g2_inverted(self._rate)
        self._mask = _period_mask(self._rate)
        self._history = np.zeros(MEMORY, np.uint8)  # u(t-6) ... u(t-1)
        self._phase = 0
        self._level = 0

    @property
    def rate(self) -> CodeRate:
        return self._rate

    @property
    def state(self) -> int:
        """The register, bit i = u(t-1-i): the last input bit in bit 0."""
        return int(sum(int(b) << i for i, b in enumerate(self._history[::-1])))

    def encode(self, bits: npt.ArrayLike) -> U8:
        """Encode the next bits of the stream; returns the transmitted symbols."""
        data = check_bits(bits)
        n = data.size
        if n == 0:
            return np.zeros(0, np.uint8)
        if self._nrzm:
            data = nrzl_to_nrzm(data, level=self._level)
            self._level = int(data[-1])
        padded = np.concatenate((self._history, data))
        self._history = padded[-MEMORY:].copy()

        def delayed(d: int) -> U8:
            return padded[MEMORY - d : MEMORY - d + n]

        c1 = np.bitwise_xor.reduce([delayed(d) for d in G1_TAPS], axis=0)
        c2 = np.bitwise_xor.reduce([delayed(d) for d in G2_TAPS], axis=0)
        if self._inverted:
            c2 ^= 1
        pairs = np.empty(2 * n, np.uint8)
        pairs[0::2] = c1
        pairs[1::2] = c2
        if self._rate == "1/2":
            return pairs
        period = self._mask.size // 2
        keep = np.resize(np.roll(self._mask, -2 * self._phase), 2 * n).astype(bool)
        self._phase = (self._phase + n) % period
        kept: U8 = pairs[keep]
        return kept


def encode(bits: npt.ArrayLike, rate: CodeRate = "1/2", *, nrzm: bool = False) -> U8:
    """Encode a whole buffer from the all-zeros state (no tail appended)."""
    return ConvolutionalEncoder(rate, nrzm=nrzm).encode(bits)
