"""TC Transfer Frames, control commands, segmentation and reassembly (CCSDS 232.0-B-4)."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacepackets.ccsds.spacepacket import PacketType, SpacePacket, SpacePacketHeader

from linkstack.errors import (
    DecodeError,
    Dropped,
    FecfMismatch,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.tc.frame import (
    BypassFlag,
    ControlCommandFlag,
    FrameType,
    SegmentHeader,
    SequenceFlags,
    SetVR,
    TcFrame,
    TcVcConfig,
    Unlock,
    decode_control_command,
    peek_frame_length,
    peek_vcid,
)
from linkstack.tc.segments import (
    FrameDataUnit,
    TcReassembler,
    UnitReceived,
    block_packets,
    packet_processing,
    segment_sdu,
    split_packets,
)

# -- independent models, written here from the bit layout of 232.0-B-4 4.1.2 -----------


def crc16_bitwise(data: bytes) -> int:
    """CRC-16-CCITT one bit at a time: poly 0x1021, preset 0xFFFF, no reflection, no xor.

    Independent of crcmod; CCSDS 232.0-B-4 4.1.4.2.
    """
    crc = 0xFFFF
    for octet in data:
        for i in range(7, -1, -1):
            feedback = ((crc >> 15) & 1) ^ ((octet >> i) & 1)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x1021
    return crc


def test_bitwise_crc_model_check_value() -> None:
    # Check value of CRC-16/CCITT-FALSE, the code the FECF uses (CRC RevEng catalogue,
    # reveng.sourceforge.io/crc-catalogue, CRC-16/IBM-3740).
    assert crc16_bitwise(b"123456789") == 0x29B1


def pack_header(
    *,
    tfvn: int = 0,
    bypass: int,
    control: int,
    spare: int = 0,
    scid: int,
    vcid: int,
    total_length: int,
    ns: int,
) -> bytes:
    """The 40-bit primary header written out bit by bit (232.0-B-4 4.1.2, figure 4-2)."""
    bits = (
        (tfvn << 38)  # bits 0-1   Transfer Frame Version Number
        | (bypass << 37)  # bit 2      Bypass Flag
        | (control << 36)  # bit 3      Control Command Flag
        | (spare << 34)  # bits 4-5   Reserved Spare
        | (scid << 24)  # bits 6-15  Spacecraft Identifier
        | (vcid << 18)  # bits 16-21 Virtual Channel Identifier
        | ((total_length - 1) << 8)  # bits 22-31 Frame Length (total - 1)
        | ns  # bits 32-39 Frame Sequence Number
    )
    return bits.to_bytes(5, "big")


def hand_frame(
    *,
    bypass: int,
    control: int,
    scid: int,
    vcid: int,
    ns: int,
    field: bytes,
    fecf: bool,
    tfvn: int = 0,
    spare: int = 0,
    length_delta: int = 0,
) -> bytes:
    """A frame built without the module: header model + data field + bitwise CRC."""
    total = 5 + len(field) + (2 if fecf else 0)
    body = (
        pack_header(
            tfvn=tfvn,
            bypass=bypass,
            control=control,
            spare=spare,
            scid=scid,
            vcid=vcid,
            total_length=total + length_delta,
            ns=ns,
        )
        + field
    )
    return body + crc16_bitwise(body).to_bytes(2, "big") if fecf else body


def make_packet(apid: int, seq: int, user_data: bytes) -> bytes:
    """A TC Space Packet built by the spacepackets package (independent of this module)."""
    header = SpacePacketHeader(
        packet_type=PacketType.TC, apid=apid, seq_count=seq, data_len=len(user_data) - 1
    )
    return bytes(SpacePacket(sp_header=header, sec_header=None, user_data=user_data).pack())


VC = TcVcConfig(scid=0x1AB, vcid=0x15)  # FECF on (Yamcs default), no Segment Header
VC_NO_FECF = TcVcConfig(scid=0x1AB, vcid=0x15, fecf_present=False)
VC_MAP = TcVcConfig(scid=0x1AB, vcid=0x15, segment_header=True)


# -- byte-exact known answers -------------------------------------------------------------


def test_ad_frame_known_answer() -> None:
    data = bytes.fromhex("DEADBEEF")
    frame = TcFrame.data_frame(VC, data, bypass=BypassFlag.TYPE_A, sequence_number=0x42)
    # By hand: TFVN 00, B 0, C 0, spare 00, SCID 01 1010 1011 -> 0x01AB;
    # VCID 010101, Frame Length 11-1 = 00 0000 1010 -> 0x540A; N(S) 0x42.
    header = bytes.fromhex("01AB540A42")
    assert header == pack_header(
        bypass=0, control=0, scid=0x1AB, vcid=0x15, total_length=11, ns=0x42
    )
    expected = header + data + crc16_bitwise(header + data).to_bytes(2, "big")
    assert frame.to_bytes() == expected
    assert frame.frame_type is FrameType.AD
    assert frame.frame_length == 11
    assert peek_frame_length(expected) == 11
    assert peek_vcid(expected) == 0x15
    assert TcFrame.from_bytes(expected, config=VC) == frame


def test_bd_frame_with_segment_header_known_answer() -> None:
    vc = TcVcConfig(scid=0x3FF, vcid=0x3F, segment_header=True, fecf_present=False)
    frame = TcFrame.data_frame(
        vc,
        b"\x01\x02",
        bypass=BypassFlag.TYPE_B,
        sequence_number=0,
        segment_header=SegmentHeader(SequenceFlags.FIRST, 0x2A),
    )
    # Segment Header: flags 01, MAP ID 101010 -> 0x6A (232.0-B-4 4.1.3.2.2).
    expected = pack_header(bypass=1, control=0, scid=0x3FF, vcid=0x3F, total_length=8, ns=0)
    expected += b"\x6a\x01\x02"
    assert expected.hex() == "23fffc07006a0102"
    assert frame.to_bytes() == expected
    assert frame.frame_type is FrameType.BD
    assert TcFrame.from_bytes(expected, config=vc) == frame


# Provenance: BC frames Unlock = 0x00, Set V(R) = 0x82 0x00 V(R) as two implementations
# write them (Yamcs Cop1TcPacketHandler: data = {0x82, 0, vR}; dariol83 TcTransferFrameBuilder:
# setUnlockControlCommand = {0x00}).  Yamcs TcFrameFactory.encodeFrame writes
# w0 = SCID + (1 << 13) + (1 << 12), w1 = (VCID << 10) + (length - 1), octet 4 = N(S),
# which stays 0 for BC frames.  SCID 0x123, VCID 2 below.
@pytest.mark.parametrize(
    ("command", "expected_hex"),
    [
        (Unlock(), "312308050000"),
        (SetVR(0x7F), "3123080700" + "82007f"),
        (SetVR(0), "3123080700" + "820000"),
        (SetVR(255), "3123080700" + "8200ff"),
    ],
)
def test_control_frames_known_answers(command: Unlock | SetVR, expected_hex: str) -> None:
    vc = TcVcConfig(scid=0x123, vcid=2, fecf_present=False)
    frame = TcFrame.control_frame(vc, command)
    assert frame.to_bytes().hex() == expected_hex
    assert frame.frame_type is FrameType.BC
    assert frame.sequence_number == 0
    assert frame.command == command
    assert TcFrame.from_bytes(bytes.fromhex(expected_hex), config=vc) == frame
    # With the FECF: same header but two more octets in the length, CRC by the bit model.
    vc_fecf = TcVcConfig(scid=0x123, vcid=2)
    with_fecf = TcFrame.control_frame(vc_fecf, command).to_bytes()
    field = command.to_bytes()
    assert with_fecf == hand_frame(
        bypass=1, control=1, scid=0x123, vcid=2, ns=0, field=field, fecf=True
    )


def test_control_command_codec() -> None:
    assert decode_control_command(b"\x00") == Unlock()
    assert decode_control_command(b"\x82\x00\x05") == SetVR(5)
    assert Unlock.from_bytes(b"\x00") == Unlock()
    assert SetVR.from_bytes(b"\x82\x00\x05") == SetVR(5)
    for bad in [b"\x01", b"\x00\x00", b"\x82\x00", b"\x82\x01\x05", b"\x83\x00\x05", b"\x82"]:
        with pytest.raises(DecodeError) as info:
            decode_control_command(bad)
        assert info.value.reason == "bad-control-command"
        assert info.value.layer is Layer.TC_FRAME
    with pytest.raises(DecodeError, match="truncated"):
        decode_control_command(b"")
    with pytest.raises(DecodeError, match="bad-control-command"):
        Unlock.from_bytes(b"\x82\x00\x05")
    with pytest.raises(DecodeError, match="bad-control-command"):
        SetVR.from_bytes(b"\x00")
    with pytest.raises(LocalProtocolError, match="V\\(R\\) 256"):
        SetVR(256)


def test_segment_header_all_octets() -> None:
    for octet in range(256):
        header = SegmentHeader.from_bytes(bytes([octet]))
        assert header.sequence_flags == octet >> 6
        assert header.map_id == octet & 0x3F
        assert header.to_bytes() == bytes([octet])
    # 232.0-B-4 4.1.3.2.2.2: 01 first, 00 continuation, 10 last, 11 no segmentation.
    assert int(SequenceFlags.FIRST) == 0b01
    assert int(SequenceFlags.CONTINUATION) == 0b00
    assert int(SequenceFlags.LAST) == 0b10
    assert int(SequenceFlags.UNSEGMENTED) == 0b11
    with pytest.raises(DecodeError, match="truncated"):
        SegmentHeader.from_bytes(b"")
    with pytest.raises(LocalProtocolError, match="MAP ID 64"):
        SegmentHeader(SequenceFlags.FIRST, 64)


# -- typed errors on receipt --------------------------------------------------------------


def _reason(data: bytes, config: TcVcConfig = VC) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        TcFrame.from_bytes(data, config=config)
    assert info.value.layer is Layer.TC_FRAME
    return info.value.reason


GOOD = dict(bypass=0, control=0, scid=0x1AB, vcid=0x15, ns=7, field=b"abc", fecf=True)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"tfvn": 1}, "bad-version"),
        ({"tfvn": 3}, "bad-version"),
        ({"spare": 2}, "bad-spare"),
        ({"bypass": 0, "control": 1}, "bad-frame-type"),
        ({"scid": 0x1AA}, "wrong-scid"),
        ({"vcid": 0x14}, "wrong-vcid"),
        ({"bypass": 1, "ns": 1}, "bad-sequence-number"),
        ({"bypass": 1, "control": 1, "ns": 0, "field": b"\x01"}, "bad-control-command"),
        ({"bypass": 1, "control": 1, "ns": 5, "field": b"\x00"}, "bad-sequence-number"),
        ({"field": b""}, "empty-data-field"),
        ({"length_delta": 1}, "length-mismatch"),
        ({"length_delta": -1}, "length-mismatch"),
    ],
)
def test_decode_reasons(changes: dict[str, int | bytes], reason: str) -> None:
    fields = {**GOOD, **changes}
    assert _reason(hand_frame(**fields)) == reason  # type: ignore[arg-type]


def test_decode_truncated_oversize_and_garbage() -> None:
    assert _reason(b"") == "truncated"
    assert _reason(b"\x01\xab\x54\x0a") == "truncated"
    with pytest.raises(DecodeError, match="truncated"):
        peek_frame_length(b"\x00\x00\x00\x00")
    with pytest.raises(DecodeError, match="truncated"):
        peek_vcid(b"\x00")
    small = TcVcConfig(scid=0x1AB, vcid=0x15, max_frame_length=20)
    assert _reason(hand_frame(**{**GOOD, "field": bytes(14)}), small) == "oversize"  # type: ignore[arg-type]
    assert TcFrame.from_bytes(hand_frame(**{**GOOD, "field": bytes(13)}), config=small)  # type: ignore[arg-type]
    # A Segment Header VC: a Type-D frame whose data field is only the Segment Header.
    only_header = hand_frame(**{**GOOD, "field": b"\xc0"})  # type: ignore[arg-type]
    assert _reason(only_header, VC_MAP) == "empty-data-field"
    # Trailing garbage: the caller slices by the Frame Length field first.
    frame = TcFrame.data_frame(VC, b"xyz", bypass=BypassFlag.TYPE_A, sequence_number=1)
    wire = frame.to_bytes() + b"\x55\x55\x55"
    assert _reason(wire) == "fecf-mismatch"  # FECF is checked before any field
    assert TcFrame.from_bytes(wire[: peek_frame_length(wire)], config=VC) == frame
    plain = TcFrame.data_frame(VC_NO_FECF, b"xyz", bypass=BypassFlag.TYPE_A, sequence_number=1)
    assert _reason(plain.to_bytes() + b"\x55", VC_NO_FECF) == "length-mismatch"


def test_fecf_single_bit_flips() -> None:
    frames = [
        TcFrame.data_frame(VC, bytes(range(40)), bypass=BypassFlag.TYPE_A, sequence_number=200),
        TcFrame.control_frame(VC, SetVR(9)),
        TcFrame.data_frame(
            VC_MAP,
            b"\xff" * 7,
            bypass=BypassFlag.TYPE_B,
            sequence_number=0,
            segment_header=SegmentHeader(SequenceFlags.LAST, 3),
        ),
    ]
    configs = [VC, VC, VC_MAP]
    for frame, config in zip(frames, configs, strict=True):
        wire = frame.to_bytes()
        for bit in range(len(wire) * 8):
            corrupted = bytearray(wire)
            corrupted[bit // 8] ^= 0x80 >> (bit % 8)
            with pytest.raises(FecfMismatch) as info:
                TcFrame.from_bytes(bytes(corrupted), config=config)
            assert info.value.reason == "fecf-mismatch"
            assert info.value.layer is Layer.TC_FRAME


# -- refusals on build ---------------------------------------------------------------------


def test_build_refusals() -> None:
    with pytest.raises(LocalProtocolError, match="Type-AC"):
        TcFrame(
            scid=1,
            vcid=1,
            bypass=BypassFlag.TYPE_A,
            control_command=ControlCommandFlag.TYPE_C,
            sequence_number=0,
            data=b"\x00",
        )
    with pytest.raises(LocalProtocolError, match="N\\(S\\) 3 in a Type-B"):
        TcFrame.data_frame(VC, b"x", bypass=BypassFlag.TYPE_B, sequence_number=3)
    with pytest.raises(LocalProtocolError, match="N\\(S\\) 256"):
        TcFrame.data_frame(VC, b"x", bypass=BypassFlag.TYPE_A, sequence_number=256)
    with pytest.raises(LocalProtocolError, match="SCID 1024"):
        TcFrame(
            scid=1024,
            vcid=0,
            bypass=BypassFlag.TYPE_A,
            control_command=ControlCommandFlag.TYPE_D,
            sequence_number=0,
            data=b"x",
        )
    with pytest.raises(LocalProtocolError, match="1018 octets of data exceed the 1017"):
        TcFrame.data_frame(VC, bytes(1018), bypass=BypassFlag.TYPE_A, sequence_number=0)
    assert TcFrame.data_frame(VC, bytes(1017), bypass=BypassFlag.TYPE_A, sequence_number=0)
    with pytest.raises(LocalProtocolError, match="1025 octets > 1024"):
        TcFrame(
            scid=0,
            vcid=0,
            bypass=BypassFlag.TYPE_A,
            control_command=ControlCommandFlag.TYPE_D,
            sequence_number=0,
            data=bytes(1018),
        )
    with pytest.raises(LocalProtocolError, match="uses the Segment Header"):
        TcFrame.data_frame(VC_MAP, b"x", bypass=BypassFlag.TYPE_A, sequence_number=0)
    with pytest.raises(LocalProtocolError, match="has no Segment Header"):
        TcFrame.data_frame(
            VC,
            b"x",
            bypass=BypassFlag.TYPE_A,
            sequence_number=0,
            segment_header=SegmentHeader(SequenceFlags.UNSEGMENTED, 0),
        )
    with pytest.raises(LocalProtocolError, match="never a Segment Header"):
        TcFrame(
            scid=0,
            vcid=0,
            bypass=BypassFlag.TYPE_B,
            control_command=ControlCommandFlag.TYPE_C,
            sequence_number=0,
            data=b"\x00",
            segment_header=SegmentHeader(SequenceFlags.UNSEGMENTED, 0),
        )
    with pytest.raises(LocalProtocolError, match="neither Unlock nor Set V"):
        TcFrame(
            scid=0,
            vcid=0,
            bypass=BypassFlag.TYPE_B,
            control_command=ControlCommandFlag.TYPE_C,
            sequence_number=0,
            data=b"\x01",
        )


def test_config_validation() -> None:
    with pytest.raises(LocalProtocolError, match="SCID 1024"):
        TcVcConfig(scid=1024, vcid=0)
    with pytest.raises(LocalProtocolError, match="VCID 64"):
        TcVcConfig(scid=0, vcid=64)
    with pytest.raises(LocalProtocolError, match="max_frame_length 1025"):
        TcVcConfig(scid=0, vcid=0, max_frame_length=1025)
    with pytest.raises(LocalProtocolError, match=r"max_frame_length 9 outside 10\.\.1024"):
        TcVcConfig(scid=0, vcid=0, max_frame_length=9)
    assert TcVcConfig(scid=0, vcid=0, fecf_present=False, max_frame_length=8)
    assert VC.max_data_field_length == 1017
    assert VC.max_user_data_length == 1017
    assert VC_MAP.max_user_data_length == 1016
    assert VC_NO_FECF.max_user_data_length == 1019


# -- Hypothesis round trips and fuzz ----------------------------------------------------


@st.composite
def vc_configs(draw: st.DrawFn) -> TcVcConfig:
    fecf = draw(st.booleans())
    segment = draw(st.booleans())
    minimum = 5 + (2 if fecf else 0) + 3
    return TcVcConfig(
        scid=draw(st.integers(0, 0x3FF)),
        vcid=draw(st.integers(0, 0x3F)),
        fecf_present=fecf,
        segment_header=segment,
        max_frame_length=draw(st.integers(minimum, 1024)),
    )


@st.composite
def frames(draw: st.DrawFn) -> tuple[TcVcConfig, TcFrame]:
    config = draw(vc_configs())
    kind = draw(st.sampled_from(FrameType))
    if kind is FrameType.BC:
        command: Unlock | SetVR = draw(
            st.one_of(st.just(Unlock()), st.builds(SetVR, st.integers(0, 255)))
        )
        return config, TcFrame.control_frame(config, command)
    header = (
        draw(st.builds(SegmentHeader, st.sampled_from(SequenceFlags), st.integers(0, 63)))
        if config.segment_header
        else None
    )
    data = draw(st.binary(min_size=1, max_size=min(config.max_user_data_length, 200)))
    bypass = BypassFlag.TYPE_A if kind is FrameType.AD else BypassFlag.TYPE_B
    ns = draw(st.integers(0, 255)) if kind is FrameType.AD else 0
    frame = TcFrame.data_frame(
        config, data, bypass=bypass, sequence_number=ns, segment_header=header
    )
    return config, frame


@settings(max_examples=300)
@given(frames())
def test_frame_round_trip(case: tuple[TcVcConfig, TcFrame]) -> None:
    config, frame = case
    wire = frame.to_bytes()
    assert len(wire) == frame.frame_length == peek_frame_length(wire)
    assert peek_vcid(wire) == config.vcid
    assert TcFrame.from_bytes(wire, config=config) == frame


@settings(max_examples=100)
@given(st.sampled_from(SequenceFlags), st.integers(0, 63))
def test_segment_header_round_trip(flags: SequenceFlags, map_id: int) -> None:
    header = SegmentHeader(flags, map_id)
    assert SegmentHeader.from_bytes(header.to_bytes()) == header


@settings(max_examples=100)
@given(st.one_of(st.just(Unlock()), st.builds(SetVR, st.integers(0, 255))))
def test_control_command_round_trip(command: Unlock | SetVR) -> None:
    assert decode_control_command(command.to_bytes()) == command


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(vc_configs(), st.binary(max_size=64), st.booleans())
def test_random_bytes_give_only_typed_errors(
    config: TcVcConfig, data: bytes, add_fecf: bool
) -> None:
    # Appending a valid FECF gets random headers past the CRC to the field checks.
    if add_fecf and config.fecf_present:
        data += crc16_bitwise(data).to_bytes(2, "big")
    try:
        frame = TcFrame.from_bytes(data, config=config)
    except RemoteProtocolError as exc:
        assert exc.layer is Layer.TC_FRAME
    else:
        assert frame.to_bytes() == data
    for parser in (decode_control_command, SegmentHeader.from_bytes, split_packets):
        with contextlib.suppress(RemoteProtocolError):
            parser(data)
    for peek in (peek_frame_length, peek_vcid):
        with contextlib.suppress(RemoteProtocolError):
            peek(data)


@settings(max_examples=200)
@given(
    st.integers(0, 0x3F),
    st.integers(0, 0xFF),
    st.binary(min_size=1, max_size=40),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_random_headers_with_valid_fecf(
    vcid: int, ns: int, field: bytes, bypass_control: int, tfvn_spare: int
) -> None:
    """Frames with a good CRC but random flag/version bits give exactly the expected reason."""
    bypass, control = bypass_control >> 1, bypass_control & 1
    tfvn, spare = tfvn_spare >> 1, tfvn_spare & 1
    wire = hand_frame(
        tfvn=tfvn,
        spare=spare,
        bypass=bypass,
        control=control,
        scid=0x1AB,
        vcid=vcid,
        ns=ns,
        field=field,
        fecf=True,
    )
    expected = None
    if tfvn:
        expected = "bad-version"
    elif spare:
        expected = "bad-spare"
    elif vcid != VC.vcid:
        expected = "wrong-vcid"
    elif (bypass, control) == (0, 1):
        expected = "bad-frame-type"
    elif bypass and ns:
        expected = "bad-sequence-number"
    elif control:
        try:
            decode_control_command(field)
        except DecodeError as exc:
            expected = exc.reason
    if expected is None:
        assert TcFrame.from_bytes(wire, config=VC).to_bytes() == wire
    else:
        assert _reason(wire) == expected


# -- segmentation and reassembly -------------------------------------------------------


def _through_wire(fdus: list[FrameDataUnit], config: TcVcConfig) -> list[TcFrame]:
    out = []
    for n, fdu in enumerate(fdus):
        wire = fdu.to_frame(config, bypass=BypassFlag.TYPE_A, sequence_number=n % 256).to_bytes()
        assert len(wire) <= config.max_frame_length
        out.append(TcFrame.from_bytes(wire, config=config))
    return out


def _events(engine: TcReassembler) -> list[UnitReceived | Dropped]:
    out = []
    while (event := engine.next_event()) is not None:
        out.append(event)
    return out


def _check_sizes(config: TcVcConfig, sizes: list[int]) -> None:
    rng = random.Random(1)
    capacity = config.max_user_data_length
    engine = TcReassembler()
    for size in sizes:
        sdu = rng.randbytes(size)
        fdus = segment_sdu(sdu, config=config, map_id=9)
        expected_frames = 1 if size <= capacity else -(-size // capacity)
        assert len(fdus) == expected_frames
        flags = [fdu.segment_header.sequence_flags for fdu in fdus if fdu.segment_header]
        if expected_frames == 1:
            assert flags == [SequenceFlags.UNSEGMENTED]
        else:
            assert flags[0] is SequenceFlags.FIRST
            assert flags[-1] is SequenceFlags.LAST
            assert set(flags[1:-1]) <= {SequenceFlags.CONTINUATION}
            assert all(len(fdu.data) == capacity for fdu in fdus[:-1])
        for frame in _through_wire(fdus, config):
            engine.receive_frame(frame)
        assert _events(engine) == [
            UnitReceived(vcid=config.vcid, map_id=9, data=sdu, segments=expected_frames)
        ]
    assert not engine.drops


def test_segmentation_round_trip_1_to_5000_at_1024() -> None:
    _check_sizes(VC_MAP, list(range(1, 5001)))


@pytest.mark.parametrize("max_frame_length", [11, 64, 300, 1023])
def test_segmentation_round_trip_smaller_frames(max_frame_length: int) -> None:
    config = TcVcConfig(scid=5, vcid=1, segment_header=True, max_frame_length=max_frame_length)
    capacity = config.max_user_data_length
    step = max(1, 5000 // 150)
    edges = [n * capacity + d for n in range(1, 5) for d in (-1, 0, 1)]
    sizes = sorted({*range(1, 5001, step), 5000, *edges})
    if max_frame_length == 11:  # 3 octets per frame: keep it short
        sizes = [s for s in sizes if s <= 400]
    _check_sizes(config, sizes)


def _segmented(sdu: bytes, config: TcVcConfig, map_id: int) -> list[TcFrame]:
    return _through_wire(segment_sdu(sdu, config=config, map_id=map_id), config)


def test_reassembler_lost_first_last_and_middle() -> None:
    rng = random.Random(7)
    a, b, c = rng.randbytes(2500), rng.randbytes(2100), rng.randbytes(900)
    fa, fb, fc = (_segmented(x, VC_MAP, 1) for x in (a, b, c))
    assert len(fa) == 3 and len(fb) == 3 and len(fc) == 1

    # Lost FIRST: its CONTINUATION and LAST are orphans; the next unit goes through.
    engine = TcReassembler()
    for frame in [*fa[1:], *fb]:
        engine.receive_frame(frame, now=5.0)
    events = _events(engine)
    assert [e.reason for e in events if isinstance(e, Dropped)] == ["orphan-segment"] * 2
    assert events[0] == Dropped(
        layer=Layer.TC_FRAME,
        reason="orphan-segment",
        clause="CCSDS 232.0-B-4 4.1.3.2.2.2",
        octets=1016,
        detail="CONTINUATION on VC 21 MAP 1 with no FIRST segment",
        at=5.0,
    )
    assert events[2:] == [UnitReceived(vcid=0x15, map_id=1, data=b, segments=3, at=5.0)]
    assert engine.drops == {"tc-frame/orphan-segment": 2}

    # Lost LAST: the partial unit is dropped when the next FIRST arrives.
    engine = TcReassembler()
    for frame in [*fa[:2], *fb]:
        engine.receive_frame(frame)
    events = _events(engine)
    assert isinstance(events[0], Dropped)
    assert events[0].reason == "incomplete-unit"
    assert events[0].octets == 2032
    assert events[1:] == [UnitReceived(vcid=0x15, map_id=1, data=b, segments=3)]

    # Lost middle segment of a Space Packet: the rebuilt unit is shorter than the packet
    # declares, so nothing of it is delivered; the next unit is.
    pa, pb = make_packet(0x10, 1, a), make_packet(0x10, 2, c)
    fpa, fpb = _segmented(pa, VC_MAP, 1), _segmented(pb, VC_MAP, 1)
    engine = TcReassembler(deblock_packets=True)
    for frame in [fpa[0], *fpa[2:], *fpb]:
        engine.receive_frame(frame)
    events = _events(engine)
    assert [type(e) for e in events] == [Dropped, UnitReceived]
    assert isinstance(events[0], Dropped)
    assert events[0].reason == "packet-length-mismatch"
    assert events[0].octets == len(pa) - 1016
    assert events[1] == UnitReceived(vcid=0x15, map_id=1, data=pb, segments=1)
    assert engine.drops == {"tc-frame/packet-length-mismatch": 1}
    assert engine.pending_octets(0x15, 1) == 0


def test_reassembler_duplicated_segments() -> None:
    rng = random.Random(8)
    a, b = rng.randbytes(3000), rng.randbytes(1500)
    fa, fb = _segmented(a, VC_MAP, 4), _segmented(b, VC_MAP, 4)

    # Duplicated FIRST: the first copy is an incomplete unit, the unit still arrives whole.
    engine = TcReassembler()
    for frame in [fa[0], *fa, *fb]:
        engine.receive_frame(frame)
    events = _events(engine)
    assert isinstance(events[0], Dropped) and events[0].reason == "incomplete-unit"
    assert events[1:] == [
        UnitReceived(vcid=0x15, map_id=4, data=a, segments=3),
        UnitReceived(vcid=0x15, map_id=4, data=b, segments=2),
    ]

    # Duplicated LAST: the unit is delivered once, the copy is an orphan.
    engine = TcReassembler()
    for frame in [*fa, fa[-1], *fb]:
        engine.receive_frame(frame)
    events = _events(engine)
    assert events[0] == UnitReceived(vcid=0x15, map_id=4, data=a, segments=3)
    assert isinstance(events[1], Dropped) and events[1].reason == "orphan-segment"
    assert events[2] == UnitReceived(vcid=0x15, map_id=4, data=b, segments=2)

    # Duplicated CONTINUATION of a Space Packet: too long for its header, dropped whole.
    pa, pb = make_packet(0x22, 0, a), make_packet(0x22, 1, b)
    fpa, fpb = _segmented(pa, VC_MAP, 4), _segmented(pb, VC_MAP, 4)
    engine = TcReassembler(deblock_packets=True)
    for frame in [fpa[0], fpa[1], fpa[1], *fpa[2:], *fpb]:
        engine.receive_frame(frame)
    events = _events(engine)
    assert isinstance(events[0], Dropped) and events[0].reason == "packet-length-mismatch"
    assert events[0].octets == len(pa) + 1016
    assert events[1:] == [UnitReceived(vcid=0x15, map_id=4, data=pb, segments=2)]
    # Raw bytes that are no Space Packet: de-blocking refuses them with a typed reason.
    engine = TcReassembler(deblock_packets=True)
    for frame in _segmented(b"\xff" * 1500, VC_MAP, 4):
        engine.receive_frame(frame)
    assert engine.drops == {"tc-frame/bad-packet-version": 1}
    assert engine.units_delivered == 0


def test_reassembler_map_interleaving() -> None:
    rng = random.Random(9)
    x, y = rng.randbytes(4000), rng.randbytes(2600)
    fx, fy = _segmented(x, VC_MAP, 1), _segmented(y, VC_MAP, 2)
    interleaved = [f for pair in zip(fx, fy, strict=False) for f in pair] + fx[len(fy) :]
    assert len(fx) == 4 and len(fy) == 3
    engine = TcReassembler()
    for frame in interleaved:
        engine.receive_frame(frame)
    assert _events(engine) == [
        UnitReceived(vcid=0x15, map_id=2, data=y, segments=3),
        UnitReceived(vcid=0x15, map_id=1, data=x, segments=4),
    ]
    assert not engine.drops
    # Same MAP ID on another VC is another channel.
    other = TcVcConfig(scid=0x1AB, vcid=3, segment_header=True)
    fz = _segmented(y, other, 1)
    engine = TcReassembler()
    for frame in [fx[0], fz[0], fx[1], fz[1], fz[2], fx[2], fx[3]]:
        engine.receive_frame(frame)
    assert _events(engine) == [
        UnitReceived(vcid=3, map_id=1, data=y, segments=3),
        UnitReceived(vcid=0x15, map_id=1, data=x, segments=4),
    ]


def test_reassembler_limits_bytes_and_control_frames() -> None:
    engine = TcReassembler(max_unit_length=2000)
    for frame in _segmented(bytes(3000), VC_MAP, 0):
        engine.receive_frame(frame)
    events = _events(engine)
    assert [e.reason for e in events if isinstance(e, Dropped)] == [
        "unit-too-long",
        "orphan-segment",
    ]
    assert engine.units_delivered == 0
    # Raw octets: a bad frame becomes a counted drop, never an exception.
    good = TcFrame.data_frame(
        VC_MAP,
        b"hi",
        bypass=BypassFlag.TYPE_B,
        sequence_number=0,
        segment_header=SegmentHeader(SequenceFlags.UNSEGMENTED, 7),
    ).to_bytes()
    engine = TcReassembler()
    engine.receive_bytes(good[:-1] + bytes([good[-1] ^ 1]), config=VC_MAP, now=1.0)
    engine.receive_bytes(b"\x00\x01", config=VC_MAP, now=2.0)
    engine.receive_bytes(TcFrame.control_frame(VC_MAP, Unlock()).to_bytes(), config=VC_MAP)
    engine.receive_bytes(good, config=VC_MAP, now=3.0)
    events = _events(engine)
    assert [(e.reason, e.octets, e.at) for e in events if isinstance(e, Dropped)] == [
        ("fecf-mismatch", len(good), 1.0),
        ("truncated", 2, 2.0),
    ]
    assert events[-1] == UnitReceived(vcid=0x15, map_id=7, data=b"hi", segments=1, at=3.0)
    assert engine.control_frames_ignored == 1
    assert engine.drops == {"tc-frame/fecf-mismatch": 1, "tc-frame/truncated": 1}
    # A VC without the Segment Header: each frame is a whole unit.
    engine = TcReassembler()
    frame = TcFrame.data_frame(VC, b"unit", bypass=BypassFlag.TYPE_A, sequence_number=3)
    engine.receive_frame(frame)
    assert _events(engine) == [UnitReceived(vcid=0x15, map_id=None, data=b"unit", segments=1)]


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SequenceFlags), st.integers(0, 2), st.binary(min_size=1, max_size=30)
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_reassembler_never_raises(
    segments: list[tuple[SequenceFlags, int, bytes]], deblock: bool
) -> None:
    config = TcVcConfig(scid=1, vcid=1, segment_header=True, max_frame_length=64)
    engine = TcReassembler(max_unit_length=100, deblock_packets=deblock)
    for flags, map_id, data in segments:
        fdu = FrameDataUnit(SegmentHeader(flags, map_id), data)
        engine.receive_frame(fdu.to_frame(config, bypass=BypassFlag.TYPE_B, sequence_number=0))
    events = _events(engine)
    assert sum(isinstance(e, Dropped) for e in events) == sum(engine.drops.values())
    assert sum(isinstance(e, UnitReceived) for e in events) == engine.units_delivered
    assert all(engine.pending_octets(1, m) <= 100 for m in range(3))


# -- blocking (CCSDS 232.0-B-4 4.3.1) ----------------------------------------------------


def test_blocking_and_deblocking_packets() -> None:
    packets = [make_packet(0x30 + i, i, bytes([i]) * (10 + 37 * i)) for i in range(12)]
    packets.append(make_packet(0x7E, 99, bytes(2500)))  # longer than a frame: segmented
    packets.append(make_packet(0x7D, 100, b"tail"))
    fdus = packet_processing(packets, config=VC_MAP, map_id=5)
    flags = [fdu.segment_header.sequence_flags for fdu in fdus if fdu.segment_header]
    # Small packets blocked together, never cut; the big one alone in three segments.
    assert flags.count(SequenceFlags.UNSEGMENTED) < 12
    assert flags.count(SequenceFlags.FIRST) == 1
    engine = TcReassembler(deblock_packets=True)
    for frame in _through_wire(fdus, VC_MAP):
        engine.receive_frame(frame)
    received = _events(engine)
    assert [e.data for e in received if isinstance(e, UnitReceived)] == packets
    assert not engine.drops

    units = block_packets(packets[:3], limit=1000)
    assert units == [packets[0] + packets[1] + packets[2]]
    assert split_packets(units[0]) == packets[:3]
    assert block_packets(packets[:3], limit=len(packets[0])) == packets[:3]
    no_blocking = packet_processing(packets[:3], config=VC_MAP, map_id=5, blocking=False)
    assert [fdu.data for fdu in no_blocking] == packets[:3]

    # A VC without the Segment Header blocks but cannot segment.
    vc_fdus = packet_processing(packets[:12], config=VC, blocking=True)
    assert all(fdu.segment_header is None for fdu in vc_fdus)
    assert b"".join(fdu.data for fdu in vc_fdus) == b"".join(packets[:12])
    with pytest.raises(LocalProtocolError, match="2506-octet packet exceeds the 1017"):
        packet_processing(packets, config=VC)
    with pytest.raises(LocalProtocolError, match="give a MAP ID"):
        packet_processing(packets, config=VC_MAP)
    with pytest.raises(LocalProtocolError, match="17 octets declares 16"):
        block_packets([packets[0][:-1] + b"\x00\x00"], limit=100)
    with pytest.raises(LocalProtocolError, match="cannot segment"):
        segment_sdu(b"x", config=VC, map_id=0)
    with pytest.raises(LocalProtocolError, match="empty MAP SDU"):
        segment_sdu(b"", config=VC_MAP, map_id=0)


def test_split_packets_typed_errors() -> None:
    packet = make_packet(1, 1, b"abc")
    assert split_packets(packet * 3) == [packet] * 3
    for bad, reason in [
        (b"", "packet-truncated"),
        (packet + packet[:5], "packet-truncated"),
        (packet[:-1], "packet-truncated"),
        (b"\xe0" + packet[1:], "bad-packet-version"),
    ]:
        with pytest.raises(DecodeError) as info:
            split_packets(bad)
        assert info.value.reason == reason
