"""The CCSDS convolutional encoder, puncturing and NRZ-M (CCSDS 131.0-B-5 section 3)."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from linkstack.coding import convolutional as cc
from linkstack.coding.convolutional import (
    CODE_RATES,
    PUNCTURE_PATTERNS,
    ConvolutionalEncoder,
    encode,
    nrzl_to_nrzm,
    nrzm_to_nrzl,
    pack_bits,
    puncture,
    transmitted_positions,
    unpack_bits,
)
from linkstack.errors import LocalProtocolError

# Provenance: CCSDS 131.0-B-5 3.3.1 d) connection vectors, leftmost element tapping the
# encoder input, and 3.3.1 e) inversion on the output path of G2; written out here
# independently of the module (which derives its taps from the octal constants).
G1_VECTOR = "1111001"
G2_VECTOR = "1011011"

# Provenance: CCSDS 131.0-B-5 3.4, puncturing patterns (1 = transmitted) and the output
# sequences printed under them (130.1-G table 4-1 repeats the same table).
BOOK_TABLE = {
    "2/3": ("1 0", "1 1", "C1(1) C2(1) C2(2)"),
    "3/4": ("1 0 1", "1 1 0", "C1(1) C2(1) C2(2) C1(3)"),
    "5/6": ("1 0 1 0 1", "1 1 0 1 0", "C1(1) C2(1) C2(2) C1(3) C2(4) C1(5)"),
    "7/8": (
        "1 0 0 0 1 0 1",
        "1 1 1 1 0 1 0",
        "C1(1) C2(1) C2(2) C2(3) C2(4) C1(5) C2(6) C1(7)",
    ),
}

GNURADIO_PYTHON = Path("/usr/bin/python3")
GNURADIO_ENCODER = textwrap.dedent(
    """
    import sys
    from gnuradio import blocks, fec, gr
    bits = list(sys.stdin.buffer.read())
    framebits = int(sys.argv[1])
    # The CCSDS code as gr-satellites configures it: polynomials bit-reversed, negative
    # = inverted output, streaming (no tail), start state 0.
    coder = fec.cc_encoder_make(framebits, 7, 2, [79, -109], 0, fec.CC_STREAMING, False)
    top = gr.top_block()
    source = blocks.vector_source_b(bits, False)
    sink = blocks.vector_sink_b()
    top.connect(source, fec.extended_encoder(encoder_obj_list=coder, threading=None,
                                             puncpat="11"), sink)
    top.run()
    sys.stdout.buffer.write(bytes(sink.data()))
    """
)


def reference_encode(bits: np.ndarray, *, invert_g2: bool) -> np.ndarray:
    """Bit by bit, straight from the connection vectors: C1(t), C2(t) per input bit."""
    register = [0] * 7  # register[d] = u(t-d)
    out = []
    for bit in bits.tolist():
        register = [bit, *register[:-1]]
        c1 = sum(int(g) * r for g, r in zip(G1_VECTOR, register, strict=True)) % 2
        c2 = sum(int(g) * r for g, r in zip(G2_VECTOR, register, strict=True)) % 2
        out += [c1, c2 ^ int(invert_g2)]
    return np.array(out, np.uint8)


def reference_puncture(pairs: np.ndarray, rate: str) -> np.ndarray:
    """Puncture by reading the book's output sequence, e.g. C1(1) C2(1) C2(2) C1(3)."""
    sequence = [(int(b), int(j)) for b, j in re.findall(r"C([12])\((\d)\)", BOOK_TABLE[rate][2])]
    period = len(BOOK_TABLE[rate][0].split())
    out = []
    for start in range(0, pairs.size // 2, period):
        for branch, bit in sequence:
            index = 2 * (start + bit - 1) + branch - 1
            if index < pairs.size:
                out.append(pairs[index])
    return np.array(out, np.uint8)


def random_bits(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, count, dtype=np.uint8)


# ----------------------------------------------------------------------- the basic code
def test_impulse_response_is_the_connection_vectors() -> None:
    # One 1 after the all-zeros state: C1 spells G1 and C2 spells G2 inverted.
    symbols = encode(np.array([1, 0, 0, 0, 0, 0, 0], np.uint8))
    assert "".join(map(str, symbols[0::2])) == G1_VECTOR
    assert "".join(str(s ^ 1) for s in symbols[1::2]) == G2_VECTOR


def test_all_zeros_input_gives_alternating_symbols() -> None:
    # The G2 inversion puts transitions in a run of zeros: 01 01 01 ...
    assert encode(np.zeros(16, np.uint8)).tolist() == [0, 1] * 16


def test_constants_match_the_book() -> None:
    assert f"{cc.G1:07b}" == G1_VECTOR and f"{cc.G1:o}" == "171"
    assert f"{cc.G2:07b}" == G2_VECTOR and f"{cc.G2:o}" == "133"
    # GNU Radio's [79, -109]: the same vectors bit-reversed, G2 negated for its inversion.
    reversed_vectors = (int(G1_VECTOR[::-1], 2), -int(G2_VECTOR[::-1], 2))
    assert reversed_vectors == cc.GNURADIO_POLYNOMIALS


def test_encoder_matches_the_bit_by_bit_reference() -> None:
    bits = random_bits(3000, seed=1)
    assert np.array_equal(encode(bits), reference_encode(bits, invert_g2=True))


@pytest.mark.parametrize("rate", ["2/3", "3/4", "5/6", "7/8"])
def test_punctured_encoder_matches_the_book(rate: str) -> None:
    # 3.4: the punctured codes use the K=7 code without the G2 inversion.
    bits = random_bits(2000 + 3, seed=2)  # not a whole number of periods
    expected = reference_puncture(reference_encode(bits, invert_g2=False), rate)
    assert np.array_equal(encode(bits, rate), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", ["2/3", "3/4", "5/6", "7/8"])
def test_puncturing_patterns_are_the_books_table(rate: str) -> None:
    c1_row, c2_row, sequence = BOOK_TABLE[rate]
    assert PUNCTURE_PATTERNS[rate] == (c1_row.replace(" ", ""), c2_row.replace(" ", ""))  # type: ignore[index]
    named = [
        f"C{p % 2 + 1}({p // 2 + 1})"
        for p in transmitted_positions(rate)  # type: ignore[arg-type]
    ]
    assert " ".join(named) == sequence
    numerator, denominator = map(int, rate.split("/"))
    assert len(c1_row.split()) == numerator and len(named) == denominator


def test_rate_half_pattern_and_inversion_flags() -> None:
    assert transmitted_positions("1/2") == (0, 1)
    assert cc.g2_inverted("1/2")
    assert not any(cc.g2_inverted(r) for r in CODE_RATES if r != "1/2")


@pytest.mark.parametrize("rate", CODE_RATES)
@pytest.mark.parametrize("nrzm", [False, True])
def test_streaming_equals_whole_buffer(rate: cc.CodeRate, nrzm: bool) -> None:
    bits = random_bits(5000, seed=3)
    whole = encode(bits, rate, nrzm=nrzm)
    encoder = ConvolutionalEncoder(rate, nrzm=nrzm)
    rng = np.random.default_rng(4)
    pieces, start = [], 0
    while start < bits.size:
        size = int(rng.integers(0, 40))
        pieces.append(encoder.encode(bits[start : start + size]))
        start += size
    assert np.array_equal(np.concatenate(pieces), whole)


def test_encoder_state_is_the_last_six_bits() -> None:
    encoder = ConvolutionalEncoder()
    encoder.encode(np.array([1, 0, 1, 1, 0, 0, 1, 1], np.uint8))
    assert encoder.state == 0b110011  # bit 0 = last input bit
    assert encoder.rate == "1/2"


def test_puncture_function_with_phase() -> None:
    pairs = reference_encode(random_bits(21, seed=5), invert_g2=False)
    assert np.array_equal(puncture(pairs, "3/4"), reference_puncture(pairs, "3/4"))
    # Starting one bit into the period: the pattern continues where it stood.
    tail = pairs[2:]
    assert np.array_equal(puncture(tail, "3/4", phase=1), puncture(pairs, "3/4")[2:])
    with pytest.raises(LocalProtocolError, match="phase 3"):
        puncture(pairs, "3/4", phase=3)
    with pytest.raises(LocalProtocolError, match="pairs"):
        puncture(pairs[:-1], "3/4")


@pytest.mark.skipif(not GNURADIO_PYTHON.exists(), reason="no system Python for GNU Radio")
def test_encoder_matches_gnuradio() -> None:
    # Provenance: GNU Radio 3.10 gr-fec cc_encoder (Debian package gnuradio), run apart
    # in the system Python.
    bits = random_bits(8 * 1024, seed=6)
    result = subprocess.run(
        [str(GNURADIO_PYTHON), "-c", GNURADIO_ENCODER, "1024"],
        input=bits.tobytes(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and b"No module named 'gnuradio'" in result.stderr:
        pytest.skip("GNU Radio is not installed (Debian package gnuradio)")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    gnuradio = np.frombuffer(result.stdout, np.uint8)
    assert np.array_equal(gnuradio, encode(bits))


# ----------------------------------------------------------------------- NRZ-M
def test_nrzm_definition() -> None:
    # 131.0-B-5 3.3.3: a 1 changes the level, a 0 keeps it.
    data = np.array([1, 0, 1, 1, 0, 0, 1], np.uint8)
    assert nrzl_to_nrzm(data).tolist() == [1, 1, 0, 1, 1, 1, 0]
    assert nrzl_to_nrzm(data, level=1).tolist() == [0, 0, 1, 0, 0, 0, 1]
    assert nrzm_to_nrzl(nrzl_to_nrzm(data)).tolist() == data.tolist()


def test_nrzm_round_trip_in_chunks_and_inverted() -> None:
    data = random_bits(1000, seed=7)
    levels = nrzl_to_nrzm(data)
    first = nrzl_to_nrzm(data[:300])
    assert np.array_equal(
        np.concatenate((first, nrzl_to_nrzm(data[300:], level=int(first[-1])))), levels
    )
    assert np.array_equal(nrzm_to_nrzl(levels), data)
    # The point of NRZ-M: inverted levels decode to the same data, but for bit 0.
    assert np.array_equal(nrzm_to_nrzl(levels ^ 1)[1:], data[1:])
    assert nrzm_to_nrzl(np.zeros(0, np.uint8)).size == 0


def test_nrzm_encoder_is_nrzm_then_encode() -> None:
    data = random_bits(500, seed=8)
    assert np.array_equal(encode(data, nrzm=True), encode(nrzl_to_nrzm(data)))


# ----------------------------------------------------------------------- helpers, errors
def test_pack_and_unpack_are_msb_first() -> None:
    assert unpack_bits(b"\x80\x01").tolist() == [1] + [0] * 14 + [1]
    assert pack_bits(unpack_bits(b"\x1a\xcf\xfc\x1d")) == bytes.fromhex("1ACFFC1D")
    with pytest.raises(LocalProtocolError, match="9 bits"):
        pack_bits(np.zeros(9, np.uint8))


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        (np.array([0, 2], np.uint8), "0 or 1"),
        (np.array([-1, 0]), "0 or 1"),
        (np.array([0.0, 1.0]), "integers"),
        (np.zeros((2, 2), np.uint8), "1-D"),
    ],
)
def test_bad_bits_are_refused(bits: np.ndarray, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode(bits)


def test_bool_bits_and_empty_input() -> None:
    assert np.array_equal(encode(np.array([True, False])), encode(np.array([1, 0], np.uint8)))
    assert encode(np.zeros(0, np.uint8)).size == 0
    assert ConvolutionalEncoder("7/8").encode([]).size == 0


def test_unknown_rate_and_level_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="4/5"):
        ConvolutionalEncoder("4/5")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="level"):
        nrzl_to_nrzm([1, 0], level=2)
    with pytest.raises(LocalProtocolError, match="level"):
        nrzm_to_nrzl([1, 0], level=-1)
