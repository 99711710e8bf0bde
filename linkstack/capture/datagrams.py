"""The UDP/IPv4 datagrams a capture wraps each recorded Space Packet in.

A capture's third interface (link type LINKTYPE_IPV4, 228) holds one Space Packet
(CCSDS 133.0-B-2) per Enhanced Packet Block, whole, as the payload of a UDP datagram
(RFC 768) in an IPv4 packet (RFC 791) with both checksums (RFC 1071).  Space Packets
travel between the documentation addresses :data:`GROUND_ADDRESS` and
:data:`SPACECRAFT_ADDRESS` (RFC 5737), source and destination port
:data:`PACKET_UDP_PORT`, so Wireshark dissects them with no plugin::

    tshark -r FILE -d udp.port==52001,ccsds -Y ccsds \\
        -T fields -e frame.time_epoch -e ccsds.apid -e ccsds.seqflag -e ccsds.seqnum -e ccsds.length

:func:`packet_to_datagram` builds one for the writer; :func:`packet_from_datagram`
takes the Space Packet out again for the reader and raises
:class:`~linkstack.capture.CaptureError` for any datagram the writer would not have
written.
"""

from __future__ import annotations

import struct
from typing import Final

from linkstack.capture.errors import CaptureError
from linkstack.capture.units import Direction

__all__ = [
    "GROUND_ADDRESS",
    "MAX_DATAGRAM_PAYLOAD",
    "PACKET_UDP_PORT",
    "SPACECRAFT_ADDRESS",
    "packet_from_datagram",
    "packet_to_datagram",
]

#: "Ground" and "spacecraft" ends of the Space Packet datagrams: TEST-NET-1 and
#: TEST-NET-2, reserved for documentation (RFC 5737 3).
GROUND_ADDRESS: Final = "192.0.2.1"
SPACECRAFT_ADDRESS: Final = "198.51.100.1"
#: UDP source and destination port of every Space Packet datagram: a port of the
#: Dynamic range, which IANA never assigns (RFC 6335 6).  Decode it as ``ccsds``.
PACKET_UDP_PORT: Final = 52001

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
#: The largest Space Packet one datagram carries: the 16-bit IPv4 Total Length less
#: both headers.
MAX_DATAGRAM_PAYLOAD: Final = 0xFFFF - _IPV4.size - _UDP.size  # 65507
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


def packet_to_datagram(packet: bytes, direction: Direction, identification: int) -> bytes:
    """``packet`` in a UDP/IPv4 datagram from the sending end to the receiving one, with
    the IPv4 Identification ``identification`` and both checksums."""
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


def packet_from_datagram(data: bytes, direction: Direction, offset: int) -> bytes:
    """The Space Packet in one of our datagrams, sent ``direction``; CaptureError at file
    offset ``offset`` if it is not one."""
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
