"""CLCW codec, CCSDS 232.0-B-4 4.2."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from linkstack.tc.clcw import Clcw, CopInEffect


def bit_model(bits: dict[str, int]) -> int:
    """Independent model: place each field at the book's bit numbers (bit 0 = MSB)."""
    layout = [  # (name, first bit, width) from 232.0-B-4 figure 4-8 / dariol83 ccsds Clcw.java
        ("type", 0, 1),
        ("version", 1, 2),
        ("status", 3, 3),
        ("cop", 6, 2),
        ("vcid", 8, 6),
        ("spare1", 14, 2),
        ("norf", 16, 1),
        ("nobitlock", 17, 1),
        ("lockout", 18, 1),
        ("wait", 19, 1),
        ("retransmit", 20, 1),
        ("farmb", 21, 2),
        ("spare2", 23, 1),
        ("nr", 24, 8),
    ]
    word = 0
    for name, first, width in layout:
        word |= bits.get(name, 0) << (32 - first - width)
    return word


clcws = st.builds(
    Clcw,
    vcid=st.integers(0, 63),
    report_value=st.integers(0, 255),
    status=st.integers(0, 7),
    cop_in_effect=st.sampled_from(CopInEffect),
    no_rf_available=st.booleans(),
    no_bit_lock=st.booleans(),
    lockout=st.booleans(),
    wait=st.booleans(),
    retransmit=st.booleans(),
    farm_b_counter=st.integers(0, 3),
    spare_1=st.integers(0, 3),
    spare_2=st.integers(0, 1),
)


@settings(max_examples=300)
@given(clcws)
def test_round_trip(clcw: Clcw) -> None:
    assert Clcw.from_bytes(clcw.to_bytes()) == clcw
    assert Clcw.from_int(clcw.to_int()) == clcw
    assert clcw.to_bytes() == clcw.to_int().to_bytes(4, "big")


@settings(max_examples=300)
@given(clcws)
def test_matches_bit_model(c: Clcw) -> None:
    expected = bit_model(
        {
            "status": c.status,
            "cop": int(c.cop_in_effect),
            "vcid": c.vcid,
            "spare1": c.spare_1,
            "norf": int(c.no_rf_available),
            "nobitlock": int(c.no_bit_lock),
            "lockout": int(c.lockout),
            "wait": int(c.wait),
            "retransmit": int(c.retransmit),
            "farmb": c.farm_b_counter,
            "spare2": c.spare_2,
            "nr": c.report_value,
        }
    )
    assert c.to_int() == expected


def test_yamcs_shifts() -> None:
    # Yamcs Cop1TcPacketHandler.parseCLCW (yamcs-core org/yamcs/tctm/ccsds): VCID = w >> 18
    # & 0x3F, lockout = w >> 13, wait = w >> 12, retransmit = w >> 11, N(R) = w & 0xFF.
    w = Clcw(vcid=0x2A, report_value=0xC3, lockout=True, retransmit=True).to_int()
    assert (w >> 18) & 0x3F == 0x2A
    assert (w >> 13) & 1 == 1
    assert (w >> 12) & 1 == 0
    assert (w >> 11) & 1 == 1
    assert w & 0xFF == 0xC3
    # COP-1 in effect: bits 6-7 = '01' -> second octet... first octet is 0b000_000_01.
    assert w >> 24 == 0x01


def test_hand_vector() -> None:
    # Every flag set, VC 63, FARM-B 3, N(R) 0xFF, status 0b101: worked out bit by bit.
    c = Clcw(
        vcid=63,
        report_value=0xFF,
        status=0b101,
        no_rf_available=True,
        no_bit_lock=True,
        lockout=True,
        wait=True,
        retransmit=True,
        farm_b_counter=3,
    )
    # 0 00 101 01 | 111111 00 | 1 1 1 1 1 11 0 | 11111111
    assert c.to_bytes() == bytes([0b00010101, 0b11111100, 0b11111110, 0xFF])


def test_not_a_clcw() -> None:
    with pytest.raises(DecodeError) as info:
        Clcw.from_int(0x8000_0000)
    assert info.value.reason == "not-clcw"
    with pytest.raises(DecodeError) as info:
        Clcw.from_int(0x2000_0000)
    assert info.value.reason == "bad-version"


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02", b"\x00" * 5])
def test_wrong_length(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Clcw.from_bytes(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vcid": 64, "report_value": 0},
        {"vcid": 0, "report_value": 256},
        {"vcid": 0, "report_value": 0, "farm_b_counter": 4},
        {"vcid": 0, "report_value": 0, "status": 8},
        {"vcid": -1, "report_value": 0},
    ],
)
def test_out_of_range_is_local_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        Clcw(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=8))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    try:
        c = Clcw.from_bytes(data)
    except RemoteProtocolError:
        return
    assert c.to_bytes() == data


@settings(max_examples=300)
@given(st.integers(-(2**33), 2**33))
def test_random_ints_only_typed_errors(word: int) -> None:
    try:
        c = Clcw.from_int(word)
    except RemoteProtocolError:
        return
    assert c.to_int() == word
