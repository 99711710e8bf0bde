"""CCSDS Reed-Solomon (255,223) E=16 and (255,239) E=8, as a numpy batch codec.

CCSDS 131.0-B-5 section 4 (clause numbers below follow the 4.3 "specification" list
of the 131.0-B-2/-3 text, which B-5 keeps): symbols are J=8 bits, the field is built
on F(x) = x^8+x^7+x^2+x+1 and the code generator is
g(x) = prod_{j=128-E}^{127+E} (x - alpha^(11 j)), i.e. libfec
``init_rs_char(8, 0x187, fcr=128-E, prim=11, nroots=2E)``.

Everything works on batches: ``encode_blocks`` / ``decode_blocks`` take a
``(B, length)`` uint8 array of codeblocks, so that a chunk holding a hundred CADUs
is one numpy call.  Parity and syndromes come from per-position lookup tables (one
gather and one XOR-reduce per batch); only codewords whose syndromes are non-zero
reach the corrector, an inversionless Berlekamp-Massey vectorized across the
erroneous codewords, followed by a vectorized Chien search and Forney's formula.
A correction is accepted only if the locator has exactly ``deg`` distinct roots,
all outside the virtual fill, every error value is non-zero and the corrected word
has all-zero syndromes; anything else is reported uncorrectable.  ``reedsolo`` (the
project's reference decoder) and ``galois`` cross-check this module in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

from linkstack.errors import DecodeError, Layer, LocalProtocolError, UncorrectableCodeword

U8 = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.int16]

_CHUNK: Final = 1024  # rows per table gather, to bound the (rows, 255, 4) temporary

SYMBOL_BITS: Final = 8  # J, CCSDS 131.0-B-5 4.3.2 a)
N: Final = 255  # n = 2^J - 1 symbols per codeword, CCSDS 131.0-B-5 4.3.2 c)
FIELD_POLY: Final = 0x187  # F(x) = x^8+x^7+x^2+x+1, CCSDS 131.0-B-5 4.3.3
ROOT_STEP: Final = 11  # roots alpha^(11 j), CCSDS 131.0-B-5 4.3.4
ERROR_CORRECTION_VALUES: Final = (16, 8)  # E, CCSDS 131.0-B-5 4.3.1 b)
INTERLEAVE_DEPTHS: Final = (1, 2, 3, 4, 5, 8)  # I, CCSDS 131.0-B-5 4.3.5
# Berlekamp's dual basis is the dual of {1, beta, ..., beta^7}, beta = alpha^117,
# CCSDS 131.0-B-5 4.3.9 (131.0-B-2 4.4.2); z0 is the first transmitted (most
# significant) bit.
DUAL_BASIS_BETA_LOG: Final = 117

CLAUSE_UNCORRECTABLE: Final = "CCSDS 131.0-B-5 4.3"
CLAUSE_LENGTH: Final = "CCSDS 131.0-B-5 4.3.6"


class Basis(Enum):
    """Symbol representation on the wire, CCSDS 131.0-B-5 4.3.9."""

    DUAL = "dual"  # Berlekamp's dual basis: what the standard mandates
    CONVENTIONAL = "conventional"  # polynomial basis {alpha^7..alpha^0}: common in practice


# --------------------------------------------------------------------------- field


def _field_tables() -> tuple[list[int], list[int]]:
    exp = [0] * N
    value = 1
    for i in range(N):
        exp[i] = value
        value <<= 1
        if value & 0x100:
            value ^= FIELD_POLY
    log = [0] * 256
    for i, v in enumerate(exp):
        log[v] = i
    return exp, log


_EXP, _LOG = _field_tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two field elements (conventional basis)."""
    if a == 0 or b == 0:
        return 0
    return _EXP[(_LOG[a] + _LOG[b]) % N]


def gf_pow_alpha(exponent: int) -> int:
    """alpha**exponent, alpha the root of F(x) (the element 0x02)."""
    return _EXP[exponent % N]


def _trace(z: int) -> int:
    """Tr(z) = sum_{k=0}^{7} z^(2^k); 0 or 1."""
    acc, power = 0, z
    for _ in range(SYMBOL_BITS):
        acc ^= power
        power = gf_mul(power, power)
    return acc


def _dual_basis_tables() -> tuple[bytes, bytes]:
    """(conventional -> dual, dual -> conventional), libfec Taltab / Tal1tab.

    The dual-basis coordinates of z are z_i = Tr(z beta^i) (the dual basis l_i
    satisfies Tr(l_i beta^j) = delta_ij), z0 the most significant bit.
    """
    to_dual = bytearray(256)
    for z in range(256):
        value = 0
        for i in range(SYMBOL_BITS):
            if _trace(gf_mul(z, gf_pow_alpha(DUAL_BASIS_BETA_LOG * i))):
                value |= 0x80 >> i
        to_dual[z] = value
    to_conventional = bytearray(256)
    for z, d in enumerate(to_dual):
        to_conventional[d] = z
    return bytes(to_dual), bytes(to_conventional)


#: Conventional to dual basis (libfec Taltab) and back (Tal1tab), 256 bytes each,
#: for ``bytes.translate``.
TO_DUAL, TO_CONVENTIONAL = _dual_basis_tables()
_TO_DUAL_NP: Final = np.frombuffer(TO_DUAL, dtype=np.uint8)
_TO_CONV_NP: Final = np.frombuffer(TO_CONVENTIONAL, dtype=np.uint8)

# Full multiplication table, indexed by (a << 8) | b.
_MUL: Final = np.array([gf_mul(a, b) for a in range(256) for b in range(256)], dtype=np.uint8)
_LOG_NP: Final = np.array(_LOG, dtype=np.int64)
_EXP_NP: Final = np.array(_EXP * 3, dtype=np.uint8)


def _mul(a: npt.NDArray[np.integer], b: npt.NDArray[np.integer]) -> U8:
    """Element-wise field product of two broadcastable uint8 arrays."""
    product: U8 = _MUL[(a.astype(np.intp) << 8) | b]
    return product


def generator_polynomial(error_correction: int) -> list[int]:
    """g(x) coefficients, highest degree first (g[0] = 1), CCSDS 131.0-B-5 4.3.4."""
    e = error_correction
    g = [1]
    for j in range(128 - e, 128 + e):
        root = gf_pow_alpha(ROOT_STEP * j)
        product = [0] * (len(g) + 1)
        for i, c in enumerate(g):
            product[i] ^= c
            product[i + 1] ^= gf_mul(c, root)
        g = product
    return g


# --------------------------------------------------------------------------- code tables


class _Code:
    """Lookup tables for one E; built once per process (``_code``)."""

    def __init__(self, error_correction: int) -> None:
        e = error_correction
        self.e = e
        self.nroots = 2 * e
        self.k = N - 2 * e
        self.fcr = 128 - e
        self.words = self.nroots // 8  # uint64 words per syndrome / parity vector
        nroots, k = self.nroots, self.k

        # Syndrome table: symbol v at transmitted position p (power 254 - p)
        # contributes v * gamma^((fcr + j)(254 - p)) to S_j, gamma = alpha^11.
        positions = np.arange(N)
        powers = (N - 1 - positions)[:, None] * (self.fcr + np.arange(nroots))[None, :]
        root_log = (ROOT_STEP * powers) % N  # (255, nroots)
        values = np.arange(256)
        table = np.zeros((N, 256, nroots), dtype=np.uint8)
        logs = (_LOG_NP[values[1:]][None, :, None] + root_log[:, None, :]) % N
        table[:, 1:, :] = _EXP_NP[logs]
        self.syndrome_table = np.ascontiguousarray(table).view(np.uint64).reshape(N * 256, -1)
        self.syndrome_offsets = (positions * 256).astype(np.intp)

        # Parity table: the check symbols of a message with v at position i are
        # v * (x^(nroots + k - 1 - i) mod g(x)), the code being GF(2^8)-linear.
        g = generator_polynomial(e)
        unit = np.zeros((k, nroots), dtype=np.uint8)
        remainder = g[1:]  # x^nroots mod g(x), highest degree first
        for degree in range(k):  # remainder = x^(nroots + degree) mod g(x)
            unit[k - 1 - degree] = remainder
            top = remainder[0]
            remainder = [
                (remainder[i + 1] if i + 1 < nroots else 0) ^ gf_mul(top, g[i + 1])
                for i in range(nroots)
            ]
        parity = _MUL[(values[None, :, None] << 8) | unit[:, None, :]]  # (k, 256, nroots)
        self.parity_table = np.ascontiguousarray(parity).view(np.uint64).reshape(k * 256, -1)
        self.parity_offsets = (np.arange(k) * 256).astype(np.intp)

        # Chien / Forney: CHIEN[i, t] = gamma^(-t i) for locator evaluation at
        # X^-1 = gamma^(-t).
        t_values = np.arange(N)
        self.chien = np.stack([_EXP_NP[(-ROOT_STEP * i * t_values) % N] for i in range(nroots + 1)])

    # ------------------------------------------------------------------ batch kernels

    def parity(self, messages: U8) -> U8:
        """Check symbols (M, 2E) of conventional-basis messages (M, k - q)."""
        rows, width = messages.shape
        offsets = self.parity_offsets[self.k - width :]
        out = np.empty((rows, self.words), dtype=np.uint64)
        for start in range(0, rows, _CHUNK):
            part = messages[start : start + _CHUNK]
            gathered = self.parity_table[part.astype(np.intp) + offsets]
            out[start : start + _CHUNK] = np.bitwise_xor.reduce(gathered, axis=1)
        return out.view(np.uint8).reshape(rows, self.nroots)

    def syndromes(self, words: U8) -> npt.NDArray[np.uint64]:
        """Syndromes S_0..S_2E-1 of codewords (M, 255 - q), packed as (M, 2E/8) uint64."""
        rows, width = words.shape
        offsets = self.syndrome_offsets[N - width :]
        out = np.empty((rows, self.words), dtype=np.uint64)
        for start in range(0, rows, _CHUNK):
            part = words[start : start + _CHUNK]
            gathered = self.syndrome_table[part.astype(np.intp) + offsets]
            out[start : start + _CHUNK] = np.bitwise_xor.reduce(gathered, axis=1)
        return out

    def correct(self, words: U8, packed_syndromes: npt.NDArray[np.uint64]) -> tuple[U8, IntArray]:
        """Correct codewords with non-zero syndromes.

        Returns the corrected words (failed rows unchanged) and, per row, the number
        of corrected symbols or -1 when the row is uncorrectable.
        """
        rows, width = words.shape
        e, nroots = self.e, self.nroots
        syn = packed_syndromes.view(np.uint8).reshape(rows, nroots).astype(np.intp)

        # Inversionless Berlekamp-Massey, all rows at once.  lam is scaled by a
        # non-zero constant, which changes neither its roots nor Forney's ratio.
        lam = np.zeros((rows, nroots + 1), dtype=np.uint8)
        lam[:, 0] = 1
        prev = lam.copy()
        length = np.zeros(rows, dtype=np.intp)
        scale = np.ones(rows, dtype=np.uint8)
        zero_col = np.zeros((rows, 1), dtype=np.uint8)
        for r in range(nroots):
            delta = np.bitwise_xor.reduce(_mul(lam[:, : r + 1], syn[:, r::-1]), axis=1)
            shifted = np.concatenate([zero_col, prev[:, :-1]], axis=1)
            new_lam = _mul(scale[:, None], lam) ^ _mul(delta[:, None], shifted)
            jump = (delta != 0) & (2 * length <= r)
            prev = np.where(jump[:, None], lam, shifted)
            length = np.where(jump, r + 1 - length, length)
            scale = np.where(jump, delta, scale)
            lam = new_lam
        ok = length <= e
        lam = lam[:, : e + 1]

        # Chien search over the transmitted positions only: power t = width-1-p, so
        # a root in the virtual fill (t >= width) is never found and the root count
        # falls short of the locator degree.
        chien = self.chien[:, :width]
        value = np.zeros((rows, width), dtype=np.uint8)
        for i in range(e + 1):
            value ^= _mul(lam[:, i : i + 1], chien[i][None, :])
        roots = value == 0
        ok &= roots.sum(axis=1) == length

        # Forney: Y = X^(1-fcr) Omega(X^-1) / Lambda'(X^-1), Omega = S Lambda mod x^2E.
        omega = np.zeros((rows, e), dtype=np.uint8)
        for i in range(e):
            omega[:, i] = np.bitwise_xor.reduce(_mul(syn[:, : i + 1], lam[:, i::-1]), axis=1)
        row_idx, t_idx = np.nonzero(roots & ok[:, None])
        omega_at = np.zeros(len(row_idx), dtype=np.uint8)
        for i in range(e):
            omega_at ^= _mul(omega[row_idx, i], chien[i, t_idx])
        deriv_at = np.zeros(len(row_idx), dtype=np.uint8)
        for i in range(1, e + 1, 2):
            deriv_at ^= _mul(lam[row_idx, i], chien[i - 1, t_idx])
        inconsistent = (omega_at == 0) | (deriv_at == 0)
        ok[row_idx[inconsistent]] = False
        log_value = (ROOT_STEP * t_idx * (1 - self.fcr) + _LOG_NP[omega_at] - _LOG_NP[deriv_at]) % N
        fixed = words.copy()
        fixed[row_idx, width - 1 - t_idx] ^= np.where(inconsistent, 0, _EXP_NP[log_value]).astype(
            np.uint8
        )

        # Accept only words that are codewords now.
        check = np.nonzero(ok)[0]
        if len(check):
            ok[check] = ~self.syndromes(fixed[check]).any(axis=1)
        fixed[~ok] = words[~ok]
        return fixed, np.where(ok, length, -1).astype(np.int16)


@cache
def _code(error_correction: int) -> _Code:
    if error_correction not in ERROR_CORRECTION_VALUES:
        raise LocalProtocolError(
            f"error_correction E={error_correction} is not one of {ERROR_CORRECTION_VALUES}"
            " (CCSDS 131.0-B-5 4.3.1)"
        )
    return _Code(error_correction)


# --------------------------------------------------------------------------- codewords


def message_length(error_correction: int) -> int:
    """k = 255 - 2E information symbols per codeword."""
    return _code(error_correction).k


def encode_codewords(messages: U8, *, error_correction: int = 16) -> U8:
    """Systematic conventional-basis codewords (M, width + 2E) of messages (M, width).

    ``width`` < k gives the shortened code (the missing leading symbols are zeros).
    """
    code = _code(error_correction)
    msgs = np.asarray(messages, dtype=np.uint8)
    if msgs.ndim != 2 or not 0 < msgs.shape[1] <= code.k:
        raise LocalProtocolError(
            f"messages of shape {msgs.shape}: expected (M, 1..{code.k}) (CCSDS 131.0-B-5 4.3.2)"
        )
    return np.concatenate([msgs, code.parity(msgs)], axis=1)


def decode_codewords(words: U8, *, error_correction: int = 16) -> tuple[U8, IntArray]:
    """Decode conventional-basis codewords (M, width), width in 2E+1..255.

    Returns the corrected words and per word the count of corrected symbols, or -1
    where the word is uncorrectable (that row is returned unchanged).
    """
    code = _code(error_correction)
    arr = np.asarray(words, dtype=np.uint8)
    if arr.ndim != 2 or not code.nroots < arr.shape[1] <= N:
        raise LocalProtocolError(
            f"codewords of shape {arr.shape}: expected (M, {code.nroots + 1}..{N})"
            " (CCSDS 131.0-B-5 4.3.2)"
        )
    syn = code.syndromes(arr)
    bad = np.nonzero(syn.any(axis=1))[0]
    counts = np.zeros(len(arr), dtype=np.int16)
    out = arr.copy()
    if len(bad):
        fixed, counts[bad] = code.correct(arr[bad], syn[bad])
        out[bad] = fixed
    return out, counts


# --------------------------------------------------------------------------- codeblocks


@dataclass(frozen=True, slots=True)
class CodeblockLayout:
    """An interleaved, possibly shortened R-S codeblock, CCSDS 131.0-B-5 4.3.5-4.3.7.

    Frame byte n belongs to codeword n mod I; check symbol i of codeword j sits at
    offset N + i*I + j; Q = k*I - N leading virtual-fill zeros (Q/I per codeword)
    are never transmitted.
    """

    interleave: int  # I
    error_correction: int  # E
    frame_length: int  # N, octets of the transfer frame (k*I - Q)

    def __post_init__(self) -> None:
        if self.interleave not in INTERLEAVE_DEPTHS:
            raise LocalProtocolError(
                f"interleave depth I={self.interleave} is not one of {INTERLEAVE_DEPTHS}"
                " (CCSDS 131.0-B-5 4.3.5)"
            )
        k = _code(self.error_correction).k
        full = k * self.interleave
        if not 0 < self.frame_length <= full:
            raise LocalProtocolError(
                f"frame length N={self.frame_length} does not fit the codeblock: 0 < N <= k*I"
                f" = {k}*{self.interleave} = {full} (CCSDS 131.0-B-5 4.3.6)"
            )
        if (full - self.frame_length) % self.interleave:
            raise LocalProtocolError(
                f"frame length N={self.frame_length} leaves a virtual fill Q = {full}"
                f" - {self.frame_length} = {full - self.frame_length} that is not a multiple"
                f" of I={self.interleave} (CCSDS 131.0-B-5 4.3.7)"
            )

    @property
    def k(self) -> int:
        return N - 2 * self.error_correction

    @property
    def check_length(self) -> int:
        """2*E*I check symbols."""
        return 2 * self.error_correction * self.interleave

    @property
    def codeblock_length(self) -> int:
        """N + 2*E*I octets: what follows the ASM."""
        return self.frame_length + self.check_length

    @property
    def virtual_fill(self) -> int:
        """Q, leading zero symbols never transmitted."""
        return self.k * self.interleave - self.frame_length


@dataclass(frozen=True, slots=True)
class BlockDecodeResult:
    """Outcome of ``decode_blocks`` for B codeblocks."""

    frames: U8  # (B, N); rows with ok False hold the received (uncorrected) data
    corrected: IntArray  # (B, I) symbols corrected per codeword, -1 where uncorrectable
    ok: npt.NDArray[np.bool_]  # (B,) every codeword of the block decoded


def encode_blocks(frames: U8, layout: CodeblockLayout, *, basis: Basis = Basis.DUAL) -> U8:
    """Codeblocks (B, N + 2EI) of frames (B, N): the frame unchanged, then the checks."""
    arr = np.asarray(frames, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != layout.frame_length:
        raise LocalProtocolError(
            f"frames of shape {arr.shape}: expected (B, {layout.frame_length})"
        )
    code = _code(layout.error_correction)
    rows, depth = arr.shape[0], layout.interleave
    width = layout.frame_length // depth
    conventional = _TO_CONV_NP[arr] if basis is Basis.DUAL else arr
    messages = conventional.reshape(rows, width, depth).transpose(0, 2, 1).reshape(-1, width)
    parity = code.parity(np.ascontiguousarray(messages))
    if basis is Basis.DUAL:
        parity = _TO_DUAL_NP[parity]
    checks = parity.reshape(rows, depth, code.nroots).transpose(0, 2, 1).reshape(rows, -1)
    return np.concatenate([arr, checks], axis=1)


def decode_blocks(
    blocks: U8, layout: CodeblockLayout, *, basis: Basis = Basis.DUAL
) -> BlockDecodeResult:
    """Correct codeblocks (B, N + 2EI); never raises on bad content."""
    arr = np.asarray(blocks, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != layout.codeblock_length:
        raise LocalProtocolError(
            f"codeblocks of shape {arr.shape}: expected (B, {layout.codeblock_length})"
        )
    code = _code(layout.error_correction)
    rows, depth, n_frame = arr.shape[0], layout.interleave, layout.frame_length
    width = n_frame // depth
    conventional = _TO_CONV_NP[arr] if basis is Basis.DUAL else arr
    data = conventional[:, :n_frame].reshape(rows, width, depth).transpose(0, 2, 1)
    checks = conventional[:, n_frame:].reshape(rows, code.nroots, depth).transpose(0, 2, 1)
    words = np.concatenate([data, checks], axis=2).reshape(rows * depth, width + code.nroots)
    syn = code.syndromes(words)
    bad = np.nonzero(syn.any(axis=1))[0]
    counts = np.zeros(rows * depth, dtype=np.int16)
    frames = arr[:, :n_frame].copy()
    if len(bad):
        fixed, counts[bad] = code.correct(words[bad], syn[bad])
        good = bad[counts[bad] > 0]
        if len(good):
            symbols = fixed[counts[bad] > 0, :width]
            if basis is Basis.DUAL:
                symbols = _TO_DUAL_NP[symbols]
            block_idx, cw_idx = np.divmod(good, depth)
            columns = np.arange(width)[None, :] * depth + cw_idx[:, None]
            frames[block_idx[:, None], columns] = symbols
    corrected = counts.reshape(rows, depth)
    ok: npt.NDArray[np.bool_] = np.all(corrected >= 0, axis=1)
    return BlockDecodeResult(frames=frames, corrected=corrected, ok=ok)


# --------------------------------------------------------------------------- one codeblock


def encode(frame: bytes, layout: CodeblockLayout, *, basis: Basis = Basis.DUAL) -> bytes:
    """One codeblock: the frame followed by its 2EI check symbols."""
    if len(frame) != layout.frame_length:
        raise LocalProtocolError(
            f"frame of {len(frame)} octets: the layout expects N={layout.frame_length}"
        )
    arr = np.frombuffer(frame, dtype=np.uint8)[None, :]
    return encode_blocks(arr, layout, basis=basis).tobytes()


def decode(
    block: bytes, layout: CodeblockLayout, *, basis: Basis = Basis.DUAL
) -> tuple[bytes, tuple[int, ...]]:
    """Correct one codeblock: (frame, symbols corrected per codeword).

    Raises ``DecodeError`` ("bad-length") or ``UncorrectableCodeword``
    ("uncorrectable").
    """
    if len(block) != layout.codeblock_length:
        raise DecodeError(
            Layer.TM_CODING,
            "bad-length",
            CLAUSE_LENGTH,
            f"codeblock of {len(block)} octets, expected {layout.codeblock_length}",
        )
    result = decode_blocks(np.frombuffer(block, dtype=np.uint8)[None, :], layout, basis=basis)
    corrected = tuple(int(c) for c in result.corrected[0])
    if not result.ok[0]:
        failed = [j for j, c in enumerate(corrected) if c < 0]
        raise UncorrectableCodeword(
            Layer.TM_CODING,
            "uncorrectable",
            CLAUSE_UNCORRECTABLE,
            f"codeword(s) {failed} of {layout.interleave} hold more than E="
            f"{layout.error_correction} symbol errors",
        )
    return result.frames[0].tobytes(), corrected
