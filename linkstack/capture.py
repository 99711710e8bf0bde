"""Packet captures of a linkstack session: pcapng files of the radio boundary.

One capture file (pcapng, IETF draft-ietf-opsawg-pcapng, "the draft" below) holds one
section whose Section Header Block carries the session metadata as JSON in its
comment, and three interfaces:

====  ==================  ==================  ==========================================
 id   if_name             link type           what each Enhanced Packet Block holds
====  ==================  ==================  ==========================================
 0    linkstack-uplink    LINKTYPE_USER0 147  one CLTU as radiated by the ground
 1    linkstack-downlink  LINKTYPE_USER1 148  one CADU as received, bit errors included
 2    linkstack-packets   LINKTYPE_IPV4  228  one decoded Space Packet in a UDP datagram
====  ==================  ==================  ==========================================

Directions are the ground station's, in ``epb_flags`` (draft 4.3.1): uplink CLTUs and
uplink (TC) packets are *outbound*, downlink CADUs and (TM) packets *inbound*.  Space
Packets travel between the documentation addresses :data:`GROUND_ADDRESS` and
:data:`SPACECRAFT_ADDRESS` (RFC 5737), source and destination port
:data:`PACKET_UDP_PORT`, so Wireshark dissects them with no plugin::

    tshark -r FILE -d udp.port==52001,ccsds -Y ccsds \\
        -T fields -e frame.time_epoch -e ccsds.apid -e ccsds.seqflag -e ccsds.seqnum -e ccsds.length

Timestamps are the caller's ``t`` (float seconds) stored as integer nanoseconds
(``if_tsresol`` 9).  A ``t`` read back equals the one written whenever ``t`` is the float
nearest a whole number of nanoseconds, or is at least 2**23 s (any Unix time), where
the float spacing is coarser than 1 ns.

Library: python-pcapng (2.1.1) writes and reads the whole block model we need
(Section Header options and comments, several Interface Description Blocks each
with its own link type, ``if_tsresol``, Enhanced Packet Blocks with ``epb_flags`` and
comments); scapy's pcapng writer writes neither Section Header options nor
``if_description``/``if_tsresol`` and imports a whole packet toolkit, and dpkt's pcapng
Reader takes the first interface's link type for every packet, so it cannot read a
multi-interface file back.  The tests read our files again with dpkt's block
classes and with tshark, as independent readers.

Sans-I/O: the caller opens the stream; this module reads and writes only the stream
it is given.  Keys never enter a capture: metadata keys that look like key material
are refused with :class:`SecretInMetadata`.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import BinaryIO, Final

import pcapng  # type: ignore[import-untyped]
import pcapng.exceptions  # type: ignore[import-untyped]
from pcapng import blocks

from linkstack import __version__
from linkstack.channel import LinkProfile
from linkstack.endpoints import LinkConfig
from linkstack.errors import (
    DropCounter,
    Dropped,
    LinkError,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.reed_solomon import Basis
from linkstack.space_packet import PRIMARY_HEADER_LENGTH, peek_packet_length
from linkstack.tc_coding import CltuDecoded, CltuDecoder, DecoderMode
from linkstack.tc_frame import TcFrame, TcReassembler, UnitReceived, peek_frame_length, peek_vcid
from linkstack.tm_coding import CaduSynchronizer, FrameDecoded, SyncLost, TmCodingConfig
from linkstack.tm_frame import FramesLost, PacketReceived, TmDepacketizer, TmFrame

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GROUND_ADDRESS",
    "LINKTYPE_IPV4",
    "LINKTYPE_USER0",
    "LINKTYPE_USER1",
    "PACKET_UDP_PORT",
    "SPACECRAFT_ADDRESS",
    "Capture",
    "CaptureError",
    "CaptureSummary",
    "CaptureWriter",
    "Direction",
    "SecretInMetadata",
    "Unit",
    "UnitKind",
    "link_config_from_metadata",
    "read_cadu_file",
    "read_capture",
    "session_metadata",
    "summarize",
]

# ----------------------------------------------------------------------------- constants

FORMAT: Final = "linkstack-capture"
FORMAT_VERSION: Final = 1

# Link types, https://www.tcpdump.org/linktypes.html
LINKTYPE_USER0: Final = 147  # reserved for private use: uplink CLTUs
LINKTYPE_USER1: Final = 148  # reserved for private use: downlink CADUs
LINKTYPE_IPV4: Final = 228  # raw IPv4, the packet begins with an IPv4 header

#: "Ground" and "spacecraft" ends of the Space Packet datagrams: TEST-NET-1 and
#: TEST-NET-2, reserved for documentation (RFC 5737 3).
GROUND_ADDRESS: Final = "192.0.2.1"
SPACECRAFT_ADDRESS: Final = "198.51.100.1"
#: UDP source and destination port of every Space Packet datagram: a port of the
#: Dynamic range, which IANA never assigns (RFC 6335 6).  Decode it as ``ccsds``.
PACKET_UDP_PORT: Final = 52001

_TSRESOL_NS: Final = b"\x09"  # if_tsresol: 10**-9 s (draft 4.2, option 9)
_NS_PER_S: Final = 10**9
_MAX_NS: Final = (1 << 64) - 1  # 64-bit timestamp (draft 4.3)
_MAX_OPTION_OCTETS: Final = 0xFFFF  # 16-bit Option Length (draft 3.5)
#: Largest block this reader accepts; a CADU is at most 4 + 255*8 octets and a
#: datagram at most 65535, so anything near this is a corrupted length.
MAX_BLOCK_OCTETS: Final = 1 << 20

_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"  # Section Header Block type (draft 4.1)
_PCAP_MAGICS: Final = {  # libpcap file header magic, both byte orders, us and ns
    bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1")
}
_EPB_INBOUND: Final = 1  # epb_flags bits 0-1 (draft 4.3.1)
_EPB_OUTBOUND: Final = 2

_SECRET_KEY: Final = re.compile(r"key|secret|master", re.IGNORECASE)


class Direction(StrEnum):
    """Which way a unit travelled; the ground station's epb_flags direction follows."""

    UPLINK = "uplink"  # ground -> spacecraft: outbound
    DOWNLINK = "downlink"  # spacecraft -> ground: inbound


class UnitKind(StrEnum):
    """What a recorded unit is."""

    CLTU = "cltu"
    CADU = "cadu"
    PACKET = "packet"


@dataclass(frozen=True, slots=True)
class _Interface:
    kind: UnitKind
    name: str
    link_type: int
    description: str


_INTERFACES: Final = (
    _Interface(
        UnitKind.CLTU,
        "linkstack-uplink",
        LINKTYPE_USER0,
        "Uplink CLTUs as radiated (CCSDS 231.0-B-4), one per packet",
    ),
    _Interface(
        UnitKind.CADU,
        "linkstack-downlink",
        LINKTYPE_USER1,
        "Downlink CADUs as received, bit errors included (CCSDS 131.0-B-5), one per packet",
    ),
    _Interface(
        UnitKind.PACKET,
        "linkstack-packets",
        LINKTYPE_IPV4,
        f"Decoded Space Packets (CCSDS 133.0-B-2) in UDP/IPv4, port {PACKET_UDP_PORT},"
        f" ground {GROUND_ADDRESS}, spacecraft {SPACECRAFT_ADDRESS}",
    ),
)
_BY_KIND: Final = {iface.kind: index for index, iface in enumerate(_INTERFACES)}

# ----------------------------------------------------------------------------- errors


class CaptureError(LinkError):
    """A capture file cannot be read: truncated, corrupted, or not one of ours.

    ``offset`` is the file offset of the block (or octet) at fault, None when the
    problem is the file as a whole.
    """

    def __init__(self, problem: str, *, offset: int | None = None) -> None:
        self.problem = problem
        self.offset = offset
        super().__init__(problem if offset is None else f"{problem} (at file offset {offset})")


class SecretInMetadata(LocalProtocolError):
    """Session metadata holds a key that looks like key material; nothing was written."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"metadata key {path!r} looks like key material (key/secret/master):"
            " keys are never written to a capture"
        )


# ----------------------------------------------------------------------------- metadata


def session_metadata(
    config: LinkConfig,
    *,
    profile: LinkProfile | None = None,
    seed: int | None = None,
    **extra: object,
) -> dict[str, object]:
    """The metadata a session records: link configuration, profile and channel, seed.

    ``extra`` entries (JSON values) are added as they are; the writer adds the
    linkstack and Python versions itself.
    """
    coding = config.tm_coding
    link: dict[str, object] = {
        "scid": config.scid,
        "tc_vcid": config.tc_vcid,
        "map_id": config.map_id,
        "tc_max_frame_length": config.tc_max_frame_length,
        "tc_randomize": config.tc_randomize,
        "tm_vcid": config.tm_vcid,
        "tm_coding": {
            "interleave": coding.interleave,
            "error_correction": coding.error_correction,
            "frame_length": coding.frame_octets,
            "basis": coding.basis.value,
            "randomize": coding.randomize,
        },
    }
    metadata: dict[str, object] = {"link": link}
    if profile is not None:
        metadata["profile"] = profile.name
        metadata["channel"] = {
            "uplink": asdict(profile.uplink),
            "downlink": asdict(profile.downlink),
        }
    if seed is not None:
        metadata["seed"] = seed
    metadata.update(extra)
    return metadata


def link_config_from_metadata(metadata: Mapping[str, object]) -> LinkConfig | None:
    """The :class:`LinkConfig` recorded by :func:`session_metadata`, None if absent.

    Raises :class:`CaptureError` when a ``link`` entry is there but does not parse.
    """
    link = metadata.get("link")
    if link is None:
        return None
    try:
        if not isinstance(link, Mapping):
            raise TypeError(f"'link' is a {type(link).__name__}, not an object")
        coding = link["tm_coding"]
        if not isinstance(coding, Mapping):
            raise TypeError(f"'tm_coding' is a {type(coding).__name__}, not an object")
        return LinkConfig(
            scid=int(link["scid"]),
            tc_vcid=int(link["tc_vcid"]),
            map_id=int(link["map_id"]),
            tc_max_frame_length=int(link["tc_max_frame_length"]),
            tc_randomize=bool(link["tc_randomize"]),
            tm_vcid=int(link["tm_vcid"]),
            tm_coding=TmCodingConfig(
                interleave=int(coding["interleave"]),
                error_correction=int(coding["error_correction"]),
                frame_length=int(coding["frame_length"]),
                basis=Basis(coding["basis"]),
                randomize=bool(coding["randomize"]),
            ),
        )
    except (KeyError, TypeError, ValueError, LinkError) as exc:
        raise CaptureError(f"link configuration in the metadata does not parse: {exc}") from exc


def _check_no_secrets(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)):
                raise SecretInMetadata(where)
            _check_no_secrets(item, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_no_secrets(item, f"{path}[{index}]")


def _python_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


# ----------------------------------------------------------------------------- IPv4/UDP

#  IPv4 header, RFC 791 3.1, 20 octets (no options):
#   0       4       8              16    19                        32
#  +-------+-------+---------------+-----+--------------------------+
#  |Version|  IHL  |Type of Service|          Total Length           |
#  |       Identification          |Flags|     Fragment Offset        |
#  | Time to Live  |   Protocol    |         Header Checksum         |
#  |                        Source Address                           |
#  |                     Destination Address                         |
#  +----------------------------------------------------------------+
_IPV4: Final = struct.Struct(">BBHHHBBH4s4s")
#  UDP header, RFC 768: source port, destination port, length, checksum (16 bits each).
_UDP: Final = struct.Struct(">HHHH")
_IPV4_VERSION_IHL: Final = 0x45  # version 4, 5 words
_IPV4_DONT_FRAGMENT: Final = 0x4000  # RFC 791 3.1 flags
_IPV4_TTL: Final = 64
_IPPROTO_UDP: Final = 17  # RFC 768
_MAX_DATAGRAM_PAYLOAD: Final = 0xFFFF - _IPV4.size - _UDP.size  # 65507
_GROUND: Final = bytes(int(o) for o in GROUND_ADDRESS.split("."))
_SPACECRAFT: Final = bytes(int(o) for o in SPACECRAFT_ADDRESS.split("."))


def _ones_complement_sum(data: bytes) -> int:
    """Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f">{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    pseudo = src + dst + struct.pack(">BBH", 0, _IPPROTO_UDP, len(udp))
    checksum = _ones_complement_sum(pseudo + udp)
    return checksum or 0xFFFF  # RFC 768: a computed zero is sent as all ones


def _datagram(packet: bytes, direction: Direction, identification: int) -> bytes:
    src, dst = (_GROUND, _SPACECRAFT) if direction is Direction.UPLINK else (_SPACECRAFT, _GROUND)
    udp_length = _UDP.size + len(packet)
    udp_zero = _UDP.pack(PACKET_UDP_PORT, PACKET_UDP_PORT, udp_length, 0) + packet
    udp = (
        _UDP.pack(PACKET_UDP_PORT, PACKET_UDP_PORT, udp_length, _udp_checksum(src, dst, udp_zero))
        + packet
    )
    fields = [_IPV4_VERSION_IHL, 0, _IPV4.size + len(udp), identification]
    header = _IPV4.pack(*fields, _IPV4_DONT_FRAGMENT, _IPV4_TTL, _IPPROTO_UDP, 0, src, dst)
    checksum = _ones_complement_sum(header)
    header = _IPV4.pack(*fields, _IPV4_DONT_FRAGMENT, _IPV4_TTL, _IPPROTO_UDP, checksum, src, dst)
    return header + udp


def _packet_from_datagram(data: bytes, direction: Direction, offset: int) -> bytes:
    """The Space Packet in one of our datagrams; CaptureError if it is not one."""
    if len(data) < _IPV4.size + _UDP.size:
        raise CaptureError(f"datagram of {len(data)} octets is too short", offset=offset)
    version_ihl, _, total, _, _, _, protocol, _, src, dst = _IPV4.unpack_from(data)
    if version_ihl != _IPV4_VERSION_IHL or protocol != _IPPROTO_UDP or total != len(data):
        raise CaptureError(
            f"not a linkstack UDP/IPv4 datagram (version/IHL 0x{version_ihl:02X},"
            f" protocol {protocol}, total length {total} of {len(data)} octets)",
            offset=offset,
        )
    if _ones_complement_sum(data[: _IPV4.size]) != 0:
        raise CaptureError("IPv4 header checksum mismatch", offset=offset)
    expected = (_GROUND, _SPACECRAFT) if direction is Direction.UPLINK else (_SPACECRAFT, _GROUND)
    if (src, dst) != expected:
        raise CaptureError(
            f"{direction} datagram between unexpected addresses {src.hex()} -> {dst.hex()}",
            offset=offset,
        )
    udp = data[_IPV4.size :]
    sport, dport, length, checksum = _UDP.unpack_from(udp)
    if (sport, dport) != (PACKET_UDP_PORT, PACKET_UDP_PORT) or length != len(udp):
        raise CaptureError(
            f"UDP ports {sport} -> {dport}, length {length} of {len(udp)}:"
            f" not a linkstack packet datagram",
            offset=offset,
        )
    zeroed = udp[:6] + b"\x00\x00" + udp[_UDP.size :]
    if checksum != _udp_checksum(src, dst, zeroed):
        raise CaptureError("UDP checksum mismatch", offset=offset)
    return udp[_UDP.size :]


# ----------------------------------------------------------------------------- writing


def _timestamp_ns(t: float) -> int:
    if not (isinstance(t, int | float) and math.isfinite(t)):
        raise LocalProtocolError(f"time t={t!r} is not a finite number of seconds")
    ns = round(Fraction(t) * _NS_PER_S)
    if not 0 <= ns <= _MAX_NS:
        raise LocalProtocolError(f"time t={t} s outside 0..{_MAX_NS / _NS_PER_S:.0f} s")
    return ns


class CaptureWriter:
    """Writes one capture to a binary stream the caller opened (and closes).

    The Section Header (with the metadata) and the three Interface Description
    Blocks are written at construction; each ``record_*`` call writes one Enhanced
    Packet Block at once, so a capture cut short by a crash is readable up to its
    last whole block.
    """

    def __init__(self, stream: BinaryIO, metadata: Mapping[str, object]) -> None:
        _check_no_secrets(metadata, "")
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "linkstack": __version__,
            "python": _python_version(),
            "metadata": metadata,
        }
        try:
            comment = json.dumps(header, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"metadata is not JSON-serialisable: {exc}") from exc
        if len(comment.encode()) > _MAX_OPTION_OCTETS:
            raise LocalProtocolError(
                f"metadata is {len(comment.encode())} octets of JSON, more than the"
                f" {_MAX_OPTION_OCTETS} a pcapng option holds (draft 3.5)"
            )
        self._stream = stream
        self._section = blocks.SectionHeader(
            options={"shb_userappl": f"linkstack {__version__}", "opt_comment": comment}
        )
        self._interfaces = [
            self._section.new_member(
                blocks.InterfaceDescription,
                link_type=iface.link_type,
                snaplen=0,  # no limit (draft 4.2)
                options={
                    "if_name": iface.name,
                    "if_description": iface.description,
                    "if_tsresol": _TSRESOL_NS,
                },
            )
            for iface in _INTERFACES
        ]
        with warnings.catch_warnings():
            # python-pcapng's own schema gives if_tsresol no type and warns about it.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._writer = pcapng.FileWriter(stream, self._section)
        self._identification = 0
        #: Enhanced Packet Blocks written.
        self.units_written = 0

    def record_uplink(self, cltu: bytes, t: float, *, comment: str | None = None) -> None:
        """One CLTU as the ground radiates it, at time ``t`` (s)."""
        self._record(UnitKind.CLTU, Direction.UPLINK, bytes(cltu), t, comment)

    def record_downlink(self, cadu: bytes, t: float, *, comment: str | None = None) -> None:
        """One CADU as the ground receives it (bit errors and all), at time ``t`` (s)."""
        self._record(UnitKind.CADU, Direction.DOWNLINK, bytes(cadu), t, comment)

    def record_packet(
        self, packet: bytes, t: float, direction: Direction, *, comment: str | None = None
    ) -> None:
        """One decoded Space Packet, whole, sent (uplink) or received (downlink) at ``t``."""
        packet = bytes(packet)
        if not isinstance(direction, Direction):
            raise LocalProtocolError(f"direction {direction!r} is not a Direction")
        try:
            declared = peek_packet_length(packet)
        except LinkError as exc:
            raise LocalProtocolError(f"not a Space Packet: {exc}") from exc
        if declared != len(packet):
            raise LocalProtocolError(
                f"Space Packet header says {declared} octets, {len(packet)} given"
                " (CCSDS 133.0-B-2 4.1.3.5)"
            )
        if len(packet) > _MAX_DATAGRAM_PAYLOAD:
            raise LocalProtocolError(
                f"Space Packet of {len(packet)} octets does not fit one UDP/IPv4 datagram"
                f" (at most {_MAX_DATAGRAM_PAYLOAD})"
            )
        datagram = _datagram(packet, direction, self._identification)
        self._identification = (self._identification + 1) & 0xFFFF
        self._record(UnitKind.PACKET, direction, datagram, t, comment)

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._stream.flush()

    def _record(
        self, kind: UnitKind, direction: Direction, data: bytes, t: float, comment: str | None
    ) -> None:
        if not data:
            raise LocalProtocolError(f"empty {kind}: nothing to record")
        ns = _timestamp_ns(t)
        flags = _EPB_OUTBOUND if direction is Direction.UPLINK else _EPB_INBOUND
        options: dict[str, object] = {"epb_flags": flags}
        if comment is not None:
            if len(comment.encode()) > _MAX_OPTION_OCTETS:
                raise LocalProtocolError(f"comment of {len(comment.encode())} octets is too long")
            options["opt_comment"] = comment
        block = self._section.new_member(
            blocks.EnhancedPacket,
            interface_id=_BY_KIND[kind],
            timestamp_high=ns >> 32,
            timestamp_low=ns & 0xFFFFFFFF,
            packet_len=len(data),
            packet_data=data,
            options=options,
        )
        self._writer.write_block(block)
        self.units_written += 1


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Unit:
    """One recorded unit, in file order."""

    direction: Direction
    kind: UnitKind
    #: The CLTU, the CADU, or the Space Packet (without its UDP/IPv4 wrapping).
    data: bytes
    #: Time in seconds as the recorder passed it (nanosecond resolution).
    t: float
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture read back: the recorder's metadata and the units in file order."""

    #: The metadata mapping given to :class:`CaptureWriter`.
    metadata: Mapping[str, object]
    linkstack_version: str
    python_version: str
    units: tuple[Unit, ...]

    def link_config(self) -> LinkConfig | None:
        """The link configuration recorded in the metadata, None if it has none."""
        return link_config_from_metadata(self.metadata)


class _BlockReader:
    """The stream for python-pcapng: serves ``head`` (already read) first, counts the
    octets it hands out and refuses read sizes no block of ours can need."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream
        #: Octets handed out so far: the file offset of the next one.
        self.position = 0
        #: File offset of the block being read.
        self.block_start = 0

    def read(self, size: int = -1) -> bytes:
        if not 0 <= size <= MAX_BLOCK_OCTETS:
            raise CaptureError(
                f"corrupted block length: the reader was asked for {size} octets"
                f" (blocks of this format are at most {MAX_BLOCK_OCTETS})",
                offset=self.block_start,
            )
        data = self._head[self.position : self.position + size]
        while len(data) < size:  # a pipe or raw stream may return fewer octets
            more = self._stream.read(size - len(data))
            if not more:
                break
            data += more
        self.position += len(data)
        return data

    def tell(self) -> int:
        """python-pcapng checks alignment with it."""
        return self.position


def _check_magic(head: bytes) -> None:
    if not head:
        raise CaptureError("empty file: not a capture")
    if head[:4] in _PCAP_MAGICS:
        raise CaptureError(
            "a libpcap (.pcap) file, not pcapng: linkstack captures are pcapng",
            offset=0,
        )
    if head[:4] != _PCAPNG_MAGIC[: len(head[:4])]:
        raise CaptureError(f"not a pcapng file: it starts with {head[:8].hex()}", offset=0)


def _read_header(section: blocks.SectionHeader) -> dict[str, object]:
    comments = section.options.get_all("opt_comment") if "opt_comment" in section.options else []
    for comment in comments:
        try:
            header = json.loads(comment)
        except (TypeError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == FORMAT:
            if header.get("format_version") != FORMAT_VERSION:
                raise CaptureError(
                    f"linkstack capture format version {header.get('format_version')!r};"
                    f" this reader knows {FORMAT_VERSION}",
                    offset=0,
                )
            if not isinstance(header.get("metadata"), dict):
                raise CaptureError("linkstack metadata is not a JSON object", offset=0)
            return header
    raise CaptureError(
        "no linkstack metadata in the section header: a pcapng written by another tool",
        offset=0,
    )


def _interface_kind(block: blocks.InterfaceDescription, offset: int) -> UnitKind:
    name = block.options.get("if_name")
    for iface in _INTERFACES:
        if (iface.name, iface.link_type) == (name, block.link_type):
            if "if_tsresol" in block.options and block.options["if_tsresol"] != _TSRESOL_NS:
                raise CaptureError(f"interface {name} is not in nanoseconds", offset=offset)
            return iface.kind
    raise CaptureError(
        f"foreign interface {name!r} with link type {block.link_type}", offset=offset
    )


def _unit(block: blocks.EnhancedPacket, kinds: Mapping[int, UnitKind], offset: int) -> Unit:
    kind = kinds.get(block.interface_id)
    if kind is None:
        raise CaptureError(
            f"packet on interface {block.interface_id}, which is not described", offset=offset
        )
    flags = int(block.options["epb_flags"]) & 3 if "epb_flags" in block.options else 0
    direction = {_EPB_OUTBOUND: Direction.UPLINK, _EPB_INBOUND: Direction.DOWNLINK}.get(flags)
    if direction is None:
        raise CaptureError("packet without an inbound/outbound direction", offset=offset)
    expected = {UnitKind.CLTU: Direction.UPLINK, UnitKind.CADU: Direction.DOWNLINK}.get(kind)
    if expected not in (None, direction):
        raise CaptureError(f"{kind} recorded as {direction}", offset=offset)
    data = bytes(block.packet_data)
    if block.captured_len != block.packet_len or len(data) != block.packet_len:
        raise CaptureError(f"packet cut to {len(data)} of {block.packet_len} octets", offset=offset)
    if kind is UnitKind.PACKET:
        data = _packet_from_datagram(data, direction, offset)
    ns = (block.timestamp_high << 32) | block.timestamp_low
    comment = block.options.get("opt_comment")
    return Unit(direction, kind, data, ns / _NS_PER_S, comment)


#: What python-pcapng raises on bad input, besides its own exceptions.
_LIBRARY_ERRORS: Final = (
    pcapng.exceptions.PcapngException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    RuntimeError,
    UnicodeDecodeError,
    OverflowError,
)


def read_capture(stream: BinaryIO) -> Capture:
    """Read a capture written by :class:`CaptureWriter` from a binary stream.

    Raises :class:`CaptureError`, and nothing else, for an empty, truncated,
    corrupted or foreign file.
    """
    head = stream.read(8)
    _check_magic(head)
    source = _BlockReader(head, stream)
    scanner = pcapng.FileScanner(source)
    header: dict[str, object] | None = None
    kinds: dict[int, UnitKind] = {}
    units: list[Unit] = []
    block_end = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # strictness warnings; we check what we need
            for block in scanner:
                offset, block_end = block_end, source.position
                source.block_start = block_end
                if isinstance(block, blocks.SectionHeader):
                    if header is not None:
                        raise CaptureError(
                            "a second section: concatenated captures are not supported",
                            offset=offset,
                        )
                    header = _read_header(block)
                elif header is None:  # pragma: no cover - the scanner requires an SHB first
                    raise CaptureError("no section header", offset=offset)
                elif isinstance(block, blocks.InterfaceDescription):
                    kinds[len(kinds)] = _interface_kind(block, offset)
                elif isinstance(block, blocks.EnhancedPacket):
                    units.append(_unit(block, kinds, offset))
                else:
                    raise CaptureError(f"unexpected {type(block).__name__} block", offset=offset)
    except CaptureError:
        raise
    except pcapng.exceptions.TruncatedFile as exc:
        raise CaptureError(f"truncated file: {exc}", offset=block_end) from exc
    except _LIBRARY_ERRORS as exc:
        raise CaptureError(f"corrupted block: {exc}", offset=block_end) from exc
    if source.position != block_end:
        raise CaptureError(
            f"truncated file: {source.position - block_end} octets of an incomplete block",
            offset=block_end,
        )
    if header is None:
        raise CaptureError("truncated file: no whole section header", offset=0)
    if len(kinds) != len(_INTERFACES) or sorted(kinds.values()) != sorted(_BY_KIND):
        raise CaptureError(f"interfaces {sorted(kinds.values())}, expected {sorted(_BY_KIND)}")
    metadata = header["metadata"]
    if not isinstance(metadata, dict):  # pragma: no cover - checked by _read_header
        raise CaptureError("linkstack metadata is not a JSON object", offset=0)
    return Capture(
        metadata=metadata,
        linkstack_version=str(header.get("linkstack")),
        python_version=str(header.get("python")),
        units=tuple(units),
    )


def read_cadu_file(stream: BinaryIO, *, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """Chunks of a plain file of concatenated CADUs, as SDR tools write them.

    No timestamps and no alignment: feed the chunks to a :class:`CaduSynchronizer`
    (or ``GroundEndpoint.receive_bytes``).  Raises :class:`CaptureError` for an empty
    file and for a pcap or pcapng file, which is not a plain CADU file.
    """
    if chunk_size < 1:
        raise LocalProtocolError(f"chunk_size {chunk_size} must be at least 1")
    first = stream.read(chunk_size)
    if not first:
        raise CaptureError("empty file: no CADUs")
    if first[:4] == _PCAPNG_MAGIC:
        raise CaptureError("a pcapng file, not a plain CADU file: read it as a capture", offset=0)
    if first[:4] in _PCAP_MAGICS:
        raise CaptureError("a libpcap (.pcap) file, not a plain CADU file", offset=0)
    return _chunks(first, stream, chunk_size)


def _chunks(first: bytes, stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    chunk = first
    while chunk:
        yield chunk
        chunk = stream.read(chunk_size)


# ----------------------------------------------------------------------------- summary


@dataclass(slots=True)
class DirectionSummary:
    """Units, octets and times of one direction."""

    units: Counter[str] = field(default_factory=Counter)
    octets: Counter[str] = field(default_factory=Counter)
    first_t: float | None = None
    last_t: float | None = None


@dataclass(slots=True)
class CaptureSummary:
    """What ``linkstack capture info`` reports."""

    linkstack_version: str
    python_version: str
    metadata: Mapping[str, object]
    #: False when the metadata has no link configuration and the defaults were used.
    link_from_metadata: bool
    directions: dict[str, DirectionSummary] = field(default_factory=dict)
    #: Decoded from the CLTUs: TC frames per VCID, packets per APID.
    tc_frames_per_vc: Counter[int] = field(default_factory=Counter)
    tc_packets_per_apid: Counter[int] = field(default_factory=Counter)
    tc_corrected_bits: int = 0
    #: Decoded from the CADUs: TM frames per VCID (OID frames under their VCID),
    #: packets per APID.
    tm_frames_per_vc: Counter[int] = field(default_factory=Counter)
    tm_packets_per_apid: Counter[int] = field(default_factory=Counter)
    rs_corrected_symbols: int = 0
    rs_uncorrectable: int = 0
    sync_losses: int = 0
    tm_frames_lost: int = 0
    #: Recorded (already decoded) Space Packets per direction and APID.
    recorded_packets_per_apid: dict[str, Counter[int]] = field(default_factory=dict)
    #: Drops by ``layer/reason``, from every decoder above.
    drops: Counter[str] = field(default_factory=Counter)

    @property
    def first_t(self) -> float | None:
        times = [d.first_t for d in self.directions.values() if d.first_t is not None]
        return min(times) if times else None

    @property
    def last_t(self) -> float | None:
        times = [d.last_t for d in self.directions.values() if d.last_t is not None]
        return max(times) if times else None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dictionary (integer keys become strings)."""
        first, last = self.first_t, self.last_t
        return {
            "linkstack_version": self.linkstack_version,
            "python_version": self.python_version,
            "metadata": dict(self.metadata),
            "link_from_metadata": self.link_from_metadata,
            "first_t": first,
            "last_t": last,
            "duration_s": None if first is None or last is None else last - first,
            "directions": {
                name: {
                    "units": dict(d.units),
                    "octets": dict(d.octets),
                    "total_units": sum(d.units.values()),
                    "total_octets": sum(d.octets.values()),
                    "first_t": d.first_t,
                    "last_t": d.last_t,
                }
                for name, d in self.directions.items()
            },
            "uplink_decoded": {
                "tc_frames_per_vc": _keys(self.tc_frames_per_vc),
                "packets_per_apid": _keys(self.tc_packets_per_apid, apid=True),
                "corrected_bits": self.tc_corrected_bits,
            },
            "downlink_decoded": {
                "tm_frames_per_vc": _keys(self.tm_frames_per_vc),
                "packets_per_apid": _keys(self.tm_packets_per_apid, apid=True),
                "rs_corrected_symbols": self.rs_corrected_symbols,
                "rs_uncorrectable": self.rs_uncorrectable,
                "sync_losses": self.sync_losses,
                "frames_lost": self.tm_frames_lost,
            },
            "recorded_packets_per_apid": {
                name: _keys(counts, apid=True)
                for name, counts in self.recorded_packets_per_apid.items()
            },
            "drops": dict(sorted(self.drops.items())),
        }


def _keys(counter: Counter[int], *, apid: bool = False) -> dict[str, int]:
    """JSON object keys: VCIDs in decimal, APIDs in hex as docs/protocol.md writes them."""
    return {(f"0x{key:03X}" if apid else str(key)): value for key, value in sorted(counter.items())}


def _apid(packet: bytes) -> int:
    return ((packet[0] & 0x07) << 8) | packet[1]


def summarize(capture: Capture) -> CaptureSummary:
    """Count a capture's units and decode its CLTUs and CADUs with the recorded link."""
    config = capture.link_config()
    summary = CaptureSummary(
        linkstack_version=capture.linkstack_version,
        python_version=capture.python_version,
        metadata=capture.metadata,
        link_from_metadata=config is not None,
    )
    config = config or LinkConfig()
    for unit in capture.units:
        side = summary.directions.setdefault(unit.direction.value, DirectionSummary())
        side.units[unit.kind.value] += 1
        side.octets[unit.kind.value] += len(unit.data)
        side.first_t = unit.t if side.first_t is None else min(side.first_t, unit.t)
        side.last_t = unit.t if side.last_t is None else max(side.last_t, unit.t)
        if unit.kind is UnitKind.PACKET and len(unit.data) >= PRIMARY_HEADER_LENGTH:
            counts = summary.recorded_packets_per_apid.setdefault(unit.direction.value, Counter())
            counts[_apid(unit.data)] += 1
    _summarize_uplink(capture, config, summary)
    _summarize_downlink(capture, config, summary)
    return summary


def _summarize_uplink(capture: Capture, config: LinkConfig, summary: CaptureSummary) -> None:
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=config.tc_randomize)
    reassembler = TcReassembler(deblock_packets=True)
    drops = DropCounter()
    tc = config.tc
    for unit in capture.units:
        if unit.kind is not UnitKind.CLTU:
            continue
        decoder.receive_bytes(unit.data)
        decoder.channel_deactivation()  # each recorded CLTU is one carrier burst
        while (event := decoder.next_event()) is not None:
            if not isinstance(event, CltuDecoded):
                drops.count(event)
                continue
            summary.tc_corrected_bits += event.corrected_bits
            try:
                vcid = peek_vcid(event.data)
                frame_bytes = event.data[: peek_frame_length(event.data)]
                summary.tc_frames_per_vc[vcid] += 1
                if vcid != tc.vcid:
                    continue
                frame = TcFrame.from_bytes(frame_bytes, config=tc)
            except RemoteProtocolError as exc:
                drops.count(Dropped.from_error(exc, octets=len(event.data)))
                continue
            reassembler.receive_frame(frame, now=unit.t)
            while (out := reassembler.next_event()) is not None:
                if isinstance(out, UnitReceived):
                    summary.tc_packets_per_apid[_apid(out.data)] += 1
                else:
                    drops.count(out)
    summary.drops.update(drops)


def _summarize_downlink(capture: Capture, config: LinkConfig, summary: CaptureSummary) -> None:
    synchronizer = CaduSynchronizer(config.tm_coding)
    depacketizer = TmDepacketizer(config.tm)
    drops = DropCounter()

    def receive_frame(frame: bytes) -> None:
        try:
            parsed = TmFrame.from_bytes(frame, config=config.tm)
        except RemoteProtocolError:
            depacketizer.receive_frame(frame)  # drops it and counts the drop
            return
        summary.tm_frames_per_vc[parsed.vcid] += 1
        depacketizer.receive_tm_frame(parsed)

    def drain() -> None:
        while (event := synchronizer.next_event()) is not None:
            if isinstance(event, FrameDecoded):
                summary.rs_corrected_symbols += sum(event.corrected)
                receive_frame(event.frame)
            elif isinstance(event, Dropped):
                if event.reason == "uncorrectable":
                    summary.rs_uncorrectable += 1
                drops.count(event)
            elif isinstance(event, SyncLost):
                summary.sync_losses += 1
        while (out := depacketizer.next_event()) is not None:
            if isinstance(out, PacketReceived):
                summary.tm_packets_per_apid[_apid(out.packet)] += 1
            elif isinstance(out, FramesLost):
                if out.vcid is None:
                    summary.tm_frames_lost += out.missing
            elif isinstance(out, Dropped):
                drops.count(out)

    for unit in capture.units:
        if unit.kind is UnitKind.CADU:
            synchronizer.receive_bytes(unit.data)
            drain()
    synchronizer.flush()
    drain()
    summary.drops.update(drops)
