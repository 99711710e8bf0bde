"""The onboard service: the sans-I/O core on a fake clock, then the asyncio service in memory.

The core tests need no model and no loop: time is a number the test advances.  The
service tests run a GroundEndpoint and an OnboardService over a LoopbackLink with the
``ideal`` profile, with a tiny fake generator, and once with the embedded Qwen-3 to
check that the ids the ground receives are those ``generate`` gives.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from linkstack.aio import LoopbackLink
from linkstack.coding.tc import encode_cltu
from linkstack.endpoints import GroundEndpoint, LinkConfig, MessageReceived, SpacecraftEndpoint
from linkstack.errors import DecodeError, Dropped, InvalidState, Layer, LocalProtocolError
from linkstack.inference.protocol import (
    MAX_DETAIL_OCTETS,
    Apid,
    Cancel,
    EndAck,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Housekeeping,
    Message,
    PromptRequest,
    ResendRequest,
    TokenChunk,
    TokenRange,
    decode_message,
    encode_message,
)
from linkstack.packets.space_packet import PacketSequencer, PacketType
from linkstack.radio.channel import link_profile
from linkstack.tc.frame import (
    BypassFlag,
)
from linkstack.tc.segments import (
    packet_processing,
)
from onboard import core as core_module
from onboard import service as service_module
from onboard.core import (
    MIN_FILL_OCTETS,
    CoreConfig,
    Job,
    OnboardCore,
    params_from_wire,
)
from onboard.generation import (
    GenerationFailure,
    GenerationRequestError,
    GenerationResult,
    GenerationTiming,
    generate,
)
from onboard.service import OnboardService

if TYPE_CHECKING:
    from onboard.model import ModelHandle

_M = TypeVar("_M")

PACKET_HEADER = 6
#: Packet space of one TM frame of the default 1115-octet frame (LinkConfig()).
FRAME_1115_CAPACITY = LinkConfig().tm.data_field_length


def request(rid: int, prompt: Sequence[int] = (1, 2, 3), **params: Any) -> PromptRequest:
    params.setdefault("max_new_tokens", 8)
    return PromptRequest(
        request_id=rid, params=GenerationParams(**params), prompt_ids=tuple(prompt)
    )


def result(
    ids: Sequence[int],
    reason: FinishReason = FinishReason.MAX_TOKENS,
    error: GenerationFailure | None = None,
) -> GenerationResult:
    return GenerationResult(
        prompt_ids=(1,),
        generated_ids=tuple(ids),
        finish_reason=reason,
        params=GenerationParams(max_new_tokens=max(1, len(ids))),
        timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=len(ids)),
        error=error,
    )


def packet_octets(message: Message) -> int:
    return PACKET_HEADER + len(encode_message(message)[1])


def drain(core: OnboardCore, capacity: int, now: float) -> list[Message]:
    """Fill until nothing is left; every fill must respect ``capacity``."""
    out: list[Message] = []
    while batch := core.fill(capacity, now):
        sizes = [packet_octets(m) for m in batch]
        assert sum(sizes) <= capacity or len(batch) == 1
        out += batch
    return out


def of_type(messages: Sequence[Message], kind: type[_M]) -> list[_M]:
    return [m for m in messages if isinstance(m, kind)]


def reports(messages: Sequence[Message]) -> list[tuple[int | None, ErrorReason]]:
    return [(m.request_id, m.reason) for m in of_type(messages, ErrorReport)]


def new_core(now: float = 0.0, **config: Any) -> OnboardCore:
    config.setdefault("housekeeping_interval", 1e6)
    core = OnboardCore(CoreConfig(**config), now=now)
    assert of_type(core.fill(1000, now), Housekeeping)  # the first one goes at start
    return core


def run_job(core: OnboardCore, ids: Sequence[int], now: float = 0.0) -> Job:
    job = core.next_job(now)
    assert job is not None
    for token in ids:
        core.token_generated(job.request_id, token, now)
    core.generation_finished(job.request_id, result(ids), now)
    return job


# -- the core: requests and jobs --------------------------------------------------------------


def test_a_request_becomes_a_job_with_exactly_converted_params() -> None:
    core = new_core()
    wire = GenerationParams(
        max_new_tokens=5, temperature_milli=700, top_p_milli=950, seed=2**64 - 1, stop_ids=(7, 9)
    )
    core.receive_message(PromptRequest(request_id=42, params=wire, prompt_ids=(5, 6)), 0.0)
    assert core.queue_depth == 1
    job = core.next_job(1.0)
    assert job == Job(
        request_id=42,
        prompt_ids=(5, 6),
        params=GenerationParams.from_floats(
            max_new_tokens=5, temperature=0.7, top_p=0.95, seed=2**64 - 1, stop_ids=(7, 9)
        ),
    )
    assert core.running == 42
    assert core.next_job(1.0) is None  # one at a time
    assert core.fill(1000, 1.0) == []


def test_params_from_wire_is_exact_and_refuses_top_k() -> None:
    for milli in (0, 1, 7, 100, 333, 700, 999, 1000, 1234, 65535):
        wire = GenerationParams(max_new_tokens=1, temperature_milli=milli)
        assert params_from_wire(wire).temperature == milli / 1000
        assert params_from_wire(
            GenerationParams.from_floats(max_new_tokens=1, temperature=milli / 1000)
        )
    assert params_from_wire(GenerationParams.from_floats(max_new_tokens=3, top_p=0.9)).top_p == 0.9
    assert params_from_wire(GenerationParams(max_new_tokens=3)).stop_ids == ()
    with pytest.raises(GenerationRequestError, match="top_k 40 is not supported"):
        params_from_wire(GenerationParams(max_new_tokens=3, top_k=40))


def test_the_core_is_sans_io_and_the_service_re_exports_it() -> None:
    tree = ast.parse(Path(core_module.__file__ or "").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots = {name.split(".")[0] for name in imported}
    assert roots.isdisjoint({"asyncio", "concurrent", "socket", "threading", "time"}), roots
    for name in core_module.__all__:
        assert getattr(service_module, name) is getattr(core_module, name)


# -- the core: chunking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capacity", [MIN_FILL_OCTETS, MIN_FILL_OCTETS + 5, 30, 100, FRAME_1115_CAPACITY, 65542]
)
def test_chunks_cover_every_index_once_within_capacity(capacity: int) -> None:
    core = new_core()
    core.receive_message(request(3, max_new_tokens=900), 0.0)
    job = core.next_job(0.0)
    assert job is not None
    expected = [(i * 7919) % 151_936 for i in range(900)]
    messages: list[Message] = []
    fed = 0
    for burst in (1, 2, 3, 50, 1, 400, 0, 443):  # tokens arrive between fills
        for token in expected[fed : fed + burst]:
            core.token_generated(3, token, 1.0)
        fed += burst
        messages += core.fill(capacity, 1.0)
    assert fed == 900
    core.generation_finished(3, result(expected), 2.0)
    messages += drain(core, capacity, 2.0)

    chunks = of_type(messages, TokenChunk)
    assert all(packet_octets(c) <= capacity for c in chunks)
    assert [c.first_index for c in chunks] == [
        sum(len(c.ids) for c in chunks[:i]) for i in range(len(chunks))
    ]
    assert [t for c in chunks for t in c.ids] == expected
    assert isinstance(messages[-1], EndOfStream)
    assert messages[-1].token_count == 900
    assert messages[-1].finish_reason is FinishReason.MAX_TOKENS
    assert len(of_type(messages, EndOfStream)) == 1
    if capacity == MIN_FILL_OCTETS:
        assert all(len(c.ids) == 1 for c in chunks)
    assert core.fill(capacity, 3.0) == []
    assert core.sent_ids(3) == tuple(expected)


def test_ids_given_only_in_the_result_are_sent_too() -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    job = core.next_job(0.0)
    assert job is not None
    core.token_generated(1, 10, 0.0)
    core.generation_finished(1, result([10, 11, 12]), 0.5)
    chunks = of_type(drain(core, 1000, 0.5), TokenChunk)
    assert [t for c in chunks for t in c.ids] == [10, 11, 12]


def test_end_of_stream_carries_the_onboard_timing() -> None:
    core = new_core(now=5.0)
    core.receive_message(request(9), 5.0)
    job = core.next_job(10.0)
    assert job is not None
    core.token_generated(9, 1, 10.5)
    core.token_generated(9, 2, 11.0)
    core.token_generated(9, 3, 11.5)
    core.token_generated(9, 4, 12.0)
    core.generation_finished(9, result([1, 2, 3, 4], FinishReason.STOP_ID), 12.1)
    (end,) = of_type(drain(core, 1000, 13.0), EndOfStream)
    assert end == EndOfStream(
        request_id=9,
        finish_reason=FinishReason.STOP_ID,
        token_count=4,
        time_to_first_token_us=500_000,
        generation_time_ms=2_000,
        tokens_per_s_milli=2_000,
    )


def test_generation_overlaps_the_downlink_of_the_previous_stream() -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    core.receive_message(request(2), 0.0)
    run_job(core, [1, 2, 3])
    # The next job starts before stream 1 went down; stream 2's ids follow its end.
    job = core.next_job(0.0)
    assert job is not None
    core.token_generated(2, 50, 0.0)
    messages = drain(core, 1000, 0.0)
    assert [type(m).__name__ for m in messages] == ["TokenChunk", "EndOfStream", "TokenChunk"]
    assert [(m.request_id) for m in of_type(messages, TokenChunk)] == [1, 2]


# -- the core: cancel --------------------------------------------------------------------------


def test_cancel_of_the_running_request_sets_the_flag_and_ends_cancelled() -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    core.next_job(0.0)
    for token in (4, 5, 6):
        core.token_generated(1, token, 0.1)
    assert not core.cancel_requested(1)
    core.receive_message(Cancel(1), 0.2)
    assert core.cancel_requested(1)
    core.generation_finished(1, result([4, 5, 6], FinishReason.CANCELLED), 0.3)
    messages = drain(core, 1000, 0.3)
    assert [t for c in of_type(messages, TokenChunk) for t in c.ids] == [4, 5, 6]
    (end,) = of_type(messages, EndOfStream)
    assert (end.finish_reason, end.token_count) == (FinishReason.CANCELLED, 3)
    core.receive_message(Cancel(1), 0.4)  # already ended: nothing to say
    assert drain(core, 1000, 0.4) == []


def test_cancel_of_a_queued_request_removes_it_with_an_empty_stream() -> None:
    core = new_core()
    for rid in (1, 2, 3):
        core.receive_message(request(rid), 0.0)
    core.next_job(0.0)
    core.receive_message(Cancel(2), 0.5)
    assert core.queue_depth == 2
    # Its EndOfStream does not wait for the running stream.
    assert of_type(drain(core, 1000, 0.5), EndOfStream) == [
        EndOfStream(
            request_id=2,
            finish_reason=FinishReason.CANCELLED,
            token_count=0,
            time_to_first_token_us=0,
            generation_time_ms=0,
            tokens_per_s_milli=0,
        )
    ]
    core.generation_finished(1, result([]), 1.0)
    job = core.next_job(1.0)
    assert job is not None and job.request_id == 3
    assert core.counters.requests_cancelled == 1


def test_cancel_of_an_unknown_request_is_reported() -> None:
    core = new_core()
    core.receive_message(Cancel(77), 0.0)
    assert reports(drain(core, 1000, 0.0)) == [(77, ErrorReason.UNKNOWN_REQUEST)]


# -- the core: refusals ------------------------------------------------------------------------


def refusal_after(
    core: OnboardCore, message: PromptRequest
) -> list[tuple[int | None, ErrorReason]]:
    core.receive_message(message, 0.0)
    return reports(drain(core, 1000, 0.0))


def test_queue_full_is_refused_and_the_service_goes_on() -> None:
    core = new_core(max_queue=2)
    for rid in (1, 2, 3):  # 1 runs, 2 and 3 wait
        core.receive_message(request(rid), 0.0)
        core.next_job(0.0)
    assert core.queue_depth == 3
    assert refusal_after(core, request(4)) == [(4, ErrorReason.QUEUE_FULL)]
    run_job_finish(core, 1)
    core.next_job(0.0)
    assert refusal_after(core, request(5)) == []
    assert core.counters.requests_refused == 1


def run_job_finish(core: OnboardCore, rid: int) -> None:
    core.generation_finished(rid, result([]), 0.0)


@pytest.mark.parametrize(
    ("config", "message", "reason"),
    [
        ({"max_prompt_ids": 4}, request(1, prompt=range(5)), ErrorReason.PROMPT_TOO_LONG),
        (
            {"context_positions": 10},
            request(1, prompt=range(4), max_new_tokens=7),
            ErrorReason.PROMPT_TOO_LONG,
        ),
        ({"max_new_tokens": 100}, request(1, max_new_tokens=101), ErrorReason.MALFORMED_REQUEST),
        ({"vocab_size": 1000}, request(1, prompt=(1, 1000)), ErrorReason.MALFORMED_REQUEST),
        ({"vocab_size": 1000}, request(1, stop_ids=(5000,)), ErrorReason.MALFORMED_REQUEST),
        ({}, request(1, top_k=50), ErrorReason.MALFORMED_REQUEST),
    ],
)
def test_unacceptable_requests_are_refused_then_the_next_is_served(
    config: dict[str, int], message: PromptRequest, reason: ErrorReason
) -> None:
    core = new_core(**config)
    assert refusal_after(core, message) == [(1, reason)]
    assert core.next_job(0.0) is None
    assert refusal_after(core, request(1, prompt=(1, 2), max_new_tokens=4)) == []
    assert run_job(core, [8, 9]).request_id == 1
    assert of_type(drain(core, 1000, 0.0), EndOfStream)[0].token_count == 2


def test_limits_at_the_bound_are_accepted() -> None:
    core = new_core(max_prompt_ids=4, context_positions=10, max_new_tokens=6, vocab_size=100)
    assert refusal_after(core, request(1, prompt=(0, 1, 2, 99), max_new_tokens=6)) == []


# -- the core: request ids in use (docs/protocol.md §8.1) -----------------------------------


def digest_hex(message: PromptRequest) -> str:
    return hashlib.sha256(message.to_bytes()).digest()[:8].hex()


def hold_id_5(core: OnboardCore, state: str) -> None:
    """Leave request 5 (ids 50..53 when it runs) in ``state`` on board."""
    core.receive_message(request(5, max_new_tokens=4), 0.0)
    if state == "queued":
        return
    assert core.next_job(0.0) is not None
    core.token_generated(5, 50, 0.0)
    core.token_generated(5, 51, 0.0)
    if state == "running":
        return
    core.generation_finished(5, result([50, 51, 52, 53]), 0.0)
    if state == "streaming":
        return
    drain(core, 1000, 0.0)
    if state == "held for resend":
        return
    assert state == "resend waiting"  # the history freed, resent ranges still to go
    core.receive_message(ResendRequest(5, (TokenRange(0, 2),)), 0.0)
    core.receive_message(EndAck(5), 0.0)


ID_STATES = ["queued", "running", "streaming", "held for resend", "resend waiting"]


@pytest.mark.parametrize("state", ID_STATES)
def test_a_reused_id_is_refused_by_name_and_counted_in_every_state(state: str) -> None:
    core = new_core()
    hold_id_5(core, state)
    accepted = core.counters.requests_accepted
    other = request(5, prompt=(9, 9), max_new_tokens=3)
    core.receive_message(other, 0.0)
    messages = drain(core, 1000, 0.0)
    held = "held for resend" if state == "resend waiting" else state
    assert of_type(messages, ErrorReport)[0] == ErrorReport(
        request_id=5,
        reason=ErrorReason.DUPLICATE_REQUEST,
        detail=f"id 5 {held}; refused sha256:{digest_hex(other)}",
    )
    assert len(of_type(messages, ErrorReport)) == 1
    assert core.counters.duplicate_ids_refused == 1
    assert core.counters.requests_refused == 1
    assert core.counters.requests_accepted == accepted
    assert core.counters.duplicate_requests_ignored == 0


def test_the_request_in_use_is_untouched_by_the_refusal_while_queued() -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    assert core.next_job(0.0) is not None  # 1 runs
    core.receive_message(request(5, prompt=(4, 5, 6)), 0.0)
    core.receive_message(request(5, prompt=(7,)), 0.0)
    assert reports(drain(core, 1000, 0.0)) == [(5, ErrorReason.DUPLICATE_REQUEST)]
    assert core.queue_depth == 2
    run_job_finish(core, 1)
    job = core.next_job(0.0)
    assert job is not None
    assert (job.request_id, job.prompt_ids) == (5, (4, 5, 6))


def test_the_request_in_use_is_untouched_by_the_refusal_while_running() -> None:
    core = new_core()
    hold_id_5(core, "running")
    assert drain(core, 1000, 0.0) == [TokenChunk(5, 0, (50, 51))]
    core.receive_message(request(5, prompt=(9,), max_new_tokens=2), 0.0)
    assert core.running == 5
    core.token_generated(5, 52, 0.0)
    core.generation_finished(5, result([50, 51, 52, 53]), 0.0)
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == [(5, ErrorReason.DUPLICATE_REQUEST)]
    # The stream goes on where it was: no restart at index 0, no id of the refused one.
    assert of_type(messages, TokenChunk) == [TokenChunk(5, 2, (52, 53))]
    (end,) = of_type(messages, EndOfStream)
    assert (end.request_id, end.finish_reason, end.token_count) == (5, FinishReason.MAX_TOKENS, 4)
    assert core.counters.requests_completed == 1


def test_the_request_in_use_is_untouched_by_the_refusal_while_held_for_resend() -> None:
    core = new_core()
    hold_id_5(core, "held for resend")
    core.receive_message(request(5, prompt=(9,)), 0.0)
    core.receive_message(ResendRequest(5, (TokenRange(1, 9),)), 0.0)
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == [(5, ErrorReason.DUPLICATE_REQUEST)]
    assert of_type(messages, TokenChunk) == [TokenChunk(5, 1, (51, 52, 53))]
    assert of_type(messages, EndOfStream)[0].token_count == 4
    assert core.sent_ids(5) == (50, 51, 52, 53)


@pytest.mark.parametrize("state", ID_STATES)
def test_an_exact_copy_of_the_request_in_use_is_ignored_and_counted(state: str) -> None:
    core = new_core()
    hold_id_5(core, state)
    depth, accepted = core.queue_depth, core.counters.requests_accepted
    core.receive_message(request(5, max_new_tokens=4), 0.0)
    assert reports(drain(core, 1000, 0.0)) == []
    assert core.counters.duplicate_requests_ignored == 1
    assert core.counters.duplicate_ids_refused == core.counters.requests_refused == 0
    assert (core.queue_depth, core.counters.requests_accepted) == (depth, accepted)


def test_an_id_is_free_again_once_nothing_of_it_is_held() -> None:
    core = new_core(history_requests=1)
    hold_id_5(core, "held for resend")
    core.receive_message(EndAck(5), 0.0)  # the ground holds it all: the record goes
    assert refusal_after(core, request(5, prompt=(8,))) == []
    run_job(core, [80])
    drain(core, 1000, 0.0)
    finished_stream(core, 6, [60])  # evicts 5 from the one-stream history
    assert refusal_after(core, request(5, prompt=(9,))) == []
    without_history = new_core(history_requests=0)
    finished_stream(without_history, 5, [1])
    assert refusal_after(without_history, request(5, prompt=(9,))) == []
    assert core.counters.duplicate_ids_refused == without_history.counters.duplicate_ids_refused
    assert core.counters.duplicate_ids_refused == 0


def test_an_exact_copy_delivered_twice_by_type_bd_frames_runs_once() -> None:
    # FARM-1 accepts every Type-BD frame, so a duplicated one delivers its request twice.
    config = LinkConfig()
    endpoint = SpacecraftEndpoint(config)
    core = new_core()
    message = request(5, max_new_tokens=2)
    for _ in range(2):
        endpoint.receive_bytes(raw_cltu(Apid.REQUEST, message.to_bytes(), config), 0.0)
    while (event := endpoint.next_event()) is not None:
        assert isinstance(event, MessageReceived)
        core.receive_message(event.message, 0.0)
    assert core.counters.duplicate_requests_ignored == 1
    run_job(core, [1, 2])
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == []
    assert len(of_type(messages, EndOfStream)) == 1
    assert core.next_job(0.0) is None


# -- the core: drops and odd messages -------------------------------------------------------


def decode_drop(apid: int, data: bytes) -> Dropped:
    with pytest.raises(DecodeError) as caught:
        decode_message(apid, data)
    return Dropped.from_error(caught.value, octets=len(data), at=0.0)


@pytest.mark.parametrize(
    ("apid", "data", "reason", "key"),
    [
        (0x100, b"\x21", ErrorReason.UNKNOWN_APID, "unknown-apid"),
        (Apid.REQUEST, b"\x41\x00\x01", ErrorReason.UNSUPPORTED_VERSION, "unsupported-version"),
        (Apid.REQUEST, b"\x3f", ErrorReason.UNKNOWN_MESSAGE, "unknown-type"),
        (Apid.REQUEST, b"\x21\x00\x01", ErrorReason.UNKNOWN_MESSAGE, "truncated"),
        (Apid.REQUEST, b"\x22\x00\x01\x00", ErrorReason.UNKNOWN_MESSAGE, "bad-length"),
        (Apid.REQUEST, b"\x28\x00", ErrorReason.UNKNOWN_MESSAGE, "wrong-apid"),
    ],
)
def test_undecodable_user_data_is_answered_with_its_reason(
    apid: int, data: bytes, reason: ErrorReason, key: str
) -> None:
    core = new_core()
    core.receive_drop(decode_drop(apid, data), 0.0)
    (report,) = of_type(drain(core, 1000, 0.0), ErrorReport)
    assert (report.request_id, report.reason) == (None, reason)
    assert report.detail.split(":")[0] == key
    core.receive_message(request(1), 0.0)
    assert run_job(core, [3]).request_id == 1


def test_packet_drops_are_answered_and_lower_layers_are_not() -> None:
    core = new_core()
    core.receive_drop(
        Dropped(layer=Layer.SPACE_PACKET, reason="bad-version", clause="133.0-B-2"), 0.0
    )
    core.receive_drop(Dropped(layer=Layer.TC_FRAME, reason="fecf-mismatch", clause="x"), 0.0)
    (report,) = of_type(drain(core, 1000, 0.0), ErrorReport)
    assert report.reason is ErrorReason.UNKNOWN_MESSAGE
    assert report.detail == "space-packet/bad-version"


def raw_cltu(apid: int, data: bytes, config: LinkConfig) -> bytes:
    """One CLTU carrying a packet with arbitrary user data (what GroundEndpoint.send does)."""
    packet = PacketSequencer(packet_type=PacketType.TC).packet(apid, data).to_bytes()
    (unit,) = packet_processing([packet], config=config.tc, map_id=config.map_id)
    frame = unit.to_frame(config.tc, bypass=BypassFlag.TYPE_B, sequence_number=0)
    return encode_cltu(frame.to_bytes(), randomize=config.tc_randomize)


def test_drops_from_a_real_endpoint_reach_the_core() -> None:
    config = LinkConfig()
    endpoint = SpacecraftEndpoint(config)
    core = new_core()
    endpoint.receive_bytes(raw_cltu(0x123, b"\x21", config), 0.0)
    endpoint.receive_bytes(raw_cltu(Apid.REQUEST, b"\x21\x00\x07", config), 0.0)
    while (event := endpoint.next_event()) is not None:
        assert isinstance(event, Dropped)
        core.receive_drop(event, 0.0)
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == [
        (None, ErrorReason.UNKNOWN_APID),
        (None, ErrorReason.UNKNOWN_MESSAGE),
    ]
    assert of_type(messages, ErrorReport)[1].detail.startswith("truncated")


def test_downlink_messages_on_the_uplink_and_end_ack_frees_the_record() -> None:
    core = new_core(history_requests=2)
    core.receive_message(TokenChunk(1, 0, (1,)), 0.0)
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == [(None, ErrorReason.UNKNOWN_MESSAGE)]
    for rid in (1, 2, 3):
        core.receive_message(request(rid), 0.0)
        run_job(core, [rid, rid])
        drain(core, 1000, 0.0)
    assert core.sent_ids(1) is None  # only the last two are kept
    assert core.sent_ids(2) == (2, 2)
    core.receive_message(EndAck(2), 0.0)
    assert core.sent_ids(2) is None
    assert core.sent_ids(3) == (3, 3)
    assert core.counters.end_acks == 1


# -- resend (docs/protocol.md §10) ----------------------------------------------------------


def finished_stream(core: OnboardCore, rid: int, ids: Sequence[int]) -> EndOfStream:
    core.receive_message(request(rid, max_new_tokens=max(1, len(ids))), 0.0)
    run_job(core, ids)
    ends = of_type(drain(core, 1000, 0.0), EndOfStream)
    assert len(ends) == 1
    return ends[0]


def test_resend_from_history_gives_exactly_the_ranges_then_the_end() -> None:
    core = new_core()
    ids = list(range(100, 120))
    end = finished_stream(core, 4, ids)
    core.receive_message(ResendRequest(4, (TokenRange(2, 3), TokenRange(15, 8))), 1.0)
    assert core.has_output
    messages = drain(core, 1000, 1.0)
    assert messages == [
        TokenChunk(4, 2, (102, 103, 104)),
        TokenChunk(4, 15, (115, 116, 117, 118, 119)),
        end,
    ]
    assert core.counters.resend_requests == 1
    assert core.counters.ids_resent == 8
    assert core.counters.ends_resent == 1


def test_resend_of_an_interior_range_does_not_repeat_the_end() -> None:
    core = new_core()
    finished_stream(core, 4, list(range(10)))
    core.receive_message(ResendRequest(4, (TokenRange(0, 2),)), 1.0)
    assert drain(core, 1000, 1.0) == [TokenChunk(4, 0, (0, 1))]


def test_resent_chunks_are_cut_to_the_frame_and_go_ahead_of_new_ids() -> None:
    core = new_core()
    finished_stream(core, 1, list(range(50)))
    core.receive_message(request(2), 0.0)
    job = core.next_job(0.0)
    assert job is not None
    core.token_generated(2, 7, 0.0)
    core.receive_message(ResendRequest(1, (TokenRange(0, 50),)), 0.0)
    capacity = PACKET_HEADER + 9 + 18  # one TokenChunk of 8 ids per fill
    batches = []
    while batch := core.fill(capacity, 0.0):
        batches.append(batch)
    chunks = [m for batch in batches for m in batch if isinstance(m, TokenChunk)]
    resent = [c for c in chunks if c.request_id == 1]
    assert [i for c in resent for i in c.ids] == list(range(50))
    assert all(len(c.ids) <= 8 for c in chunks)
    assert chunks.index(resent[-1]) < chunks.index(TokenChunk(2, 0, (7,)))


def test_resend_of_a_running_stream_gives_what_went_down() -> None:
    core = new_core()
    core.receive_message(request(3, max_new_tokens=10), 0.0)
    job = core.next_job(0.0)
    assert job is not None
    for token in (5, 6, 7):
        core.token_generated(3, token, 0.0)
    assert drain(core, 1000, 0.0) == [TokenChunk(3, 0, (5, 6, 7))]
    core.token_generated(3, 8, 0.0)
    # Index 3 has not gone down yet: it is not resent (it comes anyway), nor the end.
    core.receive_message(ResendRequest(3, (TokenRange(1, 9),)), 0.0)
    assert drain(core, 1000, 0.0) == [TokenChunk(3, 1, (6, 7)), TokenChunk(3, 3, (8,))]


def test_resend_of_a_queued_request_is_silent() -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    core.receive_message(request(2), 0.0)
    assert core.next_job(0.0) is not None
    core.receive_message(ResendRequest(2, (TokenRange(0, 8),)), 0.0)
    assert drain(core, 1000, 0.0) == []


def test_resend_of_a_stream_not_held_names_the_unavailable_ranges() -> None:
    core = new_core(history_requests=1)
    finished_stream(core, 1, [1, 2])
    finished_stream(core, 2, [3, 4])  # evicts request 1
    core.receive_message(ResendRequest(1, (TokenRange(0, 2), TokenRange(7, 1))), 0.0)
    core.receive_message(EndAck(2), 0.0)
    core.receive_message(ResendRequest(2, (TokenRange(1, 1),)), 0.0)
    messages = drain(core, 1000, 0.0)
    assert messages == [
        ErrorReport(request_id=1, reason=ErrorReason.RESEND_UNAVAILABLE, detail="0+2,7+1"),
        ErrorReport(request_id=2, reason=ErrorReason.RESEND_UNAVAILABLE, detail="1+1"),
    ]
    assert core.counters.resends_unavailable == 2


def test_resend_requests_beyond_the_queue_bound_are_ignored_and_counted() -> None:
    core = new_core(max_pending_resends=3)
    finished_stream(core, 1, list(range(10)))
    for _ in range(5):
        core.receive_message(ResendRequest(1, (TokenRange(0, 1), TokenRange(2, 1))), 0.0)
    assert len(of_type(drain(core, 1000, 0.0), TokenChunk)) == 2
    assert core.counters.resend_requests_ignored == 4


def test_error_reports_are_bounded_and_counted() -> None:
    core = new_core(max_pending_reports=4)
    for _ in range(10):
        core.receive_message(Cancel(9), 0.0)
    assert len(of_type(drain(core, 1000, 0.0), ErrorReport)) == 4
    assert core.counters.reports_suppressed == 6


def test_a_long_report_in_a_tiny_frame_goes_alone() -> None:
    core = new_core()
    core.receive_drop(
        Dropped(layer=Layer.APPLICATION, reason="truncated", clause="x", detail="y" * 200), 0.0
    )
    (report,) = core.fill(MIN_FILL_OCTETS, 0.0)
    assert isinstance(report, ErrorReport)
    assert len(report.detail) == MAX_DETAIL_OCTETS


# -- the core: failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("out-of-memory", ErrorReason.OUT_OF_MEMORY),
        ("runtime-error", ErrorReason.GENERATION_FAILED),
    ],
)
def test_a_failed_run_sends_its_ids_a_report_and_an_error_end(
    kind: str, reason: ErrorReason
) -> None:
    core = new_core()
    core.receive_message(request(1), 0.0)
    core.receive_message(request(2), 0.0)
    core.next_job(0.0)
    core.token_generated(1, 11, 0.0)
    failure = GenerationFailure(kind=kind, message="OutOfMemoryError: CUDA out of\nmemory")
    core.generation_finished(1, result([11], FinishReason.ERROR, failure), 0.1)
    messages = drain(core, 1000, 0.1)
    (report,) = of_type(messages, ErrorReport)
    assert (report.request_id, report.reason) == (1, reason)
    assert report.detail == "OutOfMemoryError: CUDA out of?memory"
    (end,) = of_type(messages, EndOfStream)
    assert (end.finish_reason, end.token_count) == (FinishReason.ERROR, 1)
    assert messages.index(report) < messages.index(end)
    assert run_job(core, [5]).request_id == 2  # the next request is served
    assert core.counters.requests_failed == 1


def test_a_runner_that_raised_ends_the_stream_with_an_error() -> None:
    core = new_core()
    core.receive_message(request(4), 0.0)
    core.next_job(0.0)
    core.generation_failed(4, ErrorReason.INTERNAL, "ValueError: boom", 0.0)
    messages = drain(core, 1000, 0.0)
    assert reports(messages) == [(4, ErrorReason.INTERNAL)]
    assert of_type(messages, EndOfStream)[0].finish_reason is FinishReason.ERROR


def test_misuse_raises_typed_errors_with_the_values() -> None:
    core = new_core()
    with pytest.raises(InvalidState, match="request 3 is not running"):
        core.token_generated(3, 1, 0.0)
    core.receive_message(request(3), 0.0)
    core.next_job(0.0)
    core.token_generated(3, 1, 0.0)
    with pytest.raises(InvalidState, match="disagree"):
        core.generation_finished(3, result([2, 1]), 0.0)
    with pytest.raises(LocalProtocolError, match="capacity 17 octets"):
        core.fill(17, 0.0)
    with pytest.raises(LocalProtocolError, match="max_queue 0 outside"):
        CoreConfig(max_queue=0)
    with pytest.raises(LocalProtocolError, match="housekeeping_interval -1"):
        CoreConfig(housekeeping_interval=-1)
    with pytest.raises(LocalProtocolError, match="device"):
        CoreConfig(device="x" * 49)


# -- the core: housekeeping --------------------------------------------------------------------


def test_housekeeping_on_schedule() -> None:
    core = OnboardCore(CoreConfig(housekeeping_interval=5.0, device="cuda:0 Test GPU"), now=100.0)
    core.set_memory_octets(123_456)
    assert core.get_timer() == 100.0
    (first,) = core.fill(1000, 100.0)
    assert first == Housekeeping(
        queue_depth=0,
        tokens_per_s_milli=0,
        memory_used_octets=123_456,
        uptime_s=0,
        device="cuda:0 Test GPU",
    )
    assert core.get_timer() == 105.0
    core.receive_message(request(1), 101.0)
    core.receive_message(request(2), 101.0)
    core.next_job(101.0)
    for token in range(10):
        core.token_generated(1, token, 102.0)
    assert of_type(core.fill(1000, 104.9), Housekeeping) == []
    (second,) = of_type(core.fill(1000, 105.2), Housekeeping)
    assert (second.queue_depth, second.uptime_s) == (2, 5)
    assert second.tokens_per_s_milli == round(10 / 5.2 * 1000)
    # After a gap, one message, and the schedule keeps its phase.
    assert len(of_type(core.fill(1000, 117.0), Housekeeping)) == 1
    assert core.get_timer() == 120.0
    assert of_type(core.fill(1000, 119.0), Housekeeping) == []
    assert len(of_type(core.fill(1000, 120.0), Housekeeping)) == 1


# -- the service in memory ---------------------------------------------------------------------


def fake_ids(job: Job) -> list[int]:
    return [(job.prompt_ids[0] * 31 + i * 7919 + job.params.seed) % 151_000 for i in range(64)]


@dataclass
class FakeGenerator:
    """A deterministic stand-in for ``generate``; ``hold`` blocks after that many ids."""

    hold: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    fail: Exception | None = None
    failure: GenerationFailure | None = None

    def __call__(
        self, job: Job, on_token: Callable[[int], object], cancel: threading.Event
    ) -> GenerationResult:
        if self.fail is not None:
            raise self.fail
        out: list[int] = []
        reason = FinishReason.MAX_TOKENS
        stop = set(job.params.stop_ids or ())
        for token in fake_ids(job)[: job.params.max_new_tokens]:
            if self.hold is not None and len(out) == self.hold:
                while not (cancel.is_set() or self.release.is_set()):
                    cancel.wait(0.01)
            if cancel.is_set():
                reason = FinishReason.CANCELLED
                break
            out.append(token)
            on_token(token)
            if token in stop:
                reason = FinishReason.STOP_ID
                break
        if self.failure is not None:
            reason = FinishReason.ERROR
        return GenerationResult(
            prompt_ids=job.prompt_ids,
            generated_ids=tuple(out),
            finish_reason=reason,
            params=job.params,
            timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=len(out)),
            error=self.failure,
        )


class Station:
    """The ground over the loopback: collects every message, lets tests wait on them."""

    def __init__(self, config: LinkConfig) -> None:
        self.endpoint = GroundEndpoint(config)
        self.messages: list[Message] = []
        self.link: Any = None
        self._changed = asyncio.Event()

    def receive(self, data: bytes, now: float) -> None:
        self.endpoint.receive_bytes(data, now)
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self.messages.append(event.message)
                self._changed.set()
        self._transmit()  # FOP-1 sends on the CLCW that came down

    def send(self, message: Message) -> None:
        self.endpoint.send(message, asyncio.get_running_loop().time())
        self._transmit()

    def _transmit(self) -> None:
        for cltu in self.endpoint.data_to_send():
            self.link.send(cltu)

    def send_raw(self, apid: int, data: bytes) -> None:
        self.link.send(raw_cltu(apid, data, self.endpoint.config))

    async def wait_for(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def end_of(self, rid: int) -> EndOfStream | None:
        ends = [m for m in of_type(self.messages, EndOfStream) if m.request_id == rid]
        assert len(ends) <= 1
        return ends[0] if ends else None

    async def stream(self, rid: int) -> tuple[list[int], EndOfStream]:
        await self.wait_for(lambda: self.end_of(rid) is not None)
        end = self.end_of(rid)
        assert end is not None
        chunks = [m for m in of_type(self.messages, TokenChunk) if m.request_id == rid]
        ids = [t for c in chunks for t in c.ids]
        assert [c.first_index for c in chunks] == [
            sum(len(c.ids) for c in chunks[:i]) for i in range(len(chunks))
        ]
        assert len(ids) == end.token_count
        return ids, end

    def reports(self) -> list[tuple[int | None, ErrorReason]]:
        return reports(self.messages)


async def start(
    service: OnboardService, seed: int = 1
) -> tuple[Station, LoopbackLink, asyncio.Task[None]]:
    profile = link_profile("ideal")
    station = Station(LinkConfig())
    link = LoopbackLink(
        uplink=profile.uplink,
        downlink=profile.downlink,
        seed=seed,
        to_ground=station.receive,
        to_spacecraft=service.on_receive,
    )
    station.link = link.ground
    service.attach(link.spacecraft)
    return station, link, asyncio.create_task(service.run())


async def stop(service: OnboardService, link: LoopbackLink, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    service.close()
    link.close()


@pytest.fixture
async def fake_service() -> AsyncIterator[tuple[Station, OnboardService, FakeGenerator]]:
    generator = FakeGenerator()
    service = OnboardService(generator, core_config=CoreConfig(vocab_size=151_936))
    station, link, task = await start(service)
    yield station, service, generator
    await stop(service, link, task)


async def test_service_streams_each_request_in_order(
    fake_service: tuple[Station, OnboardService, FakeGenerator],
) -> None:
    station, service, _ = fake_service
    jobs = {
        rid: Job(
            request_id=rid,
            prompt_ids=(rid, 2),
            params=GenerationParams(max_new_tokens=n, seed=rid),
        )
        for rid, n in ((1, 5), (2, 64), (3, 1))
    }
    for rid, job in jobs.items():
        station.send(
            request(rid, prompt=job.prompt_ids, max_new_tokens=job.params.max_new_tokens, seed=rid)
        )
    for rid, job in jobs.items():
        ids, end = await station.stream(rid)
        assert ids == fake_ids(job)[: job.params.max_new_tokens]
        assert end.finish_reason is FinishReason.MAX_TOKENS
    assert station.reports() == []
    assert of_type(station.messages, Housekeeping)[0].device == "cpu"
    assert service.core.counters.requests_completed == 3


async def test_service_answers_a_malformed_packet_and_serves_the_next(
    fake_service: tuple[Station, OnboardService, FakeGenerator],
) -> None:
    station, _, _ = fake_service
    station.send_raw(Apid.REQUEST, b"\x21\x00\x01")
    station.send_raw(0x155, b"\x21")
    await station.wait_for(lambda: len(station.reports()) == 2)
    assert station.reports() == [
        (None, ErrorReason.UNKNOWN_MESSAGE),
        (None, ErrorReason.UNKNOWN_APID),
    ]
    station.send(
        request(
            8,
            stop_ids=(
                fake_ids(
                    Job(request_id=8, prompt_ids=(1,), params=GenerationParams(max_new_tokens=8))
                )[2],
            ),
        )
    )
    ids, end = await station.stream(8)
    assert (len(ids), end.finish_reason) == (3, FinishReason.STOP_ID)


async def test_service_cancels_running_and_queued_requests() -> None:
    generator = FakeGenerator(hold=3)
    service = OnboardService(generator)
    station, link, task = await start(service)
    try:
        station.send(request(1, max_new_tokens=50))
        station.send(request(2))
        await station.wait_for(
            lambda: sum(len(c.ids) for c in of_type(station.messages, TokenChunk)) == 3
        )
        station.send(Cancel(2))
        _, end2 = await station.stream(2)
        assert (end2.finish_reason, end2.token_count) == (FinishReason.CANCELLED, 0)
        assert station.end_of(1) is None
        station.send(Cancel(1))
        ids, end1 = await station.stream(1)
        assert (end1.finish_reason, end1.token_count) == (FinishReason.CANCELLED, 3)
        generator.release.set()
        station.send(request(3, max_new_tokens=4))
        ids, end3 = await station.stream(3)
        assert (len(ids), end3.finish_reason) == (4, FinishReason.MAX_TOKENS)
    finally:
        await stop(service, link, task)


async def test_service_reports_failures_and_goes_on() -> None:
    generator = FakeGenerator(fail=RuntimeError("rad hit"))
    service = OnboardService(generator)
    station, link, task = await start(service)
    try:
        station.send(request(1))
        _, end = await station.stream(1)
        assert end.finish_reason is FinishReason.ERROR
        generator.fail = None
        generator.failure = GenerationFailure(kind="out-of-memory", message="OOM")
        station.send(request(2, max_new_tokens=3))
        ids, end = await station.stream(2)
        assert (len(ids), end.finish_reason) == (3, FinishReason.ERROR)
        generator.failure = None
        station.send(request(3, max_new_tokens=3))
        _, end = await station.stream(3)
        assert end.finish_reason is FinishReason.MAX_TOKENS
        assert station.reports() == [(1, ErrorReason.INTERNAL), (2, ErrorReason.OUT_OF_MEMORY)]
        assert of_type(station.messages, ErrorReport)[0].detail == "RuntimeError: rad hit"
    finally:
        await stop(service, link, task)


async def test_service_refuses_past_its_queue_without_waiting_for_the_ground() -> None:
    generator = FakeGenerator(hold=1)
    service = OnboardService(generator, core_config=CoreConfig(max_queue=1))
    station, link, task = await start(service)
    try:
        for rid in (1, 2, 3):
            station.send(request(rid))
        await station.wait_for(lambda: bool(station.reports()))
        assert station.reports() == [(3, ErrorReason.QUEUE_FULL)]
        generator.release.set()
        for rid in (1, 2):
            ids, _ = await station.stream(rid)
            assert len(ids) == 8
    finally:
        await stop(service, link, task)


async def test_service_misuse() -> None:
    service = OnboardService(FakeGenerator())
    with pytest.raises(InvalidState, match="attach"):
        await service.run()
    _, link, task = await start(service)
    with pytest.raises(InvalidState, match="already attached"):
        service.attach(link.spacecraft)
    await stop(service, link, task)
    with pytest.raises(LocalProtocolError, match="downlink rate 0"):
        OnboardService(FakeGenerator(), downlink_rate_bps=0)


@pytest.mark.parametrize(
    "wire",
    [
        GenerationParams(max_new_tokens=12),
        GenerationParams(max_new_tokens=12, temperature_milli=800, top_p_milli=950, seed=42),
    ],
    ids=["greedy", "sampled"],
)
async def test_service_with_the_embedded_model_sends_what_generate_gives(
    embedded_model: ModelHandle, wire: GenerationParams
) -> None:
    prompt = tuple(embedded_model.tokenizer.encode_prompt("Hello from orbit"))
    wire = replace(wire, stop_ids=embedded_model.stop_ids)
    expected = generate(embedded_model, prompt, wire)
    service = OnboardService.for_model(embedded_model)
    station, link, task = await start(service)
    try:
        station.send(PromptRequest(request_id=300, params=wire, prompt_ids=prompt))
        ids, end = await station.stream(300)
        assert ids == list(expected.generated_ids)
        assert end.finish_reason is (
            FinishReason.STOP_ID if expected.stop_id is not None else FinishReason.MAX_TOKENS
        )
        (housekeeping, *_) = of_type(station.messages, Housekeeping)
        assert housekeeping.device == "cpu"
        assert housekeeping.memory_used_octets > 1_000_000
    finally:
        await stop(service, link, task)
