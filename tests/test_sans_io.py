"""The protocol layers stay sans-I/O: no sockets, clocks, sleeps, threads, files or prints.

Only the asyncio adapter (``linkstack/aio.py``), the command-line entry points
(``linkstack/cli/``) and the tokenizer's ranks-file loader may touch the outside world.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "linkstack"
ALLOWED = {"aio.py", "tokenizer.py", "keystore.py"}
FORBIDDEN_MODULES = {"socket", "time", "asyncio", "threading", "subprocess", "selectors", "os"}
FORBIDDEN_CALLS = {"print", "open", "input"}


def protocol_modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.name not in ALLOWED and "cli" not in path.relative_to(PACKAGE).parts
    )


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


def test_there_are_protocol_modules_to_check() -> None:
    assert len(protocol_modules()) >= 2


@pytest.mark.parametrize("path", protocol_modules(), ids=lambda p: p.name)
def test_protocol_module_is_sans_io(path: Path) -> None:
    assert io_uses(path) == []


def test_checker_catches_io(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom socket import socket\nprint('x')\n")
    assert io_uses(bad) == ["time", "socket", "print() at line 3"]
