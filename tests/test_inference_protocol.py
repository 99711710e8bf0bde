"""Inference application protocol codecs (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.errors import DecodeError, Layer, LocalProtocolError, RemoteProtocolError
from linkstack.inference.protocol import (
    IDLE_APID,
    MAX_CHUNK_IDS,
    MAX_DETAIL_OCTETS,
    MAX_DEVICE_OCTETS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_IDS,
    MAX_RESEND_RANGES,
    MAX_STOP_IDS,
    MAX_TOKEN_ID,
    MESSAGE_APID,
    QWEN3_VOCAB_SIZE,
    Apid,
    Cancel,
    DuplicateDetail,
    EndAck,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Housekeeping,
    Message,
    MessageType,
    PromptRequest,
    ResendRequest,
    TokenChunk,
    TokenRange,
    decode_message,
    encode_message,
    format_duplicate_detail,
    pack_token_ids,
    packed_length,
    parse_duplicate_detail,
    request_digest,
    token_chunk_capacity,
    token_chunk_octets,
    unpack_token_ids,
)

MAX_QWEN_ID = QWEN3_VOCAB_SIZE - 1  # 151935


def bits_to_bytes(bits: str) -> bytes:
    """Octets from a string of '0'/'1' (spaces ignored), zero-padded to an octet."""
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


# ---------------------------------------------------------------------------
# Token id packing (§3)
# ---------------------------------------------------------------------------


def test_pack_known_answer_four_ids_in_nine_octets() -> None:
    # Provenance: 18-bit fields written out by hand from the binary expansions
    # 151935 = 2^17 + 2^14 + 2^12 + 2^8 + 127, 262143 = 2^18 - 1, 0, 1.
    bits = (
        "100101000101111111"  # 151935
        "111111111111111111"  # 262143
        "000000000000000000"  # 0
        "000000000000000001"  # 1
    )
    expected = bits_to_bytes(bits)
    assert expected == bytes.fromhex("945FFFFFF000000001")  # bits 0-15, 16-35, 36-71 in hex
    assert pack_token_ids([MAX_QWEN_ID, MAX_TOKEN_ID, 0, 1]) == expected
    assert unpack_token_ids(expected, 4) == (MAX_QWEN_ID, MAX_TOKEN_ID, 0, 1)


def test_pack_known_answer_with_pad_bits() -> None:
    # Five ids = 90 bits -> 12 octets, 6 zero pad bits at the end (by hand).
    bits = (
        "000000000000000001"  # 1
        "000000000000000010"  # 2
        "000000000000000011"  # 3
        "000000000000000100"  # 4
        "100101000101111111"  # 151935
        "000000"  # pad
    )
    data = pack_token_ids([1, 2, 3, 4, MAX_QWEN_ID])
    assert data == bits_to_bytes(bits)
    assert data[:9] == bytes.fromhex("000040002000 0C0004".replace(" ", ""))
    assert len(data) == 12


@pytest.mark.parametrize("count", [*range(0, 42), 100, 1001, 4096, MAX_PROMPT_IDS])
def test_pack_round_trip_counts(count: int) -> None:
    ids = [(i * 7919 + count) % (MAX_TOKEN_ID + 1) for i in range(count)]
    if count:
        ids[-1] = MAX_TOKEN_ID
        ids[0] = MAX_QWEN_ID
    data = pack_token_ids(ids)
    assert len(data) == packed_length(count) == (18 * count + 7) // 8
    assert unpack_token_ids(data, count) == tuple(ids)


@given(st.lists(st.integers(0, MAX_TOKEN_ID), max_size=300))
def test_pack_round_trip_hypothesis(ids: list[int]) -> None:
    assert unpack_token_ids(pack_token_ids(ids), len(ids)) == tuple(ids)


@pytest.mark.parametrize("bad", [-1, MAX_TOKEN_ID + 1, 1 << 40])
def test_pack_rejects_out_of_range_ids_naming_the_value(bad: int) -> None:
    with pytest.raises(LocalProtocolError, match=f"{bad} at index 2"):
        pack_token_ids([5, 6, bad, 7])


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 17])
def test_unpack_length_disagreeing_with_count(count: int) -> None:
    data = pack_token_ids(list(range(count)))
    for wrong in (data[:-1], data + b"\x00"):
        with pytest.raises(DecodeError) as info:
            unpack_token_ids(wrong, count)
        assert info.value.reason == "bad-length"
        assert info.value.layer is Layer.APPLICATION


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6, 7])  # 2, 4 or 6 pad bits
def test_unpack_nonzero_pad_bits(count: int) -> None:
    data = bytearray(pack_token_ids([0] * count))
    data[-1] |= 0x01  # the last bit is always padding when 18*count % 8 != 0
    with pytest.raises(DecodeError) as info:
        unpack_token_ids(bytes(data), count)
    assert info.value.reason == "bad-padding"


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

token_ids = st.integers(0, MAX_TOKEN_ID)
request_ids = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))

generation_params = st.builds(
    GenerationParams,
    max_new_tokens=st.integers(1, MAX_NEW_TOKENS),
    temperature_milli=st.integers(0, 0xFFFF),
    top_p_milli=st.integers(1, 1000),
    top_k=st.integers(0, 0xFFFF),
    seed=st.integers(0, 2**64 - 1),
    stop_ids=st.lists(token_ids, max_size=MAX_STOP_IDS).map(tuple),
)
prompt_requests = st.builds(
    PromptRequest,
    request_id=request_ids,
    params=generation_params,
    prompt_ids=st.lists(token_ids, min_size=1, max_size=200).map(tuple),
)
cancels = st.builds(Cancel, request_ids)
end_acks = st.builds(EndAck, request_ids)
token_ranges = st.builds(TokenRange, st.integers(0, 0xFFFF_0000), st.integers(1, 0xFFFF))
resend_requests = st.builds(
    ResendRequest,
    request_ids,
    st.lists(token_ranges, min_size=1, max_size=MAX_RESEND_RANGES).map(tuple),
)
token_chunks = st.builds(
    TokenChunk,
    request_ids,
    st.integers(0, 0xFFFF_0000),
    st.lists(token_ids, max_size=300).map(tuple),
)
end_of_streams = st.builds(
    EndOfStream,
    request_id=request_ids,
    finish_reason=st.sampled_from(FinishReason),
    token_count=u32,
    time_to_first_token_us=u32,
    generation_time_ms=u32,
    tokens_per_s_milli=u32,
)
error_reports = st.builds(
    ErrorReport,
    request_id=st.none() | request_ids,
    reason=st.sampled_from(ErrorReason),
    detail=ascii_text.filter(lambda s: len(s) <= MAX_DETAIL_OCTETS),
)
housekeepings = st.builds(
    Housekeeping,
    queue_depth=st.integers(0, 0xFFFF),
    tokens_per_s_milli=u32,
    memory_used_octets=st.integers(0, 2**64 - 1),
    uptime_s=u32,
    device=ascii_text.filter(lambda s: len(s) <= MAX_DEVICE_OCTETS),
)
messages: st.SearchStrategy[Message] = st.one_of(
    prompt_requests,
    cancels,
    end_acks,
    resend_requests,
    token_chunks,
    end_of_streams,
    error_reports,
    housekeepings,
)

# One hand-picked instance per message type, for the exhaustive length tests.
SAMPLES: list[Message] = [
    PromptRequest(
        request_id=0x1234,
        params=GenerationParams.from_floats(
            max_new_tokens=256,
            temperature=0.6,
            top_p=0.95,
            top_k=20,
            seed=7,
            stop_ids=(151645, 151643),
        ),
        prompt_ids=(151644, 872, 198, 9707, 11, 1879, 0, 151645),
    ),
    Cancel(0x1234),
    EndAck(0x1234),
    ResendRequest(0x1234, (TokenRange(0, 5), TokenRange(100, 1))),
    TokenChunk(0x1234, 40, (9707, 11, 1879, 0, MAX_QWEN_ID)),
    EndOfStream(
        request_id=0x1234,
        finish_reason=FinishReason.STOP_ID,
        token_count=45,
        time_to_first_token_us=123_456,
        generation_time_ms=2_500,
        tokens_per_s_milli=18_000,
    ),
    ErrorReport(request_id=0x1234, reason=ErrorReason.QUEUE_FULL, detail="queue 8/8"),
    ErrorReport(request_id=None, reason=ErrorReason.UNKNOWN_APID, detail=""),
    Housekeeping(
        queue_depth=2,
        tokens_per_s_milli=61_250,
        memory_used_octets=3 << 30,
        uptime_s=86_400,
        device="cuda:0 NVIDIA H100",
    ),
]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    data = message.to_bytes()
    assert type(message).from_bytes(data) == message
    apid, wire = encode_message(message)
    assert wire == data
    assert apid == MESSAGE_APID[message.message_type]
    assert decode_message(apid, wire) == message


@given(prompt_requests)
def test_prompt_request_length_formula(message: PromptRequest) -> None:
    n_stop, n_prompt = len(message.params.stop_ids), len(message.prompt_ids)
    assert len(message.to_bytes()) == 22 + packed_length(n_stop) + packed_length(n_prompt)


def test_prompt_request_known_bytes() -> None:
    # Provenance: fields laid out by hand from docs/protocol.md §4.
    message = PromptRequest(
        request_id=0x0102,
        params=GenerationParams(
            max_new_tokens=300,
            temperature_milli=700,
            top_p_milli=950,
            top_k=20,
            seed=0x0A0B0C0D0E0F1011,
            stop_ids=(151645,),
        ),
        prompt_ids=(1, 2, 3, 4),
    )
    expected = (
        bytes([0x21])  # version 1 (001), type 0x01 (00001)
        + bytes.fromhex("0102")  # request id
        + bytes.fromhex("012C")  # 300
        + bytes.fromhex("02BC")  # 700
        + bytes.fromhex("03B6")  # 950
        + bytes.fromhex("0014")  # 20
        + bytes.fromhex("0A0B0C0D0E0F1011")
        + bytes([1])  # one stop id
        + bytes.fromhex("0004")  # four prompt ids
        + bits_to_bytes(format(151645, "018b"))  # 3 octets, 6 pad bits
        + bytes.fromhex("000040002000 0C0004".replace(" ", ""))
    )
    assert message.to_bytes() == expected
    assert decode_message(Apid.REQUEST, expected) == message


def test_known_header_octets() -> None:
    # docs/protocol.md §2 lists these.
    assert [m.to_bytes()[0] for m in SAMPLES] == [
        0x21,
        0x22,
        0x24,
        0x23,
        0x28,
        0x29,
        0x30,
        0x30,
        0x38,
    ]


def test_large_messages_round_trip() -> None:
    prompt = tuple((i * 31) % QWEN3_VOCAB_SIZE for i in range(MAX_PROMPT_IDS))
    request = PromptRequest(
        request_id=1,
        params=GenerationParams(max_new_tokens=MAX_NEW_TOKENS, stop_ids=tuple(range(MAX_STOP_IDS))),
        prompt_ids=prompt,
    )
    assert decode_message(*encode_message(request)) == request
    chunk = TokenChunk(1, 0, tuple(i % (MAX_TOKEN_ID + 1) for i in range(MAX_CHUNK_IDS)))
    data = chunk.to_bytes()
    assert len(data) <= 65536  # CCSDS 133.0-B-2 4.1.3.5.3: one packet data field
    assert decode_message(Apid.TOKEN_STREAM, data) == chunk


# ---------------------------------------------------------------------------
# Generation parameters: exact fixed point (§4)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "milli"), [(0.0, 0), (0.6, 600), (0.7, 700), (1.0, 1000), (1.5, 1500), (0.001, 1)]
)
def test_temperature_survives_bit_for_bit(value: float, milli: int) -> None:
    params = GenerationParams.from_floats(max_new_tokens=1, temperature=value)
    assert params.temperature_milli == milli
    received = PromptRequest.from_bytes(
        PromptRequest(request_id=0, params=params, prompt_ids=(1,)).to_bytes()
    ).params
    assert struct.pack(">d", received.temperature) == struct.pack(">d", value)


def test_top_p_survives_bit_for_bit() -> None:
    params = GenerationParams.from_floats(max_new_tokens=1, top_p=0.95)
    assert params.top_p_milli == 950
    assert struct.pack(">d", params.top_p) == struct.pack(">d", 0.95)


@pytest.mark.parametrize("value", [0.7001, 0.1234, 1e-4, float("nan"), float("inf")])
def test_from_floats_refuses_inexact_values(value: float) -> None:
    with pytest.raises(LocalProtocolError, match=repr(value)):
        GenerationParams.from_floats(max_new_tokens=1, temperature=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens 0 outside 1..16384"),
        ({"temperature": -0.1}, "temperature_milli -100 outside 0..65535"),
        ({"temperature": float("nan")}, "temperature nan is not finite"),
        ({"top_p": 0.0}, "top_p_milli 0 outside 1..1000"),
        ({"top_p": 1.5}, "top_p_milli 1500 outside 1..1000"),
        ({"seed": -1}, "seed -1 outside"),
        ({"seed": 2**64}, "seed 18446744073709551616 outside"),
        ({"stop_ids": (1, -2)}, "stop id -2 at index 1 outside"),
    ],
)
def test_from_floats_refuses_what_the_generator_cannot_run(
    kwargs: dict[str, Any], message: str
) -> None:
    # The onboard generator runs on these params: they are its only check of the values.
    with pytest.raises(LocalProtocolError, match=message):
        GenerationParams.from_floats(**{"max_new_tokens": 1, **kwargs})


def test_from_floats_freezes_stop_ids_as_a_tuple() -> None:
    assert GenerationParams.from_floats(max_new_tokens=1, stop_ids=[5, 6]).stop_ids == (5, 6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": MAX_NEW_TOKENS + 1},
        {"max_new_tokens": 1, "top_p_milli": 0},
        {"max_new_tokens": 1, "top_p_milli": 1001},
        {"max_new_tokens": 1, "temperature_milli": 65536},
        {"max_new_tokens": 1, "seed": 2**64},
        {"max_new_tokens": 1, "stop_ids": tuple(range(MAX_STOP_IDS + 1))},
        {"max_new_tokens": 1, "stop_ids": (MAX_TOKEN_ID + 1,)},
    ],
)
def test_generation_params_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        GenerationParams(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Build-side limits (LocalProtocolError naming the value)
# ---------------------------------------------------------------------------


def test_build_limits() -> None:
    params = GenerationParams(max_new_tokens=1)
    with pytest.raises(LocalProtocolError, match="16385"):
        PromptRequest(request_id=1, params=params, prompt_ids=(0,) * (MAX_PROMPT_IDS + 1))
    with pytest.raises(LocalProtocolError, match="prompt length 0"):
        PromptRequest(request_id=1, params=params, prompt_ids=())
    with pytest.raises(LocalProtocolError, match="262144"):
        PromptRequest(request_id=1, params=params, prompt_ids=(262144,))
    with pytest.raises(LocalProtocolError, match="65536"):
        Cancel(65536)
    with pytest.raises(LocalProtocolError, match="-1"):
        TokenChunk(-1, 0, ())
    with pytest.raises(LocalProtocolError, match="runs past"):
        TokenChunk(0, 0xFFFF_FFFF, (1, 2))
    with pytest.raises(LocalProtocolError, match="81 characters"):
        ErrorReport(request_id=None, reason=ErrorReason.INTERNAL, detail="x" * 81)
    with pytest.raises(LocalProtocolError, match="printable ASCII"):
        ErrorReport(request_id=None, reason=ErrorReason.INTERNAL, detail="caf\u00e9")
    with pytest.raises(LocalProtocolError, match="printable ASCII"):
        Housekeeping(
            queue_depth=0, tokens_per_s_milli=0, memory_used_octets=0, uptime_s=0, device="a\nb"
        )
    with pytest.raises(LocalProtocolError, match="range count 0"):
        ResendRequest(1, ())
    with pytest.raises(LocalProtocolError, match="range count 0"):
        TokenRange(5, 0)
    with pytest.raises(LocalProtocolError, match="not a FinishReason"):
        EndOfStream(
            request_id=0,
            finish_reason=1,  # type: ignore[arg-type]
            token_count=0,
            time_to_first_token_us=0,
            generation_time_ms=0,
            tokens_per_s_milli=0,
        )


# ---------------------------------------------------------------------------
# Finish reasons (§7) and ErrorReport detail texts (§8.1)
# ---------------------------------------------------------------------------


def test_finish_reasons_keep_their_wire_values_and_user_names() -> None:
    # The names appear in --json records and program output (docs/json.md).
    assert {(r.value, r.label) for r in FinishReason} == {
        (0, "stop"),
        (1, "max_tokens"),
        (2, "cancelled"),
        (3, "error"),
    }


def test_duplicate_detail_round_trips() -> None:
    request = PromptRequest(
        request_id=7, params=GenerationParams(max_new_tokens=1), prompt_ids=(1, 2)
    )
    digest = hashlib.sha256(request.to_bytes()).digest()[:8].hex()
    assert request_digest(request) == digest
    for state in ("queued", "running", "streaming", "held for resend"):
        text = format_duplicate_detail(65535, state, request)
        assert text == f"id 65535 {state}; refused sha256:{digest}"
        assert len(text) <= MAX_DETAIL_OCTETS
        assert parse_duplicate_detail(text) == DuplicateDetail(65535, state, digest)


def test_duplicate_detail_parses_the_documented_example() -> None:
    # docs/protocol.md §8.1.
    assert parse_duplicate_detail("id 7 running; refused sha256:0f3a9c1d22e4b870") == (
        DuplicateDetail(7, "running", "0f3a9c1d22e4b870")
    )


@pytest.mark.parametrize(
    "detail",
    [
        "",
        "id 7 running",
        "id x running; refused sha256:0f3a9c1d22e4b870",
        "id 7 running; refused sha256:0F3A9C1D22E4B870",
        "id 7 running; refused sha256:0f3a9c1d22e4b8",
        "id 7 running; refused sha256:0f3a9c1d22e4b870 ",
    ],
)
def test_other_details_are_not_duplicate_details(detail: str) -> None:
    assert parse_duplicate_detail(detail) is None


# ---------------------------------------------------------------------------
# Token chunk sizing (§6)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("octets", [9, 10, 11, 12, 13, 100, 1000, 1017, 1105, 65536])
def test_token_chunk_capacity_is_tight(octets: int) -> None:
    n = token_chunk_capacity(octets)
    assert token_chunk_octets(n) <= octets
    assert n == MAX_CHUNK_IDS or token_chunk_octets(n + 1) > octets
    assert len(TokenChunk(0, 0, (MAX_TOKEN_ID,) * n).to_bytes()) == token_chunk_octets(n)


def test_token_chunk_capacity_known_values() -> None:
    # By hand: (N - 9) * 8 // 18.
    assert token_chunk_capacity(9) == 0
    assert token_chunk_capacity(12) == 1  # 3 octets = 24 bits -> one id
    assert token_chunk_capacity(1000) == 440
    assert token_chunk_capacity(65536) == MAX_CHUNK_IDS == 29123
    with pytest.raises(LocalProtocolError, match="8 octets"):
        token_chunk_capacity(8)


# ---------------------------------------------------------------------------
# Decoding malformed input
# ---------------------------------------------------------------------------


def reason_of(apid: int, data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decode_message(apid, data)
    assert info.value.layer is Layer.APPLICATION
    assert info.value.clause.startswith("docs/protocol.md §")
    return info.value.reason


def test_apids_are_distinct_and_never_idle() -> None:
    values = [int(a) for a in Apid]
    assert len(set(values)) == len(values)
    assert IDLE_APID == 0x7FF  # CCSDS 133.0-B-2 4.1.3.3.4.4
    assert IDLE_APID not in values
    assert all(0 <= v < IDLE_APID for v in values)
    assert {a for a in Apid if a.uplink} == {Apid.REQUEST, Apid.KEY_MANAGEMENT}


def test_dispatch_reasons() -> None:
    cancel = Cancel(7).to_bytes()
    assert reason_of(IDLE_APID, cancel) == "unknown-apid"
    assert reason_of(0x000, cancel) == "unknown-apid"
    assert reason_of(Apid.TOKEN_STREAM, cancel) == "wrong-apid"
    assert reason_of(Apid.REQUEST, b"") == "truncated"
    assert reason_of(Apid.REQUEST, bytes([0x20 | 0x05, 0, 7])) == "unknown-type"
    assert reason_of(Apid.REQUEST, bytes([0x20, 0, 7])) == "unknown-type"  # type 0 never used
    assert reason_of(Apid.REQUEST, bytes([0x42, 0, 7])) == "unsupported-version"
    assert reason_of(Apid.REQUEST, bytes([0x02, 0, 7])) == "unsupported-version"  # version 0
    with pytest.raises(DecodeError) as info:
        Cancel.from_bytes(EndAck(7).to_bytes())
    assert info.value.reason == "wrong-type"


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_trailing_octet(message: Message) -> None:
    apid, data = encode_message(message)
    for cut in range(len(data)):
        assert reason_of(apid, data[:cut]) == "truncated", cut
    for extra in (b"\x00", b"\xff\xff"):
        assert reason_of(apid, data + extra) == "bad-length"


def test_count_limits_on_receipt() -> None:
    good = SAMPLES[0].to_bytes()
    too_many_stops = good[:19] + bytes([MAX_STOP_IDS + 1]) + good[20:]
    assert reason_of(Apid.REQUEST, too_many_stops) == "too-many-ids"
    too_many_prompt = good[:20] + (MAX_PROMPT_IDS + 1).to_bytes(2, "big") + good[22:]
    assert reason_of(Apid.REQUEST, too_many_prompt) == "too-many-ids"
    empty_prompt = good[:20] + b"\x00\x00" + good[22 : 22 + packed_length(2)]
    assert reason_of(Apid.REQUEST, empty_prompt) == "bad-value"
    chunk = struct.pack(">BHIH", 0x28, 1, 0, MAX_CHUNK_IDS + 1)
    assert reason_of(Apid.TOKEN_STREAM, chunk) == "too-many-ids"
    resend = struct.pack(">BHB", 0x23, 1, MAX_RESEND_RANGES + 1)
    assert reason_of(Apid.REQUEST, resend) == "too-many-ids"
    assert reason_of(Apid.REQUEST, struct.pack(">BHB", 0x23, 1, 0)) == "bad-value"
    detail = struct.pack(">BBHBB", 0x30, 0x80, 1, 1, MAX_DETAIL_OCTETS + 1)
    assert reason_of(Apid.CONTROL, detail) == "too-long"
    device = struct.pack(">BHIQIB", 0x38, 0, 0, 0, 0, MAX_DEVICE_OCTETS + 1)
    assert reason_of(Apid.HOUSEKEEPING, device) == "too-long"


def test_field_values_on_receipt() -> None:
    # PromptRequest with top_p 1001 (octets 7-8).
    good = bytearray(SAMPLES[0].to_bytes())
    good[7:9] = (1001).to_bytes(2, "big")
    assert reason_of(Apid.REQUEST, bytes(good)) == "bad-value"
    # PromptRequest with max_new_tokens 0 (octets 3-4).
    good = bytearray(SAMPLES[0].to_bytes())
    good[3:5] = b"\x00\x00"
    assert reason_of(Apid.REQUEST, bytes(good)) == "bad-value"
    # Non-zero pad bits after the last prompt id (8 ids = 144 bits: no pad) -> use stop ids.
    good = bytearray(SAMPLES[0].to_bytes())
    good[22 + packed_length(2) - 1] |= 0x01  # 2 stop ids = 36 bits, 4 pad bits
    assert reason_of(Apid.REQUEST, bytes(good)) == "bad-padding"
    # EndOfStream finish reason 4.
    eos = bytearray(SAMPLES[5].to_bytes())
    eos[3] = 4
    assert reason_of(Apid.TOKEN_STREAM, bytes(eos)) == "bad-enum"
    # ErrorReport: reason 0, reserved flag bits, request id without its flag, bad text.
    report = bytearray(SAMPLES[6].to_bytes())
    report[4] = 0
    assert reason_of(Apid.CONTROL, bytes(report)) == "bad-enum"
    report = bytearray(SAMPLES[6].to_bytes())
    report[1] = 0x81
    assert reason_of(Apid.CONTROL, bytes(report)) == "reserved-bits"
    report = bytearray(SAMPLES[6].to_bytes())
    report[1] = 0x00
    assert reason_of(Apid.CONTROL, bytes(report)) == "reserved-bits"
    report = bytearray(SAMPLES[6].to_bytes())
    report[-1] = 0x80
    assert reason_of(Apid.CONTROL, bytes(report)) == "bad-text"
    hk = bytearray(SAMPLES[8].to_bytes())
    hk[-1] = 0x07
    assert reason_of(Apid.HOUSEKEEPING, bytes(hk)) == "bad-text"
    # ResendRequest range running past index 2^32 - 1.
    resend = struct.pack(">BHBIH", 0x23, 1, 1, 0xFFFF_FFFF, 2)
    assert reason_of(Apid.REQUEST, resend) == "bad-value"
    # TokenChunk running past index 2^32 - 1.
    chunk = struct.pack(">BHIH", 0x28, 1, 0xFFFF_FFFF, 2) + pack_token_ids([1, 2])
    assert reason_of(Apid.TOKEN_STREAM, chunk) == "bad-value"


@settings(max_examples=1000)
@given(st.sampled_from([*Apid, IDLE_APID, 0]), st.binary(max_size=64))
def test_random_bytes_raise_only_remote_protocol_errors(apid: int, data: bytes) -> None:
    try:
        message = decode_message(apid, data)
    except RemoteProtocolError:
        return
    assert encode_message(message) == (apid, data)  # whatever parses re-encodes identically


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_messages_raise_only_remote_protocol_errors(
    message: Message, data: st.DataObject
) -> None:
    apid, wire = encode_message(message)
    buf = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(buf) - 1))
        buf[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf) + 2))
    mutated = bytes(buf[:cut]) + bytes(max(0, cut - len(buf)))
    try:
        decoded = decode_message(apid, mutated)
    except RemoteProtocolError:
        return
    assert decoded.to_bytes() == mutated


def test_message_type_table_is_complete() -> None:
    assert set(MESSAGE_APID) == set(MessageType)
    assert all(t < 0x08 for t, a in MESSAGE_APID.items() if a is Apid.REQUEST)
