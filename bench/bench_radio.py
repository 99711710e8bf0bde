"""linkstack's IQ receiver against the real ``gr_satellites`` program, on the same recordings.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_radio.py [--frames 80] [--out docs]``
(``matplotlib`` needed for the figure).  Writes ``docs/radio.md`` and ``docs/radio.png``.

Recordings: ``--frames`` random 223-octet transfer frames per point through
``IqTransmitter`` (BPSK, convolutional rate 1/2, R-S I = 1, N = 223, randomized, sps 4 at
9600 baud, 38400 samples/s, one burst with the transmitter's ramp, lead and tail), a
carrier offset of ``CFO_HZ`` (0.5 % of the symbol rate) at phase 0 (gr-satellites does
not resolve the BPSK 180-degree ambiguity, issue #264), then complex white noise at Eb/N0
per information bit from 3 to 7 dB, the R-S check symbols and the ASM charged (R = 1784 /
4144 = 0.4305 information bits per channel symbol, as ``docs/coding_gain.md`` charges
them).  Each recording is written as raw little-endian complex64 and decoded twice:

* by linkstack's ``IqReceiver`` (what ``linkstack radio rx`` runs);
* by the ``gr_satellites`` program of gr-satellites 4.4 on GNU Radio 3.10 (the system
  ``/usr/bin/python3``) with a minimal CCSDS concatenated BPSK satellite file, through
  ``tests/gnuradio_helpers/grsat_program.py`` (fed through a FIFO, noise after the
  samples until its KISS output is quiet; HOME in a temporary folder, telemetry
  submission off).  Without GNU Radio its columns say why and are left out.

A third column is linkstack's synchronizer alone on ideal soft symbols: the same frames
CCSDS-encoded, BPSK +-1 (bit 1 -> +1), AWGN of ``sigma^2 = 1 / (2 R Eb/N0)``, straight
into ``SoftCaduSynchronizer`` (no demodulator: perfect timing, carrier and amplitude),
the bound a receiver's demodulator loss is measured against.  Frames are counted as sets
(a frame counts once, only if it is one that was sent).

Throughput: the 7 dB recording repeated ``--repeat`` times into one file; linkstack's
``IqReceiver`` on it in this process (numba kernels compiled beforehand; wall time of
``receive_samples`` + ``flush``), and the ``gr_satellites`` program on the same file
given directly as ``--rawfile`` (it stops at end of file; the frames it drops there do
not matter here), its wall time less that of the same program on a one-second file
(start-up: Python, GNU Radio, the flowgraph).  Both give samples/s; their ratio and
each one's real-time margin for a 256 kbaud downlink at sps 4 (1.024 Msamples/s).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads

import argparse
import functools
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkstack.coding.convolutional import ConvolutionalEncoder, unpack_bits
from linkstack.coding.soft import SoftCaduSynchronizer
from linkstack.coding.tm import FrameDecoded, TmCodingConfig, encode_cadus
from linkstack.radio import modem
from linkstack.radio.modem import Impairments, LoopConfig, impair
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GRSAT_HELPER = ROOT / "tests" / "gnuradio_helpers" / "grsat_program.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
EBN0_DB = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0)
BAUD = 9600.0
SPS = 4
SAMPLE_RATE = BAUD * SPS
CFO_HZ = 48.0  # 0.5 % of the symbol rate
CODE_RATE = 8 * 223 / (2 * 8 * (4 + 255))  # information bits per channel symbol
DOWNLINK_SAMPLES_S = 256e3 * SPS
FER_TARGET = 0.1  # where the curves are compared
SOFT_LEAD_BITS = 1024
SOFT_TAIL_BITS = 256

#: The gr-satellites satellite file the interop tests use (CCSDS concatenated BPSK, I = 1).
SATELLITE_YAML = (ROOT / "tests" / "gnuradio_helpers" / "ccsds_bpsk.yml").read_text()

# Runs the gr_satellites program on a plain file (throughput only: at end of file it
# stops and drops what is queued).  argv: SAT IQ SAMP_RATE KISS.
DIRECT_PROGRAM = """\
import runpy, shutil, sys
sys.path.insert(0, sys.argv[1])
import _gr_setup
program = shutil.which("gr_satellites")
sat, iq, rate, kiss = sys.argv[2:6]
sys.argv = [program, sat, "--rawfile", iq, "--iq", "--samp_rate", rate,
            "--f_offset", "0", "--kiss_out", kiss]
runpy.run_path(program, run_name="__main__")
"""


def helper_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    env["GR_SATELLITES_SUBMIT_TLM"] = "0"  # never submit telemetry to SatNOGS
    env["HOME"] = str(home)
    return env


@functools.cache
def gnuradio_missing() -> str | None:
    """Why the gr-satellites columns cannot be run here, or None."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (GNU Radio and gr-satellites live in it)"
    if shutil.which("gr_satellites") is None:
        return "the gr_satellites program is not on PATH"
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", "import gnuradio, satellites"],
            env=helper_env(Path(home)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} cannot import gnuradio and satellites ({last})"
    return None


def kiss_frames(data: bytes) -> list[bytes]:
    """Data frames (command 0) of a KISS stream (gr_satellites also writes timestamps)."""
    frames = []
    for part in data.split(b"\xc0"):
        if part and part[0] == 0:
            frames.append(part[1:].replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb"))
    return frames


def random_frames(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 223, dtype=np.uint8).tobytes() for _ in range(count)]


def recording(frames: list[bytes], ebn0_db: float, seed: int) -> np.ndarray:
    """One burst of these frames, impaired: CFO_HZ at phase 0, AWGN at ebn0_db."""
    config = TmCodingConfig(interleave=1)
    transmitter = IqTransmitter(config, sps=SPS, ramp_rng=np.random.default_rng(seed))
    clean = np.concatenate((transmitter.transmit(frames).samples, transmitter.flush()))
    return impair(
        clean,
        Impairments(offset_hz=CFO_HZ, phase=0.0, ebn0_db=ebn0_db, code_rate=CODE_RATE),
        modulation="bpsk",
        sps=SPS,
        sample_rate=SAMPLE_RATE,
        rng=np.random.default_rng(seed + 1000),
    )


#: The demodulator's loop settings for the linkstack column (``--no-coarse``: the
#: carrier loops alone, as before the coarse carrier acquisition).
SETTINGS: dict[str, LoopConfig] = {"loops": LoopConfig()}


def linkstack_frames(samples: np.ndarray) -> list[bytes]:
    receiver = IqReceiver(
        TmCodingConfig(interleave=1), sample_rate=SAMPLE_RATE, sps=SPS, loops=SETTINGS["loops"]
    )
    receiver.receive_samples(samples)
    receiver.flush()
    out = []
    while (event := receiver.next_event()) is not None:
        if isinstance(event, CaduReceived) and event.frame is not None:
            out.append(event.frame)
    return out


def ideal_frames(frames: list[bytes], ebn0_db: float, seed: int) -> list[bytes]:
    """The synchronizer on ideal soft symbols: no demodulator."""
    config = TmCodingConfig(interleave=1)
    rng = np.random.default_rng(seed)
    bits = np.concatenate(
        (
            rng.integers(0, 2, SOFT_LEAD_BITS, dtype=np.uint8),
            unpack_bits(encode_cadus(b"".join(frames), config)),
            np.zeros(SOFT_TAIL_BITS, np.uint8),
        )
    )
    coded = ConvolutionalEncoder("1/2").encode(bits)
    sigma = math.sqrt(1.0 / (2.0 * CODE_RATE * 10 ** (ebn0_db / 10)))
    soft = (2.0 * coded - 1.0 + sigma * rng.standard_normal(coded.size)).astype(np.float32)
    sync = SoftCaduSynchronizer(config)
    sync.receive_symbols(soft)
    sync.flush()
    out = []
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            out.append(event.frame)
    return out


def grsat_frames(iq_path: Path, work: Path) -> list[bytes]:
    """The gr_satellites program on a recording, through the FIFO helper."""
    sat = work / "sat.yml"
    sat.write_text(SATELLITE_YAML)
    kiss = work / f"{iq_path.stem}.kiss"
    home = work / "home"
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            str(GRSAT_HELPER),
            str(sat),
            str(iq_path),
            f"{SAMPLE_RATE:g}",
            str(kiss),
        ],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"gr_satellites failed: {done.stderr[-2000:]}")
    return kiss_frames(kiss.read_bytes()) if kiss.exists() else []


def grsat_seconds(iq_path: Path, work: Path) -> float:
    """Wall time of the gr_satellites program on a plain file (start-up included)."""
    sat = work / "sat.yml"
    sat.write_text(SATELLITE_YAML)
    home = work / "home"
    home.mkdir(exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-c",
            DIRECT_PROGRAM,
            str(GRSAT_HELPER.parent),
            str(sat),
            str(iq_path),
            f"{SAMPLE_RATE:g}",
            str(work / "direct.kiss"),
        ],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"gr_satellites failed: {done.stderr[-2000:]}")
    return elapsed


@dataclass
class Point:
    ebn0_db: float
    sent: int
    linkstack: int
    ideal: int
    grsat: int | None
    grsat_both: int | None = None  # the union with its run on the negated file


@dataclass
class Throughput:
    samples: int
    linkstack_s: float
    grsat_s: float | None
    grsat_startup_s: float | None

    @property
    def linkstack_rate(self) -> float:
        return self.samples / self.linkstack_s

    @property
    def grsat_rate(self) -> float | None:
        if self.grsat_s is None or self.grsat_startup_s is None:
            return None
        return self.samples / max(self.grsat_s - self.grsat_startup_s, 1e-9)


def crossing(xs: list[float], fers: list[float], target: float) -> float | None:
    """Eb/N0 where a falling FER curve crosses target (linear in log10 FER); None if not
    resolved by the points (a zero FER counts as a crossing at that point's half frame)."""
    for i in range(len(xs) - 1):
        (x0, y0), (x1, y1) = (xs[i], fers[i]), (xs[i + 1], fers[i + 1])
        if y0 >= target > y1:
            ly0, ly1 = math.log10(y0), math.log10(max(y1, 1e-6))
            return x0 + (x1 - x0) * (ly0 - math.log10(target)) / (ly0 - ly1)
    return None


def run_points(frames_per_point: int, work: Path, missing: str | None) -> list[Point]:
    points = []
    for index, ebn0 in enumerate(EBN0_DB):
        seed = 100 + index
        frames = random_frames(frames_per_point, seed)
        sent = set(frames)
        samples = recording(frames, ebn0, seed)
        iq_path = work / f"ebn0_{ebn0:g}.cf32"
        samples.astype("<c8").tofile(iq_path)
        ours = len(set(linkstack_frames(samples)) & sent)
        ideal = len(set(ideal_frames(frames, ebn0, seed + 2000)) & sent)
        grsat = flipped = None
        if not missing:
            grsat = len(set(grsat_frames(iq_path, work)) & sent)
            negated = work / f"ebn0_{ebn0:g}_neg.cf32"
            (-samples).astype("<c8").tofile(negated)
            flipped = len(
                (set(grsat_frames(iq_path, work)) | set(grsat_frames(negated, work))) & sent
            )
        points.append(Point(ebn0, len(frames), ours, ideal, grsat, flipped))
        print(
            f"Eb/N0 {ebn0:g} dB: linkstack {ours}/{len(frames)}, ideal {ideal}/{len(frames)},"
            f" gr_satellites {'-' if grsat is None else grsat}/{len(frames)}"
            f" (+-1 branches: {'-' if flipped is None else flipped})",
            flush=True,
        )
    return points


def run_throughput(
    frames_per_point: int, repeat: int, work: Path, missing: str | None
) -> Throughput:
    frames = random_frames(frames_per_point, 999)
    one = recording(frames, EBN0_DB[-1], 999)
    samples = np.tile(one, repeat).astype(np.complex64)
    big = work / "throughput.cf32"
    samples.astype("<c8").tofile(big)
    modem.compile_kernels()
    linkstack_frames(one[: 1 << 16])  # warm everything up
    start = time.perf_counter()
    linkstack_frames(samples)
    ours = time.perf_counter() - start
    grsat = startup = None
    if not missing:
        small = work / "startup.cf32"
        samples[: int(SAMPLE_RATE)].astype("<c8").tofile(small)
        startup = min(grsat_seconds(small, work) for _ in range(2))
        grsat = grsat_seconds(big, work)
    return Throughput(samples.size, ours, grsat, startup)


def write_doc(
    out: Path, points: list[Point], speed: Throughput, missing: str | None, frames: int, repeat: int
) -> None:
    xs = [p.ebn0_db for p in points]
    fer = {
        "linkstack": [1 - p.linkstack / p.sent for p in points],
        "ideal": [1 - p.ideal / p.sent for p in points],
    }
    if not missing:
        fer["gr_satellites"] = [1 - (p.grsat or 0) / p.sent for p in points]
    cross = {name: crossing(xs, ys, FER_TARGET) for name, ys in fer.items()}

    def fmt_cross(name: str) -> str:
        value = cross.get(name)
        return "not resolved by these points" if value is None else f"{value:.2f} dB"

    lines = [
        "# linkstack's IQ receiver beside the gr_satellites program",
        "",
        "Written by `bench/bench_radio.py` (run: `PYTHONPATH=. .venv/bin/python"
        " bench/bench_radio.py`); its docstring says how.  Figure: `radio.png`.",
        "",
        "## Frames recovered against Eb/N0",
        "",
        f"BPSK, convolutional rate 1/2, R-S I = 1, N = 223, sps 4 at 9600 baud (38400"
        f" samples/s), carrier offset {CFO_HZ:g} Hz (0.5 % of the symbol rate) at phase 0,"
        f" AWGN at Eb/N0 per information bit (R-S and ASM charged: R = {CODE_RATE:.4f}"
        f" information bits per channel symbol).  {frames} frames per point, one"
        " recording per point; linkstack and gr_satellites decode the same file; frames"
        " counted as sets (only frames that were sent).",
        "",
        "| Eb/N0 (dB) | linkstack `IqReceiver` | `gr_satellites` program |"
        " `gr_satellites`, input x1 and x-1 (union) |"
        " ideal soft symbols -> `SoftCaduSynchronizer` |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        grsat = "skipped" if p.grsat is None else f"{p.grsat}/{p.sent}"
        both = "skipped" if p.grsat_both is None else f"{p.grsat_both}/{p.sent}"
        lines.append(
            f"| {p.ebn0_db:g} | {p.linkstack}/{p.sent} | {grsat} | {both} | {p.ideal}/{p.sent} |"
        )
    lines += [""]
    if missing:
        lines += [f"gr-satellites columns skipped: {missing}.", ""]
    lines += [
        f"Eb/N0 at a frame error rate of {FER_TARGET:g} (interpolated linearly in log10 FER"
        " between the two points around it; with "
        f"{frames} frames a point is good to a few frames, so these are to about 0.3 dB):",
        "",
        f"- linkstack `IqReceiver`: {fmt_cross('linkstack')}",
        f"- ideal soft symbols: {fmt_cross('ideal')}",
    ]
    if not missing:
        lines += [
            "",
            "`gr_satellites` looks only for the upright ASM (it does not resolve the BPSK"
            " 180-degree ambiguity, gr-satellites issue #264), so the recordings are made at"
            " phase 0 and it is also run on the negated samples (the union column) to rule"
            " the ambiguity out.  Its column is not monotonic in Eb/N0 from one run to the"
            " next: a recording its demodulator does not acquire gives it nothing at all at"
            " an Eb/N0 where the neighbouring points decode; that was measured, not"
            " investigated, so no crossing is given for it.",
        ]
    if cross.get("linkstack") is not None and cross.get("ideal") is not None:
        gap = cross["linkstack"] - cross["ideal"]  # type: ignore[operator]
        verdict = "within" if gap <= 1.0 else "NOT within"
        lines += [
            "",
            f"The demodulator's loss (IQ receiver minus ideal soft symbols) is {gap:.2f} dB:"
            f" {verdict} 1 dB.",
        ]
    lines += [
        "",
        "## Throughput",
        "",
        f"The 7 dB recording repeated {repeat} times: {speed.samples:,} samples"
        f" ({speed.samples / SAMPLE_RATE:.1f} s of signal at 38400 samples/s), sps 4.",
        "",
        "| receiver | wall time (s) | samples/s | real-time margin at 256 kbaud, sps 4 |",
        "|---|---|---|---|",
        f"| linkstack `IqReceiver` (in process, one core) | {speed.linkstack_s:.2f} |"
        f" {speed.linkstack_rate / 1e6:.2f} M | {speed.linkstack_rate / DOWNLINK_SAMPLES_S:.2f}x |",
    ]
    if speed.grsat_rate is not None and speed.grsat_s is not None:
        lines += [
            f"| `gr_satellites` program (plain file; {speed.grsat_startup_s:.2f} s start-up"
            f" taken off) | {speed.grsat_s:.2f} | {speed.grsat_rate / 1e6:.2f} M |"
            f" {speed.grsat_rate / DOWNLINK_SAMPLES_S:.2f}x |",
            "",
            f"linkstack / gr_satellites: {speed.linkstack_rate / speed.grsat_rate:.2f}x the"
            " samples per second, measured in the same run.  GNU Radio runs its blocks in"
            " threads (several cores); linkstack's receiver runs on one.",
        ]
    else:
        lines += ["", f"gr_satellites throughput skipped: {missing}."]
    lines += [
        "",
        "The real-time margin is samples/s over the 1.024 Msamples/s of a 256 kbaud"
        " downlink at 4 samples per symbol (above 1x: faster than real time).",
        "",
    ]
    (out / "radio.md").write_text("\n".join(lines) + kept_sections(out / "radio.md"))
    plot(out / "radio.png", xs, fer, frames)


#: The sections of docs/radio.md this bench writes; the others are kept as they are.
OWN_SECTIONS = ("## Frames recovered against Eb/N0", "## Throughput")


def kept_sections(path: Path) -> str:
    """The sections of the page that this bench does not write (written by hand or by
    other benches), from the first such heading on."""
    if not path.exists():
        return ""
    text = path.read_text()
    starts = [
        index
        for index in range(len(text))
        if text.startswith("\n## ", index)
        and not any(text.startswith("\n" + own, index) for own in OWN_SECTIONS)
    ]
    return text[starts[0] :] if starts else ""


def plot(path: Path, xs: list[float], fer: dict[str, list[float]], frames: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 0.5 / frames  # zero errors drawn at half a frame, hollow
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"linkstack": "o-", "gr_satellites": "s-", "ideal": "^--"}
    labels = {
        "linkstack": "linkstack IqReceiver (IQ)",
        "gr_satellites": "gr_satellites program (same IQ)",
        "ideal": "ideal soft symbols -> SoftCaduSynchronizer",
    }
    for name, ys in fer.items():
        shown = [max(y, floor) for y in ys]
        (line,) = ax.semilogy(xs, shown, styles[name], label=labels[name])
        zeros = [(x, floor) for x, y in zip(xs, ys, strict=True) if y == 0]
        if zeros:
            ax.plot(*zip(*zeros, strict=True), "o", mfc="white", color=line.get_color())
    ax.axhline(FER_TARGET, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Eb/N0 per information bit (dB)")
    ax.set_ylabel(f"frame error rate ({frames} frames per point)")
    ax.set_title("CCSDS BPSK r=1/2 + R-S(255,223) I=1, sps 4, 0.5 % CFO")
    ax.set_ylim(floor / 2, 1.2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80, help="frames per Eb/N0 point")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the throughput file")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for radio.md/.png")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="time linkstack's receiver on the throughput file only; write nothing",
    )
    parser.add_argument(
        "--no-coarse",
        action="store_true",
        help="demodulator without the coarse carrier acquisition (LoopConfig(coarse_range=0))",
    )
    args = parser.parse_args()
    if args.no_coarse:
        SETTINGS["loops"] = LoopConfig(coarse_range=0.0)
    if args.throughput_only:
        with tempfile.TemporaryDirectory() as folder:
            speed = run_throughput(args.frames, args.repeat, Path(folder), "not asked for")
        rate = speed.linkstack_rate
        print(
            f"linkstack IqReceiver{' (no coarse acquisition)' if args.no_coarse else ''}:"
            f" {speed.samples:,} samples in {speed.linkstack_s:.2f} s, {rate / 1e6:.2f}"
            f" Msamples/s, real-time margin at 256 kbaud sps 4: {rate / 1.024e6:.2f}x"
        )
        return 0
    missing = gnuradio_missing()
    if missing:
        print(f"gr-satellites columns skipped: {missing}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        points = run_points(args.frames, work, missing)
        speed = run_throughput(args.frames, args.repeat, work, missing)
    print(
        f"throughput: linkstack {speed.linkstack_rate / 1e6:.2f} Msamples/s"
        + (
            ""
            if speed.grsat_rate is None
            else f", gr_satellites {speed.grsat_rate / 1e6:.2f} Msamples/s,"
            f" ratio {speed.linkstack_rate / speed.grsat_rate:.2f}"
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_doc(args.out, points, speed, missing, args.frames, args.repeat)
    print(f"wrote {args.out / 'radio.md'} and {args.out / 'radio.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
