"""CLTU encode and decode throughput on one core (CCSDS 231.0-B-4 BCH).

Prints Mbit/s of TC frame data for frames of 1024 and 64 octets: encode, decode of
clean CLTUs, and decode with one corrected bit in every codeblock.  Target: >= 5 Mbit/s.

    cd /work/main && .venv/bin/python -m bench.bench_tc_coding [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu

TARGET_MBITS = 5.0


def measure(work: Callable[[], int], seconds: float) -> float:
    """Run ``work`` (returns frame octets handled) for ``seconds``; best Mbit/s of 3."""
    best = 0.0
    for _ in range(3):
        octets = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while (now := time.perf_counter()) < deadline:
            octets += work()
        best = max(best, octets * 8 / (now - start) / 1e6)
    return best


def one_error_per_codeblock(cltu: bytes, rng: random.Random) -> bytes:
    out = bytearray(cltu)
    for block in range((len(cltu) - 10) // 8):
        bit = rng.randrange(63)
        out[2 + 8 * block + bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=16, help="CLTUs per receive_bytes call")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})

    rng = random.Random(0)
    print(f"{'case':<34} {'Mbit/s':>8}  target {TARGET_MBITS}")
    for size in (1024, 64):
        frames = [rng.randbytes(size) for _ in range(args.batch)]
        clean = b"".join(encode_cltu(f, randomize=True) for f in frames)
        noisy = b"".join(
            one_error_per_codeblock(encode_cltu(f, randomize=True), rng) for f in frames
        )

        def encode(frames: list[bytes] = frames) -> int:
            for frame in frames:
                encode_cltu(frame, randomize=True)
            return len(frames) * len(frames[0])

        def decode(stream: bytes, frames: list[bytes] = frames) -> int:
            decoder = CltuDecoder(DecoderMode.CORRECT, randomize=True)
            decoder.receive_bytes(stream)
            octets = 0
            while (event := decoder.next_event()) is not None:
                if not isinstance(event, CltuDecoded):
                    raise RuntimeError(f"unexpected {event}")
                octets += len(frames[0])
            if octets != len(frames) * len(frames[0]):
                raise RuntimeError("lost CLTUs")
            return octets

        cases = [
            (f"encode, {size}-octet frames", encode),
            (f"decode clean, {size}-octet frames", lambda s=clean: decode(s)),
            (f"decode 1 err/codeblock, {size}-oct", lambda s=noisy: decode(s)),
        ]
        for name, work in cases:
            rate = measure(work, args.seconds)
            flag = "ok" if rate >= TARGET_MBITS else "BELOW TARGET"
            print(f"{name:<34} {rate:8.1f}  {flag}")


if __name__ == "__main__":
    main()
