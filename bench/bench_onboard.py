"""Onboard generation alone: load time, time to first id and decode rate by prompt length.

Run: ``.venv/bin/python bench/bench_onboard.py [--model SPEC] [--device DEV] [--dtype D]``

The figures the onboard handler can reach before any link is attached: the time to
load (or build) the model, then for prompts of several lengths the time to the first
id (prefill plus one step) and the decode rate after it, greedy with no stop ids so
that every run makes exactly ``--new-tokens`` ids. Each point is the median of
``--repeats`` runs after one warm-up run. On CUDA the peak memory is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from linkstack.inference.protocol import GenerationParams
from onboard.generation import generate
from onboard.model import ModelHandle, load_model


def prompt_of(handle: ModelHandle, length: int) -> tuple[int, ...]:
    """``length`` ids from the model's own output vocabulary, repeated in order."""
    pool = handle.output_ids or tuple(range(1000, 2000))
    return tuple(pool[i % len(pool)] for i in range(length))


def measure(handle: ModelHandle, length: int, new_tokens: int, repeats: int) -> None:
    prompt = prompt_of(handle, length)
    wire = GenerationParams.from_floats(max_new_tokens=new_tokens)
    generate(handle, prompt, wire)  # warm-up: kernels, caches, allocator
    if handle.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(handle.device)
    firsts, rates = [], []
    for _ in range(repeats):
        result = generate(handle, prompt, wire)
        firsts.append(result.timing.first_token_s)
        rates.append(result.timing.decode_tokens_per_s)
    peak = ""
    if handle.device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(handle.device) / 2**30:10.2f}"
    print(
        f"  {length:7d} {new_tokens:5d} {statistics.median(firsts) * 1e3:12.1f} "
        f"{statistics.median(rates):12.1f} {peak}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default auto)")
    parser.add_argument("--lengths", default="16,128,1024", help="prompt lengths in ids")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    if handle.device.type == "cuda":
        torch.cuda.synchronize(handle.device)
        print(f"device: {torch.cuda.get_device_name(handle.device)}")
    print(f"model: {handle.description}")
    print(f"load: {time.perf_counter() - start:.2f} s (torch {torch.__version__})")
    print(
        f"  {'prompt':>7} {'new':>5} {'first id ms':>12} {'decode id/s':>12}"
        + (f" {'peak GiB':>10}" if handle.device.type == "cuda" else "")
    )
    for length in (int(x) for x in args.lengths.split(",")):
        measure(handle, length, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
