"""FECF: CRC-16-CCITT as CCSDS 132.0-B-3 4.1.6 / 232.0-B-4 4.1.4 define it."""

from __future__ import annotations

import fastcrc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.errors import FecfMismatch, Layer, RemoteProtocolError
from linkstack.packets.fecf import append_fecf, crc16, strip_fecf


def bitwise_crc16(data: bytes) -> int:
    """Bit-level model of the book's encoder: shift register preset to ones, g = 0x1021."""
    reg = 0xFFFF
    for octet in data:
        for bit in range(7, -1, -1):
            top = (reg >> 15) ^ (octet >> bit & 1)
            reg = (reg << 1) & 0xFFFF
            if top:
                reg ^= 0x1021
    return reg


# Published CRC-16/CCITT-FALSE (= CRC-16/IBM-3740) values:
# - "123456789" -> 0x29B1: the check value in Greg Cook's CRC RevEng catalogue
#   (reveng.sourceforge.io/crc-catalogue, CRC-16/IBM-3740).
# - "" -> 0xFFFF, "A" -> 0xB915, 256 x "A" -> 0xEA0B: Joe Geluso's "CRC-CCITT" table
#   (column "0xFFFF" initial value), confirmed here by fastcrc's crc16.ibm_3740.
PUBLISHED = [
    (b"123456789", 0x29B1),
    (b"", 0xFFFF),
    (b"A", 0xB915),
    (b"A" * 256, 0xEA0B),
]


@pytest.mark.parametrize(("data", "expected"), PUBLISHED)
def test_published_vectors(data: bytes, expected: int) -> None:
    assert crc16(data) == expected
    assert bitwise_crc16(data) == expected
    assert fastcrc.crc16.ibm_3740(data) == expected


def test_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_matches_bit_model_and_fastcrc(data: bytes) -> None:
    assert crc16(data) == bitwise_crc16(data) == fastcrc.crc16.ibm_3740(data)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_append_strip_round_trip(data: bytes) -> None:
    framed = append_fecf(data)
    assert len(framed) == len(data) + 2
    # The whole frame including its FECF has residue 0 (the RevEng residue of IBM-3740).
    assert crc16(framed) == 0
    assert strip_fecf(framed, layer=Layer.TM_FRAME, clause="x") == data


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_single_bit_error_is_caught(data: bytes, draw: st.DataObject) -> None:
    framed = bytearray(append_fecf(data))
    bit = draw.draw(st.integers(0, len(framed) * 8 - 1))
    framed[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(FecfMismatch) as info:
        strip_fecf(bytes(framed), layer=Layer.TC_FRAME, clause="CCSDS 232.0-B-4 4.1.4")
    assert info.value.reason == "fecf-mismatch"
    assert info.value.layer is Layer.TC_FRAME
    assert info.value.clause == "CCSDS 232.0-B-4 4.1.4"


@pytest.mark.parametrize("frame", [b"", b"\x00"])
def test_too_short_is_typed(frame: bytes) -> None:
    with pytest.raises(FecfMismatch) as info:
        strip_fecf(frame, layer=Layer.TM_FRAME, clause="CCSDS 132.0-B-3 4.1.6")
    assert info.value.reason == "truncated"


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_random_bytes_only_typed_errors(frame: bytes) -> None:
    try:
        body = strip_fecf(frame, layer=Layer.TM_FRAME, clause="c")
    except RemoteProtocolError:
        return
    assert append_fecf(body) == frame
