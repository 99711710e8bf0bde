"""FARM-1, the receiving end of COP-1 (CCSDS 232.1-B-2 section 6).

Everything that affects the FARM-1 state machine lives in this file: the states and
events as the book names them, State Table 6-1 as a dict keyed by ``(state, event)``,
the actions it names (6.2), and :class:`FarmEngine` (spacecraft, one per TC Virtual
Channel), which classifies frames into events and executes the table.
:meth:`FarmEngine.receive_frame` returns a :class:`FarmResult`;
:meth:`FarmEngine.clcw` reports (6.2.4 'REPORT').

The one cell the book marks "not applicable", (S2, E1), is absent from the table; a
frame that reaches it is discarded.  All sequence-number arithmetic is modulo 256
(6.2.1 note).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final, assert_never

from linkstack.errors import DropCounter, Dropped, LocalProtocolError, RemoteProtocolError
from linkstack.tc.clcw import Clcw, CopInEffect
from linkstack.tc.cop1_common import (
    MAX_FARM_WINDOW,
    MIN_FARM_WINDOW,
    MODULUS,
    check_sequence_number,
    clause,
    mod,
)
from linkstack.tc.frame import FrameType, SetVR, TcFrame, TcVcConfig, Unlock

logger = logging.getLogger(__name__)


class FarmState(IntEnum):
    """FARM-1 States (6.1.1)."""

    S1 = 1  # Open
    S2 = 2  # Wait
    S3 = 3  # Lockout


class FarmEvent(Enum):
    """FARM-1 Events of State Table 6-1 (valid frames only, 6.3.2)."""

    E1 = "Type-AD, N(S)=V(R), buffer available"
    E2 = "Type-AD, N(S)=V(R), no buffer available"
    E3 = "Type-AD, N(S)>V(R), in the positive window"
    E4 = "Type-AD, N(S)<V(R), in the negative window"
    E5 = "Type-AD, N(S) in the lockout area"
    E6 = "Type-BD"
    E7 = "Type-BC, Unlock"
    E8 = "Type-BC, Set V(R)"
    E9 = "Type-BC, invalid Control Command"
    E10 = "Buffer Release Signal"


class FarmAction(Enum):
    """Actions of State Table 6-1 (6.2), one member per book action."""

    ACCEPT = "Accept"  # 6.2.2
    DISCARD = "Discard"  # 6.2.3
    IGNORE = "Ignore"  # 6.2.5
    INCREMENT_VR = "V(R) := V(R) + 1"
    SET_RETRANSMIT = "Retransmit_Flag := 1"
    RESET_RETRANSMIT = "Retransmit_Flag := 0"
    SET_WAIT = "Wait_Flag := 1"
    RESET_WAIT = "Wait_Flag := 0"
    SET_LOCKOUT = "Lockout_Flag := 1"
    RESET_LOCKOUT = "Lockout_Flag := 0"
    INCREMENT_FARM_B = "FARM-B_Counter := FARM-B_Counter + 1"
    SET_VR = "V(R) := V*(R)"


@dataclass(frozen=True, slots=True)
class FarmTransition:
    """One cell of State Table 6-1."""

    actions: tuple[FarmAction, ...]
    next_state: FarmState


_FA = FarmAction
_FS = FarmState
_FE = FarmEvent


def _ft(next_state: FarmState, *actions: FarmAction) -> FarmTransition:
    return FarmTransition(actions=actions, next_state=next_state)


#: FARM-1 State Table, CCSDS 232.1-B-2 table 6-1: (state, event) -> cell.
#: The one absent pair, (S2, E1), is "not applicable": in Wait there is no buffer.
FARM_TABLE: Final[dict[tuple[FarmState, FarmEvent], FarmTransition]] = {
    # Table 6-1 row E1: N(S) = V(R), buffer available
    (_FS.S1, _FE.E1): _ft(_FS.S1, _FA.ACCEPT, _FA.INCREMENT_VR, _FA.RESET_RETRANSMIT),
    (_FS.S3, _FE.E1): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E2: N(S) = V(R), no buffer available
    (_FS.S1, _FE.E2): _ft(_FS.S2, _FA.DISCARD, _FA.SET_RETRANSMIT, _FA.SET_WAIT),
    (_FS.S2, _FE.E2): _ft(_FS.S2, _FA.DISCARD),
    (_FS.S3, _FE.E2): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E3: N(S) > V(R), positive window
    (_FS.S1, _FE.E3): _ft(_FS.S1, _FA.DISCARD, _FA.SET_RETRANSMIT),
    (_FS.S2, _FE.E3): _ft(_FS.S2, _FA.DISCARD),
    (_FS.S3, _FE.E3): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E4: N(S) < V(R), negative window
    (_FS.S1, _FE.E4): _ft(_FS.S1, _FA.DISCARD),
    (_FS.S2, _FE.E4): _ft(_FS.S2, _FA.DISCARD),
    (_FS.S3, _FE.E4): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E5: lockout area
    (_FS.S1, _FE.E5): _ft(_FS.S3, _FA.DISCARD, _FA.SET_LOCKOUT),
    (_FS.S2, _FE.E5): _ft(_FS.S3, _FA.DISCARD, _FA.SET_LOCKOUT),
    (_FS.S3, _FE.E5): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E6: valid Type-BD frame
    (_FS.S1, _FE.E6): _ft(_FS.S1, _FA.ACCEPT, _FA.INCREMENT_FARM_B),
    (_FS.S2, _FE.E6): _ft(_FS.S2, _FA.ACCEPT, _FA.INCREMENT_FARM_B),
    (_FS.S3, _FE.E6): _ft(_FS.S3, _FA.ACCEPT, _FA.INCREMENT_FARM_B),
    # Table 6-1 row E7: Unlock
    (_FS.S1, _FE.E7): _ft(_FS.S1, _FA.INCREMENT_FARM_B, _FA.RESET_RETRANSMIT),
    (_FS.S2, _FE.E7): _ft(_FS.S1, _FA.INCREMENT_FARM_B, _FA.RESET_RETRANSMIT, _FA.RESET_WAIT),
    (_FS.S3, _FE.E7): _ft(
        _FS.S1, _FA.INCREMENT_FARM_B, _FA.RESET_RETRANSMIT, _FA.RESET_WAIT, _FA.RESET_LOCKOUT
    ),
    # Table 6-1 row E8: Set V(R)
    (_FS.S1, _FE.E8): _ft(_FS.S1, _FA.INCREMENT_FARM_B, _FA.RESET_RETRANSMIT, _FA.SET_VR),
    (_FS.S2, _FE.E8): _ft(
        _FS.S1, _FA.INCREMENT_FARM_B, _FA.RESET_RETRANSMIT, _FA.RESET_WAIT, _FA.SET_VR
    ),
    (_FS.S3, _FE.E8): _ft(_FS.S3, _FA.INCREMENT_FARM_B),
    # Table 6-1 row E9: invalid BC frame
    (_FS.S1, _FE.E9): _ft(_FS.S1, _FA.DISCARD),
    (_FS.S2, _FE.E9): _ft(_FS.S2, _FA.DISCARD),
    (_FS.S3, _FE.E9): _ft(_FS.S3, _FA.DISCARD),
    # Table 6-1 row E10: Buffer Release Signal
    (_FS.S1, _FE.E10): _ft(_FS.S1, _FA.IGNORE),
    (_FS.S2, _FE.E10): _ft(_FS.S1, _FA.RESET_WAIT),
    (_FS.S3, _FE.E10): _ft(_FS.S3, _FA.IGNORE),
}


class DiscardReason(Enum):
    """Why FARM-1 discarded a frame; the value is a stable kebab-case key."""

    NO_BUFFER = "no-buffer"  # E2
    POSITIVE_WINDOW = "positive-window"  # E3: a frame was lost, retransmission asked
    NEGATIVE_WINDOW = "negative-window"  # E4: a duplicate
    LOCKOUT_AREA = "lockout-area"  # E5
    LOCKOUT = "lockout"  # any Type-AD frame while in S3
    WAIT = "wait"  # Type-AD frames while in S2
    INVALID_CONTROL_COMMAND = "invalid-control-command"  # E9
    NOT_APPLICABLE = "not-applicable"  # a cell the table marks not applicable


@dataclass(slots=True)
class FarmStats:
    """Frames FARM-1 discarded (6.2.3 'Discard'), one field per :class:`DiscardReason`."""

    #: E2: N(S) = V(R) but no buffer available.
    discarded_no_buffer: int = 0
    #: E3: N(S) in the positive window, a frame was lost; retransmission asked.
    discarded_positive_window: int = 0
    #: E4: N(S) in the negative window, a duplicate.
    discarded_negative_window: int = 0
    #: E5: N(S) in the lockout area.
    discarded_lockout_area: int = 0
    #: Any Type-AD frame while in S3 (Lockout).
    discarded_lockout: int = 0
    #: Type-AD frames while in S2 (Wait).
    discarded_wait: int = 0
    #: E9: a Type-BC frame whose Control Command is neither Unlock nor Set V(R).
    discarded_invalid_control_command: int = 0
    #: An event in a cell the table marks not applicable.
    discarded_not_applicable: int = 0

    def count_discard(self, reason: DiscardReason) -> None:
        """Count one frame discarded for ``reason``."""
        match reason:
            case DiscardReason.NO_BUFFER:
                self.discarded_no_buffer += 1
            case DiscardReason.POSITIVE_WINDOW:
                self.discarded_positive_window += 1
            case DiscardReason.NEGATIVE_WINDOW:
                self.discarded_negative_window += 1
            case DiscardReason.LOCKOUT_AREA:
                self.discarded_lockout_area += 1
            case DiscardReason.LOCKOUT:
                self.discarded_lockout += 1
            case DiscardReason.WAIT:
                self.discarded_wait += 1
            case DiscardReason.INVALID_CONTROL_COMMAND:
                self.discarded_invalid_control_command += 1
            case DiscardReason.NOT_APPLICABLE:
                self.discarded_not_applicable += 1
            case _:
                assert_never(reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class FarmResult:
    """What FARM-1 did with one frame (or with a Buffer Release Signal)."""

    event: FarmEvent
    state: FarmState
    next_state: FarmState
    actions: tuple[FarmAction, ...]
    #: The frame, when the event came from one.
    frame: TcFrame | None = None
    #: The FDU to deliver to the Higher Procedures (6.2.2 'ACCEPT'), if accepted.
    data: bytes | None = None
    #: Set when the frame was discarded.
    discarded: DiscardReason | None = None

    @property
    def accepted(self) -> bool:
        return self.data is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class FarmConfig:
    """FARM-1 managed parameters for one TC Virtual Channel (232.1-B-2 6.1, 7)."""

    tc: TcVcConfig
    #: FARM_Sliding_Window_Width W (6.1.8.2): even, 2 <= W <= 254.
    window_width: int = 20
    #: The state FARM-1 starts in: S1 (Open) or S3 (Lockout).
    initial_state: FarmState = FarmState.S1
    #: V(R) at start.
    initial_vr: int = 0
    #: FDUs the FARM buffer holds until released; None: the Higher Procedures always
    #: take delivery at once, so E2 never happens (6.3.2 Buffer Release Signal note).
    buffers: int | None = None

    def __post_init__(self) -> None:
        w = self.window_width
        if isinstance(w, bool) or not MIN_FARM_WINDOW <= w <= MAX_FARM_WINDOW or w % 2:
            raise LocalProtocolError(
                f"FARM_Sliding_Window_Width W={w!r} must be an even integer in"
                f" {MIN_FARM_WINDOW}..{MAX_FARM_WINDOW} ({clause('6.1.8.2')})"
            )
        if self.initial_state not in (FarmState.S1, FarmState.S3):
            raise LocalProtocolError(
                f"FARM-1 starts in S1 (Open) or S3 (Lockout), not {self.initial_state!r}"
            )
        check_sequence_number("initial V(R)", self.initial_vr, "6.1.7")
        if self.buffers is not None and (isinstance(self.buffers, bool) or self.buffers < 1):
            raise LocalProtocolError(f"FARM buffers={self.buffers!r} must be None or >= 1")

    @property
    def positive_window(self) -> int:
        """PW = W/2 (6.1.8.3): V(R) .. V(R)+PW-1 is the positive window area."""
        return self.window_width // 2

    @property
    def negative_window(self) -> int:
        """NW = W/2 (6.1.8.3): V(R)-NW .. V(R)-1 is the negative window area."""
        return self.window_width // 2


class FarmEngine:
    """FARM-1 for one TC Virtual Channel (CCSDS 232.1-B-2 section 6), sans-I/O.

    Feed frames that passed Frame Validation (232.0-B-4) to :meth:`receive_frame`, or
    raw octets to :meth:`receive_bytes`; read the report with :meth:`clcw`.  With
    finite ``buffers``, each accepted Type-AD FDU holds one buffer until
    :meth:`buffer_released` (the Buffer Release Signal, E10 when in Wait).
    """

    def __init__(self, config: FarmConfig) -> None:
        self._config = config
        self.state = config.initial_state
        #: V(R), Receiver_Frame_Sequence_Number (6.1.7).
        self.vr = config.initial_vr
        #: Lockout_Flag, Wait_Flag, Retransmit_Flag (6.1.2-6.1.4).
        self.lockout = config.initial_state == FarmState.S3
        self.wait = False
        self.retransmit = False
        #: FARM-B_Counter (6.1.6), kept whole; the CLCW carries it modulo 4.
        self.farm_b_counter = 0
        #: Buffers holding accepted FDUs not yet released.
        self.buffers_in_use = 0
        #: Frames discarded, per reason.
        self.stats = FarmStats()
        self.drops = DropCounter()

    @property
    def config(self) -> FarmConfig:
        return self._config

    def classify(self, frame: TcFrame) -> FarmEvent:
        """The table 6-1 event for a valid frame of this VC."""
        if frame.frame_type == FrameType.BD:
            return FarmEvent.E6
        if frame.frame_type == FrameType.BC:
            command = frame.command
            return FarmEvent.E7 if isinstance(command, Unlock) else FarmEvent.E8
        offset = mod(frame.sequence_number - self.vr)
        if offset == 0:
            return FarmEvent.E1 if self._buffer_available() else FarmEvent.E2
        if offset < self._config.positive_window:
            return FarmEvent.E3
        if MODULUS - offset <= self._config.negative_window:
            return FarmEvent.E4
        return FarmEvent.E5

    def receive_frame(self, frame: TcFrame) -> FarmResult:
        """Run table 6-1 for one valid frame of this VC."""
        if frame.vcid != self._config.tc.vcid or frame.scid != self._config.tc.scid:
            raise LocalProtocolError(
                f"frame for SCID {frame.scid} VC {frame.vcid} given to the FARM-1 of"
                f" SCID {self._config.tc.scid} VC {self._config.tc.vcid}"
            )
        return self._apply(self.classify(frame), frame)

    def receive_bytes(self, data: bytes) -> FarmResult | Dropped:
        """Decode one frame and run table 6-1; a Type-BC frame whose Control Command is
        neither Unlock nor Set V(R) is event E9, any other decode failure a Dropped."""
        try:
            frame = TcFrame.from_bytes(data, config=self._config.tc)
        except RemoteProtocolError as exc:
            is_bc = len(data) >= 1 and (data[0] >> 4) & 0b11 == 0b11
            if is_bc and exc.clause.endswith("4.1.3.3"):  # neither Unlock nor Set V(R)
                return self._apply(FarmEvent.E9, None)
            logger.debug("< dropped %s: %s", exc.reason, exc.detail)
            return self.drops.count(Dropped.from_error(exc, octets=len(data)))
        return self.receive_frame(frame)

    def buffer_released(self) -> FarmResult:
        """The Higher Procedures freed one buffer: the Buffer Release Signal, E10."""
        if self.buffers_in_use > 0:
            self.buffers_in_use -= 1
        return self._apply(FarmEvent.E10, None)

    def clcw(self, *, status: int = 0, no_rf_available: bool = False,
             no_bit_lock: bool = False) -> Clcw:  # fmt: skip
        """6.2.4 'REPORT': the CLCW for the current state of FARM-1."""
        return Clcw(
            vcid=self._config.tc.vcid,
            report_value=self.vr,
            status=status,
            cop_in_effect=CopInEffect.COP_1,
            no_rf_available=no_rf_available,
            no_bit_lock=no_bit_lock,
            lockout=self.lockout,
            wait=self.wait,
            retransmit=self.retransmit,
            farm_b_counter=self.farm_b_counter % 4,  # 6.1.6 note 2: two LSBs
        )

    def inject(self, event: FarmEvent, frame: TcFrame | None = None) -> FarmResult:
        """Test-only: apply ``event`` without classifying (reaches (S2, E1))."""
        return self._apply(event, frame)

    def _buffer_available(self) -> bool:
        limit = self._config.buffers
        return limit is None or self.buffers_in_use < limit

    def _apply(self, event: FarmEvent, frame: TcFrame | None) -> FarmResult:
        state = self.state
        cell = FARM_TABLE.get((state, event))
        if cell is None:
            logger.debug("FARM-1 %s not applicable in %s: discarded", event.name, state.name)
            self.stats.count_discard(DiscardReason.NOT_APPLICABLE)
            return FarmResult(
                event=event,
                state=state,
                next_state=state,
                actions=(),
                frame=frame,
                discarded=DiscardReason.NOT_APPLICABLE,
            )
        data: bytes | None = None
        discarded: DiscardReason | None = None
        for action in cell.actions:
            match action:
                case FarmAction.ACCEPT:
                    if frame is not None:
                        data = frame.data
                        if frame.frame_type == FrameType.AD:
                            self.buffers_in_use += 1
                case FarmAction.DISCARD:
                    discarded = _discard_reason(state, event)
                    self.stats.count_discard(discarded)
                case FarmAction.IGNORE:
                    pass
                case FarmAction.INCREMENT_VR:
                    self.vr = mod(self.vr + 1)
                case FarmAction.SET_RETRANSMIT:
                    self.retransmit = True
                case FarmAction.RESET_RETRANSMIT:
                    self.retransmit = False
                case FarmAction.SET_WAIT:
                    self.wait = True
                case FarmAction.RESET_WAIT:
                    self.wait = False
                case FarmAction.SET_LOCKOUT:
                    self.lockout = True
                case FarmAction.RESET_LOCKOUT:
                    self.lockout = False
                case FarmAction.INCREMENT_FARM_B:
                    self.farm_b_counter += 1
                case FarmAction.SET_VR:
                    command = frame.command if frame is not None else None
                    if isinstance(command, SetVR):
                        self.vr = command.vr
        self.state = cell.next_state
        if state != cell.next_state:
            logger.debug("FARM-1 %s -> %s on %s", state.name, cell.next_state.name, event.name)
        return FarmResult(
            event=event,
            state=state,
            next_state=cell.next_state,
            actions=cell.actions,
            frame=frame,
            data=data,
            discarded=discarded,
        )


def _discard_reason(state: FarmState, event: FarmEvent) -> DiscardReason:
    if event == FarmEvent.E9:
        return DiscardReason.INVALID_CONTROL_COMMAND
    if state == FarmState.S3:
        return DiscardReason.LOCKOUT
    if event == FarmEvent.E5:
        return DiscardReason.LOCKOUT_AREA
    if event == FarmEvent.E4:
        return DiscardReason.NEGATIVE_WINDOW
    if state == FarmState.S2:
        return DiscardReason.WAIT
    if event == FarmEvent.E3:
        return DiscardReason.POSITIVE_WINDOW
    return DiscardReason.NO_BUFFER


__all__ = [
    "FARM_TABLE",
    "DiscardReason",
    "FarmAction",
    "FarmConfig",
    "FarmEngine",
    "FarmEvent",
    "FarmResult",
    "FarmState",
    "FarmStats",
    "FarmTransition",
]
