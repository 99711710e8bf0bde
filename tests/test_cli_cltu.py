"""``linkstack cltu encode|decode`` run in memory through ``main`` and once as real processes."""

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
from linkstack.coding.tc import encode_cltu

ROOT = Path(__file__).resolve().parent.parent


def tc_frame(length: int, *, scid: int = 0x2A, vcid: int = 1, seq: int = 0) -> bytes:
    """A TC Transfer Frame whose Frame Length field (232.0-B-4 4.1.2.7) says ``length``."""
    if not 6 <= length <= 1024:
        raise ValueError(length)
    header = bytes(
        [
            (scid >> 8) & 0x03,
            scid & 0xFF,
            (vcid << 2) | ((length - 1) >> 8),
            (length - 1) & 0xFF,
            seq,
        ]
    )
    body = random.Random(length * 7 + seq).randbytes(length - 5)
    return header + body


FRAMES = [tc_frame(n, seq=i) for i, n in enumerate([6, 12, 64, 100, 1024, 7 * 20])]


def run(argv: list[str], stdin: bytes) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(argv, Streams(io.BytesIO(stdin), out, err))
    return code, out.getvalue(), err.getvalue()


def reports(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.mark.parametrize("randomize", [False, True])
def test_encode_decode_round_trip(randomize: bool) -> None:
    flag = ["--randomize"] if randomize else []
    code, cltus, err = run(["cltu", "encode", *flag], b"".join(FRAMES))
    assert (code, err) == (0, "")
    assert cltus == b"".join(encode_cltu(f, randomize=randomize) for f in FRAMES)

    code, frames, err = run(["cltu", "decode", *flag], cltus)
    assert code == 0
    assert frames == b"".join(FRAMES)
    assert reports(err) == [
        {
            "cltu": i,
            "codeblocks": -(-len(f) // 7),
            "corrected_bits": 0,
            "ended_by_tail": True,
            "frame_octets": len(f),
            "status": "ok",
            "fill_octets": -len(f) % 7,
        }
        for i, f in enumerate(FRAMES)
    ]


def test_encode_truncated_last_frame_writes_the_whole_ones_and_fails() -> None:
    stream = FRAMES[0] + FRAMES[1] + FRAMES[2][:30]
    code, cltus, err = run(["cltu", "encode"], stream)
    assert code == 1
    assert "truncated TC frame at stream offset 18" in err
    assert "64 octets" in err
    assert cltus == encode_cltu(FRAMES[0], randomize=False) + encode_cltu(
        FRAMES[1], randomize=False
    )
    code, _, err = run(["cltu", "encode"], FRAMES[0] + b"\x00\x01")
    assert code == 1
    assert "5-octet primary header" in err


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def test_decode_reports_corrections_and_rejections() -> None:
    cltus = [encode_cltu(f, randomize=False) for f in FRAMES[:3]]
    one_error = flip(cltus[0], 16 + 5)  # codeblock 0 of CLTU 0
    two_errors = flip(flip(cltus[2], 16 + 64 * 3 + 1), 16 + 64 * 3 + 9)  # codeblock 3
    stream = b"\x00garbage" + one_error + cltus[1] + two_errors + b"\x55" * 20

    code, frames, err = run(["cltu", "decode"], stream)
    assert code == 2
    assert frames == FRAMES[0] + FRAMES[1]
    lines = reports(err)
    assert [line["status"] for line in lines] == ["ok", "ok", "rejected"]
    assert lines[0]["corrected_bits"] == 1
    assert lines[2] == {
        "cltu": 2,
        "codeblocks": 3,
        "corrected_bits": 0,
        "ended_by_tail": False,
        "frame_octets": 64,
        "status": "rejected",
        "reason": "frame-truncated",
        "detail": "frame length field says 64 octets, CLTU carried 21",
    }

    # Detection only: the single error now rejects the first codeblock of CLTU 0.
    code, frames, err = run(["cltu", "decode", "--mode", "detect"], stream)
    assert code == 2
    assert frames == FRAMES[1]
    first = reports(err)[0]
    assert (first["status"], first["reason"]) == ("rejected", "first-codeblock-rejected")


def test_decode_streams_stdin_in_chunks() -> None:
    class Trickle(io.BytesIO):
        def read1(self, size: int | None = -1) -> bytes:
            return super().read1(3)

    stream = b"".join(encode_cltu(f, randomize=True) for f in FRAMES)
    out, err = io.BytesIO(), io.StringIO()
    code = main(["cltu", "decode", "--randomize"], Streams(Trickle(stream), out, err))
    assert code == 0
    assert out.getvalue() == b"".join(FRAMES)


def test_decode_cltu_cut_short_at_end_of_input() -> None:
    cltu = encode_cltu(FRAMES[3], randomize=False)
    code, frames, err = run(["cltu", "decode"], cltu[:40])
    assert (code, frames) == (2, b"")
    (line,) = reports(err)
    assert (line["reason"], line["ended_by_tail"], line["codeblocks"]) == (
        "frame-truncated",
        False,
        4,
    )


def test_start_sequence_tolerance_option() -> None:
    cltu = flip(encode_cltu(FRAMES[1], randomize=False), 3)
    assert run(["cltu", "decode"], cltu)[:2] == (0, b"")
    assert run(["cltu", "decode", "--start-sequence-errors", "1"], cltu)[:2] == (0, FRAMES[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["cltu"],
        ["cltu", "frobnicate"],
        ["cltu", "decode", "--mode", "fix"],
        ["cltu", "decode", "--start-sequence-errors", "2"],
        ["cltu", "encode", "--bogus"],
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, b"")
    assert (code, out) == (2, b"")
    message = capsys.readouterr().err  # argparse writes to the process's stderr
    assert "usage:" in message
    assert "error:" in message
    assert "Traceback" not in message + err


def test_real_pipe() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "linkstack.cli.main", "cltu"]
    encode = subprocess.Popen(
        [*command, "encode", "--randomize"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    decode = subprocess.Popen(
        [*command, "decode", "--randomize", "--mode", "detect"],
        stdin=encode.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert encode.stdout is not None and encode.stdin is not None
    encode.stdout.close()  # the decoder holds the read end now
    encode.stdin.write(b"".join(FRAMES))
    encode.stdin.close()
    frames, decode_err = decode.communicate(timeout=60)
    encode_err = encode.stderr.read() if encode.stderr else b""
    assert encode.wait(timeout=60) == 0, encode_err
    assert decode.returncode == 0, decode_err
    assert frames == b"".join(FRAMES)
    assert len(decode_err.decode().splitlines()) == len(FRAMES)
