"""The OpenAI-compatible HTTP gateway over one ground station (an ASGI app, Starlette).

Every request becomes a PromptRequest of the shared :class:`GroundStation`, which
multiplexes any number of them over the link with its restart-proof request ids;
each answer streams back as it arrives.  A client that goes away before its answer
is whole gets its request cancelled on board (a Cancel goes up), so the spacecraft
frees the slot for the next user.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``
(docs/gateway.md), the operator page ``GET /`` with its live state
``GET /operator/events`` (server-sent events) and ``GET /operator/state`` (JSON).
What linkstack adds to OpenAI's objects lives in the ``linkstack`` field, never in
the standard ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from groundstation.gateway.auth import ApiKey, ApiKeys, RateLimiter
from groundstation.gateway.schema import (
    ApiError,
    CompletionJob,
    ParseContext,
    StopMatcher,
    invalid,
    parse_chat,
    parse_completion,
)
from groundstation.recovery import RecoveryCounters
from groundstation.station import (
    Answer,
    GroundStation,
    RequestHandle,
    RequestIdInUseError,
    RequestTimeoutError,
    SpacecraftError,
    TokensLostError,
    Update,
)
from linkstack.endpoints import GroundCounters
from linkstack.errors import LinkError
from linkstack.inference.protocol import (
    MAX_PROMPT_IDS,
    ErrorReason,
    FinishReason,
    parse_busy_detail,
)

logger = logging.getLogger(__name__)

#: Request bodies larger than this are refused (413) before they are read whole.
MAX_BODY_OCTETS: Final = 1 << 20
#: Retry-After (seconds) of a 429 for a full queue on board, when its detail names none.
BUSY_RETRY_AFTER_S: Final = 5
#: Finished requests the operator page keeps showing.
KEPT_FINISHED: Final = 20
#: Seconds between two operator snapshots when nothing changes (counters move anyway).
OPERATOR_REFRESH_S: Final = 1.0
_STATIC: Final = Path(__file__).resolve().parent / "static"
_ANONYMOUS: Final = ApiKey("anonymous", "0" * 64, 1, operator=True)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What the gateway serves and how."""

    model_name: str
    #: The stop ids ``onboard --model`` uses: sent with every request.
    stop_ids: tuple[int, ...]
    #: The link's URL, shown on the operator page.
    link_url: str = ""
    max_prompt_tokens: int = MAX_PROMPT_IDS
    default_max_tokens: int = 256
    #: Seconds a request may take before it is cancelled on board (504).
    request_timeout_s: float = 300.0


# -- one request ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Stopped:
    """A stop string ended the text on the ground; ``tokens`` ids came before it."""

    tokens: int


@dataclass(frozen=True, slots=True)
class _Ended:
    answer: Answer


_Event = _Text | _Stopped | _Ended


@dataclass(eq=False)
class Tracked:
    """A request of the gateway: its handle, its text so far, what the page shows."""

    job: CompletionJob
    user: str
    handle: RequestHandle
    created: int
    started_at: float
    start_counters: GroundCounters
    start_recovery: RecoveryCounters
    matcher: StopMatcher
    events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    status: str = "sent"
    answer: Answer | None = None
    stopped_at: int | None = None
    #: Uplink bits sent from the submission to the first id (or the end): the request's
    #: own CLTUs, and those of other traffic sent meanwhile.
    uplink_bits: int | None = None

    @property
    def request_id(self) -> int:
        return self.handle.request_id


# -- the gateway ------------------------------------------------------------------------------


class Gateway:
    """The ASGI application (:attr:`app`) over ``station``."""

    def __init__(
        self,
        station: GroundStation,
        config: GatewayConfig,
        *,
        keys: ApiKeys | None = None,
        seed_source: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import secrets

        self.station = station
        self.config = config
        self.keys = keys
        self._clock = clock or time.monotonic
        self._limiter = RateLimiter()
        self._context = ParseContext(
            tokenizer=station.tokenizer,
            model_name=config.model_name,
            stop_ids=config.stop_ids,
            max_prompt_tokens=config.max_prompt_tokens,
            default_max_tokens=config.default_max_tokens,
            seed_source=seed_source or (lambda: secrets.randbits(64)),
        )
        self.active: dict[int, Tracked] = {}
        self.finished: deque[Tracked] = deque(maxlen=KEPT_FINISHED)
        #: Gateway counts, shown on the operator page.
        self.counters: dict[str, int] = {
            "requests": 0,
            "unauthorized": 0,
            "rate_limited": 0,
            "refused": 0,
            "disconnect_cancels": 0,
            "stop_cancels": 0,
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._last_frames = (0, 0.0)
        self.app = Starlette(
            routes=[
                Route("/", self._operator_page, methods=["GET"]),
                Route("/operator/events", self._operator_events, methods=["GET"]),
                Route("/operator/state", self._operator_state, methods=["GET"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/models/{model:path}", self._model, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._text, methods=["POST"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    async def close(self) -> None:
        """Cancel on board every request still in flight (the server is stopping)."""
        for tracked in list(self.active.values()):
            self._cancel(tracked, "server stopping; Cancel sent")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- errors --------------------------------------------------------------------------

    @staticmethod
    def _error(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._error(
            ApiError(404, f"no such endpoint: {request.url.path}", code="unknown_url")
        )

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return self._error(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))

    # -- authentication and rate ------------------------------------------------------------

    def _authorize(self, request: Request, *, operator: bool = False) -> ApiKey:
        if self.keys is None:
            return _ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        key = self.keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            self.counters["unauthorized"] += 1
            message = (
                "no API key: send 'Authorization: Bearer KEY'"
                if not header
                else "the API key is not valid"
            )
            raise ApiError(
                401,
                message,
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="linkstack"'},
            )
        if operator and not key.operator:
            raise ApiError(
                403,
                f"the key {key.name!r} may not open the operator page",
                type="permission_error",
                code="not_operator",
            )
        return key

    def _rate(self, key: ApiKey) -> None:
        if self.keys is None:
            return
        wait = self._limiter.acquire(key.name, key.requests_per_minute, self._clock())
        if wait is not None:
            self.counters["rate_limited"] += 1
            raise ApiError(
                429,
                f"rate limit of {key.requests_per_minute} requests per minute reached for"
                f" key {key.name!r}; retry in {math.ceil(wait)} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    @staticmethod
    async def _read_json(request: Request) -> object:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_OCTETS:
            raise ApiError(
                413, f"the request body is over {MAX_BODY_OCTETS} octets", code="body_too_large"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_OCTETS:
                raise ApiError(
                    413, f"the request body is over {MAX_BODY_OCTETS} octets", code="body_too_large"
                )
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            where = getattr(exc, "pos", getattr(exc, "start", "?"))
            raise invalid(
                f"the request body is not valid JSON (at octet {where})", code="invalid_json"
            ) from None

    # -- /v1/models --------------------------------------------------------------------------

    def _model_object(self) -> dict[str, Any]:
        housekeeping = self.station.housekeeping
        return {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "linkstack",
            "linkstack": {
                "device": None if housekeeping is None else housekeeping.device,
                "queue_depth": None if housekeeping is None else housekeeping.queue_depth,
                "link": self.config.link_url,
            },
        }

    async def _models(self, request: Request) -> Response:
        try:
            self._rate(self._authorize(request))
        except ApiError as exc:
            return self._error(exc)
        return JSONResponse({"object": "list", "data": [self._model_object()]})

    async def _model(self, request: Request) -> Response:
        try:
            self._rate(self._authorize(request))
            name = request.path_params["model"]
            if name != self.config.model_name:
                raise ApiError(
                    404,
                    f"The model '{name}' does not exist",
                    param="model",
                    code="model_not_found",
                )
        except ApiError as exc:
            return self._error(exc)
        return JSONResponse(self._model_object())

    # -- completions ----------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        return await self._complete(request, parse_chat)

    async def _text(self, request: Request) -> Response:
        return await self._complete(request, parse_completion)

    async def _complete(
        self, request: Request, parse: Callable[[object, ParseContext], CompletionJob]
    ) -> Response:
        try:
            key = self._authorize(request)
            self._rate(key)
            job = parse(await self._read_json(request), self._context)
            tracked = self._submit(job, key.name)
        except ApiError as exc:
            self.counters["refused"] += 1
            return self._error(exc)
        # Wait for the first word of the spacecraft, so that a refusal (a full queue)
        # is an HTTP status, not an error inside a stream already begun.
        first = await self._next_or_gone(request, tracked)
        if first is None:
            return Response(status_code=499)
        if isinstance(first, _Ended):
            failure = _failure(first.answer)
            if failure is not None:
                return self._error(failure)
        if job.stream:
            return StreamingResponse(
                self._sse(tracked, first),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        event: _Event = first
        while not isinstance(event, _Stopped | _Ended):
            following = await self._next_or_gone(request, tracked)
            if following is None:
                return Response(status_code=499)
            event = following
        if isinstance(event, _Ended) and (failure := _failure(event.answer)) is not None:
            return self._error(failure)
        return JSONResponse(self._whole(tracked, event))

    def _submit(self, job: CompletionJob, user: str) -> Tracked:
        station = self.station
        before = station.link_counters
        recovery = dataclasses.replace(station.recovery_counters)
        matcher = StopMatcher(job.stop)
        holder: list[Tracked] = []

        def on_update(update: Update) -> None:
            if holder:
                self._on_update(holder[0], update)

        try:
            handle = station.submit(job.prompt_ids, job.params, on_update=on_update)
        except LinkError as exc:
            raise ApiError(
                503, f"the link is not ready: {exc}", type="server_error", code="link_down"
            ) from exc
        tracked = Tracked(
            job=job,
            user=user,
            handle=handle,
            created=int(time.time()),
            started_at=self._clock(),
            start_counters=before,
            start_recovery=recovery,
            matcher=matcher,
        )
        holder.append(tracked)
        self.active[handle.request_id] = tracked
        self.counters["requests"] += 1
        task = asyncio.get_running_loop().create_task(self._await_answer(tracked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed.set()
        logger.info(
            "request %d from %s: %d prompt ids, %s",
            handle.request_id,
            user,
            len(job.prompt_ids),
            job.params,
        )
        return tracked

    def _on_update(self, tracked: Tracked, update: Update) -> None:
        if tracked.uplink_bits is None:  # the whole request has gone up by now
            tracked.uplink_bits = self._uplink_bits(tracked)
        if update.lost is not None:
            tracked.status = "tokens lost"
        tracked.tokens = update.first_index + len(update.ids)
        if tracked.matcher.stopped:
            return
        if tracked.status == "sent":
            tracked.status = "streaming"
        text, stopped = tracked.matcher.push(update.text)
        if text:
            tracked.text.append(text)
            tracked.events.put_nowait(_Text(text))
        if stopped:
            tracked.stopped_at = tracked.tokens
            tracked.status = "stop string; Cancel sent"
            tracked.events.put_nowait(_Stopped(tracked.tokens))
            self.counters["stop_cancels"] += 1
            with contextlib.suppress(LinkError):
                tracked.handle.cancel()
        self._changed.set()

    async def _await_answer(self, tracked: Tracked) -> None:
        answer = await tracked.handle.answer(self.config.request_timeout_s)
        tail = tracked.matcher.flush()
        if tail:
            tracked.text.append(tail)
            tracked.events.put_nowait(_Text(tail))
        tracked.answer = answer
        if tracked.uplink_bits is None:
            tracked.uplink_bits = self._uplink_bits(tracked)
        if tracked.stopped_at is None and tracked.status != "client gone; Cancel sent":
            failure = _failure(answer)
            tracked.status = (
                _finish_reason(answer) or "?" if failure is None else (failure.code or "error")
            )
        tracked.events.put_nowait(_Ended(answer))
        self.active.pop(tracked.request_id, None)
        self.finished.appendleft(tracked)
        self._changed.set()

    async def _next_or_gone(self, request: Request, tracked: Tracked) -> _Event | None:
        """The request's next event, or None when the client went away first (then the
        request is cancelled on board)."""
        getting = asyncio.ensure_future(tracked.events.get())
        watching = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({getting, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not getting.done():
                getting.cancel()
        if getting.done() and not getting.cancelled():
            return getting.result()
        self._cancel(tracked, "client gone; Cancel sent")
        return None

    def _cancel(self, tracked: Tracked, status: str) -> None:
        """Cancel ``tracked`` on board if it is still in flight."""
        if tracked.request_id not in self.station.in_flight or tracked.handle.done:
            return
        try:
            self.station.cancel(tracked.request_id)
        except LinkError as exc:
            logger.warning("request %d: cannot send Cancel: %s", tracked.request_id, exc)
            return
        tracked.status = status
        if status.startswith("client gone"):
            self.counters["disconnect_cancels"] += 1
        logger.info("request %d: %s", tracked.request_id, status)
        self._changed.set()

    # -- what goes back -------------------------------------------------------------------------

    def _uplink_bits(self, tracked: Tracked) -> int:
        octets = self.station.link_counters.uplink_octets - tracked.start_counters.uplink_octets
        return octets * 8

    def _extension(self, tracked: Tracked) -> dict[str, Any]:
        """linkstack's own figures of one request (the ``linkstack`` field)."""
        answer = tracked.answer
        counters = self.station.link_counters if answer is None else answer.counters
        start = tracked.start_counters
        recovery = self.station.recovery_counters
        end = None if answer is None else answer.end
        ground_ttft = (
            tracked.handle.assembler.time_to_first_token_s
            if answer is None
            else answer.time_to_first_token_s
        )
        return {
            "request_id": tracked.request_id,
            "seed": tracked.job.params.seed,
            "seed_drawn": tracked.job.seed_drawn,
            "prompt_ids": len(tracked.job.prompt_ids),
            "uplink_bits": tracked.uplink_bits,
            "time_to_first_token_s": {
                "ground": ground_ttft,
                "onboard": None if end is None else end.time_to_first_token_us / 1e6,
            },
            "onboard_tokens_per_s": None if end is None else end.tokens_per_s_milli / 1e3,
            "finish_on_board": _finish_label(None if answer is None else answer.finish_reason),
            "stopped_on_ground": tracked.stopped_at is not None,
            # The link is shared: these are what it did while this request was in flight.
            "during_request": {
                "rs_symbols_corrected": counters.rs_corrected_symbols - start.rs_corrected_symbols,
                "rs_uncorrectable": counters.rs_uncorrectable - start.rs_uncorrectable,
                "frames_received": counters.frames_received - start.frames_received,
                "frames_lost": counters.frames_lost - start.frames_lost,
                "tc_frames_retransmitted": counters.tc_frames_retransmitted
                - start.tc_frames_retransmitted,
                "resend_ranges_requested": recovery.ranges_requested
                - tracked.start_recovery.ranges_requested,
                "resend_ids_requested": recovery.ids_requested
                - tracked.start_recovery.ids_requested,
            },
            "lost_ranges": []
            if answer is None
            else [[r.first_index, r.count] for r in answer.lost],
        }

    def _usage(self, tracked: Tracked, completion: int) -> dict[str, int]:
        prompt = len(tracked.job.prompt_ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _outcome(self, tracked: Tracked, event: _Stopped | _Ended) -> tuple[str, int]:
        """(finish reason, completion tokens) of a request that ended without an error."""
        if isinstance(event, _Stopped):
            return "stop", event.tokens
        answer = event.answer
        return _finish_reason(answer) or "stop", len(answer.received_ids)

    def _whole(self, tracked: Tracked, event: _Stopped | _Ended) -> dict[str, Any]:
        reason, completion = self._outcome(tracked, event)
        text = "".join(tracked.text)
        kind = tracked.job.kind
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        return {
            "id": _object_id(tracked),
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": tracked.created,
            "model": tracked.job.model,
            "choices": [choice],
            "usage": self._usage(tracked, completion),
            "system_fingerprint": None,
            "linkstack": self._extension(tracked),
        }

    def _chunk(
        self, tracked: Tracked, *, text: str | None, reason: str | None, first: bool = False
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        if tracked.job.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
            kind = "chat.completion.chunk"
        else:
            choice["text"] = text or ""
            kind = "text_completion"
        return {
            "id": _object_id(tracked),
            "object": kind,
            "created": tracked.created,
            "model": tracked.job.model,
            "choices": [choice],
            "system_fingerprint": None,
        }

    async def _sse(self, tracked: Tracked, first: _Event) -> AsyncIterator[bytes]:
        """The answer as server-sent events: OpenAI's chunks, then ``[DONE]``."""
        finished = False
        try:
            if tracked.job.kind == "chat":
                yield _sse(self._chunk(tracked, text="", reason=None, first=True))
            event = first
            while True:
                if isinstance(event, _Text):
                    yield _sse(self._chunk(tracked, text=event.text, reason=None))
                elif isinstance(event, _Ended) and (failure := _failure(event.answer)):
                    error = failure.body()
                    error["linkstack"] = self._extension(tracked)
                    yield _sse(error)
                    break
                else:
                    reason, completion = self._outcome(tracked, event)
                    last = self._chunk(tracked, text=None, reason=reason)
                    last["linkstack"] = self._extension(tracked)
                    yield _sse(last)
                    if tracked.job.include_usage:
                        usage = self._chunk(tracked, text=None, reason=None)
                        usage["choices"] = []
                        usage["usage"] = self._usage(tracked, completion)
                        yield _sse(usage)
                    break
                event = await tracked.events.get()
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:  # the client went away mid-stream
                self._cancel(tracked, "client gone; Cancel sent")

    # -- the operator page -------------------------------------------------------------------------

    async def _operator_page(self, request: Request) -> Response:
        html = (_STATIC / "operator.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8")

    async def _operator_state(self, request: Request) -> Response:
        try:
            self._authorize(request, operator=True)
        except ApiError as exc:
            return self._error(exc)
        return JSONResponse(self.snapshot())

    async def _operator_events(self, request: Request) -> Response:
        try:
            self._authorize(request, operator=True)
        except ApiError as exc:
            return self._error(exc)

        async def events() -> AsyncIterator[bytes]:
            while True:
                self._changed.clear()
                yield _sse(self.snapshot())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), OPERATOR_REFRESH_S)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def snapshot(self) -> dict[str, Any]:
        """What the operator page shows: the link, the spacecraft, the requests."""
        from linkstack.sdls.keystore import security_record

        station = self.station
        endpoint = station.endpoint
        counters = station.link_counters
        now = self._clock()
        if counters.frames_received != self._last_frames[0]:
            self._last_frames = (counters.frames_received, now)
        clcw = endpoint.last_clcw
        sync_state = endpoint.sync_state.value
        housekeeping = station.housekeeping
        return {
            "model": self.config.model_name,
            "link": {
                "url": self.config.link_url,
                "frame_lock": sync_state,
                "last_frame_age_s": None
                if not counters.frames_received
                else round(now - self._last_frames[1], 3),
                "fop": {
                    "state": endpoint.fop.state.name,
                    "vs": endpoint.fop.vs,
                    "sent_queue": endpoint.fop.sent_queue_length,
                    "backlog": endpoint.fop.backlog_length,
                },
                "clcw": None
                if clcw is None
                else {
                    "vcid": clcw.vcid,
                    "report_value": clcw.report_value,
                    "lockout": clcw.lockout,
                    "wait": clcw.wait,
                    "retransmit": clcw.retransmit,
                    "no_rf_available": clcw.no_rf_available,
                    "no_bit_lock": clcw.no_bit_lock,
                    "farm_b_counter": clcw.farm_b_counter,
                },
                "counters": dataclasses.asdict(counters),
                "drops": dict(sorted(endpoint.drops.items())),
                "sdls": security_record(endpoint.security is not None, endpoint.drops),
            },
            "spacecraft": None
            if housekeeping is None
            else {
                "device": housekeeping.device,
                "queue_depth": housekeeping.queue_depth,
                "tokens_per_s": housekeeping.tokens_per_s_milli / 1e3,
                "memory_used_octets": housekeeping.memory_used_octets,
                "uptime_s": housekeeping.uptime_s,
                "age_s": None
                if station.housekeeping_at is None
                else round(asyncio.get_running_loop().time() - station.housekeeping_at, 3),
            },
            "station": {
                **dataclasses.asdict(station.counters),
                "in_flight": list(station.in_flight),
            },
            "recovery": dataclasses.asdict(station.recovery_counters),
            "gateway": dict(self.counters),
            "requests": [self._request_view(t, now) for t in self.active.values()]
            + [self._request_view(t, now) for t in self.finished],
        }

    def _request_view(self, tracked: Tracked, now: float) -> dict[str, Any]:
        return {
            "request_id": tracked.request_id,
            "user": tracked.user,
            "kind": tracked.job.kind,
            "status": tracked.status,
            "in_flight": tracked.request_id in self.active,
            "prompt": tracked.job.preview,
            "text": "".join(tracked.text),
            "tokens": tracked.tokens,
            "max_tokens": tracked.job.params.max_new_tokens,
            "finish_on_board": _finish_label(
                None if tracked.answer is None else tracked.answer.finish_reason
            ),
            "age_s": round(now - tracked.started_at, 3),
        }


# -- helpers ----------------------------------------------------------------------------------


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _object_id(tracked: Tracked) -> str:
    prefix = "chatcmpl" if tracked.job.kind == "chat" else "cmpl"
    return f"{prefix}-ls{tracked.created:x}-{tracked.request_id}"


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _finish_label(reason: FinishReason | None) -> str | None:
    return None if reason is None else reason.label


def _finish_reason(answer: Answer) -> str | None:
    """OpenAI's finish reason of a whole answer: ``stop`` or ``length``."""
    if answer.finish_reason is FinishReason.MAX_TOKENS:
        return "length"
    if answer.finish_reason is FinishReason.STOP_ID:
        return "stop"
    return None


def _retry_after(detail: str) -> int:
    """Retry-After for a QUEUE_FULL report: the spacecraft's hint (docs/protocol.md §8.2,
    in milliseconds on the wire), at least 1 s; :data:`BUSY_RETRY_AFTER_S` without one."""
    busy = parse_busy_detail(detail)
    return BUSY_RETRY_AFTER_S if busy is None else max(1, busy.retry_after_s)


def _failure(answer: Answer) -> ApiError | None:
    """The error of an answer that did not end in ``stop`` or ``length``, else None."""
    error = answer.error
    rid = answer.request_id
    if error is None:
        if answer.finish_reason is FinishReason.CANCELLED:
            return ApiError(
                502,
                f"request {rid} was cancelled on board before its answer was whole",
                type="server_error",
                code="cancelled",
            )
        return None
    if isinstance(error, RequestIdInUseError):
        return ApiError(503, str(error), type="server_error", code="request_id_in_use")
    if isinstance(error, SpacecraftError):
        if error.reason is ErrorReason.QUEUE_FULL:
            wait = _retry_after(error.detail)
            return ApiError(
                429,
                f"the spacecraft is busy ({error.detail or 'queue full'}); retry in {wait} s",
                type="rate_limit_error",
                code="spacecraft_busy",
                headers={"Retry-After": str(wait)},
            )
        if error.reason is ErrorReason.PROMPT_TOO_LONG:
            return ApiError(413, str(error), code="prompt_too_long")
        if error.reason is ErrorReason.OUT_OF_MEMORY:
            return ApiError(503, str(error), type="server_error", code="spacecraft_out_of_memory")
        return ApiError(502, str(error), type="server_error", code="spacecraft_error")
    if isinstance(error, TokensLostError):
        return ApiError(502, str(error), type="server_error", code="link_lost")
    if isinstance(error, RequestTimeoutError):
        return ApiError(504, str(error), type="server_error", code="timeout")
    return ApiError(502, str(error), type="server_error", code="link_error")


__all__ = ["BUSY_RETRY_AFTER_S", "MAX_BODY_OCTETS", "Gateway", "GatewayConfig", "Tracked"]
