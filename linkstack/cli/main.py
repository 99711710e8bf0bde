"""``linkstack`` command: dispatches to one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``handler`` to a function ``(args, io) -> int``.  Exit status: 0 success,
1 impossible input or a refused request (a message on stderr, never a
traceback), 2 bad options (argparse) or, for decoders, input that was only partly
decodable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from linkstack import __version__
from linkstack.errors import LinkError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE_OR_PARTIAL = 2


@dataclass(frozen=True, slots=True)
class Streams:
    """The process's streams, injected so that tests can run commands in memory."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: TextIO


class CliError(Exception):
    """A clear, user-facing failure: printed as ``linkstack: <message>``, exit 1."""


def build_parser() -> argparse.ArgumentParser:
    from linkstack.cli import cadu, capture, cltu, demo, keys

    parser = argparse.ArgumentParser(
        prog="linkstack", description="CCSDS space-link stack for LLM inference in orbit."
    )
    parser.add_argument("--version", action="version", version=f"linkstack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(commands)
    cadu.register(commands)
    cltu.register(commands)
    capture.register(commands)
    keys.register(commands)
    return parser


def main(argv: Sequence[str] | None = None, streams: Streams | None = None) -> int:
    io = streams or Streams(sys.stdin.buffer, sys.stdout.buffer, sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage message
        return int(exc.code or 0)
    try:
        return int(args.handler(args, io))
    except (CliError, LinkError) as exc:
        io.stderr.write(f"linkstack: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
