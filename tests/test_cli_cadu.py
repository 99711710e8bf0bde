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

import numpy as np
import numpy.typing as npt
import pytest

from linkstack.cli.main import Streams, main
from linkstack.coding.convolutional import CodeRate
from linkstack.coding.soft import add_awgn, cadus_to_bits, ideal_soft, qpsk_map
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


# --------------------------------------------------------------------------- --conv
# The convolutional code and channel symbols (linkstack.coding.soft behind the command).
# Expected streams are built here from the library's own transmit side (cadus_to_bits,
# ideal_soft, qpsk_map), not from the command, so that the formats are pinned.

FORMATS = ["bytes", "bits", "soft-f32", "soft-i8", "iq-symbols-c64"]
UPRIGHT = {"symbol_offset": 0, "quarter_turn": False, "inverted": False, "nrzm": False}


def coded_bits(
    data: bytes, config: TmCodingConfig, *, rate: CodeRate = "1/2", nrzm: bool = False
) -> npt.NDArray[np.uint8]:
    return cadus_to_bits(encode_cadus(data, config), rate=rate, nrzm=nrzm)


def as_format(bits: npt.NDArray[np.uint8], fmt: str) -> bytes:
    """Coded bits in one of the --output formats, written independently of the command."""
    if fmt == "bytes":
        return np.packbits(bits).tobytes()  # pads the last octet with 0 bits
    if fmt == "bits":
        return bits.astype(np.uint8).tobytes()
    if fmt == "soft-f32":
        return ideal_soft(bits).astype("<f4").tobytes()
    if fmt == "soft-i8":
        return (ideal_soft(bits) * 127).astype(np.int8).tobytes()
    padded = np.concatenate((bits, np.zeros(bits.size % 2, np.uint8)))
    return qpsk_map(padded).astype("<c8").tobytes()


def conv(*options: str, interleave: int = 1) -> list[str]:
    return ["--interleave", str(interleave), "--conv", *options]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """The JSON lines of stderr (a final error message is not one)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def cadu_lines(stderr: str) -> list[dict[str, Any]]:
    return [r for r in json_lines(stderr) if "status" in r]


def event_lines(stderr: str) -> list[dict[str, Any]]:
    return [r for r in json_lines(stderr) if "event" in r]


def one_line_error(err: str) -> str:
    """The last line of stderr: the command's own message, one line, no traceback."""
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("linkstack: ")
    return last


@pytest.mark.parametrize("interleave", [1, 5])
@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_round_trip_every_format(fmt: str, interleave: int) -> None:
    config = TmCodingConfig(interleave=interleave)
    data = frames(4, config.frame_octets, seed=interleave)
    code, symbols, err = run(
        ["cadu", "encode", *conv("--output", fmt, interleave=interleave)], data
    )
    assert (code, err) == (0, "")
    assert symbols == as_format(coded_bits(data, config), fmt)

    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", fmt, interleave=interleave)], symbols
    )
    assert code == 0, err
    assert decoded == data
    assert event_lines(err) == [{"event": "locked", "at_symbol": 0, "hypothesis": UPRIGHT}]
    lines = cadu_lines(err)
    cadu_symbols = 16 * config.cadu_length  # rate 1/2: two coded symbols per bit
    assert [r["offset"] for r in lines] == [i * cadu_symbols for i in range(4)]
    for r in lines:
        assert r["status"] == "decoded" and r["corrected"] == [0] * interleave
        assert r["asm_errors"] == 0 and r["hypothesis"] == UPRIGHT


@pytest.mark.parametrize("rate", ["2/3", "3/4", "5/6", "7/8"])
def test_conv_punctured_round_trip(rate: CodeRate) -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(4, 223, seed=3)
    code, symbols, err = run(
        ["cadu", "encode", *conv("--puncture", rate, "--output", "soft-i8")], data
    )
    assert (code, err) == (0, "")
    assert symbols == as_format(coded_bits(data, config, rate=rate), "soft-i8")
    code, decoded, err = run(
        ["cadu", "decode", *conv("--puncture", rate, "--input", "soft-i8")], symbols
    )
    assert (code, decoded) == (0, data), err
    assert len(cadu_lines(err)) == 4


def test_conv_punctured_packed_bytes_pad_the_last_octet() -> None:
    # Rate 3/4: 4 CADUs of 2072 bits give 11 051 coded bits (and 1/3 left in the period).
    config = TmCodingConfig(interleave=1)
    data = frames(4, 223, seed=4)
    bits = coded_bits(data, config, rate="3/4")
    assert bits.size % 8
    code, packed, _ = run(["cadu", "encode", *conv("--puncture", "3/4")], data)
    assert code == 0 and packed == np.packbits(bits).tobytes()
    code, decoded, err = run(["cadu", "decode", *conv("--puncture", "3/4")], packed)
    assert (code, decoded) == (0, data), err


@pytest.mark.parametrize("mode", [["--nrzm"], ["--nrzm", "auto"]])
@pytest.mark.parametrize("negate", [False, True], ids=["upright", "inverted"])
def test_conv_nrzm(mode: list[str], negate: bool) -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(4, 223, seed=6)
    code, symbols, _ = run(["cadu", "encode", *conv("--nrzm", "--output", "soft-f32")], data)
    assert code == 0
    assert symbols == as_format(coded_bits(data, config, nrzm=True), "soft-f32")
    soft = np.frombuffer(symbols, "<f4")
    stream = (-soft if negate else soft).astype("<f4").tobytes()
    code, decoded, err = run(["cadu", "decode", *conv(*mode, "--input", "soft-f32")], stream)
    assert (code, decoded) == (0, data), err
    # NRZ-M hides the 180-degree ambiguity: inverted is null either way.
    expected = {"symbol_offset": 0, "quarter_turn": False, "inverted": None, "nrzm": True}
    assert all(r["hypothesis"] == expected for r in reports(err))


@pytest.mark.parametrize(("negate", "shift"), [(True, 0), (False, 1), (True, 1)])
def test_conv_inverted_and_offset_symbols_name_the_hypothesis(negate: bool, shift: int) -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(4, 223, seed=7)
    soft = ideal_soft(coded_bits(data, config))
    soft = np.concatenate((np.full(shift, 0.25, np.float32), -soft if negate else soft))
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", "soft-f32")], soft.astype("<f4").tobytes()
    )
    assert (code, decoded) == (0, data), err
    hypothesis = {"symbol_offset": shift, "quarter_turn": False, "inverted": negate, "nrzm": False}
    assert event_lines(err) == [{"event": "locked", "at_symbol": shift, "hypothesis": hypothesis}]
    lines = cadu_lines(err)
    assert [r["offset"] for r in lines] == [shift + i * 16 * 259 for i in range(4)]
    assert all(r["hypothesis"] == hypothesis for r in lines)


@pytest.mark.parametrize(
    ("turn", "quarter_turn", "inverted"),
    [(1, False, False), (1j, True, False), (-1, False, True), (-1j, True, True)],
    ids=["0", "90", "180", "270"],
)
def test_conv_qpsk_c64_from_qpsk_map_at_every_phase(
    turn: complex, quarter_turn: bool, inverted: bool
) -> None:
    config = TmCodingConfig(interleave=5)
    data = frames(3, config.frame_octets, seed=8)
    iq = (qpsk_map(coded_bits(data, config)) * turn).astype("<c8")
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", "iq-symbols-c64", interleave=5)], iq.tobytes()
    )
    assert (code, decoded) == (0, data), err
    hypothesis = {
        "symbol_offset": 0,
        "quarter_turn": quarter_turn,
        "inverted": inverted,
        "nrzm": False,
    }
    assert all(r["hypothesis"] == hypothesis for r in reports(err))


def test_conv_awgn_at_4_db_decodes_every_frame() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(30, 223, seed=10)
    noisy = add_awgn(
        ideal_soft(coded_bits(data, config)),
        ebn0_db=4.0,
        rate="1/2",
        rng=np.random.default_rng(2024),
    )
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", "soft-f32")], noisy.astype("<f4").tobytes()
    )
    assert (code, decoded) == (0, data), err
    lines = cadu_lines(err)
    assert len(lines) == 30 and all(r["status"] == "decoded" for r in lines)


def test_conv_nan_inf_and_huge_values_are_handled_by_the_decoder() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(6, 223, seed=11)
    soft = ideal_soft(coded_bits(data, config))
    soft[5::41] = np.nan  # erasures
    soft[7::53] *= np.inf  # right sign, infinite
    soft[11::61] *= np.float32(3e38)  # right sign, near float32's largest
    soft[[1000, 9000, 20000]] = [np.inf, -np.inf, -3e38]  # a few wrong, and huge
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", "soft-f32")], soft.astype("<f4").tobytes()
    )
    assert (code, decoded) == (0, data), err


def test_conv_odd_symbol_count_is_fine() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(3, 223, seed=12)
    symbols = as_format(coded_bits(data, config), "soft-i8") + b"\x05"
    assert len(symbols) % 2
    code, decoded, err = run(["cadu", "decode", *conv("--input", "soft-i8")], symbols)
    assert (code, decoded) == (0, data), err


@pytest.mark.parametrize(("fmt", "extra", "whole"), [("soft-f32", 3, 4), ("iq-symbols-c64", 5, 8)])
def test_conv_stream_ending_mid_symbol_decodes_the_whole_ones_then_fails(
    fmt: str, extra: int, whole: int
) -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(3, 223, seed=13)
    symbols = as_format(coded_bits(data, config), fmt)
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", fmt)], symbols + b"\x01\x02\x03\x04\x05"[:extra]
    )
    assert (code, decoded) == (1, data)
    assert len(cadu_lines(err)) == 3
    message = one_line_error(err)
    assert f"{extra} octets" in message and f"{whole}-octet" in message
    assert f"offset {len(symbols)}" in message


def test_conv_bits_input_refuses_an_octet_that_is_not_a_bit() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(4, 223, seed=14)
    bits = bytearray(as_format(coded_bits(data, config), "bits"))
    bad = 2 * 16 * 259 + 1000  # inside the third CADU
    bits[bad] = 0x41
    code, decoded, err = run(["cadu", "decode", *conv("--input", "bits")], bytes(bits))
    assert code == 1
    assert decoded == data[: 2 * 223]  # the two CADUs before it
    assert [r["status"] for r in cadu_lines(err)] == ["decoded", "decoded", "truncated"]
    message = one_line_error(err)
    assert f"octet 0x41 at stream offset {bad}" in message


def test_conv_empty_input_is_no_error() -> None:
    # As without --conv: nothing in, nothing out, exit 0.
    assert run(["cadu", "decode", "--interleave", "1"], b"") == (0, b"", "")
    for fmt in FORMATS:
        assert run(["cadu", "decode", *conv("--input", fmt)], b"") == (0, b"", "")
    assert run(["cadu", "encode", *conv("--output", "soft-f32")], b"") == (0, b"", "")


@pytest.mark.parametrize("fmt", ["soft-f32", "bytes"])
def test_conv_pure_noise_is_no_cadu_found(fmt: str) -> None:
    rng = np.random.default_rng(15)
    if fmt == "soft-f32":
        noise = rng.standard_normal(100_000).astype("<f4").tobytes()
        symbols = 100_000
    else:
        noise = rng.integers(0, 256, 12_500, np.uint8).tobytes()
        symbols = 100_000
    code, out, err = run(["cadu", "decode", *conv("--input", fmt)], noise)
    assert (code, out) == (1, b"")
    assert err.count("\n") == 1
    assert f"no CADU found in {symbols} coded symbols" in one_line_error(err)


def test_conv_stream_cut_mid_cadu_reports_it_truncated() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(3, 223, seed=16)
    soft = ideal_soft(coded_bits(data, config))
    cut = soft[: 2 * 16 * 259 + 16 * 100]  # 100 octets into the third CADU
    code, decoded, err = run(
        ["cadu", "decode", *conv("--input", "soft-f32")], cut.astype("<f4").tobytes()
    )
    assert code == 2
    assert decoded == data[: 2 * 223]
    lines = cadu_lines(err)
    assert [r["status"] for r in lines] == ["decoded", "decoded", "truncated"]
    assert lines[2]["offset"] == 2 * 16 * 259 and lines[2]["hypothesis"] == UPRIGHT


def _asm_with_errors(data: bytes, config: TmCodingConfig, cadu: int, errors: int) -> bytes:
    """The CADU stream with ``errors`` bits of one CADU's ASM flipped."""
    stream = bytearray(encode_cadus(data, config))
    start = cadu * config.cadu_length
    for bit in range(errors):
        stream[start + bit] ^= 0x80 >> bit
    return bytes(stream)


def test_conv_asm_thresholds_and_flywheel_reach_the_synchronizer() -> None:
    config = TmCodingConfig(interleave=1)
    data = frames(6, 223, seed=17)

    def decode(cadus: bytes, *options: str) -> tuple[int, bytes, str]:
        symbols = as_format(cadus_to_bits(cadus), "soft-f32")
        return run(["cadu", "decode", *conv("--input", "soft-f32", *options)], symbols)

    # 3 errors in the ASM of the first CADU: found only with --asm-search-errors 3.
    first = _asm_with_errors(data, config, 0, 3)
    code, decoded, err = decode(first)
    assert (code, decoded) == (0, data[223:])
    code, decoded, err = decode(first, "--asm-search-errors", "3")
    assert (code, decoded) == (0, data)
    assert cadu_lines(err)[0]["asm_errors"] == 3

    # 3 errors in the ASM of the fourth: taken when locked (4 by default) ...
    fourth = _asm_with_errors(data, config, 3, 3)
    code, decoded, err = decode(fourth)
    assert (code, decoded) == (0, data)
    assert [r["asm_errors"] for r in cadu_lines(err)] == [0, 0, 0, 3, 0, 0]
    assert [r["event"] for r in event_lines(err)] == ["locked"]
    # ... missed with --asm-lock-errors 2, and the flywheel (3) keeps lock ...
    code, decoded, err = decode(fourth, "--asm-lock-errors", "2")
    assert (code, decoded) == (0, data)
    assert [r["event"] for r in event_lines(err)] == ["locked"]
    # ... which --flywheel 1 loses there.
    code, decoded, err = decode(fourth, "--asm-lock-errors", "2", "--flywheel", "1")
    events = event_lines(err)
    assert [r["event"] for r in events] == ["locked", "sync_lost", "locked"]
    assert events[1]["at_symbol"] == 3 * 16 * 259


def test_conv_decode_streams_in_chunks_and_writes_frames_early() -> None:
    # Reads of 4099 octets cut float32 symbols in two; frames leave before the end.
    config = TmCodingConfig(interleave=1)
    data = frames(20, 223, seed=18)
    stream = as_format(coded_bits(data, config), "soft-f32") + b"\x00" * 4  # and one symbol

    class Reader(io.BytesIO):
        def read1(self, size: int | None = -1) -> bytes:
            return super().read1(4099)

    reader = Reader(stream)

    class Writer(io.BytesIO):
        first_at: int | None = None

        def write(self, data: Any) -> int:
            if Writer.first_at is None and data:
                Writer.first_at = reader.tell()
            return super().write(data)

    out, err = Writer(), io.StringIO()
    code = main(["cadu", "decode", *conv("--input", "soft-f32")], Streams(reader, out, err))
    assert (code, out.getvalue()) == (0, data), err.getvalue()
    assert Writer.first_at is not None and Writer.first_at < len(stream) // 4


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["encode", "--interleave", "1", "--puncture", "3/4"], "--puncture 3/4 needs --conv"),
        (["encode", "--interleave", "1", "--nrzm"], "--nrzm needs --conv"),
        (["encode", "--interleave", "1", "--output", "soft-f32"], "--output soft-f32 needs --conv"),
        (["decode", "--interleave", "1", "--input", "bits"], "--input bits needs --conv"),
        (
            ["decode", "--interleave", "1", "--nrzm", "auto", "--puncture", "7/8"],
            "--puncture 7/8 and --nrzm auto need --conv",
        ),
        (
            ["decode", *conv("--asm-search-errors", "5", "--asm-lock-errors", "3")],
            "asm_lock_errors=3",
        ),
        (["decode", "--interleave", "7", "--conv"], "I=7"),
    ],
)
def test_conv_bad_option_combinations_exit_2_with_one_line(argv: list[str], words: str) -> None:
    code, out, err = run(["cadu", *argv], b"\x00" * 64)
    assert code == 2 and out == b""
    assert err.count("\n") == 1 and words in one_line_error(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", *conv("--puncture", "4/5")],
        ["encode", *conv("--nrzm", "auto")],  # the encoder's --nrzm takes no value
        ["encode", *conv("--output", "iq-symbols-c128")],
        ["decode", *conv("--nrzm", "maybe")],
        ["decode", *conv("--input", "soft-f64")],
        ["decode", *conv("--flywheel", "0")],
    ],
)
def test_conv_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["cadu", *argv], b"")
    assert code == 2 and out == b"" and err == ""
    assert "usage:" in capsys.readouterr().err  # argparse writes to the process stderr


def _pipe(encode_options: list[str], decode_options: list[str], data: bytes) -> tuple[bytes, str]:
    """``linkstack cadu encode ... | linkstack cadu decode ...`` as two processes."""
    command = [sys.executable, "-m", "linkstack.cli.main", "cadu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    encode = subprocess.Popen(
        [*command, "encode", *encode_options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert encode.stdin is not None and encode.stdout is not None and encode.stderr is not None
    decode = subprocess.Popen(
        [*command, "decode", *decode_options],
        stdin=encode.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    encode.stdout.close()  # the decoder holds the read end now
    encode.stdin.write(data)
    encode.stdin.close()
    decoded, decode_err = decode.communicate(timeout=120)
    encode_err = encode.stderr.read()
    encode.stderr.close()
    assert encode.wait(timeout=60) == 0, encode_err
    assert decode.returncode == 0, decode_err
    return decoded, decode_err.decode()


def test_real_pipe_conv_soft_symbols() -> None:
    data = frames(9, 1115, seed=19)
    decoded, err = _pipe(
        conv("--puncture", "3/4", "--nrzm", "--output", "soft-f32", interleave=5),
        conv("--puncture", "3/4", "--nrzm", "auto", "--input", "soft-f32", interleave=5),
        data,
    )
    assert decoded == data
    assert len(cadu_lines(err)) == 9 and [r["event"] for r in event_lines(err)] == ["locked"]
