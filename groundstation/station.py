"""The ground station: prompts up, token streams down, answers out.

:class:`GroundStation` owns the sans-I/O :class:`~linkstack.endpoints.GroundEndpoint`,
the tokenizer and one :class:`~groundstation.assembler.TokenAssembler` per request.
The link calls :meth:`GroundStation.on_receive` with each unit of the CADU stream and
the loop time; the station feeds the endpoint, routes each message to its request
and resolves the request's :class:`Answer` when its stream is whole.

::

    station = GroundStation(tokenizer)
    link = await open_link(url, role="ground", on_receive=station.on_receive)
    station.attach(link)
    answer = await station.ask(prompt_ids, params, on_update=show, timeout=60)

Time is the event loop's clock (``loop.time()``), passed into the sans-I/O parts;
one ``loop.call_at`` runs the timers they ask for: the FOP-1 T1 timer of the
endpoint and the recovery timers of the requests in flight
(:class:`~groundstation.recovery.StreamRecovery`: ResendRequests for what the
downlink lost, an EndAck when an answer is whole, docs/protocol.md §10).
Link-side trouble (bad frames, unknown request ids, contradictory streams) is
counted and logged, never raised; caller misuse raises the typed errors of
:mod:`linkstack.errors`.  Outcomes of a request that are nobody's bug (an
ErrorReport from the spacecraft, a timeout) are :class:`RequestError` values held
in :attr:`Answer.error`, not raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from groundstation.assembler import (
    AssemblerStats,
    StreamComplete,
    TokenAssembler,
    TokensLost,
    TokensReady,
)
from groundstation.recovery import (
    RecoveryConfig,
    RecoveryCounters,
    RecoveryFailed,
    StreamRecovery,
)
from linkstack.aio import Link
from linkstack.endpoints import GroundCounters, GroundEndpoint, LinkConfig, MessageReceived
from linkstack.errors import Dropped, InvalidState, LinkError, LocalProtocolError
from linkstack.inference.protocol import (
    Cancel,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Housekeeping,
    Message,
    PromptRequest,
    TokenChunk,
    TokenRange,
    parse_duplicate_detail,
    request_digest,
)
from linkstack.inference.tokenizer import IncrementalDecoder, Tokenizer
from linkstack.sdls import LinkSecurity
from linkstack.tm.channels import (
    FramesLost,
)

logger = logging.getLogger(__name__)

#: Request ids are u16 and wrap (docs/protocol.md §4).
REQUEST_ID_MODULUS: Final = 0x1_0000
#: Gives the next request id to try, 0..65535 (ids in flight are skipped); the
#: persistent one is :class:`groundstation.request_ids.RequestIdAllocator`.
IdSource = Callable[[], int]
#: General ErrorReports (no request concerned) kept for inspection.
_KEPT_ERRORS: Final = 16


# -- outcomes ------------------------------------------------------------------------


class RequestError(LinkError):
    """A request ended without a whole answer; held in :attr:`Answer.error`."""

    def __init__(self, request_id: int, message: str) -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id}: {message}")


class SpacecraftError(RequestError):
    """The spacecraft reported an error for the request (docs/protocol.md §8).

    ``reason`` is None when the stream ended with finish reason ERROR (§7) before
    any ErrorReport said why.
    """

    def __init__(self, request_id: int, reason: ErrorReason | None, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        name = "ERROR (no ErrorReport)" if reason is None else reason.name
        super().__init__(request_id, f"spacecraft error {name}" + (f": {detail}" if detail else ""))


class RequestIdInUseError(SpacecraftError):
    """The spacecraft refused the request: it still holds another request with the same
    id (ErrorReport DUPLICATE_REQUEST, docs/protocol.md §8.1).

    Nothing of the other request came into this answer; asking again gets a new id.
    ``state`` is where the other request is on board (``queued``, ``running``,
    ``streaming``, ``held for resend``), or None when the detail does not say.
    """

    def __init__(self, request_id: int, detail: str) -> None:
        self.reason = ErrorReason.DUPLICATE_REQUEST
        self.detail = detail
        said = parse_duplicate_detail(detail)
        self.state = None if said is None else said.state
        where = f" ({self.state})" if self.state else (f" ({detail})" if detail else "")
        RequestError.__init__(
            self,
            request_id,
            f"refused by the spacecraft: request id {request_id} is still in use on board"
            f"{where} by another request; ask again for a new id",
        )


class TokensLostError(RequestError):
    """Part of the answer can no longer be recovered (docs/protocol.md §10).

    ``lost`` names the index ranges; when ``end_known`` is False the EndOfStream never
    came and the last range runs to ``max_new_tokens`` (an upper bound).
    """

    def __init__(
        self, request_id: int, lost: tuple[TokenRange, ...], *, end_known: bool, reason: str
    ) -> None:
        self.lost = lost
        self.end_known = end_known
        self.reason = reason
        ranges = ", ".join(f"{r.first_index}+{r.count}" for r in lost[:4])
        more = "..." if len(lost) > 4 else ""
        end = "" if end_known else " (end unknown)"
        super().__init__(request_id, f"tokens lost ({reason}): {ranges}{more}{end}")


class RequestTimeoutError(RequestError):
    """No whole answer within the caller's timeout; a Cancel was sent up."""

    def __init__(
        self, request_id: int, timeout_s: float, received: int, missing: tuple[TokenRange, ...]
    ) -> None:
        self.timeout_s = timeout_s
        self.received = received
        self.missing = missing
        gaps = ", ".join(f"{r.first_index}+{r.count}" for r in missing[:4])
        more = f" (missing {gaps}{'...' if len(missing) > 4 else ''})" if missing else ""
        super().__init__(
            request_id, f"no complete answer after {timeout_s:g} s, {received} ids received{more}"
        )


@dataclass(frozen=True, slots=True)
class Update:
    """Ids newly delivered in order, with the text they completed (maybe empty).

    The last update of a request may carry no ids: the text of a character left
    unfinished at the end (U+FFFD), as :meth:`IncrementalDecoder.flush` gives it.
    An update with ``lost`` set carries no ids either: those indices will never
    arrive, and the text goes on after them (show the hole, not a seamless text).
    """

    request_id: int
    first_index: int
    ids: tuple[int, ...]
    text: str
    at: float
    lost: TokenRange | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What came down for one request."""

    request_id: int
    prompt_ids: tuple[int, ...]
    #: Ids delivered in index order (the whole stream when ``complete``).
    received_ids: tuple[int, ...]
    #: ``received_ids`` decoded, special tokens skipped (as ``onboard generate``).
    text: str
    #: From the EndOfStream; None if none arrived.
    finish_reason: FinishReason | None
    error: RequestError | None
    #: From sending the request to the delivery of the first id (loop clock).
    time_to_first_token_s: float | None
    #: From sending the request to the answer's end (loop clock).
    total_s: float
    #: Arrival time of each received id, seconds after the request was sent.
    token_arrival_s: tuple[float, ...]
    #: The EndOfStream itself (onboard timings), if one arrived.
    end: EndOfStream | None
    #: The request's reassembly statistics.
    stats: AssemblerStats
    #: Index ranges never received (empty when complete).
    missing: tuple[TokenRange, ...]
    #: Index ranges given up as lost by the recovery (see :class:`TokensLostError`).
    lost: tuple[TokenRange, ...]
    #: Snapshot of the ground endpoint's link counters when the answer ended.
    counters: GroundCounters
    #: Snapshot of the endpoint's drops, ``"layer/reason" -> count``.
    drops: dict[str, int]

    @property
    def complete(self) -> bool:
        """The whole stream arrived and it ended without an error."""
        return self.error is None and self.end is not None and not self.missing


# -- one request ------------------------------------------------------------------------


class RequestHandle:
    """A request in flight: its live updates, its answer, its cancellation."""

    def __init__(
        self,
        station: GroundStation,
        request: PromptRequest,
        *,
        sent_at: float,
        decoder: IncrementalDecoder,
        on_update: Callable[[Update], None] | None,
        future: asyncio.Future[Answer],
    ) -> None:
        self._station = station
        self.request = request
        self.request_id = request.request_id
        self.sent_at = sent_at
        self.assembler = TokenAssembler(
            request.request_id, max_tokens=request.params.max_new_tokens, started_at=sent_at
        )
        self.recovery = StreamRecovery(
            self.assembler,
            config=station.recovery_config,
            now=sent_at,
            counters=station.recovery_counters,
        )
        self._decoder = decoder
        self._on_update = on_update
        self._future = future
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()
        self._error_report: ErrorReport | None = None

    @property
    def done(self) -> bool:
        return self._future.done()

    async def updates(self) -> AsyncIterator[Update]:
        """Every update of this request in order, from the first; ends with the request."""
        while (update := await self._updates.get()) is not None:
            yield update
        self._updates.put_nowait(None)  # so that a second reader ends too

    async def answer(self, timeout: float | None = None) -> Answer:
        """Wait for the answer; after ``timeout`` seconds cancel it onboard and return
        it with a :class:`RequestTimeoutError` error."""
        if timeout is not None and not timeout > 0:
            raise LocalProtocolError(f"timeout {timeout} s must be positive")
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            self._station._time_out(self, timeout or 0.0)
            return self._future.result()

    def cancel(self) -> None:
        """Ask the spacecraft to stop; the stream ends with finish reason CANCELLED."""
        self._station.cancel(self.request_id)

    # -- driven by the station --------------------------------------------------------

    def _publish(self, update: Update) -> None:
        self._updates.put_nowait(update)
        if self._on_update is not None:
            try:
                self._on_update(update)
            except Exception:
                logger.exception("request %d: on_update callback raised", self.request_id)

    def _tokens_ready(self, event: TokensReady) -> None:
        text = self._decoder.push(event.ids)
        self._publish(Update(self.request_id, event.first_index, event.ids, text, event.at))

    def _tokens_lost(self, event: TokensLost) -> None:
        lost = TokenRange(event.first_index, event.count)
        self._publish(Update(self.request_id, event.first_index, (), "", event.at, lost))

    def _finish(self, error: RequestError | None, now: float) -> Answer:
        tail = self._decoder.flush()
        if tail:
            index = len(self.assembler.delivered_ids)
            self._publish(Update(self.request_id, index, (), tail, now))
        self._updates.put_nowait(None)
        answer = self._station._answer(self, error, now)
        if not self._future.done():
            self._future.set_result(answer)
        return answer


# -- the station ------------------------------------------------------------------------


@dataclass(slots=True)
class StationCounters:
    """Application-level counts of the station (link counts are the endpoint's)."""

    requests_sent: int = 0
    answers_complete: int = 0
    answers_failed: int = 0
    cancels_sent: int = 0
    #: Downlink messages about a request id not in flight (finished, timed out, unknown).
    unmatched_messages: int = 0
    #: Messages of a kind the ground does not expect on the downlink (uplink types).
    unexpected_messages: int = 0
    error_reports: int = 0
    housekeeping_received: int = 0
    #: Answers ended with tokens given up as lost (:class:`TokensLostError`).
    answers_with_lost_tokens: int = 0
    #: DUPLICATE_REQUEST reports naming an id in flight here but another request's
    #: digest (another ground reused the id, docs/protocol.md §8.1): ignored.
    refusals_of_other_requests: int = 0


def sequential_ids(first: int) -> IdSource:
    """``first``, ``first + 1``, ... modulo 2**16, in memory: the default id source."""
    if not 0 <= first < REQUEST_ID_MODULUS:
        raise LocalProtocolError(f"first_request_id {first} outside 0..{REQUEST_ID_MODULUS - 1}")
    following = first

    def next_id() -> int:
        nonlocal following
        request_id, following = following, (following + 1) % REQUEST_ID_MODULUS
        return request_id

    return next_id


class GroundStation:
    """The ground end of the inference service over one link.

    Request ids come from ``id_source`` (called once per request, ids still in flight
    here skipped) or, without one, count from ``first_request_id`` in memory.  A
    process that talks to a spacecraft other processes talked to before passes a
    :class:`~groundstation.request_ids.RequestIdAllocator`, so that it never reuses
    an id the spacecraft may still hold (docs/protocol.md §4).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        config: LinkConfig | None = None,
        first_request_id: int = 0,
        id_source: IdSource | None = None,
        recovery: RecoveryConfig | None = None,
        security: LinkSecurity | None = None,
        vc_security: Mapping[int, LinkSecurity] | None = None,
    ) -> None:
        if id_source is not None and first_request_id != 0:
            raise LocalProtocolError(
                f"first_request_id {first_request_id} and id_source given: give one"
            )
        self._id_source = id_source or sequential_ids(first_request_id)
        self.tokenizer = tokenizer
        #: With ``security`` (SDLS) every frame is protected up and verified down.
        #: ``vc_security``: the sending SDLS of the other TC VCs (a TC SA applies to one).
        self.endpoint = GroundEndpoint(config or LinkConfig(), security, vc_security=vc_security)
        self.counters = StationCounters()
        #: The recovery policy of every request, and its traffic over all of them.
        self.recovery_config = recovery or RecoveryConfig()
        self.recovery_counters = RecoveryCounters()
        #: The latest Housekeeping and the time it arrived.
        self.housekeeping: Housekeeping | None = None
        self.housekeeping_at: float | None = None
        #: Recent ErrorReports that concern no request.
        self.general_errors: deque[ErrorReport] = deque(maxlen=_KEPT_ERRORS)
        self._link: Link | None = None
        self._requests: dict[int, RequestHandle] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- link side ------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Send the uplink on ``link`` (whose receiver must be :meth:`on_receive`)."""
        self._link = link
        self._transmit()

    def close(self) -> None:
        """Stop the timers (the link is the caller's to close)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def on_receive(self, data: bytes, now: float) -> None:
        """The link's receive callback: octets of the CADU stream at loop time ``now``."""
        self.endpoint.receive_bytes(data, now)
        self._drain(now)

    def end_of_stream(self, now: float) -> None:
        """The downlink ended: let the endpoint settle what it holds."""
        self.endpoint.end_of_stream(now)
        self._drain(now)

    @property
    def link_counters(self) -> GroundCounters:
        """A snapshot of the endpoint's counters."""
        return dataclasses.replace(self.endpoint.counters)

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Ids of the requests waiting for their answer."""
        return tuple(self._requests)

    # -- application side -------------------------------------------------------------

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        on_update: Callable[[Update], None] | None = None,
    ) -> RequestHandle:
        """Send a PromptRequest now and return its handle (needs a running loop)."""
        if self._link is None:
            raise InvalidState("no link attached: call attach(link) before sending requests")
        loop = asyncio.get_running_loop()
        request = PromptRequest(
            request_id=self._allocate_id(), params=params, prompt_ids=tuple(prompt_ids)
        )
        now = loop.time()
        handle = RequestHandle(
            self,
            request,
            sent_at=now,
            decoder=self.tokenizer.incremental_decoder(skip_special=True),
            on_update=on_update,
            future=loop.create_future(),
        )
        self._requests[request.request_id] = handle
        logger.info(
            "> request %d: %d prompt ids, %s", request.request_id, len(request.prompt_ids), params
        )
        self.endpoint.send(request, now)
        self.counters.requests_sent += 1
        self._transmit()
        return handle

    async def ask(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        on_update: Callable[[Update], None] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """Send a request and wait for its answer (see :meth:`RequestHandle.answer`)."""
        return await self.submit(prompt_ids, params, on_update=on_update).answer(timeout)

    def send_key_management(self, pdu: bytes) -> None:
        """Send one SDLS key management PDU now, on the TC VC it is routed to
        (``LinkConfig.tc_routes``; a VC of its own keeps it clear of the requests)."""
        if self._link is None:
            raise InvalidState("no link attached")
        self.endpoint.send_key_management(pdu, asyncio.get_running_loop().time())
        self._transmit()

    def cancel(self, request_id: int) -> None:
        """Send a Cancel for a request in flight; its answer still comes (CANCELLED)."""
        if request_id not in self._requests:
            raise InvalidState(
                f"request {request_id} is not in flight (in flight: {sorted(self._requests)})"
            )
        self._send(Cancel(request_id))
        self.counters.cancels_sent += 1

    # -- internals ------------------------------------------------------------------

    def _allocate_id(self) -> int:
        if len(self._requests) >= REQUEST_ID_MODULUS:
            raise InvalidState(f"all {REQUEST_ID_MODULUS} request ids are in flight")
        for _ in range(REQUEST_ID_MODULUS):
            request_id = self._id_source()
            if not 0 <= request_id < REQUEST_ID_MODULUS:
                raise LocalProtocolError(
                    f"id_source gave request id {request_id} outside 0..{REQUEST_ID_MODULUS - 1}"
                )
            if request_id not in self._requests:
                return request_id
        raise InvalidState(
            f"id_source gave only ids in flight ({len(self._requests)} of them) "
            f"in {REQUEST_ID_MODULUS} tries"
        )

    def _send(self, message: Message) -> None:
        if self._link is None:
            raise InvalidState("no link attached")
        logger.debug("> %s", message)
        self.endpoint.send(message, asyncio.get_running_loop().time())
        self._transmit()

    def _transmit(self) -> None:
        if self._link is None:
            return
        for cltu in self.endpoint.data_to_send():
            self._link.send(cltu)
        self._schedule()

    # -- timers ---------------------------------------------------------------------

    def _uplink_clear(self) -> bool:
        """FOP-1 holds no command unacknowledged: a ResendRequest would go at once
        (while one is held, asking again only queues copies behind it)."""
        fop = self.endpoint.fop
        return fop.sent_queue_length == 0 and fop.backlog_length == 0 and fop.wait_queue_empty

    def _next_timer(self) -> float | None:
        times = [t for t in (self.endpoint.get_timer(),) if t is not None]
        if self._uplink_clear():
            times += [
                t for h in self._requests.values() if (t := h.recovery.get_timer()) is not None
            ]
        return min(times, default=None)

    def _schedule(self) -> None:
        """One ``loop.call_at`` at the earliest timer (FOP-1 T1 or a recovery)."""
        when = self._next_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        if when is None or self._link is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (the link is being torn down): no timers
            return
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = asyncio.get_running_loop().time()
        self.endpoint.handle_timer(now)
        self._drain(now)

    def _run_recovery(self, now: float) -> None:
        """Run the recovery timers that are due and send what they ask for."""
        if not self._uplink_clear():
            return
        for handle in list(self._requests.values()):
            handle.recovery.handle_timer(now)
            self._recovery_output(handle, now)

    def _recovery_output(self, handle: RequestHandle, now: float) -> None:
        for message in handle.recovery.data_to_send():
            logger.debug("> %s", message)
            self.endpoint.send(message, now)
        while (failed := handle.recovery.next_event()) is not None:
            self._recovery_failed(handle, failed, now)

    def _recovery_failed(self, handle: RequestHandle, failed: RecoveryFailed, now: float) -> None:
        self._drain_assembler(handle, now)  # the ids past the lost ranges
        self.counters.answers_with_lost_tokens += 1
        error = TokensLostError(
            handle.request_id, failed.lost, end_known=failed.end_known, reason=failed.reason
        )
        self._end_request(handle, error, now)

    def _drain(self, now: float) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self._receive_message(event.message, now)
            elif isinstance(event, Dropped):
                logger.debug("downlink drop %s/%s", event.layer, event.reason)
            elif isinstance(event, FramesLost):
                logger.info("downlink lost %d frame(s) on VC %s", event.missing, event.vcid)
                for handle in self._requests.values():
                    handle.recovery.frames_lost(now)
        self._run_recovery(now)
        # FOP-1 may have (re)transmitted on what arrived (CLCW acknowledgements).
        self._transmit()

    def _receive_message(self, message: Message, now: float) -> None:
        if isinstance(message, TokenChunk | EndOfStream):
            handle = self._requests.get(message.request_id)
            if handle is None:
                self._unmatched(message)
                return
            if isinstance(message, TokenChunk):
                handle.assembler.receive_chunk(message, now)
            else:
                handle.assembler.receive_end(message, now)
            handle.recovery.update(now)
            self._recovery_output(handle, now)  # an EndAck when it completed
            self._drain_assembler(handle, now)
        elif isinstance(message, ErrorReport):
            self._receive_error(message, now)
        elif isinstance(message, Housekeeping):
            self.counters.housekeeping_received += 1
            self.housekeeping = message
            self.housekeeping_at = now
        else:
            self.counters.unexpected_messages += 1
            logger.warning("uplink message %s received on the downlink; ignored", message)

    def _drain_assembler(self, handle: RequestHandle, now: float) -> None:
        complete: StreamComplete | None = None
        while (event := handle.assembler.next_event()) is not None:
            if isinstance(event, TokensReady):
                handle._tokens_ready(event)
            elif isinstance(event, TokensLost):
                handle._tokens_lost(event)
            elif isinstance(event, StreamComplete):
                complete = event
            else:
                logger.debug(
                    "request %d: gap of %d ids at %d",
                    handle.request_id,
                    event.count,
                    event.first_index,
                )
        if complete is None:
            return
        error: RequestError | None = None
        if complete.finish_reason is FinishReason.ERROR:
            report = handle._error_report
            error = SpacecraftError(
                handle.request_id,
                None if report is None else report.reason,
                "" if report is None else report.detail,
            )
        self._end_request(handle, error, now)

    def _receive_error(self, report: ErrorReport, now: float) -> None:
        self.counters.error_reports += 1
        if report.request_id is None:
            logger.warning("spacecraft error %s: %s", report.reason.name, report.detail)
            self.general_errors.append(report)
            return
        handle = self._requests.get(report.request_id)
        if handle is None:
            self._unmatched(report)
            return
        if report.reason is ErrorReason.RESEND_UNAVAILABLE:
            handle.recovery.unavailable(report, now)
            self._recovery_output(handle, now)
            return
        error: SpacecraftError
        if report.reason is ErrorReason.DUPLICATE_REQUEST:
            said = parse_duplicate_detail(report.detail)
            if said is not None and said.digest != request_digest(handle.request):
                # Another ground's request with this id was refused, not this one.
                self.counters.refusals_of_other_requests += 1
                logger.warning(
                    "request %d: the spacecraft refused another request with this id (%s); "
                    "this one goes on",
                    report.request_id,
                    report.detail,
                )
                return
            error = RequestIdInUseError(handle.request_id, report.detail)
        else:
            error = SpacecraftError(handle.request_id, report.reason, report.detail)
        handle._error_report = report
        self._end_request(handle, error, now)

    def _unmatched(self, message: Message) -> None:
        self.counters.unmatched_messages += 1
        logger.debug("message for a request not in flight: %s", message)

    def _end_request(self, handle: RequestHandle, error: RequestError | None, now: float) -> None:
        if self._requests.pop(handle.request_id, None) is None:
            return
        handle.recovery.close()
        if error is None:
            self.counters.answers_complete += 1
        else:
            self.counters.answers_failed += 1
        answer = handle._finish(error, now)
        logger.info(
            "< request %d: %s, %d ids%s",
            handle.request_id,
            answer.finish_reason,
            len(answer.received_ids),
            "" if error is None else f", {error}",
        )

    def _time_out(self, handle: RequestHandle, timeout_s: float) -> None:
        if handle.request_id not in self._requests:
            return
        now = asyncio.get_running_loop().time()
        assembler = handle.assembler
        try:
            self.cancel(handle.request_id)
        except LinkError as exc:  # the link went away: the timeout stands anyway
            logger.warning("request %d: cannot send Cancel: %s", handle.request_id, exc)
        error = RequestTimeoutError(
            handle.request_id,
            timeout_s,
            len(assembler.delivered_ids),
            assembler.missing_ranges(),
        )
        self._end_request(handle, error, now)

    def _answer(self, handle: RequestHandle, error: RequestError | None, now: float) -> Answer:
        assembler = handle.assembler
        received = assembler.delivered_ids
        return Answer(
            request_id=handle.request_id,
            prompt_ids=handle.request.prompt_ids,
            received_ids=received,
            text=self.tokenizer.decode(received, skip_special=True),
            finish_reason=assembler.finish_reason,
            error=error,
            time_to_first_token_s=assembler.time_to_first_token_s,
            total_s=now - handle.sent_at,
            token_arrival_s=tuple(t - handle.sent_at for t in assembler.arrival_times),
            end=assembler.end,
            stats=dataclasses.replace(assembler.stats),
            missing=assembler.missing_ranges(),
            lost=assembler.lost_ranges,
            counters=self.link_counters,
            drops=dict(self.endpoint.drops),
        )


__all__ = [
    "REQUEST_ID_MODULUS",
    "Answer",
    "GroundStation",
    "IdSource",
    "RequestError",
    "RequestHandle",
    "RequestIdInUseError",
    "RequestTimeoutError",
    "SpacecraftError",
    "StationCounters",
    "TokensLostError",
    "Update",
    "request_digest",
    "sequential_ids",
]
