"""``linkstack radio tx|rx`` and the receiver pipeline behind them.

Round trips run the whole chain: frames -> ``radio tx`` (R-S, randomizer, ASM,
convolutional code, BPSK/QPSK SRRC modulator, seeded impairments) -> a SigMF recording
or raw IQ -> ``radio rx`` (demodulator, soft synchronizer, R-S) -> frames, compared as
sets (a false ASM hit can pass R-S, so order and count prove nothing).  Frames are
seeded random octets.  Bad input must give one line and a clean exit code.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linkstack.cli.main import Streams, main
from linkstack.coding.tm import TmCodingConfig
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter

BAUD = 9600.0
CADU_KEYS = {
    "time_s",
    "sample",
    "status",
    "frequency_offset_hz",
    "snr_db",
    "corrected",
    "asm_errors",
    "hypothesis",
}


def frames_for(interleave: int, count: int, seed: int) -> list[bytes]:
    n = TmCodingConfig(interleave=interleave).frame_octets
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for _ in range(count)]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv: list[str], stdin: bytes = b"", *, tty: bool = False) -> tuple[int, bytes, str]:
    out = io.BytesIO()
    err: io.StringIO = _Tty() if tty else io.StringIO()
    code = main(argv, Streams(io.BytesIO(stdin), out, err))
    return code, out.getvalue(), err.getvalue()


def split(data: bytes, n: int) -> set[bytes]:
    return {data[i : i + n] for i in range(0, len(data), n)}


def json_lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def tx(tmp_path: Path, frames: list[bytes], *options: str, name: str = "rec") -> Path:
    base = tmp_path / name
    code, _, err = run(
        ["radio", "tx", "--baud", str(BAUD), "--output", str(base), *options], b"".join(frames)
    )
    assert code == 0, err
    return base.with_suffix(".sigmf-meta")


@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
@pytest.mark.parametrize("interleave", [1, 5])
def test_round_trip_impaired(tmp_path: Path, modulation: str, interleave: int) -> None:
    frames = frames_for(interleave, 6, seed=interleave)
    meta = tx(
        tmp_path,
        frames,
        "--interleave",
        str(interleave),
        "--modulation",
        modulation,
        "--ebn0",
        "6",
        "--cfo-hz",
        str(0.01 * BAUD),
        "--clock-ppm",
        "100",
        "--phase",
        "random",
        "--seed",
        "7",
    )
    code, out, err = run(["radio", "rx", str(meta)])  # every setting from the metadata
    assert code == 0, err
    assert split(out, len(frames[0])) == set(frames)
    records = [r for r in json_lines(err) if "status" in r]
    assert {r["status"] for r in records} == {"decoded"}
    for record in records:  # the demodulator's figures: 1 % of the symbol rate, Es/N0
        assert abs(float(record["frequency_offset_hz"]) - 0.01 * BAUD) < 0.003 * BAUD  # type: ignore[arg-type]
        expected = 3.0 if modulation == "bpsk" else 6.0  # Eb/N0 6 dB, rate 1/2
        if record["snr_db"] is not None:
            assert abs(float(record["snr_db"]) - expected) < 2.5  # type: ignore[arg-type]


def test_json_lines_and_times(tmp_path: Path) -> None:
    frames = frames_for(1, 4, seed=3)
    meta = tx(tmp_path, frames, "--interleave", "1", "--ebn0", "8")
    code, _, err = run(["radio", "rx", str(meta)])
    assert code == 0, err
    lines = json_lines(err)
    cadus = [r for r in lines if "status" in r]
    assert len(cadus) == 4
    for record in cadus:
        assert set(record) >= CADU_KEYS
        assert set(record["hypothesis"]) == {  # type: ignore[arg-type]
            "symbol_offset",
            "quarter_turn",
            "inverted",
            "nrzm",
        }
        assert record["corrected"] == [0] or all(c >= 0 for c in record["corrected"])  # type: ignore[union-attr]
    assert [r["event"] for r in lines if "event" in r] == ["locked"]
    # times agree with the annotations tx wrote, to within two symbols
    notes = json.loads(meta.read_text())["annotations"]
    rate = 4 * BAUD
    for record, note in zip(cadus, notes, strict=True):
        assert abs(float(record["time_s"]) - note["core:sample_start"] / rate) < 2 * 4 / rate  # type: ignore[arg-type]


def test_metadata_written(tmp_path: Path) -> None:
    meta = tx(tmp_path, frames_for(5, 2, 1), "--interleave", "5", "--modulation", "qpsk")
    document = json.loads(meta.read_text())
    fields = document["global"]
    assert fields["core:sample_rate"] == 4 * BAUD
    assert fields["linkstack:modulation"] == "qpsk"
    assert fields["linkstack:interleave"] == 5
    assert fields["linkstack:frame_length"] == 1115
    assert fields["linkstack:conv_rate"] == "1/2"
    assert fields["linkstack:nrzm"] is False
    assert len(document["annotations"]) == 2


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le", "ci8", "cu8"])
def test_datatypes(tmp_path: Path, datatype: str) -> None:
    frames = frames_for(1, 3, seed=11)
    meta = tx(tmp_path, frames, "--interleave", "1", "--datatype", datatype, "--ebn0", "8")
    code, out, err = run(["radio", "rx", str(meta)])
    assert code == 0, err
    assert split(out, 223) == set(frames)


def test_raw_iq(tmp_path: Path) -> None:
    frames = frames_for(1, 3, seed=12)
    raw = tmp_path / "iq.cf32"
    code, _, err = run(
        ["radio", "tx", "--interleave", "1", "--baud", "9600", "--raw", str(raw)],
        b"".join(frames),
    )
    assert code == 0, err
    assert not list(tmp_path.glob("*.sigmf-meta"))
    code, out, err = run(
        ["radio", "rx", str(raw), "--raw", "--samp-rate", "38400", "--interleave", "1"]
    )
    assert code == 0, err
    assert split(out, 223) == set(frames)


def test_nrzm_auto(tmp_path: Path) -> None:
    frames = frames_for(1, 3, seed=13)
    meta = tx(tmp_path, frames, "--interleave", "1", "--nrzm", "--phase", "180")
    code, out, err = run(["radio", "rx", str(meta), "--nrzm", "auto"])
    assert code == 0, err
    assert split(out, 223) == set(frames)


def _one_line(code: int, err: str, expected_code: int, words: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, err
    assert words in lines[0]


def test_truncated_recording(tmp_path: Path) -> None:
    frames = frames_for(1, 3, seed=14)
    meta = tx(tmp_path, frames, "--interleave", "1")
    data = meta.with_suffix(".sigmf-data")
    data.write_bytes(data.read_bytes()[:-3])
    code, out, err = run(["radio", "rx", str(meta)])
    _one_line(code, err, 1, "partial sample")
    assert split(out, 223) == set(frames)  # the whole samples still decoded


def test_empty_recording(tmp_path: Path) -> None:
    meta = tx(tmp_path, frames_for(1, 1, 1), "--interleave", "1")
    meta.with_suffix(".sigmf-data").write_bytes(b"")
    code, _, err = run(["radio", "rx", str(meta)])
    _one_line(code, err, 1, "no samples")


def test_contradicting_metadata(tmp_path: Path) -> None:
    meta = tx(tmp_path, frames_for(1, 1, 1), "--interleave", "1")
    document = json.loads(meta.read_text())
    document["global"]["linkstack:sps"] = 8
    meta.write_text(json.dumps(document))
    code, _, err = run(["radio", "rx", str(meta)])
    _one_line(code, err, 1, "contradicting metadata")


def test_unknown_datatype(tmp_path: Path) -> None:
    raw = tmp_path / "x.iq"
    raw.write_bytes(bytes(800))
    code, _, err = run(
        [
            "radio",
            "rx",
            str(raw),
            "--raw",
            "--samp-rate",
            "1000",
            "--datatype",
            "cf64",
            "--interleave",
            "1",
        ]
    )
    _one_line(code, err, 1, "not a datatype")


def test_pure_noise(tmp_path: Path) -> None:
    raw = tmp_path / "noise.cf32"
    rng = np.random.default_rng(5)
    noise = 0.2 * (rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000))
    raw.write_bytes(noise.astype("<c8").tobytes())
    code, out, err = run(
        ["radio", "rx", str(raw), "--raw", "--samp-rate", "38400", "--interleave", "1"]
    )
    _one_line(code, err, 1, "no CADU found")
    assert out == b""


def test_nan_samples(tmp_path: Path) -> None:
    raw = tmp_path / "nan.cf32"
    raw.write_bytes(np.full(50_000, np.nan, "<c8").tobytes())
    code, _, err = run(
        ["radio", "rx", str(raw), "--raw", "--samp-rate", "38400", "--interleave", "1"]
    )
    _one_line(code, err, 1, "NaN or infinite")
    # a few NaN in a good recording: every frame, and one warning line
    frames = frames_for(1, 3, seed=15)
    raw2 = tmp_path / "some.cf32"
    run(
        ["radio", "tx", "--interleave", "1", "--baud", "9600", "--raw", str(raw2)], b"".join(frames)
    )
    samples = np.frombuffer(raw2.read_bytes(), "<c8").copy()
    samples[1000:1010] = np.nan
    raw2.write_bytes(samples.tobytes())
    code, out, err = run(
        ["radio", "rx", str(raw2), "--raw", "--samp-rate", "38400", "--interleave", "1"]
    )
    _one_line(code, err, 0, "10 of")
    assert split(out, 223) == set(frames)


def test_partial_frame_writes_nothing(tmp_path: Path) -> None:
    code, _, err = run(
        ["radio", "tx", "--interleave", "1", "--baud", "9600", "--output", str(tmp_path / "r")],
        bytes(300),
    )
    _one_line(code, err, 1, "whole 223-octet frame")
    assert not list(tmp_path.iterdir())


def test_dropped_cadu_exits_2(tmp_path: Path) -> None:
    frames = frames_for(1, 4, seed=16)
    meta = tx(tmp_path, frames, "--interleave", "1")
    data = meta.with_suffix(".sigmf-data")
    samples = np.frombuffer(data.read_bytes(), "<c8").copy()
    notes = json.loads(meta.read_text())["annotations"]
    start = notes[1]["core:sample_start"] + 2000  # wipe the middle of the second CADU
    rng = np.random.default_rng(1)
    wiped = 1500  # about 190 decoded bits: more R-S symbol errors than E = 16
    samples[start : start + wiped] = (
        0.18 * (rng.standard_normal(wiped) + 1j * rng.standard_normal(wiped))
    ).astype(np.complex64)
    data.write_bytes(samples.tobytes())
    code, out, err = run(["radio", "rx", str(meta)])
    assert code == 2, err
    assert split(out, 223) == set(frames) - {frames[1]}
    assert any(r.get("status") == "uncorrectable" for r in json_lines(err))


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    meta = tx(tmp_path, frames_for(1, 2, 17), "--interleave", "1")
    _, _, err = run(["radio", "rx", str(meta)], tty=True)
    assert "\r" in err
    _, _, err = run(["radio", "rx", str(meta), "--json-progress"])
    assert "\r" not in err
    assert any(r.get("event") == "progress" for r in json_lines(err))
    done = subprocess.run(
        [sys.executable, "-m", "linkstack.cli.main", "radio", "rx", str(meta)],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"\r" not in done.stderr
    assert all(line.startswith(b"{") for line in done.stderr.splitlines())


def test_receiver_chunking_and_annotations() -> None:
    """The engine: samples fed whole or in odd chunks give the same frames; the
    annotations say where each CADU starts."""
    config = TmCodingConfig(interleave=1)
    frames = frames_for(1, 3, seed=18)
    transmitter = IqTransmitter(config)
    block = transmitter.transmit(frames)
    samples = np.concatenate((block.samples, transmitter.flush()))
    assert len(block.annotations) == 3
    results = []
    for step in (samples.size, 777):
        receiver = IqReceiver(config, sample_rate=4 * BAUD)
        for start in range(0, samples.size, step):
            receiver.receive_samples(samples[start : start + step])
        receiver.flush()
        got = []
        while (event := receiver.next_event()) is not None:
            if isinstance(event, CaduReceived):
                got.append((event.frame, event.sample))
        results.append(got)
    assert [f for f, _ in results[0]] == frames
    assert [f for f, _ in results[1]] == frames  # the frames do not depend on the chunking
    # the places are interpolated between block notes: the same to a sample or two
    assert all(abs(a - b) <= 4 for (_, a), (_, b) in zip(*results, strict=True))
    for (_, sample), note in zip(results[0], block.annotations, strict=True):
        assert abs(sample - note.sample_start) <= 8


# --------------------------------------------------------------------------- --doppler-pass
PASS_BAUD = "256000"


def pass_tx(tmp_path: Path, frames: list[bytes], *options: str) -> tuple[int, str, Path]:
    base = tmp_path / "pass"
    code, _, err = run(
        [
            "radio",
            "tx",
            "--interleave",
            "1",
            "--baud",
            PASS_BAUD,
            "--sps",
            "2",
            "--ebn0",
            "6",
            "--clock-ppm",
            "100",
            "--phase",
            "random",
            "--doppler-pass",
            "--output",
            str(base),
            *options,
        ],
        b"".join(frames),
    )
    return code, err, base.with_suffix(".sigmf-meta")


def test_doppler_pass_round_trip(tmp_path: Path) -> None:
    # 0.6 s of the full-scale pass at its rising edge (+53 kHz, 0.21 of 256 kbaud,
    # 100 ppm, Eb/N0 6 dB): rx acquires it blind and decodes every frame, in order;
    # the recording says where each CADU is and what pass it holds.
    frames = frames_for(1, 36, seed=40)
    code, err, meta = pass_tx(tmp_path, frames, "--pass-start-s", "-300")
    assert code == 0, err
    document = json.loads(meta.read_text())
    assert document["global"]["linkstack:pass_start_s"] == -300.0
    assert document["global"]["linkstack:pass_carrier_hz"] == 2.2e9
    assert document["global"]["linkstack:pass_altitude_m"] == 400e3
    code, out, err = run(["radio", "rx", str(meta)])
    assert code == 0, err
    assert out == b"".join(frames)  # all, in order
    cadus = [line for line in json_lines(err) if "status" in line]
    assert all(52.8e3 < float(c["frequency_offset_hz"]) < 53.2e3 for c in cadus)  # type: ignore[arg-type]
    starts = [a["core:sample_start"] for a in document["annotations"]]
    assert len(starts) == len(frames)
    # the annotations (the channel's own delay, clock and Doppler) against the receiver
    assert all(abs(int(c["sample"]) - s) <= 4 for c, s in zip(cadus, starts, strict=True))  # type: ignore[call-overload]


def test_doppler_pass_defaults_to_culmination_and_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without --pass-start-s the recording is centred on culmination; the samples go to
    # the file chunk by chunk as they are made (64 frames at a time), never whole.
    from linkstack.cli import radio as radio_cli

    written: list[int] = []
    real = radio_cli.write_recording

    def spy(path: object, samples: object, *args: object, **kwargs: object) -> object:
        def counted() -> object:
            for chunk in samples:  # type: ignore[attr-defined]
                written.append(chunk.size)
                yield chunk

        return real(path, counted(), *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(radio_cli, "write_recording", spy)
    frames = frames_for(1, 150, seed=41)
    code, err, meta = pass_tx(tmp_path, frames)
    assert code == 0, err
    document = json.loads(meta.read_text())
    start = document["global"]["linkstack:pass_start_s"]
    duration = sum(written) / (2 * 256e3)
    assert start == pytest.approx(-duration / 2, abs=0.01)
    assert len(written) >= 4 and max(written) < 64 * 8300 * 2 // 2 * 2
    assert sum(written) == meta.with_suffix(".sigmf-data").stat().st_size // 8


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--pass-altitude-km", "50"], "altitude 50000.0 m is outside"),
        (["--pass-start-s", "-400"], "runs outside the pass"),
        (["--pass-start-s", "304.83"], "runs outside the pass"),
        (["--pass-start-s", "nan"], "runs outside the pass"),
    ],
)
def test_doppler_pass_bad_values(tmp_path: Path, options: list[str], words: str) -> None:
    code, err, meta = pass_tx(tmp_path, frames_for(1, 2, seed=42), *options)
    _one_line(code, err, 2, words)
    assert not meta.exists() and not meta.with_suffix(".sigmf-data").exists()


def test_pass_options_need_doppler_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        [
            "radio",
            "tx",
            "--interleave",
            "1",
            "--baud",
            "9600",
            "--pass-start-s",
            "0",
            "--output",
            str(tmp_path / "x"),
        ],
        b"".join(frames_for(1, 1, seed=43)),
    )
    _one_line(code, err, 2, "--pass-start-s need --doppler-pass")
    code, _, err = run(
        [
            "radio",
            "tx",
            "--interleave",
            "1",
            "--baud",
            "9600",
            "--doppler-pass",
            "--pass-carrier-hz",
            "-5",
            "--output",
            str(tmp_path / "y"),
        ],
        b"".join(frames_for(1, 1, seed=43)),
    )
    printed = err + capsys.readouterr().err  # argparse's own message
    assert code == 2 and "--pass-carrier-hz" in printed and "Traceback" not in printed
    assert not (tmp_path / "y.sigmf-data").exists()
