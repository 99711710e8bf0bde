"""``linkstack sdls protect|verify`` through ``main`` in memory, on CryptoLib's frames
(tests/data/sdls/README.md) and on bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from linkstack.cli.main import Streams, main
from linkstack.packets.fecf import append_fecf
from linkstack.sdls import KeyMaterial, KeyRing, KeyState
from linkstack.sdls.keystore import write_key_file
from tests.test_sdls_cryptolib import KEY_ID, TC_VECTORS, TM_VECTORS, sa_for


def run(argv: list[str], stdin: bytes) -> tuple[int, bytes, list[dict[str, Any]], str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(argv, Streams(io.BytesIO(stdin), out, err))
    text = err.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return code, out.getvalue(), lines, text


def key_file(tmp_path: Path, v: dict[str, Any]) -> Path:
    path = tmp_path / "keys.json"
    keys = KeyRing([(KEY_ID, KeyMaterial(bytes.fromhex(v["key_hex"])), KeyState.ACTIVE)])
    write_key_file(path, keys, [sa_for(v)], overwrite=True)
    return path


# every TC vector without a Segment Header / with one, one call each
NO_SEG = [v for v in TC_VECTORS if not v["segment_header"]]
SEG = [v for v in TC_VECTORS if v["segment_header"]]


@pytest.mark.parametrize(
    "v", NO_SEG + SEG, ids=lambda v: v["abm_label"][:8] + str(v["segment_header"])
)
def test_verify_then_protect_cryptolib_tc_frames(tmp_path: Path, v: dict[str, Any]) -> None:
    keys = key_file(tmp_path, v)
    options = ["--keys", str(keys), "--link", "tc"] + (
        ["--segment-header"] if v["segment_header"] else []
    )
    protected = bytes.fromhex(v["protected_frame_hex"])
    code, out, lines, _ = run(["sdls", "verify", *options], protected)
    assert code == 0
    assert out == bytes.fromhex(v["clear_frame_hex"])
    assert lines == [
        {"index": 0, "offset": 0, "spi": 5, "iv": v["iv_hex"], "arsn": 5, "verdict": "ok"},
        {"frames": 1, "ok": 1, "drops": {}},
    ]
    code, out, lines, _ = run(["sdls", "protect", *options, "--iv", "5"], out)
    assert code == 0 and out == protected
    assert lines[0]["verdict"] == "ok" and lines[0]["iv"] == v["iv_hex"]


@pytest.mark.parametrize("v", TM_VECTORS, ids=lambda v: v["abm_label"][:8])
def test_verify_then_protect_cryptolib_tm_frames(tmp_path: Path, v: dict[str, Any]) -> None:
    keys = key_file(tmp_path, v)
    options = ["--keys", str(keys), "--link", "tm", "--frame-length", "256"]
    protected = bytes.fromhex(v["protected_frame_hex"])
    code, clear, lines, _ = run(["sdls", "verify", *options], protected * 2)
    # the same frame twice: the second is a replay, counted and dropped
    assert code == 2
    assert len(clear) == 256 - 30
    assert clear[6:-6] == bytes.fromhex(v["clear_data_hex"])
    assert [line.get("verdict") for line in lines[:2]] == ["ok", "dropped"]
    assert lines[1]["reason"] == "sdls/replay"
    assert lines[2] == {"frames": 2, "ok": 1, "drops": {"sdls/replay": 1}}
    code, out, lines, _ = run(["sdls", "protect", *options, "--iv", "0x5"], clear)
    assert code == 0 and out == protected


def test_unknown_spi_and_cut_frames_are_counted_drops(tmp_path: Path) -> None:
    v = NO_SEG[0]
    keys = key_file(tmp_path, v)
    good = bytes.fromhex(v["protected_frame_hex"])
    other_spi = bytearray(good[:-2])
    other_spi[6] = 9  # SPI 5 -> 9 (octets 5-6 after the 5-octet primary header)
    stream = append_fecf(bytes(other_spi)) + good + good[:20]
    code, out, lines, _ = run(["sdls", "verify", "--keys", str(keys), "--link", "tc"], stream)
    assert code == 2
    assert out == bytes.fromhex(v["clear_frame_hex"])
    assert [(line.get("spi"), line.get("reason")) for line in lines[:3]] == [
        (9, "sdls/unknown-spi"),
        (5, None),
        (None, "tc-frame/truncated"),
    ]
    assert lines[3] == {
        "frames": 3,
        "ok": 1,
        "drops": {"sdls/unknown-spi": 1, "tc-frame/truncated": 1},
    }


def test_a_key_file_mask_of_the_wrong_length_is_one_clear_line(tmp_path: Path) -> None:
    v = NO_SEG[0]
    keys = key_file(tmp_path, v)
    document = json.loads(keys.read_text())
    document["security_associations"][0]["abm"] = "ff" * 8
    keys.write_text(json.dumps(document))
    code, out, _, text = run(["sdls", "verify", "--keys", str(keys), "--link", "tc"], b"")
    assert code == 1 and out == b""
    assert text.count("\n") == 1
    assert "security_associations[0]: SA 5: abm: 8 octets; a TC mask covers" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--link", "tm"], "--link tm needs --frame-length N"),
        (["--link", "tc", "--frame-length", "256"], "are tm options"),
        (["--link", "tm", "--frame-length", "256", "--segment-header"], "is a tc option"),
    ],
)
def test_option_misuse_is_an_error(tmp_path: Path, argv: list[str], message: str) -> None:
    keys = key_file(tmp_path, NO_SEG[0])
    code, _, _, text = run(["sdls", "verify", "--keys", str(keys), *argv], b"")
    assert code == 1 and message in text


def test_protect_with_an_spi_the_file_lacks_is_an_error(tmp_path: Path) -> None:
    keys = key_file(tmp_path, NO_SEG[0])
    argv = ["sdls", "protect", "--keys", str(keys), "--link", "tc", "--iv", "1", "--spi", "7"]
    code, _, _, text = run(argv, b"")
    assert code == 1 and "--spi 7: no TC SA with that SPI" in text
