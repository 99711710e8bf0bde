"""Communications Operation Procedure-1 (CCSDS 232.1-B-2): FOP-1 and FARM-1.

Everything that affects the two state machines lives in this file: the states and
events as the book names them, the two State Tables as dicts keyed by
``(state, event)``, the actions they name, and the two engines that classify inputs
into events and execute the table.

* :class:`FopEngine` (ground, one per TC Virtual Channel): FOP-1, book section 5,
  State Table 5-1.  Sans-I/O: every entry point takes ``now``; the one timer (T1) is
  read with :meth:`FopEngine.get_timer` and fired with :meth:`FopEngine.handle_timer`.
  Frames to transmit come out of :meth:`FopEngine.frames_to_send`; responses,
  confirms, alerts and suspends out of :meth:`FopEngine.next_event`.
* :class:`FarmEngine` (spacecraft, one per TC Virtual Channel): FARM-1, book
  section 6, State Table 6-1.  :meth:`FarmEngine.receive_frame` returns a
  :class:`FarmResult`; :meth:`FarmEngine.clcw` reports (6.2.4 'REPORT').

Lower layer model (FOP-1 Transmit Request / Response, 5.1.5-5.1.7 AD/BD/BC_Out flags):
with ``FopConfig.auto_accept_lower_layer`` (the default) a frame handed to
:meth:`FopEngine.frames_to_send` counts as accepted by the Lower Procedures at once:
the FOP runs the 'Accept Response' event (E41 / E43 / E45) right after the event that
transmitted it, so the Out flags are back to Ready before the call returns.  With it
off, the flags stay Not Ready until the caller reports the lower layer's answer with
:meth:`FopEngine.lower_layer_response` (events E41-E46).

Cells the book marks "not applicable" are absent from the tables.  For a caller
directive or request they raise :class:`InvalidState`; for a received CLCW, a timer
expiry or a lower-layer response they are logged and ignored (5.3.2: the CLCW checks
that precede the table).  All sequence-number arithmetic is modulo 256 (5.2.1 note,
6.2.1 note).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from linkstack.errors import (
    DropCounter,
    Dropped,
    InvalidState,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.tc.clcw import Clcw, CopInEffect
from linkstack.tc.frame import (
    MAX_SEQUENCE_NUMBER,
    BypassFlag,
    FrameType,
    SegmentHeader,
    SetVR,
    TcFrame,
    TcVcConfig,
    Unlock,
)

logger = logging.getLogger(__name__)

_BOOK: Final = "CCSDS 232.1-B-2"

#: Frame Sequence Numbers are 8 bits; all COP-1 arithmetic is modulo 256 (5.2.1, 6.2.1).
MODULUS: Final = MAX_SEQUENCE_NUMBER + 1
#: FOP_Sliding_Window_Width K: 1 <= K <= PW and K < 256 (5.1.12).
MAX_FOP_WINDOW: Final = MODULUS - 1
#: FARM_Sliding_Window_Width W: 2 <= W <= 254, always even (6.1.8.2).
MIN_FARM_WINDOW: Final = 2
MAX_FARM_WINDOW: Final = 254


def _clause(number: str) -> str:
    return f"{_BOOK} {number}"


def _mod(value: int) -> int:
    return value % MODULUS


# ======================================================================================
# FOP-1: states, events, actions (CCSDS 232.1-B-2 section 5)
# ======================================================================================


class FopState(IntEnum):
    """FOP-1 States (5.1.2); the value is the book's state number (used by SS)."""

    S1 = 1  # Active
    S2 = 2  # Retransmit without Wait
    S3 = 3  # Retransmit with Wait
    S4 = 4  # Initialising without BC Frame
    S5 = 5  # Initialising with BC Frame
    S6 = 6  # Initial

    @property
    def title(self) -> str:
        return _FOP_STATE_TITLES[self]


_FOP_STATE_TITLES: Final = {
    FopState.S1: "Active",
    FopState.S2: "Retransmit without Wait",
    FopState.S3: "Retransmit with Wait",
    FopState.S4: "Initialising without BC Frame",
    FopState.S5: "Initialising with BC Frame",
    FopState.S6: "Initial",
}


class FopEvent(Enum):
    """FOP-1 Events of State Table 5-1, in the table's row order.

    CLCW events assume the CLCW passed the checks that precede the table (5.3.2:
    COP in Effect = 1 and the right VCID).  "valid N(R)" means NN(R) <= N(R) <= V(S)
    (modulo 256); TL is Transmission_Limit, TC Transmission_Count, TT Timeout_Type.
    """

    # CLCW, Lockout = 0, N(R) = V(S) (all outstanding Type-AD frames acknowledged)
    E1 = "CLCW: Lockout=0, N(R)=V(S), Retransmit=0, Wait=0, N(R)=NN(R)"
    E2 = "CLCW: Lockout=0, N(R)=V(S), Retransmit=0, Wait=0, N(R)!=NN(R)"
    E3 = "CLCW: Lockout=0, N(R)=V(S), Retransmit=0, Wait=1"
    E4 = "CLCW: Lockout=0, N(R)=V(S), Retransmit=1"
    # CLCW, Lockout = 0, NN(R) <= N(R) < V(S) (some outstanding frames not acknowledged)
    E5 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=0, Wait=0, N(R)=NN(R)"
    E6 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=0, Wait=0, N(R)!=NN(R)"
    E7 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=0, Wait=1"
    E101 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, TL=1, N(R)!=NN(R)"
    E102 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, TL=1, N(R)=NN(R)"
    E8 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, TL>1, N(R)!=NN(R), Wait=0"
    E9 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, TL>1, N(R)!=NN(R), Wait=1"
    E10 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, N(R)=NN(R), TC<TL, Wait=0"
    E11 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, N(R)=NN(R), TC<TL, Wait=1"
    E12 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, N(R)=NN(R), TC>=TL, Wait=0"
    E103 = "CLCW: Lockout=0, N(R)<V(S), Retransmit=1, N(R)=NN(R), TC>=TL, Wait=1"
    E13 = "CLCW: Lockout=0, invalid N(R)"
    E14 = "CLCW: Lockout=1"
    E15 = "CLCW: row E15 of table 5-1 (never classified here, see FopEngine docs)"
    # Timer expiry
    E16 = "Timer expires, TC<TL, TT=0"
    E104 = "Timer expires, TC<TL, TT=1"
    E17 = "Timer expires, TC>=TL, TT=0"
    E18 = "Timer expires, TC>=TL, TT=1"
    # Requests from the Higher Procedures
    E19 = "Request to Transfer FDU (AD), Wait_Queue empty"
    E20 = "Request to Transfer FDU (AD), Wait_Queue not empty"
    E21 = "Request to Transfer FDU (BD), BD_Out_Flag=Ready"
    E22 = "Request to Transfer FDU (BD), BD_Out_Flag=Not_Ready"
    # Directives from Management
    E23 = "Initiate AD Service (without CLCW check)"
    E24 = "Initiate AD Service (with CLCW check)"
    E25 = "Initiate AD Service (with Unlock), BC_Out_Flag=Ready"
    E26 = "Initiate AD Service (with Unlock), BC_Out_Flag=Not_Ready"
    E27 = "Initiate AD Service (with Set V(R)), BC_Out_Flag=Ready"
    E28 = "Initiate AD Service (with Set V(R)), BC_Out_Flag=Not_Ready"
    E29 = "Terminate AD Service"
    E30 = "Resume AD Service, SS=0"
    E31 = "Resume AD Service, SS=1"
    E32 = "Resume AD Service, SS=2"
    E33 = "Resume AD Service, SS=3"
    E34 = "Resume AD Service, SS=4"
    E35 = "Set V(S) to V*(S)"
    E36 = "Set FOP_Sliding_Window_Width"
    E37 = "Set T1_Initial"
    E38 = "Set Transmission_Limit"
    E39 = "Set Timeout_Type"
    E40 = "Invalid Directive"
    # Responses from the Lower Procedures
    E41 = "AD_Accept"
    E42 = "AD_Reject"
    E43 = "BC_Accept"
    E44 = "BC_Reject"
    E45 = "BD_Accept"
    E46 = "BD_Reject"


#: Events that come from the caller as requests or directives (E19..E40): a "not
#: applicable" cell for one of these is API misuse and raises InvalidState.
CALLER_EVENTS: Final = frozenset(FopEvent[f"E{n}"] for n in range(19, 41))


class AlertCode(Enum):
    """Reasons for the 'Alert' notification, table 4-4."""

    LIMIT = "LIMIT"  # Transmission_Limit reached on a negative acknowledgement (TL = 1)
    T1 = "T1"  # Timer expired with Transmission_Count at the limit
    LOCKOUT = "LOCKOUT"  # CLCW reports Lockout
    SYNCH = "SYNCH"  # CLCW flags inconsistent with FOP-1's state
    NN_R = "NN_R"  # CLCW with invalid N(R)
    CLCW = "CLCW"  # CLCW with Wait = 1 and Retransmit = 0
    LLIF = "LLIF"  # Lower Layer Interface failure (a Reject Response)
    TERM = "TERM"  # Terminate AD Service Directive


class FopAction(Enum):
    """The actions of State Table 5-1 (defined in 5.2), one member per book action."""

    IGNORE = "Ignore"  # 5.2.18
    ACCEPT = "Accept"  # 5.2.11
    REJECT = "Reject"  # 5.2.12
    CONFIRM = "Confirm"  # 5.2.13
    INITIALISE = "Initialise"  # 5.2.14
    ALERT = "Alert"  # 5.2.15, reason code in FopTransition.alert
    SUSPEND = "Suspend"  # 5.2.16, with SS set to the current state's number
    RESUME = "Resume"  # 5.2.17
    START_TIMER = "Start Timer"  # 5.1.9
    CANCEL_TIMER = "Cancel Timer"  # 5.1.9
    REMOVE_ACKNOWLEDGED_FRAMES = "Remove Acknowledged Frames from Sent_Queue"  # 5.2.8
    INITIATE_AD_RETRANSMISSION = "Initiate AD Retransmission"  # 5.2.7
    INITIATE_BC_RETRANSMISSION = "Initiate BC Retransmission"  # 5.2.7
    LOOK_FOR_FDU = "Look for FDU"  # 5.2.10
    LOOK_FOR_DIRECTIVE = "Look for Directive"  # 5.2.9
    ADD_TO_WAIT_QUEUE = "Add FDU to Wait_Queue"  # 5.1.4
    TRANSMIT_BD_FRAME = "Transmit Type-BD Frame"  # 5.2.6
    TRANSMIT_BC_UNLOCK = "Transmit Type-BC Frame (Unlock)"  # 5.2.5
    PREPARE_SET_VR = "Set V(S) and NN(R) to V*(R)"  # E27
    TRANSMIT_BC_SET_VR = "Transmit Type-BC Frame (Set V(R))"  # 5.2.5
    RELEASE_BC_FRAME = "Release copy of Type-BC Frame"  # S5 on E1
    SET_VS = "Set V(S) and NN(R) to V*(S) if SS=0, else Reject"  # E35
    SET_FOP_WINDOW = "Set FOP_Sliding_Window_Width"  # E36
    SET_T1_INITIAL = "Set T1_Initial"  # E37
    SET_TRANSMISSION_LIMIT = "Set Transmission_Limit"  # E38
    SET_TIMEOUT_TYPE = "Set Timeout_Type"  # E39
    AD_OUT_READY = "Set AD_Out_Flag to Ready"  # E41
    BC_OUT_READY = "Set BC_Out_Flag to Ready"  # E43
    BD_OUT_READY = "Set BD_Out_Flag to Ready"  # E45


@dataclass(frozen=True, slots=True)
class FopTransition:
    """One cell of State Table 5-1: the actions, in order, and the next state."""

    actions: tuple[FopAction, ...]
    next_state: FopState
    #: Reason code when ``actions`` holds ALERT.
    alert: AlertCode | None = None


_A = FopAction
_S = FopState
_E = FopEvent


def _t(next_state: FopState, *actions: FopAction, alert: AlertCode | None = None) -> FopTransition:
    return FopTransition(actions=actions or (FopAction.IGNORE,), next_state=next_state, alert=alert)


def _alert(code: AlertCode) -> FopTransition:
    return FopTransition(actions=(FopAction.ALERT,), next_state=FopState.S6, alert=code)


_REMOVE_CANCEL_LOOK: Final = (
    _A.REMOVE_ACKNOWLEDGED_FRAMES,
    _A.CANCEL_TIMER,
    _A.LOOK_FOR_FDU,
)
_REMOVE_RETRANSMIT_LOOK: Final = (
    _A.REMOVE_ACKNOWLEDGED_FRAMES,
    _A.INITIATE_AD_RETRANSMISSION,
    _A.LOOK_FOR_FDU,
)
_ACTIVE: Final = (_S.S1, _S.S2, _S.S3)
_ALL_BUT_INITIAL: Final = (_S.S1, _S.S2, _S.S3, _S.S4, _S.S5)

#: FOP-1 State Table, CCSDS 232.1-B-2 table 5-1: (state, event) -> cell.
#: Absent pairs are the book's "not applicable" cells.
FOP_TABLE: Final[dict[tuple[FopState, FopEvent], FopTransition]] = {}


def _row(event: FopEvent, cells: dict[FopState, FopTransition]) -> None:
    for state, cell in cells.items():
        FOP_TABLE[(state, event)] = cell


# -- CLCW arrival, N(R) = V(S) ----------------------------------------------------------
# Table 5-1 row E1
_row(_E.E1, {
    _S.S1: _t(_S.S1, _A.IGNORE),
    _S.S2: _alert(AlertCode.SYNCH),
    _S.S3: _alert(AlertCode.SYNCH),
    _S.S4: _t(_S.S1, _A.CONFIRM, _A.CANCEL_TIMER),
    _S.S5: _t(_S.S1, _A.RELEASE_BC_FRAME, _A.CONFIRM, _A.CANCEL_TIMER),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E2 (S4, S5: not applicable)
_row(_E.E2, {
    _S.S1: _t(_S.S1, *_REMOVE_CANCEL_LOOK),
    _S.S2: _t(_S.S1, *_REMOVE_CANCEL_LOOK),
    _S.S3: _t(_S.S1, *_REMOVE_CANCEL_LOOK),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E3
_row(_E.E3, {**{s: _alert(AlertCode.CLCW) for s in _ALL_BUT_INITIAL}, _S.S6: _t(_S.S6)})
# Table 5-1 row E4
_row(_E.E4, {
    _S.S1: _alert(AlertCode.SYNCH),
    _S.S2: _alert(AlertCode.SYNCH),
    _S.S3: _alert(AlertCode.SYNCH),
    _S.S4: _alert(AlertCode.SYNCH),
    _S.S5: _t(_S.S5, _A.IGNORE),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# -- CLCW arrival, NN(R) <= N(R) < V(S); S4 and S5 not applicable in every row ----------
# Table 5-1 row E5
_row(_E.E5, {
    _S.S1: _t(_S.S1, _A.IGNORE),
    _S.S2: _alert(AlertCode.SYNCH),
    _S.S3: _alert(AlertCode.SYNCH),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E6
_row(_E.E6, {
    _S.S1: _t(_S.S1, _A.REMOVE_ACKNOWLEDGED_FRAMES, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S1, _A.REMOVE_ACKNOWLEDGED_FRAMES, _A.LOOK_FOR_FDU),
    _S.S3: _t(_S.S1, _A.REMOVE_ACKNOWLEDGED_FRAMES, _A.LOOK_FOR_FDU),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E7
_row(_E.E7, {**{s: _alert(AlertCode.CLCW) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# Table 5-1 row E101
_row(_E.E101, {
    **{
        s: FopTransition(
            actions=(_A.REMOVE_ACKNOWLEDGED_FRAMES, _A.ALERT),
            next_state=_S.S6,
            alert=AlertCode.LIMIT,
        )
        for s in _ACTIVE
    },
    _S.S6: _t(_S.S6),
})  # fmt: skip
# Table 5-1 row E102
_row(_E.E102, {**{s: _alert(AlertCode.LIMIT) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# Table 5-1 row E8
_row(_E.E8, {**{s: _t(_S.S2, *_REMOVE_RETRANSMIT_LOOK) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# Table 5-1 row E9
_row(_E.E9, {
    **{s: _t(_S.S3, _A.REMOVE_ACKNOWLEDGED_FRAMES) for s in _ACTIVE},
    _S.S6: _t(_S.S6),
})  # fmt: skip
# Table 5-1 row E10
_row(_E.E10, {
    _S.S1: _t(_S.S2, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S2, _A.IGNORE),
    _S.S3: _t(_S.S2, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E11
_row(_E.E11, {**{s: _t(_S.S3, _A.IGNORE) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# Table 5-1 row E12
_row(_E.E12, {**{s: _t(_S.S2, _A.IGNORE) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# Table 5-1 row E103
_row(_E.E103, {**{s: _t(_S.S3, _A.IGNORE) for s in _ACTIVE}, _S.S6: _t(_S.S6)})
# -- CLCW arrival, other -----------------------------------------------------------------
# Table 5-1 row E13
_row(_E.E13, {
    **{s: _alert(AlertCode.NN_R) for s in (_S.S1, _S.S2, _S.S3, _S.S4)},
    _S.S5: _t(_S.S5, _A.IGNORE),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E14
_row(_E.E14, {
    **{s: _alert(AlertCode.LOCKOUT) for s in (_S.S1, _S.S2, _S.S3, _S.S4)},
    _S.S5: _t(_S.S5, _A.IGNORE),
    _S.S6: _t(_S.S6, _A.IGNORE),
})  # fmt: skip
# Table 5-1 row E15 (cells as dariol83/ccsds S1..S6FopState transcribe them)
_row(_E.E15, {**{s: _alert(AlertCode.CLCW) for s in _ALL_BUT_INITIAL}, _S.S6: _t(_S.S6)})
# -- Timer expiry; S6 not applicable (no timer runs in S6) -------------------------------
# Table 5-1 row E16
_row(_E.E16, {
    _S.S1: _t(_S.S1, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S2, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S3: _t(_S.S3, _A.IGNORE),
    _S.S4: _alert(AlertCode.T1),
    _S.S5: _t(_S.S5, _A.INITIATE_BC_RETRANSMISSION, _A.LOOK_FOR_DIRECTIVE),
})  # fmt: skip
# Table 5-1 row E104
_row(_E.E104, {
    _S.S1: _t(_S.S1, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S2, _A.INITIATE_AD_RETRANSMISSION, _A.LOOK_FOR_FDU),
    _S.S3: _t(_S.S3, _A.IGNORE),
    _S.S4: _t(_S.S6, _A.SUSPEND),
    _S.S5: _t(_S.S5, _A.INITIATE_BC_RETRANSMISSION, _A.LOOK_FOR_DIRECTIVE),
})  # fmt: skip
# Table 5-1 row E17
_row(_E.E17, {s: _alert(AlertCode.T1) for s in _ALL_BUT_INITIAL})
# Table 5-1 row E18
_row(_E.E18, {
    **{s: _t(_S.S6, _A.SUSPEND) for s in (_S.S1, _S.S2, _S.S3, _S.S4)},
    _S.S5: _alert(AlertCode.T1),
})  # fmt: skip
# -- Requests from the Higher Procedures -------------------------------------------------
# Table 5-1 row E19
_row(_E.E19, {
    _S.S1: _t(_S.S1, _A.ADD_TO_WAIT_QUEUE, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S2, _A.ADD_TO_WAIT_QUEUE, _A.LOOK_FOR_FDU),
    _S.S3: _t(_S.S3, _A.ADD_TO_WAIT_QUEUE),
    _S.S4: _t(_S.S4, _A.REJECT),
    _S.S5: _t(_S.S5, _A.REJECT),
    _S.S6: _t(_S.S6, _A.REJECT),
})  # fmt: skip
# Table 5-1 row E20
_row(_E.E20, {s: _t(s, _A.REJECT) for s in FopState})
# Table 5-1 row E21
_row(_E.E21, {s: _t(s, _A.ACCEPT, _A.TRANSMIT_BD_FRAME) for s in FopState})
# Table 5-1 row E22
_row(_E.E22, {s: _t(s, _A.REJECT) for s in FopState})
# -- Directives from Management ----------------------------------------------------------
# Table 5-1 row E23
_row(_E.E23, {
    **{s: _t(s, _A.REJECT) for s in _ALL_BUT_INITIAL},
    _S.S6: _t(_S.S1, _A.ACCEPT, _A.INITIALISE, _A.CONFIRM),
})  # fmt: skip
# Table 5-1 row E24
_row(_E.E24, {
    **{s: _t(s, _A.REJECT) for s in _ALL_BUT_INITIAL},
    _S.S6: _t(_S.S4, _A.ACCEPT, _A.INITIALISE, _A.START_TIMER),
})  # fmt: skip
# Table 5-1 row E25
_row(_E.E25, {
    **{s: _t(s, _A.REJECT) for s in _ALL_BUT_INITIAL},
    _S.S6: _t(_S.S5, _A.ACCEPT, _A.INITIALISE, _A.TRANSMIT_BC_UNLOCK),
})  # fmt: skip
# Table 5-1 row E26
_row(_E.E26, {s: _t(s, _A.REJECT) for s in FopState})
# Table 5-1 row E27
_row(_E.E27, {
    **{s: _t(s, _A.REJECT) for s in _ALL_BUT_INITIAL},
    _S.S6: _t(
        _S.S5, _A.ACCEPT, _A.INITIALISE, _A.PREPARE_SET_VR, _A.TRANSMIT_BC_SET_VR
    ),
})  # fmt: skip
# Table 5-1 row E28
_row(_E.E28, {s: _t(s, _A.REJECT) for s in FopState})
# Table 5-1 row E29
_row(_E.E29, {
    **{
        s: FopTransition(
            actions=(_A.ACCEPT, _A.ALERT, _A.CONFIRM), next_state=_S.S6, alert=AlertCode.TERM
        )
        for s in _ALL_BUT_INITIAL
    },
    _S.S6: _t(_S.S6, _A.ACCEPT, _A.CONFIRM),
})  # fmt: skip
# Table 5-1 row E30
_row(_E.E30, {s: _t(s, _A.REJECT) for s in FopState})
# Table 5-1 rows E31..E34 (S1..S5 not applicable: SS != 0 only ever holds in S6)
_row(_E.E31, {_S.S6: _t(_S.S1, _A.ACCEPT, _A.RESUME, _A.CONFIRM)})
_row(_E.E32, {_S.S6: _t(_S.S2, _A.ACCEPT, _A.RESUME, _A.CONFIRM)})
_row(_E.E33, {_S.S6: _t(_S.S3, _A.ACCEPT, _A.RESUME, _A.CONFIRM)})
_row(_E.E34, {_S.S6: _t(_S.S4, _A.ACCEPT, _A.RESUME, _A.CONFIRM)})
# Table 5-1 row E35
_row(_E.E35, {**{s: _t(s, _A.REJECT) for s in _ALL_BUT_INITIAL}, _S.S6: _t(_S.S6, _A.SET_VS)})
# Table 5-1 rows E36..E39
_row(_E.E36, {s: _t(s, _A.ACCEPT, _A.SET_FOP_WINDOW, _A.CONFIRM) for s in FopState})
_row(_E.E37, {s: _t(s, _A.ACCEPT, _A.SET_T1_INITIAL, _A.CONFIRM) for s in FopState})
_row(_E.E38, {s: _t(s, _A.ACCEPT, _A.SET_TRANSMISSION_LIMIT, _A.CONFIRM) for s in FopState})
_row(_E.E39, {s: _t(s, _A.ACCEPT, _A.SET_TIMEOUT_TYPE, _A.CONFIRM) for s in FopState})
# Table 5-1 row E40
_row(_E.E40, {s: _t(s, _A.REJECT) for s in FopState})
# -- Responses from the Lower Procedures -------------------------------------------------
# Table 5-1 row E41
_row(_E.E41, {
    _S.S1: _t(_S.S1, _A.AD_OUT_READY, _A.LOOK_FOR_FDU),
    _S.S2: _t(_S.S2, _A.AD_OUT_READY, _A.LOOK_FOR_FDU),
    **{s: _t(s, _A.AD_OUT_READY) for s in (_S.S3, _S.S4, _S.S5, _S.S6)},
})  # fmt: skip
# Table 5-1 row E42
_row(_E.E42, {s: _alert(AlertCode.LLIF) for s in FopState})
# Table 5-1 row E43
_row(_E.E43, {
    **{s: _t(s, _A.BC_OUT_READY) for s in (_S.S1, _S.S2, _S.S3, _S.S4, _S.S6)},
    _S.S5: _t(_S.S5, _A.BC_OUT_READY, _A.LOOK_FOR_DIRECTIVE),
})  # fmt: skip
# Table 5-1 row E44
_row(_E.E44, {s: _alert(AlertCode.LLIF) for s in FopState})
# Table 5-1 row E45
_row(_E.E45, {s: _t(s, _A.BD_OUT_READY, _A.CONFIRM) for s in FopState})
# Table 5-1 row E46
_row(_E.E46, {s: _alert(AlertCode.LLIF) for s in FopState})


# ======================================================================================
# FOP-1: managed parameters, notifications
# ======================================================================================


class TimeoutType(IntEnum):
    """Timeout_Type TT (5.1.10): what a T1 expiry at the Transmission_Limit does."""

    ALERT = 0  # Alert [T1], go to S6
    SUSPEND = 1  # Suspend, go to S6 remembering the state in SS


@dataclass(frozen=True, slots=True, kw_only=True)
class FopConfig:
    """FOP-1 managed parameters for one TC Virtual Channel (232.1-B-2 5.1, 7)."""

    #: The Virtual Channel this FOP-1 sends on (SCID, VCID, frame limits).
    tc: TcVcConfig
    #: FOP_Sliding_Window_Width K (5.1.12): 1 <= K <= PW and K < 256.
    window_width: int = 10
    #: Timer_Initial_Value T1_Initial in seconds (5.1.9).
    t1_initial: float = 3.0
    #: Transmission_Limit (5.1.10): transmissions of the first frame on the Sent_Queue.
    transmission_limit: int = 3
    #: Timeout_Type TT (5.1.10).
    timeout_type: TimeoutType = TimeoutType.ALERT
    #: Model the Lower Procedures as accepting every frame at once (see module docs).
    auto_accept_lower_layer: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.window_width, bool) or not 1 <= self.window_width <= MAX_FOP_WINDOW:
            raise LocalProtocolError(
                f"FOP_Sliding_Window_Width K={self.window_width!r} outside"
                f" 1..{MAX_FOP_WINDOW} ({_clause('5.1.12')})"
            )
        if not (
            isinstance(self.t1_initial, int | float)
            and math.isfinite(self.t1_initial)
            and self.t1_initial > 0
        ):
            raise LocalProtocolError(
                f"T1_Initial={self.t1_initial!r} s must be a finite number > 0 ({_clause('5.1.9')})"
            )
        if isinstance(self.transmission_limit, bool) or self.transmission_limit < 1:
            raise LocalProtocolError(
                f"Transmission_Limit={self.transmission_limit!r} must be at least 1"
                f" ({_clause('5.1.10')})"
            )
        if self.timeout_type not in (0, 1):
            raise LocalProtocolError(
                f"Timeout_Type={self.timeout_type!r} must be 0 or 1 ({_clause('5.1.10')})"
            )
        object.__setattr__(self, "timeout_type", TimeoutType(self.timeout_type))


class Directive(Enum):
    """FOP-1 Directives (232.1-B-2 3.3.2 / table 4-2)."""

    INITIATE_AD_WITHOUT_CLCW = "Initiate AD Service (without CLCW check)"
    INITIATE_AD_WITH_CLCW = "Initiate AD Service (with CLCW check)"
    INITIATE_AD_WITH_UNLOCK = "Initiate AD Service (with Unlock)"
    INITIATE_AD_WITH_SET_VR = "Initiate AD Service (with Set V(R))"
    TERMINATE_AD = "Terminate AD Service"
    RESUME_AD = "Resume AD Service"
    SET_VS = "Set V(S)"
    SET_FOP_WINDOW = "Set FOP_Sliding_Window_Width"
    SET_T1_INITIAL = "Set T1_Initial"
    SET_TRANSMISSION_LIMIT = "Set Transmission_Limit"
    SET_TIMEOUT_TYPE = "Set Timeout_Type"


class Outcome(Enum):
    """Responses FOP-1 gives to Requests and Directives (5.2.11-5.2.13, 5.2.2)."""

    ACCEPT = "Accept"
    REJECT = "Reject"
    POSITIVE_CONFIRM = "Positive Confirm"
    NEGATIVE_CONFIRM = "Negative Confirm"


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectiveResponse:
    """A response to a Directive (Async_Notify / Directive response, 232.1-B-2 4.2)."""

    #: The id the directive method returned.
    request_id: int
    directive: Directive
    outcome: Outcome
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferResponse:
    """A response to a Request to Transfer FDU (Type-AD or Type-BD)."""

    #: The id :meth:`FopEngine.send_ad` / :meth:`FopEngine.send_bd` returned.
    request_id: int
    frame_type: FrameType
    outcome: Outcome
    #: N(S) of the Type-AD frame carrying the FDU, once one is assigned.
    sequence_number: int | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """'Alert' notification (5.2.15, table 4-4), with the event and state (4-4 note)."""

    code: AlertCode
    state: FopState
    event: FopEvent
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspended:
    """'Suspend' notification (5.2.16): the AD Service is suspended in state SS."""

    suspend_state: int
    at: float


FopNotification = DirectiveResponse | TransferResponse | Alert | Suspended


@dataclass(frozen=True, slots=True, kw_only=True)
class FopStep:
    """What one event did: the table cell applied, for tests and monitoring."""

    state: FopState
    event: FopEvent
    #: The cell, or None for a "not applicable" cell that was ignored.
    transition: FopTransition | None
    next_state: FopState


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


def classify_clcw(
    clcw: Clcw,
    *,
    vs: int,
    nn_r: int,
    transmission_count: int,
    transmission_limit: int,
) -> FopEvent:
    """The table 5-1 CLCW event (E1-E14, E101-E103) for ``clcw``; a pure function.

    Assumes the pre-table checks (COP in Effect, VCID; 5.3.2) passed.  N(R) is valid
    when NN(R) <= N(R) <= V(S) modulo 256.
    """
    if clcw.lockout:
        return FopEvent.E14
    nr = clcw.report_value
    outstanding = _mod(vs - nn_r)
    if _mod(nr - nn_r) > outstanding:
        return FopEvent.E13
    if nr == vs:
        if clcw.retransmit:
            return FopEvent.E4
        if clcw.wait:
            return FopEvent.E3
        return FopEvent.E1 if nr == nn_r else FopEvent.E2
    if not clcw.retransmit:
        if clcw.wait:
            return FopEvent.E7
        return FopEvent.E5 if nr == nn_r else FopEvent.E6
    if transmission_limit == 1:
        return FopEvent.E102 if nr == nn_r else FopEvent.E101
    if nr != nn_r:
        return FopEvent.E9 if clcw.wait else FopEvent.E8
    if transmission_count < transmission_limit:
        return FopEvent.E11 if clcw.wait else FopEvent.E10
    return FopEvent.E103 if clcw.wait else FopEvent.E12


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

    Row E15 of table 5-1 is in :data:`FOP_TABLE`, but no CLCW is ever classified into
    it: E1-E14 and E101-E103 already cover every combination of the flags and N(R).
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
        self.counters: Counter[str] = Counter()

    # -- read-only views -------------------------------------------------------------

    @property
    def config(self) -> FopConfig:
        """Current managed parameters (Set directives replace them)."""
        return self._params

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
        _check_sequence_number("V*(R)", vr, "5.3 E27")
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
        _check_sequence_number("V*(S)", vs, "5.3 E35")
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
                f"Timeout_Type={timeout_type!r} must be 0 or 1 ({_clause('5.1.10')})"
            )
        return self._directive(Directive.SET_TIMEOUT_TYPE, FopEvent.E39, int(timeout_type), now)

    # -- CLCW and lower layer ---------------------------------------------------------

    def receive_clcw(self, clcw: Clcw, now: float) -> Dropped | None:
        """Take in a CLCW reported for this VC; returns a Dropped if it fails 5.3.2 checks."""
        self._now = now
        vcid = self._config.tc.vcid
        if clcw.cop_in_effect != CopInEffect.COP_1:
            return self._drop("not-cop-1", f"COP in Effect {clcw.cop_in_effect.name}", now)
        if clcw.vcid != vcid:
            return self._drop("wrong-vcid", f"CLCW for VC {clcw.vcid}, this FOP is VC {vcid}", now)
        event = classify_clcw(
            clcw,
            vs=self.vs,
            nn_r=self.nn_r,
            transmission_count=self.transmission_count,
            transmission_limit=self._params.transmission_limit,
        )
        logger.debug("< CLCW N(R)=%d %s in %s", clcw.report_value, event.name, self.state.name)
        self._run(event, _Pending(clcw=clcw), now)
        return None

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
            Dropped(layer=Layer.COP1, reason=reason, clause=_clause("5.3.2"), detail=detail, at=now)
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
        self.vs = _mod(self.vs + 1)
        if not self._sent_queue:
            self.transmission_count = 1
        self._sent_queue.append(_SentFrame(frame=frame, request_id=request_id))
        self._start_timer()
        self.ad_out_ready = False
        self.counters["ad"] += 1
        self._hand_out(frame, FopEvent.E41)

    def _transmit_bc(self, frame: TcFrame) -> None:
        """5.2.5 'Transmit Type-BC Frame'."""
        self._sent_queue.append(_SentFrame(frame=frame, request_id=None))
        self.transmission_count = 1
        self._start_timer()
        self.bc_out_ready = False
        self.counters["bc"] += 1
        self._hand_out(frame, FopEvent.E43)

    def _look_for_fdu(self) -> None:
        """5.2.10 'Look for FDU'."""
        if not self.ad_out_ready or self._retransmit_first(FrameType.AD):
            return
        if self._wait_queue is not None and _mod(self.vs - self.nn_r) < self._params.window_width:
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
                    self.counters["ad-retransmitted"] += 1
                    self._hand_out(entry.frame, FopEvent.E41)
                else:
                    self.bc_out_ready = False
                    self.counters["bc-retransmitted"] += 1
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
            self.nn_r = _mod(self.nn_r + 1)
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


def _check_sequence_number(name: str, value: int, clause: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MODULUS:
        raise LocalProtocolError(
            f"{name}={value!r} outside 0..{MAX_SEQUENCE_NUMBER} ({_clause(clause)})"
        )


# ======================================================================================
# FARM-1 (CCSDS 232.1-B-2 section 6)
# ======================================================================================


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
                f" {MIN_FARM_WINDOW}..{MAX_FARM_WINDOW} ({_clause('6.1.8.2')})"
            )
        if self.initial_state not in (FarmState.S1, FarmState.S3):
            raise LocalProtocolError(
                f"FARM-1 starts in S1 (Open) or S3 (Lockout), not {self.initial_state!r}"
            )
        _check_sequence_number("initial V(R)", self.initial_vr, "6.1.7")
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
        self.discards: Counter[str] = Counter()
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
        offset = _mod(frame.sequence_number - self.vr)
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
            self.discards[DiscardReason.NOT_APPLICABLE.value] += 1
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
                    self.discards[discarded.value] += 1
                case FarmAction.IGNORE:
                    pass
                case FarmAction.INCREMENT_VR:
                    self.vr = _mod(self.vr + 1)
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
    "CALLER_EVENTS",
    "FARM_TABLE",
    "FOP_TABLE",
    "Alert",
    "AlertCode",
    "Directive",
    "DirectiveResponse",
    "DiscardReason",
    "FarmAction",
    "FarmConfig",
    "FarmEngine",
    "FarmEvent",
    "FarmResult",
    "FarmState",
    "FarmTransition",
    "FopAction",
    "FopConfig",
    "FopEngine",
    "FopEvent",
    "FopNotification",
    "FopState",
    "FopStep",
    "FopTransition",
    "Outcome",
    "Suspended",
    "TimeoutType",
    "TransferResponse",
    "classify_clcw",
]
