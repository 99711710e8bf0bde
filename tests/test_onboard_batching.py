"""Continuous batching on board: the engine's ids equal ``generate()``'s, the core's
batch slots and fair downlink, the busy refusal on the wire, the service end to end.

The engine runs the embedded Qwen-3 on the CPU in float32, where the exact batched
step (``exact=True``) gives logits bit-identical to the single run's, so every id of
every request, greedy or sampled, equals ``generate()``'s whatever joins or leaves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from linkstack.errors import InvalidState
from linkstack.inference.protocol import (
    Cancel,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Message,
    PromptRequest,
    TokenChunk,
    decode_message,
    encode_message,
    format_busy_detail,
    parse_busy_detail,
)
from onboard.batching import BatchEngine, BatchingUnsupported, RequestEnded, TokenMade
from onboard.core import CoreConfig, OnboardCore
from onboard.generation import GenerationRequestError, GenerationResult, GenerationTiming, generate
from onboard.service import OnboardService
from tests.test_onboard_service import FakeGenerator, of_type, start, stop
from tests.test_onboard_service import request as wire_request

if TYPE_CHECKING:
    from onboard.model import ModelHandle


def prompt_of(handle: ModelHandle, length: int, offset: int) -> tuple[int, ...]:
    pool = handle.output_ids or tuple(range(1000, 2000))
    return tuple(pool[(offset + 37 * i) % len(pool)] for i in range(length))


def run_engine(
    engine: BatchEngine,
    arrivals: dict[int, list[tuple[int, tuple[int, ...], GenerationParams]]],
    cancels: dict[int, list[int]] | None = None,
) -> tuple[dict[int, list[int]], dict[int, GenerationResult], list[int]]:
    """Step ``engine``; before step ``n`` admit ``arrivals[n]`` and cancel ``cancels[n]``.
    Returns the ids each request made, its result, and the batch size of each step."""
    ids: dict[int, list[int]] = {}
    results: dict[int, GenerationResult] = {}
    sizes: list[int] = []
    step = 0
    while engine.active or any(n >= step for n in arrivals):
        for key, prompt, params in arrivals.get(step, []):
            engine.admit(key, prompt, params)
        for key in (cancels or {}).get(step, []):
            assert engine.cancel(key)
        sizes.append(engine.active)
        for event in engine.step():
            if isinstance(event, TokenMade):
                ids.setdefault(event.key, []).append(event.token_id)
            else:
                assert isinstance(event, RequestEnded)
                results[event.key] = event.result
        step += 1
    return ids, results, sizes


def test_concurrent_requests_joining_at_different_steps_equal_generate(
    embedded_model: ModelHandle,
) -> None:
    h = embedded_model
    sampled = GenerationParams.from_floats
    requests = {
        # key: (step it arrives, prompt length, params)
        1: (0, 3, GenerationParams.from_floats(max_new_tokens=20)),
        2: (0, 17, sampled(max_new_tokens=14, temperature=0.8, top_p=0.95, seed=42)),
        3: (2, 1, sampled(max_new_tokens=9, temperature=1.2, seed=7)),
        4: (5, 40, GenerationParams.from_floats(max_new_tokens=12)),
        5: (5, 8, sampled(max_new_tokens=16, temperature=0.7, top_p=0.5, seed=2**32 - 1)),
        6: (11, 25, sampled(max_new_tokens=6, temperature=1.0, seed=42)),
    }
    arrivals: dict[int, list[tuple[int, tuple[int, ...], GenerationParams]]] = {}
    for key, (at, length, params) in requests.items():
        arrivals.setdefault(at, []).append((key, prompt_of(h, length, key), params))
    engine = BatchEngine(h, max_batch=5)
    ids, results, sizes = run_engine(engine, arrivals)
    for key, (_, length, params) in requests.items():
        expected = generate(h, prompt_of(h, length, key), params)
        assert ids[key] == list(expected.generated_ids), key
        assert results[key].generated_ids == expected.generated_ids
        assert results[key].finish_reason is expected.finish_reason is FinishReason.MAX_TOKENS
    # One forward pass per step for the whole batch: a decode step per step that had a
    # request past its prefill, and one prefill per request.
    assert engine.prefills == len(requests)
    assert engine.decode_steps == len(sizes) - 1
    assert max(sizes) == 5


def test_many_prompts_and_seeds_of_different_lengths_are_bit_exact(
    embedded_model: ModelHandle,
) -> None:
    h = embedded_model
    rnd = random.Random(1)
    work = []
    for key in range(16):
        prompt = prompt_of(h, rnd.choice([1, 2, 5, 13, 40, 77]), rnd.randrange(10_000))
        params = GenerationParams.from_floats(
            max_new_tokens=rnd.randint(1, 16),
            temperature=rnd.choice([0.0, 0.7, 1.3]),
            top_p=rnd.choice([1.0, 0.9, 0.5]),
            seed=rnd.randrange(2**32),
        )
        work.append((key, prompt, params))
    engine = BatchEngine(h, max_batch=6)
    pending = list(work)
    got: dict[int, list[int]] = {}
    while pending or engine.active:
        while pending and engine.free_slots:
            engine.admit(*pending.pop(0))
        for event in engine.step():
            if isinstance(event, TokenMade):
                got.setdefault(event.key, []).append(event.token_id)
    for key, prompt, params in work:
        assert got[key] == list(generate(h, prompt, params).generated_ids), key


def test_a_stop_id_ends_one_request_and_the_others_go_on(embedded_model: ModelHandle) -> None:
    h = embedded_model
    prompts = [prompt_of(h, n, n) for n in (4, 9)]
    free = GenerationParams.from_floats(max_new_tokens=10)
    reference = generate(h, prompts[0], free).generated_ids
    stopping = replace(free, stop_ids=(reference[3],))
    engine = BatchEngine(h, max_batch=2)
    ids, results, _ = run_engine(engine, {0: [(1, prompts[0], stopping), (2, prompts[1], free)]})
    first = reference.index(reference[3]) + 1
    assert ids[1] == list(reference[:first])
    assert results[1].finish_reason is FinishReason.STOP_ID
    assert ids[2] == list(generate(h, prompts[1], free).generated_ids)


def test_a_cancel_mid_batch_frees_its_slot_between_steps(embedded_model: ModelHandle) -> None:
    h = embedded_model
    params = GenerationParams.from_floats(max_new_tokens=12, temperature=0.9, seed=5)
    prompts = {key: prompt_of(h, 3 + 4 * key, key) for key in (1, 2, 3)}
    engine = BatchEngine(h, max_batch=2)
    # 1 and 2 start together; 2 is cancelled before step 4 (it has 4 ids: the prefill's
    # and three steps'), and 3 takes its place at step 5.
    ids, results, sizes = run_engine(
        engine,
        {0: [(1, prompts[1], params), (2, prompts[2], params)], 5: [(3, prompts[3], params)]},
        cancels={4: [2]},
    )
    assert results[2].finish_reason is FinishReason.CANCELLED
    assert ids[2] == list(generate(h, prompts[2], params).generated_ids[:4])
    for key in (1, 3):
        assert ids[key] == list(generate(h, prompts[key], params).generated_ids)
    # max_batch is 2: 3 could join at step 5 only because 2 left at step 4.
    assert sizes[:6] == [2] * 6
    assert results[3].finish_reason is FinishReason.MAX_TOKENS


def test_admission_is_checked(embedded_model: ModelHandle) -> None:
    engine = BatchEngine(embedded_model, max_batch=1)
    params = GenerationParams.from_floats(max_new_tokens=2)
    with pytest.raises(GenerationRequestError, match="no token ids"):
        engine.admit(1, (), params)
    engine.admit(1, (5, 6), params)
    with pytest.raises(InvalidState, match="batch is full"):
        engine.admit(2, (5, 6), params)
    assert not engine.cancel(9)
    with pytest.raises(InvalidState, match="at least 1"):
        BatchEngine(embedded_model, max_batch=0)


def test_a_model_failure_ends_every_running_request_with_its_ids(
    embedded_model: ModelHandle,
) -> None:
    class Failing:
        """The model, failing from its ``fail_at``-th call on."""

        # The signature the engine reads to name the cache argument.
        forward = type(embedded_model.model).forward

        def __init__(self, model: Any, fail_at: int) -> None:
            self.config = model.config
            self._model = model
            self._calls = 0
            self._fail_at = fail_at

        def __call__(self, **kwargs: Any) -> Any:
            self._calls += 1
            if self._calls >= self._fail_at:
                raise RuntimeError("single event upset")
            return self._model(**kwargs)

    h = replace(embedded_model, model=Failing(embedded_model.model, fail_at=5))
    params = GenerationParams.from_floats(max_new_tokens=8)
    prompts = [prompt_of(h, 5, k) for k in (1, 2)]
    engine = BatchEngine(h, max_batch=2)
    # Calls: 2 prefills, then decode steps 3 and 4 succeed, the 5th call fails.
    ids, results, _ = run_engine(engine, {0: [(1, prompts[0], params), (2, prompts[1], params)]})
    for key, prompt in zip((1, 2), prompts, strict=True):
        assert results[key].finish_reason is FinishReason.ERROR
        error = results[key].error
        assert error is not None and error.message == "RuntimeError: single event upset"
        expected = generate(embedded_model, prompt, params).generated_ids[:3]
        assert ids[key] == list(expected) == list(results[key].generated_ids)
    assert engine.active == 0


def test_a_model_without_sdpa_attention_is_refused(embedded_model: ModelHandle) -> None:
    config = SimpleNamespace(_attn_implementation="eager", layer_types=["full_attention"])
    handle = replace(embedded_model, model=SimpleNamespace(config=config))
    with pytest.raises(BatchingUnsupported, match="'eager'"):
        BatchEngine(handle)


# -- the core: batch slots, busy refusal, fair downlink ---------------------------------


def request(rid: int, n: int = 8) -> PromptRequest:
    return PromptRequest(
        request_id=rid, params=GenerationParams(max_new_tokens=n), prompt_ids=(1, 2, 3)
    )


def done(ids: Sequence[int]) -> GenerationResult:
    return GenerationResult(
        prompt_ids=(1,),
        generated_ids=tuple(ids),
        finish_reason=FinishReason.MAX_TOKENS,
        params=GenerationParams(max_new_tokens=max(1, len(ids))),
        timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=len(ids)),
    )


def test_the_core_runs_max_batch_jobs_at_once() -> None:
    core = OnboardCore(CoreConfig(max_batch=3, housekeeping_interval=1e6), now=0.0)
    for rid in range(1, 6):
        core.receive_message(request(rid), 0.0)
    jobs = [core.next_job(0.0) for _ in range(4)]
    assert [j.request_id if j else None for j in jobs] == [1, 2, 3, None]
    assert core.running_ids == (1, 2, 3) and core.running == 1
    assert core.queue_depth == 5
    core.generation_finished(2, done([7, 8]), 1.0)
    job = core.next_job(1.0)
    assert job is not None and job.request_id == 4
    assert core.running_ids == (1, 3, 4)


def test_queue_overflow_is_a_busy_refusal_with_a_retry_after_hint_on_the_wire() -> None:
    core = OnboardCore(
        CoreConfig(max_queue=2, max_batch=2, housekeeping_interval=1e6, busy_retry_after_s=5.0),
        now=0.0,
    )
    core.fill(1000, 0.0)  # the first Housekeeping
    for rid in (1, 2):
        core.receive_message(request(rid), 0.0)
        core.next_job(0.0)
    for rid in (3, 4, 5):
        core.receive_message(request(rid), 0.0)
    (report,) = of_type(core.fill(1000, 0.0), ErrorReport)
    assert (report.request_id, report.reason) == (5, ErrorReason.QUEUE_FULL)
    assert report.detail == "queue 2/2; retry after 5000 ms"
    # On the wire and back, the hint survives; the gateway answers 429 Retry-After: 5.
    apid, data = encode_message(report)
    decoded = decode_message(apid, data)
    assert isinstance(decoded, ErrorReport)
    busy = parse_busy_detail(decoded.detail)
    assert busy is not None
    assert (busy.queued, busy.limit, busy.retry_after_ms, busy.retry_after_s) == (2, 2, 5000, 5)
    # Once runs have finished, the hint is their mean duration over max_batch.
    core.generation_finished(1, done([9] * 8), 30.0)  # 30 s
    core.generation_finished(2, done([9] * 8), 10.0)  # 10 s
    assert core.retry_after_s() == pytest.approx(10.0)  # (30 + 10) / 2 / 2
    core.next_job(30.0)
    core.next_job(30.0)
    for rid in (6, 7, 8):
        core.receive_message(request(rid), 30.0)
    reports = of_type(core.fill(1000, 30.0), ErrorReport)
    assert [(r.request_id, r.detail) for r in reports] == [(8, "queue 2/2; retry after 10000 ms")]


def test_busy_detail_round_trips_and_rejects_other_texts() -> None:
    assert parse_busy_detail(format_busy_detail(8, 8, 1.2344)) == parse_busy_detail(
        "queue 8/8; retry after 1234 ms"
    )
    busy = parse_busy_detail("queue 8/8; retry after 1001 ms")
    assert busy is not None and busy.retry_after_s == 2
    for other in ("8 requests queued", "queue 8/8; retry after 12 s", ""):
        assert parse_busy_detail(other) is None


def chunks_of(messages: Sequence[Message]) -> list[tuple[int, int, int]]:
    return [(m.request_id, m.first_index, len(m.ids)) for m in of_type(messages, TokenChunk)]


def test_the_downlink_goes_round_robin_across_streams_by_bytes() -> None:
    """A long answer does not starve a short one that starts after it."""
    core = OnboardCore(
        CoreConfig(max_batch=2, fair_quantum_octets=60, housekeeping_interval=1e6), now=0.0
    )
    core.fill(1000, 0.0)
    core.receive_message(request(1, n=300), 0.0)
    core.receive_message(request(2, n=30), 0.0)
    core.next_job(0.0)
    core.next_job(0.0)
    for i in range(300):
        core.token_generated(1, i, 0.0)
    for i in range(30):
        core.token_generated(2, 1000 + i, 0.0)
    core.generation_finished(2, done([1000 + i for i in range(30)]), 0.0)
    # A TokenChunk packet of n ids is 6 + 9 + ceil(18 n / 8) octets: a quantum of 60
    # octets holds 20 ids.  Frames of 150 octets: 1 and 2 take a quantum each, 1 starts
    # its next turn in the 30 octets left (6 ids, 29 octets) and goes on with it in the
    # next frame (7 ids, 31 octets: its quantum is spent); 2 sends its last 10 ids and
    # its EndOfStream; 1, alone, fills the rest.  Without the round-robin, 2 would wait
    # for the 300 ids of 1: six frames.
    frames = [core.fill(150, 0.0) for _ in range(4)]
    assert [chunks_of(f) for f in frames] == [
        [(1, 0, 20), (2, 0, 20), (1, 20, 6)],
        [(1, 26, 7), (2, 20, 10), (1, 33, 17)],
        [(1, 50, 60)],
        [(1, 110, 60)],
    ]
    # The short stream's EndOfStream went in the second frame, after its last ids.
    assert [type(m).__name__ for m in frames[1]] == [
        "TokenChunk",
        "TokenChunk",
        "EndOfStream",
        "TokenChunk",
    ]
    assert of_type(frames[1], EndOfStream)[0].request_id == 2


def test_a_single_stream_is_not_cut_into_quanta() -> None:
    core = OnboardCore(
        CoreConfig(max_batch=2, fair_quantum_octets=60, housekeeping_interval=1e6), now=0.0
    )
    core.fill(1000, 0.0)
    core.receive_message(request(1, n=100), 0.0)
    core.next_job(0.0)
    for i in range(100):
        core.token_generated(1, i, 0.0)
    assert chunks_of(core.fill(300, 0.0)) == [(1, 0, 100)]


# -- the service with the embedded model ----------------------------------------------


async def test_the_service_batches_concurrent_requests_and_sends_what_generate_gives(
    embedded_model: ModelHandle,
) -> None:
    h = embedded_model
    wires = {
        10: GenerationParams.from_floats(max_new_tokens=16),
        11: GenerationParams.from_floats(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=3),
        12: GenerationParams.from_floats(max_new_tokens=11, temperature=1.1, seed=99),
        13: GenerationParams.from_floats(max_new_tokens=9),
    }
    prompts = {rid: prompt_of(h, rid - 7, rid) for rid in wires}
    service = OnboardService.for_model(h, max_batch=4)
    station, link, task = await start(service)
    try:
        for rid, wire in wires.items():
            station.send(PromptRequest(request_id=rid, params=wire, prompt_ids=prompts[rid]))
        for rid, wire in wires.items():
            ids, end = await station.stream(rid)
            assert ids == list(generate(h, prompts[rid], wire).generated_ids), rid
            assert end.finish_reason is FinishReason.MAX_TOKENS
        assert of_type(station.messages, ErrorReport) == []
    finally:
        await stop(service, link, task)


async def test_the_service_cancels_a_request_of_the_batch(embedded_model: ModelHandle) -> None:
    h = embedded_model
    long = GenerationParams.from_floats(max_new_tokens=4000, temperature=0.9, seed=11)
    short = GenerationParams.from_floats(max_new_tokens=10)
    service = OnboardService.for_model(h, max_batch=2)
    station, link, task = await start(service)
    try:
        station.send(PromptRequest(request_id=1, params=long, prompt_ids=prompt_of(h, 6, 1)))
        station.send(PromptRequest(request_id=2, params=short, prompt_ids=prompt_of(h, 4, 2)))
        await station.wait_for(
            lambda: any(m.request_id == 1 for m in of_type(station.messages, TokenChunk))
        )
        station.send(Cancel(1))
        ids, end = await station.stream(1)
        assert end.finish_reason is FinishReason.CANCELLED
        assert 0 < len(ids) < 4000
        reference = generate(h, prompt_of(h, 6, 1), replace(long, max_new_tokens=len(ids)))
        assert ids == list(reference.generated_ids)
        ids, end = await station.stream(2)
        assert ids == list(generate(h, prompt_of(h, 4, 2), short).generated_ids)
        # The freed slot serves the next request.
        station.send(PromptRequest(request_id=3, params=short, prompt_ids=prompt_of(h, 4, 2)))
        ids, _ = await station.stream(3)
        assert ids == list(generate(h, prompt_of(h, 4, 2), short).generated_ids)
    finally:
        await stop(service, link, task)


async def test_the_service_refuses_busy_past_its_batch_and_queue() -> None:
    generator = FakeGenerator(hold=1)
    service = OnboardService(generator, core_config=CoreConfig(max_queue=1, max_batch=2))
    station, link, task = await start(service)
    try:
        for rid in (1, 2, 3, 4):
            station.send(wire_request(rid))
        await station.wait_for(lambda: bool(station.reports()))
        assert station.reports() == [(4, ErrorReason.QUEUE_FULL)]
        (busy,) = of_type(station.messages, ErrorReport)
        assert busy.detail == "queue 1/1; retry after 5000 ms"
        generator.release.set()
        for rid in (1, 2, 3):
            ids, _ = await station.stream(rid)
            assert len(ids) == 8
    finally:
        await stop(service, link, task)
