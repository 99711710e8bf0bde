"""Decoded Mbit/s of linkstack's soft Viterbi decoder next to libfec's ``viterbi27``.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_viterbi.py [--cadus N] [--ebn0 DB]``.

Both decoders get the same seeded stream: CADUs of ``--cadu-octets`` (default 259 = ASM +
one R-S codeblock, I = 1) encoded with the CCSDS rate-1/2 code, each followed by six
zero bits so that libfec can decode it as a terminated frame (terminated frames back
to back are also a valid continuous stream for linkstack), BPSK through AWGN at
``--ebn0`` dB.  Each decoder is called once per CADU, from Python:

* linkstack: ``ViterbiDecoder.decode(float32 symbols of one CADU)``, streaming;
* libfec (Debian ``libfec0``, through ctypes): ``init_viterbi27``,
  ``update_viterbi27_blk``, ``chainback_viterbi27`` on offset-binary octets
  (0 = strong 0, 255 = strong 1, 128 = erasure; quantized before timing), the code
  set with ``set_viterbi27_polynomial([79, -109])``.

Prints Mbit/s of decoded CADU bits (median of 3 runs), the ratio, the bit errors of each
against the truth, linkstack's rate for the punctured codes, and the numba kernel's
compile time: cold (empty cache, in a fresh process), from numba's disk cache (fresh
process), and this process's first call.

Last, the whole ``linkstack cadu decode --conv`` pipeline (symbol parsing, the soft
synchronizer's hypothesis search and Viterbi decoding, ASM tracking, derandomizer,
R-S, frames and JSON lines out), run in-process through ``linkstack.cli.main.main`` on
in-memory streams: ``--pipeline-frames`` frames (default 100) at I = 5, rate 1/2, as
float32 soft symbols through AWGN at ``--ebn0`` dB, as packed hard bits and as QPSK
complex64 symbols; Mbit/s of decoded frame data (transfer frame octets, not coded
symbols), median of 3 runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads

import argparse
import ctypes
import ctypes.util
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from linkstack.cli.main import Streams
from linkstack.cli.main import main as linkstack_main
from linkstack.coding import viterbi
from linkstack.coding.convolutional import CODE_RATES, GNURADIO_POLYNOMIALS, encode
from linkstack.coding.soft import add_awgn, cadus_to_bits, ideal_soft, qpsk_map
from linkstack.coding.tm import TmCodingConfig, encode_cadus

RATE_VALUE = {"1/2": 1 / 2, "2/3": 2 / 3, "3/4": 3 / 4, "5/6": 5 / 6, "7/8": 7 / 8}
COMPILE_PROBE = (
    "import time; t = time.perf_counter()\n"
    "from linkstack.coding import viterbi\n"
    "i = time.perf_counter(); viterbi.compile_kernels(); c = time.perf_counter()\n"
    "print(f'{i - t:.3f} {c - i:.3f}')\n"
)


def median_seconds(work: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def compile_times() -> tuple[str, str]:
    """(cold compile, cache load) of the kernel, each in a fresh interpreter."""
    results = []
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=os.getcwd())
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", COMPILE_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            _import, compile_s = done.stdout.split()
            results.append(f"{float(compile_s):.2f} s")
    return results[0], results[1]


def soft_stream(
    bits: np.ndarray, rate: str, ebn0_db: float, rng: np.random.Generator
) -> np.ndarray:
    symbols = encode(bits, rate).astype(np.float32) * 2 - 1  # type: ignore[arg-type]
    sigma = np.sqrt(1.0 / (2.0 * RATE_VALUE[rate] * 10 ** (ebn0_db / 10)))
    noisy: np.ndarray = (symbols + sigma * rng.standard_normal(symbols.size)).astype(np.float32)
    return noisy


class Libfec:
    """libfec's r=1/2 K=7 decoder through ctypes, one terminated frame per call."""

    def __init__(self, frame_bits: int) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("fec") or "libfec.so.0")
        lib.create_viterbi27.restype = ctypes.c_void_p
        lib.create_viterbi27.argtypes = [ctypes.c_int]
        lib.init_viterbi27.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.update_viterbi27_blk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.chainback_viterbi27.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_uint,
        ]
        lib.delete_viterbi27.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.frame_bits = frame_bits
        self.handle = lib.create_viterbi27(frame_bits)
        lib.set_viterbi27_polynomial((ctypes.c_int * 2)(*GNURADIO_POLYNOMIALS))
        self.data = np.zeros(frame_bits // 8, np.uint8)

    def decode_frames(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: (count, 2 * (frame_bits + 6)) offset-binary octets; returns bits."""
        lib, handle, bits = self.lib, self.handle, self.frame_bits
        out = np.empty((frames.shape[0], bits // 8), np.uint8)
        data = self.data.ctypes.data
        for i in range(frames.shape[0]):
            lib.init_viterbi27(handle, 0)
            lib.update_viterbi27_blk(handle, frames[i].ctypes.data, bits + 6)
            lib.chainback_viterbi27(handle, data, bits, 0)
            out[i] = self.data
        return np.unpackbits(out, axis=1)

    def close(self) -> None:
        self.lib.delete_viterbi27(self.handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cadus", type=int, default=400, help="CADUs per run (400)")
    parser.add_argument("--cadu-octets", type=int, default=259, help="CADU length (259)")
    parser.add_argument("--ebn0", type=float, default=4.0, help="Eb/N0 in dB (4.0)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-compile-probe", action="store_true", help="skip compile timing")
    parser.add_argument(
        "--pipeline-frames", type=int, default=100, help="frames for the cadu decode run (100)"
    )
    args = parser.parse_args()

    print(f"numba: {'yes' if viterbi.NUMBA_AVAILABLE else 'NO (numpy fallback)'}")
    if viterbi.NUMBA_AVAILABLE and not args.no_compile_probe:
        cold, cached = compile_times()
        print(f"kernel compile: cold {cold}, from numba's cache {cached} (fresh processes)")
    start = time.perf_counter()
    viterbi.compile_kernels()
    print(f"kernel ready in this process after {time.perf_counter() - start:.2f} s")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} on {os.cpu_count()} CPUs (a busy machine slows both)")

    rng = np.random.default_rng(args.seed)
    frame_bits = 8 * args.cadu_octets
    truth = rng.integers(0, 2, (args.cadus, frame_bits), dtype=np.uint8)
    stream = np.concatenate((truth, np.zeros((args.cadus, 6), np.uint8)), axis=1).reshape(-1)
    soft = soft_stream(stream, "1/2", args.ebn0, rng)
    per_cadu = soft.reshape(args.cadus, -1)
    decoded_bits = args.cadus * frame_bits
    print(
        f"\n{args.cadus} CADUs of {args.cadu_octets} octets, rate 1/2, Eb/N0 {args.ebn0} dB, "
        "one call per CADU:"
    )

    def linkstack_run() -> np.ndarray:
        decoder = viterbi.ViterbiDecoder("1/2")
        pieces = [decoder.decode(chunk) for chunk in per_cadu]
        pieces.append(decoder.flush())
        return np.concatenate(pieces)

    ours = linkstack_run().reshape(args.cadus, -1)[:, :frame_bits]
    ours_s = median_seconds(linkstack_run)
    ours_mbit = decoded_bits / ours_s / 1e6
    ours_errors = int(np.sum(ours != truth))
    print(f"  linkstack ViterbiDecoder   {ours_mbit:7.1f} Mbit/s   {ours_errors} bit errors")

    try:
        libfec = Libfec(frame_bits)
    except (OSError, AttributeError) as exc:
        print(f"  libfec viterbi27           skipped: not installed (Debian libfec0)? {exc}")
    else:
        offset = np.clip(np.rint(128 + 64 * per_cadu), 0, 255).astype(np.uint8)
        theirs = libfec.decode_frames(offset)
        theirs_s = median_seconds(lambda: libfec.decode_frames(offset))
        libfec.close()
        theirs_mbit = decoded_bits / theirs_s / 1e6
        theirs_errors = int(np.sum(theirs != truth))
        print(
            f"  libfec viterbi27 (ctypes)  {theirs_mbit:7.1f} Mbit/s   {theirs_errors} bit errors"
        )
        print(f"  ratio linkstack / libfec   {ours_mbit / theirs_mbit:7.2f}")

    print("\nlinkstack, whole stream in one call, every rate (Eb/N0 where BER ~1e-5..1e-4):")
    ebn0 = {"1/2": 4.0, "2/3": 5.0, "3/4": 5.5, "5/6": 6.0, "7/8": 6.5}
    bits = rng.integers(0, 2, 1_000_000, dtype=np.uint8)
    for rate in CODE_RATES:
        noisy = soft_stream(bits, rate, ebn0[rate], rng)
        out = viterbi.decode(noisy, rate)
        seconds = median_seconds(lambda noisy=noisy, rate=rate: viterbi.decode(noisy, rate))  # type: ignore[misc]
        errors = int(np.sum(out != bits))
        print(
            f"  rate {rate}  traceback {viterbi.DEFAULT_TRACEBACK[rate]:3d}  "
            f"{bits.size / seconds / 1e6:7.1f} Mbit/s   BER {errors / bits.size:.1e} "
            f"at {ebn0[rate]} dB"
        )

    pipeline(args.pipeline_frames, args.ebn0, rng)


def pipeline(count: int, ebn0_db: float, rng: np.random.Generator) -> None:
    """Mbit/s of frame data through ``linkstack cadu decode --conv``, in-process."""
    config = TmCodingConfig(interleave=5)
    data = rng.integers(0, 256, count * config.frame_octets, np.uint8).tobytes()
    bits = cadus_to_bits(encode_cadus(data, config))
    noisy = add_awgn(ideal_soft(bits), ebn0_db=ebn0_db, rate="1/2", rng=rng)
    qpsk = add_awgn(qpsk_map(bits), ebn0_db=ebn0_db, rate="1/2", rng=rng)
    inputs = {
        "soft-f32": noisy.astype("<f4").tobytes(),
        "bytes": np.packbits(bits).tobytes(),
        "iq-symbols-c64": qpsk.astype("<c8").tobytes(),
    }
    print(
        f"\nlinkstack cadu decode --conv --interleave 5, whole pipeline in-process,"
        f" {count} frames of {config.frame_octets} octets (Mbit/s of frame data):"
    )
    for fmt, stream in inputs.items():
        argv = ["cadu", "decode", "--interleave", "5", "--conv", "--input", fmt]
        results: list[tuple[int, bytes]] = []

        def run(
            argv: list[str] = argv,
            stream: bytes = stream,
            results: list[tuple[int, bytes]] = results,
        ) -> None:
            out = io.BytesIO()
            code = linkstack_main(argv, Streams(io.BytesIO(stream), out, io.StringIO()))
            results.append((code, out.getvalue()))

        seconds = median_seconds(run)
        lost = sum(code != 0 or out != data for code, out in results)
        noise = "hard bits, no noise" if fmt == "bytes" else f"AWGN {ebn0_db} dB"
        print(
            f"  --input {fmt:15s} {len(data) * 8 / seconds / 1e6:7.1f} Mbit/s   ({noise};"
            f" {len(stream) / 1e6:.1f} MB in; runs not decoding every frame: {lost})"
        )


if __name__ == "__main__":
    main()
