"""TM Space Data Link Protocol (CCSDS 132.0-B-3): the TM Transfer Frame codec.

* :class:`TmChannelConfig`: the managed parameters of one physical channel.
* :class:`TmFrame`: one TM Transfer Frame, every primary-header field, OCF and FECF.
* The wire constants of the frame (version, identifier ranges, First Header Pointer
  values, field lengths).

The engines built on the codec (the VC packetizer, the master-channel multiplexer with
its OID frames, the depacketizer) live in :mod:`linkstack.tm.channels`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from linkstack.errors import DecodeError, Layer, LocalProtocolError
from linkstack.packets.fecf import FECF_LENGTH, append_fecf, strip_fecf

_LAYER: Final = Layer.TM_FRAME

#: Transfer Frame Version Number '00' (version 1).
TFVN: Final = 0  # CCSDS 132.0-B-3 4.1.2.2.2
#: Octets in the Transfer Frame Primary Header.
PRIMARY_HEADER_LENGTH: Final = 6  # CCSDS 132.0-B-3 4.1.2.1
#: Spacecraft Identifier: 10 bits.
MAX_SCID: Final = 0x3FF  # CCSDS 132.0-B-3 4.1.2.2.3
#: Virtual Channel Identifier: 3 bits.
MAX_VCID: Final = 7  # CCSDS 132.0-B-3 4.1.2.3
#: Master and Virtual Channel Frame Counts run modulo 256.
FRAME_COUNT_MODULUS: Final = 256  # CCSDS 132.0-B-3 4.1.2.5.2, 4.1.2.6.2
#: Segment Length Identifier: '11' whenever the Synchronization Flag is '0'.
SEGMENT_LENGTH_ID: Final = 0b11  # CCSDS 132.0-B-3 4.1.2.7.5.2
#: First Header Pointer when no packet starts in the data field.
FHP_NO_PACKET_START: Final = 0x7FF  # CCSDS 132.0-B-3 4.1.2.7.6.4
#: First Header Pointer of an OID (Only Idle Data) frame.
FHP_IDLE_ONLY: Final = 0x7FE  # CCSDS 132.0-B-3 4.1.2.7.6.5
#: Octets in the Operational Control Field.
OCF_LENGTH: Final = 4  # CCSDS 132.0-B-3 4.1.5.1
#: Secondary header: one identification octet plus 1..63 data octets.
MAX_SECONDARY_HEADER_DATA: Final = 63  # CCSDS 132.0-B-3 4.1.3.1.3
#: Longest TM Transfer Frame.
MAX_FRAME_LENGTH: Final = 2048  # CCSDS 132.0-B-3 4.1.1; 131.0-B-5 (frame lengths)
#: VC of OID frames by default (ECSS-E-ST-50-03C practice); it must also be a packet VC.
DEFAULT_OID_VCID: Final = 7  # CCSDS 132.0-B-3 4.1.4.6 (OID VCID is a packet-carrying VC)

_CLAUSE_FHP: Final = "CCSDS 132.0-B-3 4.1.2.7.6"
_CLAUSE_VC_COUNT: Final = "CCSDS 132.0-B-3 4.1.2.6"
_CLAUSE_FECF: Final = "CCSDS 132.0-B-3 4.1.6"


def _check(name: str, value: int, low: int, high: int, clause: str) -> None:
    if not low <= value <= high:
        raise LocalProtocolError(f"{name}={value} outside {low}..{high} ({clause})")


@dataclass(frozen=True, slots=True, kw_only=True)
class TmChannelConfig:
    """Managed parameters of a TM physical/master channel (CCSDS 132.0-B-3 5)."""

    #: Spacecraft Identifier, 10 bits (4.1.2.2.3).
    scid: int
    #: Fixed Transfer Frame length in octets (4.1.1.2), at most 2048.
    frame_length: int
    #: Operational Control Field present in every frame (4.1.2.4, 4.1.5).
    ocf_present: bool = True
    #: Frame Error Control Field present in every frame (4.1.6.1).
    fecf_present: bool = True
    #: Octets of secondary-header data (1..63), 0 for no secondary header (4.1.3).
    secondary_header_length: int = 0

    def __post_init__(self) -> None:
        _check("scid", self.scid, 0, MAX_SCID, "CCSDS 132.0-B-3 4.1.2.2.3")
        _check(
            "secondary_header_length",
            self.secondary_header_length,
            0,
            MAX_SECONDARY_HEADER_DATA,
            "CCSDS 132.0-B-3 4.1.3.1.3",
        )
        overhead = self.frame_length - self.data_field_length
        _check(
            "frame_length",
            self.frame_length,
            overhead + 1,
            MAX_FRAME_LENGTH,
            "CCSDS 132.0-B-3 4.1.1: header, secondary header and trailer plus >= 1 data octet",
        )

    @property
    def secondary_header_octets(self) -> int:
        """Whole secondary header including its identification octet, 0 when absent."""
        return self.secondary_header_length + 1 if self.secondary_header_length else 0

    @property
    def trailer_length(self) -> int:
        return (OCF_LENGTH if self.ocf_present else 0) + (FECF_LENGTH if self.fecf_present else 0)

    @property
    def data_field_length(self) -> int:
        """Octets of the Transfer Frame Data Field (4.1.4)."""
        return (
            self.frame_length
            - PRIMARY_HEADER_LENGTH
            - self.secondary_header_octets
            - self.trailer_length
        )


#  Transfer Frame Primary Header, CCSDS 132.0-B-3 4.1.2, 48 bits, bit 0 first on the wire:
#
#   0    2            12     15  16        24        32  33  34  35   37              48
#  +----+------------+------+---+---------+---------+---+---+---+----+----------------+
#  |TFVN| SCID (10)  | VCID |OCF| MC frame| VC frame|sec|syn|pkt|seg.| First Header   |
#  | 00 |            | (3)  |flg| count   | count   |hdr|flg|ord|len | Pointer (11)   |
#  +----+------------+------+---+---------+---------+---+---+---+----+----------------+
#  \__ master channel id ___/              \_______ data field status (16) ___________/
_HEADER: Final = struct.Struct(">HBBH")
_OCF: Final = struct.Struct(">I")


@dataclass(frozen=True, slots=True, kw_only=True)
class TmFrame:
    """One TM Transfer Frame (CCSDS 132.0-B-3 4.1).

    The OCF flag is ``ocf is not None`` and the secondary header flag is
    ``bool(secondary_header)``; the FECF is computed by :meth:`to_bytes` and checked by
    :meth:`from_bytes` when ``fecf_present``.
    """

    scid: int
    vcid: int
    mc_count: int
    vc_count: int
    first_header_pointer: int
    data: bytes
    #: The 32-bit Operational Control Field (a CLCW), or None when absent.
    ocf: int | None = None
    fecf_present: bool = True
    #: Secondary header data field (1..63 octets), empty when there is none.
    secondary_header: bytes = b""
    sync_flag: bool = False
    #: Reserved ('0') when the sync flag is '0' (4.1.2.7.4); kept as received.
    packet_order_flag: bool = False
    segment_length_id: int = SEGMENT_LENGTH_ID

    def __post_init__(self) -> None:
        _check("scid", self.scid, 0, MAX_SCID, "CCSDS 132.0-B-3 4.1.2.2.3")
        _check("vcid", self.vcid, 0, MAX_VCID, "CCSDS 132.0-B-3 4.1.2.3")
        _check("mc_count", self.mc_count, 0, 255, "CCSDS 132.0-B-3 4.1.2.5")
        _check("vc_count", self.vc_count, 0, 255, _CLAUSE_VC_COUNT)
        _check("first_header_pointer", self.first_header_pointer, 0, 0x7FF, _CLAUSE_FHP)
        _check("segment_length_id", self.segment_length_id, 0, 3, "CCSDS 132.0-B-3 4.1.2.7.5")
        _check(
            "len(secondary_header)",
            len(self.secondary_header),
            0,
            MAX_SECONDARY_HEADER_DATA,
            "CCSDS 132.0-B-3 4.1.3.1.3",
        )
        if self.ocf is not None:
            _check("ocf", self.ocf, 0, 0xFFFFFFFF, "CCSDS 132.0-B-3 4.1.5.1")
        _check(
            "frame length",
            self.length,
            PRIMARY_HEADER_LENGTH + 1,
            MAX_FRAME_LENGTH,
            "CCSDS 132.0-B-3 4.1.1",
        )
        if not self.data:
            raise LocalProtocolError("empty data field (CCSDS 132.0-B-3 4.1.4)")
        if not self.sync_flag:
            if self.segment_length_id != SEGMENT_LENGTH_ID:
                raise LocalProtocolError(
                    f"segment_length_id={self.segment_length_id:#04b} with sync_flag=0, "
                    "must be 0b11 (CCSDS 132.0-B-3 4.1.2.7.5.2)"
                )
            fhp = self.first_header_pointer
            if fhp not in (FHP_NO_PACKET_START, FHP_IDLE_ONLY) and fhp >= len(self.data):
                raise LocalProtocolError(
                    f"first_header_pointer={fhp} beyond the {len(self.data)}-octet data field "
                    f"({_CLAUSE_FHP}.3)"
                )

    @property
    def version(self) -> int:
        return TFVN

    @property
    def ocf_flag(self) -> bool:
        return self.ocf is not None

    @property
    def secondary_header_flag(self) -> bool:
        return bool(self.secondary_header)

    @property
    def is_idle(self) -> bool:
        """True for an OID frame (FHP '11111111110', CCSDS 132.0-B-3 4.1.2.7.6.5)."""
        return not self.sync_flag and self.first_header_pointer == FHP_IDLE_ONLY

    @property
    def length(self) -> int:
        return (
            PRIMARY_HEADER_LENGTH
            + (len(self.secondary_header) + 1 if self.secondary_header else 0)
            + len(self.data)
            + (OCF_LENGTH if self.ocf is not None else 0)
            + (FECF_LENGTH if self.fecf_present else 0)
        )

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(
            TFVN << 14 | self.scid << 4 | self.vcid << 1 | int(self.ocf is not None),
            self.mc_count,
            self.vc_count,
            int(bool(self.secondary_header)) << 15
            | int(self.sync_flag) << 14
            | int(self.packet_order_flag) << 13
            | self.segment_length_id << 11
            | self.first_header_pointer,
        )
        parts = [header]
        if self.secondary_header:
            # Identification field: version '00', length = total octets - 1 (4.1.3.2).
            parts.append(bytes([len(self.secondary_header)]))
            parts.append(self.secondary_header)
        parts.append(self.data)
        if self.ocf is not None:
            parts.append(_OCF.pack(self.ocf))
        body = b"".join(parts)
        return append_fecf(body) if self.fecf_present else body

    @classmethod
    def from_bytes(cls, data: bytes, *, config: TmChannelConfig) -> TmFrame:
        """Parse one frame of ``config``'s channel; raises :class:`RemoteProtocolError`."""
        if len(data) != config.frame_length:
            raise DecodeError(
                _LAYER,
                "truncated" if len(data) < config.frame_length else "length-mismatch",
                "CCSDS 132.0-B-3 4.1.1.2",
                f"{len(data)} octets, the channel's frames have {config.frame_length}",
            )
        body = strip_fecf(data, layer=_LAYER, clause=_CLAUSE_FECF) if config.fecf_present else data
        first, mc_count, vc_count, status = _HEADER.unpack_from(body)
        version = first >> 14
        if version != TFVN:
            raise DecodeError(
                _LAYER, "bad-version", "CCSDS 132.0-B-3 4.1.2.2.2", f"TFVN {version}, want 0"
            )
        scid = first >> 4 & MAX_SCID
        if scid != config.scid:
            raise DecodeError(
                _LAYER,
                "unexpected-scid",
                "CCSDS 132.0-B-3 4.1.2.2.3",
                f"SCID {scid}, channel is {config.scid}",
            )
        ocf_flag = bool(first & 1)
        if ocf_flag != config.ocf_present:
            raise DecodeError(
                _LAYER,
                "ocf-flag-mismatch",
                "CCSDS 132.0-B-3 4.1.2.4",
                f"OCF flag {int(ocf_flag)}, channel says {int(config.ocf_present)}",
            )
        secondary_flag = bool(status >> 15)
        if secondary_flag != bool(config.secondary_header_length):
            raise DecodeError(
                _LAYER,
                "secondary-header-mismatch",
                "CCSDS 132.0-B-3 4.1.2.7.2",
                f"secondary header flag {int(secondary_flag)}",
            )
        sync_flag = bool(status >> 14 & 1)
        segment_length_id = status >> 11 & 0b11
        fhp = status & 0x7FF
        if not sync_flag and segment_length_id != SEGMENT_LENGTH_ID:
            raise DecodeError(
                _LAYER,
                "bad-segment-length-id",
                "CCSDS 132.0-B-3 4.1.2.7.5.2",
                f"segment length id {segment_length_id:#04b} with sync flag 0",
            )
        offset = PRIMARY_HEADER_LENGTH
        secondary_header = b""
        if secondary_flag:
            ident = body[offset]
            if ident >> 6 != 0 or (ident & 0x3F) != config.secondary_header_length:
                raise DecodeError(
                    _LAYER,
                    "secondary-header-mismatch",
                    "CCSDS 132.0-B-3 4.1.3.2",
                    f"identification octet {ident:#04x}",
                )
            secondary_header = bytes(body[offset + 1 : offset + 1 + config.secondary_header_length])
            offset += config.secondary_header_octets
        data_end = len(body) - (OCF_LENGTH if ocf_flag else 0)
        field_data = bytes(body[offset:data_end])
        if (
            not sync_flag
            and fhp not in (FHP_NO_PACKET_START, FHP_IDLE_ONLY)
            and fhp >= len(field_data)
        ):
            raise DecodeError(
                _LAYER,
                "bad-first-header-pointer",
                f"{_CLAUSE_FHP}.3",
                f"FHP {fhp} beyond the {len(field_data)}-octet data field",
            )
        ocf: int | None = _OCF.unpack_from(body, data_end)[0] if ocf_flag else None
        return cls(
            scid=scid,
            vcid=first >> 1 & MAX_VCID,
            mc_count=mc_count,
            vc_count=vc_count,
            first_header_pointer=fhp,
            data=field_data,
            ocf=ocf,
            fecf_present=config.fecf_present,
            secondary_header=secondary_header,
            sync_flag=sync_flag,
            packet_order_flag=bool(status >> 13 & 1),
            segment_length_id=segment_length_id,
        )


__all__ = [
    "DEFAULT_OID_VCID",
    "FHP_IDLE_ONLY",
    "FHP_NO_PACKET_START",
    "FRAME_COUNT_MODULUS",
    "MAX_FRAME_LENGTH",
    "MAX_SCID",
    "MAX_SECONDARY_HEADER_DATA",
    "MAX_VCID",
    "OCF_LENGTH",
    "PRIMARY_HEADER_LENGTH",
    "SEGMENT_LENGTH_ID",
    "TFVN",
    "TmChannelConfig",
    "TmFrame",
]
