"""TokenAssembler: ids placed by index, delivered in order exactly once, gaps reported."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundstation.assembler import (
    GapDetected,
    StreamComplete,
    TokenAssembler,
    TokensReady,
)
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import EndOfStream, FinishReason, TokenChunk, TokenRange

RID = 7


def chunk(first: int, ids: list[int] | tuple[int, ...]) -> TokenChunk:
    return TokenChunk(RID, first, tuple(ids))


def end(count: int, reason: FinishReason = FinishReason.MAX_TOKENS) -> EndOfStream:
    return EndOfStream(
        request_id=RID,
        finish_reason=reason,
        token_count=count,
        time_to_first_token_us=1000,
        generation_time_ms=20,
        tokens_per_s_milli=5000,
    )


def stream(n: int) -> list[int]:
    """Ids that differ from their index, so that a misplaced id shows."""
    return [1000 + 3 * i for i in range(n)]


def split(ids: list[int], cuts: list[int]) -> list[TokenChunk]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(ids))), len(ids)]
    return [chunk(a, ids[a:b]) for a, b in itertools.pairwise(bounds)]


def drain(assembler: TokenAssembler) -> list[TokensReady | GapDetected | StreamComplete]:
    events = []
    while (event := assembler.next_event()) is not None:
        events.append(event)
    return events


def delivered(events: list[TokensReady | GapDetected | StreamComplete]) -> list[TokensReady]:
    return [e for e in events if isinstance(e, TokensReady)]


def check_in_order_once(ready: list[TokensReady], expected: list[int]) -> None:
    """Each TokensReady continues exactly where the previous ended, and together they
    are the expected ids: nothing twice, nothing out of order."""
    index = 0
    for event in ready:
        assert event.first_index == index
        assert event.ids  # never an empty delivery
        index += len(event.ids)
    assert [i for e in ready for i in e.ids] == expected


def new(max_tokens: int | None = 64) -> TokenAssembler:
    return TokenAssembler(RID, max_tokens=max_tokens, started_at=10.0)


# -- basic orders ------------------------------------------------------------------------


def test_in_order_delivers_each_chunk_at_once() -> None:
    ids = stream(10)
    a = new()
    for n, c in enumerate(split(ids, [3, 7])):
        a.receive_chunk(c, now=11.0 + n)
        ready = delivered(drain(a))
        assert ready == [TokensReady(c.first_index, c.ids, 11.0 + n)]
    assert not a.complete
    a.receive_end(end(10), now=14.0)
    assert drain(a) == [StreamComplete(10, FinishReason.MAX_TOKENS, 14.0)]
    assert a.complete
    assert a.delivered_ids == tuple(ids)
    assert a.missing_ranges() == ()
    assert a.time_to_first_token_s == pytest.approx(1.0)
    assert a.arrival_times == (11.0,) * 3 + (12.0,) * 4 + (13.0,) * 3
    assert a.completed_at == 14.0
    assert a.stats.chunks == 3
    assert a.stats.ids_delivered == 10
    assert a.stats.out_of_order_chunks == 0
    assert a.stats.duplicate_chunks == 0


def test_reversed_holds_everything_until_index_zero() -> None:
    ids = stream(9)
    chunks = split(ids, [2, 5, 7])
    a = new()
    a.receive_end(end(9, FinishReason.STOP_ID), now=10.5)
    for n, c in enumerate(reversed(chunks[1:])):
        a.receive_chunk(c, now=11.0 + n)
        assert delivered(drain(a)) == []
    assert a.held_count == 7
    assert a.missing_ranges() == (TokenRange(0, 2),)
    a.receive_chunk(chunks[0], now=20.0)
    events = drain(a)
    assert events == [
        TokensReady(0, tuple(ids), 20.0),
        StreamComplete(9, FinishReason.STOP_ID, 20.0),
    ]
    assert a.time_to_first_token_s == pytest.approx(10.0)
    # Arrival times are those of each id's own chunk, not of the delivery.
    assert a.arrival_times == (20.0,) * 2 + (13.0,) * 3 + (12.0,) * 2 + (11.0,) * 2
    assert a.stats.out_of_order_chunks == 3  # every chunk after the first received


def test_gap_then_fill() -> None:
    ids = stream(12)
    a = new()
    a.receive_chunk(chunk(0, ids[:4]), now=1.0)
    a.receive_chunk(chunk(8, ids[8:]), now=2.0)
    events = drain(a)
    assert events == [TokensReady(0, tuple(ids[:4]), 1.0), GapDetected(4, 4, 2.0)]
    assert a.missing_ranges() == (TokenRange(4, 4),)
    a.receive_chunk(chunk(4, ids[4:6]), now=3.0)
    assert delivered(drain(a)) == [TokensReady(4, tuple(ids[4:6]), 3.0)]
    assert a.missing_ranges() == (TokenRange(6, 2),)
    a.receive_chunk(chunk(6, ids[6:8]), now=4.0)
    assert delivered(drain(a)) == [TokensReady(6, tuple(ids[6:]), 4.0)]
    assert a.missing_ranges() == ()
    assert a.stats.out_of_order_chunks == 2


def test_end_of_stream_before_the_last_chunk() -> None:
    ids = stream(6)
    a = new()
    a.receive_chunk(chunk(0, ids[:4]), now=1.0)
    a.receive_end(end(6), now=2.0)
    events = drain(a)
    assert not any(isinstance(e, StreamComplete) for e in events)
    assert not a.complete
    assert a.token_count == 6
    assert a.finish_reason is FinishReason.MAX_TOKENS
    # With the end known, the missing tail is a gap even though nothing came after it.
    assert a.missing_ranges() == (TokenRange(4, 2),)
    a.receive_chunk(chunk(4, ids[4:]), now=3.0)
    assert drain(a) == [
        TokensReady(4, tuple(ids[4:]), 3.0),
        StreamComplete(6, FinishReason.MAX_TOKENS, 3.0),
    ]
    assert a.complete


def test_exact_missing_ranges_with_several_holes() -> None:
    ids = stream(30)
    a = new()
    for first, last in ((2, 4), (7, 7), (10, 19), (25, 26)):
        a.receive_chunk(chunk(first, ids[first : last + 1]), now=1.0)
    assert a.missing_ranges() == (
        TokenRange(0, 2),
        TokenRange(5, 2),
        TokenRange(8, 2),
        TokenRange(20, 5),
    )
    a.receive_end(end(30), now=2.0)
    assert a.missing_ranges()[-1] == TokenRange(27, 3)
    gaps = [e for e in drain(a) if isinstance(e, GapDetected)]
    assert gaps == [
        GapDetected(0, 2, 1.0),
        GapDetected(5, 2, 1.0),
        GapDetected(8, 2, 1.0),
        GapDetected(20, 5, 1.0),
    ]


def test_missing_ranges_split_at_the_u16_range_count() -> None:
    a = TokenAssembler(RID, max_tokens=None, started_at=0.0)
    a.receive_chunk(chunk(70_000, [5]), now=1.0)
    assert a.missing_ranges() == (TokenRange(0, 65_535), TokenRange(65_535, 4_465))


# -- duplicates and overlaps ---------------------------------------------------------------


def test_duplicate_chunks_are_discarded_and_counted() -> None:
    ids = stream(6)
    a = new()
    a.receive_chunk(chunk(0, ids[:3]), now=1.0)
    a.receive_chunk(chunk(0, ids[:3]), now=2.0)  # already delivered
    a.receive_chunk(chunk(4, ids[4:]), now=3.0)
    a.receive_chunk(chunk(4, ids[4:]), now=4.0)  # already held
    ready = delivered(drain(a))
    check_in_order_once(ready, ids[:3])
    assert a.stats.duplicate_chunks == 2
    assert a.stats.duplicate_ids == 5
    assert a.stats.conflicting_ids == 0
    a.receive_chunk(chunk(3, ids[3:4]), now=5.0)
    check_in_order_once(ready + delivered(drain(a)), ids)


def test_overlapping_chunks_deliver_only_the_new_ids() -> None:
    ids = stream(10)
    a = new()
    a.receive_chunk(chunk(0, ids[:5]), now=1.0)
    a.receive_chunk(chunk(3, ids[3:8]), now=2.0)  # 3, 4 already delivered
    a.receive_chunk(chunk(6, ids[6:10]), now=3.0)  # 6, 7 already delivered
    ready = delivered(drain(a))
    assert ready == [
        TokensReady(0, tuple(ids[:5]), 1.0),
        TokensReady(5, tuple(ids[5:8]), 2.0),
        TokensReady(8, tuple(ids[8:]), 3.0),
    ]
    assert a.stats.overlapping_chunks == 2
    assert a.stats.duplicate_ids == 4


def test_a_conflicting_copy_keeps_the_first() -> None:
    a = new()
    a.receive_chunk(chunk(1, [11, 12]), now=1.0)
    a.receive_chunk(chunk(1, [99, 12]), now=2.0)
    a.receive_chunk(chunk(0, [10]), now=3.0)
    assert a.delivered_ids == (10, 11, 12)
    assert a.stats.conflicting_ids == 1


def test_ids_past_the_end_are_discarded() -> None:
    a = new(max_tokens=4)
    a.receive_chunk(chunk(2, [1, 2, 3, 4]), now=1.0)  # 4, 5 lie past max_tokens
    a.receive_chunk(chunk(4_000_000_000, [9]), now=1.0)  # corrupt index: no memory, no gap
    assert a.stats.ids_past_end == 3
    assert a.held_count == 2
    assert a.missing_ranges() == (TokenRange(0, 2),)
    a.receive_end(end(3), now=2.0)  # index 3 is now past the end as well
    assert a.stats.ids_past_end == 4
    a.receive_chunk(chunk(0, [7, 8]), now=3.0)
    assert a.delivered_ids == (7, 8, 1)
    assert a.complete


def test_second_end_is_counted_not_applied() -> None:
    a = new()
    a.receive_end(end(2), now=1.0)
    a.receive_end(end(2), now=1.5)
    a.receive_end(end(5, FinishReason.STOP_ID), now=2.0)
    assert a.stats.duplicate_ends == 1
    assert a.stats.conflicting_ends == 1
    assert a.token_count == 2


def test_empty_stream_completes_on_its_end() -> None:
    a = new()
    a.receive_end(end(0, FinishReason.CANCELLED), now=1.0)
    assert drain(a) == [StreamComplete(0, FinishReason.CANCELLED, 1.0)]
    assert a.complete
    assert a.time_to_first_token_s is None


def test_next_ids_drains_deliveries_and_keeps_other_events() -> None:
    ids = stream(6)
    a = new()
    a.receive_chunk(chunk(0, ids[:2]), now=1.0)
    a.receive_chunk(chunk(4, ids[4:]), now=1.0)
    assert a.next_ids() == ids[:2]
    assert a.next_ids() == []
    assert drain(a) == [GapDetected(2, 2, 1.0)]


def test_a_chunk_of_another_request_is_caller_misuse() -> None:
    a = new()
    with pytest.raises(LocalProtocolError, match="request 8 given to the assembler of request 7"):
        a.receive_chunk(TokenChunk(8, 0, (1,)), now=1.0)
    with pytest.raises(LocalProtocolError, match="max_tokens -1"):
        TokenAssembler(RID, max_tokens=-1, started_at=0.0)


# -- any order, any split, any repetition ----------------------------------------------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[int], list[TokenChunk], bool]:
    n = draw(st.integers(0, 40))
    ids = stream(n)
    chunks = split(ids, draw(st.lists(st.integers(1, max(1, n - 1)), max_size=12)))
    # Resends cut differently: overlapping chunks over random spans.
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, max(0, n - 1)), st.integers(1, 8)).map(
                lambda t: chunk(t[0], ids[t[0] : t[0] + t[1]])
            ),
            max_size=5 if n else 0,
        )
    )
    duplicates = draw(st.lists(st.sampled_from(chunks), max_size=4)) if chunks else []
    order = draw(st.permutations([*chunks, *extra, *duplicates]))
    end_first = draw(st.booleans())
    return ids, list(order), end_first


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_any_order_delivers_every_id_once_in_order(
    case: tuple[list[int], list[TokenChunk], bool],
) -> None:
    ids, order, end_first = case
    a = new(max_tokens=64)
    events: list[TokensReady | GapDetected | StreamComplete] = []
    if end_first:
        a.receive_end(end(len(ids)), now=0.0)
    for n, c in enumerate(order):
        a.receive_chunk(c, now=float(n))
        events += drain(a)
        # Missing ranges never cover an id that is held or delivered.
        for r in a.missing_ranges():
            assert r.first_index >= len(a.delivered_ids)
    if not end_first:
        a.receive_end(end(len(ids)), now=99.0)
    events += drain(a)
    check_in_order_once(delivered(events), ids)
    assert a.complete
    assert a.missing_ranges() == ()
    assert [e for e in events if isinstance(e, StreamComplete)] == [
        StreamComplete(len(ids), FinishReason.MAX_TOKENS, events[-1].at)
    ]
    assert a.stats.ids_delivered == len(ids)
    assert a.stats.chunks == len(order)
    assert a.stats.conflicting_ids == 0


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.sets(st.integers(0, n - 1)),
        )
    )
)
def test_missing_ranges_are_exactly_the_indices_not_received(case: tuple[int, set[int]]) -> None:
    n, received = case
    ids = stream(n)
    a = new()
    for index in sorted(received, reverse=True):
        a.receive_chunk(chunk(index, ids[index : index + 1]), now=1.0)
    a.receive_end(end(n), now=2.0)
    covered = {i for r in a.missing_ranges() for i in range(r.first_index, r.first_index + r.count)}
    assert covered == set(range(n)) - received
    # Ranges are maximal: no two touch.
    ranges = a.missing_ranges()
    for left, right in itertools.pairwise(ranges):
        assert left.first_index + left.count < right.first_index
