"""``linkstack radio`` against GNU Radio 3.10 and gr-satellites 4.4, IQ both ways.

* linkstack -> gr-satellites: a recording ``linkstack radio tx`` made (BPSK, rate 1/2,
  I = 1, N = 223, sps 4, 9600 baud, Eb/N0 8 dB, 50 Hz carrier offset) is decoded by the
  real ``gr_satellites`` program (its own AGC, FLL, clock recovery, Costas loop and
  ``ccsds_concatenated_deframer``) with a minimal CCSDS concatenated BPSK satellite file, run by
  ``gnuradio_helpers/grsat_program.py``: fed through a FIFO with noise after the
  samples until its ``--kiss_out`` file is quiet (fed a plain file it drops queued
  frames at end of file), HOME in a temporary folder, telemetry submission off.  The
  phase is 0: gr-satellites does not resolve the BPSK 180-degree ambiguity (issue #264).
* GNU Radio -> linkstack: bits encoded by GNU Radio's CCSDS convolutional encoder
  (``fec.cc_encoder_make(F, 7, 2, [79, -109], 0, fec.CC_STREAMING, False)`` in
  ``fec.extended_encoder``), ``chunks_to_symbols_bc``, an interpolating FIR with
  ``firdes.root_raised_cosine`` at sps 4 and ``channels.channel_model`` (noise, a
  frequency offset of 1 % of the symbol rate, a timing offset of 100 ppm, a phase of
  1 rad) are decoded by ``linkstack radio rx --raw`` (``gnuradio_helpers/gr_modulate.py``).

Frames are compared as sets.  Skipped, with the reason, where ``/usr/bin/python3``
cannot import GNU Radio and gr-satellites or the ``gr_satellites`` program is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from linkstack.coding.convolutional import unpack_bits
from linkstack.coding.tm import TmCodingConfig, encode_cadus
from tests.test_gnuradio_interop import SYSTEM_PYTHON, gnuradio_missing, helper_env
from tests.test_radio_cli import run, split

HELPERS = Path(__file__).parent / "gnuradio_helpers"
FRAMES = 20

#: A gr-satellites satellite file for CCSDS concatenated BPSK, I = 1, N = 223.
SATELLITE_YAML = (HELPERS / "ccsds_bpsk.yml").read_text()


def _missing() -> str | None:
    reason = gnuradio_missing()
    if reason is None and shutil.which("gr_satellites") is None:
        return "the gr_satellites program is not on PATH"
    return reason


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def seeded(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 223, dtype=np.uint8).tobytes() for _ in range(count)]


def kiss_frames(data: bytes) -> list[bytes]:
    """Data frames (command 0) of a KISS stream; gr_satellites also writes timestamps
    (command 9) ahead of each."""
    frames = []
    for part in data.split(b"\xc0"):
        if part and part[0] == 0:
            frames.append(part[1:].replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb"))
    return frames


def test_gr_satellites_decodes_our_recording(tmp_path: Path) -> None:
    frames = seeded(FRAMES, 21)
    base = tmp_path / "rec"
    code, _, err = run(
        [
            "radio",
            "tx",
            "--interleave",
            "1",
            "--baud",
            "9600",
            "--sps",
            "4",
            "--ebn0",
            "8",
            "--cfo-hz",
            "50",
            "--seed",
            "3",
            "--output",
            str(base),
        ],
        b"".join(frames),
    )
    assert code == 0, err
    sat = tmp_path / "sat.yml"
    sat.write_text(SATELLITE_YAML)
    kiss = tmp_path / "out.kiss"
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            str(HELPERS / "grsat_program.py"),
            str(sat),
            str(base.with_suffix(".sigmf-data")),
            "38400",
            str(kiss),
        ],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = set(kiss_frames(kiss.read_bytes()))
    assert got == set(frames), f"gr_satellites gave {len(got & set(frames))}/{FRAMES}"
    # and linkstack's own receiver on the same recording
    code, out, err = run(["radio", "rx", str(base.with_suffix(".sigmf-meta"))])
    assert code == 0, err
    assert split(out, 223) == set(frames)


def test_we_decode_gnuradio_iq(tmp_path: Path) -> None:
    frames = seeded(FRAMES, 22)
    config = TmCodingConfig(interleave=1)
    framebits = 8 * config.cadu_length
    rng = np.random.default_rng(4)
    bits = np.concatenate(
        (
            rng.integers(0, 2, 2 * framebits, dtype=np.uint8),  # the receiver joins mid-stream
            unpack_bits(encode_cadus(b"".join(frames), config)),
            rng.integers(0, 2, framebits, dtype=np.uint8),
        )
    )
    bits_path = tmp_path / "bits.u8"
    bits.astype(np.uint8).tofile(bits_path)
    iq = tmp_path / "gr.cf32"
    done = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            str(HELPERS / "gr_modulate.py"),
            str(bits_path),
            str(iq),
            "--framebits",
            str(framebits),
            "--sps",
            "4",
            "--noise",
            "1.2",
            "--freq",
            str(0.01 / 4),
            "--epsilon",
            "1.0001",
            "--phase",
            "1.0",
            "--seed",
            "5",
        ],
        env=helper_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    code, out, err = run(
        ["radio", "rx", str(iq), "--raw", "--samp-rate", "38400", "--interleave", "1"]
    )
    assert code == 0, err
    assert split(out, 223) == set(frames)
