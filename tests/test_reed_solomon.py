"""CCSDS Reed-Solomon batch codec (CCSDS 131.0-B-5 4.3).

Independent oracles: ``galois`` (finite-field library: the code and the dual basis
re-derived from their definitions), ``reedsolo`` (the project's reference decoder),
libfec's ``gen_ccsds_tal.c`` tal[] rows (published), and the CCSDS generator
coefficients as printed by galois.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import reedsolo
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.coding import reed_solomon as rs
from linkstack.coding.reed_solomon import Basis, CodeblockLayout
from linkstack.errors import DecodeError, Layer, LocalProtocolError, UncorrectableCodeword

galois = pytest.importorskip("galois")


@pytest.fixture(scope="module")
def field() -> Any:
    return galois.GF(2**8, irreducible_poly=0x187)


@pytest.fixture(scope="module")
def galois_codes(field: Any) -> dict[int, Any]:
    """galois' RS codes with roots (alpha^11)^j, j = 128-E .. 127+E (4.3.4)."""
    alpha11 = field.primitive_element**11
    return {
        e: galois.ReedSolomon(255, 255 - 2 * e, c=128 - e, field=field, alpha=alpha11)
        for e in (16, 8)
    }


def _corrupt(words: np.ndarray, count: int, rng: np.random.Generator, lo: int = 0) -> np.ndarray:
    """Add exactly ``count`` non-zero symbol errors per row at positions >= lo."""
    bad = words.copy()
    for row in bad:
        pos = rng.choice(np.arange(lo, len(row)), count, replace=False)
        row[pos] ^= rng.integers(1, 256, count, dtype=np.uint8)
    return bad


# --------------------------------------------------------------------------- code definition


def test_primitive_element_is_alpha(field: Any) -> None:
    # alpha is the root of F(x) = 0x187, i.e. the element 0x02 (4.3.3)
    assert int(field.primitive_element) == 2
    assert rs.gf_pow_alpha(11) == int(field(2) ** 11) == 0xAD


@pytest.mark.parametrize("e", [16, 8])
def test_generator_polynomial_matches_galois(galois_codes: dict[int, Any], e: int) -> None:
    ours = rs.generator_polynomial(e)
    theirs = [int(c) for c in galois_codes[e].generator_poly.coeffs]
    assert ours == theirs


def test_generator_polynomial_published_coefficients() -> None:
    # g(x) for E=16 begins 1, 91, 127, 86, 16, 30, 13, 235 and is palindromic
    # (galois' generator_poly printout; roots symmetric about alpha^(11*127.5)).
    g = rs.generator_polynomial(16)
    assert g[:8] == [1, 91, 127, 86, 16, 30, 13, 235]
    assert g == g[::-1]


@pytest.mark.parametrize("e", [16, 8])
def test_conventional_codewords_match_galois(
    galois_codes: dict[int, Any], field: Any, e: int
) -> None:
    rng = np.random.default_rng(e)
    k = 255 - 2 * e
    messages = rng.integers(0, 256, (4, k), dtype=np.uint8)
    ours = rs.encode_codewords(messages, error_correction=e)
    for message, word in zip(messages, ours, strict=True):
        theirs = galois_codes[e].encode(field(message))
        assert bytes(word) == bytes(np.asarray(theirs, dtype=np.uint8))


@pytest.mark.parametrize(("e", "fcr"), [(16, 112), (8, 120)])
def test_conventional_codewords_match_reedsolo(e: int, fcr: int) -> None:
    # reedsolo's generator is a field element, not an exponent: its rs_generator_poly takes
    # roots gf_pow(generator, fcr + i), so alpha^11 = 0xAD over 0x187 (libfec prim=11).
    codec = reedsolo.RSCodec(2 * e, 255, fcr=fcr, prim=0x187, generator=0xAD, c_exp=8)
    rng = np.random.default_rng(100 + e)
    messages = rng.integers(0, 256, (3, 255 - 2 * e), dtype=np.uint8)
    ours = rs.encode_codewords(messages, error_correction=e)
    for message, word in zip(messages, ours, strict=True):
        assert bytes(codec.encode(bytes(message))) == bytes(word)


def test_dual_basis_tables_rederived_from_trace_definition(field: Any) -> None:
    # 4.3.9: dual basis {l_i} of {1, beta, ..., beta^7}, beta = alpha^117, with
    # Tr(l_i beta^j) = delta_ij; the dual coordinates of z are z_i = Tr(z beta^i),
    # z0 first (most significant).  Computed here with galois' own trace.
    beta = field.primitive_element**117
    expected = []
    for value in range(256):
        z = field(value)
        bits = [int((z * beta**i).field_trace()) for i in range(8)]
        expected.append(int("".join(map(str, bits)), 2))
    assert list(rs.TO_DUAL) == expected
    assert sorted(rs.TO_DUAL) == list(range(256))
    assert all(rs.TO_CONVENTIONAL[rs.TO_DUAL[v]] == v for v in range(256))
    # The dual basis itself: l_i is the element whose dual coordinates are the unit
    # vector e_i, and it must satisfy Tr(l_i beta^j) = delta_ij.
    for i in range(8):
        l_i = field(rs.TO_CONVENTIONAL[0x80 >> i])
        assert [int((l_i * beta**j).field_trace()) for j in range(8)] == [
            int(i == j) for j in range(8)
        ]


def test_dual_basis_matches_libfec_tal_rows() -> None:
    # libfec gen_ccsds_tal.c: tal[] = {0x8d,0xef,0xec,0x86,0xfa,0x99,0xaf,0x7b};
    # Taltab[1 << k] = tal[7 - k] (conventional bit k -> dual pattern).
    tal = [0x8D, 0xEF, 0xEC, 0x86, 0xFA, 0x99, 0xAF, 0x7B]
    assert [rs.TO_DUAL[1 << k] for k in range(8)] == tal[::-1]


def test_dual_basis_codeblock_is_translated_conventional(
    galois_codes: dict[int, Any], field: Any
) -> None:
    # Dual basis on the wire: the frame octets are dual-basis symbols, so the checks
    # are TO_DUAL(conventional parity of TO_CONVENTIONAL(frame)) (libfec encode_rs_ccsds).
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, 223, dtype=np.uint8)
    layout = CodeblockLayout(1, 16, 223)
    block = rs.encode(frame.tobytes(), layout, basis=Basis.DUAL)
    conventional = galois_codes[16].encode(
        field(np.frombuffer(frame.tobytes().translate(rs.TO_CONVENTIONAL), dtype=np.uint8))
    )
    expected = bytes(np.asarray(conventional, dtype=np.uint8)).translate(rs.TO_DUAL)
    assert block == expected
    assert block[:223] == frame.tobytes()
    plain = rs.encode(frame.tobytes(), layout, basis=Basis.CONVENTIONAL)
    assert plain != block and plain[:223] == frame.tobytes()


# --------------------------------------------------------------------------- correction limits


@pytest.mark.parametrize("e", [16, 8])
def test_exactly_e_errors_corrected_with_count(e: int) -> None:
    rng = np.random.default_rng(e)
    words = rs.encode_codewords(
        rng.integers(0, 256, (200, 255 - 2 * e), dtype=np.uint8), error_correction=e
    )
    for count in (1, e // 2, e):
        fixed, counts = rs.decode_codewords(_corrupt(words, count, rng), error_correction=e)
        assert (counts == count).all()
        assert (fixed == words).all()


@pytest.mark.parametrize("e", [16, 8])
def test_e_plus_one_errors_never_give_a_wrong_codeword(e: int) -> None:
    # 400 words per E with E+1 errors: each is reported uncorrectable (-1, unchanged)
    # or, were it ever decoded, would have to equal the original: never another one.
    for seed in range(2):
        rng = np.random.default_rng(1000 * e + seed)
        words = rs.encode_codewords(
            rng.integers(0, 256, (200, 255 - 2 * e), dtype=np.uint8), error_correction=e
        )
        bad = _corrupt(words, e + 1, rng)
        fixed, counts = rs.decode_codewords(bad, error_correction=e)
        wrong = (counts >= 0) & (fixed != words).any(axis=1)
        assert not wrong.any()
        assert (counts == -1).all()  # bounded-distance decoding: no success either
        assert (fixed[counts == -1] == bad[counts == -1]).all()


def test_many_errors_are_uncorrectable_not_wrong() -> None:
    rng = np.random.default_rng(5)
    words = rs.encode_codewords(rng.integers(0, 256, (100, 223), dtype=np.uint8))
    for count in (17, 20, 40, 120):
        fixed, counts = rs.decode_codewords(_corrupt(words, count, rng))
        assert not ((counts >= 0) & (fixed != words).any(axis=1)).any()


@pytest.mark.parametrize(("e", "fcr"), [(16, 112), (8, 120)])
def test_corrections_agree_with_reedsolo(e: int, fcr: int) -> None:
    codec = reedsolo.RSCodec(2 * e, 255, fcr=fcr, prim=0x187, generator=0xAD, c_exp=8)
    rng = np.random.default_rng(3 + e)
    words = rs.encode_codewords(
        rng.integers(0, 256, (3, 255 - 2 * e), dtype=np.uint8), error_correction=e
    )
    bad = _corrupt(words, e, rng)
    fixed, counts = rs.decode_codewords(bad, error_correction=e)
    for row, ours, count in zip(bad, fixed, counts, strict=True):
        _message, full, errata = codec.decode(bytes(row))
        assert bytes(full) == bytes(ours)
        assert len(errata) == count == e


def test_random_words_never_raise_and_results_are_codewords() -> None:
    rng = np.random.default_rng(11)
    junk = rng.integers(0, 256, (300, 255), dtype=np.uint8)
    fixed, counts = rs.decode_codewords(junk)
    ok = counts >= 0
    if ok.any():  # whatever it accepts must be a codeword within E of the input
        _clean, again = rs.decode_codewords(fixed[ok])
        assert (again == 0).all()
        assert ((fixed[ok] != junk[ok]).sum(axis=1) == counts[ok]).all()


# --------------------------------------------------------------------------- interleaving, fill


def test_interleave_layout_positions() -> None:
    # Frame byte n -> codeword n mod I; check symbol i of codeword j at N + i*I + j.
    layout = CodeblockLayout(5, 16, 1115)
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, 1115, dtype=np.uint8)
    block = np.frombuffer(rs.encode(frame.tobytes(), layout, basis=Basis.CONVENTIONAL), np.uint8)
    for j in range(5):
        expected = rs.encode_codewords(frame[j::5][None, :])[0]
        assert (block[1115 + j :: 5] == expected[223:]).all()


def test_interleaved_errors_spread_across_codewords() -> None:
    layout = CodeblockLayout(5, 16, 1115)
    rng = np.random.default_rng(9)
    frames = rng.integers(0, 256, (20, 1115), dtype=np.uint8)
    blocks = rs.encode_blocks(frames, layout)
    bad = blocks.copy()
    per_codeword = [16, 0, 7, 16, 1]
    for row in bad:
        for j, count in enumerate(per_codeword):
            symbols = rng.choice(255, count, replace=False)
            cols = np.where(symbols < 223, symbols * 5 + j, 1115 + (symbols - 223) * 5 + j)
            row[cols] ^= rng.integers(1, 256, count, dtype=np.uint8)
    result = rs.decode_blocks(bad, layout)
    assert result.ok.all()
    assert (result.corrected == per_codeword).all()
    assert (result.frames == frames).all()
    # one codeword of one block over the limit: only that block fails
    bad[3, 0 : 17 * 5 : 5] ^= 0x5A
    result = rs.decode_blocks(bad, layout)
    assert result.ok.tolist() == [i != 3 for i in range(20)]
    assert result.corrected[3].tolist() == [-1, 0, 7, 16, 1]


def _offset(layout: CodeblockLayout, j: int, s: int) -> int:
    """Codeblock offset of symbol s (0 = first transmitted) of codeword j."""
    width = layout.frame_length // layout.interleave
    if s < width:
        return s * layout.interleave + j
    return layout.frame_length + (s - width) * layout.interleave + j


@pytest.mark.parametrize(("interleave", "frame_length"), [(1, 100), (4, 4 * 200), (5, 5 * 100)])
def test_virtual_fill_round_trip_and_correction(interleave: int, frame_length: int) -> None:
    layout = CodeblockLayout(interleave, 16, frame_length)
    q = layout.virtual_fill // interleave
    assert layout.virtual_fill == 223 * interleave - frame_length
    rng = np.random.default_rng(frame_length)
    frame = rng.integers(0, 256, frame_length, dtype=np.uint8)
    block = rs.encode(frame.tobytes(), layout, basis=Basis.CONVENTIONAL)
    assert len(block) == frame_length + 32 * interleave
    # each shortened codeword is the full codeword of (q zeros || its symbols), minus the zeros
    for j in range(interleave):
        padded = np.concatenate([np.zeros(q, np.uint8), frame[j::interleave]])
        full = rs.encode_codewords(padded[None, :])[0]
        sent = bytes(block[_offset(layout, j, s)] for s in range(255 - q))
        assert sent == full[q:].tobytes()
    dual = bytearray(rs.encode(frame.tobytes(), layout))
    for j in range(interleave):
        for s in rng.choice(255 - q, 16, replace=False):
            dual[_offset(layout, j, int(s))] ^= 0xFF
    decoded, corrected = rs.decode(bytes(dual), layout)
    assert decoded == frame.tobytes()
    assert corrected == (16,) * interleave


def test_error_located_in_virtual_fill_is_uncorrectable() -> None:
    # A full-length codeword w with one non-zero symbol in the fill region: its
    # transmitted part is at distance 1 (+ the errors added) from w, whose nearest
    # alternative is >= 17 away, so the only decoding puts an error in the fill.
    q = 123
    rng = np.random.default_rng(4)
    message = rng.integers(0, 256, 223, dtype=np.uint8)
    message[:q] = 0
    message[q // 2] = 0x42  # inside the virtual fill
    w = rs.encode_codewords(message[None, :])[0]
    received = w[q:].copy()
    received[rng.choice(len(received), 10, replace=False)] ^= 0x11
    fixed, counts = rs.decode_codewords(received[None, :])
    assert counts.tolist() == [-1]
    assert (fixed[0] == received).all()
    layout = CodeblockLayout(1, 16, 223 - q)
    with pytest.raises(UncorrectableCodeword) as info:
        rs.decode(received.tobytes().translate(rs.TO_DUAL), layout)
    assert info.value.reason == "uncorrectable"
    assert info.value.layer is Layer.TM_CODING


# --------------------------------------------------------------------------- API and errors


@pytest.mark.parametrize(
    ("interleave", "e", "n", "words"),
    [
        (6, 16, 100, "I=6"),
        (5, 12, 100, "E=12"),
        (5, 16, 1116, "N=1116"),
        (5, 16, 0, "N=0"),
        (5, 16, 1111, "not a multiple"),
    ],
)
def test_bad_layout_raises_local_error_with_values(
    interleave: int, e: int, n: int, words: str
) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        CodeblockLayout(interleave, e, n)


def test_decode_wrong_length_and_uncorrectable_raise_typed_errors() -> None:
    layout = CodeblockLayout(2, 8, 478)
    block = rs.encode(bytes(478), layout)
    with pytest.raises(DecodeError) as info:
        rs.decode(block[:-1], layout)
    assert info.value.reason == "bad-length"
    bad = bytearray(block)
    for i in range(0, 2 * 9, 2):  # 9 errors in codeword 0
        bad[i] ^= 1
    with pytest.raises(UncorrectableCodeword, match=r"\[0\]"):
        rs.decode(bytes(bad), layout)


@settings(max_examples=25, deadline=None)
@given(
    interleave=st.sampled_from(rs.INTERLEAVE_DEPTHS),
    e=st.sampled_from([16, 8]),
    shorten=st.integers(0, 200),
    basis=st.sampled_from(list(Basis)),
    data=st.data(),
)
def test_hypothesis_round_trip_with_correctable_errors(
    interleave: int, e: int, shorten: int, basis: Basis, data: st.DataObject
) -> None:
    k = 255 - 2 * e
    shorten = min(shorten, k - 1)
    layout = CodeblockLayout(interleave, e, (k - shorten) * interleave)
    frame = data.draw(st.binary(min_size=layout.frame_length, max_size=layout.frame_length))
    block = bytearray(rs.encode(frame, layout, basis=basis))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    counts = [rng.randint(0, e) for _ in range(interleave)]
    width = layout.frame_length // interleave
    for j, count in enumerate(counts):
        for s in rng.sample(range(width + 2 * e), count):
            block[_offset(layout, j, s)] ^= rng.randint(1, 255)
    decoded, corrected = rs.decode(bytes(block), layout, basis=basis)
    assert decoded == frame
    assert list(corrected) == counts


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_give_only_typed_errors(data: bytes) -> None:
    layout = CodeblockLayout(2, 16, 446)
    try:
        frame, corrected = rs.decode(data, layout)
    except (DecodeError, UncorrectableCodeword):
        return
    assert len(frame) == 446 and all(0 <= c <= 16 for c in corrected)
