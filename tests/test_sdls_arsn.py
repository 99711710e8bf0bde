"""Anti-replay windows like CryptoLib's (accept only last+1 .. last+W) through restarts and
long losses, with the composed endpoints and the key/counter files of the programs.

The TC SA here is CryptoLib-strict: ``arsn_window`` 1 (nothing behind) and
``max_arsn_jump`` 5 (W = 5).  A TC management SA on VC 1 (no window limit) carries
Set ARSN (CCSDS 355.1-B-1), which the ground sends before FOP-1 retransmits.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from linkstack.endpoints import (
    GroundEndpoint,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
    TcRoute,
)
from linkstack.errors import Dropped, LocalProtocolError
from linkstack.inference.protocol import Apid, GenerationParams, Message, PromptRequest
from linkstack.sdls import (
    ArsnRead,
    ArsnReplyPdu,
    ArsnSet,
    KeyManagementError,
    KeyManager,
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    ReadArsnPdu,
    SaTable,
    SecurityAssociation,
    SetArsnPdu,
    decode_ep_pdu,
)
from linkstack.sdls.keystore import (
    CounterStore,
    KeyFileError,
    RoleSecurity,
    counter_path,
    link_security,
    write_key_file,
)

W = 5
CONFIG = LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, 1),))
DATA_SA = SecurityAssociation(
    spi=1, link=Link.TC, vcids=frozenset({0}), key_id=128, arsn_window=1, max_arsn_jump=W
)
TM_SA = SecurityAssociation(spi=2, link=Link.TM, vcids=frozenset(range(8)), key_id=129)
MGMT_SA = SecurityAssociation(
    spi=3, link=Link.TC, vcids=frozenset({1}), key_id=130, arsn_window=1, management=True
)


def keyring() -> KeyRing:
    rng = random.Random(13)
    return KeyRing(
        (key_id, KeyMaterial(rng.randbytes(32)), KeyState.ACTIVE) for key_id in (0, 128, 129, 130)
    )


def key_path(tmp_path: Path, *, management: bool = True) -> Path:
    path = tmp_path / "keys.json"
    sas = (DATA_SA, TM_SA, MGMT_SA) if management else (DATA_SA, TM_SA)
    write_key_file(path, keyring(), sas)
    return path


def prompt(request_id: int) -> PromptRequest:
    return PromptRequest(
        request_id=request_id,
        params=GenerationParams(max_new_tokens=8),
        prompt_ids=tuple(range(1000 + request_id, 1300 + request_id)),
    )


class SteppedLink:
    """A ground and a spacecraft endpoint on a fake clock: what the spacecraft delivers,
    drops and sets, and :meth:`run`, which fires FOP-1's T1 whenever it is due.  A
    subclass builds the two ends and says what one :meth:`step` carries."""

    now: float
    ground: GroundEndpoint
    ground_role: RoleSecurity
    spacecraft_role: RoleSecurity
    delivered: list[Message]
    drops: list[Dropped]
    arsn_set: list[ArsnSet]

    def step(self) -> None:
        raise NotImplementedError

    def record(self, event: object) -> None:
        """File one spacecraft event under what it is."""
        if isinstance(event, MessageReceived):
            self.delivered.append(event.message)
        elif isinstance(event, Dropped):
            self.drops.append(event)
        elif isinstance(event, ArsnSet):
            self.arsn_set.append(event)

    def run(self, seconds: float) -> None:
        """Step the link, firing FOP-1's T1 whenever it is due, for ``seconds``."""
        end = self.now + seconds
        while self.now < end:
            self.step()
            timer = self.ground.get_timer()
            self.now = min(end, timer if timer is not None else end)
            self.ground.handle_timer(self.now)
        self.step()

    def highest(self, spi: int = 1) -> int | None:
        return self.spacecraft_role.security.table.highest_arsn(spi)

    def next_arsn(self) -> int:
        return self.ground_role.security.counter.next_value


class Link2(SteppedLink):
    """A ground and a spacecraft endpoint built from the key file, as the programs do."""

    def __init__(self, keys: Path, *, now: float = 0.0) -> None:
        self.keys = keys
        self.now = now
        self.ground_role = link_security(keys, role="ground")
        self.spacecraft_role = link_security(keys, role="spacecraft")
        self.ground = self._ground(self.ground_role)
        self.spacecraft = SpacecraftEndpoint(CONFIG, self.spacecraft_role.security)
        self.uplink_up = True
        self.sent: list[bytes] = []  # every CLTU radiated, for the replay checks
        self.delivered: list[Message] = []
        self.drops: list[Dropped] = []
        self.arsn_set: list[ArsnSet] = []

    @staticmethod
    def _ground(role: RoleSecurity) -> GroundEndpoint:
        extra = {1: role.management} if role.management is not None else {}
        if not extra:
            return GroundEndpoint(LinkConfig(), role.security)
        return GroundEndpoint(CONFIG, role.security, vc_security=extra)

    def restart_ground(self) -> None:
        """A crash: nothing saved on exit; the counter file is all that survives."""
        self.ground_role = link_security(self.keys, role="ground")
        self.ground = self._ground(self.ground_role)

    def restart_spacecraft(self) -> None:
        self.spacecraft_role = link_security(self.keys, role="spacecraft")
        self.spacecraft = SpacecraftEndpoint(CONFIG, self.spacecraft_role.security)

    def step(self) -> None:
        for cltu in self.ground.data_to_send():
            self.sent.append(cltu)
            if self.uplink_up:
                self.spacecraft.receive_bytes(cltu, self.now)
        self.collect()
        for _ in range(2):  # CLCWs of both TC VCs
            self.ground.receive_bytes(self.spacecraft.next_cadu(), self.now)
        while self.ground.next_event() is not None:
            pass

    def collect(self) -> None:
        while (event := self.spacecraft.next_event()) is not None:
            self.record(event)


def drop_reasons(drops: list[Dropped]) -> list[str]:
    return [f"{d.layer}/{d.reason}" for d in drops]


def test_restarts_with_a_window_of_5_lose_nothing(tmp_path: Path) -> None:
    link = Link2(key_path(tmp_path))
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    assert link.delivered == [prompt(1)]
    assert link.highest() == link.next_arsn() - 1 == 1  # one AD frame (Set V(R) is clear)
    # The ground reserves W = 5 IVs per counter-file write (the SA's step), never more.
    assert CounterStore(counter_path(link.keys, "ground")).record.tx["spi-1"] == 6

    link.restart_ground()  # resumes at the mark, 6: W = 5 ahead of the receiver, inside
    assert link.next_arsn() == 6
    link.ground.send(prompt(2), link.now)
    link.run(1.0)
    assert link.delivered == [prompt(1), prompt(2)]
    assert link.highest() == 6

    old = list(link.sent)
    link.restart_spacecraft()  # a crash too: its window was written on every frame
    assert link.highest() == 6
    for cltu in old:  # every frame of both sessions replayed at the restarted spacecraft
        link.spacecraft.receive_bytes(cltu, link.now)
    link.collect()
    assert link.delivered == [prompt(1), prompt(2)]
    replays = [r for r in drop_reasons(link.drops) if r.startswith("sdls/")]
    assert replays and set(replays) <= {"sdls/replay", "sdls/outside-window"}
    assert len(replays) == sum(
        1 for r in drop_reasons(link.drops) if r in ("sdls/replay", "sdls/outside-window")
    )

    link.restart_ground()  # and again, after the spacecraft's restart
    link.ground.send(prompt(3), link.now)
    link.run(1.0)
    assert link.delivered == [prompt(1), prompt(2), prompt(3)]
    assert "sdls/too-far-ahead" not in drop_reasons(link.drops)


def test_a_long_loss_is_repaired_by_set_arsn_under_the_management_sa(tmp_path: Path) -> None:
    link = Link2(key_path(tmp_path))
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    before = link.highest()
    assert before is not None
    link.uplink_up = False
    link.ground.send(prompt(2), link.now)
    link.run(20.0)  # ten T1 periods of retransmissions into the loss
    assert link.next_arsn() - before > W  # the sender is past the window now
    link.uplink_up = True
    link.run(6.0)
    assert link.delivered == [prompt(1), prompt(2)]
    assert link.arsn_set and all(e.spi == 1 for e in link.arsn_set)
    assert any(e.moved for e in link.arsn_set)
    assert "sdls/too-far-ahead" not in drop_reasons(link.drops)
    # The window the spacecraft persisted is where the link stands: a restart is clean.
    saved = CounterStore(counter_path(link.keys, "spacecraft")).record.rx[1]
    assert saved == link.highest()


def test_without_a_management_sa_a_long_loss_locks_the_sender_out(tmp_path: Path) -> None:
    """The control experiment: the same loss, no way back (what CryptoLib's ARSNW does)."""
    link = Link2(key_path(tmp_path, management=False))
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    link.uplink_up = False
    link.ground.send(prompt(2), link.now)
    link.run(20.0)
    link.uplink_up = True
    link.run(6.0)
    assert link.delivered == [prompt(1)]
    assert "sdls/too-far-ahead" in drop_reasons(link.drops)


# -- Set ARSN / Read ARSN on their own -------------------------------------------------------


def _table() -> SaTable:
    return SaTable([DATA_SA, TM_SA, MGMT_SA], keyring())


def test_set_arsn_moves_the_receiver_forward_only_and_persists() -> None:
    table = _table()
    seen: list[tuple[int, int]] = []
    table.on_window_advance = lambda spi, highest: seen.append((spi, highest))
    manager = KeyManager(table.keys, table=table)
    pdu = SetArsnPdu(1, 40, 12)
    assert decode_ep_pdu(pdu.to_bytes()) == pdu
    assert pdu.to_bytes().hex() == "1a0070" + "0001" + (40).to_bytes(12, "big").hex()
    under = {MGMT_SA.spi}  # SA management is applied under the management SA only
    assert manager.handle_pdu(pdu.to_bytes(), carried_by=under) == ArsnSet(
        spi=1, arsn=40, moved=True
    )
    assert manager.handle_pdu(SetArsnPdu(1, 39, 12).to_bytes(), carried_by=under) == ArsnSet(
        spi=1, arsn=39, moved=False
    )
    assert table.highest_arsn(1) == 40 and seen == [(1, 40)]
    read = manager.handle_pdu(ReadArsnPdu(1).to_bytes(), carried_by=under)
    assert isinstance(read, ArsnRead) and read.arsn == 40
    assert decode_ep_pdu(read.reply) == ArsnReplyPdu(1, 40, 12)
    assert read.reply[0] == 0x90  # reply, SA management, Read ARSN


@pytest.mark.parametrize(
    ("octets", "reason", "detail"),
    [
        (bytes.fromhex("1a0010") + b"\x00\x01", "bad-pdu", "ARSN of 0 octets"),
        (bytes.fromhex("1a0018") + b"\x00\x01\x05", "bad-pdu", "1-octet ARSN, the SA's is 12"),
        (SetArsnPdu(9, 1, 12).to_bytes(), "unknown-spi", "SPI 9"),
        (bytes.fromhex("100018") + b"\x00\x01\x00", "bad-pdu", "Read ARSN value of 3 octets"),
        (bytes.fromhex("1f0010") + b"\x00\x01", "bad-pdu", "procedure id 15 not supported"),
        (ArsnReplyPdu(1, 4, 12).to_bytes(), "bad-pdu", "is not a command"),
        (bytes.fromhex("1a0070") + b"\x00", "bad-pdu", "length field 112 bits, 1 octets"),
    ],
)
def test_bad_sa_management_pdus_are_refused(octets: bytes, reason: str, detail: str) -> None:
    table = _table()
    manager = KeyManager(table.keys, table=table)
    with pytest.raises(KeyManagementError) as caught:
        manager.handle_pdu(octets, carried_by={MGMT_SA.spi})
    assert caught.value.reason == reason and detail in caught.value.detail
    assert table.highest_arsn(1) is None


def test_sa_management_without_a_table_is_refused() -> None:
    with pytest.raises(KeyManagementError) as caught:
        KeyManager(keyring()).handle_pdu(SetArsnPdu(1, 4, 12).to_bytes())
    assert caught.value.reason == "sa-management-off"


# -- SA parameters that cannot work together --------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"max_arsn_jump": 5, "reservation_step": 6},
            "SA 1: reservation_step: 6 > max_arsn_jump 5",
        ),
        ({"management": True, "max_arsn_jump": 5}, "SA 1: management: max_arsn_jump 5"),
        ({"arsn_source": "SN"}, "SA 1: arsn_source: SN needs a Sequence Number field"),
        ({"mac_length": 10}, "SA 1: mac_length: 10 for SA_AUTHENTICATED_ENCRYPTION"),
        ({"iv_length": 4}, "SA 1: iv_length: 4, AES-GCM here takes 8..16 octets"),
        ({"service_type": "SA_ENCRYPTION"}, "SA 1: mac_length: 16: SA_ENCRYPTION carries no MAC"),
        ({"map_id": 64}, "SA 1: map_id: 64"),
        ({"abm": "ff" * 7}, "SA 1: abm: 7 octets; a TC mask covers the frame header (5 or 6"),
        ({"abm": "zz"}, "field 'abm' is not hex digits"),
        ({"iv_length": "12"}, "field 'iv_length' is '12', not an integer"),
        ({"arsn_source": "ARSN"}, "field 'arsn_source' is 'ARSN', not one of ['IV', 'SN']"),
    ],
)
def test_impossible_sa_parameters_are_one_line_errors(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    import json

    path = key_path(tmp_path)
    document = json.loads(path.read_text())
    document["security_associations"][0].update(changes)
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError) as caught:
        link_security(path, role="ground")
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"key file {path}, security_associations[0]: ")


def test_a_reservation_block_past_the_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match=r"reservation block 6 for SA 1: needs 1..5"):
        link_security(key_path(tmp_path), role="ground", block=6)


# -- the other service types and field layouts ------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"service_type": "SA_AUTHENTICATION", "mac_length": 8},
        {"service_type": "SA_ENCRYPTION", "mac_length": 0},
        {"iv_length": 16, "sn_length": 4, "arsn_source": "SN", "pad_length_length": 1},
        {"mac_length": 12, "abm": "00" * 5 + "ff" * 14},
    ],
    ids=["gmac-8", "encryption-only", "sn-arsn-16-octet-iv", "mac-12-whole-aad-mask"],
)
def test_service_types_and_layouts_round_trip_and_refuse_replays(
    changes: dict[str, object],
) -> None:
    from dataclasses import replace as dc_replace

    from linkstack.sdls import ArsnSource, ServiceType, TxCounter, protect_tc, unprotect_tc
    from linkstack.sdls.errors import ReplayRejected
    from linkstack.tc.frame import BypassFlag, TcFrame, TcVcConfig

    options = dict(changes)
    if "service_type" in options:
        options["service_type"] = ServiceType[str(options["service_type"])]
    if "arsn_source" in options:
        options["arsn_source"] = ArsnSource[str(options["arsn_source"])]
    if "abm" in options:
        options["abm"] = bytes.fromhex(str(options["abm"]))
    sa = dc_replace(DATA_SA, max_arsn_jump=None, **options)  # type: ignore[arg-type]
    config = TcVcConfig(scid=0x2A, vcid=0)
    receiver = SaTable([sa], keyring())
    counter = TxCounter.for_sa(sa, next_value=7)
    counter.confirm_reservation(counter.plan_reservation(4))
    clear = TcFrame.data_frame(config, b"payload!", bypass=BypassFlag.TYPE_A, sequence_number=0)
    sent = protect_tc(clear, sa=sa, keys=keyring(), counter=counter, config=config)
    assert len(sent.data) == len(clear.data) + sa.overhead
    if sa.service_type != ServiceType.SA_AUTHENTICATION:
        assert b"payload!" not in sent.data
    wire = TcFrame.from_bytes(sent.to_bytes(), config=config)
    assert unprotect_tc(wire, receiver) == clear
    assert receiver.highest_arsn(1) == 7
    with pytest.raises(ReplayRejected):
        unprotect_tc(wire, receiver)
