"""Several TC virtual channels (issue #13 item 5) and the OID VC (item 6).

Each TC VC has its own FARM-1 on board and FOP-1 on the ground; APIDs are routed to
a VC and MAP (``LinkConfig.tc_routes``); the CLCWs of the VCs take turns in the OCF
of successive TM frames and each reaches the FOP-1 of the VC it names.  Frames of an
unknown VC, or of a MAP that does not carry their APID, are counted drops.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from linkstack.coding.tc import CltuDecoded, CltuDecoder, encode_cltu
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded
from linkstack.endpoints import (
    Apid,
    GroundEndpoint,
    KeysChanged,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
    TcRoute,
)
from linkstack.errors import Dropped, LocalProtocolError
from linkstack.inference.protocol import EndAck, GenerationParams, PromptRequest, TokenChunk
from linkstack.packets.space_packet import PacketSequencer, PacketType
from linkstack.sdls import KeyState
from linkstack.sim.mission import ephemeral_security, simulate
from linkstack.tc.clcw import Clcw
from linkstack.tc.frame import BypassFlag, TcFrame, peek_vcid
from linkstack.tc.segments import packet_processing
from linkstack.tm.frame import TmFrame
from tests.test_fault_matrix import (
    PARAMS,
    PROMPT,
    ROWS,
    check_invariants,
    commands_lost,
    fake_generate,
)

TWO_VCS = LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, vcid=1),))


def _frames(cltus: list[bytes], config: LinkConfig) -> list[TcFrame]:
    out = []
    for cltu in cltus:
        decoder = CltuDecoder(randomize=config.tc_randomize)
        decoder.receive_bytes(cltu)
        decoder.channel_deactivation()
        event = decoder.next_event()
        assert isinstance(event, CltuDecoded)
        frame = event.data
        length = ((frame[2] & 0x03) << 8 | frame[3]) + 1
        out.append(TcFrame.from_bytes(frame[:length], config=config.tc_for(peek_vcid(frame))))
    return out


def _tm_frames(cadus: list[bytes], config: LinkConfig) -> list[TmFrame]:
    sync = CaduSynchronizer(config.tm_coding)
    for cadu in cadus:
        sync.receive_bytes(cadu)
    sync.flush()
    out = []
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            out.append(TmFrame.from_bytes(event.frame, config=config.tm))
    return out


def _request(request_id: int) -> PromptRequest:
    return PromptRequest(
        request_id=request_id, params=GenerationParams(max_new_tokens=4), prompt_ids=(1, 2)
    )


def _events(endpoint: GroundEndpoint | SpacecraftEndpoint) -> list[object]:
    out: list[object] = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


# -- configuration -------------------------------------------------------------------------


def test_default_config_is_one_vc_as_before() -> None:
    config = LinkConfig()
    assert config.tc_vcids == (0,)
    assert config.route(Apid.KEY_MANAGEMENT) == (0, 0)
    assert config.map_ids(0) == {0} and config.map_ids(1) == set()
    assert config.tm_oid_vcid == 7
    assert TWO_VCS.tc_vcids == (0, 1)
    assert TWO_VCS.route(Apid.KEY_MANAGEMENT) == (1, 0)
    assert TWO_VCS.route(Apid.REQUEST) == (0, 0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tc_routes": (TcRoute(0x44, vcid=64),)}, r"VCID outside 0\.\.63"),
        ({"tc_routes": (TcRoute(0x44, vcid=1, map_id=64),)}, r"MAP ID outside 0\.\.63"),
        ({"tc_routes": (TcRoute(0x7FF, vcid=1),)}, r"APID outside 0\.\.2046"),
        (
            {"tc_routes": (TcRoute(0x44, vcid=1), TcRoute(0x44, vcid=2))},
            "APID 0x044 routed twice",
        ),
        ({"tm_oid_vcid": 8}, r"tm_oid_vcid=8 outside 0\.\.7"),
        ({"tc_vcid": 64}, r"tc_vcid=64 outside 0\.\.63"),
    ],
)
def test_config_refuses(changes: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        LinkConfig(**changes)  # type: ignore[arg-type]


# -- two VCs, both ways --------------------------------------------------------------------


def _exchange(
    ground: GroundEndpoint, spacecraft: SpacecraftEndpoint, rounds: int
) -> tuple[list[bytes], list[bytes]]:
    """Rounds of: uplink everything, two CADUs down; the CLTUs and CADUs, in order."""
    cltus, cadus = [], []
    for k in range(rounds):
        now = float(k)
        for cltu in ground.data_to_send():
            cltus.append(cltu)
            spacecraft.receive_bytes(cltu, now)
        for _ in range(2):
            cadu = spacecraft.next_cadu()
            cadus.append(cadu)
            ground.receive_bytes(cadu, now)
    return cltus, cadus


def test_key_management_goes_on_its_own_vc_and_both_fops_are_acknowledged() -> None:
    keys = ephemeral_security(TWO_VCS, random.Random(1).randbytes)
    ground = GroundEndpoint(TWO_VCS, keys.ground, vc_security=keys.tc_vc_security)
    spacecraft = SpacecraftEndpoint(TWO_VCS, keys.spacecraft)
    otar, activation = keys.rekey(140)

    ground.send(_request(1), 0.0)
    ground.send_key_management(otar, 0.0)
    ground.send(_request(2), 0.0)
    ground.send_key_management(activation, 0.0)
    cltus, cadus = _exchange(ground, spacecraft, 4)

    # Each VC was initiated with Set V(R) (Type-BC), then its two Type-AD frames went.
    sent = [(f.vcid, f.frame_type.value) for f in _frames(cltus, TWO_VCS)]
    assert sent == [(0, "BC"), (1, "BC"), (0, "AD"), (0, "AD"), (1, "AD"), (1, "AD")]
    events = _events(spacecraft)
    received = [e.message for e in events if isinstance(e, MessageReceived)]
    assert received == [_request(1), _request(2)]
    assert [(e.procedure, e.key_ids) for e in events if isinstance(e, KeysChanged)] == [
        ("otar", (140,)),
        ("activation", (140,)),
    ]
    assert spacecraft.security is not None
    assert spacecraft.security.table.keys.state(140) is KeyState.ACTIVE
    assert {vcid: farm.vr for vcid, farm in spacecraft.farms.items()} == {0: 2, 1: 2}

    # The CLCWs take turns in the OCF: VC 0, VC 1, VC 0, VC 1, ...
    ocfs = [Clcw.from_int(f.ocf) for f in _tm_frames(cadus, TWO_VCS) if f.ocf is not None]
    assert [c.vcid for c in ocfs] == [0, 1] * 4
    assert [(c.vcid, c.report_value) for c in ocfs[-2:]] == [(0, 2), (1, 2)]
    # ... and each reached its own FOP-1: nothing is left unacknowledged.
    assert ground.uplink_clear
    assert {vcid: fop.nn_r for vcid, fop in ground.fops.items()} == {0: 2, 1: 2}
    assert ground.drops == {} and spacecraft.drops == {}


def test_one_vc_reports_its_clcw_in_every_frame() -> None:
    ground, spacecraft = GroundEndpoint(LinkConfig()), SpacecraftEndpoint(LinkConfig())
    ground.send(_request(1), 0.0)
    _, cadus = _exchange(ground, spacecraft, 3)
    ocfs = [Clcw.from_int(f.ocf) for f in _tm_frames(cadus, LinkConfig()) if f.ocf is not None]
    assert [(c.vcid, c.report_value) for c in ocfs] == [(0, 0)] * 2 + [(0, 1)] * 4
    assert ground.uplink_clear and list(ground.fops) == [0]


def test_clcw_changed_until_each_vc_has_reported() -> None:
    spacecraft = SpacecraftEndpoint(TWO_VCS)
    ground = GroundEndpoint(TWO_VCS)
    ground.send(EndAck(3), 0.0)  # VC 0
    for cltu in ground.data_to_send():
        spacecraft.receive_bytes(cltu, 0.0)
    assert spacecraft.clcw_changed
    spacecraft.next_cadu()  # VC 0's turn: its new N(R) goes down
    assert not spacecraft.clcw_changed
    spacecraft.next_cadu()  # VC 1, unchanged
    assert not spacecraft.clcw_changed


def test_with_sdls_every_tc_vc_needs_a_send_sa() -> None:
    keys = ephemeral_security(TWO_VCS, random.Random(2).randbytes)
    with pytest.raises(LocalProtocolError, match=r"TC VC 1: send SA 1 \(TC VCs \[0\]\)"):
        GroundEndpoint(TWO_VCS, keys.ground)
    with pytest.raises(LocalProtocolError, match=r"vc_security for TC VCs \[5\]"):
        GroundEndpoint(TWO_VCS, keys.ground, vc_security={5: keys.tc_vc_security[1]})


# -- bad input: counted drops --------------------------------------------------------------


def _cltu(config: LinkConfig, vcid: int, map_id: int, apid: int, data: bytes) -> bytes:
    packet = PacketSequencer(packet_type=PacketType.TC).packet(apid, data).to_bytes()
    (unit,) = packet_processing([packet], config=config.tc_for(vcid), map_id=map_id)
    frame = unit.to_frame(config.tc_for(vcid), bypass=BypassFlag.TYPE_B, sequence_number=0)
    return encode_cltu(frame.to_bytes(), randomize=config.tc_randomize)


def test_frames_of_unknown_vcs_and_maps_are_counted_drops() -> None:
    spacecraft = SpacecraftEndpoint(TWO_VCS)
    request = _request(9).to_bytes()
    for cltu in (
        _cltu(TWO_VCS, 5, 0, Apid.REQUEST, request),  # no FARM-1 on VC 5
        _cltu(TWO_VCS, 0, 3, Apid.REQUEST, request),  # MAP 3 is not in use on VC 0
        _cltu(TWO_VCS, 0, 0, Apid.KEY_MANAGEMENT, b"\x02\x00\x10\x00\x8c"),  # belongs on VC 1
        _cltu(TWO_VCS, 1, 0, Apid.REQUEST, request),  # requests belong on VC 0
        _cltu(TWO_VCS, 0, 0, Apid.REQUEST, request),  # the one good frame
    ):
        spacecraft.receive_bytes(cltu, 1.0)
    events = _events(spacecraft)
    drops = [(e.layer, e.reason) for e in events if isinstance(e, Dropped)]
    assert drops == [
        ("tc-frame", "unknown-vcid"),
        ("tc-frame", "unknown-map"),
        ("tc-frame", "wrong-map"),
        ("tc-frame", "wrong-map"),
    ]
    assert [e.message for e in events if isinstance(e, MessageReceived)] == [_request(9)]
    assert spacecraft.drops == {
        "tc-frame/unknown-vcid": 1,
        "tc-frame/unknown-map": 1,
        "tc-frame/wrong-map": 2,
    }
    assert spacecraft.counters.dropped == 4
    # The frame of VC 5 never reached a FARM-1; the others were accepted (Type-BD).
    assert spacecraft.counters.tc_frames_received == 4
    assert {vcid: farm.farm_b_counter for vcid, farm in spacecraft.farms.items()} == {0: 3, 1: 1}


def test_clcw_and_tm_frames_of_unknown_vcs_are_counted_drops() -> None:
    ground = GroundEndpoint(TWO_VCS)
    # The spacecraft reports on TC VCs 0 and 3 (the ground runs FOP-1 on 0 and 1) and
    # sends TM on VC 2, which this ground does not know.
    odd = dataclasses.replace(TWO_VCS, tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, vcid=3),))
    spacecraft = SpacecraftEndpoint(dataclasses.replace(odd, tm_vcid=2))
    spacecraft.send(TokenChunk(1, 0, (5, 6)))
    for _ in range(3):
        ground.receive_bytes(spacecraft.next_cadu(), 0.0)
    ground.end_of_stream(0.0)
    assert ground.drops == {"clcw/unknown-vcid": 1, "tm-frame/unknown-vcid": 1}
    assert ground.counters.messages_received == 0
    assert ground.counters.frames_received == 3 and ground.counters.frames_lost == 0


def test_only_idle_data_on_a_configured_vc_still_carries_the_clcw() -> None:
    config = LinkConfig(tm_oid_vcid=3)
    spacecraft, ground = SpacecraftEndpoint(config), GroundEndpoint(config)
    cadus = [spacecraft.next_cadu() for _ in range(2)]
    frames = _tm_frames(cadus, config)
    assert [(f.vcid, f.is_idle, f.ocf is not None) for f in frames] == [(3, True, True)] * 2
    for cadu in cadus:
        ground.receive_bytes(cadu, 0.0)
    ground.end_of_stream(0.0)
    assert ground.drops == {}
    assert ground.last_clcw == spacecraft.clcw
    # A ground that expects OID frames on VC 7 drops them, counted.
    default = GroundEndpoint(dataclasses.replace(config, tm_oid_vcid=7))
    for cadu in cadus:
        default.receive_bytes(cadu, 0.0)
    default.end_of_stream(0.0)
    assert default.drops == {"tm-frame/unknown-vcid": 2}
    assert default.last_clcw is None


# -- the fault matrix's loss rows with two VCs in use at once ------------------------------


@pytest.mark.parametrize("name", ["loss-1", "loss-10", "loss-30", "dup-reorder"])
def test_rekey_on_vc1_while_the_answer_streams_loses_nothing(name: str) -> None:
    row = ROWS[name]
    config = dataclasses.replace(row.config(), link=TWO_VCS)
    keys = ephemeral_security(TWO_VCS, random.Random(3).randbytes)
    otar, activation = keys.rekey(140)
    # The answer streams from ~0.06 s to ~2.1 s: the rekey goes up in the middle.
    result = simulate(
        PROMPT,
        PARAMS,
        fake_generate,
        config,
        security=keys.security,
        tc_vc_security=keys.tc_vc_security,
        key_management=((0.5, otar), (0.6, activation)),
    )
    check_invariants(result)
    assert commands_lost(result) == 0
    assert result.key_management_sent == 2
    assert [(e.procedure, e.key_ids) for e in result.keys_changed] == [
        ("otar", (140,)),
        ("activation", (140,)),
    ]
    assert keys.spacecraft.table.keys.state(140) is KeyState.ACTIVE
    assert not {k for k in result.drops if "vcid" in k or "map" in k}, result.drops
