"""Token-stream recovery on the ground: when to ask again, for what, and when to stop.

One :class:`StreamRecovery` per request watches that request's
:class:`~groundstation.assembler.TokenAssembler` and decides the recovery traffic of
docs/protocol.md §10, sans-I/O in the aioquic manner: the caller feeds the assembler,
then calls :meth:`~StreamRecovery.update` (and :meth:`~StreamRecovery.frames_lost`,
:meth:`~StreamRecovery.unavailable` as those happen), runs
:meth:`~StreamRecovery.handle_timer` at :meth:`~StreamRecovery.get_timer`, and sends
what :meth:`~StreamRecovery.data_to_send` gives (ResendRequest, EndAck).  Both the
asyncio :class:`~groundstation.station.GroundStation` and the virtual-clock
:class:`~linkstack.sim.mission.Mission` use it, so the policy is tested once.

The policy, on one timer per request:

* **gap by index** (``missing_ranges()`` of the assembler is not empty): ask for
  exactly those ranges ``gap_delay_s`` after the gap was first seen (a reordered
  chunk may still fill it);
* **missing end** (no EndOfStream yet): when the stream has been quiet for
  ``poll_interval_s``, or ``gap_delay_s`` after TM frames were lost (a frame count
  jump) with no stream message since, ask also for the tail
  ``[high water, max_new_tokens)``; the spacecraft answers what it holds there and
  the EndOfStream again if the stream has ended;
* **uplink back-pressure** is the caller's: while COP-1 still holds an earlier
  request unacknowledged, asking again only queues copies behind it, so the station
  and the mission run the timer only when the FOP-1 holds nothing (``uplink_clear``);
* **retries**: an index still missing is asked for again after ``retry_interval_s``,
  doubling with each request for it up to ``max_retry_interval_s`` (the tail's count
  restarts with any stream message), so a long outage costs a request every
  ``max_retry_interval_s`` at most and recovery starts within that time of the
  acquisition of signal; a new gap never repeats a range asked for just before;
* **limit**: once an index (or the tail) has been asked for ``max_attempts`` times
  (about five minutes with the defaults), or at once when the spacecraft answers
  RESEND_UNAVAILABLE (the stream is no longer held), the ranges not received are
  given up: the assembler delivers past them
  (:class:`~groundstation.assembler.TokensLost` in their place) and a
  :class:`RecoveryFailed` event names them;
* **end**: once the stream is complete, one EndAck frees the spacecraft's copy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from groundstation.assembler import TokenAssembler
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import (
    MAX_RESEND_RANGES,
    EndAck,
    ErrorReason,
    ErrorReport,
    Message,
    ResendRequest,
    TokenRange,
)

logger = logging.getLogger(__name__)

#: Largest count of one TokenRange: a u16 (docs/protocol.md §10.1).
_MAX_RANGE_COUNT: Final = 0xFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryConfig:
    """Timers and limits of the recovery policy (seconds of the caller's clock)."""

    #: Wait after a gap is first seen before asking: a reordered chunk may fill it.
    gap_delay_s: float = 0.5
    #: Stream silence (no TokenChunk or EndOfStream) after which the tail is asked for.
    poll_interval_s: float = 5.0
    #: Wait before asking again for ranges still missing; doubles per request.
    retry_interval_s: float = 2.0
    #: Cap of the doubled retry interval.
    max_retry_interval_s: float = 16.0
    #: ResendRequests for one index (or for the tail) before it is given up.
    max_attempts: int = 20
    #: Send an EndAck once the stream is complete (frees the spacecraft's copy).
    end_ack: bool = True

    def __post_init__(self) -> None:
        for name in ("gap_delay_s", "poll_interval_s", "retry_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LocalProtocolError(f"{name} {value} s must be finite and >= 0")
        if not (
            math.isfinite(self.max_retry_interval_s)
            and self.max_retry_interval_s >= self.retry_interval_s
        ):
            raise LocalProtocolError(
                f"max_retry_interval_s {self.max_retry_interval_s} s must be finite and at "
                f"least retry_interval_s {self.retry_interval_s} s"
            )
        if self.poll_interval_s <= 0 or self.retry_interval_s <= 0:
            raise LocalProtocolError(
                f"poll_interval_s {self.poll_interval_s} s and retry_interval_s "
                f"{self.retry_interval_s} s must be positive"
            )
        if self.max_attempts < 1:
            raise LocalProtocolError(f"max_attempts {self.max_attempts} is below 1")

    def retry_delay(self, attempts: int) -> float:
        """Wait after the ``attempts``-th request in a row (1 = the first) before the next."""
        if attempts < 1:
            return 0.0
        return min(self.max_retry_interval_s, self.retry_interval_s * 2.0 ** (attempts - 1))


@dataclass(slots=True)
class RecoveryCounters:
    """Recovery traffic of one or more requests (a station shares one instance)."""

    #: ResendRequests queued for the uplink.
    resend_requests: int = 0
    #: Ranges they carried, and the indices those ranges cover.
    ranges_requested: int = 0
    ids_requested: int = 0
    #: ResendRequests that carried a tail range (the end was not known).
    tail_requests: int = 0
    #: EndAcks queued.
    end_acks: int = 0
    #: RESEND_UNAVAILABLE answers received.
    unavailable_reports: int = 0
    #: Requests whose recovery gave up, and the indices they lost (known ones).
    streams_failed: int = 0
    tokens_lost: int = 0

    def add(self, other: RecoveryCounters) -> None:
        """Add ``other``'s counts to these."""
        for item in dataclasses.fields(self):
            name = item.name
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    """The stream cannot be made whole: ``lost`` will never arrive.

    ``end_known`` False means the EndOfStream never came: the last range of ``lost``
    is the tail up to ``max_new_tokens``, an upper bound of what was lost.
    """

    request_id: int
    lost: tuple[TokenRange, ...]
    end_known: bool
    #: ``"unavailable"`` (the spacecraft no longer holds the stream) or
    #: ``"no-answer"`` (``max_attempts`` requests brought nothing new).
    reason: str
    at: float


class RecoveryState(Enum):
    """Where one request's recovery stands."""

    #: The stream is incomplete and being watched.
    ACTIVE = "active"
    #: The stream is complete (EndAck queued if configured).
    COMPLETE = "complete"
    #: Recovery gave up: :class:`RecoveryFailed` was raised.
    FAILED = "failed"
    #: The caller ended the request (error, timeout): nothing more is sent.
    CLOSED = "closed"


class StreamRecovery:
    """The recovery policy of one request (see the module docstring).

    Timing and limits are kept per missing index, so that asking for a new gap never
    repeats a range whose answer may still be on its way: an index is asked for
    ``gap_delay_s`` after it was first seen missing, then again after the retry
    interval of its own count of requests; the tail (an unknown end) has its own
    time and count, reset by any stream message.  ``get_timer`` is the earliest of
    these, recomputed whenever the input changes.
    """

    def __init__(
        self,
        assembler: TokenAssembler,
        *,
        config: RecoveryConfig,
        now: float,
        counters: RecoveryCounters | None = None,
    ) -> None:
        self.assembler = assembler
        self.request_id = assembler.request_id
        self.config = config
        self.counters = counters if counters is not None else RecoveryCounters()
        self.state = RecoveryState.ACTIVE
        #: Last TokenChunk or EndOfStream of this stream (the request's start at first).
        self._last_activity = now
        #: When TM frames were lost with no stream message since; else None.
        self._suspect_since: float | None = None
        #: Missing index -> when it was first seen missing.
        self._seen: dict[int, float] = {}
        #: Missing index -> (when it was last asked for, how many times).
        self._asked: dict[int, tuple[float, int]] = {}
        #: When the tail was last asked for and how many times (reset by any stream
        #: message).
        self._tail_asked: tuple[float, int] | None = None
        self._timer: float | None = None
        self._outgoing: deque[Message] = deque()
        self._events: deque[RecoveryFailed] = deque()
        self._reschedule()

    # -- input -------------------------------------------------------------------------

    def update(self, now: float) -> None:
        """Look at the assembler again after it took a TokenChunk or EndOfStream."""
        if self.state is not RecoveryState.ACTIVE:
            return
        self._last_activity = now
        self._suspect_since = None
        self._tail_asked = None
        if self.assembler.complete:
            self.state = RecoveryState.COMPLETE
            self._seen.clear()
            self._asked.clear()
            self._timer = None
            if self.config.end_ack:
                self.counters.end_acks += 1
                self._outgoing.append(EndAck(self.request_id))
                logger.debug("> EndAck %d", self.request_id)
            return
        missing = set(self._missing_indices())
        for index in missing:
            self._seen.setdefault(index, now)
        for table in (self._seen, self._asked):
            for index in [i for i in table if i not in missing]:
                del table[index]
        self._reschedule()

    def frames_lost(self, now: float) -> None:
        """TM frames were lost (a frame count jumped): the end may have been in them."""
        if self.state is RecoveryState.ACTIVE and self._suspect_since is None:
            self._suspect_since = now
            self._reschedule()

    def unavailable(self, report: ErrorReport, now: float) -> None:
        """The spacecraft answered RESEND_UNAVAILABLE: what is missing is lost."""
        if report.reason is not ErrorReason.RESEND_UNAVAILABLE:
            raise LocalProtocolError(f"{report.reason.name} is not RESEND_UNAVAILABLE")
        if report.request_id != self.request_id:
            raise LocalProtocolError(
                f"report of request {report.request_id} given to recovery of {self.request_id}"
            )
        self.counters.unavailable_reports += 1
        if self.state is RecoveryState.ACTIVE:
            self._give_up("unavailable", now)

    def close(self) -> None:
        """The request ended otherwise (error, timeout, cancel): stop."""
        if self.state is RecoveryState.ACTIVE:
            self.state = RecoveryState.CLOSED
            self._timer = None

    # -- timer -------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due next, or None."""
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Ask for what is due, or give up, if the timer is due."""
        if self._timer is None or now < self._timer:
            return
        cfg = self.config
        due: list[int] = []
        for index, seen in self._seen.items():
            asked = self._asked.get(index)
            if asked is None:
                if now >= seen + cfg.gap_delay_s:
                    due.append(index)
            elif now >= asked[0] + cfg.retry_delay(asked[1]):
                if asked[1] >= cfg.max_attempts:
                    self._give_up("no-answer", now)
                    return
                due.append(index)
        ranges = _ranges(sorted(due))
        tail = None
        if self._tail_due() <= now:
            tail_count = 0 if self._tail_asked is None else self._tail_asked[1]
            if tail_count >= cfg.max_attempts:
                self._give_up("no-answer", now)
                return
            tail = self._tail()
            if tail is not None:
                self._tail_asked = (now, tail_count + 1)
        ranges = ranges[: MAX_RESEND_RANGES - (tail is not None)]
        if tail is not None:
            ranges.append(tail)
        if not ranges:
            self._reschedule()
            return
        for token_range in ranges:
            for index in range(
                token_range.first_index, token_range.first_index + token_range.count
            ):
                if index in self._seen:
                    count = self._asked[index][1] if index in self._asked else 0
                    self._asked[index] = (now, count + 1)
        counters = self.counters
        counters.resend_requests += 1
        counters.ranges_requested += len(ranges)
        counters.ids_requested += sum(r.count for r in ranges)
        counters.tail_requests += tail is not None
        self._outgoing.append(ResendRequest(self.request_id, tuple(ranges)))
        logger.info(
            "> ResendRequest %d: %s",
            self.request_id,
            ", ".join(f"{r.first_index}+{r.count}" for r in ranges),
        )
        self._reschedule()

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> list[Message]:
        """Messages for the uplink (ResendRequest, EndAck), oldest first."""
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def next_event(self) -> RecoveryFailed | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    # -- internals ---------------------------------------------------------------------

    def _missing_indices(self) -> list[int]:
        return [
            index
            for r in self.assembler.missing_ranges()
            for index in range(r.first_index, r.first_index + r.count)
        ]

    def _reschedule(self) -> None:
        if self.state is not RecoveryState.ACTIVE:
            self._timer = None
            return
        cfg = self.config
        times = [self._tail_due()]
        for index, seen in self._seen.items():
            asked = self._asked.get(index)
            times.append(
                seen + cfg.gap_delay_s if asked is None else asked[0] + cfg.retry_delay(asked[1])
            )
        timer = min(times)
        self._timer = None if math.isinf(timer) else timer

    def _tail_due(self) -> float:
        """When the tail is next to be asked for (infinity once the end is known)."""
        if self.assembler.end is not None:
            return math.inf
        if self._tail_asked is not None:
            return self._tail_asked[0] + self.config.retry_delay(self._tail_asked[1])
        due = self._last_activity + self.config.poll_interval_s
        if self._suspect_since is not None:
            due = min(due, self._suspect_since + self.config.gap_delay_s)
        return due

    def _tail(self) -> TokenRange | None:
        """``[high water, max_new_tokens)``: what may exist past the highest index."""
        assembler = self.assembler
        start = assembler.high_water
        limit = assembler.max_tokens
        if limit is None:
            return TokenRange(start, _MAX_RANGE_COUNT)
        if start >= limit:
            # Every id may be here; the last index makes the spacecraft resend the end.
            return TokenRange(limit - 1, 1) if limit else None
        return TokenRange(start, min(_MAX_RANGE_COUNT, limit - start))

    def _give_up(self, reason: str, now: float) -> None:
        assembler = self.assembler
        lost = list(assembler.missing_ranges())
        end_known = assembler.end is not None
        assembler.mark_lost(tuple(lost), now)
        if not end_known:
            start = assembler.high_water
            limit = assembler.max_tokens
            count = _MAX_RANGE_COUNT if limit is None else limit - start
            if count > 0:
                lost.append(TokenRange(start, min(count, _MAX_RANGE_COUNT)))
        self.state = RecoveryState.FAILED
        self._timer = None
        known = sum(r.count for r in assembler.lost_ranges)
        self.counters.streams_failed += 1
        self.counters.tokens_lost += known
        logger.warning(
            "request %d: recovery gave up (%s); lost %s%s",
            self.request_id,
            reason,
            ", ".join(f"{r.first_index}+{r.count}" for r in lost) or "nothing known",
            "" if end_known else " (end unknown)",
        )
        self._events.append(RecoveryFailed(self.request_id, tuple(lost), end_known, reason, now))


def _ranges(indices: list[int]) -> list[TokenRange]:
    """Sorted indices as ranges of consecutive ones (each at most 65535 long)."""
    out: list[TokenRange] = []
    for index in indices:
        last = out[-1] if out else None
        if (
            last is not None
            and last.first_index + last.count == index
            and last.count < _MAX_RANGE_COUNT
        ):
            out[-1] = TokenRange(last.first_index, last.count + 1)
        else:
            out.append(TokenRange(index, 1))
    return out


__all__ = [
    "RecoveryConfig",
    "RecoveryCounters",
    "RecoveryFailed",
    "RecoveryState",
    "StreamRecovery",
]
