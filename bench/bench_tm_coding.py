"""Throughput of the CCSDS R-S batch codec and the CADU synchronizer on one core.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_tm_coding.py``.  Prints codewords/s
and Mbit/s of transfer-frame data for encode, clean decode and decode with 8 and
16 symbol errors in every codeword, for I=1 and I=5, plus the end-to-end
synchronizer (100-CADU chunks) and the pure-Python ``reedsolo`` baseline.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import reedsolo

from linkstack.coding import reed_solomon as rs
from linkstack.coding.tm import CaduSynchronizer, TmCodingConfig, encode_cadus

SECONDS = 1.5  # per measurement


def rate(work: Callable[[], object], units: int) -> float:
    """Units per second of ``work`` (each call handles ``units``), median of 3 runs."""
    work()
    results = []
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS / 3:
            work()
            done += units
        results.append(done / (time.perf_counter() - start))
    return sorted(results)[1]


def corrupt(blocks: np.ndarray, layout: rs.CodeblockLayout, count: int, seed: int) -> np.ndarray:
    """``count`` symbol errors in every codeword of every block."""
    rng = np.random.default_rng(seed)
    depth, width = layout.interleave, layout.frame_length // layout.interleave
    bad = blocks.copy()
    for row in bad:
        for j in range(depth):
            symbols = rng.choice(width + 2 * layout.error_correction, count, replace=False)
            cols = np.where(
                symbols < width,
                symbols * depth + j,
                layout.frame_length + (symbols - width) * depth + j,
            )
            row[cols] ^= rng.integers(1, 256, count, dtype=np.uint8)
    return bad


def line(name: str, codewords_per_s: float, info_octets: int) -> None:
    mbit = codewords_per_s * info_octets * 8 / 1e6
    print(f"  {name:<28} {codewords_per_s:>10,.0f} codewords/s {mbit:>9.1f} Mbit/s")


def bench_codec(depth: int, rng: np.random.Generator) -> None:
    layout = rs.CodeblockLayout(depth, 16, 223 * depth)
    blocks_n = 2000 // depth
    frames = rng.integers(0, 256, (blocks_n, layout.frame_length), dtype=np.uint8)
    blocks = rs.encode_blocks(frames, layout)
    units = blocks_n * depth
    print(f"R-S (255,223) E=16, I={depth}, dual basis, batches of {blocks_n} codeblocks:")
    line("encode", rate(lambda: rs.encode_blocks(frames, layout), units), 223)
    line("decode, clean", rate(lambda: rs.decode_blocks(blocks, layout), units), 223)
    for count in (8, 16):
        bad = corrupt(blocks, layout, count, seed=count)
        result = rs.decode_blocks(bad, layout)
        if not (result.ok.all() and (result.frames == frames).all()):
            raise SystemExit(f"decode with {count} errors failed")
        line(
            f"decode, {count} errors/codeword",
            rate(partial(rs.decode_blocks, bad, layout), units),
            223,
        )


def main() -> None:
    os.sched_setaffinity(0, {0})
    print(f"pinned to CPU {sorted(os.sched_getaffinity(0))}, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    for depth in (1, 5):
        bench_codec(depth, rng)

    config = TmCodingConfig(interleave=5)
    data = rng.integers(0, 256, 100 * config.frame_octets, dtype=np.uint8).tobytes()
    stream = encode_cadus(data, config)
    sync = CaduSynchronizer(config)

    def feed() -> None:
        sync.receive_bytes(stream)
        while sync.next_event() is not None:
            pass

    print("CaduSynchronizer, I=5, chunks of 100 CADUs (derandomize + sync + decode):")
    line("clean stream", rate(feed, 500), 223)
    line("encode_cadus", rate(lambda: encode_cadus(data, config), 500), 223)

    print("reedsolo 1.7.0 (pure Python) baseline, one codeword per call:")
    codec = reedsolo.RSCodec(32, 255, fcr=112, prim=0x187, generator=0xAD, c_exp=8)
    message = bytes(range(223))
    word = bytes(codec.encode(message))
    damaged = bytearray(word)
    for i in range(8):
        damaged[i * 30] ^= 0x5A
    line("encode", rate(lambda: codec.encode(message), 1), 223)
    line("decode, clean", rate(lambda: codec.decode(word), 1), 223)
    line("decode, 8 errors", rate(lambda: codec.decode(bytes(damaged)), 1), 223)


if __name__ == "__main__":
    main()
