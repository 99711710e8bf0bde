"""TC synchronization and channel coding (CCSDS 231.0-B-4): BCH, randomizer, CLTU engine."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.coding.tc import (
    FILL_OCTET,
    INFO_OCTETS,
    RANDOMIZER_SEQUENCE,
    START_SEQUENCE,
    TAIL_SEQUENCE,
    CltuDecoded,
    CltuDecoder,
    DecoderMode,
    DecoderState,
    bch_encode,
    decode_codeblock,
    encode_cltu,
    randomize,
)
from linkstack.errors import Dropped, Layer, LocalProtocolError, UncorrectableCodeword

# ---------------------------------------------------------------------------------
# Independent oracle: the book's definition, bit by bit
# ---------------------------------------------------------------------------------

#: g(x) = x^7 + x^6 + x^2 + 1, coefficients from x^7 down to x^0 (CCSDS 231.0-B-4 3.3).
G_BITS = [1, 1, 0, 0, 0, 1, 0, 1]


def bits_of(data: bytes) -> list[int]:
    return [(octet >> (7 - i)) & 1 for octet in data for i in range(8)]


def gf2_remainder(dividend: list[int]) -> list[int]:
    """Long division over GF(2), highest degree first; the 7 remainder bits."""
    work = list(dividend)
    for i in range(len(work) - 7):
        if work[i]:
            for j, g in enumerate(G_BITS):
                work[i + j] ^= g
    return work[-7:]


def oracle_parity_octet(info: bytes) -> int:
    """Remainder of I(x) * x^7 / g(x), complemented, then the filler bit 0."""
    parity = gf2_remainder(bits_of(info) + [0] * 7)
    octet = 0
    for bit in parity:
        octet = (octet << 1) | (bit ^ 1)
    return octet << 1


def oracle_is_codeword(codeblock: bytes) -> bool:
    """The 63 code bits (parity re-complemented) divide by g(x) with no remainder."""
    bits = bits_of(codeblock)[:63]
    bits[56:63] = [b ^ 1 for b in bits[56:63]]
    return gf2_remainder(bits) == [0] * 7


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def drain(decoder: CltuDecoder) -> list[CltuDecoded | Dropped]:
    events = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


def padded(frame: bytes) -> bytes:
    return frame + bytes([FILL_OCTET]) * (-len(frame) % INFO_OCTETS)


def expected(frame: bytes, corrected: int = 0, tail: bool = True) -> CltuDecoded:
    return CltuDecoded(
        data=padded(frame),
        codeblocks=len(padded(frame)) // INFO_OCTETS,
        corrected_bits=corrected,
        ended_by_tail=tail,
    )


def no_start(data: bytes) -> bool:
    return START_SEQUENCE not in data


frames = st.binary(min_size=1, max_size=120)
garbage = st.binary(max_size=40).filter(no_start)

# ---------------------------------------------------------------------------------
# BCH(63,56)
# ---------------------------------------------------------------------------------


def test_every_table_entry_matches_the_long_division_oracle() -> None:
    # The code is linear, so checking every value at every octet position covers it all.
    for position in range(INFO_OCTETS):
        for value in range(256):
            info = bytes(position) + bytes([value]) + bytes(INFO_OCTETS - position - 1)
            assert bch_encode(info)[7] == oracle_parity_octet(info), (position, value)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=7, max_size=7 * 20).map(lambda b: b[: len(b) - len(b) % 7]))
def test_random_codeblocks_match_the_oracle(info: bytes) -> None:
    encoded = bch_encode(info)
    assert len(encoded) == len(info) // 7 * 8
    for k in range(len(info) // 7):
        block = encoded[8 * k : 8 * k + 8]
        assert block[:7] == info[7 * k : 7 * k + 7]
        assert block[7] == oracle_parity_octet(block[:7])
        assert block[7] & 1 == 0  # filler bit
        assert oracle_is_codeword(block)


def test_published_codeblocks() -> None:
    # yamcs BchCltuGeneratorTest.testBch (vectors from SpacePyLibrary testData.py).
    vectors = [
        "22F600FF00421A12",
        "8CC00E010D19065A",
        "301B000900820054",
        "10E4C1555555553E",
    ]
    for vector in map(bytes.fromhex, vectors):
        assert bch_encode(vector[:7]) == vector


def test_published_cltu() -> None:
    # yamcs BchCltuGeneratorTest TC_FRAME_02 / CLTU_02 (from SpacePyLibrary testData.py).
    frame = bytes.fromhex(
        "22F60023008200 0F001DFF000000000F001EFF000000000F001FFF000000000FAC8F0068".replace(" ", "")
    )
    cltu = bytes.fromhex(
        "EB9022F6002300820024 0F001DFF00000034 000F001EFF000010 00000F001FFF00D8"
        "0000000FAC8F0090 68555555555555 06 C5C5C5C5C5C5C579".replace(" ", "")
    )
    assert encode_cltu(frame, randomize=False) == cltu
    decoder = CltuDecoder()
    decoder.receive_bytes(cltu)
    assert drain(decoder) == [expected(frame)]


def test_all_zero_information_gives_complemented_zero_parity() -> None:
    # Remainder of 0 is 0; complemented 1111111, filler 0 (CCSDS 231.0-B-4 3.3).
    assert bch_encode(bytes(7)) == bytes(7) + b"\xfe"


def test_every_single_bit_error_is_corrected_or_detected() -> None:
    rng = random.Random(1)
    info = rng.randbytes(7)
    block = bch_encode(info)
    for bit in range(63):
        bad = flip(block, bit)
        assert decode_codeblock(bad, mode=DecoderMode.CORRECT) == (info, 1), bit
        with pytest.raises(UncorrectableCodeword) as caught:
            decode_codeblock(bad, mode=DecoderMode.DETECT)
        assert (caught.value.layer, caught.value.reason) == (Layer.TC_CODING, "codeblock-rejected")


def test_filler_bit_is_outside_the_code_and_ignored() -> None:
    info = bytes(range(7))
    bad = flip(bch_encode(info), 63)
    assert decode_codeblock(bad, mode=DecoderMode.CORRECT) == (info, 0)
    assert decode_codeblock(bad, mode=DecoderMode.DETECT) == (info, 0)


def test_every_double_bit_error_is_rejected_never_miscorrected() -> None:
    # d = 4 for g(x) = (x+1)(x^6+x+1): two errors are always detected in both modes.
    block = bch_encode(bytes.fromhex("0123456789ABCD"))
    for first, second in itertools.combinations(range(63), 2):
        bad = flip(flip(block, first), second)
        assert not oracle_is_codeword(bad)
        for mode in DecoderMode:
            with pytest.raises(UncorrectableCodeword):
                decode_codeblock(bad, mode=mode)


def test_tail_sequence_is_rejected_even_with_one_bit_error() -> None:
    for bit in [None, *range(64)]:
        tail = TAIL_SEQUENCE if bit is None else flip(TAIL_SEQUENCE, bit)
        for mode in DecoderMode:
            with pytest.raises(UncorrectableCodeword):
                decode_codeblock(tail, mode=mode)


def test_caller_misuse_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError, match="6 octets"):
        bch_encode(bytes(6))
    with pytest.raises(LocalProtocolError, match="got 7"):
        decode_codeblock(bytes(7), mode=DecoderMode.CORRECT)
    with pytest.raises(LocalProtocolError, match="at least one octet"):
        encode_cltu(b"", randomize=False)
    with pytest.raises(LocalProtocolError, match="start_sequence_errors=2"):
        CltuDecoder(start_sequence_errors=2)
    with pytest.raises(LocalProtocolError, match="max_codeblocks=0"):
        CltuDecoder(max_codeblocks=0)


# ---------------------------------------------------------------------------------
# Randomizer
# ---------------------------------------------------------------------------------


def test_randomizer_first_octets() -> None:
    # First 40 bits printed by CCSDS 201.0-B-3 3.3.1 (and quoted for 231.0-B-4 6.2):
    # 1111 1111 0011 1001 1001 1110 0101 1010 0110 1000.
    assert RANDOMIZER_SEQUENCE[:5] == bytes.fromhex("FF399E5A68")


def test_randomizer_obeys_the_recurrence_of_h() -> None:
    # h(x) = x^8 + x^6 + x^4 + x^3 + x^2 + x + 1 with 8 leading ones fixes every bit:
    # s[n+8] = s[n+6] ^ s[n+4] ^ s[n+3] ^ s[n+2] ^ s[n+1] ^ s[n].
    s = bits_of(RANDOMIZER_SEQUENCE * 2)
    assert s[:8] == [1] * 8
    for n in range(len(s) - 8):
        assert s[n + 8] == s[n + 6] ^ s[n + 4] ^ s[n + 3] ^ s[n + 2] ^ s[n + 1] ^ s[n]
    assert len(RANDOMIZER_SEQUENCE) == 255


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=700))
def test_randomizer_is_self_inverse_and_restarts_every_255_octets(data: bytes) -> None:
    assert randomize(randomize(data)) == data
    assert len(randomize(data)) == len(data)
    zeros = randomize(bytes(len(data)))
    assert zeros == (RANDOMIZER_SEQUENCE * 3)[: len(data)]


def test_randomization_covers_the_fill_by_default() -> None:
    frame = bytes(range(1, 6))  # 5 octets + 2 fill
    cltu = encode_cltu(frame, randomize=True)
    assert cltu[2:9] == randomize(frame + b"\x55\x55")
    only_frame = encode_cltu(frame, randomize=True, randomize_fill=False)
    assert only_frame[2:9] == randomize(frame) + b"\x55\x55"
    # Either way the receiver recovers the frame and the fill in clear.
    for wire in (cltu, only_frame):
        decoder = CltuDecoder(randomize=True)
        decoder.receive_bytes(wire)
        events = drain(decoder)
        if wire is cltu:
            assert events == [expected(frame)]
        else:  # fill sent in clear comes out derandomized: only the frame is recoverable
            assert isinstance(events[0], CltuDecoded)
            assert events[0].data[:5] == frame


# ---------------------------------------------------------------------------------
# CLTU decoder engine
# ---------------------------------------------------------------------------------


def feed(decoder: CltuDecoder, stream: bytes, chunks: list[int] | None = None) -> None:
    if chunks is None:
        decoder.receive_bytes(stream)
        return
    pos = 0
    for size in chunks:
        decoder.receive_bytes(stream[pos : pos + size])
        pos += size
    decoder.receive_bytes(stream[pos:])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(garbage, frames), min_size=1, max_size=4),
    garbage,
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=50), max_size=30),
)
def test_stream_with_garbage_any_chunking(
    parts: list[tuple[bytes, bytes]], trailing: bytes, rand: bool, chunks: list[int]
) -> None:
    stream = b"".join(g + encode_cltu(f, randomize=rand) for g, f in parts) + trailing
    want = [expected(f) for _, f in parts]
    for split in (None, chunks, [1] * len(stream)):
        decoder = CltuDecoder(randomize=rand)
        feed(decoder, stream, split)
        decoder.channel_deactivation()  # end of stream: the kept last octet is discarded
        assert drain(decoder) == want
        assert decoder.stats.cltus == len(parts)
        assert decoder.stats.octets_skipped == sum(len(g) for g, _ in parts) + len(trailing)
        assert decoder.stats.tails == len(parts)
        assert decoder.stats.rejected_codeblocks == 0
        assert decoder.state is DecoderState.S2_SEARCH


@settings(max_examples=100, deadline=None)
@given(frames, st.booleans(), st.sampled_from(list(DecoderMode)))
def test_round_trip(frame: bytes, rand: bool, mode: DecoderMode) -> None:
    decoder = CltuDecoder(mode, randomize=rand)
    decoder.receive_bytes(encode_cltu(frame, randomize=rand))
    assert drain(decoder) == [expected(frame)]


@settings(max_examples=60, deadline=None)
@given(frames, st.data())
def test_one_error_per_codeblock_is_corrected(frame: bytes, data: st.DataObject) -> None:
    cltu = bytearray(encode_cltu(frame, randomize=True))
    blocks = len(padded(frame)) // 7
    for k in range(blocks):
        bit = data.draw(st.integers(min_value=0, max_value=62))
        cltu[2 + 8 * k + bit // 8] ^= 0x80 >> (bit % 8)
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=True)
    decoder.receive_bytes(bytes(cltu))
    assert drain(decoder) == [expected(frame, corrected=blocks)]
    assert decoder.stats.corrected_bits == blocks


def test_single_error_in_detect_mode_ends_the_cltu_at_that_codeblock() -> None:
    frame = bytes(range(40))  # 6 codeblocks
    good = encode_cltu(frame, randomize=False)
    for k in range(6):
        for bit in range(63):
            bad = flip(good, 16 + 64 * k + bit)
            decoder = CltuDecoder(DecoderMode.DETECT)
            decoder.receive_bytes(bad)
            events = drain(decoder)
            if k == 0:
                assert len(events) == 1
                assert isinstance(events[0], Dropped)
                assert events[0].reason == "first-codeblock-rejected"
                assert events[0].octets == 2
            else:
                assert events == [
                    CltuDecoded(
                        data=padded(frame)[: 7 * k],
                        codeblocks=k,
                        corrected_bits=0,
                        ended_by_tail=False,
                    )
                ]
            assert decoder.stats.rejected_codeblocks == 1
            assert decoder.drops.total() == (1 if k == 0 else 0)


def test_double_error_ends_the_cltu_and_delivers_only_the_good_codeblocks() -> None:
    frame = bytes(range(0x10, 0x10 + 35))  # exactly 5 codeblocks, no fill
    cltu = encode_cltu(frame, randomize=False)
    assert START_SEQUENCE not in cltu[2:]
    bad = flip(flip(cltu, 16 + 64 * 2 + 3), 16 + 64 * 2 + 40)  # codeblock 2
    for mode in DecoderMode:
        decoder = CltuDecoder(mode)
        decoder.receive_bytes(bad)
        assert drain(decoder) == [
            CltuDecoded(data=frame[:14], codeblocks=2, corrected_bits=0, ended_by_tail=False)
        ]
        # The rejected codeblock is searched again; it, the two after it and the tail
        # hold no start sequence and are skipped (the last octet once the channel ends).
        assert decoder.stats.octets_skipped == 8 * 3 + 8 - 1
        decoder.channel_deactivation()
        assert decoder.stats.octets_skipped == 8 * 3 + 8
        assert decoder.stats.rejected_codeblocks == 1
        assert decoder.stats.tails == 0


def test_tail_with_one_bit_error_still_ends_the_cltu_normally() -> None:
    frame = b"hello, spacecraft"
    cltu = encode_cltu(frame, randomize=False)
    for bit in range(64):
        decoder = CltuDecoder()
        decoder.receive_bytes(flip(cltu, 8 * (len(cltu) - 8) + bit))
        assert drain(decoder) == [expected(frame)]
        assert decoder.stats.octets_skipped == 0


def test_start_sequence_search_tolerance() -> None:
    frame = b"\x01\x02\x03\x04\x05\x06\x07"
    cltu = encode_cltu(frame, randomize=False)
    for bit in range(16):
        one_error = flip(cltu, bit)
        strict = CltuDecoder(start_sequence_errors=0)
        strict.receive_bytes(one_error)
        assert drain(strict) == []
        assert strict.stats.octets_skipped == len(cltu) - 1  # last octet kept for a match
        tolerant = CltuDecoder(start_sequence_errors=1)
        tolerant.receive_bytes(one_error)
        assert drain(tolerant) == [expected(frame)]
    for first, second in itertools.combinations(range(16), 2):
        tolerant = CltuDecoder(start_sequence_errors=1)
        tolerant.receive_bytes(flip(flip(cltu, first), second))
        assert drain(tolerant) == []


def test_cltu_cut_short_by_the_next_one() -> None:
    first = bytes(range(100, 135))  # 5 codeblocks
    second = bytes(range(1, 31))
    cut = encode_cltu(first, randomize=False)[: 2 + 8 * 2]  # start + 2 codeblocks
    nxt = encode_cltu(second, randomize=False)
    # The codeblock the decoder then sees is EB 90 + 6 octets of the next CLTU; the
    # oracle says it is neither a codeword nor one bit away from one.
    mixed = nxt[:8]
    assert not oracle_is_codeword(mixed)
    assert not any(oracle_is_codeword(flip(mixed, b)) for b in range(63))
    for mode in DecoderMode:
        decoder = CltuDecoder(mode)
        feed(decoder, cut + nxt, [1] * 40)
        assert drain(decoder) == [
            CltuDecoded(data=first[:14], codeblocks=2, corrected_bits=0, ended_by_tail=False),
            expected(second),
        ]


def test_channel_deactivation_ends_a_cltu_in_progress() -> None:
    frame = bytes(range(50))
    cltu = encode_cltu(frame, randomize=False)
    decoder = CltuDecoder()
    decoder.receive_bytes(cltu[: 2 + 8 * 3 + 5])
    assert drain(decoder) == []
    assert decoder.state is DecoderState.S3_DECODE
    decoder.channel_deactivation()
    assert drain(decoder) == [
        CltuDecoded(data=frame[:21], codeblocks=3, corrected_bits=0, ended_by_tail=False)
    ]
    assert DecoderState(decoder.state) is DecoderState.S2_SEARCH
    decoder.receive_bytes(b"\x00" + START_SEQUENCE + b"\x01\x02")
    decoder.channel_deactivation()
    (event,) = drain(decoder)
    assert isinstance(event, Dropped)
    assert (event.layer, event.reason, event.octets) == (
        Layer.TC_CODING,
        "channel-deactivation",
        4,
    )
    assert decoder.drops == {"tc-coding/channel-deactivation": 1}


def test_empty_cltu_and_too_many_codeblocks_are_dropped() -> None:
    decoder = CltuDecoder()
    decoder.receive_bytes(START_SEQUENCE + TAIL_SEQUENCE)
    (event,) = drain(decoder)
    assert isinstance(event, Dropped)
    assert (event.reason, event.octets) == ("empty-cltu", 10)

    decoder = CltuDecoder(max_codeblocks=3)
    decoder.receive_bytes(encode_cltu(bytes(28), randomize=False))  # 4 codeblocks
    (event,) = drain(decoder)
    assert isinstance(event, Dropped)
    assert (event.reason, event.octets) == ("too-many-codeblocks", 2 + 32)
    assert decoder.drops == {"tc-coding/too-many-codeblocks": 1}
    decoder.receive_bytes(encode_cltu(bytes(21), randomize=False))  # 3 codeblocks: fine
    assert drain(decoder) == [expected(bytes(21))]


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=400),
    st.sampled_from(list(DecoderMode)),
    st.booleans(),
    st.integers(min_value=0, max_value=1),
)
def test_random_bytes_never_raise(data: bytes, mode: DecoderMode, rand: bool, tol: int) -> None:
    decoder = CltuDecoder(mode, randomize=rand, start_sequence_errors=tol, max_codeblocks=5)
    for stream in (data, START_SEQUENCE + data):
        decoder.receive_bytes(stream)
        decoder.receive_bytes(data[:3])
        decoder.channel_deactivation()
        for event in drain(decoder):
            if isinstance(event, Dropped):
                assert event.layer is Layer.TC_CODING
            else:
                assert len(event.data) == 7 * event.codeblocks
                assert 1 <= event.codeblocks <= 5
