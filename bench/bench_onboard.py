"""Onboard generation alone: load time, time to first id and decode rate by prompt length.

Run: ``.venv/bin/python bench/bench_onboard.py [--model SPEC] [--device DEV] [--dtype D]``
and ``... --batch N`` for continuous batching.

The figures the onboard handler can reach before any link is attached: the time to
load (or build) the model, then for prompts of several lengths the time to the first
id (prefill plus one step) and the decode rate after it, greedy with no stop ids so
that every run makes exactly ``--new-tokens`` ids. Each point is the median of
``--repeats`` runs after one warm-up run. On CUDA the peak memory is printed too.

``--batch N``: for each prompt length, N requests (seeds 0..N-1, sampled at
temperature 0.8) run one after the other with ``generate()``, then together in a
:class:`~onboard.batching.BatchEngine` (``exact`` and not), all admitted at once;
the aggregate ids/s of each, their ratio, and whether every id equals the single
runs' (the exactness of the batched step on this device and dtype).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from linkstack.inference.protocol import GenerationParams
from onboard.batching import BatchEngine, TokenMade
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


def measure_batch(handle: ModelHandle, length: int, new_tokens: int, batch: int) -> None:
    prompts = [prompt_of(handle, length + i) for i in range(batch)]
    wires = [
        GenerationParams.from_floats(max_new_tokens=new_tokens, temperature=0.8, seed=i)
        for i in range(batch)
    ]
    generate(handle, prompts[0], wires[0])  # warm-up

    def sync() -> None:
        if handle.device.type == "cuda":
            torch.cuda.synchronize(handle.device)

    sync()
    start = time.perf_counter()
    singles = [generate(handle, p, w).generated_ids for p, w in zip(prompts, wires, strict=True)]
    sync()
    sequential = batch * new_tokens / (time.perf_counter() - start)
    line = f"  {length:7d} {new_tokens:5d} {batch:5d} {sequential:12.1f}"
    for exact in (True, False):
        engine = BatchEngine(handle, max_batch=batch, exact=exact)
        for key in range(batch):  # warm-up of the batched shapes
            engine.admit(key, prompts[key], replace_tokens(wires[key], 3))
        while engine.active:
            engine.step()
        for key in range(batch):
            engine.admit(key, prompts[key], wires[key])
        got: dict[int, list[int]] = {key: [] for key in range(batch)}
        sync()
        start = time.perf_counter()
        while engine.active:
            for event in engine.step():
                if isinstance(event, TokenMade):
                    got[event.key].append(event.token_id)
        sync()
        rate = batch * new_tokens / (time.perf_counter() - start)
        same = sum(tuple(got[k]) == singles[k] for k in range(batch))
        line += f" {rate:12.1f} {rate / sequential:6.2f} {same:3d}/{batch}"
    print(line)


def replace_tokens(wire: GenerationParams, tokens: int) -> GenerationParams:
    return dataclasses.replace(wire, max_new_tokens=tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default auto)")
    parser.add_argument("--lengths", default="16,128,1024", help="prompt lengths in ids")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch", type=int, default=0, metavar="N", help="N concurrent requests (see above)"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    if handle.device.type == "cuda":
        torch.cuda.synchronize(handle.device)
        print(f"device: {torch.cuda.get_device_name(handle.device)}")
    print(f"model: {handle.description}")
    print(f"load: {time.perf_counter() - start:.2f} s (torch {torch.__version__})")
    if args.batch:
        print(
            f"  {'prompt':>7} {'new':>5} {'batch':>5} {'seq id/s':>12} {'exact id/s':>12}"
            f" {'ratio':>6} {'same':>5} {'fast id/s':>12} {'ratio':>6} {'same':>5}"
        )
        for length in (int(x) for x in args.lengths.split(",")):
            measure_batch(handle, length, args.new_tokens, args.batch)
        return
    print(
        f"  {'prompt':>7} {'new':>5} {'first id ms':>12} {'decode id/s':>12}"
        + (f" {'peak GiB':>10}" if handle.device.type == "cuda" else "")
    )
    for length in (int(x) for x in args.lengths.split(",")):
        measure(handle, length, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
