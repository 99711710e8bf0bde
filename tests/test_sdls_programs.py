"""``--keys PATH`` on the programs: ``linkstack demo``, ``onboard serve``, ``groundstation ask``.

Security is on wherever keys are given; ``--json`` reports its counters; a key file that
group or others may read is refused (exit 1, one line, no traceback); a protected capture
holds ciphertext only; and key material never reaches stdout, stderr or a capture.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from groundstation.cli import main as groundstation_main
from linkstack.capture import UnitKind, read_capture
from linkstack.coding.tc import CltuDecoded, CltuDecoder
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded
from linkstack.endpoints import LinkConfig
from linkstack.inference.protocol import pack_token_ids
from linkstack.sdls import KeyMaterial, KeyRing
from linkstack.sdls.keystore import generate_key_file, load_key_file, write_key_file
from onboard.cli import main as onboard_main
from tests.test_cli_demo import reference, run_demo
from tests.test_onboard_serve import ROOT, Server, free_port, onboard, python_env

if TYPE_CHECKING:
    from onboard.model import ModelHandle

CAPTURES = ROOT / "captures"


def key_octets(path: Path) -> list[bytes]:
    """Every key of a key file, as octets and as the hex the file holds."""
    found = []
    for entry in json.loads(path.read_text())["keys"]:
        found += [bytes.fromhex(entry["key"]), entry["key"].encode(), entry["key"].upper().encode()]
    return found


def assert_no_key(path: Path, *texts: bytes | str) -> None:
    for text in texts:
        blob = text.encode() if isinstance(text, str) else text
        for secret in key_octets(path):
            assert secret not in blob


def ids_in_the_clear(capture_path: Path, ids: list[int]) -> int:
    """Runs of 4 ids (packed 18-bit, every alignment) found in a recorded unit or in the
    frames a receiver without keys decodes from them."""
    with open(capture_path, "rb") as stream:
        capture = read_capture(stream)
    config = capture.link_config() or LinkConfig()
    tc, tm = CltuDecoder(randomize=config.tc_randomize), CaduSynchronizer(config.tm_coding)
    units = [unit.data for unit in capture.units]
    for unit in capture.units:
        if unit.kind is UnitKind.CLTU:
            tc.receive_bytes(unit.data)
        elif unit.kind is UnitKind.CADU:
            tm.receive_bytes(unit.data)
    tm.flush()
    while (event := tc.next_event()) is not None:
        if isinstance(event, CltuDecoded):
            units.append(event.data)
    while (tm_event := tm.next_event()) is not None:
        if isinstance(tm_event, FrameDecoded):
            units.append(tm_event.frame)
    runs = [pack_token_ids(ids[i : i + 4]) for i in range(len(ids) - 3)]
    return sum(1 for run in runs for unit in units if run in unit)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    generate_key_file(path)
    return path


# -- the committed captures: the search finds ids in the clear, not in the protected one --


def test_the_clear_capture_shows_its_ids_and_the_protected_one_does_not() -> None:
    clear = json.loads((CAPTURES / "s-band-clean.live.json").read_text())
    protected = json.loads((CAPTURES / "s-band-sdls.live.json").read_text())
    assert clear["prompt_ids"] == protected["prompt_ids"]
    ids = clear["prompt_ids"]
    assert ids_in_the_clear(CAPTURES / "s-band-clean.pcapng", ids) > 0
    assert ids_in_the_clear(CAPTURES / "s-band-clean.pcapng", clear["received_ids"]) > 0
    assert ids_in_the_clear(CAPTURES / "s-band-sdls.pcapng", ids) == 0
    assert ids_in_the_clear(CAPTURES / "s-band-sdls.pcapng", protected["received_ids"]) == 0


# -- linkstack demo --keys -----------------------------------------------------------------


def test_demo_with_keys_matches_and_captures_ciphertext_only(
    embedded_model: ModelHandle, xdg_cache_home: object, keys: Path, tmp_path: Path
) -> None:
    capture = tmp_path / "demo.pcapng"
    argv = ["--json", "--keys", str(keys), "--capture", str(capture), "--max-new-tokens", "16"]
    code, out, err = run_demo(*argv, "--device", "cpu", "Hi there")
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert tuple(record["generated_ids"]) == reference(embedded_model, record)
    security = record["security"]
    assert security["enabled"] is True
    assert (security["mac_failures"], security["replays"], security["unknown_spi"]) == (0, 0, 0)
    # Each side keeps its own counter file next to the key file, private.
    for role in ("ground", "spacecraft"):
        counters = keys.parent / f"keys.json.{role}.counters"
        assert counters.stat().st_mode & 0o777 == 0o600
    with open(capture, "rb") as stream:
        recorded = read_capture(stream)
    assert {unit.kind for unit in recorded.units} == {UnitKind.CLTU, UnitKind.CADU}
    assert "prompt" not in recorded.metadata
    assert recorded.metadata["security"] == {
        "protected": True,
        "tc_spi": 1,
        "tm_spi": 2,
        "service_type": "SA_AUTHENTICATED_ENCRYPTION",
    }
    assert ids_in_the_clear(capture, record["prompt_ids"]) == 0
    assert ids_in_the_clear(capture, record["received_ids"]) == 0
    assert_no_key(keys, capture.read_bytes(), out, err)

    # The replay needs the keys, and with them gives the same ids, sending the same CLTUs.
    replay_out, replay_err = io.StringIO(), io.StringIO()
    assert groundstation_main(["replay", str(capture)], stdout=replay_out, stderr=replay_err) == 1
    assert "replay needs its key file" in replay_err.getvalue()
    replay_out, replay_err = io.StringIO(), io.StringIO()
    code = groundstation_main(
        ["replay", str(capture), "--json", "--keys", str(keys)],
        stdout=replay_out,
        stderr=replay_err,
    )
    assert code == 0, replay_err.getvalue()
    (replayed,) = [json.loads(line) for line in replay_out.getvalue().splitlines()]
    assert replayed["received_ids"] == record["received_ids"]
    assert replayed["replay"]["request_from"] == "cltu"
    assert_no_key(keys, replay_out.getvalue(), replay_err.getvalue())

    # With another key file the replay says the MACs fail, not that nothing was asked.
    other = tmp_path / "other.json"
    generate_key_file(other)
    replay_out, replay_err = io.StringIO(), io.StringIO()
    code = groundstation_main(
        ["replay", str(capture), "--keys", str(other)], stdout=replay_out, stderr=replay_err
    )
    assert code == 1
    assert replay_err.getvalue() == (
        f"groundstation: {capture}: 2 recorded uplink frames failed their MAC: the key file"
        f" {other} is not the one this session was protected with\n"
    )


def test_demo_without_keys_reports_security_off(xdg_cache_home: object) -> None:
    code, out, err = run_demo("--json", "--profile", "ideal", "--max-new-tokens", "4", "Hi")
    assert code == 0, err
    security = json.loads(out)["security"]
    assert security["enabled"] is False
    assert security["mac_failures"] == 0


# -- refused key files -----------------------------------------------------------------------


def _insecure(keys: Path) -> Path:
    os.chmod(keys, 0o640)
    return keys


@pytest.mark.parametrize("program", ["demo", "serve", "ask"])
@pytest.mark.parametrize("problem", ["group-readable", "missing"])
def test_an_unusable_key_file_is_refused(
    program: str, problem: str, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _insecure(keys) if problem == "group-readable" else keys.parent / "absent.json"
    if program == "demo":
        code, _, err = run_demo("--keys", str(path), "Hi")
    elif program == "serve":
        code = onboard_main(["serve", "--link", "udp://127.0.0.1:0", "--keys", str(path)])
        err = capsys.readouterr().err
    else:
        out = io.StringIO()
        errors = io.StringIO()
        argv = ["ask", "Hi", "--link", "udp://127.0.0.1:9", "--keys", str(path)]
        code = groundstation_main(argv, stdout=out, stderr=errors)
        err = errors.getvalue()
    assert code == 1
    assert str(path) in err
    assert ("mode 0640" if problem == "group-readable" else "cannot open key file") in err
    assert "Traceback" not in err
    if problem == "group-readable":
        assert_no_key(keys, err)


# -- onboard serve --keys and groundstation ask --keys over UDP ------------------------------


def serve_with_keys(keys: Path, xdg_cache_root: Path) -> Server:
    """``onboard serve --keys`` on a free UDP port of 127.0.0.1, started."""
    url = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    argv = ["serve", "--link", url, "--device", "cpu", "--keys", str(keys)]
    return Server(onboard(*argv, env=python_env(xdg_cache_root), stderr=subprocess.PIPE))


def test_serve_and_ask_with_keys_over_udp(
    embedded_model: ModelHandle, xdg_cache_root: Path, keys: Path, tmp_path: Path
) -> None:
    server = serve_with_keys(keys, xdg_cache_root)
    try:
        url = server.wait_url()
        capture = tmp_path / "ask.pcapng"
        out, err = io.StringIO(), io.StringIO()
        ask = ["ask", "hi", "--link", url, "--json", "--max-new-tokens", "12", "--timeout", "60"]
        code = groundstation_main(
            [*ask, "--keys", str(keys), "--capture", str(capture)], stdout=out, stderr=err
        )
        assert code == 0, err.getvalue()
        record: dict[str, Any] = json.loads(out.getvalue())
        assert record["received_ids"] == list(reference(embedded_model, record))
        assert record["security"]["enabled"] is True
        assert record["security"]["mac_failures"] == 0
        assert ids_in_the_clear(capture, record["prompt_ids"]) == 0
        assert ids_in_the_clear(capture, record["received_ids"]) == 0
        assert_no_key(keys, capture.read_bytes(), out.getvalue(), err.getvalue())
        assert (keys.parent / "keys.json.ground.counters").exists()

        # A wrong key file: its TM key is right (the CLCW gets down, so FOP-1 sends the
        # request) but its TC key is not: the spacecraft refuses every AD frame on its
        # MAC, and the ask times out cleanly.
        wrong = tmp_path / "wrong" / "keys.json"
        wrong.parent.mkdir()
        good = load_key_file(keys)
        ring = KeyRing(
            (key_id, KeyMaterial(os.urandom(32)) if key_id == 128 else material, state)
            for key_id in good.keys.ids()
            if (material := good.keys.material(key_id)) is not None
            if (state := good.keys.state(key_id)) is not None
        )
        write_key_file(wrong, ring, good.sas)
        ask[ask.index("--timeout") + 1] = "2"
        out, err = io.StringIO(), io.StringIO()
        code = groundstation_main([*ask, "--keys", str(wrong)], stdout=out, stderr=err)
        assert code == 1
        assert "no complete answer after 2 s" in err.getvalue()
        assert "Traceback" not in err.getvalue()
        wrong_record = json.loads(out.getvalue())
        assert wrong_record["received_ids"] == []
        assert_no_key(wrong, out.getvalue(), err.getvalue())
    finally:
        code = server.stop()
    log = server.text()
    assert code == 0, log
    assert "Traceback" not in log
    stop = re.search(r"SDLS on, (\d+) MAC failures", log)
    assert stop is not None, log
    assert int(stop.group(1)) > 0, log
    assert_no_key(keys, log)
    assert_no_key(wrong, log)
    assert (keys.parent / "keys.json.spacecraft.counters").exists()
