"""TM Space Data Link Protocol, CCSDS 132.0-B-3: codec, packetizer, multiplexer, depacketizer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacepackets.ccsds import tm_frame as oracle

from linkstack.errors import (
    DecodeError,
    Dropped,
    FecfMismatch,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.packets.fecf import append_fecf
from linkstack.packets.space_packet import PacketSequencer, PacketType, SpacePacket, idle_packet
from linkstack.tc.clcw import Clcw
from linkstack.tm.channels import (
    FramesLost,
    OcfReceived,
    OidFill,
    PacketReceived,
    TmDepacketizer,
    TmEvent,
    TmMultiplexer,
    TmPacketizer,
)
from linkstack.tm.frame import (
    FHP_IDLE_ONLY,
    FHP_NO_PACKET_START,
    TmChannelConfig,
    TmFrame,
)

CLCW = Clcw(vcid=0, report_value=42).to_int()


def drain(engine: TmDepacketizer) -> list[TmEvent]:
    out = []
    while (event := engine.next_event()) is not None:
        out.append(event)
    return out


def packets_of(events: list[TmEvent]) -> list[bytes]:
    return [e.packet for e in events if isinstance(e, PacketReceived)]


def make_packets(sizes: list[int], apid: int = 0x42) -> list[bytes]:
    """Space Packets with ``sizes`` data octets each, recognisable content."""
    seq = PacketSequencer()
    return [
        seq.packet(apid, bytes((i * 7 + j) & 0xFF for j in range(size))).to_bytes()
        for i, size in enumerate(sizes)
    ]


# ---- config ------------------------------------------------------------------------


def test_config_geometry() -> None:
    cfg = TmChannelConfig(scid=0x2AB, frame_length=1115)
    assert cfg.data_field_length == 1115 - 6 - 4 - 2
    cfg = TmChannelConfig(
        scid=1, frame_length=100, ocf_present=False, fecf_present=False, secondary_header_length=5
    )
    assert cfg.data_field_length == 100 - 6 - 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scid": 1024, "frame_length": 100},
        {"scid": -1, "frame_length": 100},
        {"scid": 1, "frame_length": 2049},
        {"scid": 1, "frame_length": 12},  # 6 + 4 + 2 leaves no data field
        {"scid": 1, "frame_length": 100, "secondary_header_length": 64},
    ],
)
def test_config_rejects(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        TmChannelConfig(**kwargs)  # type: ignore[arg-type]


def test_largest_frame() -> None:
    cfg = TmChannelConfig(scid=1, frame_length=2048)
    frame = TmFrame(
        scid=1,
        vcid=0,
        mc_count=0,
        vc_count=0,
        first_header_pointer=0,
        data=bytes(cfg.data_field_length),
        ocf=0,
    )
    assert len(frame.to_bytes()) == 2048
    assert TmFrame.from_bytes(frame.to_bytes(), config=cfg) == frame


# ---- codec -------------------------------------------------------------------------


@st.composite
def configs_and_frames(draw: st.DrawFn) -> tuple[TmChannelConfig, TmFrame]:
    cfg = TmChannelConfig(
        scid=draw(st.integers(0, 1023)),
        frame_length=draw(st.integers(80, 400)),
        ocf_present=draw(st.booleans()),
        fecf_present=draw(st.booleans()),
        secondary_header_length=draw(st.sampled_from([0, 0, 1, 63])),
    )
    n = cfg.data_field_length
    fhp = draw(
        st.one_of(st.integers(0, n - 1), st.sampled_from([FHP_NO_PACKET_START, FHP_IDLE_ONLY]))
    )
    frame = TmFrame(
        scid=cfg.scid,
        vcid=draw(st.integers(0, 7)),
        mc_count=draw(st.integers(0, 255)),
        vc_count=draw(st.integers(0, 255)),
        first_header_pointer=fhp,
        data=draw(st.binary(min_size=n, max_size=n)),
        ocf=draw(st.integers(0, 2**32 - 1)) if cfg.ocf_present else None,
        fecf_present=cfg.fecf_present,
        secondary_header=draw(
            st.binary(min_size=cfg.secondary_header_length, max_size=cfg.secondary_header_length)
        ),
        packet_order_flag=draw(st.booleans()),
    )
    return cfg, frame


@settings(max_examples=150)
@given(configs_and_frames())
def test_round_trip(cf: tuple[TmChannelConfig, TmFrame]) -> None:
    cfg, frame = cf
    raw = frame.to_bytes()
    assert len(raw) == cfg.frame_length == frame.length
    assert TmFrame.from_bytes(raw, config=cfg) == frame


@settings(max_examples=150)
@given(configs_and_frames())
def test_spacepackets_parses_ours(cf: tuple[TmChannelConfig, TmFrame]) -> None:
    # Oracle: spacepackets' TmTransferFrame (checks our FECF with fastcrc on unpack).
    cfg, frame = cf
    raw = frame.to_bytes()
    theirs = oracle.TmTransferFrame.unpack(raw, cfg.frame_length, cfg.fecf_present)
    ph = theirs.primary_header
    assert ph.master_channel_id.transfer_frame_version == 0
    assert ph.master_channel_id.spacecraft_id == frame.scid
    assert ph.vc_id == frame.vcid
    assert ph.ocf_flag == frame.ocf_flag
    assert ph.master_ch_frame_count == frame.mc_count
    assert ph.vc_frame_count == frame.vc_count
    status = ph.frame_datafield_status
    assert status.secondary_header_flag == frame.secondary_header_flag
    assert status.sync_flag == frame.sync_flag
    assert status.packet_order_flag == frame.packet_order_flag
    assert status.segment_len_id == 0b11
    assert status.first_header_pointer == frame.first_header_pointer
    assert theirs.data_field == frame.data
    if frame.secondary_header:
        assert theirs.secondary_header is not None
        assert theirs.secondary_header.data_field == frame.secondary_header
    if frame.ocf is not None:
        assert theirs.op_ctrl_field == frame.ocf.to_bytes(4, "big")
    else:
        assert theirs.op_ctrl_field is None


@settings(max_examples=100)
@given(
    st.integers(0, 1023),
    st.integers(0, 7),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0x7FF),
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=120, max_size=120),
)
def test_we_parse_spacepackets(
    scid: int, vcid: int, mc: int, vc: int, fhp: int, ocf: bytes, data: bytes
) -> None:
    # Oracle: spacepackets builds the frame (it leaves the FECF to the caller).
    cfg = TmChannelConfig(scid=scid, frame_length=6 + 120 + 4 + 2)
    fhp = fhp if fhp >= 0x7FE or fhp < 120 else fhp % 120
    header = oracle.TmFramePrimaryHeader(
        oracle.MasterChannelId(0, scid),
        vcid,
        True,
        mc,
        vc,
        oracle.TransferFrameDataFieldStatus(False, False, False, 0b11, fhp),
    )
    body = oracle.TmTransferFrame(cfg.frame_length - 2, header, None, data, ocf, None).pack()
    ours = TmFrame.from_bytes(append_fecf(body), config=cfg)
    assert (ours.scid, ours.vcid, ours.mc_count, ours.vc_count) == (scid, vcid, mc, vc)
    assert ours.first_header_pointer == fhp
    assert ours.data == data
    assert ours.ocf == int.from_bytes(ocf, "big")


CFG = TmChannelConfig(scid=0x155, frame_length=64)


def good_frame(**kwargs: object) -> TmFrame:
    base: dict[str, object] = {
        "scid": CFG.scid,
        "vcid": 3,
        "mc_count": 1,
        "vc_count": 2,
        "first_header_pointer": 0,
        "data": bytes(CFG.data_field_length),
        "ocf": 0,
    }
    return TmFrame(**{**base, **kwargs})  # type: ignore[arg-type]


def with_header_byte(frame: bytes, index: int, value: int) -> bytes:
    raw = bytearray(frame[:-2])
    raw[index] = value
    return append_fecf(bytes(raw))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw + b"\x00", "length-mismatch"),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "fecf-mismatch"),
        (lambda raw: with_header_byte(raw, 0, raw[0] | 0x40), "bad-version"),
        (lambda raw: with_header_byte(raw, 0, raw[0] ^ 0x01), "unexpected-scid"),
        (lambda raw: with_header_byte(raw, 1, raw[1] & 0xFE), "ocf-flag-mismatch"),
        (lambda raw: with_header_byte(raw, 4, raw[4] | 0x80), "secondary-header-mismatch"),
        (lambda raw: with_header_byte(raw, 4, raw[4] & ~0x18), "bad-segment-length-id"),
        (lambda raw: with_header_byte(raw, 5, 200), "bad-first-header-pointer"),
    ],
)
def test_decode_errors(mutate: object, reason: str) -> None:
    raw = good_frame().to_bytes()
    assert TmFrame.from_bytes(raw, config=CFG) == good_frame()
    with pytest.raises(RemoteProtocolError) as info:
        TmFrame.from_bytes(mutate(raw), config=CFG)  # type: ignore[operator]
    assert info.value.reason == reason
    assert info.value.layer is Layer.TM_FRAME
    assert info.value.clause.startswith("CCSDS 132.0-B-3")
    if reason == "fecf-mismatch":
        assert isinstance(info.value, FecfMismatch)
    else:
        assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scid": 1024},
        {"vcid": 8},
        {"mc_count": 256},
        {"vc_count": -1},
        {"first_header_pointer": 0x800},
        {"first_header_pointer": 60},  # beyond a 52-octet data field
        {"segment_length_id": 0},
        {"ocf": 2**32},
        {"data": b""},
        {"secondary_header": bytes(64)},
    ],
)
def test_caller_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        good_frame(**kwargs)


NO_FECF = TmChannelConfig(scid=0x155, frame_length=64, fecf_present=False)


@settings(max_examples=400)
@given(st.binary(min_size=0, max_size=70), st.booleans())
def test_random_bytes_only_typed_errors(raw: bytes, fix_fecf: bool) -> None:
    # With a valid FECF appended (or no FECF at all) the random header reaches every check.
    for cfg, frame in ((CFG, append_fecf(raw) if fix_fecf else raw), (NO_FECF, raw)):
        try:
            parsed = TmFrame.from_bytes(frame, config=cfg)
        except RemoteProtocolError:
            continue
        assert parsed.to_bytes() == frame


# ---- OID fill ----------------------------------------------------------------------


def test_oid_fill_published_octets() -> None:
    # CCSDS 132.0-B-3 4.1.4.6.2.2 NOTE publishes the first ten octets of the sequence.
    assert OidFill().take(10) == bytes.fromhex("FFFFFFFF6DB6D861451F")


def lfsr_model(nbits: int) -> list[int]:
    """Bit-at-a-time Fibonacci register D0+D1+D2+D22+D32, cells 1..32, seed all ones."""
    cells = [1] * 32  # cells[0] is stage 1, cells[31] stage 32 (the output)
    out = []
    for _ in range(nbits):
        out.append(cells[31])
        feedback = cells[0] ^ cells[1] ^ cells[21] ^ cells[31]
        cells = [feedback, *cells[:31]]
    return out


def test_oid_fill_matches_bit_model_and_never_restarts() -> None:
    fill = OidFill()
    stream = fill.take(5) + fill.take(1) + fill.take(58)
    bits = lfsr_model(64 * 8)
    expected = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
    assert stream == expected


# ---- packetizer / multiplexer / depacketizer --------------------------------------

SMALL = TmChannelConfig(scid=0x2A, frame_length=200)  # data field 188 octets


def run_vc(config: TmChannelConfig, packets: list[bytes], *, vcid: int = 0) -> list[TmFrame]:
    """All the frames one VC needs for ``packets`` (last one padded with an idle packet)."""
    pz = TmPacketizer(config, vcid)
    for p in packets:
        pz.queue_packet(p)
    frames = []
    mc = 0
    while pz.pending_octets:
        frame = pz.next_frame(mc_count=mc, ocf=CLCW)
        assert frame is not None
        frames.append(frame)
        mc = (mc + 1) % 256
    return frames


def receive(config: TmChannelConfig, frames: list[bytes]) -> tuple[TmDepacketizer, list[TmEvent]]:
    rx = TmDepacketizer(config)
    for f in frames:
        rx.receive_frame(f)
    return rx, drain(rx)


def surviving(packets: list[bytes], capacity: int, lost_frames: set[int]) -> list[bytes]:
    """Model: a packet survives iff none of its octets was in a lost frame."""
    out, start = [], 0
    for p in packets:
        first, last = start // capacity, (start + len(p) - 1) // capacity
        if not any(k in lost_frames for k in range(first, last + 1)):
            out.append(p)
        start += len(p)
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_round_trip_random_sizes(sizes: list[int]) -> None:
    packets = make_packets(sizes)
    frames = run_vc(SMALL, packets)
    total = sum(map(len, packets))
    assert len(frames) == -(-total // SMALL.data_field_length) or len(frames) == (
        -(-(total + 7) // SMALL.data_field_length)
    )
    raw = [f.to_bytes() for f in frames]
    # spacepackets reads the frames too
    for f, r in zip(frames, raw, strict=True):
        theirs = oracle.TmTransferFrame.unpack(r, SMALL.frame_length, True)
        assert theirs.primary_header.frame_datafield_status.first_header_pointer == (
            f.first_header_pointer
        )
    rx, events = receive(SMALL, raw)
    assert packets_of(events) == packets
    assert not rx.drops
    # An idle packet pads the last frame unless the packets fill it exactly.
    exact_fit = total % SMALL.data_field_length == 0
    assert (rx.stats.idle_packets == 0) == exact_fit
    assert [e.ocf for e in events if isinstance(e, OcfReceived)] == [CLCW] * len(frames)


def test_first_header_pointers() -> None:
    # 188-octet data field: packet A 100 octets, B 3006 (spans 16 frames), C 10.
    packets = make_packets([94, 3000, 4])
    frames = run_vc(SMALL, packets)
    fhps = [f.first_header_pointer for f in frames]
    assert fhps[0] == 0  # A starts the stream
    # B starts at 100 in frame 0 and runs to octet 3106: frames 1..15 hold no header
    assert fhps[1:16] == [FHP_NO_PACKET_START] * 15
    assert fhps[16] == 3106 - 16 * 188  # C starts where B ends
    _rx, events = receive(SMALL, [f.to_bytes() for f in frames])
    assert packets_of(events) == packets


@pytest.mark.parametrize("lost", [0, 1, 3, 7, 14])
def test_frame_loss_in_the_middle(lost: int) -> None:
    sizes = [50, 400, 20, 20, 20, 900, 5, 5, 300, 1000, 60, 70]
    packets = make_packets(sizes)
    frames = run_vc(SMALL, packets)
    raw = [f.to_bytes() for k, f in enumerate(frames) if k != lost]
    rx, events = receive(SMALL, raw)
    expected = surviving(packets, SMALL.data_field_length, {lost})
    assert packets_of(events) == expected
    assert len(expected) < len(packets)
    lost_events = [e for e in events if isinstance(e, FramesLost)]
    if lost == 0:
        assert lost_events == []  # nothing before it to notice a gap from
    else:
        assert lost_events == [
            FramesLost(vcid=None, expected=lost, got=lost + 1, missing=1),
            FramesLost(vcid=0, expected=lost, got=lost + 1, missing=1),
        ]
        assert rx.stats.frames_lost == 1
        # The packet running into the lost frame (if any) is discarded as "frames-lost".
        boundaries = {sum(map(len, packets[:i])) for i in range(len(packets) + 1)}
        mid_packet = lost * SMALL.data_field_length not in boundaries
        drops = [e for e in events if isinstance(e, Dropped)]
        assert [d.reason for d in drops] == (["frames-lost"] if mid_packet else [])


def test_two_frames_lost_counts() -> None:
    packets = make_packets([200] * 20)
    frames = run_vc(SMALL, packets)
    raw = [f.to_bytes() for k, f in enumerate(frames) if k not in (4, 5)]
    _rx, events = receive(SMALL, raw)
    assert packets_of(events) == surviving(packets, SMALL.data_field_length, {4, 5})
    assert FramesLost(vcid=0, expected=4, got=6, missing=2) in events


def test_corrupted_frame() -> None:
    packets = make_packets([150, 150, 150, 150, 150, 150])
    frames = [f.to_bytes() for f in run_vc(SMALL, packets)]
    bad = bytearray(frames[2])
    bad[77] ^= 0x10
    frames[2] = bytes(bad)
    rx, events = receive(SMALL, frames)
    assert packets_of(events) == surviving(packets, SMALL.data_field_length, {2})
    drops = [e for e in events if isinstance(e, Dropped)]
    assert drops[0].reason == "fecf-mismatch"
    assert FramesLost(vcid=0, expected=2, got=3, missing=1) in events
    assert rx.drops["tm-frame/fecf-mismatch"] == 1


def test_corrupted_length_without_fecf_is_caught_by_fhp() -> None:
    # No FECF: a corrupted packet length in frame 0 disagrees with frame 1's FHP.
    cfg = TmChannelConfig(scid=1, frame_length=106, fecf_present=False, ocf_present=False)
    assert cfg.data_field_length == 100
    packets = make_packets([144, 24, 24])  # 150 + 30 + 30 octets
    pz = TmPacketizer(cfg, 0)
    for p in packets:
        pz.queue_packet(p)
    built = [pz.next_frame(mc_count=k) for k in range(3)]
    frames = [f.to_bytes() for f in built if f is not None]
    assert built[1] is not None and built[1].first_header_pointer == 50
    bad = bytearray(frames[0])
    bad[6 + 5] += 10  # packet 0's length field: 160 octets instead of 150
    frames[0] = bytes(bad)
    _rx, events = receive(cfg, frames)
    assert packets_of(events) == packets[1:]
    assert [e.reason for e in events if isinstance(e, Dropped)] == ["fhp-mismatch"]


def test_counter_wrap_at_256() -> None:
    packets = make_packets([180] * 300)  # 186-octet packets: about 297 frames
    frames = run_vc(SMALL, packets)
    assert len(frames) > 260
    assert [f.mc_count for f in frames[254:258]] == [254, 255, 0, 1]
    assert [f.vc_count for f in frames[254:258]] == [254, 255, 0, 1]
    _rx, events = receive(SMALL, [f.to_bytes() for f in frames])
    assert packets_of(events) == packets
    assert not any(isinstance(e, FramesLost) for e in events)
    # Losing the frame counted 255 is seen across the wrap.
    raw = [f.to_bytes() for k, f in enumerate(frames) if k != 255]
    _rx, events = receive(SMALL, raw)
    assert FramesLost(vcid=0, expected=255, got=0, missing=1) in events
    assert packets_of(events) == surviving(packets, SMALL.data_field_length, {255})


def test_idle_packet_pads_a_partial_frame() -> None:
    pz = TmPacketizer(SMALL, 2)
    [packet] = make_packets([10])
    pz.queue_packet(packet)
    frame = pz.next_frame(mc_count=0, ocf=CLCW)
    assert frame is not None and frame.first_header_pointer == 0
    assert frame.data[:16] == packet
    idle = SpacePacket.from_bytes(frame.data[16:])
    assert idle.is_idle and len(frame.data) - 16 == 188 - 16
    assert pz.pending_octets == 0
    assert pz.next_frame(mc_count=1, ocf=CLCW) is None  # nothing waits on this VC


def test_idle_packet_spills_when_room_is_short() -> None:
    pz = TmPacketizer(SMALL, 0)
    [packet] = make_packets([188 - 6 - 3])  # leaves 3 octets: too few for an idle packet
    pz.queue_packet(packet)
    first = pz.next_frame(mc_count=0, ocf=CLCW)
    assert first is not None and pz.pending_octets == 4  # 7-octet idle packet, 3 sent
    second = pz.next_frame(mc_count=1, ocf=CLCW)
    assert second is not None and second.first_header_pointer == 4
    rx, events = receive(SMALL, [first.to_bytes(), second.to_bytes()])
    assert packets_of(events) == [packet]
    assert rx.stats.idle_packets == 2 and not rx.drops


def test_flush_false_waits_for_a_full_frame() -> None:
    pz = TmPacketizer(SMALL, 0)
    small = make_packets([50])
    pz.queue_packet(small[0])
    assert pz.next_frame(mc_count=0, ocf=CLCW, flush=False) is None
    assert pz.pending_octets == 56
    for p in make_packets([100, 100]):
        pz.queue_packet(p)
    frame = pz.next_frame(mc_count=0, ocf=CLCW, flush=False)
    assert frame is not None and frame.first_header_pointer == 0
    assert pz.pending_octets == 56 + 212 - 188


def test_multiplexer_oid_frames_carry_the_ocf() -> None:
    mux = TmMultiplexer(SMALL, vcids=(0, 1))
    fill = OidFill()
    clcws = [Clcw(vcid=0, report_value=n).to_int() for n in range(3)]
    frames = [mux.next_frame(ocf=c) for c in clcws]
    for n, f in enumerate(frames):
        assert f.vcid == 7 and f.first_header_pointer == FHP_IDLE_ONLY and f.is_idle
        assert f.mc_count == n and f.vc_count == n
        assert f.ocf == clcws[n]
        assert f.data == fill.take(SMALL.data_field_length)  # LFSR runs on across frames
    rx, events = receive(SMALL, [f.to_bytes() for f in frames])
    assert events == [OcfReceived(vcid=7, ocf=c) for c in clcws]
    assert rx.stats.oid_frames == 3


def test_multiplexer_counts_and_round_robin() -> None:
    mux = TmMultiplexer(SMALL, vcids=(0, 1))
    a = make_packets([400], apid=1)[0]
    b = make_packets([400], apid=2)[0]
    mux.queue_packet(0, a)
    mux.queue_packet(1, b)
    frames = [mux.next_frame(ocf=CLCW) for _ in range(8)]
    assert [f.mc_count for f in frames] == list(range(8))
    assert [f.vcid for f in frames] == [0, 1, 0, 1, 0, 1, 7, 7]
    assert [f.vc_count for f in frames] == [0, 0, 1, 1, 2, 2, 0, 1]
    _rx, events = receive(SMALL, [f.to_bytes() for f in frames])
    assert sorted(packets_of(events)) == sorted([a, b])
    assert [e for e in events if isinstance(e, PacketReceived)] == [
        PacketReceived(vcid=0, packet=a),
        PacketReceived(vcid=1, packet=b),
    ]
    assert not any(isinstance(e, FramesLost) for e in events)


def test_multiplexer_loss_on_one_vc() -> None:
    mux = TmMultiplexer(SMALL, vcids=(0, 1))
    pa = make_packets([300, 300], apid=1)
    pb = make_packets([300, 300], apid=2)
    for p in pa:
        mux.queue_packet(0, p)
    for p in pb:
        mux.queue_packet(1, p)
    frames = [mux.next_frame(ocf=CLCW) for _ in range(8)]
    assert [f.vcid for f in frames] == [0, 1, 0, 1, 0, 1, 0, 1]
    lost = 2  # VC 0's second frame
    _rx, events = receive(SMALL, [f.to_bytes() for k, f in enumerate(frames) if k != lost])
    assert FramesLost(vcid=None, expected=2, got=3, missing=1) in events
    assert FramesLost(vcid=0, expected=1, got=2, missing=1) in events
    got0 = [e.packet for e in events if isinstance(e, PacketReceived) and e.vcid == 0]
    got1 = [e.packet for e in events if isinstance(e, PacketReceived) and e.vcid == 1]
    assert got1 == pb
    assert got0 == surviving(pa, SMALL.data_field_length, {1})


def test_multiplexer_flush_false_sends_oid_meanwhile() -> None:
    mux = TmMultiplexer(SMALL, vcids=(0,))
    mux.queue_packet(0, make_packets([20])[0])
    assert mux.next_frame(ocf=CLCW, flush=False).is_idle
    assert not mux.next_frame(ocf=CLCW).is_idle


def test_ocf_presence_is_enforced() -> None:
    mux = TmMultiplexer(SMALL)
    with pytest.raises(LocalProtocolError):
        mux.next_frame()
    no_ocf = TmMultiplexer(TmChannelConfig(scid=1, frame_length=100, ocf_present=False))
    with pytest.raises(LocalProtocolError):
        no_ocf.next_frame(ocf=0)
    assert no_ocf.next_frame().ocf is None
    with pytest.raises(LocalProtocolError):
        mux.queue_packet(5, make_packets([3])[0])  # not a VC of this master channel


@pytest.mark.parametrize("bad", [b"", b"\x00" * 6, bytes.fromhex("0001c0000005") + b"ab"])
def test_packetizer_rejects_non_packets(bad: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        TmPacketizer(SMALL, 0).queue_packet(bad)


def test_receiver_joins_mid_stream() -> None:
    packets = make_packets([500, 30, 30, 30])
    frames = run_vc(SMALL, packets)
    assert frames[1].first_header_pointer == FHP_NO_PACKET_START
    rx, events = receive(SMALL, [f.to_bytes() for f in frames[1:]])
    assert packets_of(events) == packets[1:]
    assert not rx.drops and rx.stats.octets_skipped > 0


def test_trailing_garbage_frame_is_dropped() -> None:
    frames = [f.to_bytes() for f in run_vc(SMALL, make_packets([20]))]
    rx, events = receive(SMALL, [frames[0] + b"\x00"])
    assert [type(e) for e in events] == [Dropped]
    assert rx.drops == {"tm-frame/length-mismatch": 1}


def test_idle_packets_inside_frames_are_silent() -> None:
    # A stream of only idle packets: nothing delivered, nothing dropped.
    pz = TmPacketizer(SMALL, 0)
    for n in (7, 100, 400):
        pz.queue_packet(idle_packet(n).to_bytes())
    frames = [pz.next_frame(mc_count=k, ocf=CLCW) for k in range(3)]
    rx, events = receive(SMALL, [f.to_bytes() for f in frames if f is not None])
    assert packets_of(events) == [] and not rx.drops
    assert rx.stats.idle_packets >= 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=210), max_size=6))
def test_depacketizer_random_frames_never_raise(blobs: list[bytes]) -> None:
    rx = TmDepacketizer(SMALL)
    for blob in blobs:
        rx.receive_frame(blob)
    for event in drain(rx):
        assert isinstance(event, Dropped)


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False))
def test_depacketizer_random_valid_frames_deliver_only_whole_packets(rng: random.Random) -> None:
    # Frames that pass every frame check but carry random packet data: whatever comes
    # out must at least be a self-consistent Space Packet.
    rx = TmDepacketizer(SMALL)
    for k in range(8):
        fhp = rng.choice([0, 5, 100, 187, FHP_NO_PACKET_START, FHP_IDLE_ONLY])
        frame = TmFrame(
            scid=SMALL.scid,
            vcid=rng.randrange(2),
            mc_count=k,
            vc_count=rng.randrange(256),
            first_header_pointer=fhp,
            data=rng.randbytes(SMALL.data_field_length),
            ocf=0,
        )
        rx.receive_frame(frame.to_bytes())
    for event in drain(rx):
        if isinstance(event, PacketReceived):
            packet = event.packet
            assert len(packet) == 6 + ((packet[4] << 8) | packet[5]) + 1
            assert packet[0] >> 5 == 0


def test_mature_link_session() -> None:
    # Packets arrive a few at a time; every frame release carries the latest CLCW.
    mux = TmMultiplexer(SMALL, vcids=(0,))
    rx = TmDepacketizer(SMALL)
    seq = PacketSequencer(packet_type=PacketType.TM)
    rng = random.Random(7)
    sent: list[bytes] = []
    for tick in range(60):
        if rng.random() < 0.5:
            p = seq.packet(9, rng.randbytes(rng.randint(1, 400))).to_bytes()
            mux.queue_packet(0, p)
            sent.append(p)
        rx.receive_frame(mux.next_frame(ocf=Clcw(vcid=0, report_value=tick).to_int()).to_bytes())
    while mux.pending_octets:
        rx.receive_frame(mux.next_frame(ocf=CLCW).to_bytes())
    events = drain(rx)
    assert packets_of(events) == sent
    assert not rx.drops
    assert sum(isinstance(e, OcfReceived) for e in events) == rx.stats.frames
