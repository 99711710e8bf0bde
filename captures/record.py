"""Regenerate the committed captures: ``.venv/bin/python captures/record.py``.

Each session is ``linkstack demo --json --capture NAME.pcapng`` on the embedded model,
run so that it is the same on every run and every machine:

* the event loop runs on a virtual clock (:class:`groundstation.replay.VirtualClockLoop`),
  starting at 0: the channel's delays, rates and outages and the downlink pacing play
  out in virtual seconds, and nothing waits;
* the onboard generation runs inline on the loop's thread, so it takes no virtual time
  and its ids reach the downlink in the same order every time;
* the onboard timings the EndOfStream reports (measured with ``time.perf_counter`` on
  board) are replaced by fixed ones: 50 ms to the first id, 10 ms per further id.

The demo's ``--json`` output is kept next to each capture as ``NAME.live.json``: the
expected result the golden tests (tests/test_captures_golden.py) compare a replay with.

The sessions of :data:`SDLS_SESSIONS` run with ``--keys`` on the committed test key
file :data:`TEST_KEYS` (a test key, never to protect anything): copied to a fresh
temporary directory with mode 0600 (git keeps no modes), so its counter files start
fresh and the IVs are the same on every run.  Their captures hold ciphertext only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROMPT = "Hi there"
#: The wall-clock start every capture records (2025-12-01T00:00:00Z), so that running
#: this script again gives the same files.
RECORDED_AT_NS = 1_764_547_200_000_000_000
#: The fixed SDLS key file of the protected sessions: a TEST key, committed on purpose.
TEST_KEYS = HERE.parent / "tests" / "data" / "sdls-test-keys.json"

#: name -> demo options (besides --json --capture and the prompt).
SESSIONS: dict[str, list[str]] = {
    "s-band-clean": ["--profile", "s-band", "--ber", "0", "--max-new-tokens", "16"],
    "s-band-ber1e-4-loss": [
        "--profile",
        "s-band",
        "--ber",
        "1e-4",
        "--drop",
        "0.05",
        "--seed",
        "4",
        "--max-new-tokens",
        "24",
        "--timeout",
        "3",
    ],
    "s-band-outage": [
        "--profile",
        "s-band",
        "--outage",
        "0.03:0.02",
        "--max-new-tokens",
        "24",
        "--timeout",
        "3",
    ],
    "s-band-sdls": ["--profile", "s-band", "--ber", "1e-5", "--max-new-tokens", "16"],
}
#: Sessions recorded with ``--keys`` (:data:`TEST_KEYS`): ciphertext only.
SDLS_SESSIONS = frozenset({"s-band-sdls"})


@contextlib.contextmanager
def private_test_keys(directory: Path | None = None) -> Iterator[Path]:
    """:data:`TEST_KEYS` copied into a fresh directory with mode 0600, counters fresh."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / TEST_KEYS.name
        shutil.copyfile(TEST_KEYS, path)
        os.chmod(path, 0o600)
        yield path


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each job at once on the caller's thread (the loop's): no real time passes
    on the virtual clock while the model works."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, as a pool would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def deterministic_demo() -> Iterator[None]:
    """The demo on a virtual clock, generation inline, fixed onboard timings."""
    from groundstation.replay import VirtualClockLoop
    from onboard import generation, service

    real_generator = service.model_generator

    def fixed_timing_generator(handle: Any) -> Any:
        run = real_generator(handle)

        def wrapped(*args: Any) -> Any:
            result = run(*args)
            n = len(result.generated_ids)
            timing = generation.GenerationTiming(
                first_token_s=0.05, decode_s=0.01 * max(n - 1, 0), tokens=n
            )
            return dataclasses.replace(result, timing=timing)

        return wrapped

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return VirtualClockLoop(0.0)

    saved = (asyncio.get_event_loop_policy(), concurrent.futures.ThreadPoolExecutor)
    real_time_ns = time.time_ns
    # The captures' wall-clock reference (their Unix timestamps start there).
    time.time_ns = lambda: RECORDED_AT_NS
    asyncio.set_event_loop_policy(Policy())
    concurrent.futures.ThreadPoolExecutor = _InlineExecutor  # type: ignore[misc,assignment]
    service.model_generator = fixed_timing_generator
    try:
        yield
    finally:
        time.time_ns = real_time_ns
        asyncio.set_event_loop_policy(saved[0])
        concurrent.futures.ThreadPoolExecutor = saved[1]  # type: ignore[misc]
        service.model_generator = real_generator


def record(name: str, options: list[str], directory: Path = HERE) -> dict[str, Any]:
    """Record one session; returns the demo's ``--json`` record (also written)."""
    from linkstack.cli.main import Streams, main

    capture = directory / f"{name}.pcapng"
    stdout, stderr = io.BytesIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if name in SDLS_SESSIONS:
            options = [*options, "--keys", str(stack.enter_context(private_test_keys()))]
        stack.enter_context(deterministic_demo())
        code = main(
            [
                "demo",
                "--json",
                "--capture",
                str(capture),
                "--force",
                "--device",
                "cpu",
                *options,
                PROMPT,
            ],
            Streams(io.BytesIO(), stdout, stderr),
        )
    if code not in (0, 1) or not stdout.getvalue():
        raise SystemExit(f"{name}: linkstack demo exited {code}: {stderr.getvalue()}")
    live: dict[str, Any] = json.loads(stdout.getvalue())
    (directory / f"{name}.live.json").write_text(
        json.dumps(live, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return live


def main(argv: list[str]) -> int:
    names = argv or list(SESSIONS)
    for name in names:
        live = record(name, SESSIONS[name])
        size = (HERE / f"{name}.pcapng").stat().st_size
        print(
            f"{name}: {size} octets, {len(live['received_ids'])} ids, {live['finish_reason']},"
            f" error {live['error']!r}, drops {live['drops']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
