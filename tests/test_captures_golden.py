"""Golden replays of the committed captures (captures/README.md).

Each ``captures/NAME.pcapng`` was recorded by ``captures/record.py`` together with the
live run's ``linkstack demo --json`` output, ``NAME.live.json``.  Replaying the capture
through today's ground side must give the live record's conversation again: a change to
any layer that alters what the ground makes of the recorded units shows up here as a
diff.  If the change is meant, regenerate with ``.venv/bin/python captures/record.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from captures.record import SDLS_SESSIONS, TEST_KEYS, private_test_keys
from groundstation.cli import main
from groundstation.replay import TIMING_FIELDS, TIMING_TOLERANCE_S, comparable
from linkstack.capture import UnitKind, read_capture

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
NAMES = sorted(path.stem for path in CAPTURES.glob("*.pcapng"))


def replay(path: Path) -> tuple[int, list[dict[str, Any]], str]:
    """``groundstation replay PATH --json``, with a private copy of the test key for a
    protected session."""
    argv = ["replay", str(path), "--json"]
    with contextlib.ExitStack() as stack:
        if path.stem in SDLS_SESSIONS:
            argv += ["--keys", str(stack.enter_context(private_test_keys()))]
        out, err = io.StringIO(), io.StringIO()
        code = main(argv, stdout=out, stderr=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_there_are_captures() -> None:
    assert len(NAMES) >= 3


@pytest.mark.parametrize("name", NAMES)
def test_replay_reproduces_the_live_run(name: str, xdg_cache_home: object) -> None:
    live = json.loads((CAPTURES / f"{name}.live.json").read_text(encoding="utf-8"))
    code, records, err = replay(CAPTURES / f"{name}.pcapng")
    assert "Traceback" not in err
    assert code == (0 if live["error"] is None else 1), err
    (record,) = records
    assert comparable(record) == comparable(live)
    for key in TIMING_FIELDS:
        if live[key] is None:
            assert record[key] is None
        else:
            assert record[key] == pytest.approx(live[key], abs=TIMING_TOLERANCE_S)
    assert record["replay"]["uplink"]["identical"] is True
    assert record["replay"]["uplink"]["replayed_cltus"] == live["counters"]["cltus_sent"]


@pytest.mark.parametrize("name", NAMES)
def test_replay_is_deterministic(name: str, xdg_cache_home: object) -> None:
    first = replay(CAPTURES / f"{name}.pcapng")
    assert replay(CAPTURES / f"{name}.pcapng") == first


@pytest.mark.parametrize("name", NAMES)
def test_each_capture_has_a_readme_line(name: str) -> None:
    assert f"`{name}.pcapng`" in (CAPTURES / "README.md").read_text(encoding="utf-8")


def test_the_sessions_cover_errors_loss_and_an_outage() -> None:
    lives = {n: json.loads((CAPTURES / f"{n}.live.json").read_text()) for n in NAMES}
    downlinks = [live["channels"]["downlink"] for live in lives.values()]
    assert any(d["bits_flipped"] > 0 for d in downlinks)
    assert any(d["units_lost"] > 0 for d in downlinks)
    assert any(live["channels"]["uplink"]["units_lost_outage"] > 0 for live in lives.values())


def test_there_is_a_protected_session() -> None:
    assert set(NAMES) >= SDLS_SESSIONS


@pytest.mark.parametrize("name", sorted(SDLS_SESSIONS))
def test_a_protected_capture_holds_ciphertext_only(name: str) -> None:
    with open(CAPTURES / f"{name}.pcapng", "rb") as stream:
        capture = read_capture(stream)
    assert {unit.kind for unit in capture.units} == {UnitKind.CLTU, UnitKind.CADU}
    security = capture.metadata["security"]
    assert isinstance(security, dict)
    assert (security["protected"], security["tc_spi"], security["tm_spi"]) == (True, 1, 2)
    assert "prompt" not in capture.metadata
    raw = (CAPTURES / f"{name}.pcapng").read_bytes()
    for entry in json.loads(TEST_KEYS.read_text())["keys"]:
        assert bytes.fromhex(entry["key"]) not in raw
        assert entry["key"].encode() not in raw
    live = json.loads((CAPTURES / f"{name}.live.json").read_text())
    assert live["security"]["enabled"] is True
    assert live["security"]["mac_failures"] == 0


@pytest.mark.parametrize("name", sorted(SDLS_SESSIONS))
def test_a_protected_capture_needs_the_keys(name: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["replay", str(CAPTURES / f"{name}.pcapng")], stdout=out, stderr=err)
    assert code == 1
    assert "replay needs its key file, --keys PATH" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert out.getvalue() == ""
