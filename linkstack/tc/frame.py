"""TC Space Data Link Protocol transfer frames (CCSDS 232.0-B-4).

What lives here:

* :class:`TcVcConfig`: the managed parameters of one Virtual Channel;
* :class:`TcFrame`: the frame codec (primary header, optional Segment Header, data,
  optional FECF), frame types AD, BD and BC;
* :class:`SegmentHeader`, :class:`Unlock`, :class:`SetVR`: the one-octet Segment Header
  and the two FARM-1 Control Commands.

The MAP Packet Processing Function (blocking, segmentation) and the reassembly engine
:class:`TcReassembler` live in :mod:`linkstack.tc.segments`.

Frame Sequence Numbers N(S) are assigned by FOP-1 (COP-1, CCSDS 232.1-B-2): every
builder here takes N(S) as an explicit argument.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from linkstack.errors import DecodeError, Layer, LocalProtocolError
from linkstack.packets.fecf import FECF_LENGTH, append_fecf, strip_fecf

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


__all__ = [
    "MAX_FRAME_LENGTH",
    "MAX_MAP_ID",
    "MAX_SCID",
    "MAX_SEQUENCE_NUMBER",
    "MAX_VCID",
    "PRIMARY_HEADER_LENGTH",
    "RESERVED_SPARE",
    "SEGMENT_HEADER_LENGTH",
    "SET_VR_OCTETS",
    "TRANSFER_FRAME_VERSION",
    "TYPE_B_SEQUENCE_NUMBER",
    "UNLOCK_OCTET",
    "BypassFlag",
    "ControlCommand",
    "ControlCommandFlag",
    "FrameType",
    "SegmentHeader",
    "SequenceFlags",
    "SetVR",
    "TcFrame",
    "TcVcConfig",
    "Unlock",
    "decode_control_command",
    "peek_frame_length",
    "peek_vcid",
]
