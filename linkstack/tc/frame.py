"""TC Space Data Link Protocol transfer frames (CCSDS 232.0-B-4).

What lives here:

* :class:`TcVcConfig`: the managed parameters of one Virtual Channel;
* :class:`TcFrame`: the frame codec (primary header, optional Segment Header, data,
  optional FECF), frame types AD, BD and BC;
* :class:`SegmentHeader`, :class:`Unlock`, :class:`SetVR`: the one-octet Segment Header
  and the two FARM-1 Control Commands;
* the sending end of the MAP Packet Processing Function, blocking and segmentation
  (:func:`block_packets`, :func:`segment_sdu`, :func:`packet_processing`);
* the receiving end, :class:`TcReassembler`, an engine that rebuilds MAP service data
  units per (VCID, MAP ID) and can split them back into Space Packets.

Frame Sequence Numbers N(S) are assigned by FOP-1 (COP-1, CCSDS 232.1-B-2): every
builder here takes N(S) as an explicit argument.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from linkstack.errors import (
    DecodeError,
    DropCounter,
    Dropped,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.packets.fecf import FECF_LENGTH, append_fecf, strip_fecf

logger = logging.getLogger(__name__)

_BOOK: Final = "CCSDS 232.0-B-4"

PRIMARY_HEADER_LENGTH: Final = 5  # CCSDS 232.0-B-4 4.1.2.1
TRANSFER_FRAME_VERSION: Final = 0b00  # CCSDS 232.0-B-4 4.1.2.2.2
RESERVED_SPARE: Final = 0b00  # CCSDS 232.0-B-4 4.1.2.4
MAX_SCID: Final = 0x3FF  # 10 bits, CCSDS 232.0-B-4 4.1.2.5
MAX_VCID: Final = 0x3F  # 6 bits, CCSDS 232.0-B-4 4.1.2.6
MAX_FRAME_LENGTH: Final = 1024  # 10-bit Frame Length field = total - 1, CCSDS 232.0-B-4 4.1.2.7
MAX_SEQUENCE_NUMBER: Final = 0xFF  # 8-bit N(S), modulo 256, CCSDS 232.0-B-4 4.1.2.8
TYPE_B_SEQUENCE_NUMBER: Final = 0  # Type-B frames carry N(S) all zeros, CCSDS 232.0-B-4 4.1.2.8
SEGMENT_HEADER_LENGTH: Final = 1  # CCSDS 232.0-B-4 4.1.3.2.2
MAX_MAP_ID: Final = 0x3F  # 6 bits, CCSDS 232.0-B-4 4.1.3.2.2.3

UNLOCK_OCTET: Final = 0x00  # CCSDS 232.0-B-4 4.1.3.3.2
SET_VR_OCTETS: Final = b"\x82\x00"  # followed by V(R), CCSDS 232.0-B-4 4.1.3.3.3

SPACE_PACKET_HEADER_LENGTH: Final = 6  # CCSDS 133.0-B-2 4.1.3
MAX_SPACE_PACKET_LENGTH: Final = 65542  # 6 + 65536, CCSDS 133.0-B-2 4.1.3.5

# TC Transfer Frame Primary Header, CCSDS 232.0-B-4 4.1.2 (bit 0 = most significant):
#
#   bits 0-1  2    3    4-5    6-15     16-21   22-31          32-39
#  +--------+----+----+------+--------+-------+--------------+--------+
#  |  TFVN  | BF | CC | spare|  SCID  | VCID  | Frame Length | N(S)   |
#  |   00   |    |    |  00  |  (10)  |  (6)  | (10) total-1 |  (8)   |
#  +--------+----+----+------+--------+-------+--------------+--------+
#  \________ first 16 bits _________/ \____ next 16 bits ____/ 1 octet
_PRIMARY_HEADER: Final = struct.Struct(">HHB")

# Segment Header, CCSDS 232.0-B-4 4.1.3.2.2: one octet.
#
#   bits 0-1          2-7
#  +----------------+--------+
#  | Sequence Flags | MAP ID |
#  +----------------+--------+


def _clause(number: str) -> str:
    return f"{_BOOK} {number}"


class BypassFlag(IntEnum):
    """Bypass Flag, CCSDS 232.0-B-4 4.1.2.3.1."""

    TYPE_A = 0  # sequence-controlled: FARM-1 acceptance checks apply
    TYPE_B = 1  # expedited: FARM-1 acceptance checks bypassed


class ControlCommandFlag(IntEnum):
    """Control Command Flag, CCSDS 232.0-B-4 4.1.2.3.2."""

    TYPE_D = 0  # the data field carries user data
    TYPE_C = 1  # the data field carries a Control Command


class FrameType(Enum):
    """The three valid combinations of the two flags, CCSDS 232.0-B-4 4.1.2.3."""

    AD = "AD"  # bypass 0, control 0
    BD = "BD"  # bypass 1, control 0
    BC = "BC"  # bypass 1, control 1


class SequenceFlags(IntEnum):
    """Sequence Flags of the Segment Header, CCSDS 232.0-B-4 4.1.3.2.2.2."""

    CONTINUATION = 0b00
    FIRST = 0b01
    LAST = 0b10
    UNSEGMENTED = 0b11


def _require_primary_header(header: bytes) -> None:
    if len(header) < PRIMARY_HEADER_LENGTH:
        raise DecodeError(
            Layer.TC_FRAME,
            "truncated",
            _clause("4.1.2"),
            f"{len(header)} octets, the primary header needs {PRIMARY_HEADER_LENGTH}",
        )


def peek_frame_length(header: bytes) -> int:
    """Total frame length in octets from the Frame Length field (total - 1).

    CCSDS 232.0-B-4 4.1.2.7.  Raises :class:`DecodeError` ``"truncated"`` when fewer
    than the five primary-header octets are given.
    """
    _require_primary_header(header)
    return (((header[2] & 0x03) << 8) | header[3]) + 1


def peek_vcid(header: bytes) -> int:
    """Virtual Channel Identifier of a frame, to pick its :class:`TcVcConfig`.

    CCSDS 232.0-B-4 4.1.2.6.  Raises :class:`DecodeError` ``"truncated"`` when fewer
    than the five primary-header octets are given.
    """
    _require_primary_header(header)
    return header[2] >> 2


@dataclass(frozen=True, slots=True, kw_only=True)
class TcVcConfig:
    """Managed parameters of one TC Virtual Channel (CCSDS 232.0-B-4 section 5)."""

    #: Spacecraft Identifier, 10 bits (4.1.2.5).
    scid: int
    #: Virtual Channel Identifier, 6 bits (4.1.2.6).
    vcid: int
    #: Whether frames end in the 2-octet FECF (4.1.4); Yamcs' default is CRC16, so on.
    fecf_present: bool = True
    #: Whether Type-D frames carry the Segment Header, i.e. the MAP services (4.1.3.2.2).
    segment_header: bool = False
    #: Maximum Frame Length in octets, at most 1024 (4.1.2.7).
    max_frame_length: int = MAX_FRAME_LENGTH

    def __post_init__(self) -> None:
        if not 0 <= self.scid <= MAX_SCID:
            raise LocalProtocolError(
                f"SCID {self.scid} outside 0..{MAX_SCID} ({_clause('4.1.2.5')})"
            )
        if not 0 <= self.vcid <= MAX_VCID:
            raise LocalProtocolError(
                f"VCID {self.vcid} outside 0..{MAX_VCID} ({_clause('4.1.2.6')})"
            )
        # Smallest frame that still carries one octet of user data and a Set V(R).
        minimum = (
            PRIMARY_HEADER_LENGTH
            + (FECF_LENGTH if self.fecf_present else 0)
            + max(len(SET_VR_OCTETS) + 1, (SEGMENT_HEADER_LENGTH if self.segment_header else 0) + 1)
        )
        if not minimum <= self.max_frame_length <= MAX_FRAME_LENGTH:
            raise LocalProtocolError(
                f"max_frame_length {self.max_frame_length} outside {minimum}..{MAX_FRAME_LENGTH}"
                f" for fecf_present={self.fecf_present}, segment_header={self.segment_header}"
                f" ({_clause('4.1.2.7')})"
            )

    @property
    def max_data_field_length(self) -> int:
        """Octets of Transfer Frame Data Field in the longest frame (Segment Header included)."""
        return (
            self.max_frame_length
            - PRIMARY_HEADER_LENGTH
            - (FECF_LENGTH if self.fecf_present else 0)
        )

    @property
    def max_user_data_length(self) -> int:
        """Octets of user data one Type-D frame carries after the Segment Header."""
        return self.max_data_field_length - (SEGMENT_HEADER_LENGTH if self.segment_header else 0)


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The one-octet Segment Header, CCSDS 232.0-B-4 4.1.3.2.2."""

    sequence_flags: SequenceFlags
    map_id: int

    def __post_init__(self) -> None:
        if self.sequence_flags not in (0, 1, 2, 3):
            raise LocalProtocolError(
                f"Sequence Flags {self.sequence_flags!r} outside 0..3 ({_clause('4.1.3.2.2.2')})"
            )
        if not 0 <= self.map_id <= MAX_MAP_ID:
            raise LocalProtocolError(
                f"MAP ID {self.map_id} outside 0..{MAX_MAP_ID} ({_clause('4.1.3.2.2.3')})"
            )

    def to_bytes(self) -> bytes:
        return bytes([(self.sequence_flags << 6) | self.map_id])

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentHeader:
        """Decode the first octet of ``data``; every octet value is a valid header."""
        if not data:
            raise DecodeError(
                Layer.TC_FRAME, "truncated", _clause("4.1.3.2.2"), "no octet for the Segment Header"
            )
        return cls(SequenceFlags(data[0] >> 6), data[0] & MAX_MAP_ID)


@dataclass(frozen=True, slots=True)
class Unlock:
    """FARM-1 Unlock Control Command: one octet, all zeros (CCSDS 232.0-B-4 4.1.3.3.2)."""

    def to_bytes(self) -> bytes:
        return bytes([UNLOCK_OCTET])

    @classmethod
    def from_bytes(cls, data: bytes) -> Unlock:
        command = decode_control_command(data)
        if not isinstance(command, Unlock):
            raise DecodeError(
                Layer.TC_FRAME, "bad-control-command", _clause("4.1.3.3.2"), "not an Unlock"
            )
        return command


@dataclass(frozen=True, slots=True)
class SetVR:
    """FARM-1 Set V(R) Control Command: ``82 00 V(R)`` (CCSDS 232.0-B-4 4.1.3.3.3)."""

    #: The value FARM-1 sets its Receiver Frame Sequence Number V(R) to.
    vr: int

    def __post_init__(self) -> None:
        if not 0 <= self.vr <= MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError(
                f"V(R) {self.vr} outside 0..{MAX_SEQUENCE_NUMBER} ({_clause('4.1.3.3.3')})"
            )

    def to_bytes(self) -> bytes:
        return SET_VR_OCTETS + bytes([self.vr])

    @classmethod
    def from_bytes(cls, data: bytes) -> SetVR:
        command = decode_control_command(data)
        if not isinstance(command, SetVR):
            raise DecodeError(
                Layer.TC_FRAME, "bad-control-command", _clause("4.1.3.3.3"), "not a Set V(R)"
            )
        return command


ControlCommand = Unlock | SetVR


def decode_control_command(data: bytes) -> ControlCommand:
    """Decode the data field of a Type-BC frame; anything but the two commands is refused.

    Raises :class:`DecodeError` with reason ``"truncated"`` (empty) or
    ``"bad-control-command"`` (CCSDS 232.0-B-4 4.1.3.3: other patterns are reserved).
    """
    if not data:
        raise DecodeError(Layer.TC_FRAME, "truncated", _clause("4.1.3.3"), "empty Control Command")
    if len(data) == 1 and data[0] == UNLOCK_OCTET:
        return Unlock()
    if len(data) == len(SET_VR_OCTETS) + 1 and data[:2] == SET_VR_OCTETS:
        return SetVR(data[2])
    raise DecodeError(
        Layer.TC_FRAME,
        "bad-control-command",
        _clause("4.1.3.3"),
        f"{len(data)}-octet data field starting 0x{data[0]:02X} is neither Unlock nor Set V(R)",
    )


def _frame_problem(
    *,
    scid: int,
    vcid: int,
    bypass: int,
    control_command: int,
    sequence_number: int,
    data: bytes,
    segment_header: SegmentHeader | None,
    fecf_present: bool,
) -> tuple[str, str, str] | None:
    """The first rule a frame breaks, as (reason, clause, detail); None when it is valid.

    Shared by the constructor (which raises LocalProtocolError) and the parser (which
    raises DecodeError), so the two can never disagree.
    """
    if not 0 <= scid <= MAX_SCID:
        return "bad-scid", _clause("4.1.2.5"), f"SCID {scid} outside 0..{MAX_SCID}"
    if not 0 <= vcid <= MAX_VCID:
        return "bad-vcid", _clause("4.1.2.6"), f"VCID {vcid} outside 0..{MAX_VCID}"
    if bypass not in (0, 1) or control_command not in (0, 1):
        return (
            "bad-frame-type",
            _clause("4.1.2.3"),
            f"bypass {bypass!r} / control command {control_command!r} are not one-bit flags",
        )
    if bypass == BypassFlag.TYPE_A and control_command == ControlCommandFlag.TYPE_C:
        return (
            "bad-frame-type",
            _clause("4.1.2.3"),
            "bypass 0 with control command 1 (Type-AC) is not a valid frame type",
        )
    if not 0 <= sequence_number <= MAX_SEQUENCE_NUMBER:
        return (
            "bad-sequence-number",
            _clause("4.1.2.8"),
            f"N(S) {sequence_number} outside 0..{MAX_SEQUENCE_NUMBER}",
        )
    if bypass == BypassFlag.TYPE_B and sequence_number != TYPE_B_SEQUENCE_NUMBER:
        return (
            "bad-sequence-number",
            _clause("4.1.2.8"),
            f"N(S) {sequence_number} in a Type-B frame, which carries all zeros",
        )
    if control_command == ControlCommandFlag.TYPE_C:
        if segment_header is not None:
            return (
                "bad-control-command",
                _clause("4.1.3.3"),
                "a Type-BC frame carries a Control Command, never a Segment Header",
            )
        try:
            decode_control_command(data)
        except DecodeError as exc:
            return exc.reason, exc.clause, exc.detail
    elif not data:
        return "empty-data-field", _clause("4.1.3.1"), "a Type-D frame with no user data"
    length = (
        PRIMARY_HEADER_LENGTH
        + (SEGMENT_HEADER_LENGTH if segment_header is not None else 0)
        + len(data)
        + (FECF_LENGTH if fecf_present else 0)
    )
    if length > MAX_FRAME_LENGTH:
        return "oversize", _clause("4.1.2.7"), f"{length} octets > {MAX_FRAME_LENGTH}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TcFrame:
    """One TC Transfer Frame (CCSDS 232.0-B-4 4.1).

    TFVN and the spare bits are always ``00`` and the Frame Length is derived, so they
    are not stored.  ``data`` is what follows the Segment Header: user data in Type-D
    frames, the Control Command in Type-BC frames.
    """

    scid: int
    vcid: int
    bypass: BypassFlag
    control_command: ControlCommandFlag
    #: Frame Sequence Number N(S) (4.1.2.8): assigned by FOP-1; 0 in Type-B frames.
    sequence_number: int
    data: bytes
    segment_header: SegmentHeader | None = None
    fecf_present: bool = True

    def __post_init__(self) -> None:
        problem = _frame_problem(
            scid=self.scid,
            vcid=self.vcid,
            bypass=self.bypass,
            control_command=self.control_command,
            sequence_number=self.sequence_number,
            data=self.data,
            segment_header=self.segment_header,
            fecf_present=self.fecf_present,
        )
        if problem is not None:
            reason, clause, detail = problem
            raise LocalProtocolError(f"{reason}: {detail} ({clause})")

    # -- builders ----------------------------------------------------------------------

    @classmethod
    def data_frame(
        cls,
        config: TcVcConfig,
        data: bytes,
        *,
        bypass: BypassFlag,
        sequence_number: int,
        segment_header: SegmentHeader | None = None,
    ) -> TcFrame:
        """A Type-AD or Type-BD frame on ``config``'s Virtual Channel.

        ``sequence_number`` is N(S) from FOP-1 for Type-AD and must be 0 for Type-BD.
        ``segment_header`` is required exactly when the VC uses the Segment Header.
        """
        if config.segment_header and segment_header is None:
            raise LocalProtocolError(
                f"VC {config.vcid} uses the Segment Header: pass one ({_clause('4.1.3.2.2')})"
            )
        if not config.segment_header and segment_header is not None:
            raise LocalProtocolError(
                f"VC {config.vcid} has no Segment Header, got {segment_header}"
                f" ({_clause('4.1.3.2.2')})"
            )
        if len(data) > config.max_user_data_length:
            raise LocalProtocolError(
                f"{len(data)} octets of data exceed the {config.max_user_data_length} that a"
                f" {config.max_frame_length}-octet frame on VC {config.vcid} carries"
                f" ({_clause('4.1.2.7')})"
            )
        return cls(
            scid=config.scid,
            vcid=config.vcid,
            bypass=bypass,
            control_command=ControlCommandFlag.TYPE_D,
            sequence_number=sequence_number,
            data=bytes(data),
            segment_header=segment_header,
            fecf_present=config.fecf_present,
        )

    @classmethod
    def control_frame(cls, config: TcVcConfig, command: ControlCommand) -> TcFrame:
        """A Type-BC frame carrying ``command``; N(S) is 0 and there is no Segment Header."""
        return cls(
            scid=config.scid,
            vcid=config.vcid,
            bypass=BypassFlag.TYPE_B,
            control_command=ControlCommandFlag.TYPE_C,
            sequence_number=TYPE_B_SEQUENCE_NUMBER,
            data=command.to_bytes(),
            fecf_present=config.fecf_present,
        )

    # -- derived fields ----------------------------------------------------------------

    @property
    def frame_type(self) -> FrameType:
        if self.bypass == BypassFlag.TYPE_A:
            return FrameType.AD
        if self.control_command == ControlCommandFlag.TYPE_D:
            return FrameType.BD
        return FrameType.BC

    @property
    def frame_length(self) -> int:
        """Total length in octets (the header field holds this minus one)."""
        return (
            PRIMARY_HEADER_LENGTH
            + (SEGMENT_HEADER_LENGTH if self.segment_header is not None else 0)
            + len(self.data)
            + (FECF_LENGTH if self.fecf_present else 0)
        )

    @property
    def command(self) -> ControlCommand | None:
        """The Control Command of a Type-BC frame, None for Type-D frames."""
        if self.control_command == ControlCommandFlag.TYPE_C:
            return decode_control_command(self.data)
        return None

    # -- codec -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        first = (
            (TRANSFER_FRAME_VERSION << 14)
            | (self.bypass << 13)
            | (self.control_command << 12)
            | (RESERVED_SPARE << 10)
            | self.scid
        )
        second = (self.vcid << 10) | (self.frame_length - 1)
        body = _PRIMARY_HEADER.pack(first, second, self.sequence_number)
        if self.segment_header is not None:
            body += self.segment_header.to_bytes()
        body += self.data
        return append_fecf(body) if self.fecf_present else body

    @classmethod
    def from_bytes(cls, data: bytes, *, config: TcVcConfig) -> TcFrame:
        """Decode exactly one frame of ``config``'s Virtual Channel.

        The FECF, when present, is checked first over all the octets given: no field is
        trusted before it matches.  Raises :class:`FecfMismatch` or :class:`DecodeError`
        (reasons ``truncated``, ``length-mismatch``, ``oversize``, ``bad-version``,
        ``bad-spare``, ``bad-frame-type``, ``wrong-scid``, ``wrong-vcid``,
        ``bad-sequence-number``, ``empty-data-field``, ``bad-control-command``).
        """
        data = bytes(data)
        if len(data) < PRIMARY_HEADER_LENGTH:
            raise DecodeError(
                Layer.TC_FRAME,
                "truncated",
                _clause("4.1.2"),
                f"{len(data)} octets, the primary header needs {PRIMARY_HEADER_LENGTH}",
            )
        body = (
            strip_fecf(data, layer=Layer.TC_FRAME, clause=_clause("4.1.4.2"))
            if config.fecf_present
            else data
        )
        first, second, sequence_number = _PRIMARY_HEADER.unpack_from(data)
        declared = (second & 0x3FF) + 1
        if declared != len(data):
            raise DecodeError(
                Layer.TC_FRAME,
                "length-mismatch",
                _clause("4.1.2.7"),
                f"Frame Length field says {declared} octets, {len(data)} given",
            )
        if len(data) > config.max_frame_length:
            raise DecodeError(
                Layer.TC_FRAME,
                "oversize",
                _clause("4.1.2.7"),
                f"{len(data)} octets > maximum {config.max_frame_length} on VC {config.vcid}",
            )
        version = first >> 14
        if version != TRANSFER_FRAME_VERSION:
            raise DecodeError(
                Layer.TC_FRAME, "bad-version", _clause("4.1.2.2.2"), f"TFVN {version:02b}"
            )
        spare = (first >> 10) & 0b11
        if spare != RESERVED_SPARE:
            raise DecodeError(
                Layer.TC_FRAME, "bad-spare", _clause("4.1.2.4"), f"spare bits {spare:02b}"
            )
        bypass = (first >> 13) & 1
        control_command = (first >> 12) & 1
        scid = first & MAX_SCID
        vcid = second >> 10
        if scid != config.scid:
            raise DecodeError(
                Layer.TC_FRAME,
                "wrong-scid",
                _clause("4.1.2.5"),
                f"SCID {scid}, this VC belongs to {config.scid}",
            )
        if vcid != config.vcid:
            raise DecodeError(
                Layer.TC_FRAME,
                "wrong-vcid",
                _clause("4.1.2.6"),
                f"VCID {vcid}, this config is VC {config.vcid}",
            )
        field = body[PRIMARY_HEADER_LENGTH:]
        segment_header = None
        if control_command == ControlCommandFlag.TYPE_D and config.segment_header:
            segment_header = SegmentHeader.from_bytes(field)
            field = field[SEGMENT_HEADER_LENGTH:]
        problem = _frame_problem(
            scid=scid,
            vcid=vcid,
            bypass=bypass,
            control_command=control_command,
            sequence_number=sequence_number,
            data=field,
            segment_header=segment_header,
            fecf_present=config.fecf_present,
        )
        if problem is not None:
            raise DecodeError(Layer.TC_FRAME, *problem)
        return cls(
            scid=scid,
            vcid=vcid,
            bypass=BypassFlag(bypass),
            control_command=ControlCommandFlag(control_command),
            sequence_number=sequence_number,
            data=field,
            segment_header=segment_header,
            fecf_present=config.fecf_present,
        )


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
