"""CADUs and the CADU synchronizer (CCSDS 131.0-B-5 sections 4, 9, 10)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstack.coding import reed_solomon as rs
from linkstack.coding.tm import (
    ASM,
    Basis,
    CaduSynchronizer,
    CodeblockDropped,
    FrameDecoded,
    SyncAcquired,
    SyncLost,
    SyncState,
    TmCodingConfig,
    TmCodingEvent,
    encode_cadu,
    encode_cadus,
    pseudo_random_sequence,
    randomize,
)
from linkstack.errors import Dropped, Layer, LocalProtocolError

SMALL = TmCodingConfig(interleave=1, frame_length=60)  # 96-octet codeblock: fast tests


def frames_for(config: TmCodingConfig, count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(config.frame_octets) for _ in range(count)]


def drain(sync: CaduSynchronizer) -> list[TmCodingEvent]:
    events = []
    while (event := sync.next_event()) is not None:
        events.append(event)
    return events


def run(
    config: TmCodingConfig, chunks: list[bytes]
) -> tuple[list[TmCodingEvent], CaduSynchronizer]:
    sync = CaduSynchronizer(config)
    events: list[TmCodingEvent] = []
    for chunk in chunks:
        sync.receive_bytes(chunk)
        events += drain(sync)
    sync.flush()
    return events + drain(sync), sync


def delivered(events: list[TmCodingEvent]) -> list[bytes]:
    return [e.frame for e in events if isinstance(e, FrameDecoded)]


def lfsr_bits(count: int) -> list[int]:
    """Bit-level model of figure 10-2: 8 cells preset to ones, output x^8's cell,
    feedback taps from h(x) = x^8+x^7+x^5+x^3+1 (written independently of the
    module's recurrence: a shift register, not a list recurrence)."""
    cells = [1] * 8  # cells[0] is the output stage
    out = []
    for _ in range(count):
        out.append(cells[0])
        feedback = cells[0] ^ cells[3] ^ cells[5] ^ cells[7]
        cells = [*cells[1:], feedback]
    return out


# --------------------------------------------------------------------------- known answers


def test_asm_known_answer() -> None:
    # 131.0-B-5 9.3: 0001 1010 1100 1111 1111 1100 0001 1101
    assert int.from_bytes(ASM, "big") == 0b0001_1010_1100_1111_1111_1100_0001_1101


def test_pseudo_random_sequence_known_answer() -> None:
    # First 40 bits as 130.1-G-1 8.2 prints them; 8 octets as Yamcs generates its TM
    # sequence (yamcs-core org/yamcs/tctm/ccsds/Randomizer.java, tmseq).
    assert pseudo_random_sequence(8) == bytes.fromhex("FF480EC09A0D70BC")
    assert pseudo_random_sequence(5) == int(
        "1111 1111 0100 1000 0000 1110 1100 0000 1001 1010".replace(" ", ""), 2
    ).to_bytes(5, "big")


def test_pseudo_random_sequence_matches_bit_model_and_period() -> None:
    seq = pseudo_random_sequence(2 * 255)
    bits = np.unpackbits(np.frombuffer(seq, np.uint8)).tolist()
    assert bits == lfsr_bits(len(bits))
    assert bits[:255] == bits[255:510]  # period 255 bits
    assert len({tuple(bits[i : i + 8]) for i in range(255)}) == 255  # maximal length


def test_randomize_is_an_involution_and_restarts_per_cadu() -> None:
    block = bytes(range(200))
    assert randomize(randomize(block)) == block
    frames = [bytes(223)] * 2
    cadus = encode_cadus(frames, TmCodingConfig(interleave=1))
    # an all-zero frame has an all-zero codeblock: the CADU body IS the sequence
    assert cadus[:4] == ASM and cadus[4:259] == pseudo_random_sequence(255)
    assert cadus[259:263] == ASM and cadus[263:] == pseudo_random_sequence(255)


@pytest.mark.parametrize("interleave", [1, 2])
def test_pseudo_random_sequence_is_a_codeword(interleave: int) -> None:
    # Why R-S success is no proof of alignment (module docstring): a body of zero
    # octets derandomizes to the sequence, and that decodes cleanly in both bases.
    layout = rs.CodeblockLayout(interleave, 16, 223 * interleave)
    body = pseudo_random_sequence(255 * interleave)
    for basis in Basis:
        assert rs.decode(body, layout, basis=basis)[1] == (0,) * interleave


# --------------------------------------------------------------------------- config and encoding


def test_config_defaults_and_lengths() -> None:
    config = TmCodingConfig()
    assert (config.interleave, config.error_correction, config.basis) == (5, 16, Basis.DUAL)
    assert config.frame_length == config.frame_octets == 1115
    assert config.codeblock_length == 1275 and config.cadu_length == 1279
    e8 = TmCodingConfig(interleave=4, error_correction=8)
    assert e8.frame_octets == 956 and e8.cadu_length == 4 + 956 + 64


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"interleave": 6}, "I=6"),
        ({"interleave": 0}, "I=0"),
        ({"error_correction": 10}, "E=10"),
        ({"interleave": 2, "frame_length": 447}, "N=447"),
        ({"interleave": 2, "frame_length": 445}, "not a multiple"),
        ({"asm_search_errors": 9}, "asm_search_errors=9"),
        ({"asm_search_errors": 3, "asm_lock_errors": 2}, "asm_lock_errors=2"),
        ({"flywheel": 0}, "flywheel=0"),
        ({"check_count": -1}, "check_count=-1"),
    ],
)
def test_bad_config_raises_local_error_naming_values(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        TmCodingConfig(**kwargs)  # type: ignore[arg-type]


def test_encode_cadu_layout() -> None:
    config = TmCodingConfig(interleave=2, frame_length=400)
    frame = bytes(range(200)) * 2
    cadu = encode_cadu(frame, config)
    assert len(cadu) == config.cadu_length == 4 + 400 + 64
    assert cadu[:4] == ASM
    block = randomize(cadu[4:])
    assert block == rs.encode(frame, config.layout)
    assert encode_cadus([frame, frame], config) == cadu * 2
    assert encode_cadus(frame * 3, config) == cadu * 3
    plain = TmCodingConfig(
        interleave=2, frame_length=400, randomize=False, basis=Basis.CONVENTIONAL
    )
    assert encode_cadu(frame, plain)[4:] == rs.encode(frame, plain.layout, basis=Basis.CONVENTIONAL)


def test_encode_rejects_wrong_frame_sizes() -> None:
    with pytest.raises(LocalProtocolError, match="61"):
        encode_cadu(bytes(61), SMALL)
    with pytest.raises(LocalProtocolError, match="not a whole number"):
        encode_cadus(bytes(121), SMALL)
    with pytest.raises(LocalProtocolError, match=r"\(1, 59\)"):
        encode_cadus([bytes(60), bytes(59)], SMALL)
    assert encode_cadus([], SMALL) == b""


# --------------------------------------------------------------------------- synchronizer


@pytest.mark.parametrize(
    "config",
    [
        TmCodingConfig(interleave=5),
        TmCodingConfig(interleave=2, error_correction=8, basis=Basis.CONVENTIONAL, randomize=False),
        TmCodingConfig(interleave=4, frame_length=4 * 100, asm_search_errors=0),
    ],
)
def test_whole_stream_round_trip(config: TmCodingConfig) -> None:
    frames = frames_for(config, 12)
    events, sync = run(config, [encode_cadus(frames, config)])
    assert delivered(events) == frames
    assert isinstance(events[0], SyncAcquired) and events[0].offset == 0
    assert [e.offset for e in events if isinstance(e, FrameDecoded)] == [
        i * config.cadu_length for i in range(12)
    ]
    assert sync.stats.cadus == sync.stats.frames == 12
    assert sync.stats.skipped_octets == 0 and not sync.drops


def test_byte_by_byte_with_leading_and_trailing_garbage() -> None:
    frames = frames_for(SMALL, 6)
    garbage = bytes(random.Random(1).randbytes(37))
    stream = garbage + encode_cadus(frames, SMALL) + b"\x00trailing junk"
    events, sync = run(SMALL, [stream[i : i + 1] for i in range(len(stream))])
    assert delivered(events) == frames
    assert events[0] == SyncAcquired(37)
    assert sync.stats.skipped_octets == 37 + 14
    assert not sync.drops


def test_a_hundred_cadu_chunk_is_decoded_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    config = TmCodingConfig(interleave=5)
    frames = frames_for(config, 101)
    stream = encode_cadus(frames, config)
    calls: list[int] = []
    real = rs.decode_blocks

    def spy(blocks: np.ndarray, *args: object, **kwargs: object) -> rs.BlockDecodeResult:
        calls.append(len(blocks))
        return real(blocks, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rs, "decode_blocks", spy)
    sync = CaduSynchronizer(config)
    sync.receive_bytes(stream[: config.cadu_length])  # lock needs the next ASM
    sync.receive_bytes(stream[config.cadu_length :])
    assert calls == [101]  # the held first block and the 100 following: one batch
    sync.flush()
    assert len(delivered(drain(sync))) == 101


def test_corrected_counts_are_reported() -> None:
    config = TmCodingConfig(interleave=2, frame_length=2 * 100)
    frames = frames_for(config, 3)
    stream = bytearray(encode_cadus(frames, config))
    base = config.cadu_length + 4  # second CADU's codeblock
    for s in range(16):  # 16 errors in codeword 0 (even offsets), 3 in codeword 1
        stream[base + 2 * s] ^= 0xA5
    for s in range(3):
        stream[base + 2 * s + 1] ^= 0x01
    events, sync = run(config, [bytes(stream)])
    decoded = [e for e in events if isinstance(e, FrameDecoded)]
    assert [d.frame for d in decoded] == frames
    assert [d.corrected for d in decoded] == [(0, 0), (16, 3), (0, 0)]
    assert sync.stats.corrected_symbols == 19


def test_uncorrectable_block_is_dropped_without_a_frame() -> None:
    frames = frames_for(SMALL, 5)
    stream = bytearray(encode_cadus(frames, SMALL))
    start = 2 * SMALL.cadu_length + 4
    for s in range(17):
        stream[start + s] ^= 0xFF
    events, sync = run(SMALL, [bytes(stream)])
    assert delivered(events) == frames[:2] + frames[3:]
    drops = [e for e in events if isinstance(e, Dropped)]
    assert len(drops) == 1
    drop = drops[0]
    assert isinstance(drop, CodeblockDropped)
    assert (drop.layer, drop.reason, drop.offset) == (
        Layer.TM_CODING,
        "uncorrectable",
        2 * SMALL.cadu_length,
    )
    assert drop.corrected == (-1,)
    assert sync.drops == {"tm-coding/uncorrectable": 1}
    assert sync.stats.uncorrectable == 1 and sync.stats.cadus == 5


def test_flywheel_keeps_a_block_whose_asm_is_corrupted() -> None:
    frames = frames_for(SMALL, 5)
    stream = bytearray(encode_cadus(frames, SMALL))
    stream[2 * SMALL.cadu_length : 2 * SMALL.cadu_length + 4] = b"\xe5\x30\x03\xe2"  # ASM inverted
    events, sync = run(SMALL, [bytes(stream)])
    assert delivered(events) == frames
    flywheeled = [e for e in events if isinstance(e, FrameDecoded) and e.asm_errors == 32]
    assert [e.offset for e in flywheeled] == [2 * SMALL.cadu_length]
    assert sync.stats.flywheeled == 1 and sync.stats.sync_losses == 0
    assert not any(isinstance(e, SyncLost) for e in events)


def test_loss_of_lock_and_reacquisition() -> None:
    config = TmCodingConfig(interleave=1, frame_length=60, flywheel=2)
    first, second = frames_for(config, 3, seed=1), frames_for(config, 4, seed=2)
    slip = b"\x55" * 50  # 50 stray octets: the spacing is broken
    stream = encode_cadus(first, config) + slip + encode_cadus(second, config)
    events, sync = run(config, [stream])
    kinds = [type(e).__name__ for e in events]
    # After the slip the expected position holds a shifted (non-ASM) window: one
    # miss is flywheeled (decoded as garbage -> uncorrectable), the second loses lock.
    assert kinds[:4] == ["SyncAcquired", "FrameDecoded", "FrameDecoded", "FrameDecoded"]
    assert "SyncLost" in kinds
    lost = kinds.index("SyncLost")
    assert kinds[lost + 1 :].count("SyncAcquired") == 1
    assert delivered(events)[:3] == first
    assert delivered(events)[-len(second) + 1 :] == second[1:]  # after the resync
    reacquired = [e for e in events if isinstance(e, SyncAcquired)][1]
    assert reacquired.offset >= 3 * config.cadu_length + 50
    assert sync.stats.sync_losses == 1


def test_reacquires_exactly_at_the_next_stream() -> None:
    config = TmCodingConfig(interleave=1, frame_length=60, flywheel=1)
    first, second = frames_for(config, 2, seed=3), frames_for(config, 3, seed=4)
    slip = bytes(20)
    stream = encode_cadus(first, config) + slip + encode_cadus(second, config)
    events, sync = run(config, [stream])
    assert delivered(events) == first + second
    sync_events = [e for e in events if isinstance(e, SyncAcquired | SyncLost)]
    assert sync_events == [
        SyncAcquired(0),
        SyncLost(2 * config.cadu_length),
        SyncAcquired(2 * config.cadu_length + 20),
    ]
    assert sync.stats.skipped_octets == 20


def test_false_marker_in_garbage_is_not_locked_on() -> None:
    # An exact ASM inside leading garbage, not followed by another one CADU later:
    # the check rejects it and the real stream is found.
    frames = frames_for(SMALL, 3)
    garbage = b"\x00" * 10 + ASM + b"\x00" * 30
    events, sync = run(SMALL, [garbage + encode_cadus(frames, SMALL)])
    assert delivered(events) == frames
    assert events[0] == SyncAcquired(len(garbage))
    assert not sync.drops


def test_single_cadu_is_delivered_at_flush() -> None:
    frame = frames_for(SMALL, 1)[0]
    sync = CaduSynchronizer(SMALL)
    sync.receive_bytes(encode_cadu(frame, SMALL))
    assert drain(sync) == []
    before = sync.state
    sync.flush()
    events = drain(sync)
    assert events[0] == SyncAcquired(0)
    assert delivered(events) == [frame]
    assert (before, sync.state) == (SyncState.CHECK, SyncState.SEARCH)


def test_unconfirmed_candidate_that_does_not_decode_is_skipped_at_flush() -> None:
    sync = CaduSynchronizer(SMALL)
    sync.receive_bytes(
        b"\x01" * 5 + ASM + bytes(SMALL.codeblock_length)
    )  # zeros: not a codeword once derandomized
    sync.flush()
    assert drain(sync) == []
    assert sync.stats.skipped_octets == 5 + SMALL.cadu_length
    assert not sync.drops


def test_truncated_final_cadu_is_dropped() -> None:
    frames = frames_for(SMALL, 3)
    stream = encode_cadus(frames, SMALL)[:-10]
    events, _ = run(SMALL, [stream])
    assert delivered(events) == frames[:2]
    drop = events[-1]
    assert isinstance(drop, CodeblockDropped) and drop.reason == "truncated"
    assert drop.offset == 2 * SMALL.cadu_length and drop.octets == SMALL.cadu_length - 10


@settings(max_examples=30, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    lead=st.binary(max_size=40),
    seed=st.integers(0, 1000),
)
def test_hypothesis_random_chunking(cuts: list[int], lead: bytes, seed: int) -> None:
    frames = frames_for(SMALL, 8, seed)
    stream = lead + encode_cadus(frames, SMALL)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    events, sync = run(SMALL, chunks)
    assert delivered(events) == frames
    offsets = [e.offset for e in events if isinstance(e, FrameDecoded)]
    assert offsets == [len(lead) + i * SMALL.cadu_length for i in range(8)]
    assert not sync.drops


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from([0, 2, 7]))
def test_random_bytes_never_raise(chunks: list[bytes], threshold: int) -> None:
    config = TmCodingConfig(
        interleave=1,
        frame_length=20,
        asm_search_errors=threshold,
        asm_lock_errors=max(4, threshold),
        check_count=0,
    )
    events, sync = run(config, chunks)
    for event in events:
        assert isinstance(event, FrameDecoded | Dropped | SyncAcquired | SyncLost)
    assert sync.stats.skipped_octets <= sum(map(len, chunks))


def test_random_bytes_with_embedded_markers_never_raise() -> None:
    rng = random.Random(8)
    config = TmCodingConfig(interleave=1, frame_length=20, check_count=0, flywheel=1)
    stream = bytearray(rng.randbytes(5000))
    for _ in range(40):
        at = rng.randrange(len(stream) - 4)
        stream[at : at + 4] = ASM
    events, sync = run(config, [bytes(stream[i : i + 97]) for i in range(0, len(stream), 97)])
    assert sync.stats.cadus == sum(isinstance(e, FrameDecoded | Dropped) for e in events)
