"""Communications Link Control Word (CCSDS 232.0-B-4 4.2), carried in the TM OCF.

The CLCW is the Type-1 report of the Operational Control Field (CCSDS 132.0-B-3 4.1.5):
FARM-1 on board fills it, FOP-1 on the ground reads it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from linkstack.errors import DecodeError, Layer, LocalProtocolError

_LAYER: Final = Layer.CLCW

#: Octets in a CLCW.
CLCW_LENGTH: Final = 4  # CCSDS 232.0-B-4 4.2.1.1.2
#: Control Word Type '0' marks a CLCW (a Type-1 report).
CONTROL_WORD_TYPE: Final = 0  # CCSDS 232.0-B-4 4.2.1.2
#: CLCW Version Number '00' (version 1).
CLCW_VERSION: Final = 0  # CCSDS 232.0-B-4 4.2.1.3

#  CLCW, CCSDS 232.0-B-4 4.2.1, 32 bits, bit 0 first on the wire (most significant):
#
#  bit  0    1-2   3-5    6-7    8-13   14-15  16    17    18    19    20    21-22   23    24-31
#     +----+-----+------+------+------+------+-----+-----+-----+-----+-----+-------+-----+-------+
#     |type|vers.|status|COP in| VCID |spare |No RF|No   |Lock-|Wait |Re-  |FARM-B |spare|Report |
#     | 0  | 00  |      |effect|      |  00  |avail|bit  |out  |     |trans|counter|  0  |Value  |
#     |    |     |      |      |      |      |     |lock |     |     |mit  |       |     | N(R)  |
#     +----+-----+------+------+------+------+-----+-----+-----+-----+-----+-------+-----+-------+
_WORD: Final = struct.Struct(">I")


class CopInEffect(IntEnum):
    """COP in Effect (CCSDS 232.0-B-4 4.2.1.5); only COP-1 is defined."""

    RESERVED_0 = 0b00
    COP_1 = 0b01
    RESERVED_2 = 0b10
    RESERVED_3 = 0b11


def _field(name: str, value: int, bits: int, clause: str) -> None:
    if not 0 <= value < 1 << bits:
        raise LocalProtocolError(f"{name}={value} does not fit {bits} bits ({clause})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Clcw:
    """One CLCW, every field of CCSDS 232.0-B-4 4.2.1 (the two constant ones are implied)."""

    vcid: int  # 4.2.1.6, 6 bits
    report_value: int  # N(R), 4.2.1.11, 8 bits
    status: int = 0  # 4.2.1.4, 3 bits, mission-specific
    cop_in_effect: CopInEffect = CopInEffect.COP_1  # 4.2.1.5
    no_rf_available: bool = False  # 4.2.1.8.2
    no_bit_lock: bool = False  # 4.2.1.8.3
    lockout: bool = False  # 4.2.1.8.4
    wait: bool = False  # 4.2.1.8.5
    retransmit: bool = False  # 4.2.1.8.6
    farm_b_counter: int = 0  # 4.2.1.9, 2 bits
    spare_1: int = 0  # 4.2.1.7, bits 14-15, '00' when sent
    spare_2: int = 0  # 4.2.1.10, bit 23, '0' when sent

    def __post_init__(self) -> None:
        _field("status", self.status, 3, "CCSDS 232.0-B-4 4.2.1.4")
        _field("vcid", self.vcid, 6, "CCSDS 232.0-B-4 4.2.1.6")
        _field("spare_1", self.spare_1, 2, "CCSDS 232.0-B-4 4.2.1.7")
        _field("farm_b_counter", self.farm_b_counter, 2, "CCSDS 232.0-B-4 4.2.1.9")
        _field("spare_2", self.spare_2, 1, "CCSDS 232.0-B-4 4.2.1.10")
        _field("report_value", self.report_value, 8, "CCSDS 232.0-B-4 4.2.1.11")

    def to_int(self) -> int:
        return (
            CONTROL_WORD_TYPE << 31
            | CLCW_VERSION << 29
            | self.status << 26
            | int(self.cop_in_effect) << 24
            | self.vcid << 18
            | self.spare_1 << 16
            | int(self.no_rf_available) << 15
            | int(self.no_bit_lock) << 14
            | int(self.lockout) << 13
            | int(self.wait) << 12
            | int(self.retransmit) << 11
            | self.farm_b_counter << 9
            | self.spare_2 << 8
            | self.report_value
        )

    def to_bytes(self) -> bytes:
        return _WORD.pack(self.to_int())

    @classmethod
    def from_int(cls, word: int) -> Clcw:
        """Decode a 32-bit OCF value; raises :class:`DecodeError` if it is not a CLCW."""
        if not 0 <= word <= 0xFFFFFFFF:
            raise DecodeError(
                _LAYER, "bad-length", "CCSDS 232.0-B-4 4.2.1.1.2", f"{word} > 32 bits"
            )
        if word >> 31 != CONTROL_WORD_TYPE:
            raise DecodeError(
                _LAYER, "not-clcw", "CCSDS 232.0-B-4 4.2.1.2", "control word type 1 (Type-2 report)"
            )
        if word >> 29 & 0b11 != CLCW_VERSION:
            raise DecodeError(
                _LAYER,
                "bad-version",
                "CCSDS 232.0-B-4 4.2.1.3",
                f"CLCW version {word >> 29 & 0b11}, want 0",
            )
        return cls(
            status=word >> 26 & 0b111,
            cop_in_effect=CopInEffect(word >> 24 & 0b11),
            vcid=word >> 18 & 0b111111,
            spare_1=word >> 16 & 0b11,
            no_rf_available=bool(word >> 15 & 1),
            no_bit_lock=bool(word >> 14 & 1),
            lockout=bool(word >> 13 & 1),
            wait=bool(word >> 12 & 1),
            retransmit=bool(word >> 11 & 1),
            farm_b_counter=word >> 9 & 0b11,
            spare_2=word >> 8 & 1,
            report_value=word & 0xFF,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Clcw:
        """Decode exactly four octets; raises :class:`DecodeError` otherwise."""
        if len(data) != CLCW_LENGTH:
            raise DecodeError(
                _LAYER,
                "truncated" if len(data) < CLCW_LENGTH else "length-mismatch",
                "CCSDS 232.0-B-4 4.2.1.1.2",
                f"{len(data)} octets, a CLCW has {CLCW_LENGTH}",
            )
        word: int = _WORD.unpack(data)[0]
        return cls.from_int(word)
