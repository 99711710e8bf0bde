"""What the three programs (``linkstack``, ``onboard``, ``groundstation``) share: exit
codes, error classes, the message prefix, ``--version``, plain-text help, option types
that speak the user's words, and logging on stderr.

The conventions, the same for every program:

====  =======================================================================
exit  meaning
====  =======================================================================
0     success
1     the run failed: a link, model, file or request that did not work out
2     usage: an option that does not parse or a value it cannot take (and, for
      the codec commands, input that was only partly decodable)
130   interrupted (SIGINT or SIGTERM)
====  =======================================================================

Every message the user sees starts with the program's name (``groundstation: ...``),
speaks of options as the user typed them (``--top-p 0``, not ``top_p_milli``) and is
one line.  Log records go to stderr, never into an answer streamed on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final, TextIO

from linkstack import __version__
from linkstack.errors import LocalProtocolError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 128 + 2  # the shell's status for SIGINT


class UsageError(Exception):
    """Options that parse but make no sense: printed as ``PROG: message``, exit 2."""


class RunError(Exception):
    """The run failed (link, model, file, request): printed as ``PROG: message``, exit 1."""


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """A :class:`LocalProtocolError` inside (an option value the standard forbids, such as
    a ``--link`` URL that does not parse) becomes a :class:`UsageError`, its message kept."""
    try:
        yield
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc


# -- plain-text help ----------------------------------------------------------------------

#: ``:class:`~a.b.C``` -> ``C``; ``:meth:`text <target>``` -> ``text``.
_ROLE: Final = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL: Final = re.compile(r"``([^`]*)``")


def plain(text: str) -> str:
    """``text`` with the reStructuredText markup of docstrings removed."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        return target.rsplit(".", 1)[-1] if match.group(0).count("~") else target

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


def first_paragraph(doc: str | None) -> str | None:
    """The first paragraph of a module docstring, as plain text."""
    if not doc:
        return None
    return plain(doc.strip().split("\n\n")[0])


class _PlainFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with docstring markup removed from descriptions and option texts."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose sub-command parsers (argparse makes them of the same
    class) all format their help as plain text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _PlainFormatter)
        super().__init__(*args, **kwargs)


def new_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A program's top-level parser: plain-text help everywhere and ``--version``."""
    parser = _Parser(prog=prog, description=description)
    parser.add_argument(
        "--version",
        action="version",
        version=f"{prog} (linkstack) {__version__}",
        help="print the version and exit",
    )
    return parser


def os_cause(exc: OSError) -> str:
    """The system's words for an OSError ("Address already in use"), without the
    wrapping asyncio adds ("error while attempting to bind on address ...")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


# -- option types in the user's words -------------------------------------------------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def probability(text: str) -> float:
    """A probability in 0..1."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in 0..1")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds, > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def positive_number(text: str) -> float:
    """A number > 0 (a rate, an interval)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


# -- logging on stderr -------------------------------------------------------------------------


class LiveLine:
    """The answer being streamed on stdout (text or binary), so that a log record on
    the same terminal starts on a line of its own instead of inside the answer."""

    def __init__(self, stream: TextIO | BinaryIO | None) -> None:
        self._stream = stream
        self.open = False  # text written since the last newline

    def write(self, text: str) -> None:
        if self._stream is None or not text:
            return
        if isinstance(self._stream, io.TextIOBase):
            self._stream.write(text)
        else:
            self._stream.write(text.encode())  # type: ignore[arg-type]
        self._stream.flush()
        self.open = not text.endswith("\n")

    def end(self) -> None:
        """End the live line (once some text was shown)."""
        if self.open:
            self.write("\n")
        self.open = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO, live: LiveLine | None) -> None:
        super().__init__(stream)
        self._live = live

    def emit(self, record: logging.LogRecord) -> None:
        # stdout stays the answer alone; on a shared terminal the record goes below it.
        if self._live is not None and self._live.open and _same_terminal(self.stream):
            self.stream.write("\n")
        super().emit(record)


def _same_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """``-v`` (link events) and ``-vv`` (every frame) on stderr."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log link events on stderr: COP-1 retransmissions, resend requests, sync"
        " changes (-vv: every frame)",
    )


_LEVELS: Final = (logging.WARNING, logging.INFO, logging.DEBUG)


@contextlib.contextmanager
def logging_to(
    stream: TextIO, prog: str, *, verbosity: int, live: LiveLine | None = None
) -> Iterator[None]:
    """Library log records on ``stream`` (stderr) for the duration of one command:
    warnings always, link events with ``verbosity`` 1, everything with 2."""
    handler = _StderrHandler(stream, live)
    handler.setFormatter(logging.Formatter(f"{prog}: %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(_LEVELS[min(max(verbosity, 0), len(_LEVELS) - 1)])
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def add_session_options(
    parser: argparse.ArgumentParser, *, capture_help: str, keys_help: str
) -> None:
    """``--capture FILE.pcapng [--force]`` and ``--keys PATH``: a session's recording and
    its SDLS keys, worded for the end that records and protects."""
    parser.add_argument(
        "--capture",
        metavar="FILE.pcapng",
        help=f"{capture_help} (with --keys: ciphertext only); an existing file is kept"
        " unless --force",
    )
    parser.add_argument(
        "--force", action="store_true", help="let --capture replace an existing file"
    )
    parser.add_argument(
        "--keys", metavar="PATH", help=f"SDLS key file (linkstack keys generate): {keys_help}"
    )


# -- running a command -------------------------------------------------------------------------


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    call: Callable[[argparse.Namespace], int],
    stderr: TextIO,
    *,
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv`` and run ``call(args)`` under the common exit codes and messages."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage or help or the version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(call(args))
    except UsageError as exc:
        stderr.write(f"{prog}: {exc}\n")
        return EXIT_USAGE
    except (RunError, *failures) as exc:  # type: ignore[misc]
        stderr.write(f"{prog}: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:
        stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED


def text_program(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    stdout: TextIO | None,
    stderr: TextIO | None,
    *,
    failures: tuple[type[BaseException], ...] = (),
    quiet_level: Callable[[argparse.Namespace], int] = lambda args: 0,
) -> int:
    """The ``main`` of a program on text streams (``onboard``, ``groundstation``): each
    command's handler is called as ``handler(args, stdout, stderr, live)`` with library
    logging on stderr at ``-v`` plus ``quiet_level(args)`` (a server logs more by
    default), and argparse's own output on the given streams."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    live = LiveLine(out)

    def call(args: argparse.Namespace) -> int:
        verbosity = args.verbose + quiet_level(args)
        with logging_to(err, prog, verbosity=verbosity, live=live):
            return int(args.handler(args, out, err, live))

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        return run_command(prog, parser, argv, call, err, failures=failures)


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LiveLine",
    "RunError",
    "UsageError",
    "add_session_options",
    "add_verbose_option",
    "first_paragraph",
    "logging_to",
    "new_parser",
    "os_cause",
    "plain",
    "positive_int",
    "positive_number",
    "positive_seconds",
    "probability",
    "run_command",
    "text_program",
    "usage_errors",
]
