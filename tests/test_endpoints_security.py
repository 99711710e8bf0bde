"""SDLS inside the composed endpoints: COP-1 and the token stream through AES-256-GCM.

Every check is on the bytes as they cross the radio boundary (CLTUs up, CADUs down)
or on the frames decoded from them, so nothing here trusts the SDLS module's own view.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from linkstack.coding.tc import CltuDecoded, CltuDecoder, encode_cltu
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded
from linkstack.endpoints import GroundEndpoint, LinkConfig, MessageReceived, SpacecraftEndpoint
from linkstack.errors import Dropped, Layer
from linkstack.inference.protocol import (
    EndOfStream,
    FinishReason,
    GenerationParams,
    Message,
    PromptRequest,
    TokenChunk,
    pack_token_ids,
)
from linkstack.packets.fecf import append_fecf
from linkstack.sdls import LinkSecurity, SaTable
from linkstack.sdls.keystore import CounterStore, KeyFile, generate_key_file, load_key_file
from linkstack.tc.frame import peek_frame_length

CONFIG = LinkConfig()
PROMPT_IDS = tuple(range(151_000, 151_300))
ANSWER_IDS = tuple(range(7_000, 7_120))


@pytest.fixture
def key_file(tmp_path: Path) -> KeyFile:
    generate_key_file(tmp_path / "keys.json")
    return load_key_file(tmp_path / "keys.json")


def security(key_file: KeyFile, spi: int, tmp_path: Path, name: str) -> LinkSecurity:
    table = key_file.sa_table()
    store = CounterStore(tmp_path / f"{name}.counters")
    return LinkSecurity(
        table=table, send_spi=spi, counter=store.counter(table[spi]), reserve=store.ensure
    )


class Pair:
    """A ground and a spacecraft endpoint wired back to back, every unit kept."""

    def __init__(self, ground: GroundEndpoint, spacecraft: SpacecraftEndpoint) -> None:
        self.ground, self.spacecraft = ground, spacecraft
        self.cltus: list[bytes] = []
        self.cadus: list[bytes] = []
        self.now = 0.0

    def uplink(self, tamper: dict[int, bytes] | None = None) -> None:
        for cltu in self.ground.data_to_send():
            index = len(self.cltus)
            self.cltus.append(cltu)
            self.spacecraft.receive_bytes((tamper or {}).get(index, cltu), self.now)

    def downlink(self, frames: int) -> None:
        for _ in range(frames):
            cadu = self.spacecraft.next_cadu()
            self.cadus.append(cadu)
            self.ground.receive_bytes(cadu, self.now)

    def tick(self) -> None:
        self.now += 0.05
        self.ground.handle_timer(self.now)


def messages(endpoint: GroundEndpoint | SpacecraftEndpoint) -> tuple[list[Message], list[Dropped]]:
    got: list[Message] = []
    drops: list[Dropped] = []
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, MessageReceived):
            got.append(event.message)
        elif isinstance(event, Dropped):
            drops.append(event)
    return got, drops


def converse(pair: Pair) -> tuple[list[Message], list[Message]]:
    request = PromptRequest(
        request_id=3, params=GenerationParams(max_new_tokens=200), prompt_ids=PROMPT_IDS
    )
    pair.ground.send(request, pair.now)
    up: list[Message] = []
    for _ in range(10):  # Set V(R), its CLCW, then the AD frames and their CLCWs
        pair.uplink()
        up += messages(pair.spacecraft)[0]
        pair.downlink(2)
        pair.tick()
    answer: list[Message] = [
        TokenChunk(3, 0, ANSWER_IDS[:60]),
        TokenChunk(3, 60, ANSWER_IDS[60:]),
        EndOfStream(
            request_id=3,
            finish_reason=FinishReason.MAX_TOKENS,
            token_count=len(ANSWER_IDS),
            time_to_first_token_us=1,
            generation_time_ms=1,
            tokens_per_s_milli=1,
        ),
    ]
    for message in answer:
        pair.spacecraft.send(message)
    pair.downlink(4)
    down, _ = messages(pair.ground)
    return up, down


def test_protected_conversation_delivers_everything(key_file: KeyFile, tmp_path: Path) -> None:
    pair = Pair(
        GroundEndpoint(CONFIG, security(key_file, 1, tmp_path, "ground")),
        SpacecraftEndpoint(CONFIG, security(key_file, 2, tmp_path, "spacecraft")),
    )
    up, down = converse(pair)
    assert [m.prompt_ids for m in up if isinstance(m, PromptRequest)] == [PROMPT_IDS]
    ids = [i for m in down if isinstance(m, TokenChunk) for i in m.ids]
    assert tuple(ids) == ANSWER_IDS
    assert any(isinstance(m, EndOfStream) for m in down)
    assert not pair.ground.drops and not pair.spacecraft.drops


def _decoded_frames(pair: Pair) -> list[bytes]:
    """The TC and TM frames as a receiver without keys decodes them off the air."""
    tc = CltuDecoder(randomize=CONFIG.tc_randomize)
    tm = CaduSynchronizer(CONFIG.tm_coding)
    frames = []
    for cltu in pair.cltus:
        tc.receive_bytes(cltu)
    for cadu in pair.cadus:
        tm.receive_bytes(cadu)
    tm.flush()
    while (event := tc.next_event()) is not None:
        if isinstance(event, CltuDecoded):
            frames.append(event.data)
    while (tm_event := tm.next_event()) is not None:
        if isinstance(tm_event, FrameDecoded):
            frames.append(tm_event.frame)
    return frames


@pytest.mark.parametrize("protected", [True, False])
def test_no_prompt_or_answer_in_the_clear(
    key_file: KeyFile, tmp_path: Path, protected: bool
) -> None:
    ground_sec = security(key_file, 1, tmp_path, "ground") if protected else None
    space_sec = security(key_file, 2, tmp_path, "spacecraft") if protected else None
    pair = Pair(GroundEndpoint(CONFIG, ground_sec), SpacecraftEndpoint(CONFIG, space_sec))
    converse(pair)
    # Runs of 9 octets: four packed 18-bit ids, whatever their phase in the packing.
    secrets = [pack_token_ids(PROMPT_IDS[i : i + 8])[:9] for i in range(0, 280, 4)]
    secrets += [pack_token_ids(ANSWER_IDS[i : i + 8])[:9] for i in range(0, 100, 4)]
    decoded = _decoded_frames(pair)
    on_air = pair.cltus + pair.cadus + decoded
    found = sum(1 for secret in secrets for unit in on_air if secret in unit)
    if protected:
        assert found == 0
    else:
        # The same search finds them when the link runs in the clear: the test can fail.
        assert found >= len(secrets)


def _tamper_tc(cltu: bytes) -> bytes:
    """Flip one ciphertext bit of a CLTU's frame and re-encode it with a valid FECF and
    BCH, so that only SDLS can tell."""
    decoder = CltuDecoder(randomize=CONFIG.tc_randomize)
    decoder.receive_bytes(cltu)
    decoder.channel_deactivation()
    event = decoder.next_event()
    assert isinstance(event, CltuDecoded)
    frame = bytearray(event.data[: peek_frame_length(event.data)])
    frame[40] ^= 0x10
    return encode_cltu(append_fecf(bytes(frame[:-2])), randomize=CONFIG.tc_randomize)


def test_forged_replayed_and_wrong_key_frames_are_dropped(
    key_file: KeyFile, tmp_path: Path
) -> None:
    pair = Pair(
        GroundEndpoint(CONFIG, security(key_file, 1, tmp_path, "ground")),
        SpacecraftEndpoint(CONFIG, security(key_file, 2, tmp_path, "spacecraft")),
    )
    converse(pair)
    ad_cltus = pair.cltus[1:]  # the first is the plaintext Set V(R)
    # A forged frame (FECF recomputed so only SDLS can tell): mac-mismatch.
    pair.spacecraft.receive_bytes(_tamper_tc(ad_cltus[0]), pair.now)
    got, drops = messages(pair.spacecraft)
    assert got == []
    assert [(d.layer, d.reason) for d in drops] == [(Layer.SDLS, "mac-mismatch")]
    # A replayed frame: refused after its MAC verifies, nothing delivered twice.
    pair.spacecraft.receive_bytes(ad_cltus[0], pair.now)
    got, drops = messages(pair.spacecraft)
    assert got == []
    assert [(d.layer, d.reason) for d in drops] == [(Layer.SDLS, "replay")]
    # A spacecraft holding other keys: every frame fails verification.
    other = tmp_path / "other"
    other.mkdir()
    generate_key_file(other / "keys.json")
    stranger = SpacecraftEndpoint(
        CONFIG, security(load_key_file(other / "keys.json"), 2, other, "spacecraft")
    )
    for cltu in ad_cltus:
        stranger.receive_bytes(cltu, pair.now)
    got, drops = messages(stranger)
    assert got == []
    assert {d.reason for d in drops} == {"mac-mismatch"}
    assert stranger.drops["sdls/mac-mismatch"] == len(ad_cltus)


def test_a_ground_without_keys_hears_nothing_of_a_protected_downlink(
    key_file: KeyFile, tmp_path: Path
) -> None:
    spacecraft = SpacecraftEndpoint(CONFIG, security(key_file, 2, tmp_path, "spacecraft"))
    ground = GroundEndpoint(CONFIG)
    spacecraft.send(TokenChunk(1, 0, ANSWER_IDS[:10]))
    for _ in range(3):
        ground.receive_bytes(spacecraft.next_cadu(), 0.0)
    got, drops = messages(ground)
    assert got == []
    # Ciphertext does not parse as packets: whatever the depacketizer makes of it, it
    # is dropped, never delivered.
    assert all(d.layer in (Layer.TM_FRAME, Layer.SPACE_PACKET, Layer.APPLICATION) for d in drops)


def test_unknown_spi_is_dropped(key_file: KeyFile, tmp_path: Path) -> None:
    table = key_file.sa_table()
    sa = table[1]
    alien = dataclasses.replace(sa, spi=77)
    sender_table = SaTable([alien, table[2]], key_file.keys)
    store = CounterStore(tmp_path / "alien.counters")
    ground = GroundEndpoint(
        CONFIG,
        LinkSecurity(
            table=sender_table,
            send_spi=77,
            counter=store.counter(alien),
            reserve=store.ensure,
        ),
    )
    spacecraft = SpacecraftEndpoint(CONFIG, security(key_file, 2, tmp_path, "spacecraft"))
    request = PromptRequest(
        request_id=1, params=GenerationParams(max_new_tokens=1), prompt_ids=(1,)
    )
    ground.send(request, 0.0, expedited=True)
    for cltu in ground.data_to_send():
        spacecraft.receive_bytes(cltu, 0.0)
    got, drops = messages(spacecraft)
    assert got == []
    assert [(d.layer, d.reason) for d in drops] == [(Layer.SDLS, "unknown-spi")]
