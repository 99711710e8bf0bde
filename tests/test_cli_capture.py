"""``linkstack capture info`` run in memory through ``main``: text, JSON and bad files."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import pytest

from linkstack.capture import CaptureWriter
from linkstack.cli import capture as capture_cli
from linkstack.cli import main as main_module
from linkstack.cli.main import Streams, main
from tests.test_capture import BIT_ERRORS, T0, foreign_pcapng, libpcap_file, make_session


@pytest.fixture(autouse=True)
def capture_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``capture`` on the real parser if the dispatcher does not list it yet."""
    original = main_module.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = original()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and "capture" not in action.choices:
                capture_cli.register(action)
        return parser

    monkeypatch.setattr(main_module, "build_parser", build_parser)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(argv, Streams(io.BytesIO(), out, err))
    return code, out.getvalue().decode(), err.getvalue()


@pytest.fixture(scope="module")
def session_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "session.pcapng"
    path.write_bytes(make_session().data)
    return path


def test_info_text(session_file: Path) -> None:
    code, out, err = run(["capture", "info", str(session_file)])
    assert (code, err) == (0, "")
    assert f"capture {session_file}" in out
    assert "profile: ideal" in out
    assert "seed: 1234" in out
    assert "uplink: 2 units" in out and "cltu: 1" in out
    assert "downlink: 7 units" in out and "cadu: 4" in out
    assert "TC frames per VC: 0: 1" in out
    assert "packets per APID: 0x040: 1" in out
    assert "packets per APID: 0x041: 3" in out
    assert f"R-S corrected symbols: {len(BIT_ERRORS)}, uncorrectable codeblocks: 0" in out
    assert "drops: none" in out


def test_info_json(session_file: Path) -> None:
    code, out, err = run(["capture", "info", "--json", str(session_file)])
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["file"] == str(session_file)
    assert report["first_t"] == T0
    assert report["metadata"]["seed"] == 1234
    assert report["directions"]["uplink"]["units"] == {"cltu": 1, "packet": 1}
    assert report["directions"]["downlink"]["total_units"] == 7
    assert report["uplink_decoded"]["packets_per_apid"] == {"0x040": 1}
    assert report["downlink_decoded"]["packets_per_apid"] == {"0x041": 3}
    assert report["downlink_decoded"]["rs_corrected_symbols"] == len(BIT_ERRORS)
    assert report["downlink_decoded"]["rs_uncorrectable"] == 0
    assert report["drops"] == {}


def test_info_without_link_metadata_uses_the_defaults(tmp_path: Path) -> None:
    stream = io.BytesIO()
    CaptureWriter(stream, {"profile": "leo"})
    path = tmp_path / "empty-session.pcapng"
    path.write_bytes(stream.getvalue())
    code, out, err = run(["capture", "info", str(path)])
    assert (code, err) == (0, "")
    assert "not in the metadata, decoded with the defaults" in out
    assert "no units recorded" in out


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file: not a capture"),
        (libpcap_file(), "a libpcap (.pcap) file, not pcapng"),
        (random.Random(3).randbytes(512), "not a pcapng file"),
        (foreign_pcapng(), "no linkstack metadata in the section header"),
        (make_session().data[:100], "truncated file: no whole section header"),
    ],
    ids=["empty", "libpcap", "random", "foreign", "truncated"],
)
def test_bad_file_is_a_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.pcapng"
    path.write_bytes(data)
    code, out, err = run(["capture", "info", str(path)])
    assert code == 1
    assert out == ""
    assert err.startswith(f"linkstack: {path}: ")
    assert message in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_missing_file(tmp_path: Path) -> None:
    code, out, err = run(["capture", "info", str(tmp_path / "nope.pcapng")])
    assert (code, out) == (1, "")
    assert "cannot read" in err and "No such file" in err


def test_usage_error() -> None:
    code, _, _ = run(["capture"])
    assert code == 2
