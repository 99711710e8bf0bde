"""CCSDS Space Packets (CCSDS 133.0-B-2): codec, sequencing, segmentation, reassembly.

The primary header is packed with a precompiled :mod:`struct`; the ``spacepackets``
package (the same field layout, written independently) is the oracle in the tests.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from linkstack.errors import (
    DecodeError,
    DropCounter,
    Dropped,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)

logger = logging.getLogger(__name__)

_LAYER: Final = Layer.SPACE_PACKET

#: Packet Version Number '000'.
PACKET_VERSION: Final = 0  # CCSDS 133.0-B-2 4.1.3.2.2
#: Octets in the Packet Primary Header.
PRIMARY_HEADER_LENGTH: Final = 6  # CCSDS 133.0-B-2 4.1.3.1
#: Highest APID (11 bits).
MAX_APID: Final = 0x7FF  # CCSDS 133.0-B-2 4.1.3.3.4.1
#: The APID reserved for Idle Packets: all ones.
IDLE_APID: Final = 0x7FF  # CCSDS 133.0-B-2 4.1.3.3.4.4
#: The Packet Sequence Count runs modulo 2^14.
SEQUENCE_COUNT_MODULUS: Final = 1 << 14  # CCSDS 133.0-B-2 4.1.3.4.3.4
#: The Packet Data Field holds 1 to 65536 octets (the length field stores octets - 1).
MIN_DATA_LENGTH: Final = 1  # CCSDS 133.0-B-2 4.1.3.5.3, 4.1.4
MAX_DATA_LENGTH: Final = 65536  # CCSDS 133.0-B-2 4.1.3.5.3 (16-bit field holds octets - 1)
#: Shortest and longest whole Space Packet.
MIN_PACKET_LENGTH: Final = PRIMARY_HEADER_LENGTH + MIN_DATA_LENGTH
MAX_PACKET_LENGTH: Final = PRIMARY_HEADER_LENGTH + MAX_DATA_LENGTH
#: Octet written into the data field of Idle Packets (the pattern is mission-specified).
IDLE_FILL: Final = 0x55  # CCSDS 133.0-B-2 4.1.4 (idle data pattern set by the project)

_CLAUSE_HEADER: Final = "CCSDS 133.0-B-2 4.1.3"
_CLAUSE_VERSION: Final = "CCSDS 133.0-B-2 4.1.3.2.2"
_CLAUSE_LENGTH: Final = "CCSDS 133.0-B-2 4.1.3.5"
_CLAUSE_IDLE: Final = "CCSDS 133.0-B-2 4.1.3.3.3.4"
_CLAUSE_FLAGS: Final = "CCSDS 133.0-B-2 4.1.3.4.2"
_CLAUSE_COUNT: Final = "CCSDS 133.0-B-2 4.1.3.4.3"


class PacketType(IntEnum):
    """Packet Type bit (CCSDS 133.0-B-2 4.1.3.3.2)."""

    TM = 0  # telemetry (reporting)
    TC = 1  # telecommand (requesting)


class SequenceFlags(IntEnum):
    """Sequence Flags (CCSDS 133.0-B-2 4.1.3.4.2.2)."""

    CONTINUATION = 0b00  # continuation segment of user data
    FIRST = 0b01  # first segment of user data
    LAST = 0b10  # last segment of user data
    UNSEGMENTED = 0b11  # unsegmented user data


#  Packet Primary Header, CCSDS 133.0-B-2 4.1.3, 48 bits, bit 0 first on the wire:
#
#   0     3   4    5                 16    18                    32                    48
#  +-------+----+----+---------------+-----+---------------------+---------------------+
#  | PVN   |type|sec.| APID (11)     |seq. | Packet Sequence     | Packet Data Length  |
#  | 000   |    |hdr |               |flags| Count (14)          | (octets in data - 1)|
#  +-------+----+----+---------------+-----+---------------------+---------------------+
#  \___ packet identification (16) ___/\___ packet sequence control (16) ___/
_HEADER: Final = struct.Struct(">HHH")


def peek_packet_length(header: bytes | bytearray) -> int:
    """Total octets of the Space Packet whose primary header starts ``header``.

    Needs at least the 6 header octets; raises :class:`DecodeError` ``"truncated"``
    when fewer are given and ``"bad-version"`` when the version is not '000'.
    """
    if len(header) < PRIMARY_HEADER_LENGTH:
        raise DecodeError(
            _LAYER,
            "truncated",
            _CLAUSE_HEADER,
            f"{len(header)} octets, the primary header needs {PRIMARY_HEADER_LENGTH}",
        )
    if header[0] >> 5 != PACKET_VERSION:
        raise DecodeError(
            _LAYER, "bad-version", _CLAUSE_VERSION, f"packet version {header[0] >> 5}, want 0"
        )
    return PRIMARY_HEADER_LENGTH + ((header[4] << 8) | header[5]) + 1


def _check_range(name: str, value: int, low: int, high: int, clause: str) -> None:
    if not low <= value <= high:
        raise LocalProtocolError(f"{name}={value} outside {low}..{high} ({clause})")


@dataclass(frozen=True, slots=True, kw_only=True)
class SpacePacket:
    """One Space Packet: the primary header fields and the whole Packet Data Field.

    ``data`` is the Packet Data Field as a whole (secondary header, if flagged, plus
    user data); this layer does not interpret the secondary header.
    """

    packet_type: PacketType
    apid: int
    sequence_count: int
    data: bytes
    secondary_header_flag: bool = False
    sequence_flags: SequenceFlags = SequenceFlags.UNSEGMENTED

    def __post_init__(self) -> None:
        _check_range("apid", self.apid, 0, MAX_APID, "CCSDS 133.0-B-2 4.1.3.3.4")
        _check_range(
            "sequence_count",
            self.sequence_count,
            0,
            SEQUENCE_COUNT_MODULUS - 1,
            _CLAUSE_COUNT,
        )
        _check_range("len(data)", len(self.data), MIN_DATA_LENGTH, MAX_DATA_LENGTH, _CLAUSE_LENGTH)
        if self.apid == IDLE_APID and self.secondary_header_flag:
            raise LocalProtocolError(
                f"idle packet (apid=0x7FF) with secondary_header_flag=True ({_CLAUSE_IDLE})"
            )

    @property
    def is_idle(self) -> bool:
        """True for an Idle Packet (APID all ones, CCSDS 133.0-B-2 4.1.3.3.4.4)."""
        return self.apid == IDLE_APID

    def to_bytes(self) -> bytes:
        return (
            _HEADER.pack(
                (PACKET_VERSION << 13)
                | (int(self.packet_type) << 12)
                | (int(self.secondary_header_flag) << 11)
                | self.apid,
                (int(self.sequence_flags) << 14) | self.sequence_count,
                len(self.data) - 1,
            )
            + self.data
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SpacePacket:
        """Parse exactly one Space Packet; raises :class:`DecodeError` otherwise."""
        total = peek_packet_length(data)
        if len(data) < total:
            raise DecodeError(
                _LAYER,
                "truncated",
                _CLAUSE_LENGTH,
                f"{len(data)} octets, the header announces {total}",
            )
        if len(data) > total:
            raise DecodeError(
                _LAYER,
                "length-mismatch",
                _CLAUSE_LENGTH,
                f"{len(data)} octets, the header announces {total}",
            )
        ident, control, _ = _HEADER.unpack_from(data)
        apid = ident & MAX_APID
        secondary_header_flag = bool(ident >> 11 & 1)
        if apid == IDLE_APID and secondary_header_flag:
            raise DecodeError(
                _LAYER, "bad-idle-packet", _CLAUSE_IDLE, "idle packet with secondary header flag"
            )
        return cls(
            packet_type=PacketType(ident >> 12 & 1),
            apid=apid,
            sequence_count=control & (SEQUENCE_COUNT_MODULUS - 1),
            data=bytes(data[PRIMARY_HEADER_LENGTH:]),
            secondary_header_flag=secondary_header_flag,
            sequence_flags=SequenceFlags(control >> 14),
        )


def idle_packet(
    length: int, *, sequence_count: int = 0, packet_type: PacketType = PacketType.TM
) -> SpacePacket:
    """An Idle Packet of ``length`` total octets (7..65542), APID all ones.

    CCSDS 133.0-B-2 4.1.3.3.4.4; the data field holds the project's idle pattern.
    """
    _check_range("length", length, MIN_PACKET_LENGTH, MAX_PACKET_LENGTH, _CLAUSE_LENGTH)
    return SpacePacket(
        packet_type=packet_type,
        apid=IDLE_APID,
        sequence_count=sequence_count,
        data=bytes([IDLE_FILL]) * (length - PRIMARY_HEADER_LENGTH),
    )


class PacketSequencer:
    """Hands out Packet Sequence Counts, one 14-bit counter per APID, and segments payloads.

    CCSDS 133.0-B-2 4.1.3.4.3: the count is kept separately per APID and wraps at 16384.
    """

    def __init__(self, *, packet_type: PacketType = PacketType.TM) -> None:
        self._packet_type = packet_type
        self._counts: dict[int, int] = {}

    def next_count(self, apid: int) -> int:
        """The count for the next packet of ``apid``; advances that APID's counter."""
        _check_range("apid", apid, 0, MAX_APID, "CCSDS 133.0-B-2 4.1.3.3.4")
        count = self._counts.get(apid, 0)
        self._counts[apid] = (count + 1) % SEQUENCE_COUNT_MODULUS
        return count

    def packet(
        self,
        apid: int,
        data: bytes,
        *,
        secondary_header_flag: bool = False,
        sequence_flags: SequenceFlags = SequenceFlags.UNSEGMENTED,
    ) -> SpacePacket:
        """One packet of ``apid`` carrying ``data`` (1..65536 octets) with the next count."""
        _check_range("len(data)", len(data), MIN_DATA_LENGTH, MAX_DATA_LENGTH, _CLAUSE_LENGTH)
        return SpacePacket(
            packet_type=self._packet_type,
            apid=apid,
            sequence_count=self.next_count(apid),
            data=bytes(data),
            secondary_header_flag=secondary_header_flag,
            sequence_flags=sequence_flags,
        )

    def segment(
        self, apid: int, payload: bytes, *, max_data_length: int = MAX_DATA_LENGTH
    ) -> list[SpacePacket]:
        """Split ``payload`` into packets of at most ``max_data_length`` data octets.

        One UNSEGMENTED packet when it fits, else FIRST, CONTINUATION..., LAST with
        consecutive counts (CCSDS 133.0-B-2 4.1.3.4.2.2).
        """
        _check_range("max_data_length", max_data_length, 1, MAX_DATA_LENGTH, _CLAUSE_LENGTH)
        if not payload:
            raise LocalProtocolError(f"empty payload for apid={apid} ({_CLAUSE_LENGTH})")
        if len(payload) <= max_data_length:
            return [self.packet(apid, payload)]
        chunks = [payload[i : i + max_data_length] for i in range(0, len(payload), max_data_length)]
        last = len(chunks) - 1
        return [
            self.packet(
                apid,
                chunk,
                sequence_flags=(
                    SequenceFlags.FIRST
                    if i == 0
                    else SequenceFlags.LAST
                    if i == last
                    else SequenceFlags.CONTINUATION
                ),
            )
            for i, chunk in enumerate(chunks)
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadReceived:
    """A whole user payload: one unsegmented packet, or FIRST..LAST joined."""

    apid: int
    packet_type: PacketType
    payload: bytes
    #: Packets it was carried in (1 when unsegmented).
    packets: int = 1


ReassemblerEvent = PayloadReceived | Dropped


@dataclass(slots=True)
class _Partial:
    packet_type: PacketType
    data: bytearray
    last_count: int
    packets: int


@dataclass(slots=True)
class ReassemblerStats:
    """Counters of a :class:`PacketReassembler`."""

    #: Space Packets accepted (Idle Packets included; undecodable ones are drops).
    packets: int = 0
    #: Idle Packets (APID 0x7FF, CCSDS 133.0-B-2 4.1.3.3.4.4) discarded.
    idle_packets: int = 0
    #: User data delivered (:class:`PayloadReceived` events).
    payloads: int = 0
    #: Packet Sequence Count discontinuities within an APID (CCSDS 133.0-B-2 4.1.3.4.3).
    sequence_gaps: int = 0


class PacketReassembler:
    """Rebuilds segmented user data per APID (sans-I/O engine).

    Feed whole Space Packets with :meth:`receive_packet`; take :class:`PayloadReceived`
    and :class:`Dropped` events from :meth:`next_event`. A sequence-count gap or a
    segment flag out of order inside a segmented run discards the partial payload
    (never delivered). Idle Packets are discarded and counted in ``stats.idle_packets``,
    not as drops.
    """

    def __init__(self, *, max_payload: int = 1 << 22) -> None:
        if max_payload < 1:
            raise LocalProtocolError(f"max_payload={max_payload} must be at least 1")
        self._max_payload = max_payload
        self._partials: dict[int, _Partial] = {}
        self._last_count: dict[int, int] = {}
        self._events: deque[ReassemblerEvent] = deque()
        self.drops = DropCounter()
        self.stats = ReassemblerStats()

    def next_event(self) -> ReassemblerEvent | None:
        return self._events.popleft() if self._events else None

    def receive_bytes(self, data: bytes) -> None:
        """Accept one whole encoded Space Packet."""
        try:
            packet = SpacePacket.from_bytes(data)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(data)))
            return
        self.receive_packet(packet)

    def receive_packet(self, packet: SpacePacket) -> None:
        """Accept one decoded Space Packet."""
        self.stats.packets += 1
        if packet.is_idle:
            self.stats.idle_packets += 1
            return
        apid = packet.apid
        previous = self._last_count.get(apid)
        self._last_count[apid] = packet.sequence_count
        gap = (
            previous is not None
            and packet.sequence_count != (previous + 1) % SEQUENCE_COUNT_MODULUS
        )
        if gap:
            self.stats.sequence_gaps += 1
        partial = self._partials.get(apid)
        flags = packet.sequence_flags

        if partial is not None and (
            gap or flags in (SequenceFlags.FIRST, SequenceFlags.UNSEGMENTED)
        ):
            del self._partials[apid]
            reason, clause = (
                ("sequence-gap", _CLAUSE_COUNT) if gap else ("segment-out-of-order", _CLAUSE_FLAGS)
            )
            self._drop_partial(
                apid=apid,
                partial=partial,
                reason=reason,
                clause=clause,
                previous=previous,
                packet=packet,
            )
            partial = None

        if flags is SequenceFlags.UNSEGMENTED:
            self._deliver(apid, packet.packet_type, packet.data, 1)
        elif flags is SequenceFlags.FIRST:
            self._partials[apid] = _Partial(
                packet.packet_type, bytearray(packet.data), packet.sequence_count, 1
            )
            self._check_size(apid)
        elif partial is None:
            # CONTINUATION or LAST with no FIRST before it (or after a gap): its start is lost.
            self._drop(
                Dropped(
                    layer=_LAYER,
                    reason="sequence-gap" if gap else "segment-out-of-order",
                    clause=_CLAUSE_COUNT if gap else _CLAUSE_FLAGS,
                    octets=len(packet.data),
                    detail=f"apid={apid} count={packet.sequence_count} {flags.name} without FIRST",
                )
            )
        else:
            partial.data += packet.data
            partial.last_count = packet.sequence_count
            partial.packets += 1
            if flags is SequenceFlags.LAST:
                del self._partials[apid]
                self._deliver(apid, partial.packet_type, bytes(partial.data), partial.packets)
            else:
                self._check_size(apid)

    def _check_size(self, apid: int) -> None:
        partial = self._partials[apid]
        if len(partial.data) > self._max_payload:
            del self._partials[apid]
            self._drop(
                Dropped(
                    layer=_LAYER,
                    reason="payload-too-long",
                    clause=_CLAUSE_FLAGS,
                    octets=len(partial.data),
                    detail=f"apid={apid} above max_payload={self._max_payload}",
                )
            )

    def _drop_partial(
        self,
        *,
        apid: int,
        partial: _Partial,
        reason: str,
        clause: str,
        previous: int | None,
        packet: SpacePacket,
    ) -> None:
        self._drop(
            Dropped(
                layer=_LAYER,
                reason=reason,
                clause=clause,
                octets=len(partial.data),
                detail=(
                    f"apid={apid} partial of {partial.packets} packets, last count {previous}, "
                    f"then count {packet.sequence_count} {packet.sequence_flags.name}"
                ),
            )
        )

    def _deliver(self, apid: int, packet_type: PacketType, payload: bytes, packets: int) -> None:
        self.stats.payloads += 1
        self._events.append(
            PayloadReceived(apid=apid, packet_type=packet_type, payload=payload, packets=packets)
        )

    def _drop(self, event: Dropped) -> None:
        logger.debug("< dropped %s/%s: %s", event.layer, event.reason, event.detail)
        self._events.append(self.drops.count(event))
