"""Space Packets, CCSDS 133.0-B-2: codec against spacepackets, sequencing, reassembly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacepackets.ccsds import spacepacket as oracle

from linkstack.errors import DecodeError, Dropped, Layer, LocalProtocolError, RemoteProtocolError
from linkstack.packets.space_packet import (
    IDLE_APID,
    MAX_DATA_LENGTH,
    PacketReassembler,
    PacketSequencer,
    PacketType,
    PayloadReceived,
    SequenceFlags,
    SpacePacket,
    idle_packet,
    peek_packet_length,
)

packets = st.builds(
    SpacePacket,
    packet_type=st.sampled_from(PacketType),
    apid=st.integers(0, 0x7FE),
    sequence_count=st.integers(0, 16383),
    data=st.binary(min_size=1, max_size=300),
    secondary_header_flag=st.booleans(),
    sequence_flags=st.sampled_from(SequenceFlags),
)


def events(engine: PacketReassembler) -> list[PayloadReceived | Dropped]:
    out = []
    while (event := engine.next_event()) is not None:
        out.append(event)
    return out


# ---- codec -------------------------------------------------------------------------


@settings(max_examples=200)
@given(packets)
def test_round_trip(packet: SpacePacket) -> None:
    raw = packet.to_bytes()
    assert len(raw) == 6 + len(packet.data) == peek_packet_length(raw)
    assert SpacePacket.from_bytes(raw) == packet


@settings(max_examples=200)
@given(packets)
def test_spacepackets_parses_ours(packet: SpacePacket) -> None:
    # Oracle: the spacepackets package (us-irs) reads the header we wrote.
    raw = packet.to_bytes()
    header = oracle.SpacePacketHeader.unpack(raw)
    assert header.ccsds_version == 0
    assert int(header.packet_type) == int(packet.packet_type)
    assert header.sec_header_flag == packet.secondary_header_flag
    assert header.apid == packet.apid
    assert int(header.seq_flags) == int(packet.sequence_flags)
    assert header.seq_count == packet.sequence_count
    assert header.data_len == len(packet.data) - 1
    assert header.packet_len == len(raw)


@settings(max_examples=200)
@given(
    st.sampled_from(oracle.PacketType),
    st.integers(0, 0x7FE),
    st.integers(0, 16383),
    st.sampled_from(oracle.SequenceFlags),
    st.binary(min_size=1, max_size=300),
)
def test_we_parse_spacepackets(
    ptype: oracle.PacketType, apid: int, count: int, flags: oracle.SequenceFlags, data: bytes
) -> None:
    # Oracle: spacepackets builds (no secondary header), we parse.
    header = oracle.SpacePacketHeader(
        packet_type=ptype, apid=apid, seq_count=count, data_len=len(data) - 1, seq_flags=flags
    )
    raw = oracle.SpacePacket(header, None, data).pack()
    ours = SpacePacket.from_bytes(bytes(raw))
    assert (int(ours.packet_type), ours.apid, ours.sequence_count) == (int(ptype), apid, count)
    assert int(ours.sequence_flags) == int(flags)
    assert ours.data == data
    assert not ours.secondary_header_flag


@settings(max_examples=50)
@given(st.lists(packets, min_size=1, max_size=8))
def test_parse_space_packets_extracts_our_stream(stream: list[SpacePacket]) -> None:
    raw = b"".join(p.to_bytes() for p in stream)
    ids = list(
        {
            oracle.PacketId(oracle.PacketType(int(p.packet_type)), p.secondary_header_flag, p.apid)
            for p in stream
        }
    )
    result = oracle.parse_space_packets(raw, ids)
    assert [bytes(p) for p in result.tm_list] == [p.to_bytes() for p in stream]
    assert result.scanned_bytes == len(raw)


def test_known_header_bytes() -> None:
    # Worked by hand from 133.0-B-2 figure 4-2: TC, sec hdr, APID 5, FIRST, count 3, 10 octets.
    p = SpacePacket(
        packet_type=PacketType.TC,
        apid=5,
        sequence_count=3,
        data=bytes(10),
        secondary_header_flag=True,
        sequence_flags=SequenceFlags.FIRST,
    )
    assert p.to_bytes()[:6] == bytes.fromhex("180540030009")


def test_maximum_packet() -> None:
    p = SpacePacket(
        packet_type=PacketType.TM, apid=1, sequence_count=0, data=bytes(MAX_DATA_LENGTH)
    )
    raw = p.to_bytes()
    assert raw[4:6] == b"\xff\xff" and len(raw) == 65542
    assert SpacePacket.from_bytes(raw) == p


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (bytes.fromhex("0801c000"), "truncated"),
        (bytes.fromhex("0801c0000004") + b"abc", "truncated"),
        (bytes.fromhex("0801c0000000") + b"ab", "length-mismatch"),
        (bytes.fromhex("2801c0000000") + b"a", "bad-version"),
        (bytes.fromhex("0fffc0000000") + b"a", "bad-idle-packet"),
    ],
)
def test_decode_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        SpacePacket.from_bytes(raw)
    assert info.value.reason == reason
    assert info.value.layer is Layer.SPACE_PACKET
    assert info.value.clause.startswith("CCSDS 133.0-B-2")


@settings(max_examples=500)
@given(st.binary(max_size=40))
def test_random_bytes_only_typed_errors(raw: bytes) -> None:
    try:
        total = peek_packet_length(raw)
    except RemoteProtocolError:
        total = None
    try:
        packet = SpacePacket.from_bytes(raw)
    except RemoteProtocolError:
        return
    assert total == len(raw)
    assert packet.to_bytes() == raw


@pytest.mark.parametrize(
    "kwargs",
    [
        {"apid": 2048},
        {"apid": -1},
        {"sequence_count": 16384},
        {"data": b""},
        {"data": bytes(MAX_DATA_LENGTH + 1)},
        {"apid": IDLE_APID, "secondary_header_flag": True},
    ],
)
def test_caller_errors(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "packet_type": PacketType.TM,
        "apid": 1,
        "sequence_count": 0,
        "data": b"x",
    }
    with pytest.raises(LocalProtocolError):
        SpacePacket(**{**base, **kwargs})  # type: ignore[arg-type]


def test_idle_packet() -> None:
    p = idle_packet(20, sequence_count=9)
    raw = p.to_bytes()
    assert len(raw) == 20 and p.is_idle
    header = oracle.SpacePacketHeader.unpack(raw)
    assert header.apid == 0x7FF and not header.sec_header_flag
    with pytest.raises(LocalProtocolError):
        idle_packet(6)


# ---- sequencer and segmentation ----------------------------------------------------


def test_counts_per_apid_wrap_at_16384() -> None:
    seq = PacketSequencer()
    assert [seq.next_count(5) for _ in range(3)] == [0, 1, 2]
    assert seq.next_count(6) == 0
    for _ in range(16384 - 3):
        seq.next_count(5)
    assert seq.next_count(5) == 0  # 16384 counts later: wrapped
    assert seq.next_count(6) == 1


def test_segmentation_flags_and_counts() -> None:
    seq = PacketSequencer(packet_type=PacketType.TM)
    seq.next_count(9)  # start mid-way so counts are not trivially 0..n
    parts = seq.segment(9, bytes(range(250)), max_data_length=100)
    assert [p.sequence_flags for p in parts] == [
        SequenceFlags.FIRST,
        SequenceFlags.CONTINUATION,
        SequenceFlags.LAST,
    ]
    assert [p.sequence_count for p in parts] == [1, 2, 3]
    assert [len(p.data) for p in parts] == [100, 100, 50]
    assert b"".join(p.data for p in parts) == bytes(range(250))
    assert seq.segment(9, b"abc") == [
        SpacePacket(packet_type=PacketType.TM, apid=9, sequence_count=4, data=b"abc")
    ]
    with pytest.raises(LocalProtocolError):
        seq.segment(9, b"")


def test_segmentation_counts_wrap() -> None:
    seq = PacketSequencer()
    for _ in range(16382):
        seq.next_count(1)
    parts = seq.segment(1, bytes(40), max_data_length=10)
    assert [p.sequence_count for p in parts] == [16382, 16383, 0, 1]
    engine = PacketReassembler()
    for p in parts:
        engine.receive_bytes(p.to_bytes())
    assert events(engine) == [
        PayloadReceived(apid=1, packet_type=PacketType.TM, payload=bytes(40), packets=4)
    ]


@settings(max_examples=60)
@given(st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=6), st.integers(1, 200))
def test_reassembly_round_trip(payloads: list[bytes], max_len: int) -> None:
    seq = PacketSequencer()
    engine = PacketReassembler()
    for i, payload in enumerate(payloads):
        for p in seq.segment(i % 3, payload, max_data_length=max_len):
            engine.receive_bytes(p.to_bytes())
    got = events(engine)
    assert [e.payload for e in got if isinstance(e, PayloadReceived)] == payloads
    assert not engine.drops


def test_gap_in_sequence_count_drops_partial() -> None:
    seq = PacketSequencer()
    first = seq.segment(3, b"A" * 30, max_data_length=10)  # counts 0, 1, 2
    second = seq.segment(3, b"B" * 20, max_data_length=10)  # counts 3, 4
    third = seq.packet(3, b"C")  # count 5
    engine = PacketReassembler()
    for p in [first[0], first[2], *second, third]:  # count 1 lost
        engine.receive_packet(p)
    got = events(engine)
    assert [type(e) for e in got] == [Dropped, Dropped, PayloadReceived, PayloadReceived]
    assert isinstance(got[0], Dropped) and got[0].reason == "sequence-gap"
    assert got[0].octets == 10  # the FIRST segment's data
    assert isinstance(got[1], Dropped) and got[1].octets == 10  # the orphaned LAST
    assert [e.payload for e in got if isinstance(e, PayloadReceived)] == [b"B" * 20, b"C"]
    assert engine.drops == {"space-packet/sequence-gap": 2}
    assert engine.stats.sequence_gaps == 1


def test_flag_out_of_order() -> None:
    seq = PacketSequencer()
    a = seq.segment(4, b"a" * 25, max_data_length=10)  # FIRST CONT LAST
    b = seq.segment(4, b"b" * 15, max_data_length=10)  # FIRST LAST
    engine = PacketReassembler()
    # Hand-made stream: a.FIRST a.CONT, then b.FIRST arrives with the right count but
    # a.LAST is missing from the flags (counts renumbered so no gap is seen).
    stream = [
        a[0],
        a[1],
        SpacePacket(
            packet_type=PacketType.TM,
            apid=4,
            sequence_count=2,
            data=b[0].data,
            sequence_flags=SequenceFlags.FIRST,
        ),
        SpacePacket(
            packet_type=PacketType.TM,
            apid=4,
            sequence_count=3,
            data=b[1].data,
            sequence_flags=SequenceFlags.LAST,
        ),
        SpacePacket(
            packet_type=PacketType.TM,
            apid=4,
            sequence_count=4,
            data=b"orphan",
            sequence_flags=SequenceFlags.CONTINUATION,
        ),
    ]
    for p in stream:
        engine.receive_packet(p)
    got = events(engine)
    assert [type(e) for e in got] == [Dropped, PayloadReceived, Dropped]
    assert isinstance(got[0], Dropped) and got[0].reason == "segment-out-of-order"
    assert got[0].octets == 20
    assert isinstance(got[1], PayloadReceived) and got[1].payload == b"b" * 15
    assert isinstance(got[2], Dropped) and got[2].octets == 6
    assert engine.drops == {"space-packet/segment-out-of-order": 2}


def test_unsegmented_interrupting_a_run() -> None:
    engine = PacketReassembler()
    engine.receive_packet(
        SpacePacket(
            packet_type=PacketType.TM,
            apid=2,
            sequence_count=0,
            data=b"x",
            sequence_flags=SequenceFlags.FIRST,
        )
    )
    engine.receive_packet(
        SpacePacket(packet_type=PacketType.TM, apid=2, sequence_count=1, data=b"y")
    )
    got = events(engine)
    assert [type(e) for e in got] == [Dropped, PayloadReceived]
    assert isinstance(got[1], PayloadReceived) and got[1].payload == b"y"


def test_idle_packets_discarded_not_dropped() -> None:
    engine = PacketReassembler()
    engine.receive_bytes(idle_packet(30).to_bytes())
    engine.receive_packet(
        SpacePacket(packet_type=PacketType.TM, apid=1, sequence_count=0, data=b"z")
    )
    assert [e for e in events(engine)] == [
        PayloadReceived(apid=1, packet_type=PacketType.TM, payload=b"z")
    ]
    assert engine.stats.idle_packets == 1
    assert not engine.drops


def test_interleaved_apids_reassemble_independently() -> None:
    seq = PacketSequencer()
    a = seq.segment(10, b"a" * 30, max_data_length=10)
    b = seq.segment(11, b"b" * 30, max_data_length=10)
    engine = PacketReassembler()
    for pa, pb in zip(a, b, strict=True):
        engine.receive_packet(pa)
        engine.receive_packet(pb)
    assert [e.payload for e in events(engine) if isinstance(e, PayloadReceived)] == [
        b"a" * 30,
        b"b" * 30,
    ]


def test_payload_limit() -> None:
    seq = PacketSequencer()
    engine = PacketReassembler(max_payload=25)
    for p in seq.segment(1, bytes(40), max_data_length=10):
        engine.receive_packet(p)
    got = events(engine)
    assert isinstance(got[0], Dropped) and got[0].reason == "payload-too-long"
    assert not any(isinstance(e, PayloadReceived) for e in got)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=30), max_size=10))
def test_reassembler_random_bytes_never_raise(chunks: list[bytes]) -> None:
    engine = PacketReassembler()
    for chunk in chunks:
        engine.receive_bytes(chunk)
    for event in events(engine):
        assert isinstance(event, PayloadReceived | Dropped)
