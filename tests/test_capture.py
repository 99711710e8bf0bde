"""pcapng captures: a real endpoint session recorded and read back, checked by dpkt and
tshark as independent readers, and every kind of bad file refused with CaptureError."""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import dpkt  # type: ignore[import-untyped]
import pytest

from linkstack import __version__
from linkstack.capture import (
    GROUND_ADDRESS,
    LINKTYPE_IPV4,
    LINKTYPE_USER0,
    LINKTYPE_USER1,
    PACKET_UDP_PORT,
    SPACECRAFT_ADDRESS,
    Capture,
    CaptureError,
    CaptureWriter,
    Direction,
    SecretInMetadata,
    TailReason,
    TruncatedTail,
    Unit,
    UnitKind,
    link_config_from_metadata,
    read_cadu_file,
    read_capture,
    session_metadata,
    summarize,
)
from linkstack.capture.metadata import check_no_secrets
from linkstack.cfdp.wire import CFDP_APID
from linkstack.coding.tm import ASM, TmCodingConfig
from linkstack.endpoints import (
    Apid,
    GroundEndpoint,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
    TcRoute,
)
from linkstack.errors import LinkError, LocalProtocolError
from linkstack.inference.protocol import (
    EndOfStream,
    FinishReason,
    GenerationParams,
    Message,
    PromptRequest,
    TokenChunk,
    decode_message,
    encode_message,
)
from linkstack.packets.space_packet import PacketSequencer, PacketType, SpacePacket
from linkstack.radio.channel import link_profile

T0 = 1_700_000_000.0  # a Unix time: floats this large round-trip through nanoseconds
STEP = 0.001953125  # 2**-9 s, exact in binary
#: (CADU index, octet offset, bit mask): three symbol errors in two CADUs, each within
#: R-S correction (E=16 per codeword), each in a different symbol.
BIT_ERRORS = ((0, 10, 0x01), (0, 500, 0x80), (1, 333, 0x24))


@dataclass(frozen=True)
class Session:
    data: bytes
    units: list[Unit]
    metadata: dict[str, object]
    config: LinkConfig
    uplink_messages: list[Message]
    downlink_messages: list[Message]
    received: list[Message]


def make_session(config: LinkConfig | None = None, cadus: int = 4) -> Session:
    """Ground sends a PromptRequest, the spacecraft answers with TokenChunks and an
    EndOfStream; every CLTU, CADU (with BIT_ERRORS) and Space Packet is recorded."""
    config = config or LinkConfig(tm_coding=TmCodingConfig(interleave=2))
    metadata = session_metadata(config, profile=link_profile("ideal"), seed=1234, note="test")
    stream = io.BytesIO()
    writer = CaptureWriter(stream, metadata)
    ground, spacecraft = GroundEndpoint(config), SpacecraftEndpoint(config)
    # Mirror of the endpoints' packet sequencers: the decoded Space Packets each side
    # sends, which a recorder would log on the packet interface.
    up_seq = PacketSequencer(packet_type=PacketType.TC)
    down_seq = PacketSequencer(packet_type=PacketType.TM)
    units: list[Unit] = []
    received: list[Message] = []
    t = T0

    def packet(direction: Direction, message: Message, at: float) -> None:
        apid, data = encode_message(message)
        sequencer = up_seq if direction is Direction.UPLINK else down_seq
        raw = sequencer.packet(apid, data).to_bytes()
        writer.record_packet(raw, at, direction)
        units.append(Unit(direction, UnitKind.PACKET, raw, at))

    def drain(endpoint: GroundEndpoint | SpacecraftEndpoint) -> None:
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                received.append(event.message)

    request = PromptRequest(
        request_id=7, params=GenerationParams(max_new_tokens=16), prompt_ids=(1, 2, 3, 4)
    )
    ground.send(request, t, expedited=True)  # Type-BD: no COP-1 handshake needed
    packet(Direction.UPLINK, request, t)
    for cltu in ground.data_to_send():
        writer.record_uplink(cltu, t, comment="prompt")
        units.append(Unit(Direction.UPLINK, UnitKind.CLTU, cltu, t, "prompt"))
        spacecraft.receive_bytes(cltu, t)
        t += STEP
    drain(spacecraft)

    replies: list[Message] = [
        TokenChunk(request_id=7, first_index=0, ids=(10, 11, 12)),
        TokenChunk(request_id=7, first_index=3, ids=(13, 14)),
        EndOfStream(
            request_id=7,
            finish_reason=FinishReason.MAX_TOKENS,
            token_count=5,
            time_to_first_token_us=1500,
            generation_time_ms=20,
            tokens_per_s_milli=250_000,
        ),
    ]
    for reply in replies:
        spacecraft.send(reply)
    for index in range(cadus):
        cadu = bytearray(spacecraft.next_cadu())
        for which, octet, mask in BIT_ERRORS:
            if which == index:
                cadu[octet] ^= mask
        writer.record_downlink(bytes(cadu), t)
        units.append(Unit(Direction.DOWNLINK, UnitKind.CADU, bytes(cadu), t))
        ground.receive_bytes(bytes(cadu), t)
        t += STEP
    ground.end_of_stream(t)
    drain(ground)
    for reply in replies:
        packet(Direction.DOWNLINK, reply, t)
    return Session(
        data=stream.getvalue(),
        units=units,
        metadata=metadata,
        config=config,
        uplink_messages=[request],
        downlink_messages=replies,
        received=received,
    )


@pytest.fixture(scope="module")
def session() -> Session:
    return make_session()


# ----------------------------------------------------------------------------- round trip


def test_session_really_went_through_the_endpoints(session: Session) -> None:
    assert session.received == session.uplink_messages + session.downlink_messages


def test_every_unit_reads_back_identical(session: Session) -> None:
    capture = read_capture(io.BytesIO(session.data))
    assert list(capture.units) == session.units
    assert [u.t for u in capture.units] == [u.t for u in session.units]  # exact floats
    kinds = [(u.kind, u.direction) for u in capture.units]
    assert kinds.count((UnitKind.CLTU, Direction.UPLINK)) == 1
    assert kinds.count((UnitKind.CADU, Direction.DOWNLINK)) == 4
    assert kinds.count((UnitKind.PACKET, Direction.UPLINK)) == 1
    assert kinds.count((UnitKind.PACKET, Direction.DOWNLINK)) == 3


class Trickle(io.RawIOBase):
    """A stream that hands out one octet per read, as a slow pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 1) if size >= 0 else 1)


def test_reads_a_stream_octet_by_octet_and_with_trailing_garbage(session: Session) -> None:
    capture = read_capture(Trickle(session.data))  # type: ignore[arg-type]
    assert list(capture.units) == session.units
    error = read_error(session.data + b"\x00junk")
    assert "begin no block of a linkstack capture (block type 006a756e)" in str(error)
    assert error.offset == len(session.data)
    zeros = read_capture(io.BytesIO(session.data + bytes(4096)))  # a zero-filled end
    assert list(zeros.units) == session.units
    assert zeros.truncated is not None
    assert (zeros.truncated.offset, zeros.truncated.octets) == (len(session.data), 4096)
    assert read_capture(io.BytesIO(session.data)).truncated is None


def test_metadata_round_trip(session: Session) -> None:
    capture = read_capture(io.BytesIO(session.data))
    assert capture.metadata == json.loads(json.dumps(session.metadata))
    assert capture.metadata["seed"] == 1234
    assert capture.metadata["profile"] == "ideal"
    assert capture.linkstack_version == __version__
    assert capture.python_version == ".".join(map(str, sys.version_info[:3]))
    assert capture.link_config() == session.config
    assert link_config_from_metadata({}) is None


#: A link whose replay needs more than the defaults: key management on TC VC 1 (MAP 2),
#: CFDP on TC VC 2, the Only Idle Data frames on TM VC 3, CFDP PDUs on TM VC 2.
ROUTED = LinkConfig(
    tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, vcid=1, map_id=2), TcRoute(CFDP_APID, vcid=2)),
    tm_oid_vcid=3,
    cfdp_tm_vcid=2,
)


def test_metadata_records_tc_routes_and_tm_vcids_that_differ_from_the_defaults() -> None:
    link = session_metadata(ROUTED)["link"]
    assert isinstance(link, dict)
    assert link["tc_routes"] == [
        {"apid": Apid.KEY_MANAGEMENT, "vcid": 1, "map_id": 2},
        {"apid": CFDP_APID, "vcid": 2, "map_id": 0},
    ]
    assert (link["tm_oid_vcid"], link["cfdp_tm_vcid"]) == (3, 2)
    check_no_secrets(session_metadata(ROUTED))  # an APID number is no key material
    # A default link's metadata is what it always was (the golden captures stand).
    default = session_metadata(LinkConfig())["link"]
    assert isinstance(default, dict)
    assert not {"tc_routes", "tm_oid_vcid", "cfdp_tm_vcid"} & set(default)
    assert link_config_from_metadata({"link": default}) == LinkConfig()


def test_a_capture_of_a_routed_link_replays_with_its_vcs() -> None:
    # The spacecraft sends idle frames on TM VC 3, with the CLCWs of TC VCs 0, 1, 2 in
    # turn: a ground rebuilt from the capture's metadata decodes them all, drop-free,
    # where one on the default link could not (OID frames of VC 7 expected).
    spacecraft = SpacecraftEndpoint(ROUTED)
    stream = io.BytesIO()
    writer = CaptureWriter(stream, session_metadata(ROUTED))
    for index in range(4):
        writer.record_downlink(spacecraft.next_cadu(), float(index))
    capture = read_capture(io.BytesIO(stream.getvalue()))
    config = capture.link_config()
    assert config == ROUTED
    assert config.tc_vcids == (0, 1, 2) and config.route(Apid.KEY_MANAGEMENT) == (1, 2)
    for replayed, drops in ((config, {}), (LinkConfig(), {"tm-frame/unknown-vcid": 4})):
        ground = GroundEndpoint(replayed)
        for unit in capture.units:
            ground.receive_bytes(unit.data, unit.t)
        ground.end_of_stream(4.0)
        assert ground.drops == drops
    summary = summarize(capture)
    assert summary.drops == {}
    assert summary.tm_frames_per_vc == {3: 4}


@pytest.mark.parametrize(
    "routes",
    [
        {"apid": 0x44, "vcid": 1, "map_id": 0},  # an object, not a list
        [[0x44, 1, 0]],  # a list, not objects
        [{"apid": 0x44, "vcid": 1}],  # no map_id
        [{"apid": 0x44, "vcid": 64, "map_id": 0}],  # a VCID no frame carries
    ],
)
def test_bad_tc_routes_in_the_metadata_are_capture_errors(routes: object) -> None:
    link = session_metadata(LinkConfig())["link"]
    assert isinstance(link, dict)
    with pytest.raises(CaptureError, match="link configuration in the metadata does not parse"):
        link_config_from_metadata({"link": {**link, "tc_routes": routes}})


def test_recorded_packets_decode_to_the_messages(session: Session) -> None:
    capture = read_capture(io.BytesIO(session.data))
    messages = []
    for unit in capture.units:
        if unit.kind is UnitKind.PACKET:
            packet = SpacePacket.from_bytes(unit.data)
            messages.append(decode_message(packet.apid, packet.data))
    assert messages == session.uplink_messages + session.downlink_messages


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, 0.0),
        (1.5, 1.5),
        (0.000001234, 0.000001234),  # the float nearest a whole number of ns
        (T0 + 0.123456789, T0 + 0.123456789),
        (1e-10, 0.0),  # below the nanosecond resolution
    ],
)
def test_timestamps_at_nanosecond_resolution(t: float, expected: float) -> None:
    stream = io.BytesIO()
    CaptureWriter(stream, {}).record_uplink(b"\xeb\x90", t)
    assert read_capture(io.BytesIO(stream.getvalue())).units[0].t == expected


# ----------------------------------------------------------------------------- writer refusals


@pytest.mark.parametrize(
    ("metadata", "path"),
    [
        ({"sdls_key": "00"}, "sdls_key"),
        ({"link": {"Master": 1}}, "link.Master"),
        ({"x": [{"secret_id": 3}]}, "x[0].secret_id"),
        ({"KEYS": []}, "KEYS"),
    ],
)
def test_key_material_is_refused(metadata: dict[str, object], path: str) -> None:
    stream = io.BytesIO()
    with pytest.raises(SecretInMetadata, match="looks like key material") as info:
        CaptureWriter(stream, metadata)
    assert info.value.path == path
    assert isinstance(info.value, LocalProtocolError)
    assert stream.getvalue() == b""  # nothing written


def test_writer_refuses_bad_input() -> None:
    writer = CaptureWriter(io.BytesIO(), {})
    with pytest.raises(LocalProtocolError, match="not JSON"):
        CaptureWriter(io.BytesIO(), {"x": object()})
    with pytest.raises(LocalProtocolError, match="finite"):
        writer.record_uplink(b"x", float("nan"))
    with pytest.raises(LocalProtocolError, match="outside"):
        writer.record_downlink(b"x", -1.0)
    with pytest.raises(LocalProtocolError, match="empty"):
        writer.record_downlink(b"", 0.0)
    with pytest.raises(LocalProtocolError, match="header says 8 octets, 7 given"):
        writer.record_packet(bytes.fromhex("08400000000100"), 0.0, Direction.UPLINK)
    with pytest.raises(LocalProtocolError, match="not a Space Packet"):
        writer.record_packet(b"\x00\x01", 0.0, Direction.UPLINK)
    big = SpacePacket(
        packet_type=PacketType.TM, apid=0x41, sequence_count=0, data=bytes(65_530)
    ).to_bytes()
    with pytest.raises(LocalProtocolError, match="does not fit one UDP/IPv4 datagram"):
        writer.record_packet(big, 0.0, Direction.DOWNLINK)
    assert writer.units_written == 0


# ----------------------------------------------------------------------------- independent reader


def dpkt_blocks(data: bytes) -> list[Any]:
    """Every block of ``data`` parsed by dpkt's pcapng block classes."""
    little = data[8:12] == struct.pack("<I", 0x1A2B3C4D)
    classes = {
        dpkt.pcapng.PCAPNG_BT_SHB: dpkt.pcapng.SectionHeaderBlock,
        dpkt.pcapng.PCAPNG_BT_IDB: dpkt.pcapng.InterfaceDescriptionBlock,
        dpkt.pcapng.PCAPNG_BT_EPB: dpkt.pcapng.EnhancedPacketBlock,
    }
    out: list[Any] = []
    offset = 0
    while offset < len(data):
        kind, length = struct.unpack_from("<II" if little else ">II", data, offset)
        cls = classes[kind]
        if little:
            cls = getattr(dpkt.pcapng, cls.__name__ + "LE")
        out.append(cls(data[offset : offset + length]))
        offset += length
    return out


def test_dpkt_reads_the_blocks_link_types_and_counts(session: Session) -> None:
    blocks = dpkt_blocks(session.data)
    shb, idbs = blocks[0], blocks[1:4]
    epbs = blocks[4:]
    assert type(shb).__name__.startswith("SectionHeaderBlock")
    assert [b.linktype for b in idbs] == [LINKTYPE_USER0, LINKTYPE_USER1, LINKTYPE_IPV4]
    names = [next(o.data for o in b.opts if o.code == dpkt.pcapng.PCAPNG_OPT_IF_NAME) for b in idbs]
    assert names == [b"linkstack-uplink", b"linkstack-downlink", b"linkstack-packets"]
    assert all(type(b).__name__.startswith("EnhancedPacketBlock") for b in epbs)
    assert [b.iface_id for b in epbs].count(0) == 1
    assert [b.iface_id for b in epbs].count(1) == 4
    assert [b.iface_id for b in epbs].count(2) == 4

    comment = next(o.data for o in shb.opts if o.code == dpkt.pcapng.PCAPNG_OPT_COMMENT)
    assert json.loads(comment)["metadata"]["seed"] == 1234

    # epb_flags (option 2): outbound (2) for the uplink, inbound (1) for the downlink.
    for block, unit in zip(epbs, session.units, strict=True):
        flags = next(o.data for o in block.opts if o.code == 2)
        direction = struct.unpack("<I" if type(block).__name__.endswith("LE") else ">I", flags)
        assert direction[0] & 3 == (2 if unit.direction is Direction.UPLINK else 1)
        ns = (block.ts_high << 32) | block.ts_low
        assert ns == round(Fraction(unit.t) * 10**9)  # if_tsresol 9: nanoseconds


def test_packets_are_udp_ipv4_on_the_documented_port(session: Session) -> None:
    epbs = [b for b in dpkt_blocks(session.data)[4:] if b.iface_id == 2]
    packets = [u for u in session.units if u.kind is UnitKind.PACKET]
    for block, unit in zip(epbs, packets, strict=True):
        ip = dpkt.ip.IP(block.pkt_data)
        assert ip.p == dpkt.ip.IP_PROTO_UDP
        assert ip.sum == dpkt.ip.IP(bytes(ip)).sum  # header checksum as dpkt computes it
        src, dst = (
            (GROUND_ADDRESS, SPACECRAFT_ADDRESS)
            if unit.direction is Direction.UPLINK
            else (SPACECRAFT_ADDRESS, GROUND_ADDRESS)
        )
        assert (dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst)) == (src, dst)
        assert (ip.data.sport, ip.data.dport) == (PACKET_UDP_PORT, PACKET_UDP_PORT)
        assert bytes(ip.data.data) == unit.data


# ----------------------------------------------------------------------------- tshark


def test_tshark_dissects_the_space_packets(session: Session, tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark); dpkt checks still ran")
    path = tmp_path / "session.pcapng"
    path.write_bytes(session.data)
    command = [
        tshark,
        "-r",
        str(path),
        "-d",
        f"udp.port=={PACKET_UDP_PORT},ccsds",
        "-Y",
        "ccsds",
        "-T",
        "fields",
        "-e",
        "ccsds.apid",
        "-e",
        "ccsds.seqflag",
        "-e",
        "ccsds.seqnum",
        "-e",
        "ccsds.length",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    rows = [tuple(int(f) for f in line.split("\t")) for line in result.stdout.splitlines()]
    expected = [
        (p.apid, int(p.sequence_flags), p.sequence_count, len(p.data) - 1)
        for p in (
            SpacePacket.from_bytes(u.data) for u in session.units if u.kind is UnitKind.PACKET
        )
    ]
    assert rows == expected
    counts = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert counts.count("linkstack-uplink") == 1
    assert counts.count("linkstack-downlink") == 4


# ----------------------------------------------------------------------------- summary


def test_summary_decodes_the_session(session: Session) -> None:
    summary = summarize(read_capture(io.BytesIO(session.data)))
    assert summary.link_from_metadata
    assert summary.directions["uplink"].units == {"cltu": 1, "packet": 1}
    assert summary.directions["downlink"].units == {"cadu": 4, "packet": 3}
    cadu_octets = sum(len(u.data) for u in session.units if u.kind is UnitKind.CADU)
    assert summary.directions["downlink"].octets["cadu"] == cadu_octets
    assert summary.first_t == T0
    assert summary.tc_frames_per_vc == {0: 1}
    assert summary.tc_packets_per_apid == {0x040: 1}
    assert summary.tm_packets_per_apid == {0x041: 3}
    assert summary.tm_frames_per_vc[0] >= 1
    assert summary.tm_frames_per_vc.total() == 4
    assert summary.rs_corrected_symbols == len(BIT_ERRORS)
    assert summary.rs_uncorrectable == 0
    assert summary.drops == {}
    assert summary.recorded_packets_per_apid == {"uplink": {0x040: 1}, "downlink": {0x041: 3}}
    json.dumps(summary.to_json())  # JSON-ready


def test_summary_counts_an_uncorrectable_codeblock() -> None:
    config = LinkConfig(tm_coding=TmCodingConfig(interleave=1))
    spacecraft = SpacecraftEndpoint(config)
    stream = io.BytesIO()
    writer = CaptureWriter(stream, session_metadata(config))
    for index in range(4):
        cadu = bytearray(spacecraft.next_cadu())
        if index == 2:
            rng = random.Random(5)
            for octet in rng.sample(range(len(ASM), len(cadu)), 40):
                cadu[octet] ^= 0xFF
        writer.record_downlink(bytes(cadu), float(index))
    summary = summarize(read_capture(io.BytesIO(stream.getvalue())))
    assert summary.rs_uncorrectable == 1
    assert summary.drops == {"tm-coding/uncorrectable": 1}
    assert summary.tm_frames_per_vc.total() == 3


# ----------------------------------------------------------------------------- CADU files


def test_read_cadu_file_yields_the_stream(session: Session) -> None:
    cadus = b"".join(u.data for u in session.units if u.kind is UnitKind.CADU)
    chunks = list(read_cadu_file(io.BytesIO(cadus), chunk_size=1000))
    assert b"".join(chunks) == cadus
    assert all(len(c) == 1000 for c in chunks[:-1])
    ground = GroundEndpoint(session.config)
    for chunk in chunks:
        ground.receive_bytes(chunk, 0.0)
    ground.end_of_stream(0.0)
    got = []
    while (event := ground.next_event()) is not None:
        if isinstance(event, MessageReceived):
            got.append(event.message)
    assert got == session.downlink_messages


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (b"\x0a\x0d\x0d\x0a" + bytes(40), "a pcapng file"),
        (bytes.fromhex("d4c3b2a1") + bytes(40), "libpcap"),
    ],
)
def test_read_cadu_file_refuses(data: bytes, match: str) -> None:
    with pytest.raises(CaptureError, match=match):
        read_cadu_file(io.BytesIO(data))


# ----------------------------------------------------------------------------- bad files


def libpcap_file() -> bytes:
    stream = io.BytesIO()
    writer = dpkt.pcap.Writer(stream, linktype=dpkt.pcap.DLT_RAW)
    writer.writepkt(b"\x45" + bytes(27), ts=1.0)
    return stream.getvalue()


def foreign_pcapng() -> bytes:
    """A pcapng written by another tool (dpkt): no linkstack metadata."""
    stream = io.BytesIO()
    writer = dpkt.pcapng.Writer(stream, linktype=dpkt.pcap.DLT_RAW)
    writer.writepkt(b"\x45" + bytes(27), ts=1.0)
    return stream.getvalue()


def block_offsets(data: bytes) -> list[int]:
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += struct.unpack_from("<I", data, offset + 4)[0]
    return offsets


def read_error(data: bytes) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        read_capture(io.BytesIO(data))
    return info.value


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (libpcap_file(), r"a libpcap \(\.pcap\) file, not pcapng"),
        (random.Random(1).randbytes(4096), "not a pcapng file"),
        (b"\x0a\x0d", "truncated"),
        (foreign_pcapng(), "no linkstack metadata in the section header"),
    ],
    ids=["empty", "libpcap", "random", "two-octets", "foreign-pcapng"],
)
def test_foreign_files_are_refused(data: bytes, match: str) -> None:
    error = read_error(data)
    assert isinstance(error, LinkError)
    assert error.args[0]
    with pytest.raises(CaptureError, match=match):
        read_capture(io.BytesIO(data))


def test_a_file_cut_in_its_header_blocks_names_the_block_offset(session: Session) -> None:
    data = session.data
    offsets = block_offsets(data)
    cuts = [
        (10, 0),  # inside the section header
        (offsets[1] + 3, offsets[1]),  # inside the first interface block's header
        (offsets[2] + 20, offsets[2]),  # inside an interface block
        (offsets[4] - 4, offsets[3]),  # the last interface block without its trailing length
    ]
    for cut, offset in cuts:
        error = read_error(data[:cut])
        assert "truncated file" in str(error), (cut, error)
        assert "tail cut" in str(error), (cut, error)
        assert error.offset == offset, (cut, error)


def test_a_file_cut_inside_a_packet_block_reads_up_to_it(session: Session) -> None:
    data = session.data
    offsets = block_offsets(data)
    epb = offsets[5]  # the second unit
    for cut in (epb + 1, epb + 4, epb + 30, offsets[6] - 4, offsets[6] - 1):
        capture = read_capture(io.BytesIO(data[:cut]))
        assert list(capture.units) == session.units[:1], cut
        assert capture.truncated == TruncatedTail(epb, cut - epb, TailReason.CUT_BLOCK), cut
    capture = read_capture(io.BytesIO(data[:-1]))  # one octet short
    assert list(capture.units) == session.units[:-1]
    assert capture.truncated == TruncatedTail(
        offsets[-1], len(data) - 1 - offsets[-1], TailReason.CUT_BLOCK
    )


def test_a_file_cut_at_a_block_boundary_reads_up_to_it(session: Session) -> None:
    offsets = block_offsets(session.data)
    capture = read_capture(io.BytesIO(session.data[: offsets[6]]))
    assert list(capture.units) == session.units[:2]


@pytest.mark.parametrize(
    ("length", "match"),
    [
        (0xFFFFFFF0, "corrupted block length"),
        (16, "corrupted"),
        (1 << 19, "corrupted block length: 524288 octets, but its packet and options end"),
    ],
)
def test_corrupted_block_length(session: Session, length: int, match: str) -> None:
    data = bytearray(session.data)
    epb = block_offsets(session.data)[5]
    data[epb + 4 : epb + 8] = struct.pack("<I", length)
    error = read_error(bytes(data))
    assert match in str(error)
    assert error.offset == epb


def test_any_corruption_parses_or_raises_capture_error(session: Session) -> None:
    """Fuzz: flip octets anywhere; read_capture returns or raises CaptureError, never else."""
    rng = random.Random(2024)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        data = bytearray(session.data)
        for _ in range(rng.choice((1, 2, 8))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            read_capture(io.BytesIO(bytes(data)))
            outcomes["ok"] += 1
        except CaptureError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_checksum_protects_the_packet_datagrams(session: Session) -> None:
    offsets = block_offsets(session.data)
    data = bytearray(session.data)
    last = offsets[-1]
    data[last + 28 + 20 + 8 + 2] ^= 0x01  # a Space Packet octet inside the UDP payload
    assert "UDP checksum mismatch" in str(read_error(bytes(data)))


def test_capture_is_a_frozen_record(session: Session) -> None:
    capture = read_capture(io.BytesIO(session.data))
    assert isinstance(capture, Capture)
    with pytest.raises(AttributeError):
        capture.units = ()  # type: ignore[misc]
