"""Token stream reassembly on the ground: one :class:`TokenAssembler` per request.

TokenChunks carry ``first_index`` (docs/protocol.md §6), so the ground can put ids
back in order whatever the link did to the chunks: lost, duplicated, reordered, or
cut differently when the recovery task resends a range.  The assembler places each
id by its index, hands ids out in index order exactly once (:class:`TokensReady`
events), and keeps what it cannot hand out yet until the gap before it fills.

Sans-I/O: time comes in as ``now``; nothing here sleeps, sends or reads a clock.

Designed for the recovery task (docs/protocol.md §10): :meth:`missing_ranges` gives
the gaps as :class:`~linkstack.inference.protocol.TokenRange` values ready for a
ResendRequest, and a resent chunk may overlap what is held in any way.

Link-side input never raises: a chunk that contradicts what is held, or lies past
the end of the stream, is counted in :class:`AssemblerStats` and discarded.  Only
caller misuse raises (a chunk of another request).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import (
    EndOfStream,
    FinishReason,
    TokenChunk,
    TokenRange,
)

logger = logging.getLogger(__name__)

#: Most indices one TokenRange covers: its count is a u16 (docs/protocol.md §10.1).
_MAX_RANGE_COUNT = 0xFFFF
#: Placeholder of an index given up as lost (ids are 0..2**18-1, never negative).
_LOST = -1


@dataclass(frozen=True, slots=True)
class TokensReady:
    """Ids ``first_index .. first_index + len(ids) - 1``, in order, delivered once."""

    first_index: int
    ids: tuple[int, ...]
    #: ``now`` of the chunk that made them deliverable.
    at: float


@dataclass(frozen=True, slots=True)
class GapDetected:
    """A chunk arrived past indices not yet held: ``count`` ids from ``first_index``.

    Raised once per newly seen hole; the recovery task may start a resend timer on it.
    """

    first_index: int
    count: int
    at: float


@dataclass(frozen=True, slots=True)
class TokensLost:
    """Indices ``first_index .. first_index + count - 1`` will never arrive: delivery
    went on past them (see :meth:`TokenAssembler.mark_lost`)."""

    first_index: int
    count: int
    at: float


@dataclass(frozen=True, slots=True)
class StreamComplete:
    """Every id below ``token_count`` has been delivered and the end is known."""

    token_count: int
    finish_reason: FinishReason
    at: float


AssemblerEvent = TokensReady | GapDetected | TokensLost | StreamComplete


@dataclass(slots=True)
class AssemblerStats:
    """What the assembler saw of one stream."""

    #: TokenChunks received (duplicates included).
    chunks: int = 0
    #: Chunks that brought no new id (every index already held or delivered).
    duplicate_chunks: int = 0
    #: Chunks that brought new ids but also some already held (overlaps).
    overlapping_chunks: int = 0
    #: Ids received again; the first copy is kept.
    duplicate_ids: int = 0
    #: Ids received again with a different value than held; the first copy is kept.
    conflicting_ids: int = 0
    #: Chunks that filled indices below the highest index already received.
    out_of_order_chunks: int = 0
    #: Ids at or past the end of the stream (``token_count`` or ``max_tokens``), discarded.
    ids_past_end: int = 0
    #: Ids delivered in order.
    ids_delivered: int = 0
    #: EndOfStream messages after the first (the first one counts).
    duplicate_ends: int = 0
    #: EndOfStream that contradicted an earlier one or ids already delivered.
    conflicting_ends: int = 0
    #: Indices given up as lost (:meth:`TokenAssembler.mark_lost`).
    ids_lost: int = 0
    #: Ids that arrived after their index had been given up as lost (discarded).
    ids_after_loss: int = 0


class TokenAssembler:
    """Puts one request's TokenChunks back in index order.

    ``max_tokens`` (the request's ``max_new_tokens``) bounds the indices accepted
    before the EndOfStream tells the real count, so that a corrupt ``first_index``
    cannot make the assembler hold or report billions of indices.
    """

    def __init__(self, request_id: int, *, max_tokens: int | None, started_at: float) -> None:
        if max_tokens is not None and max_tokens < 0:
            raise LocalProtocolError(f"max_tokens {max_tokens} is negative")
        self.request_id = request_id
        self.max_tokens = max_tokens
        #: ``now`` when the request went up: the origin of time to first token.
        self.started_at = started_at
        self.stats = AssemblerStats()
        #: The EndOfStream once received.
        self.end: EndOfStream | None = None
        self._end_at: float | None = None
        #: Every index below the delivery frontier: its id, or ``_LOST``.
        self._by_index: list[int] = []
        #: Every id delivered, in index order (lost indices left out).
        self._delivered: list[int] = []
        #: ``now`` at which each delivered id arrived (aligned with ``_delivered``).
        self._arrivals: list[float] = []
        #: Ids received past the delivery frontier: index -> (id or ``_LOST``, time).
        self._held: dict[int, tuple[int, float]] = {}
        #: Index ranges given up, in order.
        self._lost: list[TokenRange] = []
        #: One past the highest index received so far.
        self._high_water = 0
        self._first_delivery_at: float | None = None
        self._complete_at: float | None = None
        self._events: deque[AssemblerEvent] = deque()

    # -- input ----------------------------------------------------------------------

    def receive_chunk(self, chunk: TokenChunk, now: float) -> None:
        """Place the chunk's ids by index; deliverable ones become TokensReady events."""
        self._check_request(chunk.request_id, "TokenChunk")
        stats = self.stats
        stats.chunks += 1
        limit = self._index_limit()
        start = chunk.first_index
        ids = chunk.ids
        if limit is not None and start + len(ids) > limit:
            past = start + len(ids) - max(start, limit)
            stats.ids_past_end += past
            logger.debug(
                "request %d: %d ids at %d..%d lie past the end %d",
                self.request_id,
                past,
                max(start, limit),
                start + len(ids) - 1,
                limit,
            )
            ids = ids[: max(0, limit - start)]
        frontier = len(self._by_index)
        new = 0
        for offset, token_id in enumerate(ids):
            index = start + offset
            held = self._held_id(index, frontier)
            if held is None or (held == _LOST and index >= frontier):
                # New, or it came after all before its loss was delivered: keep it.
                self._held[index] = (token_id, now)
                new += 1
            elif held == _LOST:
                stats.ids_after_loss += 1
            else:
                stats.duplicate_ids += 1
                if held != token_id:
                    stats.conflicting_ids += 1
        if ids and new == 0:
            stats.duplicate_chunks += 1
        elif new and new < len(ids):
            stats.overlapping_chunks += 1
        if new and start < self._high_water:
            stats.out_of_order_chunks += 1
        if ids:
            end = start + len(ids)
            if start > self._high_water:
                self._events.append(GapDetected(self._high_water, start - self._high_water, now))
            self._high_water = max(self._high_water, end)
        self._deliver(now)

    def receive_end(self, end: EndOfStream, now: float) -> None:
        """Record the finish reason and the stream's length; may complete it."""
        self._check_request(end.request_id, "EndOfStream")
        if self.end is not None:
            if end == self.end:
                self.stats.duplicate_ends += 1
            else:
                self.stats.conflicting_ends += 1
                logger.warning(
                    "request %d: second EndOfStream %s contradicts %s; keeping the first",
                    self.request_id,
                    end,
                    self.end,
                )
            return
        if end.token_count < len(self._by_index):
            # The ids are out already; the stream ends where they end.
            self.stats.conflicting_ends += 1
            logger.warning(
                "request %d: EndOfStream counts %d ids but %d were delivered",
                self.request_id,
                end.token_count,
                len(self._by_index),
            )
        self.end = end
        self._end_at = now
        past = [index for index in self._held if index >= end.token_count]
        for index in past:
            del self._held[index]
        self.stats.ids_past_end += len(past)
        self._deliver(now)

    def mark_lost(self, ranges: tuple[TokenRange, ...], now: float) -> None:
        """Give up the indices of ``ranges`` not held: delivery goes on past them.

        For when the spacecraft can no longer resend them (docs/protocol.md §10):
        each run of lost indices becomes a :class:`TokensLost` event in its place in
        the order of delivery, and the stream can no longer be ``complete``.
        Indices already held or delivered, and indices past the end, are left alone.
        """
        frontier = len(self._by_index)
        limit = self._index_limit()
        for token_range in ranges:
            stop = token_range.first_index + token_range.count
            if limit is not None:
                stop = min(stop, limit)
            for index in range(max(frontier, token_range.first_index), stop):
                if index not in self._held:
                    self._held[index] = (_LOST, now)
        self._deliver(now)

    def next_event(self) -> AssemblerEvent | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def next_ids(self) -> list[int]:
        """Ids delivered since the last call, in order (drains TokensReady events only)."""
        out: list[int] = []
        kept: deque[AssemblerEvent] = deque()
        while self._events:
            event = self._events.popleft()
            if isinstance(event, TokensReady):
                out.extend(event.ids)
            else:
                kept.append(event)
        self._events = kept
        return out

    # -- state ----------------------------------------------------------------------

    @property
    def delivered_ids(self) -> tuple[int, ...]:
        """Every id delivered so far, in index order."""
        return tuple(self._delivered)

    @property
    def arrival_times(self) -> tuple[float, ...]:
        """``now`` at which each delivered id's chunk arrived, in index order."""
        return tuple(self._arrivals)

    @property
    def token_count(self) -> int | None:
        """Ids in the whole stream, once the EndOfStream told."""
        return None if self.end is None else self.end.token_count

    @property
    def finish_reason(self) -> FinishReason | None:
        return None if self.end is None else self.end.finish_reason

    @property
    def complete(self) -> bool:
        """The end is known and every index below ``token_count`` has been delivered
        (none of them lost)."""
        return self.end is not None and len(self._delivered) >= self.end.token_count

    @property
    def high_water(self) -> int:
        """One past the highest index received so far (0 before any id)."""
        return self._high_water

    @property
    def frontier(self) -> int:
        """The next index to deliver: every index below it is delivered or lost."""
        return len(self._by_index)

    @property
    def lost_ranges(self) -> tuple[TokenRange, ...]:
        """Index ranges given up as lost, in order."""
        return tuple(self._lost)

    @property
    def completed_at(self) -> float | None:
        return self._complete_at

    @property
    def time_to_first_token_s(self) -> float | None:
        """From ``started_at`` to the delivery of index 0."""
        if self._first_delivery_at is None:
            return None
        return self._first_delivery_at - self.started_at

    @property
    def held_count(self) -> int:
        """Ids received but waiting for a gap before them to fill."""
        return len(self._held)

    def missing_ranges(self) -> tuple[TokenRange, ...]:
        """Indices not yet received, below the end of the stream if known, else below
        the highest index received; in order, each range at most 65535 long.
        """
        limit = self.end.token_count if self.end is not None else self._high_water
        frontier = len(self._by_index)
        ranges: list[TokenRange] = []
        cursor = frontier
        for index in sorted(self._held):
            if index > cursor:
                ranges.extend(_split_range(cursor, index - cursor))
            cursor = index + 1
        if limit > cursor:
            ranges.extend(_split_range(cursor, limit - cursor))
        return tuple(ranges)

    # -- internals ------------------------------------------------------------------

    def _check_request(self, request_id: int, what: str) -> None:
        if request_id != self.request_id:
            raise LocalProtocolError(
                f"{what} of request {request_id} given to the assembler of request "
                f"{self.request_id}"
            )

    def _index_limit(self) -> int | None:
        """One past the last index the stream may hold."""
        if self.end is not None:
            return self.end.token_count
        return self.max_tokens

    def _held_id(self, index: int, frontier: int) -> int | None:
        if index < frontier:
            return self._by_index[index]
        held = self._held.get(index)
        return None if held is None else held[0]

    def _deliver(self, now: float) -> None:
        ready: list[int] = []
        ready_from = len(self._by_index)
        while (entry := self._held.pop(len(self._by_index), None)) is not None:
            token_id, arrived = entry
            if token_id != _LOST:
                if not ready:
                    ready_from = len(self._by_index)
                ready.append(token_id)
                self._arrivals.append(arrived)
                self._by_index.append(token_id)
                continue
            self._flush_ready(ready_from, ready, now)
            ready = []
            lost_from = len(self._by_index)
            self._by_index.append(_LOST)
            while (more := self._held.get(len(self._by_index))) is not None and more[0] == _LOST:
                del self._held[len(self._by_index)]
                self._by_index.append(_LOST)
            count = len(self._by_index) - lost_from
            self.stats.ids_lost += count
            self._lost.append(TokenRange(lost_from, count))
            self._events.append(TokensLost(lost_from, count, now))
        self._flush_ready(ready_from, ready, now)
        if self.complete and self._complete_at is None and self.end is not None:
            self._complete_at = now
            self._events.append(StreamComplete(self.end.token_count, self.end.finish_reason, now))

    def _flush_ready(self, start: int, ready: list[int], now: float) -> None:
        if not ready:
            return
        if self._first_delivery_at is None and start == 0:
            self._first_delivery_at = now
        self._delivered.extend(ready)
        self.stats.ids_delivered += len(ready)
        self._events.append(TokensReady(start, tuple(ready), now))


def _split_range(first_index: int, count: int) -> list[TokenRange]:
    return [
        TokenRange(start, min(_MAX_RANGE_COUNT, first_index + count - start))
        for start in range(first_index, first_index + count, _MAX_RANGE_COUNT)
    ]


__all__ = [
    "AssemblerEvent",
    "AssemblerStats",
    "GapDetected",
    "StreamComplete",
    "TokenAssembler",
    "TokensLost",
    "TokensReady",
]
