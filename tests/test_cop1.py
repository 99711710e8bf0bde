"""COP-1 (CCSDS 232.1-B-2): FOP-1 and FARM-1 state tables, closed loop, bad input.

Provenance of the expected tables below: written for this test from CCSDS 232.1-B-2
table 5-1 (FOP-1) and table 6-1 (FARM-1) as recalled from the book, checked cell by
cell against two independent implementations that transcribe them: dariol83/ccsds
(``cop1/fop/S1FopState.java`` .. ``S6FopState.java``, ``cop1/farm/S1..S3FarmState.java``)
and Yamcs (``tctm/ccsds/Cop1TcPacketHandler.java``).  They are not imported from the
module under test.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.errors import Dropped, InvalidState, LocalProtocolError
from linkstack.tc.clcw import Clcw, CopInEffect
from linkstack.tc.cop1 import (
    Alert,
    AlertCode,
    Directive,
    DirectiveResponse,
    DiscardReason,
    FarmAction,
    FarmConfig,
    FarmEngine,
    FarmEvent,
    FarmResult,
    FarmState,
    FarmStats,
    FopConfig,
    FopEngine,
    FopEvent,
    FopNotification,
    FopState,
    Outcome,
    Suspended,
    TimeoutType,
    TransferResponse,
    classify_clcw,
)
from linkstack.tc.frame import (
    BypassFlag,
    FrameType,
    SetVR,
    TcFrame,
    TcVcConfig,
    Unlock,
)

TC = TcVcConfig(scid=0x2A, vcid=3)

# ======================================================================================
# Expected FOP-1 table (232.1-B-2 table 5-1).  Cell notation: "ACTION+ACTION>next",
# an alert as "ALERT:CODE"; a missing state is "not applicable".
# ======================================================================================

_RCL = "REMOVE_ACKNOWLEDGED_FRAMES+CANCEL_TIMER+LOOK_FOR_FDU>1"
_RRL = "REMOVE_ACKNOWLEDGED_FRAMES+INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>2"
_REJ = {s: f"REJECT>{s}" for s in range(1, 7)}
# CLCW rows the book leaves "not applicable" in S4 and S5 although a legal CLCW reaches
# them once an Alert has left NN(R) behind V(S) (5.2.2 does not move NN(R)): linkstack's
# completion, argued in linkstack/tc/fop1_table.py (S4_S5_COMPLETIONS).
_S4_SYNCH = {4: "ALERT:SYNCH>6", 5: "IGNORE>5"}

EXPECTED_FOP: dict[str, dict[int, str]] = {
    "E1": {1: "IGNORE>1", 2: "ALERT:SYNCH>6", 3: "ALERT:SYNCH>6", 4: "CONFIRM+CANCEL_TIMER>1",
           5: "RELEASE_BC_FRAME+CONFIRM+CANCEL_TIMER>1", 6: "IGNORE>6"},
    "E2": {1: _RCL, 2: _RCL, 3: _RCL} | _S4_SYNCH | {6: "IGNORE>6"},
    "E3": {1: "ALERT:CLCW>6", 2: "ALERT:CLCW>6", 3: "ALERT:CLCW>6", 4: "ALERT:CLCW>6",
           5: "ALERT:CLCW>6", 6: "IGNORE>6"},
    "E4": {1: "ALERT:SYNCH>6", 2: "ALERT:SYNCH>6", 3: "ALERT:SYNCH>6", 4: "ALERT:SYNCH>6",
           5: "IGNORE>5", 6: "IGNORE>6"},
    "E5": {1: "IGNORE>1", 2: "ALERT:SYNCH>6", 3: "ALERT:SYNCH>6"} | _S4_SYNCH | {6: "IGNORE>6"},
    "E6": {s: "REMOVE_ACKNOWLEDGED_FRAMES+LOOK_FOR_FDU>1" for s in (1, 2, 3)} | _S4_SYNCH
    | {6: "IGNORE>6"},
    "E7": {1: "ALERT:CLCW>6", 2: "ALERT:CLCW>6", 3: "ALERT:CLCW>6", 4: "ALERT:CLCW>6",
           5: "IGNORE>5", 6: "IGNORE>6"},
    "E101": {s: "REMOVE_ACKNOWLEDGED_FRAMES+ALERT:LIMIT>6" for s in (1, 2, 3)} | _S4_SYNCH
    | {6: "IGNORE>6"},
    "E102": {1: "ALERT:LIMIT>6", 2: "ALERT:LIMIT>6", 3: "ALERT:LIMIT>6"} | _S4_SYNCH
    | {6: "IGNORE>6"},
    "E8": {1: _RRL, 2: _RRL, 3: _RRL} | _S4_SYNCH | {6: "IGNORE>6"},
    "E9": {s: "REMOVE_ACKNOWLEDGED_FRAMES>3" for s in (1, 2, 3)} | _S4_SYNCH | {6: "IGNORE>6"},
    "E10": {1: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>2", 2: "IGNORE>2",
            3: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>2"} | _S4_SYNCH | {6: "IGNORE>6"},
    "E11": {1: "IGNORE>3", 2: "IGNORE>3", 3: "IGNORE>3"} | _S4_SYNCH | {6: "IGNORE>6"},
    "E12": {1: "IGNORE>2", 2: "IGNORE>2", 3: "IGNORE>2"} | _S4_SYNCH | {6: "IGNORE>6"},
    "E103": {1: "IGNORE>3", 2: "IGNORE>3", 3: "IGNORE>3"} | _S4_SYNCH | {6: "IGNORE>6"},
    "E13": {1: "ALERT:NN_R>6", 2: "ALERT:NN_R>6", 3: "ALERT:NN_R>6", 4: "ALERT:NN_R>6",
            5: "IGNORE>5", 6: "IGNORE>6"},
    "E14": {1: "ALERT:LOCKOUT>6", 2: "ALERT:LOCKOUT>6", 3: "ALERT:LOCKOUT>6",
            4: "ALERT:LOCKOUT>6", 5: "IGNORE>5", 6: "IGNORE>6"},
    "E15": {s: "ALERT:CLCW>6" for s in range(1, 6)} | {6: "IGNORE>6"},
    "E16": {1: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>1",
            2: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>2", 3: "IGNORE>3", 4: "ALERT:T1>6",
            5: "INITIATE_BC_RETRANSMISSION+LOOK_FOR_DIRECTIVE>5"},
    "E104": {1: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>1",
             2: "INITIATE_AD_RETRANSMISSION+LOOK_FOR_FDU>2", 3: "IGNORE>3", 4: "SUSPEND>6",
             5: "INITIATE_BC_RETRANSMISSION+LOOK_FOR_DIRECTIVE>5"},
    "E17": {s: "ALERT:T1>6" for s in range(1, 6)},
    "E18": {1: "SUSPEND>6", 2: "SUSPEND>6", 3: "SUSPEND>6", 4: "SUSPEND>6", 5: "ALERT:T1>6"},
    "E19": {1: "ADD_TO_WAIT_QUEUE+LOOK_FOR_FDU>1", 2: "ADD_TO_WAIT_QUEUE+LOOK_FOR_FDU>2",
            3: "ADD_TO_WAIT_QUEUE>3", 4: "REJECT>4", 5: "REJECT>5", 6: "REJECT>6"},
    "E20": _REJ,
    "E21": {s: f"ACCEPT+TRANSMIT_BD_FRAME>{s}" for s in range(1, 7)},
    "E22": _REJ,
    "E23": {s: f"REJECT>{s}" for s in range(1, 6)} | {6: "ACCEPT+INITIALISE+CONFIRM>1"},
    "E24": {s: f"REJECT>{s}" for s in range(1, 6)} | {6: "ACCEPT+INITIALISE+START_TIMER>4"},
    "E25": {s: f"REJECT>{s}" for s in range(1, 6)}
    | {6: "ACCEPT+INITIALISE+TRANSMIT_BC_UNLOCK>5"},
    "E26": _REJ,
    "E27": {s: f"REJECT>{s}" for s in range(1, 6)}
    | {6: "ACCEPT+INITIALISE+PREPARE_SET_VR+TRANSMIT_BC_SET_VR>5"},
    "E28": _REJ,
    "E29": {s: "ACCEPT+ALERT:TERM+CONFIRM>6" for s in range(1, 6)} | {6: "ACCEPT+CONFIRM>6"},
    "E30": _REJ,
    "E31": {6: "ACCEPT+RESUME+CONFIRM>1"},
    "E32": {6: "ACCEPT+RESUME+CONFIRM>2"},
    "E33": {6: "ACCEPT+RESUME+CONFIRM>3"},
    "E34": {6: "ACCEPT+RESUME+CONFIRM>4"},
    "E35": {s: f"REJECT>{s}" for s in range(1, 6)} | {6: "SET_VS>6"},
    "E36": {s: f"ACCEPT+SET_FOP_WINDOW+CONFIRM>{s}" for s in range(1, 7)},
    "E37": {s: f"ACCEPT+SET_T1_INITIAL+CONFIRM>{s}" for s in range(1, 7)},
    "E38": {s: f"ACCEPT+SET_TRANSMISSION_LIMIT+CONFIRM>{s}" for s in range(1, 7)},
    "E39": {s: f"ACCEPT+SET_TIMEOUT_TYPE+CONFIRM>{s}" for s in range(1, 7)},
    "E40": _REJ,
    "E41": {1: "AD_OUT_READY+LOOK_FOR_FDU>1", 2: "AD_OUT_READY+LOOK_FOR_FDU>2"}
    | {s: f"AD_OUT_READY>{s}" for s in (3, 4, 5, 6)},
    "E42": {s: "ALERT:LLIF>6" for s in range(1, 7)},
    "E43": {s: f"BC_OUT_READY>{s}" for s in (1, 2, 3, 4, 6)}
    | {5: "BC_OUT_READY+LOOK_FOR_DIRECTIVE>5"},
    "E44": {s: "ALERT:LLIF>6" for s in range(1, 7)},
    "E45": {s: f"BD_OUT_READY+CONFIRM>{s}" for s in range(1, 7)},
    "E46": {s: "ALERT:LLIF>6" for s in range(1, 7)},
}  # fmt: skip

CALLER = {f"E{n}" for n in range(19, 41)}


def _parse(cell: str) -> tuple[list[str], int, str | None]:
    actions, next_state = cell.split(">")
    names, alert = [], None
    for part in actions.split("+"):
        if part.startswith("ALERT:"):
            names.append("ALERT")
            alert = part.removeprefix("ALERT:")
        else:
            names.append(part)
    return names, int(next_state), alert


def test_expected_fop_table_covers_every_event() -> None:
    assert set(EXPECTED_FOP) == {e.name for e in FopEvent}


# -- reaching each FOP-1 state through legal inputs --------------------------------------


def _clcw(nr: int, *, lockout: bool = False, wait: bool = False, retransmit: bool = False,
          vcid: int = TC.vcid) -> Clcw:  # fmt: skip
    return Clcw(vcid=vcid, report_value=nr % 256, lockout=lockout, wait=wait, retransmit=retransmit)


def _drain(fop: FopEngine) -> list[FopNotification]:
    out = []
    while (event := fop.next_event()) is not None:
        out.append(event)
    return out


def fop_in(state: FopState, outstanding: int, *, k: int = 8) -> FopEngine:
    """A FOP-1 driven into ``state`` by legal directives, requests and CLCWs."""
    fop = FopEngine(FopConfig(tc=TC, window_width=k, transmission_limit=3, t1_initial=1.0))
    if state in (FopState.S1, FopState.S2, FopState.S3):
        fop.initiate_ad_without_clcw(0.0)
        n = outstanding if state == FopState.S1 else max(outstanding, 1)
        for i in range(n):
            fop.send_ad(bytes([i]), 0.0)
        if state != FopState.S1:
            fop.receive_clcw(_clcw(fop.nn_r, retransmit=True, wait=state == FopState.S3), 0.1)
    elif state == FopState.S4:
        fop.initiate_ad_with_clcw(0.0)
    elif state == FopState.S5:
        fop.initiate_ad_with_set_vr(9, 0.0)
    fop.frames_to_send()
    _drain(fop)
    assert fop.state == state
    return fop


_VALUES = {"E27": 7, "E35": 5, "E36": 4, "E37": 2.0, "E38": 2, "E39": 1}


def _clcw_for(fop: FopEngine, event: FopEvent) -> Clcw:
    all_acked = event.name in ("E1", "E2", "E3", "E4")
    return _clcw(fop.vs if all_acked else fop.nn_r, lockout=event == FopEvent.E14)


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(FopState, FopEvent)), ids=lambda x: x.name
)
@settings(max_examples=3, deadline=None)
@given(outstanding=st.integers(min_value=0, max_value=3))
def test_fop_table_every_state_event_pair(
    state: FopState, event: FopEvent, outstanding: int
) -> None:
    """Table 5-1 sweep: every (state, event), from a state reached legally."""
    fop = fop_in(state, outstanding)
    expected = EXPECTED_FOP[event.name].get(int(state))
    kwargs = {"clcw": _clcw_for(fop, event), "value": _VALUES.get(event.name)}
    if expected is None:  # not applicable
        if event.name in CALLER:
            with pytest.raises(InvalidState, match=event.name):
                fop.inject(event, 0.5, **kwargs)  # type: ignore[arg-type]
        else:
            step = fop.inject(event, 0.5, **kwargs)  # type: ignore[arg-type]
            assert step.transition is None
            assert fop.state == state
            assert _drain(fop) == []
        return
    names, next_state, alert = _parse(expected)
    step = fop.inject(event, 0.5, **kwargs)  # type: ignore[arg-type]
    assert step.transition is not None
    assert [a.name for a in step.transition.actions] == names
    assert step.next_state == next_state
    notes = _drain(fop)
    alerts = [n.code.value for n in notes if isinstance(n, Alert)]
    assert alerts == ([alert] if alert else [])
    suspends = [n.suspend_state for n in notes if isinstance(n, Suspended)]
    assert suspends == ([int(state)] if "SUSPEND" in names else [])
    if "ALERT" in names:
        assert fop.get_timer() is None and fop.sent_queue_length == 0
    frames = fop.frames_to_send()
    if "TRANSMIT_BC_UNLOCK" in names:
        assert [f.command for f in frames] == [Unlock()]
    if "TRANSMIT_BC_SET_VR" in names:
        assert [f.command for f in frames] == [SetVR(7)]
    if "TRANSMIT_BD_FRAME" in names:
        assert [f.frame_type for f in frames] == [FrameType.BD]
    outcomes = [n.outcome for n in notes if isinstance(n, DirectiveResponse | TransferResponse)]
    if "REJECT" in names:
        assert Outcome.REJECT in outcomes


# -- CLCW classification (the event conditions of table 5-1) ----------------------------


def _reference_event(
    lockout: bool, wait: bool, retransmit: bool, nr: int, vs: int, nnr: int, tc: int, tl: int
) -> str:
    """Straight from the row headings of table 5-1 (modulo-256 comparisons)."""
    if lockout:
        return "E14"
    if not (nr - nnr) % 256 <= (vs - nnr) % 256:
        return "E13"
    if nr == vs:
        return "E4" if retransmit else "E3" if wait else "E1" if nr == nnr else "E2"
    if not retransmit:
        return "E7" if wait else "E5" if nr == nnr else "E6"
    if tl == 1:
        return "E102" if nr == nnr else "E101"
    if nr != nnr:
        return "E9" if wait else "E8"
    if tc < tl:
        return "E11" if wait else "E10"
    return "E103" if wait else "E12"


@settings(max_examples=400, deadline=None)
@given(
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    nnr=st.integers(0, 255),
    outstanding=st.integers(0, 255),
    offset=st.integers(0, 255),
    tl=st.integers(1, 5),
    tc=st.integers(1, 6),
)
def test_clcw_classification_matches_table_conditions(
    flags: tuple[bool, bool, bool], nnr: int, outstanding: int, offset: int, tl: int, tc: int
) -> None:
    lockout, wait, retransmit = flags
    vs = (nnr + outstanding) % 256
    nr = (nnr + offset) % 256
    clcw = _clcw(nr, lockout=lockout, wait=wait, retransmit=retransmit)
    got = classify_clcw(clcw, vs=vs, nn_r=nnr, transmission_count=tc, transmission_limit=tl)
    assert got.name == _reference_event(lockout, wait, retransmit, nr, vs, nnr, tc, tl)


# ======================================================================================
# Expected FARM-1 table (232.1-B-2 table 6-1); (S2, E1) is not applicable.
# ======================================================================================

EXPECTED_FARM: dict[str, dict[int, str]] = {
    "E1": {1: "ACCEPT+INCREMENT_VR+RESET_RETRANSMIT>1", 3: "DISCARD>3"},
    "E2": {1: "DISCARD+SET_RETRANSMIT+SET_WAIT>2", 2: "DISCARD>2", 3: "DISCARD>3"},
    "E3": {1: "DISCARD+SET_RETRANSMIT>1", 2: "DISCARD>2", 3: "DISCARD>3"},
    "E4": {1: "DISCARD>1", 2: "DISCARD>2", 3: "DISCARD>3"},
    "E5": {1: "DISCARD+SET_LOCKOUT>3", 2: "DISCARD+SET_LOCKOUT>3", 3: "DISCARD>3"},
    "E6": {s: f"ACCEPT+INCREMENT_FARM_B>{s}" for s in (1, 2, 3)},
    "E7": {1: "INCREMENT_FARM_B+RESET_RETRANSMIT>1",
           2: "INCREMENT_FARM_B+RESET_RETRANSMIT+RESET_WAIT>1",
           3: "INCREMENT_FARM_B+RESET_RETRANSMIT+RESET_WAIT+RESET_LOCKOUT>1"},
    "E8": {1: "INCREMENT_FARM_B+RESET_RETRANSMIT+SET_VR>1",
           2: "INCREMENT_FARM_B+RESET_RETRANSMIT+RESET_WAIT+SET_VR>1",
           3: "INCREMENT_FARM_B>3"},
    "E9": {1: "DISCARD>1", 2: "DISCARD>2", 3: "DISCARD>3"},
    "E10": {1: "IGNORE>1", 2: "RESET_WAIT>1", 3: "IGNORE>3"},
}  # fmt: skip


def _ad(ns: int, data: bytes = b"x") -> TcFrame:
    return TcFrame.data_frame(TC, data, bypass=BypassFlag.TYPE_A, sequence_number=ns % 256)


def _bd(data: bytes = b"b") -> TcFrame:
    return TcFrame.data_frame(TC, data, bypass=BypassFlag.TYPE_B, sequence_number=0)


def farm_in(state: FarmState, *, buffer_full: bool) -> FarmEngine:
    """A FARM-1 driven into ``state`` (buffer full or not) by legal frames."""
    farm = FarmEngine(FarmConfig(tc=TC, window_width=10, buffers=1))
    if buffer_full or state == FarmState.S2:
        assert farm.receive_frame(_ad(0)).accepted
    if state == FarmState.S2:
        assert farm.receive_frame(_ad(farm.vr)).event == FarmEvent.E2
    if state == FarmState.S3:
        assert farm.receive_frame(_ad(farm.vr + 128)).event == FarmEvent.E5
    assert farm.state == state
    return farm


def _bad_bc_bytes() -> bytes:
    # A valid Type-BC frame carrying Unlock, then its control octet changed to 0x01
    # (a reserved pattern, 232.0-B-4 4.1.3.3) with the FECF recomputed.
    from linkstack.packets.fecf import append_fecf

    body = TcFrame.control_frame(TC, Unlock()).to_bytes()[:-2]
    return append_fecf(body[:-1] + b"\x01")


def _farm_stimulus(farm: FarmEngine, event: FarmEvent) -> Callable[[], FarmResult]:
    vr = farm.vr
    frames = {
        FarmEvent.E1: _ad(vr), FarmEvent.E2: _ad(vr), FarmEvent.E3: _ad(vr + 1),
        FarmEvent.E4: _ad(vr - 1), FarmEvent.E5: _ad(vr + 100), FarmEvent.E6: _bd(),
        FarmEvent.E7: TcFrame.control_frame(TC, Unlock()),
        FarmEvent.E8: TcFrame.control_frame(TC, SetVR(50)),
    }  # fmt: skip
    if event == FarmEvent.E9:

        def bad() -> FarmResult:
            result = farm.receive_bytes(_bad_bc_bytes())
            assert isinstance(result, FarmResult)
            return result

        return bad
    if event == FarmEvent.E10:
        return farm.buffer_released
    frame = frames[event]
    return lambda: farm.receive_frame(frame)


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(FarmState, FarmEvent)), ids=lambda x: x.name
)
@settings(max_examples=2, deadline=None)
@given(buffer_full=st.booleans())
def test_farm_table_every_state_event_pair(
    state: FarmState, event: FarmEvent, buffer_full: bool
) -> None:
    """Table 6-1 sweep: every (state, event), from a state reached legally."""
    if event == FarmEvent.E1 and state != FarmState.S2:
        buffer_full = False  # E1 means a buffer is available
    if event == FarmEvent.E2:
        buffer_full = True
    farm = farm_in(state, buffer_full=buffer_full)
    expected = EXPECTED_FARM[event.name].get(int(state))
    if expected is None:  # (S2, E1): in Wait no buffer is available, so use the hook
        result = farm.inject(event, _ad(farm.vr))
        assert result.discarded == DiscardReason.NOT_APPLICABLE
        assert farm.state == state
        return
    vr_before, b_before = farm.vr, farm.farm_b_counter
    result = _farm_stimulus(farm, event)()
    assert result.event == event
    names, next_state, _ = _parse(expected)
    assert [a.name for a in result.actions] == names
    assert result.next_state == next_state == farm.state
    assert result.accepted == ("ACCEPT" in names)
    assert (result.discarded is not None) == ("DISCARD" in names)
    assert farm.vr == (
        (vr_before + 1) % 256 if "INCREMENT_VR" in names else 50 if "SET_VR" in names else vr_before
    )
    assert farm.farm_b_counter == b_before + ("INCREMENT_FARM_B" in names)
    clcw = farm.clcw()
    assert clcw.lockout == (farm.state == FarmState.S3)
    assert clcw.report_value == farm.vr
    assert clcw.farm_b_counter == farm.farm_b_counter % 4
    if "SET_RETRANSMIT" in names:
        assert clcw.retransmit
    if "RESET_RETRANSMIT" in names:
        assert not clcw.retransmit
    if farm.state == FarmState.S2:
        assert clcw.wait


# ======================================================================================
# Closed loop: FOP-1 + FARM-1 over a scripted lossy channel with a fake clock
# ======================================================================================


@dataclass
class Loop:
    """Ground FOP-1 and on-board FARM-1; frames and CLCWs dropped by a seeded RNG."""

    fop: FopEngine
    farm: FarmEngine
    rng: random.Random
    frame_loss: float = 0.0
    clcw_loss: float = 0.0
    drop_frame: Callable[[TcFrame], bool] | None = None
    now: float = 0.0
    delivered: list[bytes] = field(default_factory=list)
    notes: list[FopNotification] = field(default_factory=list)
    timer_expiries: int = 0
    frames_sent: int = 0

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        timer = self.fop.get_timer()
        if timer is not None and self.now >= timer:
            self.timer_expiries += 1
        self.fop.handle_timer(self.now)
        self.pump()

    def pump(self) -> None:
        for frame in self.fop.frames_to_send():
            self.frames_sent += 1
            if self.drop_frame is not None and self.drop_frame(frame):
                continue
            if self.rng.random() < self.frame_loss:
                continue
            result = self.farm.receive_bytes(frame.to_bytes())  # through the codec
            assert isinstance(result, FarmResult)
            if result.data is not None:
                self.delivered.append(result.data)
                self.farm.buffer_released()
        if self.rng.random() >= self.clcw_loss:  # one TM frame, one OCF
            clcw = Clcw.from_bytes(self.farm.clcw().to_bytes())
            self.fop.receive_clcw(clcw, self.now)
        while (note := self.fop.next_event()) is not None:
            self.notes.append(note)

    def run(self, until: Callable[[], bool], limit: float = 600.0) -> None:
        while not until():
            assert self.now < limit, f"no progress by t={self.now}: {self.fop.state}"
            self.step()

    def outcomes(self, outcome: Outcome) -> list[TransferResponse]:
        return [n for n in self.notes if isinstance(n, TransferResponse) and n.outcome == outcome]

    def alerts(self) -> list[AlertCode]:
        return [n.code for n in self.notes if isinstance(n, Alert)]


def make_loop(
    seed: int = 0,
    *,
    k: int = 5,
    w: int = 10,
    t1: float = 1.0,
    limit: int = 10,
    tt: TimeoutType = TimeoutType.ALERT,
    farm_state: FarmState = FarmState.S1,
    frame_loss: float = 0.0,
    clcw_loss: float = 0.0,
    drop_frame: Callable[[TcFrame], bool] | None = None,
) -> Loop:
    fop = FopEngine(
        FopConfig(tc=TC, window_width=k, t1_initial=t1, transmission_limit=limit, timeout_type=tt)
    )
    farm = FarmEngine(FarmConfig(tc=TC, window_width=w, initial_state=farm_state))
    return Loop(
        fop=fop,
        farm=farm,
        rng=random.Random(seed),
        frame_loss=frame_loss,
        clcw_loss=clcw_loss,
        drop_frame=drop_frame,
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_lossy_loop_delivers_every_unit_once_in_order(seed: int) -> None:
    loop = make_loop(seed, frame_loss=0.25, clcw_loss=0.3)
    loop.fop.initiate_ad_without_clcw(0.0)
    units = [f"unit {i:03d}".encode() for i in range(80)]
    ids = [loop.fop.send_ad(u, loop.now) for u in units]
    loop.run(lambda: len(loop.outcomes(Outcome.POSITIVE_CONFIRM)) == len(units))
    assert loop.delivered == units  # exactly once, in order
    assert [n.request_id for n in loop.outcomes(Outcome.POSITIVE_CONFIRM)] == ids
    assert [n.sequence_number for n in loop.outcomes(Outcome.POSITIVE_CONFIRM)] == [
        i % 256 for i in range(80)
    ]
    assert loop.alerts() == [] and loop.outcomes(Outcome.NEGATIVE_CONFIRM) == []
    assert loop.fop.stats.ad_retransmitted > 0
    assert loop.timer_expiries > 0  # some losses were only recovered by T1
    assert loop.fop.state == FopState.S1 and loop.fop.get_timer() is None
    assert loop.frames_sent == loop.fop.stats.ad + loop.fop.stats.ad_retransmitted


def test_loop_across_sequence_number_wrap() -> None:
    loop = make_loop(7, frame_loss=0.1)
    loop.fop.set_vs(250, 0.0)
    loop.fop.initiate_ad_with_set_vr(250, 0.0)
    loop.run(lambda: loop.fop.state == FopState.S1)
    units = [bytes([i]) for i in range(20)]
    for u in units:
        loop.fop.send_ad(u, loop.now)
    loop.run(lambda: len(loop.delivered) == 20 and loop.fop.sent_queue_length == 0)
    assert loop.delivered == units and loop.farm.vr == (250 + 20) % 256 == loop.fop.vs


def test_t1_retransmission_then_t1_alert_at_transmission_limit() -> None:
    loop = make_loop(limit=3, drop_frame=lambda f: f.frame_type == FrameType.AD)
    loop.fop.initiate_ad_without_clcw(0.0)
    rid = loop.fop.send_ad(b"never", 0.0)
    loop.run(lambda: bool(loop.alerts()))
    assert loop.alerts() == [AlertCode.T1]
    assert loop.timer_expiries == 3  # E16, E16, then E17 at Transmission_Count = 3
    assert loop.fop.stats.ad == 1 and loop.fop.stats.ad_retransmitted == 2
    assert loop.fop.state == FopState.S6
    assert [n.request_id for n in loop.outcomes(Outcome.NEGATIVE_CONFIRM)] == [rid]


def test_retransmit_flag_with_limit_one_raises_limit_alert() -> None:
    """Transmission_Limit = 1: a negative acknowledgement is E101/E102, Alert [LIMIT]."""
    loop = make_loop(limit=1, drop_frame=lambda f: f.sequence_number == 0)
    loop.fop.initiate_ad_without_clcw(0.0)
    loop.fop.send_ad(b"a", 0.0)
    loop.fop.send_ad(b"b", 0.0)
    loop.pump()  # frame 0 lost, frame 1 in the positive window: Retransmit_Flag = 1
    assert loop.farm.retransmit
    assert loop.alerts() == [AlertCode.LIMIT] and loop.fop.state == FopState.S6
    assert len(loop.outcomes(Outcome.NEGATIVE_CONFIRM)) == 2


def test_timeout_type_1_suspends_and_resume_restarts() -> None:
    """TT = 1 (the deep-space use in 5.1.9): suspend at the limit, resume to read CLCWs."""
    loop = make_loop(limit=2, tt=TimeoutType.SUSPEND, clcw_loss=1.0)
    loop.fop.initiate_ad_without_clcw(0.0)
    rid = loop.fop.send_ad(b"late", 0.0)
    loop.run(lambda: any(isinstance(n, Suspended) for n in loop.notes))
    assert loop.fop.state == FopState.S6 and loop.fop.suspend_state == 1
    assert loop.alerts() == [] and loop.fop.sent_queue_length == 1
    assert loop.delivered == [b"late"]  # the frame arrived; only the CLCWs were lost
    loop.clcw_loss = 0.0
    loop.fop.resume_ad(loop.now)
    assert fop_state(loop.fop) == FopState.S1 and loop.fop.suspend_state == 0
    assert loop.fop.get_timer() == loop.now + 1.0  # 5.2.17: Resume starts the Timer
    loop.run(lambda: loop.fop.sent_queue_length == 0)
    assert [n.request_id for n in loop.outcomes(Outcome.POSITIVE_CONFIRM)] == [rid]


def test_lockout_then_recovery_with_unlock() -> None:
    loop = make_loop()
    loop.fop.set_vs(100, 0.0)  # far outside the FARM window around V(R) = 0
    loop.fop.initiate_ad_without_clcw(0.0)
    rid = loop.fop.send_ad(b"lost", 0.0)
    loop.pump()
    assert loop.farm.state == FarmState.S3 and loop.farm.clcw().lockout
    assert loop.alerts() == [AlertCode.LOCKOUT] and loop.fop.state == FopState.S6
    assert [n.request_id for n in loop.outcomes(Outcome.NEGATIVE_CONFIRM)] == [rid]
    # Recovery: take N(R) from the CLCW, Set V(S) to it, Initiate AD with Unlock.
    loop.fop.set_vs(loop.farm.clcw().report_value, loop.now)
    did = loop.fop.initiate_ad_with_unlock(loop.now)
    loop.run(lambda: loop.fop.state == FopState.S1)
    assert farm_state(loop.farm) == FarmState.S1 and not loop.farm.clcw().lockout
    confirms = [
        n for n in loop.notes
        if isinstance(n, DirectiveResponse) and n.request_id == did
    ]  # fmt: skip
    assert [c.outcome for c in confirms] == [Outcome.ACCEPT, Outcome.POSITIVE_CONFIRM]
    loop.fop.send_ad(b"after", loop.now)
    loop.run(lambda: loop.delivered == [b"after"])


def test_farm_starting_in_lockout_needs_unlock() -> None:
    loop = make_loop(farm_state=FarmState.S3)
    loop.fop.initiate_ad_with_clcw(0.0)  # S4: the first CLCW shows Lockout
    loop.pump()
    assert loop.alerts() == [AlertCode.LOCKOUT]
    loop.fop.initiate_ad_with_unlock(loop.now)
    loop.run(lambda: loop.fop.state == FopState.S1)
    assert loop.farm.farm_b_counter == 1


def test_set_vr_initialisation() -> None:
    loop = make_loop(3, frame_loss=0.3)
    did = loop.fop.initiate_ad_with_set_vr(42, 0.0)
    assert loop.fop.state == FopState.S5 and loop.fop.vs == loop.fop.nn_r == 42
    loop.run(lambda: loop.fop.state == FopState.S1)
    assert loop.farm.vr == 42
    assert any(
        isinstance(n, DirectiveResponse) and n.request_id == did
        and n.outcome == Outcome.POSITIVE_CONFIRM
        for n in loop.notes
    )  # fmt: skip
    for i in range(6):
        loop.fop.send_ad(bytes([i]), loop.now)
    loop.run(lambda: len(loop.delivered) == 6 and loop.fop.sent_queue_length == 0)
    assert loop.delivered == [bytes([i]) for i in range(6)] and loop.farm.vr == 48


def test_set_vr_bc_frame_lost_is_retransmitted_then_t1_alert() -> None:
    loop = make_loop(limit=2, drop_frame=lambda f: f.frame_type == FrameType.BC)
    loop.fop.initiate_ad_with_set_vr(5, 0.0)
    loop.run(lambda: bool(loop.alerts()))
    assert loop.alerts() == [AlertCode.T1]
    assert loop.fop.stats.bc == 1 and loop.fop.stats.bc_retransmitted == 1
    assert any(
        isinstance(n, DirectiveResponse) and n.outcome == Outcome.NEGATIVE_CONFIRM
        for n in loop.notes
    )


def test_bd_frames_bypass_farm_and_count() -> None:
    loop = make_loop(farm_state=FarmState.S3)  # even in Lockout
    for i in range(5):
        loop.fop.send_bd(bytes([i]), loop.now)  # FOP in S6: BD needs no AD Service
        loop.pump()
    assert loop.delivered == [bytes([i]) for i in range(5)]
    assert loop.farm.farm_b_counter == 5 and loop.farm.clcw().farm_b_counter == 1
    assert loop.farm.state == FarmState.S3
    bd = [n for n in loop.notes if isinstance(n, TransferResponse)]
    assert [n.outcome for n in bd[:2]] == [Outcome.ACCEPT, Outcome.POSITIVE_CONFIRM]


def test_fop_window_k_limits_frames_in_flight() -> None:
    loop = make_loop(k=4, clcw_loss=1.0)
    loop.fop.initiate_ad_without_clcw(0.0)
    for i in range(10):
        loop.fop.send_ad(bytes([i]), 0.0)
    frames = loop.fop.frames_to_send()
    assert [f.sequence_number for f in frames] == [0, 1, 2, 3]
    assert loop.fop.sent_queue_length == 4 and not loop.fop.wait_queue_empty
    assert loop.fop.backlog_length == 5
    loop.fop.receive_clcw(_clcw(2), 0.1)  # acknowledges 0 and 1: E6
    assert [f.sequence_number for f in loop.fop.frames_to_send()] == [4, 5]
    loop.fop.set_window_width(6, 0.2)
    loop.fop.receive_clcw(_clcw(2), 0.3)  # E5: Ignore; the next Look for FDU uses K=6
    loop.fop.receive_clcw(_clcw(3), 0.4)
    assert [f.sequence_number for f in loop.fop.frames_to_send()] == [6, 7, 8]


@pytest.mark.parametrize("w", [2, 10, 254])
def test_farm_window_w_areas(w: int) -> None:
    farm = FarmEngine(FarmConfig(tc=TC, window_width=w, initial_vr=200))
    pw = nw = w // 2
    assert farm.classify(_ad(200)) == FarmEvent.E1
    for ns in range(200 + 1, 200 + pw):
        assert farm.classify(_ad(ns)) == FarmEvent.E3
    for ns in range(200 - nw, 200):
        assert farm.classify(_ad(ns)) == FarmEvent.E4
    if w < 254:
        assert farm.classify(_ad(200 + pw)) == FarmEvent.E5
        assert farm.classify(_ad(200 - nw - 1)) == FarmEvent.E5
    assert sum(farm.classify(_ad(ns)) == FarmEvent.E5 for ns in range(256)) == 256 - w


def test_farm_wait_and_buffer_release() -> None:
    farm = FarmEngine(FarmConfig(tc=TC, buffers=2))
    assert farm.receive_frame(_ad(0)).accepted and farm.receive_frame(_ad(1)).accepted
    result = farm.receive_frame(_ad(2))
    assert result.discarded == DiscardReason.NO_BUFFER and farm.state == FarmState.S2
    assert farm.clcw().wait and farm.clcw().retransmit
    assert farm.receive_frame(_ad(3)).discarded == DiscardReason.WAIT
    farm.buffer_released()
    assert farm_state(farm) == FarmState.S1 and not farm.clcw().wait and farm.clcw().retransmit
    assert farm.receive_frame(_ad(2)).accepted and not farm.clcw().retransmit


def test_farm_flags_through_wait_lockout_and_unlock() -> None:
    """Table 6-1 rows E2, E5, E10, E7 in sequence: the Wait_Flag set in S2 stays set
    through Lockout (E5 sets only the Lockout_Flag; E10 in S3 is Ignore) and the
    Unlock resets all three flags (E7 in S3), counting in FARM-B_Counter (6.1.6)."""
    farm = farm_in(FarmState.S2, buffer_full=True)
    assert (farm.vr, farm.wait, farm.retransmit, farm.lockout) == (1, True, True, False)
    assert farm.receive_frame(_ad(farm.vr + 100)).event == FarmEvent.E5
    clcw = farm.clcw()
    assert (farm.state, clcw.lockout, clcw.wait, clcw.retransmit) == (
        FarmState.S3,
        True,
        True,
        True,
    )
    assert farm.buffer_released().actions == (FarmAction.IGNORE,)
    assert farm.clcw().wait and farm.state == FarmState.S3
    # Set V(R) in Lockout is not executed, only counted (6.3.2 note on E8 in S3).
    assert farm.receive_frame(TcFrame.control_frame(TC, SetVR(9))).next_state == FarmState.S3
    assert (farm.vr, farm.farm_b_counter) == (1, 1)
    # Every Type-AD frame is discarded in Lockout, in the window or not.
    assert farm.receive_frame(_ad(farm.vr)).discarded == DiscardReason.LOCKOUT
    farm.receive_frame(TcFrame.control_frame(TC, Unlock()))
    clcw = farm.clcw()
    assert (farm.state, clcw.lockout, clcw.wait, clcw.retransmit) == (
        FarmState.S1,
        False,
        False,
        False,
    )
    assert (clcw.report_value, clcw.farm_b_counter) == (1, 2)
    # The release in Lockout freed the buffer: N(S) = V(R) is accepted again (E1).
    assert farm.buffers_in_use == 0
    assert farm.receive_frame(_ad(1)).accepted and farm.vr == 2


def test_farm_statistics_count_every_discard_reason() -> None:
    """One FarmStats field per DiscardReason, counted as the frame is discarded."""
    farm = FarmEngine(FarmConfig(tc=TC, buffers=1))
    assert farm.receive_frame(_ad(0)).accepted  # V(R) = 1, the one buffer in use
    bad_bc = farm.receive_bytes(_bad_bc_bytes())
    assert isinstance(bad_bc, FarmResult)  # E9 in S1
    reasons = [
        bad_bc.discarded,
        farm.receive_frame(_ad(5)).discarded,  # E3 in S1
        farm.receive_frame(_ad(0)).discarded,  # E4 in S1
        farm.receive_frame(_ad(1)).discarded,  # E2 in S1, to S2
        farm.receive_frame(_ad(1)).discarded,  # E2 in S2
        farm.inject(FarmEvent.E1, _ad(1)).discarded,  # (S2, E1) not applicable
        farm.receive_frame(_ad(100)).discarded,  # E5 in S2, to S3
        farm.receive_frame(_ad(1)).discarded,  # E2 in S3
    ]
    assert sorted(r.value for r in reasons if r is not None) == sorted(
        r.value for r in DiscardReason
    )
    assert farm.stats == FarmStats(**dict.fromkeys(FarmStats.__dataclass_fields__, 1))


# ======================================================================================
# Bad input
# ======================================================================================


def test_clcw_for_another_vc_is_dropped_and_changes_nothing() -> None:
    fop = fop_in(FopState.S1, 2)
    assert isinstance(dropped := fop.receive_clcw(_clcw(fop.vs, vcid=4), 1.0), Dropped)
    assert dropped.reason == "wrong-vcid" and "VC 4" in dropped.detail
    assert fop.state == FopState.S1 and fop.sent_queue_length == 2
    assert _drain(fop) == []
    assert fop.drops == {"cop-1/wrong-vcid": 1}


@pytest.mark.parametrize("state", [FopState.S1, FopState.S3, FopState.S4, FopState.S5])
def test_clcw_reporting_another_cop_is_e15_alert_clcw(state: FopState) -> None:
    """An invalid CLCW (COP in Effect not COP-1, 5.3.2 a) for this VC: row E15."""
    fop = fop_in(state, 2)
    other = Clcw(vcid=TC.vcid, report_value=fop.vs, cop_in_effect=CopInEffect.RESERVED_2)
    assert isinstance(dropped := fop.receive_clcw(other, 1.0), Dropped)
    assert dropped.reason == "not-cop-1" and "RESERVED_2" in dropped.detail
    alerts = [n for n in _drain(fop) if isinstance(n, Alert)]
    assert [(a.code, a.event, a.state) for a in alerts] == [(AlertCode.CLCW, FopEvent.E15, state)]
    assert fop.state == FopState.S6 and fop.sent_queue_length == 0 and fop.get_timer() is None
    assert fop.drops == {"cop-1/not-cop-1": 1}


def test_clcw_reporting_another_cop_in_s6_is_ignored() -> None:
    fop = FopEngine(FopConfig(tc=TC))
    other = Clcw(vcid=TC.vcid, report_value=0, cop_in_effect=CopInEffect.RESERVED_0)
    assert fop.receive_clcw(other, 1.0) is not None
    assert fop.state == FopState.S6 and _drain(fop) == []


def test_clcw_with_n_r_outside_sent_range_alerts_nn_r() -> None:
    fop = fop_in(FopState.S1, 2)
    fop.receive_clcw(_clcw(fop.vs + 1), 1.0)  # acknowledges a frame never sent
    notes = _drain(fop)
    assert [n.code for n in notes if isinstance(n, Alert)] == [AlertCode.NN_R]
    assert [n.event for n in notes if isinstance(n, Alert)] == [FopEvent.E13]
    assert fop.state == FopState.S6


def test_clcw_all_acknowledged_with_retransmit_alerts_synch() -> None:
    fop = fop_in(FopState.S1, 2)
    fop.receive_clcw(_clcw(fop.vs, retransmit=True), 1.0)
    assert [n.code for n in _drain(fop) if isinstance(n, Alert)] == [AlertCode.SYNCH]


def test_clcw_wait_without_retransmit_alerts_clcw() -> None:
    fop = fop_in(FopState.S1, 2)
    fop.receive_clcw(_clcw(fop.nn_r, wait=True), 1.0)
    assert [n.code for n in _drain(fop) if isinstance(n, Alert)] == [AlertCode.CLCW]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda f: f.set_window_width(0, 0.0), "K=0"),
        (lambda f: f.set_window_width(256, 0.0), "K=256"),
        (lambda f: f.set_vs(256, 0.0), "V*(S)=256"),
        (lambda f: f.set_vs(-1, 0.0), "V*(S)=-1"),
        (lambda f: f.initiate_ad_with_set_vr(300, 0.0), "V*(R)=300"),
        (lambda f: f.set_t1_initial(0.0, 0.0), "T1_Initial=0.0"),
        (lambda f: f.set_t1_initial(float("nan"), 0.0), "T1_Initial=nan"),
        (lambda f: f.set_transmission_limit(0, 0.0), "Transmission_Limit=0"),
        (lambda f: f.set_timeout_type(2, 0.0), "Timeout_Type=2"),
        (lambda f: f.send_ad(b"", 0.0), "empty-data-field"),
        (lambda f: f.send_ad(b"x" * 2000, 0.0), "2000 octets"),
    ],
)
def test_malformed_directives_raise_with_values(
    call: Callable[[FopEngine], object], text: str
) -> None:
    fop = fop_in(FopState.S1, 0)
    with pytest.raises(LocalProtocolError, match=text.replace("(", r"\(").replace(")", r"\)")):
        call(fop)
    assert _drain(fop) == [] and fop.state == FopState.S1


def test_directive_rejected_in_wrong_state_and_not_applicable_raises() -> None:
    fop = fop_in(FopState.S1, 0)
    rid = fop.initiate_ad_without_clcw(1.0)
    assert _drain(fop) == [
        DirectiveResponse(
            request_id=rid, directive=fop_directive("INITIATE_AD_WITHOUT_CLCW"),
            outcome=Outcome.REJECT, at=1.0,
        )
    ]  # fmt: skip
    with pytest.raises(InvalidState, match="E31"):
        fop.inject(FopEvent.E31, 1.0)
    with pytest.raises(InvalidState, match="auto_accept_lower_layer"):
        fop.lower_layer_response(FrameType.AD, True, 1.0)


def fop_directive(name: str) -> Directive:
    return Directive[name]


def fop_state(fop: FopEngine) -> FopState:
    """Read the state afresh (keeps mypy from narrowing it across calls)."""
    return fop.state


def farm_state(farm: FarmEngine) -> FarmState:
    return farm.state


def test_set_vs_rejected_while_suspended() -> None:
    loop = make_loop(limit=1, tt=TimeoutType.SUSPEND, drop_frame=lambda f: True)
    loop.fop.initiate_ad_without_clcw(0.0)
    loop.fop.send_ad(b"x", 0.0)
    loop.run(lambda: loop.fop.state == FopState.S6)
    assert loop.fop.suspend_state == 1
    rid = loop.fop.set_vs(0, loop.now)
    notes = _drain(loop.fop)
    assert [
        n.outcome for n in notes if isinstance(n, DirectiveResponse) and n.request_id == rid
    ] == [Outcome.REJECT]


def test_config_validation() -> None:
    for bad in (0, 1, 3, 256, 255):
        with pytest.raises(LocalProtocolError, match=f"W={bad}"):
            FarmConfig(tc=TC, window_width=bad)
    with pytest.raises(LocalProtocolError, match="S2"):
        FarmConfig(tc=TC, initial_state=FarmState.S2)
    with pytest.raises(LocalProtocolError, match="Timeout_Type=3"):
        FopConfig(tc=TC, timeout_type=3)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="SCID 1 VC 3"):
        FarmEngine(FarmConfig(tc=TC)).receive_frame(
            TcFrame.data_frame(TcVcConfig(scid=1, vcid=3), b"x", bypass=BypassFlag.TYPE_B,
                               sequence_number=0)
        )  # fmt: skip


def test_manual_lower_layer_flags_and_llif() -> None:
    fop = FopEngine(FopConfig(tc=TC, auto_accept_lower_layer=False))
    fop.initiate_ad_without_clcw(0.0)
    fop.send_ad(b"a", 0.0)
    fop.send_ad(b"b", 0.0)
    assert [f.sequence_number for f in fop.frames_to_send()] == [0]
    assert not fop.ad_out_ready
    fop.lower_layer_response(FrameType.AD, True, 0.1)  # E41: Look for FDU sends the next
    assert [f.sequence_number for f in fop.frames_to_send()] == [1]
    fop.send_bd(b"c", 0.2)
    rid = fop.send_bd(b"d", 0.2)  # BD_Out_Flag not Ready: E22
    notes = _drain(fop)
    assert [
        n.outcome for n in notes if isinstance(n, TransferResponse) and n.request_id == rid
    ] == [Outcome.REJECT]
    fop.lower_layer_response(FrameType.AD, False, 0.3)  # E42
    assert [n.code for n in _drain(fop) if isinstance(n, Alert)] == [AlertCode.LLIF]
    assert fop.state == FopState.S6


def test_farm_drops_undecodable_bytes() -> None:
    farm = FarmEngine(FarmConfig(tc=TC))
    good = _ad(0).to_bytes()
    result = farm.receive_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert isinstance(result, Dropped) and farm.vr == 0


# ======================================================================================
# Timeout_Type 1: suspend, the suspended S6, resume (232.1-B-2 5.1.10, 5.2.16, 5.2.17)
# ======================================================================================


def fop_suspended(ss: int) -> FopEngine:
    """A FOP-1 suspended from state ``ss`` by legal inputs: TT = 1 and T1 expiries."""
    fop = FopEngine(
        FopConfig(
            tc=TC, window_width=8, transmission_limit=2, t1_initial=1.0,
            timeout_type=TimeoutType.SUSPEND,
        )
    )  # fmt: skip
    if ss == 4:
        fop.initiate_ad_with_clcw(0.0)  # S4; no CLCW comes: E104 at the first expiry
    else:
        fop.initiate_ad_without_clcw(0.0)
        fop.send_ad(b"a", 0.0)
        fop.send_ad(b"b", 0.0)
        if ss == 3:  # in S3 an expiry under the limit is ignored: reach the limit first
            fop.handle_timer(1.0)  # E104 in S1: retransmission, Transmission_Count = 2
        if ss != 1:
            fop.receive_clcw(_clcw(fop.nn_r, retransmit=True, wait=ss == 3), 1.1)
    now = 1.1 if ss == 3 else 0.0
    while not fop.suspended:
        timer = fop.get_timer()
        assert timer is not None and timer > now
        now = timer
        fop.handle_timer(now)
    notes = _drain(fop)
    assert [n.suspend_state for n in notes if isinstance(n, Suspended)] == [ss]
    assert not any(isinstance(n, Alert) for n in notes)
    assert fop.state == FopState.S6 and fop.suspend_state == ss
    assert fop.get_timer() is None
    fop.frames_to_send()
    return fop


@pytest.mark.parametrize("ss", [1, 2, 3, 4])
@pytest.mark.parametrize("event", list(FopEvent), ids=lambda e: e.name)
def test_suspended_s6_every_event(ss: int, event: FopEvent) -> None:
    """The S6 column once more, from S6 with SS = 1..4 (suspended, queues kept)."""
    fop = fop_suspended(ss)
    kept = fop.sent_queue_length
    assert kept == (0 if ss == 4 else 2)
    expected = EXPECTED_FOP[event.name].get(6)
    if event.name in ("E31", "E32", "E33", "E34") and event.name != f"E{30 + ss}":
        return  # Resume is classified from SS (resume_ad): no input gives another one
    kwargs = {"clcw": _clcw_for(fop, event), "value": _VALUES.get(event.name)}
    if expected is None:
        if event.name in CALLER:
            with pytest.raises(InvalidState, match=event.name):
                fop.inject(event, 5.0, **kwargs)  # type: ignore[arg-type]
        else:
            assert fop.inject(event, 5.0, **kwargs).transition is None  # type: ignore[arg-type]
            assert fop.state == FopState.S6 and fop.suspend_state == ss
        return
    names, next_state, alert = _parse(expected)
    step = fop.inject(event, 5.0, **kwargs)  # type: ignore[arg-type]
    assert step.transition is not None
    assert [a.name for a in step.transition.actions] == names
    assert fop.state == next_state
    notes = _drain(fop)
    assert [n.code.value for n in notes if isinstance(n, Alert)] == ([alert] if alert else [])
    if "RESUME" in names:
        assert fop.state == FopState(ss) and fop.suspend_state == 0
        assert fop.get_timer() == 5.0 + 1.0  # 5.2.17 a) starts the Timer
    elif "INITIALISE" in names:
        bc_frames = sum(n.startswith("TRANSMIT_BC") for n in names)  # the new BC frame
        assert fop.suspend_state == 0 and fop.sent_queue_length == bc_frames
    elif "ALERT" not in names:
        assert fop.suspend_state == ss and fop.sent_queue_length == kept  # nothing lost


def test_resume_directive_is_classified_from_suspend_state() -> None:
    """Resume AD is E30 when SS = 0 (Reject) and E31-E34 from SS (5.3, table 5-1)."""
    fop = fop_suspended(2)
    rid = fop.resume_ad(5.0)
    assert [(n.request_id, n.outcome) for n in _drain(fop) if isinstance(n, DirectiveResponse)] == [
        (rid, Outcome.ACCEPT), (rid, Outcome.POSITIVE_CONFIRM)
    ]  # fmt: skip
    assert fop.state == FopState.S2 and not fop.suspended
    again = fop.resume_ad(6.0)  # SS = 0 in S2: E30, Reject
    assert [(n.request_id, n.outcome) for n in _drain(fop) if isinstance(n, DirectiveResponse)] == [
        (again, Outcome.REJECT)
    ]
    fop.terminate_ad(6.0)
    _drain(fop)
    rid = fop.resume_ad(7.0)  # SS = 0 in S6: E30, Reject
    assert [(n.request_id, n.outcome) for n in _drain(fop) if isinstance(n, DirectiveResponse)] == [
        (rid, Outcome.REJECT)
    ]
    assert fop_state(fop) == FopState.S6


def test_outage_suspends_then_raise_limit_and_resume_delivers_once() -> None:
    """Uplink dead past Transmission_Limit x T1 with TT = 1: FOP-1 suspends keeping the
    frames; Resume alone never retransmits (Transmission_Count stays at the limit, so
    the next expiry is E18 again); Set Transmission_Limit then Resume does, losslessly."""
    loop = make_loop(limit=3, tt=TimeoutType.SUSPEND)
    loop.fop.initiate_ad_without_clcw(0.0)
    ids = [loop.fop.send_ad(bytes([i]), 0.0) for i in range(3)]
    loop.frame_loss = 1.0  # uplink dead
    loop.run(lambda: loop.fop.suspended)
    assert loop.timer_expiries == 3 and loop.fop.stats.ad_retransmitted == 2 * 3
    assert loop.fop.sent_queue_length == 3 and loop.alerts() == []
    loop.frame_loss = 0.0  # uplink back
    loop.fop.resume_ad(loop.now)
    sent = loop.frames_sent
    loop.run(lambda: loop.fop.suspended)  # E5 is ignored in S1, T1 expires: E18
    assert loop.frames_sent == sent and loop.delivered == []
    assert loop.fop.transmission_count == 3
    loop.fop.set_transmission_limit(loop.fop.transmission_count + 3, loop.now)
    loop.fop.resume_ad(loop.now)
    loop.run(lambda: loop.fop.sent_queue_length == 0)
    assert loop.delivered == [bytes([i]) for i in range(3)]  # once each, in order
    assert [n.request_id for n in loop.outcomes(Outcome.POSITIVE_CONFIRM)] == ids
    assert loop.alerts() == [] and loop.outcomes(Outcome.NEGATIVE_CONFIRM) == []
    assert loop.fop.transmission_count == 1  # 5.2.8 reset it on the acknowledgement


def test_s4_clcw_short_of_vs_after_an_alert_is_alert_synch() -> None:
    """After an Alert with frames outstanding NN(R) < V(S) (5.2.2 leaves NN(R)); Initiate
    with CLCW check then meets a CLCW with N(R) < V(S): E5, Alert [SYNCH] at once rather
    than waiting out T1."""
    loop = make_loop()
    loop.fop.initiate_ad_without_clcw(0.0)
    loop.frame_loss = 1.0
    loop.fop.send_ad(b"x", 0.0)
    loop.fop.send_ad(b"y", 0.0)
    loop.pump()
    loop.fop.terminate_ad(loop.now)
    loop.pump()
    assert loop.fop.vs == 2 and loop.fop.nn_r == 0 and loop.farm.vr == 0
    loop.notes.clear()
    did = loop.fop.initiate_ad_with_clcw(loop.now)
    loop.pump()  # CLCW N(R) = 0 = NN(R) < V(S) = 2
    alerts = [n for n in loop.notes if isinstance(n, Alert)]
    assert [(a.code, a.event, a.state) for a in alerts] == [
        (AlertCode.SYNCH, FopEvent.E5, FopState.S4)
    ]
    answers = [n.outcome for n in loop.notes if isinstance(n, DirectiveResponse)]
    assert answers == [Outcome.ACCEPT, Outcome.NEGATIVE_CONFIRM] and did > 0
    # The way out the book gives: Set V(S) to the CLCW's N(R), then Initiate again.
    loop.fop.set_vs(loop.farm.clcw().report_value, loop.now)
    loop.fop.initiate_ad_with_clcw(loop.now)
    loop.frame_loss = 0.0
    loop.pump()
    assert loop.fop.state == FopState.S1
