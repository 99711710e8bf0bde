"""Samples per second of linkstack's demodulator (linkstack.radio.modem) on one core.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_modem.py [--samples N] [--sps 4]``.

For BPSK and QPSK at ``--sps`` samples per symbol (default 4): random symbols through
the modulator (SRRC, roll-off 0.35) and the acceptance impairments (Eb/N0 6 dB per
information bit at rate 1/2, a carrier offset of 1 % of the symbol rate, a symbol clock
100 ppm fast, a random phase), then ``Demodulator.process`` timed on ``--samples``
samples (default 4 M), median of 3 runs, whole buffer and in 64 Ki-sample chunks (a
streaming receiver's blocks); the matched filter (numpy) and the loop kernel (numba)
are also timed apart.  The real-time margin is against a 256 kbaud downlink at the
same samples per symbol (256e3 * sps samples/s: 1.024 Msamples/s at sps 4).  The
kernel's compile (cold, in a fresh process with an empty numba cache) and the
modulator's rate are printed too.

Then the same demodulator with and without the coarse carrier acquisition (CPU time,
best of 3), and ``IqReceiver`` (IQ -> frames) on ``--pass-seconds`` of the full-scale
S-band pass (``LeoPass``: 2.2 GHz, 400 km; 256 kbaud, 100 ppm, Eb/N0 6 dB) at its
rising edge (+53 kHz) and around culmination (1.02 kHz/s), CPU and wall time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from bench_viterbi import median_seconds  # the sibling bench's timing helper

from linkstack.coding.tm import TmCodingConfig
from linkstack.radio import modem
from linkstack.radio.channel import LeoPass
from linkstack.radio.modem import (
    MODULATIONS,
    Demodulator,
    Impairments,
    LoopConfig,
    Modulation,
    PassChannel,
    impair,
    modulate,
)
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter

DOWNLINK_BAUD = 256e3
CHUNK = 1 << 16
COMPILE_PROBE = (
    "import time; t = time.perf_counter()\n"
    "from linkstack.radio import modem\n"
    "i = time.perf_counter(); modem.compile_kernels(); c = time.perf_counter()\n"
    "print(f'{c - i:.3f}')\n"
)


def cold_compile_seconds() -> float:
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=os.getcwd())
        done = subprocess.run(
            [sys.executable, "-c", COMPILE_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(done.stdout.split()[-1])


def received(modulation: Modulation, samples: int, sps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits_per_symbol = 2 if modulation == "qpsk" else 1
    bits = rng.integers(0, 2, (samples // sps + 1) * bits_per_symbol, np.uint8)
    tx = modulate(bits, modulation, sps, ramp_symbols=0)
    impairments = Impairments(
        clock_ppm=100.0, offset_hz=0.01, phase=None, ebn0_db=6.0, code_rate=0.5
    )
    rx = impair(tx, impairments, modulation=modulation, sps=sps, sample_rate=float(sps), rng=rng)
    return rx[:samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4_000_000)
    parser.add_argument("--sps", type=int, default=4)
    parser.add_argument("--no-compile", action="store_true", help="skip the cold compile probe")
    parser.add_argument(
        "--pass-seconds", type=float, default=4.0, help="seconds of the S-band pass timed"
    )
    args = parser.parse_args()
    sps = args.sps
    needed = DOWNLINK_BAUD * sps

    print(f"numba: {'yes' if modem.NUMBA_AVAILABLE else 'NO (Python fallback)'}")
    if not args.no_compile:
        print(f"kernel compile, cold (fresh process, empty cache): {cold_compile_seconds():.2f} s")
    start = time.perf_counter()
    modem.compile_kernels()
    print(f"kernel ready in this process after {time.perf_counter() - start:.2f} s")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} on {os.cpu_count()} CPUs (a busy machine reads slower)")
    print(
        f"\n{args.samples / 1e6:.1f} Msamples at {sps} samples/symbol; real time for "
        f"{DOWNLINK_BAUD / 1e3:.0f} kbaud = {needed / 1e6:.3f} Msamples/s"
    )

    for modulation in MODULATIONS:
        rx = received(modulation, args.samples, sps, seed=1)

        def whole(rx: np.ndarray = rx, modulation: Modulation = modulation) -> None:
            Demodulator(modulation, sps).process(rx)

        def chunked(rx: np.ndarray = rx, modulation: Modulation = modulation) -> None:
            demodulator = Demodulator(modulation, sps)
            for start in range(0, rx.size, CHUNK):
                demodulator.process(rx[start : start + CHUNK])

        def matched_filter(rx: np.ndarray = rx, modulation: Modulation = modulation) -> None:
            Demodulator(modulation, sps)._matched_filter(rx)

        whole_s = median_seconds(whole)
        chunked_s = median_seconds(chunked)
        filter_s = median_seconds(matched_filter)
        rate = rx.size / whole_s
        chunk_rate = rx.size / chunked_s
        print(f"\n{modulation.upper()}")
        print(
            f"  whole buffer     {rate / 1e6:7.2f} Msamples/s  ({rate / sps / 1e6:6.2f} Msymbols/s)"
            f"   real-time margin x{rate / needed:.1f}"
        )
        print(
            f"  64 Ki chunks     {chunk_rate / 1e6:7.2f} Msamples/s"
            f"   real-time margin x{chunk_rate / needed:.1f}"
        )
        print(
            f"  of which: matched filter (numpy) {filter_s / whole_s:5.1%}, "
            f"loops (kernel) {1 - filter_s / whole_s:5.1%}"
        )

    bits = np.random.default_rng(2).integers(0, 2, args.samples // sps, np.uint8)
    modulate_s = median_seconds(lambda: modulate(bits, "bpsk", sps))
    print(
        f"\nmodulator (BPSK, numpy polyphase): {bits.size * sps / modulate_s / 1e6:.1f} Msamples/s"
    )

    print("\nwithout the coarse carrier acquisition (LoopConfig(coarse_range=0)), CPU time:")
    for modulation in MODULATIONS:
        rx = received(modulation, args.samples, sps, seed=1)
        for label, loops in (
            ("coarse on ", LoopConfig()),
            ("coarse off", LoopConfig(coarse_range=0)),
        ):
            cpu = min(
                cpu_seconds(
                    lambda m=modulation, c=loops, x=rx: Demodulator(m, sps, loops=c).process(x)
                )
                for _ in range(3)
            )
            print(f"  {modulation.upper()} {label}  {rx.size / cpu / 1e6:7.2f} Msamples/s")
    s_band_pass(sps, args.pass_seconds)


def cpu_seconds(run: Callable[[], object]) -> float:
    """CPU time of this process for one call (less disturbed by a busy machine)."""
    start = time.process_time()
    run()
    return time.process_time() - start


def s_band_pass(sps: int, seconds: float) -> None:
    """IQ -> frames on the full-scale S-band pass (LeoPass: 2.2 GHz, 400 km), at its
    rising edge (+53 kHz, 0.21 of 256 kbaud) and at culmination (1.02 kHz/s): the
    receiver alone is timed, on samples made beforehand."""
    config = TmCodingConfig(interleave=1)
    rate = DOWNLINK_BAUD * sps
    frames = int(seconds * DOWNLINK_BAUD / 8288)
    for start_s in (-300.0, -seconds / 2):
        rng = np.random.default_rng(3)
        payload = [rng.integers(0, 256, 223, np.uint8).tobytes() for _ in range(frames)]
        transmitter = IqTransmitter(config, sps=sps)
        channel = PassChannel(
            Impairments(clock_ppm=100.0, phase=None, ebn0_db=6.0, code_rate=1784 / 4144),
            sample_rate=rate,
            modulation="bpsk",
            sps=sps,
            rng=rng,
            geometry=LeoPass(),
            start_s=start_s,
        )
        samples = np.concatenate(
            (
                channel.process(transmitter.transmit(payload).samples),
                channel.process(transmitter.flush()),
                channel.flush(),
            )
        )
        receiver = IqReceiver(config, sample_rate=rate, sps=sps)
        wall = time.perf_counter()
        cpu = cpu_seconds(lambda r=receiver, x=samples: (r.receive_samples(x), r.flush()))
        wall = time.perf_counter() - wall
        got = 0
        while (event := receiver.next_event()) is not None:
            got += isinstance(event, CaduReceived) and event.frame is not None
        print(
            f"\nS-band pass from {start_s:+.0f} s, BPSK sps {sps}: {samples.size:,} samples,"
            f" {got}/{frames} frames; IqReceiver {samples.size / cpu / 1e6:.2f} Msamples/s"
            f" (CPU), {samples.size / wall / 1e6:.2f} (wall); real-time margin"
            f" x{samples.size / cpu / rate:.1f}"
        )


if __name__ == "__main__":
    main()
