"""The protocol layers stay sans-I/O: no files, no prints, no input.

What they may import is checked by the import-linter contracts in pyproject.toml
(``lint-imports``: no asyncio, socket, threading, time, selectors or subprocess, and no
application), transitively.  What a contract cannot see is a call: this test walks
each protocol module's syntax tree for ``print``, ``open`` and ``input`` and for the
``os`` module, which only the modules that own files may use: the SDLS key and counter
files (``linkstack/sdls/keystore.py``), the tokenizer's ranks cache
(``linkstack/inference/tokenizer.py``) and the SigMF recordings
(``linkstack/radio/sigmf_files.py``).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The protocol packages and modules: the sans-I/O contract's source modules.
PROTOCOL = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"
][1]["source_modules"]
OWNS_FILES = {
    "linkstack/sdls/keystore.py",
    "linkstack/inference/tokenizer.py",
    "linkstack/radio/sigmf_files.py",
}
FORBIDDEN_MODULES = {"os", "shutil", "tempfile", "fcntl"}
FORBIDDEN_CALLS = {"print", "open", "input"}


def protocol_modules() -> list[Path]:
    paths: list[Path] = []
    for name in PROTOCOL:
        base = ROOT / name.replace(".", "/")
        paths += sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    return [p for p in paths if str(p.relative_to(ROOT)) not in OWNS_FILES]


def io_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{node.func.id}() at line {node.lineno}")
    return found


def test_the_contract_names_the_protocol_layers() -> None:
    assert "linkstack.endpoints" in PROTOCOL and "linkstack.sdls" in PROTOCOL
    assert len(protocol_modules()) >= 20


@pytest.mark.parametrize(
    "path", protocol_modules(), ids=lambda p: str(p.relative_to(ROOT / "linkstack"))
)
def test_protocol_module_is_sans_io(path: Path) -> None:
    assert io_uses(path) == []


def test_checker_catches_io(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom shutil import copy\nprint('x')\nopen('f')\n")
    assert io_uses(bad) == ["os", "shutil", "print() at line 3", "open() at line 4"]
