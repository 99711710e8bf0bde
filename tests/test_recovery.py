"""The ground's recovery policy (docs/protocol.md §10), alone on a fake clock, then
through the whole system: gaps asked for exactly, a missing end polled, retries
backed off and bounded, EndAck once, lost ranges said out loud."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from groundstation.assembler import TokenAssembler, TokensLost, TokensReady
from groundstation.recovery import (
    RecoveryConfig,
    RecoveryFailed,
    RecoveryState,
    StreamRecovery,
)
from groundstation.station import GroundStation, TokensLostError, Update
from linkstack.aio import LoopbackLink
from linkstack.endpoints import LinkConfig, MessageReceived, SpacecraftEndpoint
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import (
    EndAck,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Message,
    PromptRequest,
    ResendRequest,
    TokenChunk,
    TokenRange,
    format_ranges,
    parse_ranges,
)
from linkstack.inference.tokenizer import Tokenizer
from linkstack.radio.channel import link_profile
from linkstack.sim.mission import MissionConfig, simulate
from onboard.service import CoreConfig
from tests.test_fault_matrix import PARAMS, PROMPT, fake_generate

CONFIG = RecoveryConfig(
    gap_delay_s=0.5, poll_interval_s=5.0, retry_interval_s=2.0, max_retry_interval_s=8.0
)


def end(count: int) -> EndOfStream:
    return EndOfStream(
        request_id=1,
        finish_reason=FinishReason.MAX_TOKENS,
        token_count=count,
        time_to_first_token_us=0,
        generation_time_ms=0,
        tokens_per_s_milli=0,
    )


def new(max_tokens: int = 20, config: RecoveryConfig = CONFIG) -> StreamRecovery:
    assembler = TokenAssembler(1, max_tokens=max_tokens, started_at=0.0)
    return StreamRecovery(assembler, config=config, now=0.0)


def feed(recovery: StreamRecovery, message: TokenChunk | EndOfStream, now: float) -> None:
    if isinstance(message, TokenChunk):
        recovery.assembler.receive_chunk(message, now)
    else:
        recovery.assembler.receive_end(message, now)
    recovery.update(now)


def sent(recovery: StreamRecovery, now: float) -> list[Message]:
    recovery.handle_timer(now)
    return recovery.data_to_send()


def chunk(first: int, count: int) -> TokenChunk:
    return TokenChunk(1, first, tuple(range(100 + first, 100 + first + count)))


# -- the policy alone -------------------------------------------------------------------------


def test_a_gap_is_asked_for_exactly_after_the_reorder_allowance() -> None:
    recovery = new()
    feed(recovery, chunk(0, 3), 1.0)
    feed(recovery, chunk(5, 2), 1.1)  # 3 and 4 missing
    feed(recovery, end(7), 1.15)  # the end is known: no tail poll
    assert recovery.get_timer() == pytest.approx(1.6)
    assert sent(recovery, 1.5) == []
    assert sent(recovery, 1.6) == [ResendRequest(1, (TokenRange(3, 2),))]
    # Not again before the retry interval, then again with it doubled.
    assert recovery.get_timer() == pytest.approx(3.6)
    assert sent(recovery, 3.5) == []
    assert sent(recovery, 3.6) == [ResendRequest(1, (TokenRange(3, 2),))]
    assert recovery.get_timer() == pytest.approx(7.6)
    assert recovery.counters.resend_requests == 2
    assert recovery.counters.ids_requested == 4


def test_a_reordered_chunk_within_the_allowance_costs_nothing() -> None:
    recovery = new()
    feed(recovery, chunk(0, 3), 1.0)
    feed(recovery, chunk(5, 2), 1.1)
    feed(recovery, chunk(3, 2), 1.2)
    assert sent(recovery, 1.6) == []
    assert recovery.counters.resend_requests == 0


def test_a_new_gap_does_not_repeat_a_range_just_asked_for() -> None:
    recovery = new()
    feed(recovery, chunk(0, 3), 1.0)
    feed(recovery, chunk(5, 2), 1.1)
    assert sent(recovery, 1.6) == [ResendRequest(1, (TokenRange(3, 2),))]
    feed(recovery, chunk(9, 2), 1.7)  # 7 and 8 missing now
    assert sent(recovery, 2.2) == [ResendRequest(1, (TokenRange(7, 2),))]


def test_a_missing_end_is_polled_for_the_tail_and_the_end_completes_it() -> None:
    recovery = new(max_tokens=20)
    feed(recovery, chunk(0, 4), 1.0)
    assert recovery.get_timer() == pytest.approx(6.0)  # silence for poll_interval_s
    assert sent(recovery, 6.0) == [ResendRequest(1, (TokenRange(4, 16),))]
    assert recovery.counters.tail_requests == 1
    feed(recovery, end(4), 6.1)
    assert recovery.state is RecoveryState.COMPLETE
    assert recovery.data_to_send() == [EndAck(1)]
    assert recovery.get_timer() is None
    feed(recovery, end(4), 6.2)  # a duplicate end: no second EndAck
    assert recovery.data_to_send() == []
    assert recovery.counters.end_acks == 1


def test_lost_frames_bring_the_tail_poll_forward() -> None:
    recovery = new(max_tokens=20)
    feed(recovery, chunk(0, 4), 1.0)
    recovery.frames_lost(1.2)
    assert recovery.get_timer() == pytest.approx(1.7)
    assert sent(recovery, 1.7) == [ResendRequest(1, (TokenRange(4, 16),))]
    feed(recovery, chunk(4, 1), 1.8)  # the stream is alive: back to polling
    assert recovery.get_timer() == pytest.approx(6.8)


def test_all_ids_without_the_end_asks_for_the_last_index() -> None:
    recovery = new(max_tokens=4)
    feed(recovery, chunk(0, 4), 1.0)
    assert sent(recovery, 6.0) == [ResendRequest(1, (TokenRange(3, 1),))]


def test_unavailable_gives_the_gaps_up_and_delivery_goes_on_past_them() -> None:
    recovery = new()
    feed(recovery, chunk(0, 3), 1.0)
    feed(recovery, chunk(5, 2), 1.1)
    feed(recovery, end(7), 1.2)
    while recovery.assembler.next_event() is not None:
        pass
    report = ErrorReport(request_id=1, reason=ErrorReason.RESEND_UNAVAILABLE, detail="3+2")
    recovery.unavailable(report, 2.0)
    assert recovery.next_event() == RecoveryFailed(
        1, (TokenRange(3, 2),), end_known=True, reason="unavailable", at=2.0
    )
    assert recovery.state is RecoveryState.FAILED
    assert recovery.get_timer() is None
    assembler = recovery.assembler
    assert [assembler.next_event(), assembler.next_event()] == [
        TokensLost(3, 2, 2.0),
        TokensReady(5, (105, 106), 2.0),
    ]
    assert assembler.delivered_ids == (100, 101, 102, 105, 106)
    assert assembler.lost_ranges == (TokenRange(3, 2),)
    assert not assembler.complete
    assert recovery.counters.tokens_lost == 2


def test_an_unknown_end_is_given_up_as_an_open_tail() -> None:
    recovery = new(max_tokens=20)
    feed(recovery, chunk(0, 4), 1.0)
    report = ErrorReport(request_id=1, reason=ErrorReason.RESEND_UNAVAILABLE, detail="4+16")
    recovery.unavailable(report, 6.1)
    failed = recovery.next_event()
    assert failed is not None
    assert (failed.lost, failed.end_known) == ((TokenRange(4, 16),), False)


def test_retries_are_bounded_then_the_ranges_are_lost() -> None:
    config = dataclasses.replace(CONFIG, max_attempts=3)
    recovery = new(config=config)
    feed(recovery, chunk(0, 3), 0.0)
    feed(recovery, chunk(5, 2), 0.0)
    feed(recovery, end(7), 0.0)
    times = []
    while (timer := recovery.get_timer()) is not None:
        recovery.handle_timer(timer)
        if recovery.data_to_send():
            times.append(timer)
    assert times == pytest.approx([0.5, 2.5, 6.5])  # 2 s, then 4 s (doubled)
    failed = recovery.next_event()
    assert failed is not None
    assert failed.reason == "no-answer"
    assert failed.at == pytest.approx(14.5)  # 8 s after the third
    assert failed.lost[0] == TokenRange(3, 2)


def test_the_backoff_is_capped() -> None:
    assert [CONFIG.retry_delay(n) for n in range(6)] == [0.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_misuse_raises_typed_errors() -> None:
    with pytest.raises(LocalProtocolError, match="max_attempts 0"):
        RecoveryConfig(max_attempts=0)
    with pytest.raises(LocalProtocolError, match="max_retry_interval_s 1"):
        RecoveryConfig(retry_interval_s=2.0, max_retry_interval_s=1.0)
    recovery = new()
    with pytest.raises(LocalProtocolError, match="QUEUE_FULL is not RESEND_UNAVAILABLE"):
        recovery.unavailable(ErrorReport(request_id=1, reason=ErrorReason.QUEUE_FULL), 0.0)


def test_closed_recovery_sends_nothing() -> None:
    recovery = new()
    feed(recovery, chunk(0, 3), 1.0)
    feed(recovery, chunk(5, 2), 1.1)
    recovery.close()
    assert recovery.get_timer() is None
    assert sent(recovery, 100.0) == []


def test_unavailable_detail_round_trips_and_is_cut_at_whole_ranges() -> None:
    ranges = (TokenRange(12, 5), TokenRange(40, 3))
    assert format_ranges(ranges) == "12+5,40+3"
    assert parse_ranges("12+5,40+3") == ranges
    many = tuple(TokenRange(1000 * i, 999) for i in range(20))
    text = format_ranges(many)
    assert len(text) <= 80 and text.endswith(",...")
    assert parse_ranges(text) == many[: len(parse_ranges(text))]
    with pytest.raises(LocalProtocolError, match="not FIRST\\+COUNT"):
        parse_ranges("12-5")


# -- the whole system on the virtual clock ------------------------------------------------------


def test_an_evicted_stream_is_reported_lost_not_shown_with_a_silent_hole() -> None:
    # No history kept on board, a lossy downlink: the first ResendRequest finds the
    # stream gone and the ground names the tokens it will never have.
    profile = link_profile("s-band")
    config = MissionConfig(
        uplink=dataclasses.replace(profile.uplink, ber=0.0),
        downlink=dataclasses.replace(profile.downlink, ber=0.0, loss_probability=0.1),
        core=CoreConfig(history_requests=0),
        seed=7,
    )
    result = simulate(PROMPT, PARAMS, fake_generate, config)
    assert not result.match
    assert result.error is not None and result.error.startswith("tokens lost (unavailable): ")
    lost = {i for r in result.lost for i in range(r.first_index, r.first_index + r.count)}
    assert result.recovery.tokens_lost == len(lost) > 0
    assert result.onboard.resends_unavailable == 1
    # Everything else arrived, in order, with the holes where they belong.
    expected = tuple(t for i, t in enumerate(result.generated_ids) if i not in lost)
    assert result.received_ids == expected


def test_generation_does_not_wait_for_the_ground() -> None:
    # The downlink is dead for the whole answer: the spacecraft still generates it all
    # at its own pace, and the answer completes after the acquisition of signal.
    profile = link_profile("s-band")
    from linkstack.radio.channel import Outage

    outage = (Outage(0.02, 30.0),)
    config = MissionConfig(
        uplink=dataclasses.replace(profile.uplink, ber=0.0),
        downlink=dataclasses.replace(profile.downlink, ber=0.0, outages=outage),
        seed=7,
    )
    result = simulate(PROMPT, PARAMS, fake_generate, config)
    assert result.match
    assert result.onboard.tokens_generated == 200
    assert result.total_s is not None and 30.0 < result.total_s < 30.0 + 16.0 + 1.0


# -- the asyncio ground station ------------------------------------------------------------------


class LossySpacecraft:
    """Streams ids but drops the chunks of ``skip`` the first time; serves resends."""

    def __init__(self, ids: list[int], skip: set[int], *, evicted: bool = False) -> None:
        self.ids = ids
        self.skip = skip
        self.evicted = evicted
        self.endpoint = SpacecraftEndpoint(LinkConfig())
        self.link: LoopbackLink | None = None
        self.received: list[Message] = []

    def receive(self, data: bytes, now: float) -> None:
        self.endpoint.receive_bytes(data, now)
        out: list[Message] = []
        while (event := self.endpoint.next_event()) is not None:
            if not isinstance(event, MessageReceived):
                continue
            message = event.message
            self.received.append(message)
            if isinstance(message, PromptRequest):
                rid = message.request_id
                out += [
                    TokenChunk(rid, i, (t,)) for i, t in enumerate(self.ids) if i not in self.skip
                ]
                out.append(dataclasses.replace(end(len(self.ids)), request_id=rid))
            elif isinstance(message, ResendRequest) and self.evicted:
                out.append(
                    ErrorReport(
                        request_id=message.request_id,
                        reason=ErrorReason.RESEND_UNAVAILABLE,
                        detail=format_ranges(message.ranges),
                    )
                )
            elif isinstance(message, ResendRequest):
                for r in message.ranges:
                    part = self.ids[r.first_index : r.first_index + r.count]
                    out.append(TokenChunk(message.request_id, r.first_index, tuple(part)))
        assert self.link is not None
        for message in out:
            self.endpoint.send(message)
        while self.endpoint.pending_octets:
            self.link.spacecraft.send(self.endpoint.next_cadu())
        if out or self.endpoint.clcw_changed:
            self.link.spacecraft.send(self.endpoint.next_cadu())
            self.link.spacecraft.send(self.endpoint.next_cadu())


async def ask(
    tokenizer: Tokenizer, spacecraft: LossySpacecraft
) -> tuple[GroundStation, list[Update], object]:
    station = GroundStation(tokenizer, recovery=RecoveryConfig(gap_delay_s=0.05))
    profile = link_profile("ideal")
    link = LoopbackLink(
        uplink=profile.uplink,
        downlink=profile.downlink,
        seed=1,
        to_ground=station.on_receive,
        to_spacecraft=spacecraft.receive,
    )
    spacecraft.link = link
    station.attach(link.ground)
    updates: list[Update] = []
    params = GenerationParams(max_new_tokens=len(spacecraft.ids))
    try:
        answer = await station.ask((1, 2, 3), params, on_update=updates.append, timeout=10)
        await asyncio.sleep(0)  # let the EndAck's CLTU leave
    finally:
        station.close()
        link.close()
    return station, updates, answer


async def test_the_station_asks_for_a_gap_and_acknowledges_the_end(
    qwen3_tokenizer: Tokenizer,
) -> None:
    ids = qwen3_tokenizer.encode("Nothing is lost on the downlink.")
    spacecraft = LossySpacecraft(ids, skip={2, 3})
    station, updates, answer = await ask(qwen3_tokenizer, spacecraft)
    assert answer.complete  # type: ignore[attr-defined]
    assert answer.received_ids == tuple(ids)  # type: ignore[attr-defined]
    assert "".join(u.text for u in updates) == "Nothing is lost on the downlink."
    assert station.recovery_counters.resend_requests == 1
    assert station.recovery_counters.ids_requested == 2
    resends = [m for m in spacecraft.received if isinstance(m, ResendRequest)]
    assert resends == [ResendRequest(0, (TokenRange(2, 2),))]


async def test_the_station_says_which_tokens_were_lost(qwen3_tokenizer: Tokenizer) -> None:
    ids = qwen3_tokenizer.encode("Nothing is lost on the downlink.")
    spacecraft = LossySpacecraft(ids, skip={2}, evicted=True)
    station, updates, answer = await ask(qwen3_tokenizer, spacecraft)
    error = answer.error  # type: ignore[attr-defined]
    assert isinstance(error, TokensLostError)
    assert error.lost == (TokenRange(2, 1),)
    assert error.end_known
    assert answer.lost == (TokenRange(2, 1),)  # type: ignore[attr-defined]
    assert [u.lost for u in updates if u.lost is not None] == [TokenRange(2, 1)]
    assert answer.received_ids == tuple(ids[:2] + ids[3:])  # type: ignore[attr-defined]
    assert station.counters.answers_with_lost_tokens == 1
