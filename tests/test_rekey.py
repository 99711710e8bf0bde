"""SDLS rekey over the link (OTAR + activation on APID KEY_MANAGEMENT) mid-stream.

Both links run with one round of delay, so frames protected under the old SAs are
still in flight when each end switches; none may be lost, and none may be accepted
under an old SPI once the new one has been seen.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from linkstack.coding.tc import CltuDecoded, CltuDecoder
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded
from linkstack.endpoints import (
    GroundEndpoint,
    KeysChanged,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
)
from linkstack.errors import Dropped, Layer
from linkstack.inference.protocol import GenerationParams, PromptRequest, TokenChunk
from linkstack.sdls import (
    KeyActivationPdu,
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    LinkSecurity,
    SaTable,
    SecurityAssociation,
    TxCounter,
    build_otar,
    master_counter_label,
)
from linkstack.sdls.keystore import CounterStore, generate_key_file, load_key_file
from linkstack.tc.frame import TcFrame, peek_frame_length
from linkstack.tm.frame import TmFrame

CONFIG = LinkConfig()
OLD_TC, OLD_TM, NEW_TC_KEY, NEW_TM_KEY = 1, 2, 130, 131
#: Defined on both ends before the rekey; their keys arrive by OTAR.
TC_NEW = SecurityAssociation(
    spi=3, link=Link.TC, vcids=frozenset({0}), key_id=NEW_TC_KEY, replaces=OLD_TC
)
TM_NEW = SecurityAssociation(
    spi=4, link=Link.TM, vcids=frozenset(range(8)), key_id=NEW_TM_KEY, replaces=OLD_TM
)


def _security(path: Path, tmp_path: Path, name: str, spi: int) -> tuple[LinkSecurity, CounterStore]:
    key_file = load_key_file(path)  # each end its own key ring
    table = SaTable([*key_file.sas, TC_NEW, TM_NEW], key_file.keys)
    store = CounterStore(tmp_path / f"{name}.counters")
    security = LinkSecurity(
        table=table, send_spi=spi, counter=store.counter(table[spi]), reserve=store.ensure
    )
    return security, store


def _tc_spi(cltu: bytes) -> int | None:
    """The SPI of the CLTU's frame as seen off the air (None: plaintext control)."""
    decoder = CltuDecoder(randomize=CONFIG.tc_randomize)
    decoder.receive_bytes(cltu)
    decoder.channel_deactivation()
    event = decoder.next_event()
    assert isinstance(event, CltuDecoded)
    frame = TcFrame.from_bytes(event.data[: peek_frame_length(event.data)], config=CONFIG.tc)
    if frame.control_command:
        return None
    return int.from_bytes(frame.data[:2], "big")


def _tm_spi(cadu: bytes) -> int:
    sync = CaduSynchronizer(CONFIG.tm_coding)
    sync.receive_bytes(cadu)
    sync.flush()
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            return int.from_bytes(TmFrame.from_bytes(event.frame, config=CONFIG.tm).data[:2], "big")
    raise AssertionError("no frame in the CADU")


class DelayedPair:
    """Ground and spacecraft, each unit delivered one round after it was sent."""

    def __init__(self, ground: GroundEndpoint, spacecraft: SpacecraftEndpoint) -> None:
        self.ground, self.spacecraft = ground, spacecraft
        self.up: deque[bytes] = deque()
        self.down: deque[bytes] = deque()
        self.cltus: list[bytes] = []
        self.cadus: list[bytes] = []
        self.now = 0.0

    def round(self) -> None:
        while self.up:
            self.spacecraft.receive_bytes(self.up.popleft(), self.now)
        while self.down:
            self.ground.receive_bytes(self.down.popleft(), self.now)
        fresh = self.ground.data_to_send()
        self.cltus += fresh
        self.up.extend(fresh)
        for _ in range(2):
            cadu = self.spacecraft.next_cadu()
            self.cadus.append(cadu)
            self.down.append(cadu)
        self.now += 0.05
        self.ground.handle_timer(self.now)


def _master_counter() -> TxCounter:
    counter = TxCounter(master_counter_label(0), limit=(1 << 96) - 1)
    counter.confirm_reservation(counter.plan_reservation(16))
    return counter


def test_rekey_mid_stream_loses_nothing(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "keys.json")
    ground_sec, ground_store = _security(tmp_path / "keys.json", tmp_path, "ground", OLD_TC)
    sc_sec, sc_store = _security(tmp_path / "keys.json", tmp_path, "spacecraft", OLD_TM)
    pair = DelayedPair(GroundEndpoint(CONFIG, ground_sec), SpacecraftEndpoint(CONFIG, sc_sec))
    ground_keys, sc_keys = ground_sec.table.keys, sc_sec.table.keys

    new_keys = [
        (NEW_TC_KEY, KeyMaterial(os.urandom(32))),
        (NEW_TM_KEY, KeyMaterial(os.urandom(32))),
    ]
    master_counter = ground_store.master_counter(0)
    ground_store.ensure(master_counter)  # persisted before use, like every IV counter
    otar = build_otar(ground_keys, master_key_id=0, counter=master_counter, new_keys=new_keys)
    stranger = KeyRing([(0, KeyMaterial(os.urandom(32)), KeyState.ACTIVE)])
    forged = build_otar(stranger, master_key_id=0, counter=_master_counter(), new_keys=new_keys)

    sent_ids: list[int] = []
    sent_requests: list[int] = []
    got_ids: list[int] = []
    got_requests: list[int] = []
    sc_events: list[KeysChanged | Dropped] = []
    in_flight_at_switch: dict[str, list[int]] = {}
    ring_before_forged: list[int] = []

    for k in range(70):  # the last ten rounds send nothing: what is in flight lands
        if k < 60:
            chunk = tuple(range(1000 + 5 * k, 1005 + 5 * k))
            pair.spacecraft.send(TokenChunk(1, 5 * k, chunk))
            sent_ids += chunk
            request = PromptRequest(
                request_id=k + 1, params=GenerationParams(max_new_tokens=1), prompt_ids=(k,)
            )
            pair.ground.send(request, pair.now)
            sent_requests.append(k + 1)
        if k == 5:
            ring_before_forged = sorted(sc_keys.ids())
            pair.ground.send_key_management(forged.to_bytes(), pair.now)
        if k == 10:
            pair.ground.send_key_management(otar.to_bytes(), pair.now)
            for key_id, material in new_keys:
                ground_keys.add(key_id, material, KeyState.PREACTIVE)
        if k == 12:
            pair.ground.send_key_management(otar.to_bytes(), pair.now)  # a replay
        if k == 14:
            pair.ground.send_key_management(
                KeyActivationPdu((NEW_TC_KEY, NEW_TM_KEY)).to_bytes(), pair.now
            )
            for key_id, _ in new_keys:
                ground_keys.transition(key_id, KeyState.ACTIVE)
        pair.round()

        while (event := pair.spacecraft.next_event()) is not None:
            if isinstance(event, MessageReceived):
                assert isinstance(event.message, PromptRequest)
                got_requests.append(event.message.request_id)
            elif isinstance(event, KeysChanged | Dropped):
                sc_events.append(event)
                if isinstance(event, KeysChanged) and event.new_state is KeyState.ACTIVE:
                    in_flight_at_switch["tm"] = [_tm_spi(c) for c in pair.down]
                    sc_sec.switch_send(TM_NEW.spi, sc_store.counter(TM_NEW))
        while (ground_event := pair.ground.next_event()) is not None:
            if isinstance(ground_event, MessageReceived):
                assert isinstance(ground_event.message, TokenChunk)
                got_ids += ground_event.message.ids
            assert not isinstance(ground_event, Dropped), ground_event
        if ground_sec.send_spi == OLD_TC and OLD_TM in ground_sec.table.retired:
            # The first TM frame under the new SPI verified: switch the uplink too.
            in_flight_at_switch["tc"] = [s for c in pair.up if (s := _tc_spi(c)) is not None]
            ground_sec.switch_send(TC_NEW.spi, ground_store.counter(TC_NEW))

    # Nothing lost, nothing twice, in order, both ways.
    assert got_ids == sent_ids
    assert got_requests == sent_requests

    # The refusals and the key changes, as events out of the spacecraft endpoint.
    summary = [
        (e.layer, e.reason) if isinstance(e, Dropped) else (e.procedure, e.key_ids)
        for e in sc_events
    ]
    assert summary == [
        (Layer.SDLS, "mac-mismatch"),
        ("otar", (NEW_TC_KEY, NEW_TM_KEY)),
        (Layer.SDLS, "replay"),
        ("activation", (NEW_TC_KEY, NEW_TM_KEY)),
    ]
    assert ring_before_forged == [0, 128, 129]
    assert {k: sc_keys.state(k) for k in (NEW_TC_KEY, NEW_TM_KEY)} == {
        NEW_TC_KEY: KeyState.ACTIVE,
        NEW_TM_KEY: KeyState.ACTIVE,
    }
    assert sc_keys.material(NEW_TM_KEY) == ground_keys.material(NEW_TM_KEY)

    # Old-SA frames were in flight at each switch, and were accepted.
    assert in_flight_at_switch["tm"] and set(in_flight_at_switch["tm"]) == {OLD_TM}
    assert in_flight_at_switch["tc"] and set(in_flight_at_switch["tc"]) == {OLD_TC}
    assert not pair.spacecraft.drops.keys() - {"sdls/mac-mismatch", "sdls/replay"}

    # On the air: old SPIs, then only the new ones.
    tc_spis = [s for c in pair.cltus if (s := _tc_spi(c)) is not None]
    tm_spis = [_tm_spi(c) for c in pair.cadus]
    for spis, old, new in ((tc_spis, OLD_TC, TC_NEW.spi), (tm_spis, OLD_TM, TM_NEW.spi)):
        switch = spis.index(new)
        assert switch > 0 and set(spis[:switch]) == {old} and set(spis[switch:]) == {new}
    assert sc_sec.table.retired == {OLD_TC} and ground_sec.table.retired == {OLD_TM}

    # A frame under an old SPI after retirement is refused, at either end.
    old_cltu = next(c for c in pair.cltus if _tc_spi(c) == OLD_TC)
    pair.spacecraft.receive_bytes(old_cltu, pair.now)
    old_cadu = next(c for c in pair.cadus if _tm_spi(c) == OLD_TM)
    pair.ground.receive_bytes(old_cadu, pair.now)
    for endpoint in (pair.spacecraft, pair.ground):
        event = endpoint.next_event()
        assert isinstance(event, Dropped) and (event.layer, event.reason) == (
            Layer.SDLS,
            "sa-retired",
        )
