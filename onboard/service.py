"""The onboard inference service: the spacecraft application behind the link, on asyncio.

:class:`OnboardService` is the asyncio adapter of the sans-I/O
:class:`~onboard.core.OnboardCore`: a :class:`~linkstack.endpoints.SpacecraftEndpoint`,
the core, a :class:`~linkstack.aio.DownlinkTransmitter` whose refill asks the core,
and one generation worker thread.  Received octets go to the endpoint and its events
to the core at loop time; the core's jobs run in the worker; its messages fill each TM
frame.  Generation never waits for the ground: ids go
into the core as they come and leave as fast as the downlink allows.

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
from linkstack.endpoints import LinkConfig, MessageReceived, SpacecraftEndpoint
from linkstack.errors import Dropped, InvalidState, LocalProtocolError
from linkstack.inference.protocol import MAX_DEVICE_OCTETS, ErrorReason
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
        generate_fn: GenerateFn,
        *,
        core_config: CoreConfig | None = None,
        link_config: LinkConfig | None = None,
        downlink_rate_bps: float | None = None,
        idle_interval: float = 0.25,
        memory: Callable[[], int] | None = None,
        on_generated: Callable[[int, tuple[int, ...]], object] | None = None,
        security: LinkSecurity | None = None,
    ) -> None:
        if downlink_rate_bps is not None and downlink_rate_bps <= 0:
            raise LocalProtocolError(f"downlink rate {downlink_rate_bps} bit/s must be positive")
        if idle_interval <= 0:
            raise LocalProtocolError(f"idle_interval {idle_interval} s must be positive")
        self._loop = asyncio.get_running_loop()
        #: With ``security`` (SDLS) every frame is verified up and protected down.
        self.endpoint = SpacecraftEndpoint(link_config or LinkConfig(), security)
        self.core = OnboardCore(core_config or CoreConfig(), now=self._loop.time())
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
            max_workers=1, thread_name_prefix="onboard-generate"
        )
        self._cancel: threading.Event | None = None
        self._job_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def for_model(
        cls,
        handle: ModelHandle,
        *,
        max_queue: int = 8,
        housekeeping_interval: float = 10.0,
        link_config: LinkConfig | None = None,
        downlink_rate_bps: float | None = None,
        idle_interval: float = 0.25,
        on_generated: Callable[[int, tuple[int, ...]], object] | None = None,
        security: LinkSecurity | None = None,
    ) -> OnboardService:
        """The service generating with ``handle``; its limits come from the model."""
        config = CoreConfig(
            max_queue=max_queue,
            context_positions=handle.max_positions,
            vocab_size=handle.vocab_size,
            housekeeping_interval=housekeeping_interval,
            device=device_name(handle),
        )
        return cls(
            model_generator(handle),
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
        running = self.core.running
        if running is not None and self._cancel is not None and self.core.cancel_requested(running):
            self._cancel.set()
        self._start_next()
        self._wake()

    async def run(self) -> None:
        """Transmit the downlink until cancelled."""
        if self._transmitter is None:
            raise InvalidState("attach(link) before run()")
        try:
            await self._transmitter.run()
        finally:
            if self._cancel is not None:
                self._cancel.set()

    def close(self) -> None:
        """Stop the running generation (within one step) and close the link."""
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        if self._job_task is not None:
            self._job_task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._link is not None:
            self._link.close()

    # -- generation --------------------------------------------------------------------

    def _wake(self) -> None:
        if self._transmitter is not None and (self.core.has_output or self.endpoint.clcw_changed):
            self._transmitter.wake()

    def _refill(self, capacity: int) -> None:
        now = self._loop.time()
        if self._memory is not None and now >= self.core.get_timer():
            self.core.set_memory_octets(self._memory())
        space = capacity - self.endpoint.pending_octets
        if space < MIN_FILL_OCTETS:
            return  # the next frame is full of what is already queued
        for message in self.core.fill(space, now):
            self.endpoint.send(message)

    def _start_next(self) -> None:
        if self._closed or self._job_task is not None:
            return
        job = self.core.next_job(self._loop.time())
        if job is None:
            return
        self._cancel = threading.Event()
        self._job_task = self._loop.create_task(self._run_job(job, self._cancel))

    async def _run_job(self, job: Job, cancel: threading.Event) -> None:
        loop = self._loop
        rid = job.request_id

        def on_token(token_id: int) -> None:
            loop.call_soon_threadsafe(self._token, rid, token_id)

        try:
            result = await loop.run_in_executor(
                self._executor, self._generate, job, on_token, cancel
            )
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
            self._job_task = None
            self._cancel = None
        self._wake()
        self._start_next()

    def _token(self, request_id: int, token_id: int) -> None:
        if self.core.running != request_id:
            return  # closed meanwhile
        self.core.token_generated(request_id, token_id, self._loop.time())
        if self._transmitter is not None:
            self._transmitter.wake()


__all__ = [
    "MIN_FILL_OCTETS",
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
