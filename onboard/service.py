"""The onboard inference service: the spacecraft application behind the link, on asyncio.

:class:`OnboardService` is the asyncio adapter of the sans-I/O
:class:`~onboard.core.OnboardCore`: a :class:`~linkstack.endpoints.SpacecraftEndpoint`,
the core, a :class:`~linkstack.aio.DownlinkTransmitter` whose refill asks the core,
and the generation workers.  Received octets go to the endpoint and its events
to the core at loop time; the core's jobs run in a worker; its messages fill each TM
frame.  Generation never waits for the ground: ids go
into the core as they come and leave as fast as the downlink allows.

Two ways to generate:

* a :class:`~onboard.batching.BatchEngine` (``for_model``): one worker thread runs its
  steps; the core's jobs (up to ``CoreConfig.max_batch``) join the batch between
  steps, a Cancel makes its request leave at the next step;
* a :data:`GenerateFn` (tests, tools): each job runs alone in a worker thread, up to
  ``CoreConfig.max_batch`` at once.

What each request gets, and how lost ranges are sent again: :mod:`onboard.core`, whose
names are re-exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from linkstack.aio import DownlinkTransmitter, Link
from linkstack.endpoints import (
    CfdpPduReceived,
    KeysChanged,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
)
from linkstack.errors import Dropped, InvalidState, LocalProtocolError
from linkstack.inference.protocol import MAX_DEVICE_OCTETS, ErrorReason
from onboard.batching import BatchEngine, RequestEnded, StepEvent, TokenMade
from onboard.core import (
    MIN_FILL_OCTETS,
    CoreConfig,
    CoreCounters,
    Job,
    OnboardCore,
    params_from_wire,
    printable_ascii,
)
from onboard.generation import GenerationRequestError, GenerationResult, generate

if TYPE_CHECKING:
    from linkstack.sdls import LinkSecurity
    from onboard.files import OnboardFiles
    from onboard.model import ModelHandle

logger = logging.getLogger(__name__)

#: Runs one job: ``(job, on_token, cancel) -> result``; called in the worker thread.
GenerateFn = Callable[[Job, Callable[[int], object], threading.Event], GenerationResult]


def model_generator(handle: ModelHandle) -> GenerateFn:
    """The real generator: :func:`onboard.generation.generate` on ``handle``."""

    def run(
        job: Job, on_token: Callable[[int], object], cancel: threading.Event
    ) -> GenerationResult:
        return generate(handle, job.prompt_ids, job.params, on_token=on_token, cancel=cancel)

    return run


class _Refused:
    """The engine refused a job (GenerationRequestError): its request id and why."""

    __slots__ = ("detail", "request_id")

    def __init__(self, request_id: int, detail: str) -> None:
        self.request_id = request_id
        self.detail = detail


class _Aborted:
    """The engine raised unexpectedly; every request in it is dropped."""

    __slots__ = ("detail", "request_ids")

    def __init__(self, request_ids: tuple[int, ...], detail: str) -> None:
        self.request_ids = request_ids
        self.detail = detail


_WorkerEvent = StepEvent | _Refused | _Aborted


class BatchWorker:
    """The thread that runs a :class:`~onboard.batching.BatchEngine`'s steps.

    ``submit`` and ``cancel`` may be called from any thread; they take effect between
    steps.  ``deliver`` is called in the worker thread with the events of each step
    (ids, ends, refusals), in order; it must be quick (``call_soon_threadsafe``).
    """

    def __init__(
        self, engine: BatchEngine, deliver: Callable[[list[_WorkerEvent]], object]
    ) -> None:
        self.engine = engine
        self._deliver = deliver
        self._lock = threading.Lock()
        self._inbox: list[Job | int] = []
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="onboard-batch", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._inbox.append(job)
        self._wake.set()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._inbox.append(request_id)
        self._wake.set()

    def stop(self) -> None:
        """Stop after the step under way (the thread is a daemon)."""
        self._stopped = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        engine = self.engine
        while not self._stopped:
            with self._lock:
                commands, self._inbox = self._inbox, []
            events: list[_WorkerEvent] = []
            for command in commands:
                if isinstance(command, int):
                    engine.cancel(command)
                    continue
                try:
                    engine.admit(command.request_id, command.prompt_ids, command.params)
                except GenerationRequestError as exc:
                    events.append(_Refused(command.request_id, str(exc)))
            if engine.active:
                try:
                    events.extend(engine.step())
                except Exception as exc:  # a bug in the engine must not stop the service
                    logger.exception("the batch engine raised")
                    events.append(_Aborted(engine.abort(), f"{type(exc).__name__}: {exc}"))
            if events:
                self._deliver(events)
            if not engine.active and not self._stopped:
                self._wake.wait()
                self._wake.clear()


def device_name(handle: ModelHandle) -> str:
    """``cpu`` or ``cuda:0 NVIDIA H100 ...``, cut to the Housekeeping limit."""
    device = handle.device
    name = str(device)
    if device.type == "cuda":
        import torch

        name = f"cuda:{device.index or 0} {torch.cuda.get_device_name(device)}"
    return printable_ascii(name, MAX_DEVICE_OCTETS)


def memory_probe(handle: ModelHandle) -> Callable[[], int]:
    """Octets the model holds: CUDA allocated memory, else its parameters and buffers."""
    device = handle.device
    if device.type == "cuda":
        import torch

        return lambda: int(torch.cuda.memory_allocated(device))
    model = handle.model
    octets = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return lambda: int(octets)


class OnboardService:
    """The spacecraft application over one link (construct it inside a running loop).

    ``on_receive`` is the link's receive callback; ``attach(link)``, then
    ``await run()`` until cancelled, then ``close()``.
    """

    def __init__(
        self,
        generate_fn: GenerateFn | None = None,
        *,
        engine: BatchEngine | None = None,
        core_config: CoreConfig | None = None,
        link_config: LinkConfig | None = None,
        downlink_rate_bps: float | None = None,
        idle_interval: float = 0.25,
        memory: Callable[[], int] | None = None,
        on_generated: Callable[[int, tuple[int, ...]], object] | None = None,
        security: LinkSecurity | None = None,
        files: OnboardFiles | None = None,
    ) -> None:
        if downlink_rate_bps is not None and downlink_rate_bps <= 0:
            raise LocalProtocolError(f"downlink rate {downlink_rate_bps} bit/s must be positive")
        if idle_interval <= 0:
            raise LocalProtocolError(f"idle_interval {idle_interval} s must be positive")
        self._loop = asyncio.get_running_loop()
        #: With ``security`` (SDLS) every frame is verified up and protected down.
        self.endpoint = SpacecraftEndpoint(link_config or LinkConfig(), security)
        if (generate_fn is None) == (engine is None):
            raise LocalProtocolError("give either generate_fn or engine, not both or none")
        config = core_config or CoreConfig()
        if engine is not None and engine.max_batch != config.max_batch:
            raise LocalProtocolError(
                f"engine max_batch {engine.max_batch} != core max_batch {config.max_batch}"
            )
        self.core = OnboardCore(config, now=self._loop.time())
        self._generate = generate_fn
        self._rate = downlink_rate_bps
        self._idle_interval = idle_interval
        self._memory = memory
        #: Called with the request id and every id of a run when it ends (the ground's
        #: EndAck may free the core's copy at once; tools that compare keep their own).
        self._on_generated = on_generated
        self._link: Link | None = None
        self._transmitter: DownlinkTransmitter | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_batch, thread_name_prefix="onboard-generate"
        )
        #: GenerateFn runs under way: request id -> (task, its cancel event).
        self._jobs: dict[int, tuple[asyncio.Task[None], threading.Event]] = {}
        self._worker: BatchWorker | None = None
        if engine is not None:
            loop = self._loop
            self._worker = BatchWorker(
                engine, lambda events: loop.call_soon_threadsafe(self._batch_events, events)
            )
        #: Running requests whose Cancel went to the batch worker.
        self._cancels_sent: set[int] = set()
        self._closed = False
        #: Key management PDUs applied (SDLS), with the loop time they arrived.
        self.keys_changed: list[tuple[float, KeysChanged]] = []
        #: File delivery (CFDP, the model store; docs/cfdp.md), or None.
        self.files = files
        #: The worker each running request was given to, and the workers of models
        #: replaced (``replace_engine``) that still finish requests of their own.
        self._worker_of: dict[int, BatchWorker] = {}
        self._retired: list[BatchWorker] = []
        self._files_timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_model(
        cls,
        handle: ModelHandle,
        *,
        max_queue: int = 8,
        max_batch: int = 1,
        exact: bool = True,
        housekeeping_interval: float = 10.0,
        link_config: LinkConfig | None = None,
        downlink_rate_bps: float | None = None,
        idle_interval: float = 0.25,
        on_generated: Callable[[int, tuple[int, ...]], object] | None = None,
        security: LinkSecurity | None = None,
    ) -> OnboardService:
        """The service generating with ``handle`` through a :class:`BatchEngine` of
        ``max_batch`` requests (``exact``: see :mod:`onboard.batching`); its limits
        come from the model."""
        config = CoreConfig(
            max_queue=max_queue,
            max_batch=max_batch,
            context_positions=handle.max_positions,
            vocab_size=handle.vocab_size,
            housekeeping_interval=housekeeping_interval,
            device=device_name(handle),
        )
        return cls(
            engine=BatchEngine(handle, max_batch=max_batch, exact=exact),
            core_config=config,
            link_config=link_config,
            downlink_rate_bps=downlink_rate_bps,
            idle_interval=idle_interval,
            memory=memory_probe(handle),
            on_generated=on_generated,
            security=security,
        )

    # -- link side ---------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Send the downlink on ``link`` (once)."""
        if self._link is not None:
            raise InvalidState("the service is already attached to a link")
        self._link = link
        self._transmitter = DownlinkTransmitter(
            self.endpoint,
            link,
            rate_bps=self._rate,
            idle_interval=self._idle_interval,
            refill=self._refill,
        )

    def on_receive(self, data: bytes, now: float) -> None:
        """Link receive callback: uplink octets (CLTUs) at loop time ``now``."""
        if self._closed:
            return
        self.endpoint.receive_bytes(data, now)
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self.core.receive_message(event.message, now)
            elif isinstance(event, Dropped):
                self.core.receive_drop(event, now)
            elif isinstance(event, KeysChanged):
                self.keys_changed.append((now, event))
            elif isinstance(event, CfdpPduReceived) and self.files is not None:
                self.files.receive_pdu(event.pdu, now)
        self._pump_files(now)
        for running in self.core.running_ids:
            if not self.core.cancel_requested(running):
                continue
            job = self._jobs.get(running)
            if job is not None:
                job[1].set()
            elif self._worker is not None and running not in self._cancels_sent:
                self._cancels_sent.add(running)
                self._worker_of.get(running, self._worker).cancel(running)
        self._start_next()
        self._wake()

    async def run(self) -> None:
        """Transmit the downlink until cancelled."""
        if self._transmitter is None:
            raise InvalidState("attach(link) before run()")
        try:
            await self._transmitter.run()
        finally:
            for _, cancel in self._jobs.values():
                cancel.set()

    def close(self) -> None:
        """Stop the running generation (within one step) and close the link."""
        self._closed = True
        for task, cancel in list(self._jobs.values()):
            cancel.set()
            task.cancel()
        if self._worker is not None:
            self._worker.stop()
        for worker in self._retired:
            worker.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._link is not None:
            self._link.close()

    # -- generation --------------------------------------------------------------------

    def _wake(self) -> None:
        if self._transmitter is not None and (self.core.has_output or self.endpoint.clcw_changed):
            self._transmitter.wake()

    def _pump_files(self, now: float) -> None:
        """Queue the file service's PDUs on the CFDP VC while less than a few frames
        wait there (a download shares the downlink with the token stream), wake the
        transmitter, and set the file service's timer."""
        files = self.files
        if files is None or self._closed:
            return
        budget = 4 * self.endpoint.config.tm.data_field_length
        while self.endpoint.cfdp_pending_octets() < budget:
            pdus = files.pdus_to_send(now, 1)
            if not pdus:
                break
            self.endpoint.send_cfdp(pdus[0], now)
        if self.endpoint.pending_octets and self._transmitter is not None:
            self._transmitter.wake()
        if self._files_timer is not None:
            self._files_timer.cancel()
            self._files_timer = None
        when = files.get_timer()
        if when is not None:
            self._files_timer = self._loop.call_at(when, self._on_files_timer)

    def _on_files_timer(self) -> None:
        self._files_timer = None
        if self.files is None or self._closed:
            return
        now = self._loop.time()
        self.files.handle_timer(now)
        self._pump_files(now)

    def _refill(self, capacity: int) -> None:
        now = self._loop.time()
        if self.files is not None:
            self._pump_files(now)
        if self._memory is not None and now >= self.core.get_timer():
            self.core.set_memory_octets(self._memory())
        space = capacity - self.endpoint.pending_octets
        if space < MIN_FILL_OCTETS:
            return  # the next frame is full of what is already queued
        for message in self.core.fill(space, now):
            self.endpoint.send(message)

    def _start_next(self) -> None:
        if self._closed:
            return
        while (job := self.core.next_job(self._loop.time())) is not None:
            if self._worker is not None:
                self._worker_of[job.request_id] = self._worker
                self._worker.submit(job)
                continue
            cancel = threading.Event()
            task = self._loop.create_task(self._run_job(job, cancel))
            self._jobs[job.request_id] = (task, cancel)

    def _batch_events(self, events: list[_WorkerEvent]) -> None:
        """The batch worker's events of one step, at loop time."""
        if self._closed:
            return
        now = self._loop.time()
        core = self.core
        for event in events:
            if isinstance(event, TokenMade):
                core.token_generated(event.key, event.token_id, now)
            elif isinstance(event, RequestEnded):
                self._cancels_sent.discard(event.key)
                self._worker_of.pop(event.key, None)
                core.generation_finished(event.key, event.result, now)
                if self._on_generated is not None:
                    self._on_generated(event.key, tuple(event.result.generated_ids))
            elif isinstance(event, _Refused):
                core.generation_failed(
                    event.request_id, ErrorReason.MALFORMED_REQUEST, event.detail, now
                )
            else:
                for request_id in event.request_ids:
                    self._cancels_sent.discard(request_id)
                    self._worker_of.pop(request_id, None)
                    core.generation_failed(request_id, ErrorReason.INTERNAL, event.detail, now)
        self._retire_idle()
        self._wake()
        self._start_next()

    def replace_engine(self, engine: BatchEngine) -> None:
        """Run the requests started from now on on ``engine`` (a model just activated,
        docs/cfdp.md); those already running finish on the engine they started on,
        whose worker then stops."""
        old = self._worker
        if old is None:
            raise InvalidState("this service runs a generate_fn, not a batch engine")
        if engine.max_batch != old.engine.max_batch:
            raise LocalProtocolError(
                f"engine max_batch {engine.max_batch} != the service's {old.engine.max_batch}"
            )
        loop = self._loop
        self._worker = BatchWorker(
            engine, lambda events: loop.call_soon_threadsafe(self._batch_events, events)
        )
        self._retired.append(old)
        self._retire_idle()

    def _retire_idle(self) -> None:
        for worker in list(self._retired):
            if not any(w is worker for w in self._worker_of.values()):
                worker.stop()
                self._retired.remove(worker)

    async def _run_job(self, job: Job, cancel: threading.Event) -> None:
        loop = self._loop
        rid = job.request_id
        generate_fn = self._generate
        if generate_fn is None:  # pragma: no cover - the engine path never gets here
            raise InvalidState("no generate_fn: jobs go to the batch worker")

        def on_token(token_id: int) -> None:
            loop.call_soon_threadsafe(self._token, rid, token_id)

        try:
            result = await loop.run_in_executor(self._executor, generate_fn, job, on_token, cancel)
        except GenerationRequestError as exc:
            self.core.generation_failed(rid, ErrorReason.MALFORMED_REQUEST, str(exc), loop.time())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runner's failure must not stop the service
            logger.exception("request %d: the generator raised", rid)
            self.core.generation_failed(
                rid, ErrorReason.INTERNAL, f"{type(exc).__name__}: {exc}", loop.time()
            )
        else:
            self.core.generation_finished(rid, result, loop.time())
            if self._on_generated is not None:
                self._on_generated(rid, tuple(result.generated_ids))
        finally:
            self._jobs.pop(rid, None)
        self._wake()
        self._start_next()

    def _token(self, request_id: int, token_id: int) -> None:
        if request_id not in self.core.running_ids:
            return  # closed meanwhile
        self.core.token_generated(request_id, token_id, self._loop.time())
        if self._transmitter is not None:
            self._transmitter.wake()


__all__ = [
    "MIN_FILL_OCTETS",
    "BatchWorker",
    "CoreConfig",
    "CoreCounters",
    "GenerateFn",
    "Job",
    "OnboardCore",
    "OnboardService",
    "device_name",
    "memory_probe",
    "model_generator",
    "params_from_wire",
]
