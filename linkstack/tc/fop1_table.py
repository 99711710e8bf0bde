"""FOP-1 State Table (CCSDS 232.1-B-2 section 5, table 5-1): states, events, actions.

Everything that decides what FOP-1 does lives here: the states and events as the book
names them, the actions (5.2), the table as a dict keyed by ``(state, event)``, and
:func:`classify_clcw`, which turns a received CLCW into its event.  The engine that
executes the table is :class:`linkstack.tc.fop1.FopEngine`.

Cells the book marks "not applicable" are absent from :data:`FOP_TABLE`, with one
exception, named :data:`S4_S5_COMPLETIONS`: the CLCW rows E2, E5-E12 and E101-E103 in
S4 and S5.  The book has no cell there because it takes NN(R) = V(S) on entering S4 or
S5, but 'Purge the Sent_Queue' (5.2.2) leaves NN(R) where it was, so after an Alert
with frames outstanding a legal CLCW does reach those cells.  In S4, a CLCW whose N(R)
is valid but is not V(S), or is V(S) while FOP-1 still expects older acknowledgements,
cannot confirm the Initiate directive and never will: Alert [SYNCH] (Alert [CLCW] for
E7, Wait = 1, as E3 in S4).  In S5 the CLCW may predate the Type-BC frame taking
effect, as for E4, E13 and E14 there: Ignore.  All sequence-number arithmetic is modulo
256 (5.2.1 note).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from linkstack.tc.clcw import Clcw, CopInEffect
from linkstack.tc.cop1_common import AlertCode, mod

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
    E15 = "CLCW for this VC that reports a COP other than COP-1 (an invalid CLCW)"
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
# Table 5-1 row E15, an invalid CLCW: FopEngine.receive_clcw classifies a CLCW for this
# VC whose COP in Effect is not COP-1 (5.3.2 a) into it; the provenance of its cells, as
# of every cell, is in tests/test_cop1.py
_row(_E.E15, {**{s: _alert(AlertCode.CLCW) for s in _ALL_BUT_INITIAL}, _S.S6: _t(_S.S6)})
# -- S4 and S5 on CLCW rows the book leaves not applicable there (module docstring) -----
#: The (state, event) cells linkstack adds to table 5-1, and why: see the module text.
S4_S5_COMPLETIONS: Final = frozenset(
    (state, event)
    for state in (_S.S4, _S.S5)
    for event in (
        _E.E2, _E.E5, _E.E6, _E.E7, _E.E101, _E.E102,
        _E.E8, _E.E9, _E.E10, _E.E11, _E.E12, _E.E103,
    )
)  # fmt: skip
for _state, _event in sorted(S4_S5_COMPLETIONS, key=lambda c: (c[0], c[1].name)):
    if _state == _S.S5:
        FOP_TABLE[(_state, _event)] = _t(_S.S5, _A.IGNORE)
    elif _event == _E.E7:
        FOP_TABLE[(_state, _event)] = _alert(AlertCode.CLCW)
    else:
        FOP_TABLE[(_state, _event)] = _alert(AlertCode.SYNCH)
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


# -- events from CLCWs ------------------------------------------------------------------


def classify_clcw(
    clcw: Clcw,
    *,
    vs: int,
    nn_r: int,
    transmission_count: int,
    transmission_limit: int,
) -> FopEvent:
    """The table 5-1 CLCW event (E1-E15, E101-E103) for ``clcw``; a pure function.

    Assumes the CLCW is for this VC (5.3.2 b).  One whose COP in Effect is not COP-1
    (5.3.2 a) is E15, an invalid CLCW.  N(R) is valid when NN(R) <= N(R) <= V(S)
    modulo 256.
    """
    if clcw.cop_in_effect != CopInEffect.COP_1:
        return FopEvent.E15
    if clcw.lockout:
        return FopEvent.E14
    nr = clcw.report_value
    outstanding = mod(vs - nn_r)
    if mod(nr - nn_r) > outstanding:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FopStep:
    """What one event did: the table cell applied, for tests and monitoring."""

    state: FopState
    event: FopEvent
    #: The cell, or None for a "not applicable" cell that was ignored.
    transition: FopTransition | None
    next_state: FopState


__all__ = [
    "CALLER_EVENTS",
    "FOP_TABLE",
    "S4_S5_COMPLETIONS",
    "FopAction",
    "FopEvent",
    "FopState",
    "FopStep",
    "FopTransition",
    "classify_clcw",
]
