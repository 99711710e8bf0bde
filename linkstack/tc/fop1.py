"""FOP-1, the sending end of COP-1 (CCSDS 232.1-B-2 section 5): the engine.

:class:`FopEngine` (ground, one per TC Virtual Channel) classifies its inputs into
the events of State Table 5-1 and executes the table (:mod:`linkstack.tc.fop1_table`,
re-exported here).  Sans-I/O: every entry point takes ``now``; the one timer (T1) is
read with :meth:`FopEngine.get_timer` and fired with :meth:`FopEngine.handle_timer`.
Frames to transmit come out of :meth:`FopEngine.frames_to_send`; responses, confirms,
alerts and suspends out of :meth:`FopEngine.next_event`.

Lower layer model (FOP-1 Transmit Request / Response, 5.1.5-5.1.7 AD/BD/BC_Out flags):
with ``FopConfig.auto_accept_lower_layer`` (the default) a frame handed to
:meth:`FopEngine.frames_to_send` counts as accepted by the Lower Procedures at once:
the FOP runs the 'Accept Response' event (E41 / E43 / E45) right after the event that
transmitted it, so the Out flags are back to Ready before the call returns.  With it
off, the flags stay Not Ready until the caller reports the lower layer's answer with
:meth:`FopEngine.lower_layer_response` (events E41-E46).

A "not applicable" cell of table 5-1 raises :class:`InvalidState` for a caller
directive or request; for a received CLCW, a timer expiry or a lower-layer response it
is logged and ignored (5.3.2: the CLCW checks that precede the table).  All
sequence-number arithmetic is modulo 256 (5.2.1 note).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

from linkstack.errors import DropCounter, Dropped, InvalidState, Layer, LocalProtocolError
from linkstack.tc.clcw import Clcw, CopInEffect
from linkstack.tc.cop1_common import (
    AlertCode,
    Directive,
    DirectiveResponse,
    FopConfig,
    Outcome,
    Suspended,
    TimeoutType,
    TransferResponse,
    check_sequence_number,
    clause,
    mod,
)
from linkstack.tc.fop1_table import (
    CALLER_EVENTS,
    FOP_TABLE,
    FopAction,
    FopEvent,
    FopState,
    FopStep,
    FopTransition,
    classify_clcw,
)
from linkstack.tc.frame import (
    BypassFlag,
    FrameType,
    SegmentHeader,
    SetVR,
    TcFrame,
    Unlock,
)

logger = logging.getLogger(__name__)


# ======================================================================================
# FOP-1: notifications, statistics, queue entries
# ======================================================================================


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """'Alert' notification (5.2.15, table 4-4), with the event and state (4-4 note)."""

    code: AlertCode
    state: FopState
    event: FopEvent
    at: float


FopNotification = DirectiveResponse | TransferResponse | Alert | Suspended


@dataclass(slots=True)
class FopStats:
    """Frames FOP-1 handed to the Lower Procedures, per type; retransmissions apart.

    Type-BD frames (5.2.6 'Transmit Type-BD Frame') are not counted.
    """

    #: Type-AD frames transmitted for the first time (5.2.4 'Transmit Type-AD Frame').
    ad: int = 0
    #: Type-BC frames transmitted for the first time (5.2.5 'Transmit Type-BC Frame').
    bc: int = 0
    #: Type-AD frames transmitted again from the Sent_Queue (5.2.7, 5.2.10).
    ad_retransmitted: int = 0
    #: Type-BC frames transmitted again from the Sent_Queue (5.2.7, 5.2.9).
    bc_retransmitted: int = 0


@dataclass(slots=True)
class _SentFrame:
    """A frame on the Sent_Queue (5.1.8) with its To_Be_Retransmitted_Flag."""

    frame: TcFrame
    request_id: int | None
    to_be_retransmitted: bool = False


@dataclass(frozen=True, slots=True)
class _Pending:
    """A request waiting for the table: what the event carries."""

    request_id: int | None = None
    frame: TcFrame | None = None
    clcw: Clcw | None = None
    directive: Directive | None = None
    value: int | float | None = None


# ======================================================================================
# FOP-1 engine
# ======================================================================================


class FopEngine:
    """FOP-1 for one TC Virtual Channel (CCSDS 232.1-B-2 section 5), sans-I/O.

    Inputs (each takes ``now``): the directive methods, :meth:`send_ad` /
    :meth:`request_ad` / :meth:`send_bd`, :meth:`receive_clcw`, :meth:`handle_timer`,
    :meth:`lower_layer_response`.  Outputs: :meth:`frames_to_send` (Type-AD frames with
    N(S), Type-BC and Type-BD frames, in transmit order), :meth:`next_event`
    (:data:`FopNotification`), :meth:`get_timer`.

    :meth:`request_ad` is the book's Request to Transfer FDU: E19 puts the FDU on the
    one-place Wait_Queue, E20 (Wait_Queue full) rejects it.  :meth:`send_ad` is the
    convenience most callers want: it queues FDUs ahead of FOP-1 (as the Higher
    Procedures would) and issues the Request for the next one whenever the Wait_Queue
    is empty and FOP-1 is in S1-S3.

    A CLCW for this VC whose COP in Effect is not COP-1 is an invalid CLCW: it is
    counted as a drop (``not-cop-1``) and runs row E15 (Alert [CLCW] in S1-S5).  A CLCW
    for another VC is only counted (``wrong-vcid``): on a shared master channel it is
    another FOP-1's.

    Timeout_Type 1 (5.1.10): a T1 expiry with Transmission_Count at the limit runs E18
    and Suspends (5.2.16) to S6, remembering the state in :attr:`suspend_state` (SS)
    and keeping the Sent_Queue, the Wait_Queue and the backlog.  :meth:`resume_ad`
    (E31-E34) returns to that state and restarts T1 (5.2.17); Resume leaves
    Transmission_Count where it was, so the caller that wants further retransmissions
    raises the limit first (:meth:`set_transmission_limit`, E38, accepted in every
    state).
    """

    def __init__(self, config: FopConfig) -> None:
        self._config = config
        self._params = config
        self.state = FopState.S6  # 5.1.2: S6 is the first state entered
        #: V(S), Transmitter_Frame_Sequence_Number (5.1.3).
        self.vs = 0
        #: NN(R), Expected_Acknowledgement_Frame_Sequence_Number (5.1.11).
        self.nn_r = 0
        #: Transmission_Count (5.1.10).
        self.transmission_count = 1
        #: Suspend_State SS (5.1.10): 0 or the state number at suspension.
        self.suspend_state = 0
        #: AD_Out_Flag, BD_Out_Flag, BC_Out_Flag (5.1.5-5.1.7): True means Ready.
        self.ad_out_ready = True
        self.bd_out_ready = True
        self.bc_out_ready = True
        self._sent_queue: deque[_SentFrame] = deque()
        self._wait_queue: tuple[int, TcFrame] | None = None
        self._backlog: deque[tuple[int, TcFrame]] = deque()
        self._timer: float | None = None
        self._pending_initiate: tuple[int, Directive] | None = None
        self._bd_request: int | None = None
        self._out: list[TcFrame] = []
        self._events: deque[FopNotification] = deque()
        self._internal: deque[tuple[FopEvent, _Pending]] = deque()
        self._next_id = 0
        self._now = 0.0
        self.drops = DropCounter()
        #: Frames handed out per type, retransmissions counted separately.
        self.stats = FopStats()

    # -- read-only views -------------------------------------------------------------

    @property
    def config(self) -> FopConfig:
        """Current managed parameters (Set directives replace them)."""
        return self._params

    @property
    def suspended(self) -> bool:
        """The AD Service is suspended (S6 with SS != 0, 5.1.10): :meth:`resume_ad`."""
        return self.suspend_state != 0

    @property
    def transmission_limit(self) -> int:
        """Transmission_Limit now in force (5.1.10)."""
        return self._params.transmission_limit

    @property
    def sent_queue_length(self) -> int:
        return len(self._sent_queue)

    @property
    def wait_queue_empty(self) -> bool:
        return self._wait_queue is None

    @property
    def backlog_length(self) -> int:
        """FDUs queued by :meth:`send_ad` not yet offered to FOP-1."""
        return len(self._backlog)

    # -- outputs ----------------------------------------------------------------------

    def frames_to_send(self) -> list[TcFrame]:
        """Frames handed to the Lower Procedures since the last call, in order."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> FopNotification | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When T1 expires (absolute time), or None when the Timer is not running."""
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Fire T1 if it has expired at ``now``: events E16, E104, E17, E18."""
        self._now = now
        if self._timer is None or now < self._timer:
            return
        self._timer = None
        under_limit = self.transmission_count < self._params.transmission_limit
        if self._params.timeout_type == TimeoutType.ALERT:
            event = FopEvent.E16 if under_limit else FopEvent.E17
        else:
            event = FopEvent.E104 if under_limit else FopEvent.E18
        logger.debug("T1 expired at %s: %s", now, event.name)
        self._run(event, _Pending(), now)

    # -- requests ---------------------------------------------------------------------

    def send_ad(
        self, data: bytes, now: float, *, segment_header: SegmentHeader | None = None
    ) -> int:
        """Queue an FDU for the AD Service (sequence-controlled); returns its request id.

        The FDU is checked now (length, Segment Header): a frame that could never be
        built raises :class:`LocalProtocolError`.  Responses come as
        :class:`TransferResponse` events (Accept when FOP-1 transmits it, Positive
        Confirm when acknowledged, Reject/Negative Confirm when purged).
        """
        frame = self._ad_frame(data, segment_header)
        request_id = self._new_id()
        self._backlog.append((request_id, frame))
        self._now = now
        self._feed(now)
        return request_id

    def request_ad(
        self, data: bytes, now: float, *, segment_header: SegmentHeader | None = None
    ) -> int:
        """The book's Request to Transfer FDU for the AD Service: event E19 or E20."""
        frame = self._ad_frame(data, segment_header)
        request_id = self._new_id()
        event = FopEvent.E19 if self._wait_queue is None else FopEvent.E20
        self._run(event, _Pending(request_id=request_id, frame=frame), now)
        return request_id

    def send_bd(
        self, data: bytes, now: float, *, segment_header: SegmentHeader | None = None
    ) -> int:
        """Request to Transfer FDU for the BD Service (expedited): event E21 or E22."""
        frame = TcFrame.data_frame(
            self._config.tc,
            data,
            bypass=BypassFlag.TYPE_B,
            sequence_number=0,
            segment_header=segment_header,
        )
        request_id = self._new_id()
        event = FopEvent.E21 if self.bd_out_ready else FopEvent.E22
        self._run(event, _Pending(request_id=request_id, frame=frame), now)
        return request_id

    # -- directives -------------------------------------------------------------------

    def initiate_ad_without_clcw(self, now: float) -> int:
        """Initiate AD Service (without CLCW check): E23."""
        return self._directive(Directive.INITIATE_AD_WITHOUT_CLCW, FopEvent.E23, None, now)

    def initiate_ad_with_clcw(self, now: float) -> int:
        """Initiate AD Service (with CLCW check): E24; confirmed by a CLCW matching V(S)."""
        return self._directive(Directive.INITIATE_AD_WITH_CLCW, FopEvent.E24, None, now)

    def initiate_ad_with_unlock(self, now: float) -> int:
        """Initiate AD Service (with Unlock): E25 / E26."""
        event = FopEvent.E25 if self.bc_out_ready else FopEvent.E26
        return self._directive(Directive.INITIATE_AD_WITH_UNLOCK, event, None, now)

    def initiate_ad_with_set_vr(self, vr: int, now: float) -> int:
        """Initiate AD Service (with Set V(R) to ``vr``): E27 / E28."""
        check_sequence_number("V*(R)", vr, "5.3 E27")
        event = FopEvent.E27 if self.bc_out_ready else FopEvent.E28
        return self._directive(Directive.INITIATE_AD_WITH_SET_VR, event, vr, now)

    def terminate_ad(self, now: float) -> int:
        """Terminate AD Service: E29."""
        return self._directive(Directive.TERMINATE_AD, FopEvent.E29, None, now)

    def resume_ad(self, now: float) -> int:
        """Resume AD Service: E30 (SS = 0) or E31-E34 (SS = 1..4)."""
        event = (FopEvent.E30, FopEvent.E31, FopEvent.E32, FopEvent.E33, FopEvent.E34)[
            self.suspend_state
        ]
        return self._directive(Directive.RESUME_AD, event, None, now)

    def set_vs(self, vs: int, now: float) -> int:
        """Set V(S) to V*(S): E35 (only accepted in S6 with SS = 0)."""
        check_sequence_number("V*(S)", vs, "5.3 E35")
        return self._directive(Directive.SET_VS, FopEvent.E35, vs, now)

    def set_window_width(self, k: int, now: float) -> int:
        """Set FOP_Sliding_Window_Width to K: E36."""
        dataclasses.replace(self._params, window_width=k)  # validates, raises on bad K
        return self._directive(Directive.SET_FOP_WINDOW, FopEvent.E36, k, now)

    def set_t1_initial(self, t1: float, now: float) -> int:
        """Set T1_Initial (seconds): E37."""
        dataclasses.replace(self._params, t1_initial=t1)
        return self._directive(Directive.SET_T1_INITIAL, FopEvent.E37, t1, now)

    def set_transmission_limit(self, limit: int, now: float) -> int:
        """Set Transmission_Limit: E38."""
        dataclasses.replace(self._params, transmission_limit=limit)
        return self._directive(Directive.SET_TRANSMISSION_LIMIT, FopEvent.E38, limit, now)

    def set_timeout_type(self, timeout_type: int, now: float) -> int:
        """Set Timeout_Type (0 or 1): E39."""
        if isinstance(timeout_type, bool) or timeout_type not in (0, 1):
            raise LocalProtocolError(
                f"Timeout_Type={timeout_type!r} must be 0 or 1 ({clause('5.1.10')})"
            )
        return self._directive(Directive.SET_TIMEOUT_TYPE, FopEvent.E39, int(timeout_type), now)

    # -- CLCW and lower layer ---------------------------------------------------------

    def receive_clcw(self, clcw: Clcw, now: float) -> Dropped | None:
        """Take in a CLCW; returns a Dropped if it fails the 5.3.2 checks.

        A CLCW for another VC goes no further; one for this VC that reports another COP
        also runs row E15 (an invalid CLCW).
        """
        self._now = now
        vcid = self._config.tc.vcid
        if clcw.vcid != vcid:
            return self._drop("wrong-vcid", f"CLCW for VC {clcw.vcid}, this FOP is VC {vcid}", now)
        dropped = None
        if clcw.cop_in_effect != CopInEffect.COP_1:
            # 5.3.2 a) fails: an invalid CLCW, table 5-1 row E15 (classify_clcw).
            dropped = self._drop("not-cop-1", f"COP in Effect {clcw.cop_in_effect.name}", now)
        event = classify_clcw(
            clcw,
            vs=self.vs,
            nn_r=self.nn_r,
            transmission_count=self.transmission_count,
            transmission_limit=self._params.transmission_limit,
        )
        logger.debug("< CLCW N(R)=%d %s in %s", clcw.report_value, event.name, self.state.name)
        self._run(event, _Pending(clcw=clcw), now)
        return dropped

    def lower_layer_response(self, frame_type: FrameType, accepted: bool, now: float) -> None:
        """The Lower Procedures' Accept/Reject Response: E41-E46.

        Only for ``auto_accept_lower_layer=False``; with it on, FOP-1 runs E41/E43/E45
        itself and this raises :class:`InvalidState`.
        """
        if self._config.auto_accept_lower_layer:
            raise InvalidState(
                "lower_layer_response() needs FopConfig(auto_accept_lower_layer=False);"
                f" got a {frame_type.value} {'accept' if accepted else 'reject'}"
            )
        self._run(_LOWER_EVENTS[(frame_type, accepted)], _Pending(), now)

    # -- test-only hook ---------------------------------------------------------------

    def inject(
        self,
        event: FopEvent,
        now: float,
        *,
        clcw: Clcw | None = None,
        data: bytes = b"\x00",
        value: int | float | None = None,
    ) -> FopStep:
        """Test-only: apply ``event`` as if classified, bypassing classification.

        Lets a test reach every (state, event) cell, including ones that no legal
        input produces in that state.  Returns the step for that event (internal
        events it triggers follow it).  Not for production use.
        """
        payload = _Pending(
            request_id=self._new_id(),
            frame=self._ad_frame(data, None)
            if event in (FopEvent.E19, FopEvent.E20)
            else TcFrame.data_frame(
                self._config.tc, data, bypass=BypassFlag.TYPE_B, sequence_number=0
            )
            if event in (FopEvent.E21, FopEvent.E22)
            else None,
            clcw=clcw,
            directive=_DIRECTIVE_OF.get(event),
            value=value,
        )
        steps = self._run(event, payload, now)
        return steps[0]

    # -- machinery --------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _ad_frame(self, data: bytes, segment_header: SegmentHeader | None) -> TcFrame:
        return TcFrame.data_frame(
            self._config.tc,
            data,
            bypass=BypassFlag.TYPE_A,
            sequence_number=0,
            segment_header=segment_header,
        )

    def _drop(self, reason: str, detail: str, now: float) -> Dropped:
        logger.debug("< CLCW dropped %s: %s", reason, detail)
        return self.drops.count(
            Dropped(layer=Layer.COP1, reason=reason, clause=clause("5.3.2"), detail=detail, at=now)
        )

    def _directive(
        self, directive: Directive, event: FopEvent, value: int | float | None, now: float
    ) -> int:
        request_id = self._new_id()
        self._run(event, _Pending(request_id=request_id, directive=directive, value=value), now)
        return request_id

    def _run(self, event: FopEvent, payload: _Pending, now: float) -> list[FopStep]:
        """Apply ``event``, then every internal event it triggered, then feed the backlog."""
        self._now = now
        steps = [self._apply(event, payload)]
        while self._internal:
            steps.append(self._apply(*self._internal.popleft()))
        self._feed(now)
        return steps

    def _feed(self, now: float) -> None:
        """The Higher Procedures' side of :meth:`send_ad`: E19 whenever it can succeed."""
        while (
            self._backlog
            and self._wait_queue is None
            and self.state in (FopState.S1, FopState.S2, FopState.S3)
        ):
            request_id, frame = self._backlog.popleft()
            self._apply(FopEvent.E19, _Pending(request_id=request_id, frame=frame))
            while self._internal:
                self._apply(*self._internal.popleft())

    def _apply(self, event: FopEvent, payload: _Pending) -> FopStep:
        state = self.state
        cell = FOP_TABLE.get((state, event))
        if cell is None:
            if event in CALLER_EVENTS:
                raise InvalidState(
                    f"FOP-1 event {event.name} ({event.value}) is not applicable in state"
                    f" {state.name} ({state.title}), table 5-1"
                )
            logger.debug("%s not applicable in %s: ignored", event.name, state.name)
            return FopStep(state=state, event=event, transition=None, next_state=state)
        for action in cell.actions:
            self._execute(action, event, cell, payload)
        self.state = cell.next_state
        if state != cell.next_state:
            logger.debug("FOP-1 %s -> %s on %s", state.name, cell.next_state.name, event.name)
        return FopStep(state=state, event=event, transition=cell, next_state=cell.next_state)

    def _execute(
        self, action: FopAction, event: FopEvent, cell: FopTransition, payload: _Pending
    ) -> None:
        now = self._now
        match action:
            case FopAction.IGNORE:
                pass
            case FopAction.ACCEPT:
                self._respond(payload, Outcome.ACCEPT)
            case FopAction.REJECT:
                self._respond(payload, Outcome.REJECT)
            case FopAction.CONFIRM:
                if event in (FopEvent.E1, FopEvent.E45):
                    self._confirm_deferred(event)
                else:
                    self._respond(payload, Outcome.POSITIVE_CONFIRM)
            case FopAction.INITIALISE:
                self._purge_sent_queue()
                self._purge_wait_queue()
                self.transmission_count = 1
                self.suspend_state = 0
                if (
                    payload.directive is not None
                    and payload.request_id is not None
                    and event in (FopEvent.E24, FopEvent.E25, FopEvent.E27)
                ):
                    self._pending_initiate = (payload.request_id, payload.directive)
            case FopAction.ALERT:
                code = cell.alert if cell.alert is not None else AlertCode.SYNCH
                self._timer = None
                self._purge_sent_queue()
                self._purge_wait_queue()
                self._confirm_initiate(Outcome.NEGATIVE_CONFIRM, now)
                logger.info("FOP-1 VC %d Alert [%s] on %s in %s", self._config.tc.vcid,
                            code.value, event.name, self.state.name)  # fmt: skip
                self._events.append(Alert(code=code, state=self.state, event=event, at=now))
            case FopAction.SUSPEND:
                self.suspend_state = int(self.state)
                logger.info("FOP-1 VC %d suspended in %s", self._config.tc.vcid, self.state.name)
                self._events.append(Suspended(suspend_state=self.suspend_state, at=now))
            case FopAction.RESUME:
                self._start_timer()
                self.suspend_state = 0
            case FopAction.START_TIMER:
                self._start_timer()
            case FopAction.CANCEL_TIMER:
                self._timer = None
            case FopAction.REMOVE_ACKNOWLEDGED_FRAMES:
                if payload.clcw is None:
                    raise InvalidState(f"{event.name} removes acknowledged frames: give a CLCW")
                self._remove_acknowledged(payload.clcw.report_value)
            case FopAction.INITIATE_AD_RETRANSMISSION:
                self.transmission_count += 1
                self._start_timer()
                for entry in self._sent_queue:
                    if entry.frame.frame_type == FrameType.AD:
                        entry.to_be_retransmitted = True
            case FopAction.INITIATE_BC_RETRANSMISSION:
                self.transmission_count += 1
                self._start_timer()
                for entry in self._sent_queue:
                    if entry.frame.frame_type == FrameType.BC:
                        entry.to_be_retransmitted = True
            case FopAction.LOOK_FOR_FDU:
                self._look_for_fdu()
            case FopAction.LOOK_FOR_DIRECTIVE:
                self._look_for_directive()
            case FopAction.ADD_TO_WAIT_QUEUE:
                self._wait_queue = (_need_int(payload.request_id), _need_frame(payload))
            case FopAction.TRANSMIT_BD_FRAME:
                frame = _need_frame(payload)
                self.bd_out_ready = False
                self._bd_request = payload.request_id
                self._hand_out(frame, FopEvent.E45)
            case FopAction.TRANSMIT_BC_UNLOCK:
                self._transmit_bc(TcFrame.control_frame(self._config.tc, Unlock()))
            case FopAction.PREPARE_SET_VR:
                self.vs = self.nn_r = _need_int(payload.value)
            case FopAction.TRANSMIT_BC_SET_VR:
                vr = _need_int(payload.value)
                self._transmit_bc(TcFrame.control_frame(self._config.tc, SetVR(vr)))
            case FopAction.RELEASE_BC_FRAME:
                self._sent_queue = deque(
                    e for e in self._sent_queue if e.frame.frame_type != FrameType.BC
                )
            case FopAction.SET_VS:
                if self.suspend_state != 0:
                    self._respond(payload, Outcome.REJECT)
                else:
                    vs = _need_int(payload.value)
                    self._respond(payload, Outcome.ACCEPT)
                    self.vs = self.nn_r = vs
                    self._respond(payload, Outcome.POSITIVE_CONFIRM)
            case FopAction.SET_FOP_WINDOW:
                self._params = dataclasses.replace(
                    self._params, window_width=_need_int(payload.value)
                )
            case FopAction.SET_T1_INITIAL:
                if payload.value is None:
                    raise InvalidState(f"{event.name} needs a T1_Initial value")
                self._params = dataclasses.replace(self._params, t1_initial=payload.value)
            case FopAction.SET_TRANSMISSION_LIMIT:
                self._params = dataclasses.replace(
                    self._params, transmission_limit=_need_int(payload.value)
                )
            case FopAction.SET_TIMEOUT_TYPE:
                self._params = dataclasses.replace(
                    self._params, timeout_type=TimeoutType(_need_int(payload.value))
                )
            case FopAction.AD_OUT_READY:
                self.ad_out_ready = True
            case FopAction.BC_OUT_READY:
                self.bc_out_ready = True
            case FopAction.BD_OUT_READY:
                self.bd_out_ready = True

    def _respond(self, payload: _Pending, outcome: Outcome) -> None:
        if payload.request_id is None:
            return
        if payload.directive is not None:
            self._events.append(
                DirectiveResponse(
                    request_id=payload.request_id,
                    directive=payload.directive,
                    outcome=outcome,
                    at=self._now,
                )
            )
        elif payload.frame is not None:
            self._events.append(
                TransferResponse(
                    request_id=payload.request_id,
                    frame_type=payload.frame.frame_type,
                    outcome=outcome,
                    sequence_number=None,
                    at=self._now,
                )
            )

    def _confirm_initiate(self, outcome: Outcome, at: float) -> None:
        """Answer the Initiate AD directive still waiting for its confirm, if any."""
        if self._pending_initiate is None:
            return
        request_id, directive = self._pending_initiate
        self._pending_initiate = None
        self._events.append(
            DirectiveResponse(request_id=request_id, directive=directive, outcome=outcome, at=at)
        )

    def _confirm_deferred(self, event: FopEvent) -> None:
        if event == FopEvent.E1:
            self._confirm_initiate(Outcome.POSITIVE_CONFIRM, self._now)
            return
        bd_request = self._bd_request
        if bd_request is not None:
            self._bd_request = None
            self._events.append(
                TransferResponse(
                    request_id=bd_request,
                    frame_type=FrameType.BD,
                    outcome=Outcome.POSITIVE_CONFIRM,
                    sequence_number=None,
                    at=self._now,
                )
            )

    def _start_timer(self) -> None:
        self._timer = self._now + self._params.t1_initial

    def _hand_out(self, frame: TcFrame, accept_event: FopEvent) -> None:
        logger.debug("> %s N(S)=%d", frame.frame_type.value, frame.sequence_number)
        self._out.append(frame)
        if self._config.auto_accept_lower_layer:
            self._internal.append((accept_event, _Pending()))

    def _transmit_ad(self, request_id: int, fdu: TcFrame) -> None:
        """5.2.4 'Transmit Type-AD Frame'."""
        frame = dataclasses.replace(fdu, sequence_number=self.vs)
        self.vs = mod(self.vs + 1)
        if not self._sent_queue:
            self.transmission_count = 1
        self._sent_queue.append(_SentFrame(frame=frame, request_id=request_id))
        self._start_timer()
        self.ad_out_ready = False
        self.stats.ad += 1
        self._hand_out(frame, FopEvent.E41)

    def _transmit_bc(self, frame: TcFrame) -> None:
        """5.2.5 'Transmit Type-BC Frame'."""
        self._sent_queue.append(_SentFrame(frame=frame, request_id=None))
        self.transmission_count = 1
        self._start_timer()
        self.bc_out_ready = False
        self.stats.bc += 1
        self._hand_out(frame, FopEvent.E43)

    def _look_for_fdu(self) -> None:
        """5.2.10 'Look for FDU'."""
        if not self.ad_out_ready or self._retransmit_first(FrameType.AD):
            return
        if self._wait_queue is not None and mod(self.vs - self.nn_r) < self._params.window_width:
            request_id, fdu = self._wait_queue
            self._wait_queue = None
            sequence_number = self.vs
            self._events.append(
                TransferResponse(
                    request_id=request_id,
                    frame_type=FrameType.AD,
                    outcome=Outcome.ACCEPT,
                    sequence_number=sequence_number,
                    at=self._now,
                )
            )
            self._transmit_ad(request_id, fdu)

    def _look_for_directive(self) -> None:
        """5.2.9 'Look for Directive'."""
        if self.bc_out_ready:
            self._retransmit_first(FrameType.BC)

    def _retransmit_first(self, frame_type: FrameType) -> bool:
        """Hand out the first Sent_Queue frame of ``frame_type`` marked 'to be
        retransmitted' (5.2.9, 5.2.10); False when there is none."""
        for entry in self._sent_queue:
            if entry.to_be_retransmitted and entry.frame.frame_type == frame_type:
                entry.to_be_retransmitted = False
                logger.info(
                    "> retransmit %s N(S)=%d",
                    frame_type.value,
                    entry.frame.sequence_number,
                )
                if frame_type == FrameType.AD:
                    self.ad_out_ready = False
                    self.stats.ad_retransmitted += 1
                    self._hand_out(entry.frame, FopEvent.E41)
                else:
                    self.bc_out_ready = False
                    self.stats.bc_retransmitted += 1
                    self._hand_out(entry.frame, FopEvent.E43)
                return True
        return False

    def _remove_acknowledged(self, nr: int) -> None:
        """5.2.8: confirm and drop frames N(S) in [NN(R), N(R)); NN(R) := N(R)."""
        removed = 0
        while self._sent_queue and self.nn_r != nr:
            entry = self._sent_queue[0]
            if entry.frame.frame_type != FrameType.AD:
                break
            self._sent_queue.popleft()
            removed += 1
            if entry.request_id is not None:
                self._events.append(
                    TransferResponse(
                        request_id=entry.request_id,
                        frame_type=FrameType.AD,
                        outcome=Outcome.POSITIVE_CONFIRM,
                        sequence_number=entry.frame.sequence_number,
                        at=self._now,
                    )
                )
            self.nn_r = mod(self.nn_r + 1)
        self.nn_r = nr
        if removed:
            self.transmission_count = 1

    def _purge_sent_queue(self) -> None:
        """5.2.2: Negative Confirm for every FDU on the Sent_Queue, then clear it."""
        for entry in self._sent_queue:
            if entry.request_id is not None:
                self._events.append(
                    TransferResponse(
                        request_id=entry.request_id,
                        frame_type=entry.frame.frame_type,
                        outcome=Outcome.NEGATIVE_CONFIRM,
                        sequence_number=entry.frame.sequence_number,
                        at=self._now,
                    )
                )
        self._sent_queue.clear()

    def _purge_wait_queue(self) -> None:
        """5.2.3: Reject Response for the FDU on the Wait_Queue, then clear it."""
        if self._wait_queue is not None:
            request_id, _fdu = self._wait_queue
            self._wait_queue = None
            self._events.append(
                TransferResponse(
                    request_id=request_id,
                    frame_type=FrameType.AD,
                    outcome=Outcome.REJECT,
                    sequence_number=None,
                    at=self._now,
                )
            )


_LOWER_EVENTS: Final = {
    (FrameType.AD, True): FopEvent.E41,
    (FrameType.AD, False): FopEvent.E42,
    (FrameType.BC, True): FopEvent.E43,
    (FrameType.BC, False): FopEvent.E44,
    (FrameType.BD, True): FopEvent.E45,
    (FrameType.BD, False): FopEvent.E46,
}

_DIRECTIVE_OF: Final = {
    FopEvent.E23: Directive.INITIATE_AD_WITHOUT_CLCW,
    FopEvent.E24: Directive.INITIATE_AD_WITH_CLCW,
    FopEvent.E25: Directive.INITIATE_AD_WITH_UNLOCK,
    FopEvent.E26: Directive.INITIATE_AD_WITH_UNLOCK,
    FopEvent.E27: Directive.INITIATE_AD_WITH_SET_VR,
    FopEvent.E28: Directive.INITIATE_AD_WITH_SET_VR,
    FopEvent.E29: Directive.TERMINATE_AD,
    FopEvent.E30: Directive.RESUME_AD,
    FopEvent.E31: Directive.RESUME_AD,
    FopEvent.E32: Directive.RESUME_AD,
    FopEvent.E33: Directive.RESUME_AD,
    FopEvent.E34: Directive.RESUME_AD,
    FopEvent.E35: Directive.SET_VS,
    FopEvent.E36: Directive.SET_FOP_WINDOW,
    FopEvent.E37: Directive.SET_T1_INITIAL,
    FopEvent.E38: Directive.SET_TRANSMISSION_LIMIT,
    FopEvent.E39: Directive.SET_TIMEOUT_TYPE,
    FopEvent.E40: Directive.SET_FOP_WINDOW,  # stands for "some directive" in tests
}


def _need_int(value: int | float | None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidState(f"this FOP-1 event needs an integer value, got {value!r}")


def _need_frame(payload: _Pending) -> TcFrame:
    if payload.frame is None:
        raise InvalidState("this FOP-1 event needs a frame data unit")
    return payload.frame


__all__ = [
    "CALLER_EVENTS",
    "FOP_TABLE",
    "Alert",
    "FopAction",
    "FopEngine",
    "FopEvent",
    "FopNotification",
    "FopState",
    "FopStats",
    "FopStep",
    "FopTransition",
    "classify_clcw",
]
