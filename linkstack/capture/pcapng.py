"""Packet captures of a linkstack session: pcapng files of the radio boundary.

One capture file (pcapng, IETF draft-ietf-opsawg-pcapng, "the draft" below) holds one
section whose Section Header Block carries the session metadata as JSON in its
comment, and three interfaces:

====  ==================  ==================  ==========================================
 id   if_name             link type           what each Enhanced Packet Block holds
====  ==================  ==================  ==========================================
 0    linkstack-uplink    LINKTYPE_USER0 147  one CLTU as the recording side saw it
 1    linkstack-downlink  LINKTYPE_USER1 148  one CADU as the recording side saw it
 2    linkstack-packets   LINKTYPE_IPV4  228  one decoded Space Packet in a UDP datagram
====  ==================  ==================  ==========================================

The metadata's ``side`` says which end recorded, and each interface's
``if_description`` says it in words: a ground recording holds the CLTUs as the ground
sent them and the CADUs as it received them, bit errors included; a spacecraft
recording the CLTUs as received and the CADUs as sent.  Directions are the ground
station's on either side, in ``epb_flags`` (draft 4.3.1): uplink CLTUs and uplink (TC)
packets are *outbound*, downlink CADUs and (TM) packets *inbound*.  Space Packets
travel between the documentation addresses :data:`GROUND_ADDRESS` and
:data:`SPACECRAFT_ADDRESS` (RFC 5737), source and destination port
:data:`PACKET_UDP_PORT`, so Wireshark dissects them with no plugin::

    tshark -r FILE -d udp.port==52001,ccsds -Y ccsds \\
        -T fields -e frame.time_epoch -e ccsds.apid -e ccsds.seqflag -e ccsds.seqnum -e ccsds.length

Time: the recorder's clock is monotonic (an event loop's), which says nothing about the
date.  A writer given a :class:`TimeReference` (the wall clock and the recorder's clock
read at the same moment, the session's start) records each ``t`` as Unix time,
``unix_ns + (t - clock_s)``, in integer nanoseconds (``if_tsresol`` 9), so Wireshark
shows the real date while the order stays the monotonic clock's; the reference is
written into the metadata (``time_reference``) and :func:`read_capture` gives each
unit's ``t`` back as seconds since the start, to the nanosecond.  Without a reference
(older captures) ``t`` is stored and read back as it was given: it equals the one
written whenever ``t`` is the float nearest a whole number of nanoseconds, or is at
least 2**23 s, where the float spacing is coarser than 1 ns.

Crashes: each block goes to the stream in one ``write`` followed by a ``flush``, so a
recorder killed mid-session (``kill -9``) leaves every block it wrote whole but the one
being written.  :func:`read_capture` reads such a file up to its last whole block and
says what it dropped (:class:`TruncatedTail`): the start of a block the file ends
inside, or a zero-filled tail (what a file system may leave after a power loss).  Any
other damage, in the middle of the file or at its end, is a :class:`CaptureError`.

Library: python-pcapng (2.1.1) writes and reads the whole block model we need
(Section Header options and comments, several Interface Description Blocks each
with its own link type, ``if_tsresol``, Enhanced Packet Blocks with ``epb_flags`` and
comments); scapy's pcapng writer writes neither Section Header options nor
``if_description``/``if_tsresol`` and imports a whole packet toolkit, and dpkt's pcapng
Reader takes the first interface's link type for every packet, so it cannot read a
multi-interface file back.  python-pcapng writes a block in four ``write`` calls and
never flushes, so the writer has it encode each block into memory and writes the
block itself; the reader cuts the file into whole blocks itself (draft 3.1) and hands
python-pcapng only whole blocks to parse.  The tests read our files again with dpkt's
block classes and with tshark, as independent readers.

Sans-I/O: the caller opens the stream and reads the clocks; this module reads and
writes only the stream it is given.  Keys never enter a capture: metadata keys that
look like key material are refused with :class:`SecretInMetadata`.
"""

from __future__ import annotations

import datetime
import io
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
from linkstack.coding.reed_solomon import Basis
from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded, SyncLost, TmCodingConfig
from linkstack.endpoints import LinkConfig
from linkstack.errors import (
    DropCounter,
    Dropped,
    LinkError,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.packets.space_packet import PRIMARY_HEADER_LENGTH, peek_packet_length
from linkstack.radio.channel import LinkProfile
from linkstack.tc.frame import TcFrame, TcReassembler, UnitReceived, peek_frame_length, peek_vcid
from linkstack.tm.frame import FramesLost, PacketReceived, TmDepacketizer, TmFrame

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GROUND_ADDRESS",
    "LINKTYPE_IPV4",
    "LINKTYPE_USER0",
    "LINKTYPE_USER1",
    "PACKET_UDP_PORT",
    "SPACECRAFT_ADDRESS",
    "TIME_REFERENCE_KEY",
    "Capture",
    "CaptureError",
    "CaptureSummary",
    "CaptureWriter",
    "Direction",
    "SecretInMetadata",
    "TailReason",
    "TimeReference",
    "TruncatedTail",
    "Unit",
    "UnitKind",
    "interface_descriptions",
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
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D  # Section Header Block, after its length (draft 4.1)
_BLOCK_IDB: Final = 0x00000001  # Interface Description Block type (draft 4.2)
_BLOCK_EPB: Final = 0x00000006  # Enhanced Packet Block type (draft 4.3)
#: Block Type, Block Total Length, ..., Block Total Length again (draft 3.1): the
#: smallest block is these three 32-bit fields.
_BLOCK_HEADER_OCTETS: Final = 8
_BLOCK_TRAILER_OCTETS: Final = 4
_MIN_BLOCK_OCTETS: Final = _BLOCK_HEADER_OCTETS + _BLOCK_TRAILER_OCTETS
_BLOCK_ALIGN: Final = 4  # Block Total Length is a multiple of 4 (draft 3.1)
#: Enhanced Packet Block (draft 4.3): type, length, Interface ID, Timestamp (Upper),
#: Timestamp (Lower), Captured Packet Length, Original Packet Length, then the packet
#: data padded to 32 bits, the options, and the trailing length.
_EPB_CAPTURED_LENGTH_AT: Final = 20
_EPB_FIXED_OCTETS: Final = 28
#: Option Code and Option Length, 16 bits each, then the value padded to 32 bits; code
#: 0, opt_endofopt, ends the list (draft 3.5).
_OPTION_HEADER_OCTETS: Final = 4
_OPT_ENDOFOPT: Final = 0
#: What a zero-filled tail is checked in: read this many octets at a time.
_TAIL_CHUNK_OCTETS: Final = 1 << 16
_PCAP_MAGICS: Final = {  # libpcap file header magic, both byte orders, us and ns
    bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1")
}
_EPB_INBOUND: Final = 1  # epb_flags bits 0-1 (draft 4.3.1)
_EPB_OUTBOUND: Final = 2

_SECRET_KEY: Final = re.compile(r"key|secret|master", re.IGNORECASE)

#: The metadata entry the writer adds for its :class:`TimeReference`.
TIME_REFERENCE_KEY: Final = "time_reference"


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


_INTERFACES: Final = (
    _Interface(UnitKind.CLTU, "linkstack-uplink", LINKTYPE_USER0),
    _Interface(UnitKind.CADU, "linkstack-downlink", LINKTYPE_USER1),
    _Interface(UnitKind.PACKET, "linkstack-packets", LINKTYPE_IPV4),
)
_BY_KIND: Final = {iface.kind: index for index, iface in enumerate(_INTERFACES)}

_CLTU_BOOK: Final = "CCSDS 231.0-B-4"
_CADU_BOOK: Final = "CCSDS 131.0-B-5"
_PACKET_BOOK: Final = "CCSDS 133.0-B-2"
_DATAGRAMS: Final = (
    f"in UDP/IPv4, port {PACKET_UDP_PORT}, ground {GROUND_ADDRESS}, spacecraft {SPACECRAFT_ADDRESS}"
)
#: ``if_description`` of each interface (draft 4.2, option 3) for the side that
#: recorded (the metadata's ``side``; None when it names neither).
_DESCRIPTIONS: Final[Mapping[str | None, Mapping[UnitKind, str]]] = {
    "ground": {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}) as sent by the ground, one per packet",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}) as received by the ground, bit errors"
        " included, one per packet (on a TCP link: the stream as each read returned it)",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) sent and received whole by the"
        f" ground, {_DATAGRAMS}",
    },
    "spacecraft": {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}) as received by the spacecraft, bit errors"
        " included, one per packet; outbound: directions are the ground's",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}) as sent by the spacecraft, one per"
        " packet; inbound: directions are the ground's",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) sent and received whole by the"
        f" spacecraft, {_DATAGRAMS}; directions are the ground's",
    },
    None: {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}), one per packet",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}), one per packet",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) {_DATAGRAMS}",
    },
}


def interface_descriptions(side: object) -> dict[str, str]:
    """``if_name`` -> ``if_description`` the writer gives a recording by ``side``
    ("ground", "spacecraft", anything else for neither)."""
    key = side if isinstance(side, str) and side in _DESCRIPTIONS else None
    by_kind = _DESCRIPTIONS[key]
    return {iface.name: by_kind[iface.kind] for iface in _INTERFACES}


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


# ----------------------------------------------------------------------------- time


@dataclass(frozen=True, slots=True)
class TimeReference:
    """Where a session's clock stands in Unix time: at its start, the wall clock read
    ``unix_ns`` and the recorder's (monotonic) clock read ``clock_s``.

    A writer given one records ``t`` as ``unix_ns + (t - clock_s)`` nanoseconds (Unix
    time, UTC), and :func:`read_capture` gives ``t`` back as seconds since the start.
    """

    #: Wall clock at the start: nanoseconds since 1970-01-01T00:00:00Z.
    unix_ns: int
    #: The recorder's clock at that moment, seconds (``loop.time()``).
    clock_s: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.unix_ns, bool) or not isinstance(self.unix_ns, int):
            raise LocalProtocolError(f"unix_ns {self.unix_ns!r} is not an integer")
        if not 0 <= self.unix_ns <= _MAX_NS:
            raise LocalProtocolError(
                f"unix_ns {self.unix_ns} outside 0..{_MAX_NS}, the 64-bit timestamp (draft 4.3)"
            )
        if not (isinstance(self.clock_s, int | float) and math.isfinite(self.clock_s)):
            raise LocalProtocolError(f"clock_s {self.clock_s!r} is not a finite number of seconds")

    @property
    def unix_s(self) -> float:
        """The start in Unix seconds."""
        return self.unix_ns / _NS_PER_S

    @property
    def utc(self) -> str:
        """The start in ISO 8601, UTC, to the nanosecond: ``2025-06-01T12:00:00.000000001Z``."""
        seconds, ns = divmod(self.unix_ns, _NS_PER_S)
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"

    def to_json(self) -> dict[str, object]:
        """The metadata entry :data:`TIME_REFERENCE_KEY`."""
        return {
            "unix_ns": self.unix_ns,
            "unix_s": self.unix_s,
            "utc": self.utc,
            "clock_s": self.clock_s,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> TimeReference | None:
        """The reference a capture's metadata names, None if it names none.

        Raises :class:`CaptureError` when the entry is there but does not parse.
        """
        entry = metadata.get(TIME_REFERENCE_KEY)
        if entry is None:
            return None
        try:
            if not isinstance(entry, Mapping):
                raise TypeError(f"it is a {type(entry).__name__}, not an object")
            clock_s = entry.get("clock_s", 0.0)
            if isinstance(clock_s, bool) or not isinstance(clock_s, int | float):
                raise TypeError(f"clock_s {clock_s!r} is not a number")
            return cls(unix_ns=entry["unix_ns"], clock_s=float(clock_s))
        except (KeyError, TypeError, LocalProtocolError) as exc:
            raise CaptureError(
                f"{TIME_REFERENCE_KEY} in the metadata does not parse: {exc}", offset=0
            ) from exc


# ----------------------------------------------------------------------------- cut tails


class TailReason(StrEnum):
    """What the octets after a capture's last whole block are."""

    CUT_BLOCK = "cut-block"  # the start of a block the file ends inside
    ZERO_FILL = "zero-fill"  # zeros, as a file system may leave after a power loss


@dataclass(frozen=True, slots=True)
class TruncatedTail:
    """The end of a capture that holds no whole block: a recording cut short (a crash,
    ``kill -9``, a full disk).  The units before it were read; these octets were not."""

    #: File offset where the last whole block ends: the first octet not read.
    offset: int
    #: Octets from there to the end of the file.
    octets: int
    reason: TailReason

    def __str__(self) -> str:
        what = {
            TailReason.CUT_BLOCK: "the start of a block the file ends inside",
            TailReason.ZERO_FILL: "zeros",
        }[self.reason]
        return (
            f"tail cut: the last {self.octets} octets, from file offset {self.offset}, are"
            f" {what} (a recording cut short); the units before them were read"
        )

    def to_json(self) -> dict[str, object]:
        return {"offset": self.offset, "octets": self.octets, "reason": self.reason.value}


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


def _timestamp_ns(t: float, reference: TimeReference | None) -> int:
    """``t`` as the 64-bit nanosecond timestamp (draft 4.3, ``if_tsresol`` 9): Unix time
    with a reference, ``t`` itself without."""
    if not (isinstance(t, int | float) and math.isfinite(t)):
        raise LocalProtocolError(f"time t={t!r} is not a finite number of seconds")
    if reference is None:
        ns = round(Fraction(t) * _NS_PER_S)
    else:
        ns = reference.unix_ns + round((Fraction(t) - Fraction(reference.clock_s)) * _NS_PER_S)
    if not 0 <= ns <= _MAX_NS:
        since = "" if reference is None else f" ({reference.unix_ns} ns + t - {reference.clock_s})"
        raise LocalProtocolError(
            f"time t={t} s gives a timestamp of {ns} ns{since}, outside 0..{_MAX_NS}"
            f" ({_MAX_NS / _NS_PER_S:.0f} s, the 64-bit timestamp, draft 4.3)"
        )
    return ns


class CaptureWriter:
    """Writes one capture to a binary stream the caller opened (and closes).

    The Section Header (with the metadata) and the three Interface Description
    Blocks are written at construction, each ``record_*`` call one Enhanced Packet
    Block: each time in one ``write`` of whole blocks, then a ``flush``, so a capture
    cut short by a crash is readable up to its last whole block.

    ``time_reference`` (the session's start in wall-clock and recorder-clock time)
    makes the timestamps Unix time and goes into the metadata as
    :data:`TIME_REFERENCE_KEY`, which the caller's metadata must not hold.  The
    metadata's ``side`` ("ground" or "spacecraft") chooses the interface descriptions.
    """

    def __init__(
        self,
        stream: BinaryIO,
        metadata: Mapping[str, object],
        *,
        time_reference: TimeReference | None = None,
    ) -> None:
        _check_no_secrets(metadata, "")
        if TIME_REFERENCE_KEY in metadata:
            raise LocalProtocolError(
                f"metadata key {TIME_REFERENCE_KEY!r} is the writer's own: pass"
                " time_reference=TimeReference(...) instead"
            )
        if time_reference is not None and not isinstance(time_reference, TimeReference):
            raise LocalProtocolError(f"time_reference {time_reference!r} is not a TimeReference")
        recorded = dict(metadata)
        if time_reference is not None:
            recorded[TIME_REFERENCE_KEY] = time_reference.to_json()
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "linkstack": __version__,
            "python": _python_version(),
            "metadata": recorded,
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
        self._reference = time_reference
        self._section = blocks.SectionHeader(
            options={"shb_userappl": f"linkstack {__version__}", "opt_comment": comment}
        )
        descriptions = interface_descriptions(metadata.get("side"))
        self._interfaces = [
            self._section.new_member(
                blocks.InterfaceDescription,
                link_type=iface.link_type,
                snaplen=0,  # no limit (draft 4.2)
                options={
                    "if_name": iface.name,
                    "if_description": descriptions[iface.name],
                    "if_tsresol": _TSRESOL_NS,
                },
            )
            for iface in _INTERFACES
        ]
        # python-pcapng writes a block in several writes: it writes to memory, and
        # _emit() hands the stream whole blocks in one write.
        self._encoded = io.BytesIO()
        with warnings.catch_warnings():
            # python-pcapng's own schema gives if_tsresol no type and warns about it.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._writer = pcapng.FileWriter(self._encoded, self._section)
        self._emit()
        self._identification = 0
        #: Enhanced Packet Blocks written.
        self.units_written = 0

    @property
    def time_reference(self) -> TimeReference | None:
        """The reference the timestamps are Unix time by, None if they are ``t`` as given."""
        return self._reference

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
        """Flush the underlying stream (each block is flushed as it is written)."""
        self._stream.flush()

    def _emit(self) -> None:
        """Write the encoded blocks to the stream in one write, then flush it."""
        data = self._encoded.getvalue()
        self._encoded.seek(0)
        self._encoded.truncate()
        view = memoryview(data)
        while view:  # a raw stream may take fewer octets than it is given
            written = self._stream.write(view)
            if not written:
                raise LocalProtocolError(
                    f"the capture stream took {written!r} of {len(view)} octets:"
                    " a non-blocking stream cannot hold a capture"
                )
            view = view[written:]
        self._stream.flush()

    def _record(
        self, kind: UnitKind, direction: Direction, data: bytes, t: float, comment: str | None
    ) -> None:
        if not data:
            raise LocalProtocolError(f"empty {kind}: nothing to record")
        ns = _timestamp_ns(t, self._reference)
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
        self._emit()
        self.units_written += 1


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Unit:
    """One recorded unit, in file order."""

    direction: Direction
    kind: UnitKind
    #: The CLTU, the CADU, or the Space Packet (without its UDP/IPv4 wrapping).
    data: bytes
    #: Seconds since the session's start when the capture names a
    #: :class:`TimeReference`; else the time as the recorder passed it.  Nanosecond
    #: resolution either way.
    t: float
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture read back: the recorder's metadata and the units in file order."""

    #: The metadata mapping given to :class:`CaptureWriter` (with the writer's
    #: :data:`TIME_REFERENCE_KEY` entry when it was given a reference).
    metadata: Mapping[str, object]
    linkstack_version: str
    python_version: str
    units: tuple[Unit, ...]
    #: What was dropped after the last whole block of a recording cut short, None for
    #: a whole file.
    truncated: TruncatedTail | None = None
    #: The session's start; the units' ``t`` count from it.  None in older captures.
    time_reference: TimeReference | None = None

    def link_config(self) -> LinkConfig | None:
        """The link configuration recorded in the metadata, None if it has none."""
        return link_config_from_metadata(self.metadata)


def _trailing_zeros_start(data: bytes) -> int:
    """Where the run of zero octets that ends ``data`` begins (``len(data)`` if none)."""
    return len(data.rstrip(b"\x00"))


def _epb_end(prefix: bytes, order: str) -> int | None:
    """Where the Enhanced Packet Block that ``prefix`` begins ends, as its own fields
    (Captured Packet Length, the options up to opt_endofopt, draft 4.3 and 3.5) say;
    None when ``prefix`` ends before they say it.  An EPB without options ends after its
    packet data: that cannot be told from a prefix, so it also gives None."""
    if len(prefix) < _EPB_FIXED_OCTETS:
        return None
    (captured,) = struct.unpack_from(order + "I", prefix, _EPB_CAPTURED_LENGTH_AT)
    at = _EPB_FIXED_OCTETS + -(-captured // _BLOCK_ALIGN) * _BLOCK_ALIGN
    while at + _OPTION_HEADER_OCTETS <= len(prefix):
        code, length = struct.unpack_from(order + "HH", prefix, at)
        at += _OPTION_HEADER_OCTETS
        if code == _OPT_ENDOFOPT:
            return int(at) + _BLOCK_TRAILER_OCTETS
        at += -(-length // _BLOCK_ALIGN) * _BLOCK_ALIGN
    return None


class _Framer:
    """Cuts a capture into whole blocks (draft 3.1: type, total length, body, the total
    length again), checking each block's lengths before python-pcapng parses it.

    Where the file ends inside a block, or is zeros from inside a block to its end, the
    framer stops there and keeps what it dropped in :attr:`tail`; any other bad block
    is a :class:`CaptureError` at its offset.
    """

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream
        #: Octets read from the file so far: the offset of the next one.
        self.position = 0
        #: File offset of the block framed last.
        self.block_start = 0
        self._order: str | None = None  # struct byte order of the section
        self.tail: TruncatedTail | None = None

    def _read(self, size: int) -> bytes:
        data = self._head[self.position : self.position + size]
        while len(data) < size:  # a pipe or raw stream may return fewer octets
            more = self._stream.read(size - len(data))
            if not more:
                break
            data += more
        self.position += len(data)
        return data

    def next_block(self) -> bytes | None:
        """The next whole block, None at the end of the file or of its last whole block."""
        if self.tail is not None:
            return None
        start = self.block_start = self.position
        block = self._read(_BLOCK_HEADER_OCTETS)
        if not block:
            return None
        if len(block) < _BLOCK_HEADER_OCTETS:
            self._ends_inside(start, block, declared=None)
            return None
        if block[:4] == _PCAPNG_MAGIC:
            if self._order is not None:
                raise CaptureError(
                    "a second section: concatenated captures are not supported", offset=start
                )
            block += self._read(4)
            if len(block) < _BLOCK_HEADER_OCTETS + 4:
                self._ends_inside(start, block, declared=None)
                return None
            orders = [
                o for o in "<>" if struct.unpack_from(o + "I", block, 8)[0] == _BYTE_ORDER_MAGIC
            ]
            if not orders:
                raise CaptureError(
                    f"corrupted section header: byte-order magic {block[8:12].hex()},"
                    f" not {_BYTE_ORDER_MAGIC:08x} in either byte order (draft 4.1)",
                    offset=start,
                )
            self._order = orders[0]
        elif self._order is None:  # pragma: no cover - _check_magic saw the SHB type
            raise CaptureError("no section header", offset=start)
        (length,) = struct.unpack_from(self._order + "I", block, 4)
        if not _MIN_BLOCK_OCTETS <= length <= MAX_BLOCK_OCTETS or length % _BLOCK_ALIGN:
            self._bad(
                start,
                block,
                f"corrupted block length: {length} octets (a block is {_MIN_BLOCK_OCTETS} to"
                f" {MAX_BLOCK_OCTETS} octets here, a multiple of {_BLOCK_ALIGN}; draft 3.1)",
            )
            return None
        block += self._read(length - len(block))
        if len(block) < length:
            self._ends_inside(start, block, declared=length)
            return None
        (trailer,) = struct.unpack_from(self._order + "I", block, length - _BLOCK_TRAILER_OCTETS)
        if trailer != length:
            self._bad(
                start,
                block,
                f"corrupted block: its trailing length {trailer} is not its leading"
                f" length {length} (draft 3.1)",
            )
            return None
        return block

    def _cut(self, start: int, octets: int, reason: TailReason) -> None:
        self.tail = TruncatedTail(offset=start, octets=octets, reason=reason)

    def _ends_inside(self, start: int, prefix: bytes, *, declared: int | None) -> None:
        """The file ends inside the block at ``start``: a cut tail if ``prefix`` can be
        the start of a block this format writes, else a CaptureError."""
        if not prefix.strip(b"\x00"):
            self._cut(start, len(prefix), TailReason.ZERO_FILL)
            return
        # The writer writes a Section Header, then Interface Descriptions, then
        # Enhanced Packet Blocks: a cut block is one of these.
        if start == 0 or self._order is None:
            types = [_PCAPNG_MAGIC]
        else:
            types = [struct.pack(self._order + "I", kind) for kind in (_BLOCK_IDB, _BLOCK_EPB)]
        kind = prefix[:4]
        if not any(t.startswith(kind) for t in types):
            raise CaptureError(
                f"corrupted block: the file ends with {len(prefix)} octets that begin no"
                f" block of a linkstack capture (block type {kind.hex()})",
                offset=start,
            )
        epb = self._order is not None and start != 0 and kind == types[-1]
        if declared is not None and epb and self._order is not None:
            # An Enhanced Packet Block whose own fields end before the file does has a
            # corrupted length, not a cut: the blocks after it are in the file.  Zeros at
            # the end are left out: they may be a zero-filled end, not the block's own.
            whole = prefix[: _trailing_zeros_start(prefix)]
            end = _epb_end(whole, self._order)
            if end is not None and end != declared:
                raise CaptureError(
                    f"corrupted block length: {declared} octets, but its packet and options"
                    f" end at {end} (draft 4.3)",
                    offset=start,
                )
        self._cut(start, len(prefix), TailReason.CUT_BLOCK)

    def _bad(self, start: int, block: bytes, problem: str) -> None:
        """The block at ``start`` is bad: a cut tail if zeros run from inside it (its
        trailing length or earlier) to the end of the file, else a CaptureError."""
        zeros_from = _trailing_zeros_start(block)
        rest = 0
        if zeros_from <= len(block) - _BLOCK_TRAILER_OCTETS:
            while chunk := self._read(_TAIL_CHUNK_OCTETS):
                if chunk.strip(b"\x00"):
                    break
                rest += len(chunk)
            else:
                self._cut(start, len(block) + rest, TailReason.ZERO_FILL)
                return
        raise CaptureError(problem, offset=start)


class _BlockStream:
    """The stream python-pcapng reads: the framer's whole blocks, one after another."""

    def __init__(self, framer: _Framer) -> None:
        self._framer = framer
        self._block = b""
        self._at = 0
        self._served = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:  # pragma: no cover - python-pcapng always reads a given size
            raise CaptureError("read of an unbounded size", offset=self._framer.block_start)
        data = b""
        while len(data) < size:
            if self._at == len(self._block):
                block = self._framer.next_block()
                if block is None:
                    break
                self._block, self._at = block, 0
            piece = self._block[self._at : self._at + size - len(data)]
            self._at += len(piece)
            data += piece
        self._served += len(data)
        return data

    def tell(self) -> int:
        """python-pcapng checks alignment with it."""
        return self._served


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


def _unit(
    block: blocks.EnhancedPacket, kinds: Mapping[int, UnitKind], offset: int, start_ns: int
) -> Unit:
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
    ns = ((block.timestamp_high << 32) | block.timestamp_low) - start_ns
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

    A capture cut short (its last block cut, or zeros from inside it to the end) is
    read up to its last whole block, and :attr:`Capture.truncated` says what was
    dropped.  Raises :class:`CaptureError`, and nothing else, for an empty, corrupted
    or foreign file, and for one cut before its interfaces are all described.
    """
    head = stream.read(8)
    _check_magic(head)
    framer = _Framer(head, stream)
    scanner = pcapng.FileScanner(_BlockStream(framer))
    header: dict[str, object] | None = None
    reference: TimeReference | None = None
    kinds: dict[int, UnitKind] = {}
    units: list[Unit] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # strictness warnings; we check what we need
            for block in scanner:
                offset = framer.block_start
                if isinstance(block, blocks.SectionHeader):
                    header = _read_header(block)
                    metadata = header["metadata"]
                    if isinstance(metadata, Mapping):
                        reference = TimeReference.from_metadata(metadata)
                elif header is None:  # pragma: no cover - the scanner requires an SHB first
                    raise CaptureError("no section header", offset=offset)
                elif isinstance(block, blocks.InterfaceDescription):
                    kinds[len(kinds)] = _interface_kind(block, offset)
                elif isinstance(block, blocks.EnhancedPacket):
                    start_ns = 0 if reference is None else reference.unix_ns
                    units.append(_unit(block, kinds, offset, start_ns))
                else:
                    raise CaptureError(f"unexpected {type(block).__name__} block", offset=offset)
    except CaptureError:
        raise
    except _LIBRARY_ERRORS as exc:
        raise CaptureError(f"corrupted block: {exc}", offset=framer.block_start) from exc
    tail = framer.tail
    if header is None:
        raise CaptureError(
            "truncated file: no whole section header" + ("" if tail is None else f"; {tail}"),
            offset=0,
        )
    if len(kinds) != len(_INTERFACES) or sorted(kinds.values()) != sorted(_BY_KIND):
        if len(kinds) < len(_INTERFACES) and not units:
            raise CaptureError(
                "truncated file: it ends before its interfaces are all described"
                + ("" if tail is None else f"; {tail}"),
                offset=framer.position if tail is None else tail.offset,
            )
        raise CaptureError(f"interfaces {sorted(kinds.values())}, expected {sorted(_BY_KIND)}")
    metadata = header["metadata"]
    if not isinstance(metadata, dict):  # pragma: no cover - checked by _read_header
        raise CaptureError("linkstack metadata is not a JSON object", offset=0)
    return Capture(
        metadata=metadata,
        linkstack_version=str(header.get("linkstack")),
        python_version=str(header.get("python")),
        units=tuple(units),
        truncated=tail,
        time_reference=reference,
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
    #: What a recording cut short lost after its last whole block, None for a whole file.
    truncated: TruncatedTail | None = None
    #: The session's start (the times count from it), None in older captures.
    time_reference: TimeReference | None = None
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
            "truncated": None if self.truncated is None else self.truncated.to_json(),
            "started_utc": None if self.time_reference is None else self.time_reference.utc,
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
        truncated=capture.truncated,
        time_reference=capture.time_reference,
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
