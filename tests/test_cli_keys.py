"""``linkstack keys generate PATH`` through ``main`` in memory."""

from __future__ import annotations

import argparse
import io
import json
import stat
from pathlib import Path

import linkstack.cli.main as main_module
from linkstack.cli import keys as keys_cli
from linkstack.cli.main import Streams
from linkstack.sdls.keystore import load_key_file


def _parser_with_keys() -> argparse.ArgumentParser:
    parser = ORIGINAL_BUILD_PARSER()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "keys" not in commands.choices:  # until the lead registers it in main.py
        keys_cli.register(commands)
    return parser


ORIGINAL_BUILD_PARSER = main_module.build_parser


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    main_module.build_parser = _parser_with_keys
    try:
        code = main_module.main(argv, Streams(io.BytesIO(), out, err))
    finally:
        main_module.build_parser = ORIGINAL_BUILD_PARSER
    return code, out.getvalue().decode(), err.getvalue()


def secrets(path: Path) -> list[str]:
    return [entry["key"] for entry in json.loads(path.read_text())["keys"]]


def test_generate_writes_private_file_and_prints_no_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    code, out, err = run(["keys", "generate", str(path)])
    assert code == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "wrote" in out and "0600" in out and "key 128" in out and "TC SPI 1" in out
    for secret in secrets(path):
        assert secret not in out and secret not in err
    assert len(load_key_file(path).sas) == 2


def test_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    assert run(["keys", "generate", str(path)])[0] == 0
    before = secrets(path)
    code, _out, err = run(["keys", "generate", str(path)])
    assert code == 1
    assert "exists" in err and "--force" in err and str(path) in err
    assert secrets(path) == before
    code, _out, err = run(["keys", "generate", "--force", str(path)])
    assert code == 0, err
    assert secrets(path) != before


def test_directory_and_missing_parent(tmp_path: Path) -> None:
    code, _, err = run(["keys", "generate", str(tmp_path)])
    assert code == 1 and "directory" in err
    code, _, err = run(["keys", "generate", str(tmp_path / "no" / "k.json")])
    assert code == 1 and "cannot write" in err
    assert run(["keys"])[0] == 2
