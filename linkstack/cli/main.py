"""``linkstack`` command: dispatches to one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``handler`` to a function ``(args, io) -> int``.  Exit codes and messages
follow :mod:`linkstack.console.base`: 0 success, 1 a run that failed (a message on stderr,
never a traceback), 2 bad options or, for decoders, input that was only partly
decodable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from linkstack.console.base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RunError,
    new_parser,
    run_command,
)
from linkstack.errors import LinkError

#: Decoders exit 2 when only part of the input decoded (the codec commands' contract).
EXIT_USAGE_OR_PARTIAL = EXIT_USAGE

#: A run that failed: ``linkstack: <message>``, exit 1 (the name the sub-commands use).
CliError = RunError


@dataclass(frozen=True, slots=True)
class Streams:
    """The process's streams, injected so that tests can run commands in memory."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: TextIO


def build_parser() -> argparse.ArgumentParser:
    from linkstack.cli import cadu, capture, cltu, demo, keys, radio, sdls

    parser = new_parser("linkstack", "CCSDS space-link stack for LLM inference in orbit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(commands)
    cadu.register(commands)
    cltu.register(commands)
    capture.register(commands)
    keys.register(commands)
    radio.register(commands)
    sdls.register(commands)
    from linkstack.cli import constellation

    constellation.register(commands)
    return parser


def main(argv: Sequence[str] | None = None, streams: Streams | None = None) -> int:
    io = streams or Streams(sys.stdin.buffer, sys.stdout.buffer, sys.stderr)
    parser = build_parser()
    return run_command(
        "linkstack",
        parser,
        None if argv is None else list(argv),
        lambda args: int(args.handler(args, io)),
        io.stderr,
        failures=(LinkError,),
    )


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE_OR_PARTIAL", "CliError", "Streams", "main"]

if __name__ == "__main__":
    sys.exit(main())
