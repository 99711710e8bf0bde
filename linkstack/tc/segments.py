"""TC Space Data Link Protocol (CCSDS 232.0-B-4): segmentation, blocking and reassembly.

Built on the frame codec of :mod:`linkstack.tc.frame`:

* the sending end of the MAP Packet Processing Function, blocking and segmentation
  (:func:`block_packets`, :func:`segment_sdu`, :func:`packet_processing`), which yield
  one :class:`FrameDataUnit` per frame for FOP-1 to number and send;
* the receiving end, :class:`TcReassembler`, an engine that rebuilds MAP service data
  units per (VCID, MAP ID) and can split them back into Space Packets.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from linkstack.errors import (
    DecodeError,
    DropCounter,
    Dropped,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.tc.frame import (
    BypassFlag,
    ControlCommandFlag,
    SegmentHeader,
    SequenceFlags,
    TcFrame,
    TcVcConfig,
    _clause,
)

logger = logging.getLogger(__name__)

SPACE_PACKET_HEADER_LENGTH: Final = 6  # CCSDS 133.0-B-2 4.1.3
MAX_SPACE_PACKET_LENGTH: Final = 65542  # 6 + 65536, CCSDS 133.0-B-2 4.1.3.5


# -- sending end: MAP Packet Processing (blocking and segmentation) ---------------------


@dataclass(frozen=True, slots=True)
class FrameDataUnit:
    """What one Type-D frame carries: an optional Segment Header and user data."""

    segment_header: SegmentHeader | None
    data: bytes

    def to_frame(self, config: TcVcConfig, *, bypass: BypassFlag, sequence_number: int) -> TcFrame:
        """The frame carrying this unit; N(S) comes from FOP-1 (0 for Type-BD)."""
        return TcFrame.data_frame(
            config,
            self.data,
            bypass=bypass,
            sequence_number=sequence_number,
            segment_header=self.segment_header,
        )


def space_packet_length(data: bytes) -> int:
    """Total length of the Space Packet starting ``data`` (CCSDS 133.0-B-2 4.1.3.5).

    Raises :class:`DecodeError` ``"packet-truncated"`` with fewer than six octets and
    ``"bad-packet-version"`` unless the Packet Version Number is 000 (133.0-B-2 4.1.3.2).
    """
    if len(data) < SPACE_PACKET_HEADER_LENGTH:
        raise DecodeError(
            Layer.TC_FRAME,
            "packet-truncated",
            "CCSDS 133.0-B-2 4.1.3",
            f"{len(data)} octets left, a packet header needs {SPACE_PACKET_HEADER_LENGTH}",
        )
    if data[0] >> 5 != 0:
        raise DecodeError(
            Layer.TC_FRAME,
            "bad-packet-version",
            "CCSDS 133.0-B-2 4.1.3.2",
            f"Packet Version Number {data[0] >> 5:03b}",
        )
    return SPACE_PACKET_HEADER_LENGTH + ((data[4] << 8) | data[5]) + 1


def split_packets(data: bytes) -> list[bytes]:
    """De-block a MAP service data unit into the Space Packets it holds, back to back.

    Raises :class:`DecodeError` (``packet-truncated``, ``bad-packet-version``) when the
    packet length fields do not tile ``data`` exactly (CCSDS 232.0-B-4 4.3.1 blocking).
    """
    packets: list[bytes] = []
    offset = 0
    while offset < len(data):
        length = space_packet_length(data[offset:])
        if offset + length > len(data):
            raise DecodeError(
                Layer.TC_FRAME,
                "packet-truncated",
                "CCSDS 133.0-B-2 4.1.3.5",
                f"packet at offset {offset} declares {length} octets, {len(data) - offset} left",
            )
        packets.append(bytes(data[offset : offset + length]))
        offset += length
    if not packets:
        raise DecodeError(Layer.TC_FRAME, "packet-truncated", "CCSDS 133.0-B-2 4.1.3", "empty")
    return packets


def _extract_packets(data: bytes, segments: int) -> list[bytes]:
    """MAP Packet Extraction: a segmented unit is one packet, an unsegmented one a block."""
    if segments == 1:
        return split_packets(data)
    declared = space_packet_length(data)
    if declared != len(data):
        raise DecodeError(
            Layer.TC_FRAME,
            "packet-length-mismatch",
            "CCSDS 133.0-B-2 4.1.3.5",
            f"packet rebuilt from {segments} segments has {len(data)} octets,"
            f" its header declares {declared}",
        )
    return [bytes(data)]


def block_packets(packets: Iterable[bytes], *, limit: int) -> list[bytes]:
    """Blocking (CCSDS 232.0-B-4 4.3.1): pack consecutive packets into units of <= ``limit``.

    Order is kept.  A packet longer than ``limit`` goes alone in its unit, to be
    segmented.  Each packet must be one whole Space Packet, since the receiving end
    de-blocks by the packet length fields.
    """
    if limit < 1:
        raise LocalProtocolError(f"blocking limit {limit} must be at least 1 octet")
    units: list[bytes] = []
    current = b""
    for packet in packets:
        _check_packet(packet)
        if current and len(current) + len(packet) > limit:
            units.append(current)
            current = b""
        if len(packet) > limit:
            units.append(bytes(packet))
            continue
        current += packet
    if current:
        units.append(current)
    return units


def _check_packet(packet: bytes) -> None:
    try:
        length = space_packet_length(packet)
    except DecodeError as exc:
        raise LocalProtocolError(
            f"not a Space Packet ({exc.reason}: {exc.detail}) ({exc.clause})"
        ) from None
    if length != len(packet):
        raise LocalProtocolError(
            f"Space Packet of {len(packet)} octets declares {length} (CCSDS 133.0-B-2 4.1.3.5)"
        )


def segment_sdu(sdu: bytes, *, config: TcVcConfig, map_id: int) -> list[FrameDataUnit]:
    """Segmentation (CCSDS 232.0-B-4 4.3.1): one MAP SDU into frame data units.

    An SDU that fits one frame goes UNSEGMENTED; a longer one is cut into FIRST,
    CONTINUATION... and LAST segments, each filling a frame but the last.
    """
    if not config.segment_header:
        raise LocalProtocolError(
            f"VC {config.vcid} has no Segment Header, so it cannot segment ({_clause('4.1.3.2.2')})"
        )
    if not sdu:
        raise LocalProtocolError(f"empty MAP SDU on VC {config.vcid} ({_clause('4.1.3.1')})")
    size = config.max_user_data_length
    if len(sdu) <= size:
        return [FrameDataUnit(SegmentHeader(SequenceFlags.UNSEGMENTED, map_id), bytes(sdu))]
    chunks = [bytes(sdu[i : i + size]) for i in range(0, len(sdu), size)]
    flags = [SequenceFlags.FIRST] + [SequenceFlags.CONTINUATION] * (len(chunks) - 2)
    flags.append(SequenceFlags.LAST)
    return [
        FrameDataUnit(SegmentHeader(flag, map_id), chunk)
        for flag, chunk in zip(flags, chunks, strict=True)
    ]


def packet_processing(
    packets: Iterable[bytes],
    *,
    config: TcVcConfig,
    map_id: int | None = None,
    blocking: bool = True,
) -> list[FrameDataUnit]:
    """MAP (or VC) Packet Processing, CCSDS 232.0-B-4 4.3.1 (4.3.4 without MAPs).

    Blocks small packets together (when ``blocking``) and, on a VC with the Segment
    Header, segments packets longer than a frame.  Without the Segment Header a packet
    longer than one frame's data field is refused.
    """
    if config.segment_header and map_id is None:
        raise LocalProtocolError(
            f"VC {config.vcid} uses the Segment Header: give a MAP ID ({_clause('4.1.3.2.2.3')})"
        )
    if not config.segment_header and map_id is not None:
        raise LocalProtocolError(
            f"VC {config.vcid} has no Segment Header, MAP ID {map_id} cannot be carried"
            f" ({_clause('4.1.3.2.2')})"
        )
    limit = config.max_user_data_length
    if blocking:
        units = block_packets(packets, limit=limit)
    else:
        units = []
        for packet in packets:
            _check_packet(packet)
            units.append(bytes(packet))
    if map_id is None:
        for unit in units:
            if len(unit) > limit:
                raise LocalProtocolError(
                    f"{len(unit)}-octet packet exceeds the {limit} octets of one frame on"
                    f" VC {config.vcid}, which has no Segment Header ({_clause('4.3.4')})"
                )
        return [FrameDataUnit(None, unit) for unit in units]
    return [fdu for unit in units for fdu in segment_sdu(unit, config=config, map_id=map_id)]


# -- receiving end: MAP reassembly --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitReceived:
    """A whole MAP service data unit (or, when de-blocking, one Space Packet) rebuilt."""

    vcid: int
    #: None on a Virtual Channel without the Segment Header.
    map_id: int | None
    data: bytes
    #: Frames the unit arrived in.
    segments: int
    at: float | None = None


_SEQUENCE_CLAUSE: Final = _clause("4.1.3.2.2.2")


class TcReassembler:
    """Rebuilds MAP service data units from Type-D frames, per (VCID, MAP ID).

    Engine (sans-I/O): feed frames with :meth:`receive_frame` (or raw octets with
    :meth:`receive_bytes`), read :class:`UnitReceived` and :class:`Dropped` events from
    :meth:`next_event`.  A partial unit is never delivered; it is dropped when a FIRST
    or UNSEGMENTED segment arrives before its LAST (``incomplete-unit``), and a
    CONTINUATION or LAST with no FIRST is dropped (``orphan-segment``).  Duplicates and
    gaps inside a unit are for FARM-1 to prevent (CCSDS 232.1-B-2): a lost or repeated
    CONTINUATION cannot be seen from the Sequence Flags.  With ``deblock_packets`` (MAP
    packet service) a unit rebuilt from several segments must be exactly one Space
    Packet, so such a unit fails its length check (``packet-length-mismatch``) and is
    dropped; an unsegmented unit is split into the packets blocked in it.
    """

    def __init__(
        self, *, max_unit_length: int = MAX_SPACE_PACKET_LENGTH, deblock_packets: bool = False
    ) -> None:
        if max_unit_length < 1:
            raise LocalProtocolError(f"max_unit_length {max_unit_length} must be at least 1")
        self._max_unit_length = max_unit_length
        self._deblock = deblock_packets
        self._partial: dict[tuple[int, int], tuple[bytearray, int]] = {}
        self._events: deque[UnitReceived | Dropped] = deque()
        self.drops = DropCounter()
        #: Units (or packets, when de-blocking) delivered.
        self.units_delivered = 0
        #: Type-D frames taken in.
        self.frames_received = 0
        #: Type-BC frames passed over: they belong to FARM-1.
        self.control_frames_ignored = 0

    def receive_bytes(self, data: bytes, *, config: TcVcConfig, now: float | None = None) -> None:
        """Decode one frame of ``config``'s VC and take it in; bad octets become a drop."""
        try:
            frame = TcFrame.from_bytes(data, config=config)
        except RemoteProtocolError as exc:
            self._drop(exc, octets=len(data), now=now)
            return
        self.receive_frame(frame, now=now)

    def receive_frame(self, frame: TcFrame, *, now: float | None = None) -> None:
        """Take in one accepted frame (after FARM-1, for Type-AD)."""
        if frame.control_command == ControlCommandFlag.TYPE_C:
            self.control_frames_ignored += 1
            return
        self.frames_received += 1
        header = frame.segment_header
        if header is None:
            self._deliver(frame.vcid, None, frame.data, 1, now)
            return
        key = (frame.vcid, header.map_id)
        flags = header.sequence_flags
        partial = self._partial.get(key)
        if flags in (SequenceFlags.FIRST, SequenceFlags.UNSEGMENTED) and partial is not None:
            del self._partial[key]
            self._drop(
                DecodeError(
                    Layer.TC_FRAME,
                    "incomplete-unit",
                    _SEQUENCE_CLAUSE,
                    f"{flags.name} on VC {key[0]} MAP {key[1]} before the LAST segment of"
                    f" a {len(partial[0])}-octet unit in {partial[1]} segments",
                ),
                octets=len(partial[0]),
                now=now,
            )
            partial = None
        if flags == SequenceFlags.UNSEGMENTED:
            self._deliver(frame.vcid, header.map_id, frame.data, 1, now)
            return
        if flags == SequenceFlags.FIRST:
            self._partial[key] = (bytearray(frame.data), 1)
            self._check_length(key, now)
            return
        if partial is None:
            self._drop(
                DecodeError(
                    Layer.TC_FRAME,
                    "orphan-segment",
                    _SEQUENCE_CLAUSE,
                    f"{flags.name} on VC {key[0]} MAP {key[1]} with no FIRST segment",
                ),
                octets=len(frame.data),
                now=now,
            )
            return
        buffer, count = partial
        buffer += frame.data
        self._partial[key] = (buffer, count + 1)
        if not self._check_length(key, now):
            return
        if flags == SequenceFlags.LAST:
            del self._partial[key]
            self._deliver(frame.vcid, header.map_id, bytes(buffer), count + 1, now)

    def next_event(self) -> UnitReceived | Dropped | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def pending_octets(self, vcid: int, map_id: int) -> int:
        """Octets held for an unfinished unit on (VCID, MAP ID); 0 when none."""
        partial = self._partial.get((vcid, map_id))
        return len(partial[0]) if partial is not None else 0

    def _check_length(self, key: tuple[int, int], now: float | None) -> bool:
        buffer, count = self._partial[key]
        if len(buffer) <= self._max_unit_length:
            return True
        del self._partial[key]
        self._drop(
            DecodeError(
                Layer.TC_FRAME,
                "unit-too-long",
                _clause("4.3.1"),
                f"VC {key[0]} MAP {key[1]}: {len(buffer)} octets after {count} segments"
                f" > {self._max_unit_length}",
            ),
            octets=len(buffer),
            now=now,
        )
        return False

    def _deliver(
        self, vcid: int, map_id: int | None, data: bytes, segments: int, now: float | None
    ) -> None:
        if not self._deblock:
            units = [bytes(data)]
        else:
            try:
                units = _extract_packets(data, segments)
            except RemoteProtocolError as exc:
                self._drop(exc, octets=len(data), now=now)
                return
        for unit in units:
            self.units_delivered += 1
            self._events.append(
                UnitReceived(vcid=vcid, map_id=map_id, data=unit, segments=segments, at=now)
            )

    def _drop(self, exc: RemoteProtocolError, *, octets: int, now: float | None) -> None:
        logger.debug("< dropped %s: %s", exc.reason, exc.detail)
        self._events.append(self.drops.count(Dropped.from_error(exc, octets=octets, at=now)))
