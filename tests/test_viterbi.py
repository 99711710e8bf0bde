"""The streaming soft-decision Viterbi decoder (CCSDS 131.0-B-5 3.3 and 3.4 codes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import numpy as np
import pytest

from linkstack.coding import viterbi
from linkstack.coding.convolutional import CODE_RATES, CodeRate, ConvolutionalEncoder, encode
from linkstack.coding.viterbi import (
    DEFAULT_TRACEBACK,
    MIN_TRACEBACK,
    SOFT_LIMIT,
    ViterbiDecoder,
    decode,
    hard_to_soft,
)
from linkstack.errors import LocalProtocolError

RATE_VALUE = {"1/2": 1 / 2, "2/3": 2 / 3, "3/4": 3 / 4, "5/6": 5 / 6, "7/8": 7 / 8}


def random_bits(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, count, dtype=np.uint8)


def bpsk(symbols: np.ndarray) -> np.ndarray:
    """Code symbols 0/1 to antipodal +-1.0 (bit 1 -> +1, GNU Radio's constellation)."""
    return symbols.astype(np.float32) * 2 - 1


def awgn(symbols: np.ndarray, rate: str, ebn0_db: float, seed: int) -> np.ndarray:
    """+-1 symbols through AWGN at Eb/N0 per information bit: sigma^2 = 1/(2 R Eb/N0)."""
    sigma = np.sqrt(1.0 / (2.0 * RATE_VALUE[rate] * 10 ** (ebn0_db / 10)))
    noise = np.random.default_rng(seed).standard_normal(symbols.size)
    noisy: np.ndarray = (bpsk(symbols) + sigma * noise).astype(np.float32)
    return noisy


def decode_in_chunks(
    decoder: ViterbiDecoder, symbols: np.ndarray, seed: int, largest: int = 300
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pieces, start = [], 0
    while start < symbols.size:
        size = int(rng.integers(0, largest))
        pieces.append(decoder.decode(symbols[start : start + size]))
        start += size
    pieces.append(decoder.flush())
    return np.concatenate(pieces)


# ----------------------------------------------------------------------- clean channel
@pytest.mark.parametrize("rate", CODE_RATES)
def test_clean_round_trip_every_rate(rate: CodeRate) -> None:
    bits = random_bits(4001, seed=1)
    symbols = encode(bits, rate)
    assert np.array_equal(decode(bpsk(symbols), rate), bits)
    # int8 soft symbols of a quantizer and hard decisions decode the same.
    as_int8 = (symbols.astype(np.int8) * 2 - 1) * 100
    assert np.array_equal(decode(as_int8, rate), bits)
    assert np.array_equal(decode(hard_to_soft(symbols), rate), bits)


def test_hard_to_soft() -> None:
    assert hard_to_soft(np.array([0, 1, 1], np.uint8)).tolist() == [-1.0, 1.0, 1.0]
    assert hard_to_soft([1]).dtype == np.float32
    with pytest.raises(LocalProtocolError, match="0 or 1"):
        hard_to_soft([0, 2])


def test_unknown_start_state_decodes_mid_stream() -> None:
    # A continuous stream picked up anywhere: the encoder is in some state, unknown.
    bits = random_bits(3000, seed=2)
    symbols = encode(bits)[2 * 777 :]
    assert np.array_equal(decode(bpsk(symbols)), bits[777:])


# ----------------------------------------------------------------------- streaming
@pytest.mark.parametrize("rate", CODE_RATES)
def test_random_chunks_equal_whole_buffer(rate: CodeRate) -> None:
    bits = random_bits(6000, seed=3)
    noisy = awgn(encode(bits, rate), rate, 2.0, seed=4)  # errors left: not just the truth
    whole = decode(noisy, rate)
    chunked = decode_in_chunks(ViterbiDecoder(rate), noisy, seed=5)
    assert whole.size == bits.size and np.array_equal(chunked, whole)
    assert np.any(whole != bits)


def test_symbol_by_symbol_equals_whole_buffer() -> None:
    noisy = awgn(encode(random_bits(700, seed=6), "3/4"), "3/4", 3.0, seed=7)
    decoder = ViterbiDecoder("3/4")
    one_at_a_time = np.concatenate([decoder.decode(noisy[i : i + 1]) for i in range(noisy.size)])
    assert np.array_equal(np.concatenate((one_at_a_time, decoder.flush())), decode(noisy, "3/4"))


def test_latency_is_bounded() -> None:
    decoder = ViterbiDecoder()
    symbols = bpsk(encode(random_bits(3000, seed=8)))
    for step in range(1, 3001):
        decoder.decode(symbols[2 * step - 2 : 2 * step])
        assert step - decoder.bits_out <= decoder.max_latency
    assert decoder.max_latency == DEFAULT_TRACEBACK["1/2"] + viterbi.TRACEBACK_INTERVAL - 1


def test_flush_resets_for_a_new_stream() -> None:
    decoder = ViterbiDecoder("5/6")
    first, second = random_bits(1000, seed=9), random_bits(1500, seed=10)
    for bits in (first, second):
        out = np.concatenate((decoder.decode(bpsk(encode(bits, "5/6"))), decoder.flush()))
        assert np.array_equal(out, bits)
    assert decoder.bits_out == 0


# ----------------------------------------------------------------------- odd and empty
def test_empty_input() -> None:
    decoder = ViterbiDecoder()
    assert decoder.decode(np.zeros(0, np.float32)).dtype == np.uint8
    assert decoder.decode([]).size == 0
    assert decoder.flush().size == 0
    assert decode(np.zeros(0, np.float32), "7/8").size == 0


def test_odd_symbol_waits_for_its_partner() -> None:
    bits = random_bits(500, seed=11)
    symbols = bpsk(encode(bits))
    decoder = ViterbiDecoder()
    out = [decoder.decode(symbols[:201]), decoder.decode(symbols[201:])]
    assert np.array_equal(np.concatenate((*out, decoder.flush())), bits)
    # A dangling last symbol (half a pair) is dropped at the end of the stream.
    assert np.array_equal(decode(np.concatenate((symbols, [1.0]))), bits)


@pytest.mark.parametrize("rate", ["2/3", "3/4", "5/6", "7/8"])
def test_stream_ending_inside_a_puncturing_period(rate: CodeRate) -> None:
    for count in (995, 996, 997, 998, 999, 1000, 1001):
        bits = random_bits(count, seed=count)
        assert np.array_equal(decode(bpsk(encode(bits, rate)), rate), bits)


# ----------------------------------------------------------------------- noisy channel
def test_soft_decoding_at_4db_and_soft_beats_hard() -> None:
    # K=7 rate 1/2 with unquantized soft decisions: BER ~2e-5 at Eb/N0 4 dB (130.1-G
    # figure of the convolutional code); hard decisions lose about 2 dB, and at 4 dB
    # sit near 5e-3 (libfec viterbi27 fed the same hard decisions agrees).
    bits = random_bits(100_000, seed=12)
    noisy = awgn(encode(bits), "1/2", 4.0, seed=13)
    soft_errors = int(np.sum(decode(noisy) != bits))
    hard_errors = int(np.sum(decode(hard_to_soft((noisy > 0).astype(np.uint8))) != bits))
    assert soft_errors / bits.size < 1e-4
    assert hard_errors > 10 * max(soft_errors, 1)
    # Still a gain: uncoded BPSK at 4 dB has BER Q(sqrt(2 Eb/N0)) = 1.25e-2.
    assert hard_errors / bits.size < 1.25e-2


@pytest.mark.parametrize(
    ("rate", "ebn0_db", "most"),
    [("2/3", 5.0, 1e-4), ("3/4", 5.5, 1e-4), ("5/6", 6.0, 2e-4), ("7/8", 6.5, 2e-4)],
)
def test_punctured_rates_keep_their_coding_gain(
    rate: CodeRate, ebn0_db: float, most: float
) -> None:
    bits = random_bits(100_000, seed=14)
    noisy = awgn(encode(bits, rate), rate, ebn0_db, seed=15)
    assert np.mean(decode(noisy, rate) != bits) < most


@pytest.mark.parametrize("rate", ["1/2", "7/8"])
def test_default_traceback_loses_nothing_against_a_long_one(rate: CodeRate) -> None:
    bits = random_bits(200_000, seed=16)
    ebn0 = {"1/2": 3.0, "7/8": 5.5}[rate]
    noisy = awgn(encode(bits, rate), rate, ebn0, seed=17)
    default = int(np.sum(decode(noisy, rate) != bits))
    long = int(np.sum(decode(noisy, rate, traceback=1024) != bits))
    short = int(np.sum(decode(noisy, rate, traceback=MIN_TRACEBACK) != bits))
    assert default <= long * 1.05 + 2
    if rate == "7/8":  # punctured codes need survivors longer than 5K: the test can tell
        assert short > long * 1.5


def test_erasures() -> None:
    bits = random_bits(20_000, seed=18)
    symbols = bpsk(encode(bits))
    rng = np.random.default_rng(19)
    erased = symbols.copy()
    erased[rng.random(symbols.size) < 0.2] = 0.0  # 20 % of the symbols carry nothing
    assert np.array_equal(decode(erased), bits)
    # NaN is an erasure too: short NaN bursts spread through a clean stream.
    with_nan = symbols.copy()
    for start in range(100, symbols.size - 10, 97):
        with_nan[start : start + 4] = np.nan
    assert np.array_equal(decode(with_nan), bits)


# ----------------------------------------------------------------------- hostile input
def test_non_finite_and_huge_values_with_the_right_sign() -> None:
    bits = random_bits(5000, seed=20)
    symbols = bpsk(encode(bits)).astype(np.float64)
    rng = np.random.default_rng(21)
    spots = rng.choice(symbols.size, 300, replace=False)
    symbols[spots] *= rng.choice([np.inf, 1e300, 1e30, SOFT_LIMIT * 10], spots.size)
    symbols[rng.choice(symbols.size, 300, replace=False)] = np.nan
    assert np.array_equal(decode(symbols), bits)


@pytest.mark.parametrize("garbage", [np.nan, np.inf, -np.inf, 1e300, -1e38])
def test_garbage_burst_does_not_poison_the_metrics(garbage: float) -> None:
    bits = random_bits(4000, seed=22)
    symbols = bpsk(encode(bits)).astype(np.float64)
    symbols[2000:2400] = garbage  # 200 steps of nonsense
    symbols[2400:2600:3] = -symbols[2400:2600:3] * 1e200  # and confidently wrong ones
    out = decode_in_chunks(ViterbiDecoder(), symbols, seed=23)
    # The bits of the burst (1000..1300) are lost, nothing before or after it: the
    # metrics stayed finite and the decoder is back on the right path within K steps.
    wrong = np.nonzero(out != bits)[0]
    assert out.size == bits.size and wrong.size > 0
    assert wrong.min() >= 1000 - 2 * 7 and wrong.max() < 1300 + 7


def test_long_strong_stream_never_overflows() -> None:
    # Symbols at the clip level for 400k steps: the normalization keeps metrics finite.
    bits = random_bits(400_000, seed=24)
    symbols = bpsk(encode(bits)) * np.float32(SOFT_LIMIT)
    decoder = ViterbiDecoder()
    out = np.concatenate((decoder.decode(symbols), decoder.flush()))
    assert np.array_equal(out, bits)


# ----------------------------------------------------------------------- NRZ-M and phase
@pytest.mark.parametrize("rate", ["1/2", "3/4"])
def test_inverted_symbols_decode_to_the_complement(rate: CodeRate) -> None:
    # Both connection vectors have odd weight: inverting the data inverts every symbol.
    # This is the BPSK phase ambiguity that NRZ-M resolves.
    bits = random_bits(3000, seed=25)
    assert np.array_equal(decode(-bpsk(encode(bits, rate)), rate), bits ^ 1)


@pytest.mark.parametrize("rate", ["1/2", "3/4", "7/8"])
def test_nrzm_round_trip_and_phase_invariance(rate: CodeRate) -> None:
    bits = random_bits(3000, seed=26)
    symbols = bpsk(ConvolutionalEncoder(rate, nrzm=True).encode(bits))
    upright = decode_in_chunks(ViterbiDecoder(rate, nrzm=True), symbols, seed=27)
    assert np.array_equal(upright, bits)
    inverted = decode_in_chunks(ViterbiDecoder(rate, nrzm=True), -symbols, seed=28)
    assert np.array_equal(inverted[1:], bits[1:])  # all but the reference bit


# ----------------------------------------------------------------------- backends
@pytest.mark.skipif(not viterbi.NUMBA_AVAILABLE, reason="numba is not importable")
@pytest.mark.parametrize("rate", ["1/2", "5/6"])
def test_numpy_fallback_gives_the_same_bits(rate: CodeRate) -> None:
    noisy = awgn(encode(random_bits(1500, seed=29), rate), rate, 1.5, seed=30)
    fast = decode(noisy, rate, backend="numba")
    slow = decode_in_chunks(ViterbiDecoder(rate, backend="numpy"), noisy, seed=31, largest=900)
    assert np.array_equal(fast, slow)


def test_auto_backend_falls_back_to_numpy_without_numba(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(viterbi, "_run_numba", None)  # as if numba were not importable
    viterbi._warn_numpy_fallback.cache_clear()
    bits = random_bits(700, seed=34)
    with caplog.at_level(logging.WARNING, logger="linkstack.coding.viterbi"):
        assert np.array_equal(decode(bpsk(encode(bits))), bits)
    assert "numba is not available" in caplog.text
    with pytest.raises(LocalProtocolError, match="numba is not importable"):
        ViterbiDecoder(backend="numba")
    viterbi._warn_numpy_fallback.cache_clear()


# ----------------------------------------------------------------------- misuse
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"traceback": MIN_TRACEBACK - 1}, "5K"),
        ({"traceback": 100_000}, "outside"),
        ({"traceback": 64.0}, "integer"),
        ({"puncture": "4/5"}, "4/5"),
        ({"backend": "gpu"}, "backend"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        ViterbiDecoder(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        (np.zeros(4, np.uint8), "hard_to_soft"),
        (np.zeros(4, bool), "hard_to_soft"),
        (np.zeros(4, np.complex64), "complex"),
        (np.zeros((2, 2), np.float32), "1-D"),
    ],
)
def test_bad_symbols(symbols: np.ndarray, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        ViterbiDecoder().decode(symbols)


def test_properties() -> None:
    decoder = ViterbiDecoder("7/8", traceback=300)
    assert (decoder.rate, decoder.traceback) == ("7/8", 300)
    assert ViterbiDecoder("2/3").traceback == DEFAULT_TRACEBACK["2/3"] >= MIN_TRACEBACK


# ----------------------------------------------------------------------- libfec reference
def _libfec() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("fec") or "libfec.so.0")
    except OSError:
        return None


def libfec_decode_frames(lib: ctypes.CDLL, soft: np.ndarray, frame_bits: int) -> np.ndarray:
    """libfec viterbi27, one terminated frame per call (frame bits + 6 tail bits)."""
    lib.create_viterbi27.restype = ctypes.c_void_p
    lib.create_viterbi27.argtypes = [ctypes.c_int]
    lib.init_viterbi27.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.update_viterbi27_blk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.chainback_viterbi27.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
    ]
    lib.delete_viterbi27.argtypes = [ctypes.c_void_p]
    handle = lib.create_viterbi27(frame_bits)
    # The CCSDS code in libfec's notation (fec.h: bit i = delay i, negative = inverted).
    lib.set_viterbi27_polynomial((ctypes.c_int * 2)(79, -109))
    # Offset binary: 0 = strong 0, 255 = strong 1, 128 = erasure (libfec viterbi27_port.c).
    offset = np.clip(np.rint(128 + 64 * soft), 0, 255).astype(np.uint8)
    frames = np.ascontiguousarray(offset.reshape(-1, 2 * (frame_bits + 6)))
    data = np.zeros(frame_bits // 8, np.uint8)
    out = []
    try:
        for frame in frames:
            lib.init_viterbi27(handle, 0)
            lib.update_viterbi27_blk(handle, frame.ctypes.data, frame_bits + 6)
            lib.chainback_viterbi27(handle, data.ctypes.data, frame_bits, 0)
            out.append(np.unpackbits(data))
    finally:
        lib.delete_viterbi27(handle)
    return np.concatenate(out)


def test_against_libfec_viterbi27() -> None:
    # Provenance: Phil Karn's libfec (Debian libfec0), an independent decoder of the
    # same code; terminated frames back to back are also a valid continuous stream.
    lib = _libfec()
    if lib is None:
        pytest.skip("libfec is not installed (Debian package libfec0)")
    if not hasattr(lib, "set_viterbi27_polynomial"):
        pytest.skip("this libfec cannot be set to the CCSDS polynomials [79, -109]")
    frame_bits, frames = 2048, 60
    data = random_bits(frame_bits * frames, seed=32).reshape(frames, frame_bits)
    stream = np.concatenate([np.concatenate((f, np.zeros(6, np.uint8))) for f in data])
    clean = bpsk(encode(stream))
    assert np.array_equal(libfec_decode_frames(lib, clean, frame_bits), data.reshape(-1))
    noisy = awgn(encode(stream), "1/2", 3.0, seed=33)
    theirs = int(np.sum(libfec_decode_frames(lib, noisy, frame_bits) != data.reshape(-1)))
    ours_all = decode(noisy).reshape(frames, frame_bits + 6)[:, :frame_bits]
    ours = int(np.sum(ours_all != data))
    assert theirs > 20  # the comparison means something
    assert ours <= theirs * 1.2 + 5
