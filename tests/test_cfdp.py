"""CFDP (CCSDS 727.0-B-5) over linkstack: the sans-I/O adapter around cfdp-py, the
APID route through the endpoints, and whole transfers on the virtual clock."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

import pytest
from spacepackets.cfdp import ConditionCode
from spacepackets.cfdp.pdu import FinishedPdu
from spacepackets.cfdp.pdu.helper import PduFactory

from linkstack.cfdp.entity import (
    CfdpConfig,
    CfdpEntity,
    IncomingFile,
    Refusal,
    TransferFinished,
    TransferStarted,
)
from linkstack.cfdp.memstore import MemoryFilestore
from linkstack.cfdp.wire import CFDP_APID
from linkstack.endpoints import (
    CfdpPduReceived,
    GroundEndpoint,
    SpacecraftEndpoint,
)
from linkstack.errors import Dropped, InvalidState, LocalProtocolError
from linkstack.radio.channel import Outage, link_profile
from linkstack.sim.transfer import (
    FileTransfer,
    TransferConfig,
    file_transfer_link,
    pdu_length_for,
)


def _pair(
    *, admit=None, max_pdu_length: int = 1000
) -> tuple[CfdpEntity, CfdpEntity, MemoryFilestore, MemoryFilestore]:
    ground_store, space_store = MemoryFilestore(), MemoryFilestore()
    ground = CfdpEntity(
        CfdpConfig(local_id=1, remote_id=2, max_pdu_length=max_pdu_length, nak_timer_s=2.0),
        ground_store,
    )
    space = CfdpEntity(
        CfdpConfig(local_id=2, remote_id=1, max_pdu_length=max_pdu_length, nak_timer_s=2.0),
        space_store,
        admit=admit,
    )
    return ground, space, ground_store, space_store


def _exchange(
    ground: CfdpEntity,
    space: CfdpEntity,
    *,
    loss: float = 0.0,
    seed: int = 0,
    steps: int = 20_000,
    tap: list[bytes] | None = None,
) -> float:
    """Pass PDUs both ways in 0.1 s steps, each lost with ``loss``; returns the end time."""
    rng = random.Random(seed)
    now = 0.0
    for _ in range(steps):
        now += 0.1
        for pdu in ground.pdus_to_send(now, 4):
            if tap is not None:
                tap.append(pdu)
            if rng.random() >= loss:
                space.receive_pdu(pdu, now)
        for pdu in space.pdus_to_send(now):
            if rng.random() >= loss:
                ground.receive_pdu(pdu, now)
        ground.handle_timer(now)
        space.handle_timer(now)
        if ground.idle and space.idle:
            return now
    raise AssertionError("transfer did not settle")


def _events(entity: CfdpEntity) -> list[object]:
    out = []
    while (event := entity.next_event()) is not None:
        out.append(event)
    return out


# -- the adapter, entity to entity ---------------------------------------------------------


@pytest.mark.parametrize("acknowledged", [True, False])
def test_clean_transfer_is_exact(acknowledged: bool) -> None:
    ground, space, gs, ss = _pair()
    data = random.Random(1).randbytes(25_000)
    gs.files[Path("/a.bin")] = bytearray(data)
    ground.put("/a.bin", "/b.bin", 0.0, acknowledged=acknowledged)
    _exchange(ground, space)
    assert bytes(ss.files[Path("/b.bin")]) == data
    sent = [e for e in _events(ground) if isinstance(e, TransferFinished)]
    received = [e for e in _events(space) if isinstance(e, TransferFinished)]
    assert [(e.sending, e.condition, e.delivered) for e in sent] == [
        (True, ConditionCode.NO_ERROR, True)
    ]
    assert [(e.sending, e.dest_name, e.ok) for e in received] == [(False, "/b.bin", True)]
    # 25,000 octets in file data PDUs of 1000 - 7 (header) - 4 (offset) = 989 octets.
    assert ground.counters.file_data_pdus_sent == 26
    assert ground.counters.file_data_retransmitted == 0
    assert space.counters.naks_sent == 0


def test_class2_naks_repair_a_lossy_link() -> None:
    ground, space, gs, ss = _pair()
    data = random.Random(2).randbytes(200_000)
    gs.files[Path("/a.bin")] = bytearray(data)
    ground.put("/a.bin", "/b.bin", 0.0)
    _exchange(ground, space, loss=0.2, seed=3)
    assert hashlib.sha256(ss.files[Path("/b.bin")]).digest() == hashlib.sha256(data).digest()
    assert space.counters.naks_sent > 0
    # Every retransmission answered a NAK that arrived; none was sent unasked.
    assert ground.counters.naks_received > 0
    assert ground.counters.file_data_retransmitted > 0
    assert ground.counters.file_data_octets_sent == len(data) + (
        ground.counters.file_data_octets_retransmitted
    )
    finished = [e for e in _events(ground) if isinstance(e, TransferFinished)]
    assert [e.ok for e in finished] == [True]


def test_started_events_say_what_moves() -> None:
    ground, space, gs, _ = _pair()
    gs.files[Path("/a.bin")] = bytearray(b"x" * 10)
    ground.put("/a.bin", "/b.bin", 5.0)
    _exchange(ground, space)
    started = [e for e in _events(space) if isinstance(e, TransferStarted)]
    assert [(e.sending, e.source_name, e.dest_name, e.size) for e in started] == [
        (False, "/a.bin", "/b.bin", 10)
    ]


# -- refusals and bad input ----------------------------------------------------------------


def test_refused_file_is_never_written_and_the_sender_hears_why() -> None:
    seen: list[IncomingFile] = []

    def admit(incoming: IncomingFile) -> Refusal | None:
        seen.append(incoming)
        return Refusal(ConditionCode.FILE_SIZE_ERROR, "file of 50000 octets, 1000 free")

    ground, space, gs, ss = _pair(admit=admit)
    gs.files[Path("/a.bin")] = bytearray(50_000)
    ground.put("/a.bin", "/b.bin", 0.0)
    _exchange(ground, space)
    assert [(i.dest_name, i.size) for i in seen] == [("/b.bin", 50_000)]
    assert ss.files == {}
    finished = [e for e in _events(ground) if isinstance(e, TransferFinished)]
    assert [(e.condition, e.delivered, e.reason) for e in finished] == [
        (ConditionCode.FILE_SIZE_ERROR, False, "file of 50000 octets, 1000 free")
    ]
    assert space.counters.transactions_refused == 1
    # The sender stopped early: far fewer than the 51 file data PDUs of the whole file.
    assert ground.counters.file_data_pdus_sent < 10


def test_duplicate_transaction_is_refused() -> None:
    ground, space, gs, ss = _pair()
    gs.files[Path("/a.bin")] = bytearray(b"payload")
    ground.put("/a.bin", "/b.bin", 0.0)
    tap: list[bytes] = []
    end = _exchange(ground, space, tap=tap)
    _events(space)
    before = dict(ss.files)
    metadata = tap[0]
    space.receive_pdu(metadata, end + 1)
    replies = space.pdus_to_send(end + 1)
    assert len(replies) == 1
    finished = PduFactory.from_raw(replies[0])
    assert isinstance(finished, FinishedPdu)
    assert finished.condition_code == ConditionCode.FILESTORE_REJECTION
    text = finished.finished_params.file_store_responses[0].filestore_msg.value
    assert text == b"duplicate transaction (1, 0)"
    assert ss.files == before


@pytest.mark.parametrize(
    ("pdu", "reason"),
    [
        (b"\x00", "cfdp-undecodable"),
        (b"\x20\x00\x05\x11\x01\x00\x02", "cfdp-undecodable"),
        (b"", "cfdp-undecodable"),
    ],
)
def test_bad_pdu_is_a_drop(pdu: bytes, reason: str) -> None:
    _, space, _, ss = _pair()
    space.receive_pdu(pdu, 1.0)
    events = _events(space)
    assert [(e.reason, e.at) for e in events if isinstance(e, Dropped)] == [(reason, 1.0)]
    assert space.counters.dropped == 1
    assert ss.files == {}


def test_pdu_for_no_transaction_is_a_drop() -> None:
    ground, space, gs, _ = _pair()
    gs.files[Path("/a.bin")] = bytearray(b"abc")
    ground.put("/a.bin", "/b.bin", 0.0)
    tap: list[bytes] = []
    _exchange(ground, space, tap=tap)
    replies_to_sender = []
    # Replay the receiver's Finished at an idle sender: no transaction is sending.
    space2_ground, space2, gs2, _ = _pair()
    gs2.files[Path("/a.bin")] = bytearray(b"abc")
    space2_ground.put("/a.bin", "/b.bin", 0.0)
    for pdu in space2_ground.pdus_to_send(0.0):
        space2.receive_pdu(pdu, 0.0)
    replies_to_sender = space2.pdus_to_send(0.0)
    _events(ground)
    for pdu in replies_to_sender:
        ground.receive_pdu(pdu, 9.0)
    drops = [e for e in _events(ground) if isinstance(e, Dropped)]
    assert drops and {e.reason for e in drops} == {"cfdp-no-transaction"}


def test_misuse_raises_with_the_values() -> None:
    ground, _, gs, _ = _pair()
    with pytest.raises(LocalProtocolError, match="no file '/missing'"):
        ground.put("/missing", "/x", 0.0)
    gs.files[Path("/a.bin")] = bytearray(b"abc")
    ground.put("/a.bin", "/b.bin", 0.0)
    with pytest.raises(InvalidState, match=r"put\('/a.bin'\): transaction \(1, 0\)"):
        ground.put("/a.bin", "/c.bin", 0.0)
    with pytest.raises(LocalProtocolError, match="local_id 300 does not fit one octet"):
        CfdpConfig(local_id=300, remote_id=1)
    with pytest.raises(LocalProtocolError, match="local_id and remote_id are both 3"):
        CfdpConfig(local_id=3, remote_id=3)
    with pytest.raises(LocalProtocolError, match=r"nak_timer_s 0\.0 s must be positive"):
        CfdpConfig(local_id=1, remote_id=2, nak_timer_s=0.0)


# -- through the endpoints -----------------------------------------------------------------


def test_cfdp_pdus_ride_their_apid_both_ways() -> None:
    link = file_transfer_link()
    ground, space = GroundEndpoint(link), SpacecraftEndpoint(link)
    taps: list[bytes] = []
    ground.packet_tap = lambda packet, now: taps.append(packet)
    pdu = bytes(range(40))
    ground.send_cfdp(pdu, 0.0)
    events: list[object] = []
    for step in range(4):
        # COP-1 starts with Set V(R) (Type-BC); the AD frame follows its CLCW report.
        for cltu in ground.data_to_send():
            space.receive_bytes(cltu, step + 0.1)
        events += [e for e in iter(space.next_event, None)]
        ground.receive_bytes(space.next_cadu() + space.next_cadu(), step + 0.2)
        list(iter(ground.next_event, None))
    assert [(type(e), e.pdu) for e in events] == [(CfdpPduReceived, pdu)]
    assert taps[0][0:2] == bytes([0x10 | CFDP_APID >> 8, CFDP_APID & 0xFF])
    # Its own TC VC (the route), not the inference requests' VC 0.
    assert link.route(CFDP_APID) == (1, 0)
    assert space.farms[1].clcw().report_value == 1
    assert space.farms[0].clcw().report_value == 0
    down = bytes(range(100, 180))
    space.send_cfdp(down)
    assert space.cfdp_pending_octets() == 6 + len(down)
    ground.receive_bytes(space.next_cadu() + space.next_cadu(), 0.2)
    got = [e for e in iter(ground.next_event, None) if isinstance(e, CfdpPduReceived)]
    assert [e.pdu for e in got] == [down]


# -- whole transfers on the virtual clock --------------------------------------------------


def _config(
    *, loss: float, outages=(), bd: bool, seed: int = 1, ber: float | None = None
) -> TransferConfig:
    profile = link_profile("s-band")
    link = file_transfer_link()
    impair = {"loss_probability": loss, "outages": outages}
    if ber is not None:
        impair["ber"] = ber
    return TransferConfig(
        link=link,
        uplink=dataclasses.replace(profile.uplink, **impair),
        downlink=dataclasses.replace(profile.downlink, **impair),
        seed=seed,
        expedited_file_data=bd,
        idle_interval_s=2.0,
        cfdp=CfdpConfig(
            local_id=1,
            remote_id=2,
            max_pdu_length=pdu_length_for(link, 1 if bd else 4),
            nak_timer_s=3.0,
            nak_limit=100,
            ack_timer_s=10.0,
            ack_limit=60,
        ),
    )


def test_upload_over_a_lossy_link_with_an_outage_is_bit_exact() -> None:
    data = random.Random(5).randbytes(300_000)
    config = _config(loss=0.1, outages=(Outage(10.0, 15.0),), bd=True)
    result = FileTransfer(config).upload(data)
    assert result.ok and result.bit_exact
    assert result.receiver.naks_sent > 0
    assert result.sender.file_data_retransmitted > 0
    assert result.uplink_channel.units_lost_outage > 0
    assert result.outage_s == 15.0
    assert result.ground.cop1_alerts == 0


def test_upload_on_a_clean_link_reaches_085_of_the_uplink_rate() -> None:
    data = random.Random(6).randbytes(1_000_000)
    # Clean: no loss and no bit errors (the profile's 1e-5 BER would lose ~0.2 % of
    # CLTUs to double errors in a BCH codeblock, each a go-back-N retransmission).
    result = FileTransfer(_config(loss=0.0, bd=False, ber=0.0)).upload(data)
    assert result.ok
    assert result.goodput_ratio >= 0.85
    assert result.receiver.naks_sent == 0
    assert result.ground.tc_frames_retransmitted == 0


def test_download_over_a_lossy_downlink_is_bit_exact() -> None:
    data = random.Random(7).randbytes(400_000)
    config = _config(loss=0.1, bd=True)
    result = FileTransfer(config).download(data)
    assert result.ok and result.bit_exact
    # The ground's receiver asked for what the TM link lost.
    assert result.receiver.naks_sent > 0


def test_the_same_seed_gives_the_same_run() -> None:
    data = random.Random(8).randbytes(50_000)
    a = FileTransfer(_config(loss=0.1, bd=True, seed=4)).upload(data)
    b = FileTransfer(_config(loss=0.1, bd=True, seed=4)).upload(data)
    assert (a.elapsed_s, a.sender, a.receiver) == (b.elapsed_s, b.sender, b.receiver)


def test_expedited_pdus_must_fit_one_frame() -> None:
    link = file_transfer_link()
    profile = link_profile("s-band")
    with pytest.raises(LocalProtocolError, match="max_pdu_length 4050 exceeds the 1008 octets"):
        FileTransfer(
            TransferConfig(
                link=link,
                uplink=profile.uplink,
                downlink=profile.downlink,
                expedited_file_data=True,
                cfdp=CfdpConfig(local_id=1, remote_id=2, max_pdu_length=4050),
            )
        )


# -- restart: resume, not restart ----------------------------------------------------------


def test_restart_of_both_sides_resumes_without_resending_what_is_stored() -> None:
    ground, space, gs, ss = _pair()
    data = random.Random(9).randbytes(60_000)
    gs.files[Path("/a.bin")] = bytearray(data)
    ground.put("/a.bin", "/b.bin", 0.0)
    # Half the file gets across, then both processes die (their handlers are gone; the
    # receiver's partial file stays).
    now = 0.0
    while len(ss.files.get(Path("/b.bin"), b"")) < 30_000:
        now += 0.1
        for pdu in ground.pdus_to_send(now, 4):
            space.receive_pdu(pdu, now)
    stored = bytes(ss.files[Path("/b.bin")])
    assert stored == data[: len(stored)]
    # Restarted: new entities, a new transaction sequence number, the same filestores.
    ground = CfdpEntity(
        CfdpConfig(local_id=1, remote_id=2, max_pdu_length=1000), gs, first_sequence_number=1
    )
    space = CfdpEntity(CfdpConfig(local_id=2, remote_id=1, max_pdu_length=1000), ss)
    ground.put("/a.bin", "/b.bin", now, resume_from=len(stored))
    _exchange(ground, space)
    assert bytes(ss.files[Path("/b.bin")]) == data
    # Only what was missing went over the link.
    assert ground.counters.file_data_octets_sent == len(data) - len(stored)
    assert ground.counters.file_data_octets_resumed == len(stored)
    assert space.counters.file_data_octets_resumed == len(stored)
    assert space.counters.naks_sent == 0
    finished = [e for e in _events(ground) if isinstance(e, TransferFinished)]
    assert [e.ok for e in finished] == [True]


def test_resume_at_a_receiver_without_the_file_fills_it_by_naks() -> None:
    ground, space, gs, ss = _pair()
    data = random.Random(10).randbytes(20_000)
    gs.files[Path("/a.bin")] = bytearray(data)
    ground.put("/a.bin", "/b.bin", 0.0, resume_from=8_000)
    _exchange(ground, space)
    assert bytes(ss.files[Path("/b.bin")]) == data
    assert space.counters.naks_sent >= 1
    assert ground.counters.file_data_octets_sent == len(data)


def test_resume_offset_outside_the_file_is_misuse() -> None:
    ground, _, gs, _ = _pair()
    gs.files[Path("/a.bin")] = bytearray(10)
    with pytest.raises(LocalProtocolError, match=r"resume_from 11 outside 0\.\.10"):
        ground.put("/a.bin", "/b.bin", 0.0, resume_from=11)
