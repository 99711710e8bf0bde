"""The ground's FOP-1 defaults (Yamcs's) and its automatic resume, endpoint to endpoint.

``LinkConfig()`` runs FOP-1 with Transmission_Limit 3 and Timeout_Type 1 (CCSDS
232.1-B-2 5.1.10): after three transmissions of a frame without an acknowledgement
FOP-1 suspends (5.2.16, table 5-1 E18) keeping every frame, and the ground endpoint
resumes it (E31-E34, 5.2.17) as soon as it hears a CLCW of that VC, first raising
Transmission_Limit by 3 (E38: a resumed FOP-1 keeps Transmission_Count at the limit);
the limit goes back to 3 once the frames are acknowledged.

Every test runs a ground and a spacecraft endpoint in memory on a hand-driven clock:
CLTUs go up (or are lost), CADUs come down (or are lost), and T1 fires when the ground
says it is due.  The outcome is exact: the frames on the air, the FOP-1 state at each
step, the commands delivered on board (once, in order) and the counters.
"""

from __future__ import annotations

from linkstack.coding.tc import CltuDecoded, CltuDecoder
from linkstack.endpoints import (
    Apid,
    GroundEndpoint,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
    TcRoute,
)
from linkstack.inference.protocol import EndAck, Message
from linkstack.tc.cop1 import Alert, AlertCode, FopState, TimeoutType
from linkstack.tc.frame import FrameType, TcFrame, peek_vcid

T1 = 2.0  # LinkConfig().fop_t1


class Link:
    """Both endpoints and what went over the air, on a clock the test drives."""

    def __init__(self, config: LinkConfig | None = None) -> None:
        self.config = config or LinkConfig()
        self.ground = GroundEndpoint(self.config)
        self.spacecraft = SpacecraftEndpoint(self.config)
        #: (time, "VC/type N(S)", delivered) of every TC frame the ground radiated.
        self.air: list[tuple[float, str, bool]] = []
        self.received: list[Message] = []

    def up(self, now: float, *, lost: bool = False) -> list[str]:
        """Radiate what the ground has to send; the spacecraft hears it unless ``lost``."""
        sent = []
        for cltu in self.ground.data_to_send():
            frame = _frame(cltu, self.config)
            name = f"{frame.vcid}/{frame.frame_type.value}"
            if frame.frame_type is FrameType.AD:
                name += f" {frame.sequence_number}"
            sent.append(name)
            self.air.append((now, name, not lost))
            if not lost:
                self.spacecraft.receive_bytes(cltu, now)
        while (event := self.spacecraft.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self.received.append(event.message)
        return sent

    def down(self, now: float, frames: int = 1) -> None:
        """``frames`` TM frames down, each with the next VC's CLCW in its OCF, then the
        end of the pass (so the ground decodes the last one now, without the next ASM)."""
        for _ in range(frames):
            self.ground.receive_bytes(self.spacecraft.next_cadu(), now)
        self.ground.end_of_stream(now)

    def run_timers(self, until: float, *, lost: bool) -> list[tuple[float, list[str]]]:
        """Fire every T1 due up to ``until``; what each radiated (lost or heard)."""
        fired = []
        while (due := self.ground.get_timer()) is not None and due <= until:
            self.ground.handle_timer(due)
            fired.append((due, self.up(due, lost=lost)))
        return fired

    def alerts(self) -> list[AlertCode]:
        out = []
        while (event := self.ground.next_event()) is not None:
            if isinstance(event, Alert):
                out.append(event.code)
        return out


def _frame(cltu: bytes, config: LinkConfig) -> TcFrame:
    decoder = CltuDecoder(randomize=config.tc_randomize)
    decoder.receive_bytes(cltu)
    decoder.channel_deactivation()
    event = decoder.next_event()
    assert isinstance(event, CltuDecoded)
    length = ((event.data[2] & 0x03) << 8 | event.data[3]) + 1
    data = event.data[:length]
    return TcFrame.from_bytes(data, config=config.tc_for(peek_vcid(data)))


def _connected(link: Link, *messages: Message) -> list[str]:
    """Send ``messages`` at 0: the Set V(R) goes up and is confirmed by a CLCW."""
    for message in messages:
        link.ground.send(message, 0.0)
    assert link.up(0.0) == ["0/BC"]
    link.down(0.01)  # the CLCW confirms the Set V(R): S5 -> S1, the AD frames go
    return link.up(0.01, lost=True)


def test_the_defaults_are_yamcs_cop1_defaults() -> None:
    config = LinkConfig()
    assert (config.fop_window, config.fop_transmission_limit, config.fop_timeout_type) == (
        10,
        3,
        TimeoutType.SUSPEND,
    )
    fop = config.fop
    assert (fop.window_width, fop.transmission_limit, fop.timeout_type) == (
        10,
        3,
        TimeoutType.SUSPEND,
    )


def test_an_outage_suspends_fop1_and_the_first_clcw_after_it_resumes_it() -> None:
    link = Link()
    fop = link.ground.fop
    # Three commands go up as the outage starts: lost, and so are both retransmissions.
    assert _connected(link, EndAck(1), EndAck(2), EndAck(3)) == ["0/AD 0", "0/AD 1", "0/AD 2"]
    assert link.run_timers(100.0, lost=True) == [
        (0.01 + T1, ["0/AD 0", "0/AD 1", "0/AD 2"]),
        (0.01 + 2 * T1, ["0/AD 0", "0/AD 1", "0/AD 2"]),
        (0.01 + 3 * T1, []),  # Transmission_Count 3 = the limit: E18, Suspend
    ]
    assert (fop.state, fop.suspend_state, fop.suspended) == (FopState.S6, 1, True)
    assert (fop.sent_queue_length, fop.transmission_count, fop.get_timer()) == (3, 3, None)
    # Suspended, the ground is silent however long the outage; a command sent now waits.
    link.ground.send(EndAck(4), 50.0)
    assert link.up(50.0) == []
    assert fop.backlog_length == 1 and fop.get_timer() is None

    # The spacecraft is heard again (its V(R) still 0): Transmission_Limit 3 + 3, Resume
    # to S1, T1 restarted; the waiting command goes (N(S) 3), the FARM-1 asks for the rest.
    link.down(120.0)
    assert (fop.state, fop.suspended, fop.transmission_limit) == (FopState.S1, False, 6)
    assert (fop.transmission_count, fop.get_timer()) == (3, 120.0 + T1)
    assert link.up(120.0) == ["0/AD 3"]
    farm = link.spacecraft.farm
    assert (farm.vr, farm.retransmit, farm.stats.discarded_positive_window) == (0, True, 1)
    link.down(120.01)  # Retransmit flag: everything unacknowledged goes again (S2)
    assert link.up(120.01) == ["0/AD 0", "0/AD 1", "0/AD 2", "0/AD 3"]
    assert (fop.state, fop.transmission_count, fop.transmission_limit) == (FopState.S2, 4, 6)
    link.down(120.02)  # all four acknowledged: the limit goes back to 3
    assert (fop.state, fop.transmission_count, fop.transmission_limit) == (FopState.S1, 1, 3)
    assert link.ground.uplink_clear and link.up(120.02) == []

    # Every command executed once, in order; no alert, nothing lost.
    assert link.received == [EndAck(1), EndAck(2), EndAck(3), EndAck(4)]
    assert farm.vr == 4
    counters = link.ground.counters
    assert (counters.tc_frames_sent, counters.tc_frames_retransmitted) == (15, 10)
    assert counters.cop1_alerts == 0 and link.alerts() == []
    assert link.ground.drops == {} and link.spacecraft.drops == {}


def test_with_the_downlink_alive_each_suspension_is_resumed_at_the_next_clcw() -> None:
    # The uplink alone is dead: a CLCW comes down every second and resumes FOP-1 each
    # time it suspends, 3 more transmissions at a time, until the uplink is back.
    link = Link()
    fop = link.ground.fop
    assert _connected(link, EndAck(1)) == ["0/AD 0"]
    limits = []
    for second in range(1, 21):
        fired = link.run_timers(float(second), lost=True)
        link.down(float(second))
        limits.append((second, [t for t, frames in fired], fop.transmission_limit))
    assert [(s, fired, limit) for s, fired, limit in limits if fired] == [
        (3, [2.01], 3),
        (5, [4.01], 3),
        (7, [6.01], 6),  # suspended at 6.01, resumed by the CLCW at 7
        (9, [9.0], 6),
        (11, [11.0], 6),
        (13, [13.0], 6),
        (15, [15.0], 9),  # suspended at 15, resumed at once by that second's CLCW
        (17, [17.0], 9),
        (19, [19.0], 9),
    ]
    assert link.alerts() == [] and fop.transmission_count == 8
    # The uplink is back: the next retransmission is heard and acknowledged.
    assert link.run_timers(21.0, lost=False) == [(21.0, ["0/AD 0"])]
    link.down(21.5)
    assert (fop.state, fop.transmission_count, fop.transmission_limit) == (FopState.S1, 1, 3)
    assert link.received == [EndAck(1)]
    assert link.ground.counters.tc_frames_retransmitted == 8
    assert link.ground.uplink_clear


def test_a_suspension_cleared_by_the_clcw_that_resumes_it() -> None:
    # The frame got through but its acknowledgement did not (downlink dead): FOP-1
    # suspends; the first CLCW resumes FOP-1 and acknowledges the frame at once.
    link = Link()
    fop = link.ground.fop
    link.ground.send(EndAck(1), 0.0)
    link.up(0.0)
    link.down(0.01)
    assert link.up(0.01) == ["0/AD 0"]
    assert [frames for _, frames in link.run_timers(60.0, lost=False)] == [
        ["0/AD 0"],  # the duplicates are discarded by FARM-1 (negative window)
        ["0/AD 0"],
        [],
    ]
    assert fop.suspended and link.spacecraft.farm.vr == 1
    link.down(60.0)
    assert (fop.state, fop.sent_queue_length, fop.transmission_limit) == (FopState.S1, 0, 3)
    assert fop.get_timer() is None and link.ground.uplink_clear
    assert link.received == [EndAck(1)]
    assert link.spacecraft.farm.stats.discarded_negative_window == 2


def test_an_alert_in_s5_is_initiated_again_only_when_the_spacecraft_is_heard() -> None:
    # The first command goes into an outage: FOP-1 is in S5 (its Set V(R) outstanding),
    # where table 5-1 E18 alerts even with Timeout_Type 1.  The ground keeps the command
    # and initiates the AD service again on the first CLCW, not blindly into silence.
    link = Link()
    fop = link.ground.fop
    link.ground.send(EndAck(1), 0.0)
    assert link.up(0.0, lost=True) == ["0/BC"]
    assert link.run_timers(200.0, lost=True) == [(2.0, ["0/BC"]), (4.0, ["0/BC"]), (6.0, [])]
    assert link.alerts() == [AlertCode.T1]
    assert (fop.state, fop.suspended, fop.backlog_length, fop.get_timer()) == (
        FopState.S6,
        False,
        1,
        None,
    )
    link.ground.send(EndAck(2), 100.0)  # waits too
    assert link.up(100.0) == []
    link.down(200.0)
    assert link.up(200.0) == ["0/BC"]
    link.down(200.01)
    assert link.up(200.01) == ["0/AD 0", "0/AD 1"]
    link.down(200.02)
    assert link.received == [EndAck(1), EndAck(2)]
    assert link.ground.uplink_clear and fop.state is FopState.S1
    counters = link.ground.counters
    assert (counters.tc_frames_sent, counters.tc_frames_retransmitted, counters.cop1_alerts) == (
        6,
        2,
        1,
    )


def test_timeout_type_alert_purges_the_command() -> None:
    # The other choice of 5.1.10, kept for comparison: the held command is lost
    # (Negative Confirm), which is why it is not the default.
    link = Link(LinkConfig(fop_timeout_type=TimeoutType.ALERT))
    fop = link.ground.fop
    assert _connected(link, EndAck(1)) == ["0/AD 0"]
    assert [t for t, _ in link.run_timers(100.0, lost=True)] == [2.01, 4.01, 6.01]
    assert link.alerts() == [AlertCode.T1]
    assert (fop.state, fop.sent_queue_length, fop.backlog_length) == (FopState.S6, 0, 0)
    link.down(120.0)
    assert link.up(120.0) == [] and link.received == []


def test_each_vc_is_resumed_by_its_own_clcw() -> None:
    # Two TC VCs, both suspended by an outage; the CLCWs take turns in the OCF, so the
    # first frame after the outage resumes VC 0 only and the next one VC 1.
    config = LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, vcid=1),))
    link = Link(config)
    link.ground.send(EndAck(1), 0.0)
    link.ground.send_key_management(b"\x01", 0.0)  # no SDLS: refused on board, counted
    assert link.up(0.0) == ["0/BC", "1/BC"]
    link.down(0.01, frames=2)
    assert link.up(0.01, lost=True) == ["0/AD 0", "1/AD 0"]
    fired = link.run_timers(100.0, lost=True)
    assert [t for t, _ in fired] == [2.01, 4.01, 6.01]
    fops = link.ground.fops
    assert [fops[v].suspended for v in (0, 1)] == [True, True]
    link.down(120.0)  # VC 0's CLCW
    assert [fops[v].suspended for v in (0, 1)] == [False, True]
    assert [fops[v].transmission_limit for v in (0, 1)] == [6, 3]
    link.down(120.1)  # VC 1's CLCW
    assert [fops[v].suspended for v in (0, 1)] == [False, False]
    assert link.run_timers(122.1, lost=False) == [(122.0, ["0/AD 0"]), (122.1, ["1/AD 0"])]
    link.down(123.0, frames=2)
    assert [(fops[v].transmission_limit, fops[v].sent_queue_length) for v in (0, 1)] == [
        (3, 0),
        (3, 0),
    ]
    assert link.received == [EndAck(1)]
    assert {v: farm.vr for v, farm in link.spacecraft.farms.items()} == {0: 1, 1: 1}
    assert link.spacecraft.drops == {"sdls/key-management-off": 1}
    assert link.ground.counters.cop1_alerts == 0 and link.ground.uplink_clear
