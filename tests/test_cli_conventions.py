"""One set of user-facing conventions for the three programs (linkstack.console.base):
``--version`` everywhere, plain-text help for every argument, messages in the user's
words, the same exit code for the same kind of mistake.  Nothing here loads a model."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Iterator

import pytest

from groundstation.cli import build_parser as groundstation_parser
from groundstation.cli import main as groundstation_main
from linkstack import __version__
from linkstack.cli.main import Streams
from linkstack.cli.main import build_parser as linkstack_parser
from linkstack.cli.main import main as linkstack_main
from linkstack.console.base import EXIT_USAGE, plain
from onboard.cli import build_parser as onboard_parser
from onboard.cli import main as onboard_main

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "linkstack": linkstack_parser,
    "onboard": onboard_parser,
    "groundstation": groundstation_parser,
}


def run(program: str, argv: list[str]) -> tuple[int, str, str]:
    """Run a program in memory; (exit code, stdout, stderr)."""
    if program == "linkstack":
        out, err = io.BytesIO(), io.StringIO()
        code = linkstack_main(argv, Streams(io.BytesIO(), out, err))
        return code, out.getvalue().decode(), err.getvalue()
    main = onboard_main if program == "onboard" else groundstation_main
    out_text, err_text = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out_text, stderr=err_text)
    return code, out_text.getvalue(), err_text.getvalue()


def _all_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


ALL = [
    (path, parser)
    for program, build in PARSERS.items()
    for path, parser in _all_parsers(build(), (program,))
]


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_version_everywhere(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(program, ["--version"])
    printed = out + capsys.readouterr().out
    assert code == 0
    assert printed.strip() == f"{program} (linkstack) {__version__}"


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_argument_has_plain_help(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{' '.join(path)}: {action.option_strings or action.dest} has no help"
    text = parser.format_help()
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:", ":data:"):
        assert markup not in text, f"{' '.join(path)} help shows {markup!r}"


def test_plain_removes_docstring_markup() -> None:
    assert plain("a ``b`` :class:`~linkstack.aio.LoopbackLink` c") == "a b LoopbackLink c"
    assert plain(":func:`linkstack.x.f`") == "linkstack.x.f"
    assert plain(":meth:`the reader <read>`") == "the reader"


# The same mistake, in every program that takes the option: exit 2, one line that
# names the option as typed and no internal name.
GENERATION_COMMANDS = [
    ("linkstack", ["demo", "hi"]),
    ("onboard", ["generate", "hi"]),
    ("groundstation", ["ask", "hi", "--link", "udp://127.0.0.1:9"]),
]
MISTAKES = [
    (["--top-p", "0"], "--top-p 0 must be in 0.001..1"),
    (["--top-p", "1.5"], "--top-p 1.5 must be in 0.001..1"),
    (["--temperature", "0.0001"], "--temperature 0.0001 is not a multiple of 0.001"),
    (["--temperature", "-1"], "--temperature -1 must be in 0..65.535"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0 must be in 1..16384"),
    (["--seed", "-1"], "--seed -1 must be in 0.."),
]
INTERNAL = ("top_p_milli", "temperature_milli", "max_new_tokens ", "_probability", "Traceback")


@pytest.mark.parametrize(("program", "command"), GENERATION_COMMANDS)
@pytest.mark.parametrize(("extra", "message"), MISTAKES)
def test_same_mistake_same_answer(
    program: str, command: list[str], extra: list[str], message: str
) -> None:
    code, out, err = run(program, [*command, *extra])
    assert code == EXIT_USAGE, err
    assert out == ""
    assert err.startswith(f"{program}: ") and message in err
    assert err.count("\n") == 1
    assert not any(name in err for name in INTERNAL)


@pytest.mark.parametrize(
    ("program", "argv", "message"),
    [
        ("linkstack", ["demo", "--ber", "abc"], "argument --ber: 'abc' is not a number"),
        ("linkstack", ["demo", "--drop", "2"], "argument --drop: 2 is not a probability in 0..1"),
        ("linkstack", ["demo", "--timeout", "0"], "argument --timeout: 0 is not a positive"),
        (
            "groundstation",
            ["ask", "hi", "--link", "udp://127.0.0.1:9", "--timeout", "-3"],
            "argument --timeout: -3 is not a positive",
        ),
        ("groundstation", ["ask", "hi", "--link", "ftp://x:1"], "scheme must be tcp:// or udp://"),
        ("onboard", ["serve", "--link", "udp://h"], "expected udp://HOST:PORT"),
        (
            "onboard",
            ["serve", "--link", "udp://127.0.0.1:0", "--max-queue", "0"],
            "argument --max-queue/--queue: 0 must be 1 or more",
        ),
        (
            "onboard",
            ["serve", "--link", "udp://127.0.0.1:0", "--downlink-rate", "-5"],
            "argument --downlink-rate: -5 is not a positive number",
        ),
        ("linkstack", ["cadu", "encode", "--interleave", "6"], "I=6"),
    ],
)
def test_usage_errors_exit_2_in_the_users_words(
    program: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(program, argv)
    err += capsys.readouterr().err  # argparse writes to the process's stderr
    assert code == EXIT_USAGE
    assert out == ""
    assert message in err
    assert not any(name in err for name in INTERNAL)


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_no_command_is_a_usage_error(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(program, [])
    assert code == EXIT_USAGE
    assert "usage:" in err + capsys.readouterr().err
