"""The whole system in one process on a virtual clock: ground, link, spacecraft.

A discrete-event simulation that composes the same sans-I/O pieces the live
programs use - :class:`~linkstack.endpoints.GroundEndpoint`,
:class:`~groundstation.assembler.TokenAssembler`, two seeded
:class:`~linkstack.radio.channel.Channel` objects, :class:`~linkstack.endpoints.SpacecraftEndpoint`
and :class:`~onboard.service.OnboardCore` - and advances time from one event to the
next instead of waiting.  Runs are deterministic: the same prompt, parameters, link
and seed give the same events, counters and times, whatever the machine.

The onboard model runs for real (``generate`` is injected); its ids are then
released on the virtual clock, one every ``token_interval_s`` after
``first_token_s``, so that the link sees a stream as it would in orbit.  Generation
never waits for the ground: ids go down as they come, lost or not.

The ground side recovers what the downlink lost with the same
:class:`~groundstation.recovery.StreamRecovery` policy the asyncio ground station
uses (ResendRequest for gaps and a missing end, EndAck when whole, lost ranges when
the spacecraft no longer holds them), and :class:`MissionResult` says what it cost.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from groundstation.assembler import AssemblerStats, TokenAssembler
from groundstation.recovery import (
    RecoveryConfig,
    RecoveryCounters,
    RecoveryFailed,
    StreamRecovery,
)
from linkstack.endpoints import (
    EphemeralSecurity,
    GroundCounters,
    GroundEndpoint,
    KeysChanged,
    LinkConfig,
    MessageReceived,
    SpacecraftCounters,
    SpacecraftEndpoint,
    ephemeral_security,
)
from linkstack.errors import Dropped, Layer, LocalProtocolError
from linkstack.inference.protocol import (
    EndOfStream,
    ErrorReason,
    ErrorReport,
    GenerationParams,
    Message,
    PromptRequest,
    TokenChunk,
    TokenRange,
    encode_message,
)
from linkstack.packets.space_packet import PRIMARY_HEADER_LENGTH
from linkstack.radio.channel import Channel, ChannelConfig, ChannelStats
from linkstack.sdls import LinkSecurity
from linkstack.tm.channels import (
    FramesLost,
)
from onboard.generation import FinishReason, GenerationResult
from onboard.service import CoreConfig, CoreCounters, Job, OnboardCore

if TYPE_CHECKING:
    from linkstack.radio.coded import CodedStats

logger = logging.getLogger(__name__)

#: Runs one job to the end on the real model: ``job -> result``.
Generate = Callable[[Job], GenerationResult]


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionConfig:
    """One simulated pass: link, channels, onboard timing, seed."""

    link: LinkConfig = field(default_factory=LinkConfig)
    uplink: ChannelConfig
    downlink: ChannelConfig
    seed: int = 0
    #: Virtual seconds from the start of a job to its first id, then between ids.
    first_token_s: float = 0.05
    token_interval_s: float = 0.01
    #: Idle frames keep the ground locked and carry the CLCW when nothing waits.
    idle_interval_s: float = 0.25
    #: Give up (virtual seconds) if the answer has not arrived by then.
    time_limit_s: float = 3600.0
    #: After the answer, run on (at most this long) until the uplink is quiet, so that
    #: the EndAck and every command sent is delivered and counted.
    settle_s: float = 30.0
    core: CoreConfig = field(default_factory=CoreConfig)
    #: The ground's recovery policy (docs/protocol.md §10).
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self) -> None:
        for name in (
            "first_token_s",
            "token_interval_s",
            "idle_interval_s",
            "time_limit_s",
            "settle_s",
        ):
            value = getattr(self, name)
            zero_ok = name in ("first_token_s", "settle_s")
            if not math.isfinite(value) or value < 0 or (not zero_ok and value == 0):
                raise LocalProtocolError(f"{name} {value} s must be positive and finite")
        if self.uplink.coding != "none":
            raise LocalProtocolError(
                f"uplink coding {self.uplink.coding!r}: only a downlink is coded"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionResult:
    """What one simulated request gave, on board and on the ground."""

    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    received_ids: tuple[int, ...]
    finish_reason: str | None
    error: str | None
    time_to_first_token_s: float | None
    total_s: float | None
    uplink_bits: int
    ground: GroundCounters
    spacecraft: SpacecraftCounters
    uplink_channel: ChannelStats
    downlink_channel: ChannelStats
    drops: dict[str, int]
    #: The ground's recovery traffic (ResendRequests, ranges, EndAcks, tokens lost).
    recovery: RecoveryCounters
    #: The request's reassembly statistics (duplicates dropped, out of order...).
    assembly: AssemblerStats
    #: The onboard application's counters (ids and ends resent, resends refused...).
    onboard: CoreCounters
    #: Index ranges given up as lost (an unknown end's tail included); empty if whole.
    lost: tuple[TokenRange, ...]
    #: Every message the ground sent up, in order, and every one the onboard
    #: application took, in order: equal when each was executed once and in order.
    commands_sent: tuple[Message, ...]
    commands_executed: tuple[Message, ...]
    #: Packet octets (header included) of the recovery messages: ResendRequests and
    #: EndAcks up, resent TokenChunks and EndOfStreams down.
    recovery_uplink_octets: int
    recovery_downlink_octets: int
    #: The coded downlink's stage (symbols, raw bit errors, slips, hypothesis), when the
    #: downlink has coding="conv"; else None.
    downlink_coded: CodedStats | None = None
    #: Key management PDUs the ground sent up (``key_management=``), and what the
    #: spacecraft did with them, in order.
    key_management_sent: int = 0
    keys_changed: tuple[KeysChanged, ...] = ()

    @property
    def match(self) -> bool:
        return self.error is None and self.received_ids == self.generated_ids


class _Release:
    """The running job's ids, released one by one on the virtual clock."""

    def __init__(self, job: Job, result: GenerationResult, start: float, config: MissionConfig):
        self.job = job
        self.result = result
        self.released = 0
        self._start = start + config.first_token_s
        self._interval = config.token_interval_s

    def due(self) -> float:
        """When the next id (or, after the last, the end) is released."""
        return self._start + self.released * self._interval


class Mission:
    """Ground station, link and spacecraft wired together on a virtual clock."""

    def __init__(
        self,
        config: MissionConfig,
        generate: Generate,
        *,
        security: tuple[LinkSecurity, LinkSecurity] | None = None,
        tc_vc_security: Mapping[int, LinkSecurity] | None = None,
        key_management: Sequence[tuple[float, bytes]] = (),
    ) -> None:
        """``security``: SDLS for (ground, spacecraft), or None for a link in the clear;
        ``tc_vc_security``: the ground's sending SDLS of the other TC VCs (a TC SA
        applies to one VC).  ``key_management``: (virtual time, PDU) the ground sends
        up on APID KEY_MANAGEMENT, on the VC ``config.link.tc_routes`` gives it."""
        self.config = config
        self._generate = generate
        seeds = random.Random(config.seed)
        self.uplink = Channel(config.uplink, random.Random(seeds.getrandbits(64)))
        self.downlink = Channel(
            config.downlink, random.Random(seeds.getrandbits(64)), tm_coding=config.link.tm_coding
        )
        ground_security, spacecraft_security = security or (None, None)
        self.ground = GroundEndpoint(config.link, ground_security, vc_security=tc_vc_security)
        self.spacecraft = SpacecraftEndpoint(config.link, spacecraft_security)
        self.now = 0.0
        self.core = OnboardCore(config.core, now=self.now)
        rate = config.downlink.rate_bps
        self._cadu_time = config.link.tm_coding.cadu_length * 8 / rate if rate else 0.0
        self._next_frame = 0.0
        self._last_frame = -math.inf
        self._trailing_idle = False
        self._release: _Release | None = None
        self._assemblers: dict[int, TokenAssembler] = {}
        self._recoveries: dict[int, StreamRecovery] = {}
        self.recovery_counters = RecoveryCounters()
        self._failures: dict[int, RecoveryFailed] = {}
        self._errors: dict[int, ErrorReport] = {}
        self._generated: dict[int, tuple[int, ...]] = {}
        self._commands_sent: list[Message] = []
        self._commands_executed: list[Message] = []
        self._recovery_up_octets = 0
        self._key_management = sorted(key_management, key=lambda item: item[0])
        self._key_management_sent = 0
        self.keys_changed: list[KeysChanged] = []

    # -- ground side -----------------------------------------------------------------

    def submit(self, request: PromptRequest) -> None:
        """Send a request up now."""
        assembler = TokenAssembler(
            request.request_id, max_tokens=request.params.max_new_tokens, started_at=self.now
        )
        self._assemblers[request.request_id] = assembler
        self._recoveries[request.request_id] = StreamRecovery(
            assembler, config=self.config.recovery, now=self.now, counters=self.recovery_counters
        )
        self._send(request)

    def _send(self, message: Message) -> None:
        self._commands_sent.append(message)
        self.ground.send(message, self.now)
        self._uplink()

    def _uplink(self) -> None:
        for cltu in self.ground.data_to_send():
            self.uplink.send(cltu, self.now)

    def _ground_events(self) -> None:
        while (event := self.ground.next_event()) is not None:
            if isinstance(event, FramesLost):
                for recovery in self._recoveries.values():
                    recovery.frames_lost(self.now)
                continue
            if not isinstance(event, MessageReceived):
                continue
            message = event.message
            if isinstance(message, TokenChunk | EndOfStream):
                assembler = self._assemblers.get(message.request_id)
                if assembler is None:
                    continue
                if isinstance(message, TokenChunk):
                    assembler.receive_chunk(message, self.now)
                else:
                    assembler.receive_end(message, self.now)
                assembler.next_ids()  # the ids stay in delivered_ids
                self._recoveries[message.request_id].update(self.now)
            elif isinstance(message, ErrorReport) and message.request_id is not None:
                watcher = self._recoveries.get(message.request_id)
                if watcher is None:
                    continue
                if message.reason is ErrorReason.RESEND_UNAVAILABLE:
                    watcher.unavailable(message, self.now)
                else:
                    self._errors[message.request_id] = message
                    watcher.close()
        self._run_recovery()

    def _uplink_clear(self) -> bool:
        """FOP-1 holds no command unacknowledged: a new request would go at once.

        While one is held, asking again would only queue copies behind it (COP-1
        delivers it, or alerts and purges it, after which the policy asks again).
        """
        fop = self.ground.fop
        return fop.sent_queue_length == 0 and fop.backlog_length == 0 and fop.wait_queue_empty

    def _run_recovery(self) -> None:
        if not self._uplink_clear():
            return
        for recovery in self._recoveries.values():
            recovery.handle_timer(self.now)
            for message in recovery.data_to_send():
                self._recovery_up_octets += PRIMARY_HEADER_LENGTH + len(encode_message(message)[1])
                self._send(message)
            while (failed := recovery.next_event()) is not None:
                self._failures[failed.request_id] = failed

    def done(self, request_id: int) -> bool:
        assembler = self._assemblers[request_id]
        return assembler.complete or request_id in self._errors or request_id in self._failures

    # -- spacecraft side -----------------------------------------------------------------

    def _spacecraft_events(self) -> None:
        while (event := self.spacecraft.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self._commands_executed.append(event.message)
                self.core.receive_message(event.message, self.now)
            elif isinstance(event, KeysChanged):
                self.keys_changed.append(event)
            elif isinstance(event, Dropped) and event.layer in (
                Layer.APPLICATION,
                Layer.SPACE_PACKET,
            ):
                self.core.receive_drop(event, self.now)
        self._start_job()

    def _start_job(self) -> None:
        if self._release is not None:
            return
        job = self.core.next_job(self.now)
        if job is None:
            return
        result = self._generate(job)
        self._generated[job.request_id] = result.generated_ids
        self._release = _Release(job, result, self.now, self.config)

    def _release_due(self) -> None:
        release = self._release
        while release is not None and release.due() <= self.now:
            request_id = release.job.request_id
            ids = release.result.generated_ids
            if self.core.cancel_requested(request_id):
                kept = ids[: release.released]
                result = dataclasses.replace(
                    release.result, generated_ids=kept, finish_reason=FinishReason.CANCELLED
                )
                self._generated[request_id] = kept
                self.core.generation_finished(request_id, result, self.now)
            elif release.released < len(ids):
                self.core.token_generated(request_id, ids[release.released], self.now)
                release.released += 1
                continue
            else:
                self.core.generation_finished(request_id, release.result, self.now)
            self._release = None
            self._start_job()
            release = self._release

    def _transmit(self) -> None:
        """Send one CADU if the downlink transmitter is due."""
        if self.now < self._next_frame:
            return
        if not self._waiting() and not self._trailing_idle and self.now < self._next_idle():
            return
        for message in self.core.fill(self.config.link.tm.data_field_length, self.now):
            self.spacecraft.send(message)
        carried = self.spacecraft.pending_octets > 0
        self.downlink.send(self.spacecraft.next_cadu(), self.now)
        self._last_frame = self.now
        # After data, one more frame at once: the ground's synchronizer confirms a
        # block by the marker that follows it.
        self._trailing_idle = carried
        self._next_frame = self.now + self._cadu_time

    def _waiting(self) -> bool:
        """Something waits for the downlink (ids, reports, a due Housekeeping)."""
        return (
            self.core.has_output
            or self.spacecraft.pending_octets > 0
            or self.spacecraft.clcw_changed
            or self.now >= self.core.get_timer()
        )

    def _next_idle(self) -> float:
        return self._last_frame + self.config.idle_interval_s

    # -- the clock ---------------------------------------------------------------------

    def _next_time(self) -> float:
        times = [self.config.time_limit_s]
        fop_timer = self.ground.get_timer()
        if fop_timer is not None:
            times.append(fop_timer)
        if self._uplink_clear():
            for recovery in self._recoveries.values():
                timer = recovery.get_timer()
                if timer is not None:
                    times.append(timer)
        for channel in (self.uplink, self.downlink):
            timer = channel.get_timer()
            if timer is not None:
                times.append(timer)
        if self._release is not None:
            times.append(self._release.due())
        if self._key_management_sent < len(self._key_management):
            times.append(self._key_management[self._key_management_sent][0])
        if self._waiting() or self._trailing_idle:
            times.append(self._next_frame)
        else:
            times.append(max(self._next_frame, self._next_idle()))
            times.append(max(self._next_frame, self.core.get_timer()))
        return max(self.now, min(times))

    def step(self) -> None:
        """Advance to the next event and process everything due then."""
        self.now = self._next_time()
        for cltu in self.uplink.deliveries(self.now):
            self.spacecraft.receive_bytes(cltu, self.now)
        self._spacecraft_events()
        self._release_due()
        self._send_key_management()
        self._transmit()
        for cadu in self.downlink.deliveries(self.now):
            self.ground.receive_bytes(cadu, self.now)
        self.ground.handle_timer(self.now)
        self._ground_events()
        self._uplink()

    def _send_key_management(self) -> None:
        schedule = self._key_management
        while self._key_management_sent < len(schedule):
            at, pdu = schedule[self._key_management_sent]
            if at > self.now:
                return
            self.ground.send_key_management(pdu, self.now)
            self._key_management_sent += 1
        self._uplink()

    def uplink_quiet(self) -> bool:
        """Every command sent is acknowledged (no FOP-1, on any TC VC, holds one), none
        is on the air and no key management PDU waits for its time."""
        return (
            self.ground.uplink_clear
            and self.uplink.in_flight == 0
            and self._key_management_sent == len(self._key_management)
        )

    def run_request(self, request: PromptRequest) -> MissionResult:
        """Submit ``request`` and run until its answer is complete (or the time limit),
        then until the uplink is quiet (at most ``settle_s`` more)."""
        self.submit(request)
        start = self.now
        limit = self.config.time_limit_s
        while not self.done(request.request_id) and self.now < limit:
            self.step()
        ended = self.now
        settle_until = min(limit, self.now + self.config.settle_s)
        while not self.uplink_quiet() and self.now < settle_until:
            self.step()
        return self.result(request, start, ended=ended)

    def result(
        self, request: PromptRequest, start: float, *, ended: float | None = None
    ) -> MissionResult:
        rid = request.request_id
        assembler = self._assemblers[rid]
        error = self._errors.get(rid)
        failure = self._failures.get(rid)
        ttft = assembler.time_to_first_token_s
        completed = assembler.completed_at
        finish = assembler.finish_reason
        ended = self.now if ended is None else ended
        if error is not None:
            error_text: str | None = f"{error.reason.name}: {error.detail}"
        elif failure is not None:
            lost = ",".join(f"{r.first_index}+{r.count}" for r in failure.lost)
            error_text = f"tokens lost ({failure.reason}): {lost}" + (
                "" if failure.end_known else " (end unknown)"
            )
        elif not assembler.complete:
            error_text = f"timeout after {ended - start:.3f} s (virtual)"
        else:
            error_text = None
        return MissionResult(
            prompt_ids=request.prompt_ids,
            generated_ids=self._generated.get(request.request_id, ()),
            received_ids=assembler.delivered_ids,
            finish_reason=None if finish is None else finish.label,
            error=error_text,
            time_to_first_token_s=ttft,
            total_s=None if completed is None else completed - start,
            uplink_bits=self.ground.counters.uplink_octets * 8,
            ground=dataclasses.replace(self.ground.counters),
            spacecraft=dataclasses.replace(self.spacecraft.counters),
            uplink_channel=dataclasses.replace(self.uplink.stats),
            downlink_channel=dataclasses.replace(self.downlink.stats),
            drops=dict(self.ground.drops + self.spacecraft.drops),
            recovery=dataclasses.replace(self.recovery_counters),
            assembly=dataclasses.replace(assembler.stats),
            onboard=dataclasses.replace(self.core.counters),
            lost=() if failure is None else failure.lost,
            commands_sent=tuple(self._commands_sent),
            commands_executed=tuple(self._commands_executed),
            recovery_uplink_octets=self._recovery_up_octets,
            recovery_downlink_octets=self.core.counters.resent_octets,
            downlink_coded=(
                None
                if self.downlink.coded is None
                else dataclasses.replace(self.downlink.coded.stats)
            ),
            key_management_sent=self._key_management_sent,
            keys_changed=tuple(self.keys_changed),
        )


def simulate(
    prompt_ids: tuple[int, ...],
    params: GenerationParams,
    generate: Generate,
    config: MissionConfig,
    *,
    request_id: int = 1,
    security: tuple[LinkSecurity, LinkSecurity] | None = None,
    tc_vc_security: Mapping[int, LinkSecurity] | None = None,
    key_management: Sequence[tuple[float, bytes]] = (),
) -> MissionResult:
    """One request through the whole system on a virtual clock (``Mission`` says what
    ``security``, ``tc_vc_security`` and ``key_management`` do)."""
    mission = Mission(
        config,
        generate,
        security=security,
        tc_vc_security=tc_vc_security,
        key_management=key_management,
    )
    return mission.run_request(
        PromptRequest(request_id=request_id, params=params, prompt_ids=prompt_ids)
    )


__all__ = [
    "EphemeralSecurity",
    "Mission",
    "MissionConfig",
    "MissionResult",
    "ephemeral_security",
    "simulate",
]
