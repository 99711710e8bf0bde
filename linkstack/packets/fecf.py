"""Frame Error Control Field: the CRC-16-CCITT shared by TM and TC frames.

CCSDS 132.0-B-3 4.1.6 (TM) and 232.0-B-4 4.1.4 (TC) use the same code:
generator x^16 + x^12 + x^5 + 1, register preset to all ones, no reflection,
no final inversion (CRC-16/CCITT-FALSE; check value of ``b"123456789"`` is 0x29B1).
The FECF occupies the last two octets of the frame, most significant octet first.
"""

from __future__ import annotations

from typing import Final

import crcmod

from linkstack.errors import FecfMismatch, Layer

#: Generator polynomial x^16 + x^12 + x^5 + 1 (bit 16 included, as crcmod wants it).
CRC16_POLY: Final = 0x11021  # CCSDS 132.0-B-3 4.1.6.2.1; 232.0-B-4 4.1.4.2.1
#: Shift register preset to all ones.
CRC16_INIT: Final = 0xFFFF  # CCSDS 132.0-B-3 4.1.6.2.1; 232.0-B-4 4.1.4.2.1
#: Length of the FECF in octets.
FECF_LENGTH: Final = 2  # CCSDS 132.0-B-3 4.1.6.1.2; 232.0-B-4 4.1.4.1.2

_crc16 = crcmod.mkCrcFun(CRC16_POLY, initCrc=CRC16_INIT, rev=False, xorOut=0)


def crc16(data: bytes) -> int:
    """CRC-16-CCITT of ``data`` as the FECF carries it."""
    value: int = _crc16(data)
    return value


def append_fecf(data: bytes) -> bytes:
    """``data`` followed by its two-octet FECF."""
    return data + crc16(data).to_bytes(FECF_LENGTH, "big")


def strip_fecf(frame: bytes, *, layer: Layer, clause: str) -> bytes:
    """Check the trailing FECF of ``frame`` and return the frame without it.

    Raises :class:`FecfMismatch` (reason ``"fecf-mismatch"``) when the CRC does not
    match, or when the frame is too short to hold a FECF at all (reason ``"truncated"``).
    """
    if len(frame) < FECF_LENGTH:
        raise FecfMismatch(
            layer,
            "truncated",
            clause,
            f"{len(frame)} octets cannot hold a {FECF_LENGTH}-octet FECF",
        )
    body = frame[:-FECF_LENGTH]
    received = int.from_bytes(frame[-FECF_LENGTH:], "big")
    computed = crc16(body)
    if received != computed:
        raise FecfMismatch(
            layer, "fecf-mismatch", clause, f"received 0x{received:04X}, computed 0x{computed:04X}"
        )
    return bytes(body)
