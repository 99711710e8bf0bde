"""The way back into a CryptoLib-style window, in the programs' composition.

``linkstack keys generate --profile cryptolib`` writes a TC SA that accepts only ARSN
last+1 .. last+5 (CryptoLib's ``arsnw`` 5) and a management SA on TC VC 1; the ground
(``groundstation ask``, ``linkstack demo``: :func:`groundstation.session.station_link`)
and the spacecraft (``onboard serve``: :func:`linkstack.endpoints.route_key_management`)
build their links from that file, so Set ARSN (CCSDS 355.1-B-1) goes up on VC 1 under
the management SA, which alone may carry it.  Nothing here edits a counter file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from groundstation.cli import main as groundstation_main
from groundstation.session import station_link
from linkstack.endpoints import (
    GroundEndpoint,
    LinkConfig,
    SpacecraftEndpoint,
    TcRoute,
    route_key_management,
)
from linkstack.errors import Dropped, LocalProtocolError
from linkstack.inference.protocol import Apid, GenerationParams, Message, PromptRequest
from linkstack.sdls import (
    ArsnRead,
    ArsnReported,
    ArsnSet,
    KeyMaterial,
    KeysChanged,
    Link,
    LinkSecurity,
    ReadArsnPdu,
    SecurityAssociation,
    SetArsnPdu,
)
from linkstack.sdls.keystore import (
    CounterStore,
    RoleSecurity,
    counter_path,
    generate_key_file,
    link_security,
    load_key_file,
)
from tests.test_cli_demo import reference, run_demo
from tests.test_cli_keys import run as run_linkstack
from tests.test_sdls_arsn import SteppedLink
from tests.test_sdls_programs import serve_with_keys

if TYPE_CHECKING:
    from onboard.model import ModelHandle

W = 5  # CryptoLib's arsnw in the cryptolib profile


def cryptolib_keys(tmp_path: Path) -> Path:
    """A key file as ``linkstack keys generate --profile cryptolib`` writes it."""
    path = tmp_path / "keys.json"
    code, _out, err = run_linkstack(["keys", "generate", str(path), "--profile", "cryptolib"])
    assert code == 0, err
    return path


def prompt(request_id: int, length: int = 300) -> PromptRequest:
    return PromptRequest(
        request_id=request_id,
        params=GenerationParams(max_new_tokens=8),
        prompt_ids=tuple(range(1000 + request_id, 1000 + request_id + length)),
    )


def exchange(ground: GroundEndpoint, spacecraft: SpacecraftEndpoint, now: float) -> list[object]:
    """A few rounds of CLTUs up and CADUs down (COP-1 starts each VC with Set V(R) and
    waits for its CLCW); the spacecraft's events."""
    events: list[object] = []
    for _ in range(4):
        for cltu in ground.data_to_send():
            spacecraft.receive_bytes(cltu, now)
        while (event := spacecraft.next_event()) is not None:
            events.append(event)
        for _ in range(2):
            ground.receive_bytes(spacecraft.next_cadu(), now)
    return events


class ProgramLink(SteppedLink):
    """Both ends built from one key file the way the programs build them, on a fake
    clock: the ground as ``groundstation ask`` (``station_link``), the spacecraft as
    ``onboard serve`` (``route_key_management``), each with its own counter file."""

    def __init__(self, keys: Path) -> None:
        self.keys = keys
        self.now = 0.0
        self.uplink_up = True
        self.delivered: list[Message] = []
        self.drops: list[Dropped] = []
        self.arsn_set: list[ArsnSet] = []
        self.reports: list[ArsnReported] = []
        #: Every event of the spacecraft, in order.
        self.events: list[object] = []
        self.start_ground()
        self.spacecraft_role = link_security(keys, role="spacecraft")
        self.spacecraft = SpacecraftEndpoint(
            route_key_management(LinkConfig(), self.spacecraft_role.management_sa),
            self.spacecraft_role.security,
        )

    def start_ground(self) -> None:
        """A new ground process: only the key and counter files survive the old one."""
        self.ground_role: RoleSecurity = link_security(self.keys, role="ground")
        setup = station_link(self.ground_role)
        self.ground = GroundEndpoint(setup.config, setup.security, vc_security=setup.vc_security)

    def step(self) -> None:
        for cltu in self.ground.data_to_send():
            if self.uplink_up:
                self.spacecraft.receive_bytes(cltu, self.now)
        while (event := self.spacecraft.next_event()) is not None:
            self.events.append(event)
            self.record(event)
        for _ in range(2):  # the CLCWs of both TC VCs take turns in the OCF
            cadu = self.spacecraft.next_cadu()
            if self.uplink_up:
                self.ground.receive_bytes(cadu, self.now)
        while (ground_event := self.ground.next_event()) is not None:
            if isinstance(ground_event, ArsnReported):
                self.reports.append(ground_event)

    def reasons(self) -> list[str]:
        return [f"{d.layer}/{d.reason}" for d in self.drops]


# -- linkstack keys generate -----------------------------------------------------------------


def test_the_cryptolib_profile_has_a_window_of_5_and_a_management_sa_on_vc_1(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    code, out, err = run_linkstack(["keys", "generate", str(path), "--profile", "cryptolib"])
    assert code == 0, err
    sas = {sa.spi: sa for sa in load_key_file(path).sas}
    data, tm, management = sas[1], sas[2], sas[3]
    assert (data.link, data.vcids, data.arsn_window, data.max_arsn_jump) == (
        Link.TC,
        frozenset({0}),
        1,
        W,
    )
    assert data.effective_reservation_step == 4 and not data.management
    assert tm.max_arsn_jump is None and tm.vcids == frozenset(range(8))
    assert (management.link, management.vcids, management.key_id) == (
        Link.TC,
        frozenset({1}),
        130,
    )
    assert management.management and management.max_arsn_jump is None
    assert load_key_file(path).keys.ids() == [0, 128, 129, 130]
    assert "key 130: ACTIVE, TC SPI 3 VC 1 (management: Set/Read ARSN)" in out
    assert "TC SPI 1 VC 0 (ARSN window 5, 4 IVs per write)" in out


def test_management_vc_option_and_its_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.json"
    code, _, err = run_linkstack(["keys", "generate", str(path), "--management-vc", "2"])
    assert code == 0, err
    sas = {sa.spi: sa for sa in load_key_file(path).sas}
    assert sas[3].vcids == frozenset({2}) and sas[3].management
    assert sas[1].max_arsn_jump is None  # the default profile keeps its unbounded window
    for bad in ("0", "64", "x"):
        code, _, err = run_linkstack(
            ["keys", "generate", str(tmp_path / f"{bad}.json"), "--management-vc", bad]
        )
        usage = err + capsys.readouterr().err  # argparse writes to sys.stderr
        assert code == 2 and f"{bad!r} is not a TC VC 1..63" in usage
    with pytest.raises(LocalProtocolError, match="management SA on TC VC 0"):
        generate_key_file(tmp_path / "vc0.json", management_vcid=0)


def test_a_key_file_without_management_sa_keeps_todays_link(tmp_path: Path) -> None:
    """Old key files (and the default one) load as before and change nothing on the wire."""
    path = tmp_path / "old.json"
    generate_key_file(path)
    document = json.loads(path.read_text())
    for sa in document["security_associations"]:  # a key file of the first version
        for name in ("arsn_source", "reservation_step", "map_id", "management"):
            del sa[name]
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    ground = link_security(path, role="ground")
    assert ground.management_sa is None and ground.vc_security == {}
    setup = station_link(ground)
    assert setup.config == LinkConfig() and setup.vc_security is None
    spacecraft = link_security(path, role="spacecraft")
    assert route_key_management(LinkConfig(), spacecraft.management_sa) == LinkConfig()


def test_both_ends_route_key_management_to_the_management_vc(tmp_path: Path) -> None:
    keys = cryptolib_keys(tmp_path)
    ground = link_security(keys, role="ground")
    spacecraft = link_security(keys, role="spacecraft")
    setup = station_link(ground)
    assert setup.config.tc_routes == (TcRoute(Apid.KEY_MANAGEMENT, 1, 0),)
    assert setup.config == route_key_management(LinkConfig(), spacecraft.management_sa)
    assert setup.vc_security is not None and setup.vc_security[1].send_spi == 3
    assert spacecraft.management is None  # the spacecraft sends no TC
    with pytest.raises(LocalProtocolError, match="disagrees with management SA 3"):
        route_key_management(
            LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, 2),)), spacecraft.management_sa
        )
    on_vc0 = SecurityAssociation(
        spi=9, link=Link.TC, vcids=frozenset({0}), key_id=131, management=True
    )
    with pytest.raises(LocalProtocolError, match="management SA 9 on TC VC 0"):
        route_key_management(LinkConfig(), on_vc0)


# -- the long loss and the restart, with the programs' composition -----------------------------


def test_a_long_outage_then_a_ground_restart_lose_nothing_with_a_window_of_5(
    tmp_path: Path,
) -> None:
    link = ProgramLink(cryptolib_keys(tmp_path))
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    assert link.delivered == [prompt(1)]
    before = link.highest()
    assert before is not None

    # A long outage: FOP-1 retransmits into it, each time with fresh IVs.
    link.uplink_up = False
    link.ground.send(prompt(2, length=1400), link.now)  # several frames
    link.run(30.0)
    assert link.next_arsn() - 1 - before > W  # the ground is past the window now
    link.uplink_up = True
    link.run(12.0)
    assert link.delivered == [prompt(1), prompt(2, length=1400)]
    assert any(e.spi == 1 and e.moved for e in link.arsn_set)
    assert "sdls/too-far-ahead" not in link.reasons()
    assert "sdls/not-management-sa" not in link.reasons()

    # A ground restart (a new process from the same key file, nothing saved on exit):
    # it resumes at its counter-file mark, at most 4 ahead, inside the window.
    link.start_ground()
    highest = link.highest()
    assert highest is not None and link.next_arsn() - highest <= W
    link.ground.send(prompt(3), link.now)
    link.run(1.0)
    assert link.delivered == [prompt(1), prompt(2, length=1400), prompt(3)]
    assert "sdls/too-far-ahead" not in link.reasons()
    saved = CounterStore(counter_path(link.keys, "spacecraft")).record.rx[1]
    assert saved == link.highest()


def test_set_arsn_under_the_data_sa_is_refused_and_counted(tmp_path: Path) -> None:
    """Without a management SA, key management rides VC 0 under the data SA: a Set ARSN
    there must not move the window (anyone with that key could open it to replays)."""
    keys = tmp_path / "keys.json"
    generate_key_file(keys, max_arsn_jump=W)  # window 5, no management SA
    link = ProgramLink(keys)
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    highest = link.highest()
    assert highest is not None
    link.ground.send_key_management(SetArsnPdu(1, highest + 1000, 12).to_bytes(), link.now)
    link.run(1.0)
    assert link.highest() == highest + 1  # only the frame that carried it, not +1000
    assert link.arsn_set == []
    assert link.reasons().count("sdls/not-management-sa") == 1
    assert link.spacecraft.drops["sdls/not-management-sa"] == 1
    assert link.ground.uplink_clear  # COP-1 delivered it: refused by SDLS, not lost


def test_set_arsn_on_the_management_vc_under_a_non_management_sa_is_refused(
    tmp_path: Path,
) -> None:
    """An SA on VC 1 that is not the management SA does not carry Set ARSN either."""
    keys = cryptolib_keys(tmp_path)
    document = json.loads(keys.read_text())
    for sa in document["security_associations"]:
        sa["management"] = False
    keys.write_text(json.dumps(document))
    ground = link_security(keys, role="ground")
    spacecraft_role = link_security(keys, role="spacecraft")
    assert ground.management is None and ground.store is not None
    config = LinkConfig(tc_routes=(TcRoute(Apid.KEY_MANAGEMENT, 1),))
    sender = LinkSecurity(
        table=ground.security.table,
        send_spi=3,
        counter=ground.store.counter(ground.security.table[3]),
        reserve=ground.store.ensure,
    )
    ground_end = GroundEndpoint(config, ground.security, vc_security={1: sender})
    spacecraft = SpacecraftEndpoint(config, spacecraft_role.security)
    ground_end.send_key_management(SetArsnPdu(1, 900, 12).to_bytes(), 0.0)
    events = exchange(ground_end, spacecraft, 0.0)
    refused = [e for e in events if isinstance(e, Dropped)]
    assert [(r.reason, "under SPIs [3]" in r.detail) for r in refused] == [
        ("not-management-sa", True)
    ]
    assert spacecraft_role.security.table.highest_arsn(1) is None


def test_read_arsn_goes_up_under_the_management_sa_and_its_reply_comes_down(
    tmp_path: Path,
) -> None:
    link = ProgramLink(cryptolib_keys(tmp_path))
    link.ground.send(prompt(1), link.now)
    link.run(1.0)
    highest = link.highest()
    assert highest is not None
    link.ground.read_arsn(1, link.now)
    link.run(1.0)
    assert link.reports == [ArsnReported(spi=1, arsn=highest)]
    assert dict(link.ground.drops) == {}


def test_read_arsn_events_and_a_stray_reply_on_the_uplink(tmp_path: Path) -> None:
    """The spacecraft reports the Read ARSN it answered; on the ground a key
    management PDU that is not a reply is a typed drop, not a message."""
    link = ProgramLink(cryptolib_keys(tmp_path))
    link.ground.read_arsn(1, link.now)
    link.run(1.0)
    reads = [e for e in link.events if isinstance(e, ArsnRead)]
    assert [(r.spi, r.arsn) for r in reads] == [(1, 0)]
    # The spacecraft's TM sequencer sends a Read ARSN *command* down: the ground drops it.
    command = link.spacecraft._sequencer.packet(Apid.KEY_MANAGEMENT, ReadArsnPdu(1).to_bytes())
    link.spacecraft._multiplexer.queue_packet(0, command.to_bytes())
    for _ in range(4):
        link.ground.receive_bytes(link.spacecraft.next_cadu(), link.now)
    assert link.ground.drops["sdls/bad-pdu"] == 1


# -- linkstack demo --keys with the cryptolib profile ------------------------------------------


def test_demo_rekeys_with_a_key_file_that_has_the_management_sa(
    embedded_model: ModelHandle, xdg_cache_home: object, tmp_path: Path
) -> None:
    keys = cryptolib_keys(tmp_path)
    argv = ["--json", "--keys", str(keys), "--rekey-at", "0", "--max-new-tokens", "16"]
    code, out, err = run_demo(*argv, "--device", "cpu", "Hi there")
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert record["rekey"]["tc_vcid"] == 1 and record["rekey"]["key_id"] == 140
    applied = [(e["procedure"], e["key_ids"]) for e in record["rekey"]["applied"]]
    assert applied == [("otar", [140]), ("activation", [140])]
    drops = record["security"]["drops"]
    assert "sdls/not-management-sa" not in drops and "sdls/too-far-ahead" not in drops
    assert (record["security"]["mac_failures"], record["security"]["replays"]) == (0, 0)
    # The OTAR's IV under master key 0 was reserved in the ground's counter file.
    assert CounterStore(counter_path(keys, "ground")).record.tx["mkid-0"] > 1


def test_demo_refuses_rekey_with_a_key_file_without_management_sa(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    generate_key_file(keys)
    code, _, err = run_demo("--keys", str(keys), "--rekey-at", "1", "Hi")
    assert code == 2
    assert "no management SA" in err and "--management-vc 1" in err


def test_keys_changed_is_still_reported(tmp_path: Path) -> None:
    """OTAR on the management VC (under the management SA) is applied as before."""
    link = ProgramLink(cryptolib_keys(tmp_path))
    otar, activation = link.ground_role.rekey_pdus(140, KeyMaterial(bytes(range(32))))
    link.ground.send_key_management(otar, link.now)
    link.ground.send_key_management(activation, link.now)
    link.run(1.0)
    changed = [e for e in link.events if isinstance(e, KeysChanged)]
    assert [(c.procedure, c.key_ids) for c in changed] == [("otar", (140,)), ("activation", (140,))]


# -- onboard serve and groundstation ask, with a CryptoLib-strict key file ---------------------


def test_serve_and_three_asks_with_a_window_of_5_over_udp(
    embedded_model: ModelHandle, xdg_cache_root: Path, tmp_path: Path
) -> None:
    """Each ``groundstation ask`` is a new ground from the same key file (a ground
    restart): it resumes at its counter-file mark, inside the spacecraft's window of 5,
    and both programs put key management on VC 1 (else no CLCW of VC 1 would match)."""
    keys = cryptolib_keys(tmp_path)
    server = serve_with_keys(keys, xdg_cache_root)
    try:
        url = server.wait_url()
        for prompt_text in ("hi", "and again", "once more"):
            out, err = io.StringIO(), io.StringIO()
            ask = ["ask", prompt_text, "--link", url, "--json", "--max-new-tokens", "6"]
            code = groundstation_main(
                [*ask, "--timeout", "60", "--keys", str(keys)], stdout=out, stderr=err
            )
            assert code == 0, err.getvalue()
            record = json.loads(out.getvalue())
            assert record["received_ids"] == list(reference(embedded_model, record))
            assert record["security"]["drops"] == {}
    finally:
        code = server.stop()
    log = server.text()
    assert code == 0, log
    assert "too-far-ahead" not in log and "Traceback" not in log
    # Three grounds, each reserving 4 IVs at a time: the window moved past the
    # first block without a hand edit of either counter file.
    ground = CounterStore(counter_path(keys, "ground")).record.tx["spi-1"]
    spacecraft = CounterStore(counter_path(keys, "spacecraft")).record.rx[1]
    assert ground > 5 and 0 < ground - spacecraft <= W
