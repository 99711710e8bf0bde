"""The onboard application, sans-I/O: no threads, no clock, no asyncio.

:class:`OnboardCore` takes received messages and application-layer drops, keeps a
bounded FIFO of requests, hands out up to ``max_batch`` :class:`Job` at a time, takes
generated ids and the end of each run, and ``fill(capacity, now)`` gives the messages
for the next TM frame: ErrorReports, a periodic Housekeeping, then the token streams
(TokenChunks sized to fit, round-robin across streams by bytes, an EndOfStream after
the last one).  Time comes in as ``now``: a fake clock
drives it in the tests, the event loop's in :class:`onboard.service.OnboardService`.

What each request gets (docs/protocol.md §4-§8):

* refused (id still in use by another request, prompt too long, bad params, queue
  full: QUEUE_FULL with a retry-after hint, §8.2): one ErrorReport, no stream;
* an exact copy of a request whose id is still in use (the same octets): ignored and
  counted, the original's stream serves it (docs/protocol.md §8.1);
* accepted: TokenChunks covering indices 0..n-1 exactly once, in order, then one
  EndOfStream with the finish reason, n and the onboard timing; a failed run ends
  with an ErrorReport (GENERATION_FAILED or OUT_OF_MEMORY) and EndOfStream ERROR;
* cancelled while queued: EndOfStream CANCELLED with 0 tokens; while running: the
  ids made so far, then EndOfStream CANCELLED.

Recovery (docs/protocol.md §10): a ResendRequest is answered from the running
stream (ids already handed to the downlink) or from the history of the last
``history_requests`` finished streams (every id and the EndOfStream, which goes
again when a range reaches the end); the resent chunks go ahead of new ids.  A
stream no longer held (evicted, acknowledged by EndAck, never received) is answered
with ErrorReport RESEND_UNAVAILABLE naming the ranges.  EndAck frees a stream's
record at once.  Generation never waits for any of this.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from linkstack.errors import Dropped, InvalidState, Layer, LocalProtocolError
from linkstack.inference.protocol import (
    MAX_DETAIL_OCTETS,
    MAX_DEVICE_OCTETS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_IDS,
    MILLI,
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
    encode_message,
    format_busy_detail,
    format_duplicate_detail,
    format_ranges,
    token_chunk_capacity,
    token_chunk_octets,
)
from linkstack.packets.space_packet import PRIMARY_HEADER_LENGTH
from onboard.generation import GenerationRequestError, check_params

if TYPE_CHECKING:
    from onboard.generation import GenerationResult

logger = logging.getLogger(__name__)

_U32_MAX: Final = 0xFFFF_FFFF
_U16_MAX: Final = 0xFFFF
#: Packet octets of the smallest useful message: a TokenChunk of one id.
MIN_FILL_OCTETS: Final = PRIMARY_HEADER_LENGTH + token_chunk_octets(1)
#: Bounds of the retry-after hint of a QUEUE_FULL refusal (docs/protocol.md §8.2).
MIN_RETRY_AFTER_S: Final = 1.0
MAX_RETRY_AFTER_S: Final = 3600.0
#: Finished runs whose durations make the retry-after hint.
_RUN_SECONDS_KEPT: Final = 16

#: Decode reasons (docs/protocol.md §12) with their own ErrorReport reason (§8); every
#: other reason is user data that did not decode: UNKNOWN_MESSAGE, detail = the key.
_DROP_REASONS: Final[dict[str, ErrorReason]] = {
    "unknown-apid": ErrorReason.UNKNOWN_APID,
    "unsupported-version": ErrorReason.UNSUPPORTED_VERSION,
}


def params_from_wire(wire: GenerationParams) -> GenerationParams:
    """``wire`` itself, once :func:`~onboard.generation.check_params` accepts it.

    The generator runs on the wire parameters as received: temperature and top_p are
    their ``temperature_milli / 1000`` and ``top_p_milli / 1000`` doubles
    (docs/protocol.md §4), the stop ids are those sent (none sent means no stop id:
    the ground includes the end-of-turn ids it wants).  Raises GenerationRequestError
    for top_k != 0, which the generator lacks.
    """
    check_params(wire)
    return wire


def printable_ascii(text: str, limit: int = MAX_DETAIL_OCTETS) -> str:
    """``text`` with every character outside printable ASCII as ``?``, at most ``limit``
    characters: ErrorReport detail (80) or a Housekeeping device name (48)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean[:limit]


def _outside_vocab(request: PromptRequest, vocab: int) -> str:
    """Which id of ``request`` is not below ``vocab``, or ""."""
    for name, ids in (("prompt", request.prompt_ids), ("stop", request.params.stop_ids)):
        for index, value in enumerate(ids):
            if value >= vocab:
                return f"{name} id {value} at {index} outside the vocabulary of {vocab}"
    return ""


def _request_digest(request: PromptRequest) -> bytes:
    """SHA-256 of the request's octets: equal digests are byte-identical requests."""
    return hashlib.sha256(request.to_bytes()).digest()


def _packet_octets(message: Message) -> int:
    return PRIMARY_HEADER_LENGTH + len(encode_message(message)[1])


def _has_output(stream: _Stream) -> bool:
    """Ids of ``stream`` wait for the downlink, or its EndOfStream does."""
    return stream.sent < len(stream.ids) or stream.end is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """Limits and managed parameters of the onboard service."""

    #: Requests waiting (not counting the running ones); more are refused QUEUE_FULL
    #: with a retry-after hint (docs/protocol.md §8.2).
    max_queue: int = 8
    #: Requests generated at once (continuous batching, :mod:`onboard.batching`).
    max_batch: int = 1
    #: Octets of TokenChunk packets one stream sends per turn when several streams
    #: have ids waiting: the downlink goes round-robin across them by bytes.
    fair_quantum_octets: int = 256
    #: Retry-after hint of a QUEUE_FULL refusal before any run has finished, seconds.
    busy_retry_after_s: float = 5.0
    #: Longest prompt accepted (PROMPT_TOO_LONG above it).
    max_prompt_ids: int = MAX_PROMPT_IDS
    #: Largest max_new_tokens accepted (MALFORMED_REQUEST above it).
    max_new_tokens: int = MAX_NEW_TOKENS
    #: Positions of the model: prompt + max_new_tokens above it is PROMPT_TOO_LONG.
    context_positions: int | None = None
    #: Ids at or above it are outside the model's vocabulary: MALFORMED_REQUEST.
    vocab_size: int | None = None
    #: Seconds between Housekeeping messages (the first goes at once).
    housekeeping_interval: float = 10.0
    #: Streams whose ids are kept after their EndOfStream (for resend).
    history_requests: int = 16
    #: ErrorReports waiting for the downlink; more are counted and not sent.
    max_pending_reports: int = 32
    #: Resent ranges waiting for the downlink; a ResendRequest beyond it is ignored
    #: (counted): the ground asks again.
    max_pending_resends: int = 64
    #: Device name for Housekeeping, printable ASCII, at most 48 characters.
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("max_queue", self.max_queue, 1, _U16_MAX - 1),
            ("max_batch", self.max_batch, 1, _U16_MAX),
            ("fair_quantum_octets", self.fair_quantum_octets, MIN_FILL_OCTETS, _U16_MAX),
            ("max_prompt_ids", self.max_prompt_ids, 1, MAX_PROMPT_IDS),
            ("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS),
            ("history_requests", self.history_requests, 0, _U16_MAX),
            ("max_pending_reports", self.max_pending_reports, 1, _U16_MAX),
            ("max_pending_resends", self.max_pending_resends, 1, _U16_MAX),
        ):
            if not low <= value <= high:
                raise LocalProtocolError(f"{name} {value} outside {low}..{high}")
        if self.context_positions is not None and self.context_positions < 2:
            raise LocalProtocolError(f"context_positions {self.context_positions} below 2")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise LocalProtocolError(f"vocab_size {self.vocab_size} below 1")
        if not math.isfinite(self.busy_retry_after_s) or not (
            MIN_RETRY_AFTER_S <= self.busy_retry_after_s <= MAX_RETRY_AFTER_S
        ):
            raise LocalProtocolError(
                f"busy_retry_after_s {self.busy_retry_after_s} outside "
                f"{MIN_RETRY_AFTER_S}..{MAX_RETRY_AFTER_S}"
            )
        if not math.isfinite(self.housekeeping_interval) or self.housekeeping_interval <= 0:
            raise LocalProtocolError(
                f"housekeeping_interval {self.housekeeping_interval} s must be positive"
            )
        if len(self.device) > MAX_DEVICE_OCTETS or not all(" " <= c <= "~" for c in self.device):
            raise LocalProtocolError(
                f"device {self.device!r}: printable ASCII, at most {MAX_DEVICE_OCTETS} characters"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One generation to run: what the runner passes to ``generate``."""

    request_id: int
    prompt_ids: tuple[int, ...]
    params: GenerationParams


@dataclass(slots=True)
class CoreCounters:
    """What the core accepted, refused and sent, for logs and tests."""

    requests_accepted: int = 0
    requests_refused: int = 0
    requests_completed: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    tokens_generated: int = 0
    tokens_sent: int = 0
    reports_sent: int = 0
    reports_suppressed: int = 0
    housekeeping_sent: int = 0
    #: ResendRequests received, and those ignored because the resend queue was full.
    resend_requests: int = 0
    resend_requests_ignored: int = 0
    #: Ids and EndOfStreams sent again in answer to ResendRequests.
    ids_resent: int = 0
    ends_resent: int = 0
    #: Packet octets (header included) of what was sent again: the downlink cost.
    resent_octets: int = 0
    #: ResendRequests answered RESEND_UNAVAILABLE (the stream was not held).
    resends_unavailable: int = 0
    #: EndAcks that freed a held stream.
    end_acks: int = 0
    #: PromptRequests refused DUPLICATE_REQUEST: their id was still in use by another
    #: request (queued, running, streaming, held for resend; docs/protocol.md §8.1).
    duplicate_ids_refused: int = 0
    #: Exact copies of a request whose id was still in use: ignored, not refused.
    duplicate_requests_ignored: int = 0


@dataclass(slots=True)
class _Stream:
    """The downlink stream of one accepted request, from dequeue to EndOfStream."""

    request_id: int
    dequeued_at: float
    ids: list[int] = field(default_factory=list)
    #: Ids already handed out in TokenChunks (indices 0..sent-1).
    sent: int = 0
    first_at: float | None = None
    last_at: float | None = None
    cancel_requested: bool = False
    end: EndOfStream | None = None


@dataclass(slots=True)
class _Resend:
    """Ids of one range to send again, then maybe the EndOfStream."""

    request_id: int
    first_index: int
    ids: tuple[int, ...]
    end: EndOfStream | None


class OnboardCore:
    """The onboard application, sans-I/O (see the module docstring)."""

    def __init__(self, config: CoreConfig, *, now: float) -> None:
        self.config = config
        self.counters = CoreCounters()
        self._started_at = now
        self._queue: deque[Job] = deque()
        #: Streams not yet closed by an EndOfStream, in downlink turn order: the first
        #: is the one whose turn it is (``fill``); the running ones are among them.
        self._streams: deque[_Stream] = deque()
        #: Octets the first stream of ``_streams`` has sent in its current turn.
        self._turn_octets = 0
        #: The streams being generated, by request id, in start order.
        self._running: dict[int, _Stream] = {}
        #: Seconds from dequeue to last id of the last finished runs (retry-after hint).
        self._run_seconds: deque[float] = deque(maxlen=_RUN_SECONDS_KEPT)
        self._reports: deque[ErrorReport] = deque()
        #: Finished streams kept for resend: request id -> (ids, EndOfStream).
        self._history: OrderedDict[int, tuple[tuple[int, ...], EndOfStream]] = OrderedDict()
        self._resends: deque[_Resend] = deque()
        #: SHA-256 of the accepted PromptRequest of each id, to tell an exact copy from
        #: another request reusing the id; pruned to the ids still held.
        self._digests: dict[int, bytes] = {}
        self._memory_octets = 0
        self._next_housekeeping = now
        self._rate_since = now
        self._rate_tokens = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests queued or running (Housekeeping ``queue_depth``)."""
        return len(self._queue) + len(self._running)

    @property
    def running(self) -> int | None:
        """The request id being generated (the earliest started), or None."""
        return next(iter(self._running), None)

    @property
    def running_ids(self) -> tuple[int, ...]:
        """Every request id being generated, in start order."""
        return tuple(self._running)

    @property
    def has_output(self) -> bool:
        """Something waits for the downlink (reports, ids or an EndOfStream)."""
        return (
            bool(self._reports) or bool(self._resends) or any(_has_output(s) for s in self._streams)
        )

    def cancel_requested(self, request_id: int) -> bool:
        """Whether the runner of ``request_id`` should stop (a Cancel arrived)."""
        stream = self._running.get(request_id)
        return stream is not None and stream.cancel_requested

    def sent_ids(self, request_id: int) -> tuple[int, ...] | None:
        """Ids of ``request_id`` handed to the downlink so far (kept for resend)."""
        for stream in self._streams:
            if stream.request_id == request_id:
                return tuple(stream.ids[: stream.sent])
        held = self._history.get(request_id)
        return None if held is None else held[0]

    def set_memory_octets(self, octets: int) -> None:
        """The model's current memory, reported in the next Housekeeping."""
        if octets < 0:
            raise LocalProtocolError(f"memory {octets} octets is negative")
        self._memory_octets = octets

    def get_timer(self) -> float:
        """When the next Housekeeping is due (``fill`` sends it from then on)."""
        return self._next_housekeeping

    # -- uplink --------------------------------------------------------------------------

    def receive_message(self, message: Message, now: float) -> None:
        """A message arrived on the uplink."""
        if isinstance(message, PromptRequest):
            self._receive_request(message, now)
        elif isinstance(message, Cancel):
            self._receive_cancel(message.request_id, now)
        elif isinstance(message, EndAck):
            # The ground holds the whole stream: its record may go.
            if self._history.pop(message.request_id, None) is not None:
                self.counters.end_acks += 1
        elif isinstance(message, ResendRequest):
            self._receive_resend(message)
        else:
            self._report(
                None,
                ErrorReason.UNKNOWN_MESSAGE,
                f"wrong-direction: {type(message).__name__} is a downlink message",
            )

    def receive_drop(self, dropped: Dropped, now: float) -> None:
        """An uplink packet was dropped; application and packet drops are answered.

        ``unknown-apid`` -> UNKNOWN_APID, ``unsupported-version`` -> UNSUPPORTED_VERSION,
        any other reason -> UNKNOWN_MESSAGE with the reason key as detail (§8, §12).
        Drops of lower layers (frames, codeblocks) are not answered.
        """
        if dropped.layer is Layer.APPLICATION:
            reason = _DROP_REASONS.get(dropped.reason, ErrorReason.UNKNOWN_MESSAGE)
            key = dropped.reason
        elif dropped.layer is Layer.SPACE_PACKET:
            reason, key = ErrorReason.UNKNOWN_MESSAGE, f"{dropped.layer}/{dropped.reason}"
        else:
            return
        logger.info("uplink packet dropped: %s (%s)", key, dropped.detail)
        self._report(None, reason, f"{key}: {dropped.detail}" if dropped.detail else key)

    def _receive_request(self, request: PromptRequest, now: float) -> None:
        rid, prompt, wire = request.request_id, request.prompt_ids, request.params
        limits = self.config
        digest = _request_digest(request)
        refusal: tuple[ErrorReason, str] | None = None
        if (state := self._holding(rid)) is not None:
            if self._digests.get(rid) == digest:
                # The same octets again (a Type-BD frame the channel duplicated, say):
                # the stream already answers it; refusing would fail the original.
                self.counters.duplicate_requests_ignored += 1
                logger.info("request %d: exact copy ignored (%s)", rid, state)
                return
            self.counters.duplicate_ids_refused += 1
            refusal = (
                ErrorReason.DUPLICATE_REQUEST,
                format_duplicate_detail(rid, state, request),
            )
        elif len(prompt) > limits.max_prompt_ids:
            refusal = (
                ErrorReason.PROMPT_TOO_LONG,
                f"prompt of {len(prompt)} ids exceeds {limits.max_prompt_ids}",
            )
        elif wire.max_new_tokens > limits.max_new_tokens:
            refusal = (
                ErrorReason.MALFORMED_REQUEST,
                f"max_new_tokens {wire.max_new_tokens} exceeds {limits.max_new_tokens}",
            )
        elif (
            limits.context_positions is not None
            and len(prompt) + wire.max_new_tokens > limits.context_positions
        ):
            refusal = (
                ErrorReason.PROMPT_TOO_LONG,
                f"{len(prompt)} prompt ids + {wire.max_new_tokens} new exceed "
                f"{limits.context_positions} positions",
            )
        elif limits.vocab_size is not None and (bad := _outside_vocab(request, limits.vocab_size)):
            refusal = (ErrorReason.MALFORMED_REQUEST, bad)
        if refusal is None:
            try:
                check_params(wire)
            except GenerationRequestError as exc:
                refusal = (ErrorReason.MALFORMED_REQUEST, str(exc))
        if refusal is None and len(self._queue) >= limits.max_queue:
            refusal = (
                ErrorReason.QUEUE_FULL,
                format_busy_detail(len(self._queue), limits.max_queue, self.retry_after_s()),
            )
        if refusal is not None:
            self.counters.requests_refused += 1
            logger.info("request %d refused: %s (%s)", rid, refusal[0].name, refusal[1])
            self._report(rid, *refusal)
            return
        self.counters.requests_accepted += 1
        logger.debug("request %d queued: %d prompt ids, %s", rid, len(prompt), wire)
        self._queue.append(Job(request_id=rid, prompt_ids=prompt, params=wire))
        self._remember(rid, digest)

    def _holding(self, request_id: int) -> str | None:
        """Where ``request_id`` is still in use (docs/protocol.md §8.1), or None:
        ``queued``, ``running``, ``streaming`` (ended, its EndOfStream not yet handed
        to the downlink), ``held for resend`` (history, or resent ranges waiting)."""
        if request_id in self._running:
            return "running"
        if any(j.request_id == request_id for j in self._queue):
            return "queued"
        if any(s.request_id == request_id for s in self._streams):
            return "streaming"
        if request_id in self._history or any(r.request_id == request_id for r in self._resends):
            return "held for resend"
        return None

    def _remember(self, request_id: int, digest: bytes) -> None:
        self._digests[request_id] = digest
        if len(self._digests) > 2 * (self.config.max_queue + self.config.history_requests) + 4:
            self._digests = {
                rid: held for rid, held in self._digests.items() if self._holding(rid) is not None
            }

    def _receive_cancel(self, request_id: int, now: float) -> None:
        for job in self._queue:
            if job.request_id == request_id:
                self._queue.remove(job)
                self.counters.requests_cancelled += 1
                stream = _Stream(request_id, dequeued_at=now)
                stream.end = self._end_of_stream(stream, FinishReason.CANCELLED)
                self._streams.append(stream)
                return
        running = self._running.get(request_id)
        if running is not None:
            running.cancel_requested = True
            return
        if any(s.request_id == request_id for s in self._streams) or (request_id in self._history):
            return  # generation already ended: its EndOfStream says how
        self._report(request_id, ErrorReason.UNKNOWN_REQUEST, f"no request {request_id}")

    def _receive_resend(self, message: ResendRequest) -> None:
        """Queue the held ids of each range (docs/protocol.md §10)."""
        rid = message.request_id
        self.counters.resend_requests += 1
        ids: tuple[int, ...] | None = None
        end: EndOfStream | None = None
        for stream in self._streams:
            if stream.request_id == rid:
                # Still streaming: what went down already; the rest and the end follow.
                ids = tuple(stream.ids[: stream.sent])
                break
        else:
            held = self._history.get(rid)
            if held is not None:
                ids, end = held
            elif any(job.request_id == rid for job in self._queue):
                return  # not started: everything is still to come
        if ids is None:
            self.counters.resends_unavailable += 1
            logger.info("resend of request %d: not held", rid)
            self._report(rid, ErrorReason.RESEND_UNAVAILABLE, format_ranges(message.ranges))
            return
        if len(self._resends) + len(message.ranges) > self.config.max_pending_resends:
            self.counters.resend_requests_ignored += 1
            logger.info("resend of request %d ignored: %d ranges queued", rid, len(self._resends))
            return
        resent_end = False
        for token_range in message.ranges:
            stop = token_range.first_index + token_range.count
            part = ids[token_range.first_index : stop]
            reaches_end = end is not None and stop >= end.token_count and not resent_end
            if not part and not reaches_end:
                continue
            resent_end |= reaches_end
            self._resends.append(
                _Resend(rid, token_range.first_index, part, end if reaches_end else None)
            )

    # -- the runner --------------------------------------------------------------------

    def next_job(self, now: float) -> Job | None:
        """The next request to generate, or None when ``max_batch`` run or none waits."""
        if len(self._running) >= self.config.max_batch or not self._queue:
            return None
        job = self._queue.popleft()
        stream = _Stream(job.request_id, dequeued_at=now)
        self._running[job.request_id] = stream
        self._streams.append(stream)
        return job

    def _running_stream(self, request_id: int) -> _Stream:
        stream = self._running.get(request_id)
        if stream is None:
            raise InvalidState(
                f"request {request_id} is not running (running: {list(self._running)})"
            )
        return stream

    def retry_after_s(self) -> float:
        """When a refused request may find a queue place: the mean run time (dequeue to
        last id) of the last finished runs over ``max_batch`` (one of them ends about
        that often), within 1..3600 s; ``busy_retry_after_s`` before any has finished."""
        if not self._run_seconds:
            return self.config.busy_retry_after_s
        mean = sum(self._run_seconds) / len(self._run_seconds)
        return min(max(mean / self.config.max_batch, MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S)

    def token_generated(self, request_id: int, token_id: int, now: float) -> None:
        """The runner produced the next id of ``request_id``."""
        stream = self._running_stream(request_id)
        stream.ids.append(token_id)
        if stream.first_at is None:
            stream.first_at = now
        stream.last_at = now
        self.counters.tokens_generated += 1
        self._rate_tokens += 1

    def generation_finished(self, request_id: int, result: GenerationResult, now: float) -> None:
        """The run of ``request_id`` ended with ``result``.

        Ids of ``result`` not yet given to :meth:`token_generated` are added (none are
        lost); ids that contradict the ones given raise InvalidState.
        """
        stream = self._running_stream(request_id)
        produced = result.generated_ids
        if tuple(stream.ids) != produced[: len(stream.ids)]:
            raise InvalidState(
                f"request {request_id}: result ids {produced[:8]}... disagree with the "
                f"{len(stream.ids)} ids streamed"
            )
        for token_id in produced[len(stream.ids) :]:
            self.token_generated(request_id, token_id, now)
        reason = result.finish_reason
        if result.error is not None:
            kind = (
                ErrorReason.OUT_OF_MEMORY
                if result.error.kind == "out-of-memory"
                else ErrorReason.GENERATION_FAILED
            )
            self._report(request_id, kind, result.error.message)
            reason = FinishReason.ERROR
        self._finish(stream, reason, now)

    def generation_failed(
        self, request_id: int, reason: ErrorReason, detail: str, now: float
    ) -> None:
        """The runner could not run ``request_id`` (it raised): ErrorReport + EndOfStream ERROR."""
        stream = self._running_stream(request_id)
        self._report(request_id, reason, detail)
        self._finish(stream, FinishReason.ERROR, now)

    def _finish(self, stream: _Stream, reason: FinishReason, now: float) -> None:
        if stream.last_at is None:
            stream.last_at = now
        stream.end = self._end_of_stream(stream, reason)
        del self._running[stream.request_id]
        self._run_seconds.append(stream.last_at - stream.dequeued_at)
        if reason is FinishReason.CANCELLED:
            self.counters.requests_cancelled += 1
        elif reason is FinishReason.ERROR:
            self.counters.requests_failed += 1

    @staticmethod
    def _end_of_stream(stream: _Stream, reason: FinishReason) -> EndOfStream:
        count = len(stream.ids)
        first = stream.first_at if stream.first_at is not None else stream.dequeued_at
        last = stream.last_at if stream.last_at is not None else stream.dequeued_at
        ttft_us = max(0, round((first - stream.dequeued_at) * 1e6)) if count else 0
        gen_s = max(0.0, last - stream.dequeued_at)
        rate = round(count / gen_s * MILLI) if count and gen_s > 0 else 0
        return EndOfStream(
            request_id=stream.request_id,
            finish_reason=reason,
            token_count=count,
            time_to_first_token_us=min(ttft_us, _U32_MAX),
            generation_time_ms=min(round(gen_s * 1e3), _U32_MAX),
            tokens_per_s_milli=min(rate, _U32_MAX),
        )

    # -- downlink ------------------------------------------------------------------------

    def fill(self, capacity_octets: int, now: float) -> list[Message]:
        """Messages for the next TM frame, whose packets total at most ``capacity_octets``.

        In order: waiting ErrorReports, a Housekeeping when due, resent ranges
        (docs/protocol.md §10), then the streams' waiting ids as TokenChunks (each
        packet within the space left), round-robin across streams by bytes
        (``fair_quantum_octets`` per turn), each stream's EndOfStream once every id of
        it is out.  A message larger than the whole capacity
        (a long ErrorReport in a tiny frame) goes alone: packets may span frames.
        """
        if capacity_octets < MIN_FILL_OCTETS:
            raise LocalProtocolError(
                f"capacity {capacity_octets} octets is below the {MIN_FILL_OCTETS} octets "
                "of a one-id TokenChunk packet"
            )
        out: list[Message] = []
        budget = capacity_octets

        def take(message: Message) -> bool:
            nonlocal budget
            size = _packet_octets(message)
            if size > budget and out:
                return False
            out.append(message)
            budget -= size
            return True

        while self._reports:
            if not take(self._reports[0]):
                return out
            self._reports.popleft()
            self.counters.reports_sent += 1
        if now >= self._next_housekeeping:
            if not take(self._housekeeping(now)):
                return out
            self.counters.housekeeping_sent += 1
        while self._resends:
            resend = self._resends[0]
            if resend.ids:
                if budget < MIN_FILL_OCTETS:
                    return out
                count = min(len(resend.ids), token_chunk_capacity(budget - PRIMARY_HEADER_LENGTH))
                chunk = TokenChunk(resend.request_id, resend.first_index, resend.ids[:count])
                take(chunk)
                self.counters.ids_resent += count
                self.counters.resent_octets += _packet_octets(chunk)
                resend.first_index += count
                resend.ids = resend.ids[count:]
                continue
            if resend.end is not None:
                if not take(resend.end):
                    return out
                self.counters.ends_resent += 1
                self.counters.resent_octets += _packet_octets(resend.end)
            self._resends.popleft()
        # The streams, round-robin by bytes (deficit round-robin, one quantum of
        # fair_quantum_octets per turn): the first of _streams has the turn; a stream
        # with nothing waiting passes it on; a turn cut by the end of a frame goes on
        # in the next frame.  A stream alone with ids waiting is not cut into quanta.
        quantum = self.config.fair_quantum_octets
        passed = 0
        while self._streams and passed < len(self._streams):
            stream = self._streams[0]
            waiting = len(stream.ids) - stream.sent
            if not waiting and stream.end is None:
                self._next_turn()  # still generating, nothing new
                passed += 1
                continue
            passed = 0
            if waiting:
                if budget < MIN_FILL_OCTETS:
                    return out
                allowance = budget
                if any(s is not stream and _has_output(s) for s in self._streams):
                    allowance = min(budget, quantum - self._turn_octets)
                    if allowance < MIN_FILL_OCTETS:
                        self._next_turn()  # quantum spent
                        continue
                count = min(waiting, token_chunk_capacity(allowance - PRIMARY_HEADER_LENGTH))
                chunk = TokenChunk(
                    stream.request_id,
                    stream.sent,
                    tuple(stream.ids[stream.sent : stream.sent + count]),
                )
                take(chunk)
                self._turn_octets += _packet_octets(chunk)
                stream.sent += count
                self.counters.tokens_sent += count
                continue
            if stream.end is None:  # pragma: no cover - excluded above
                continue
            if not take(stream.end):
                return out
            self._retire(stream, stream.end)
            self._turn_octets = 0
        return out

    def _next_turn(self) -> None:
        self._streams.rotate(-1)
        self._turn_octets = 0

    def _retire(self, stream: _Stream, end: EndOfStream) -> None:
        self._streams.remove(stream)
        if end.finish_reason in (FinishReason.STOP_ID, FinishReason.MAX_TOKENS):
            self.counters.requests_completed += 1
        logger.info(
            "request %d: %s, %d ids, first id %.0f ms, %.1f ids/s",
            stream.request_id,
            end.finish_reason.name,
            end.token_count,
            end.time_to_first_token_us / 1e3,
            end.tokens_per_s,
        )
        if self.config.history_requests:
            self._history.pop(stream.request_id, None)
            self._history[stream.request_id] = (tuple(stream.ids), end)
            while len(self._history) > self.config.history_requests:
                self._history.popitem(last=False)

    def _housekeeping(self, now: float) -> Housekeeping:
        interval = self.config.housekeeping_interval
        elapsed = now - self._rate_since
        rate = round(self._rate_tokens / elapsed * MILLI) if elapsed > 0 else 0
        self._rate_since, self._rate_tokens = now, 0
        # Keep the phase: one message per due time, never a burst after a gap.
        missed = math.floor((now - self._next_housekeeping) / interval)
        self._next_housekeeping += (missed + 1) * interval
        return Housekeeping(
            queue_depth=min(self.queue_depth, _U16_MAX),
            tokens_per_s_milli=min(rate, _U32_MAX),
            memory_used_octets=self._memory_octets,
            uptime_s=min(max(0, int(now - self._started_at)), _U32_MAX),
            device=self.config.device,
        )

    def _report(self, request_id: int | None, reason: ErrorReason, detail: str) -> None:
        if len(self._reports) >= self.config.max_pending_reports:
            self.counters.reports_suppressed += 1
            return
        self._reports.append(
            ErrorReport(request_id=request_id, reason=reason, detail=printable_ascii(detail))
        )


__all__ = [
    "MIN_FILL_OCTETS",
    "CoreConfig",
    "CoreCounters",
    "Job",
    "OnboardCore",
    "params_from_wire",
    "printable_ascii",
]
