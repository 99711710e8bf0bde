"""Interoperability with nasa/CryptoLib: frames its ApplySecurity protected (TC and TM,
AES-256-GCM, the all-zero test mask and the SA-table default mask) verify and decrypt
in linkstack configured from the vector, and linkstack protecting the clear frame with
the same SA, key and IV gives the same octets.  Provenance: tests/data/sdls/README.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from linkstack.sdls import (
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    MacMismatch,
    SaTable,
    SecurityAssociation,
    TxCounter,
    protect_tc,
    protect_tm,
    unprotect_tc,
    unprotect_tm,
)
from linkstack.tc.frame import TcFrame, TcVcConfig
from linkstack.tm.frame import TmChannelConfig, TmFrame

VECTORS_PATH = Path(__file__).parent / "data" / "sdls" / "cryptolib_gcm.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())["vectors"]
KEY_ID = 128  # any session key id: CryptoLib's key ids are its own


def _id(v: dict[str, Any]) -> str:
    extra = f"-seghdr{int(v['segment_header'])}" if v["link"] == "TC" else ""
    mask = "zero" if set(v["abm_hex"]) == {"0"} else "default"
    return f"{v['link']}{extra}-{mask}"


def header_octets(v: dict[str, Any]) -> int:
    """Octets before the Security Header: TC primary (+ Segment) header, TM primary."""
    if v["link"] == "TC":
        return 5 + (1 if v["segment_header"] else 0)
    return 6


def abm_for(v: dict[str, Any]) -> bytes:
    """CryptoLib's mask as linkstack takes it: one bit per bit of the whole AAD.

    CryptoLib ANDs its ABM octet by octet from the first octet of the frame over the
    frame header and Security Header and pads it with zeros: cut or pad to that length.
    """
    given = bytes.fromhex(v["abm_hex"])
    n = header_octets(v) + 2 + v["iv_len"] + v["sn_len"] + v["pad_len"]
    assert not any(given[n:]), "a cut mask must only lose zero octets"
    return (given + bytes(n))[:n]


def sa_for(v: dict[str, Any]) -> SecurityAssociation:
    assert v["service"] == "authenticated encryption (AES-256-GCM)"
    return SecurityAssociation(
        spi=v["spi"],
        link=Link[v["link"]],
        vcids=frozenset({v["vcid"]}),
        key_id=KEY_ID,
        iv_length=v["iv_len"],
        sn_length=v["sn_len"],
        pad_length_length=v["pad_len"],
        mac_length=v["mac_len"],
        abm=abm_for(v),
    )


def table_for(v: dict[str, Any]) -> SaTable:
    keys = KeyRing([(KEY_ID, KeyMaterial(bytes.fromhex(v["key_hex"])), KeyState.ACTIVE)])
    return SaTable([sa_for(v)], keys)


def counter_at_iv(v: dict[str, Any]) -> TxCounter:
    sa = sa_for(v)
    counter = TxCounter.for_sa(sa, next_value=int(v["iv_hex"], 16))
    counter.confirm_reservation(counter.plan_reservation(1))
    return counter


def tc_config(v: dict[str, Any]) -> TcVcConfig:
    return TcVcConfig(
        scid=v["scid"], vcid=v["vcid"], segment_header=v["segment_header"], fecf_present=v["fecf"]
    )


def tm_config(v: dict[str, Any]) -> TmChannelConfig:
    return TmChannelConfig(
        scid=v["scid"], frame_length=v["frame_length"], ocf_present=v["ocf"], fecf_present=v["fecf"]
    )


TC_VECTORS = [v for v in VECTORS if v["link"] == "TC"]
TM_VECTORS = [v for v in VECTORS if v["link"] == "TM"]


def test_the_file_holds_both_masks_for_both_links() -> None:
    assert sorted(_id(v) for v in VECTORS) == [
        "TC-seghdr0-default",
        "TC-seghdr0-zero",
        "TC-seghdr1-default",
        "TC-seghdr1-zero",
        "TM-default",
        "TM-zero",
    ]


@pytest.mark.parametrize("v", TC_VECTORS, ids=_id)
def test_cryptolib_tc_frame_verifies_decrypts_and_is_reproduced(v: dict[str, Any]) -> None:
    config = tc_config(v)
    clear = TcFrame.from_bytes(bytes.fromhex(v["clear_frame_hex"]), config=config)
    protected = bytes.fromhex(v["protected_frame_hex"])
    table = table_for(v)
    verified = unprotect_tc(TcFrame.from_bytes(protected, config=config), table)
    assert verified == clear
    assert table.highest_arsn(v["spi"]) == int(v["iv_hex"], 16)
    ours = protect_tc(clear, sa=sa_for(v), keys=table.keys, counter=counter_at_iv(v), config=config)
    assert ours.to_bytes() == protected


@pytest.mark.parametrize("v", TM_VECTORS, ids=_id)
def test_cryptolib_tm_frame_verifies_decrypts_and_is_reproduced(v: dict[str, Any]) -> None:
    config = tm_config(v)
    protected = bytes.fromhex(v["protected_frame_hex"])
    table = table_for(v)
    frame = TmFrame.from_bytes(protected, config=config)
    verified = unprotect_tm(frame, table)
    assert verified.data == bytes.fromhex(v["clear_data_hex"])
    assert verified.ocf == 0x01000000
    clear = replace(frame, data=bytes.fromhex(v["clear_data_hex"]))
    ours = protect_tm(clear, sa=sa_for(v), keys=table.keys, counter=counter_at_iv(v), config=config)
    assert ours.to_bytes() == protected


@pytest.mark.parametrize("v", TC_VECTORS, ids=_id)
def test_the_mask_decides_which_header_bits_count(v: dict[str, Any]) -> None:
    """Flip the lowest VCID bit (octet 2, bit 0x04) and fix the FECF: under the default
    mask (0xFC over octet 2) the MAC fails; under the all-zero mask it still verifies."""
    from linkstack.packets.fecf import append_fecf

    config = tc_config(v)
    raw = bytearray(bytes.fromhex(v["protected_frame_hex"])[:-2])
    raw[2] ^= 0x04  # VCID 1 -> 0
    other = TcVcConfig(
        scid=v["scid"], vcid=0, segment_header=v["segment_header"], fecf_present=True
    )
    frame = TcFrame.from_bytes(append_fecf(bytes(raw)), config=other)
    sa = replace(sa_for(v), vcids=frozenset({0}))
    table = SaTable([sa], table_for(v).keys)
    if any(abm_for(v)):
        with pytest.raises(MacMismatch):
            unprotect_tc(frame, table)
    else:
        assert (
            unprotect_tc(frame, table).data
            == TcFrame.from_bytes(bytes.fromhex(v["clear_frame_hex"]), config=config).data
        )
