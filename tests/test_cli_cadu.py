"""``linkstack cadu encode|decode`` run in memory through ``main`` and once as real processes."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from linkstack.cli.main import Streams, main
from linkstack.coding.tm import Basis, TmCodingConfig, encode_cadus

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], stdin: bytes) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(argv, Streams(io.BytesIO(stdin), out, err))
    return code, out.getvalue(), err.getvalue()


def reports(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


def frames(count: int, length: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(count * length)


@pytest.mark.parametrize(
    ("options", "config"),
    [
        (["--interleave", "1"], TmCodingConfig(interleave=1)),
        (["--interleave", "5"], TmCodingConfig(interleave=5)),
        (
            ["--interleave", "2", "--frame-length", "300", "--basis", "conventional"],
            TmCodingConfig(interleave=2, frame_length=300, basis=Basis.CONVENTIONAL),
        ),
        (
            ["--interleave", "4", "--error-correction", "8", "--no-randomize"],
            TmCodingConfig(interleave=4, error_correction=8, randomize=False),
        ),
    ],
)
def test_encode_decode_round_trip(options: list[str], config: TmCodingConfig) -> None:
    data = frames(7, config.frame_octets)
    code, cadus, err = run(["cadu", "encode", *options], data)
    assert (code, err) == (0, "")
    assert cadus == encode_cadus(data, config)

    code, decoded, err = run(["cadu", "decode", *options], b"\x00junk" + cadus + b"tail")
    assert code == 0
    assert decoded == data
    lines = reports(err)
    assert [r["offset"] for r in lines] == [5 + i * config.cadu_length for i in range(7)]
    assert all(
        r["status"] == "decoded" and r["corrected"] == [0] * config.interleave for r in lines
    )


def test_decode_reports_corrections_and_uncorrectable_block_exit_2() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(3, 223, seed=1)
    stream = bytearray(encode_cadus(data, config))
    for i in range(5):  # 5 errors in the first CADU
        stream[4 + 10 * i] ^= 0xFF
    second = config.cadu_length + 4
    stream[second : second + 17] = bytes(b ^ 0x3C for b in stream[second : second + 17])
    code, decoded, err = run(["cadu", "decode", "--interleave", "1"], bytes(stream))
    assert code == 2
    assert decoded == data[:223] + data[446:]  # no frame for the uncorrectable block
    lines = reports(err)
    assert [r["status"] for r in lines] == ["decoded", "uncorrectable", "decoded"]
    assert lines[0]["corrected"] == [5]
    assert lines[1]["offset"] == config.cadu_length and lines[1]["corrected"] == [-1]


def test_encode_partial_frame_encodes_whole_ones_then_fails() -> None:
    data = frames(2, 223) + b"abc"
    code, cadus, err = run(["cadu", "encode", "--interleave", "1"], data)
    assert code == 1
    assert cadus == encode_cadus(data[:446], TmCodingConfig(interleave=1))
    assert "3 octets" in err and "2 whole frame(s)" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["cadu", "encode", "--interleave", "6"], "I=6"),
        (["cadu", "decode", "--interleave", "5", "--frame-length", "1200"], "N=1200"),
        (["cadu", "encode", "--interleave", "5", "--frame-length", "1111"], "not a multiple"),
        (["cadu", "encode", "--interleave", "1", "--error-correction", "4"], "E=4"),
        (
            ["cadu", "decode", "--interleave", "1", "--asm-search-errors", "9"],
            "asm_search_errors=9",
        ),
    ],
)
def test_bad_option_values_exit_2_with_a_message(argv: list[str], words: str) -> None:
    code, out, err = run(argv, b"")
    assert code == 2 and out == b""
    assert err.startswith("linkstack: ") and words in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["cadu", "encode"],  # --interleave is required
        ["cadu", "encode", "--interleave", "x"],
        ["cadu", "decode", "--interleave", "1", "--basis", "octal"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(argv, b"")
    assert code == 2 and out == b""
    assert "usage:" in capsys.readouterr().err  # argparse writes to the process stderr


def test_decode_of_garbage_only_is_an_error() -> None:
    code, out, err = run(["cadu", "decode", "--interleave", "1"], bytes(range(256)) * 8)
    assert (code, out) == (1, b"")
    assert "no CADU found in 2048 octets" in err


def test_decode_streams_in_chunks() -> None:
    # More than one 64 KiB read: frames are written as they decode.
    config = TmCodingConfig(interleave=5)
    data = frames(120, config.frame_octets, seed=5)
    stream = encode_cadus(data, config)
    assert len(stream) > 2 * 64 * 1024

    class Reader(io.BytesIO):
        reads = 0

        def read1(self, size: int | None = -1) -> bytes:
            Reader.reads += 1
            return super().read1(size)

    out, err = io.BytesIO(), io.StringIO()
    code = main(["cadu", "decode", "--interleave", "5"], Streams(Reader(stream), out, err))
    assert code == 0 and out.getvalue() == data
    assert Reader.reads >= 3


def test_real_pipe_encode_then_decode() -> None:
    command = [sys.executable, "-m", "linkstack.cli.main", "cadu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data = frames(9, 446, seed=9)
    encode = subprocess.Popen(
        [*command, "encode", "--interleave", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    decode = subprocess.Popen(
        [*command, "decode", "--interleave", "2"],
        stdin=encode.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert encode.stdout is not None and encode.stdin is not None
    encode.stdout.close()  # the decoder holds the read end now
    encode.stdin.write(data)
    encode.stdin.close()
    decoded, decode_err = decode.communicate(timeout=60)
    encode_err = encode.stderr.read() if encode.stderr else b""
    if encode.stderr:
        encode.stderr.close()
    assert encode.wait(timeout=60) == 0, encode_err
    assert decode.returncode == 0, decode_err
    assert decoded == data
    assert len(decode_err.decode().splitlines()) == 9
