"""The bit-level CLTU search (``linkstack/coding/cltu_sync.py``) and the IQ uplink's
sans-I/O halves (``linkstack/radio/uplink.py``).

CLTUs come from ``encode_cltu`` (``linkstack/coding/tc.py``, pinned against published
vectors in ``tests/test_tc_coding.py``); here the synchronizer must cut, re-align and
hand them on so that the octet ``CltuDecoder`` decodes exactly the frames sent.
"""

from __future__ import annotations

import numpy as np
import pytest

from linkstack.coding.cltu_sync import CltuBitSynchronizer, CltuFound
from linkstack.coding.tc import (
    START_SEQUENCE,
    TAIL_SEQUENCE,
    CltuDecoded,
    CltuDecoder,
    DecoderMode,
    encode_cltu,
)
from linkstack.errors import LocalProtocolError
from linkstack.radio.modem import Impairments, impair
from linkstack.radio.uplink import CltuModulator, CltuReceiver

FRAMES = [bytes(range(i, i + 20 + 9 * i)) for i in range(5)]


def bits_of(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8))


def idle(count: int, first: int = 0) -> np.ndarray:
    return ((np.arange(count) + first) % 2).astype(np.uint8)


def stream(frames: list[bytes], *, lead: int, randomize: bool = True) -> tuple[np.ndarray, list]:
    """Idle bits, then each CLTU followed by idle bits; the CLTUs too."""
    cltus = [encode_cltu(f, randomize=randomize) for f in frames]
    parts = [idle(lead, first=1)]
    for cltu in cltus:
        parts += [bits_of(cltu), idle(37)]
    return np.concatenate(parts), cltus


def found(sync: CltuBitSynchronizer) -> list[CltuFound]:
    events = []
    while (event := sync.next_event()) is not None:
        events.append(event)
    return events


def decoded(cltus: list[bytes], *, randomize: bool = True) -> list[bytes]:
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=randomize)
    out = []
    for cltu in cltus:
        decoder.receive_bytes(cltu)
        while (event := decoder.next_event()) is not None:
            assert isinstance(event, CltuDecoded), event
            assert event.ended_by_tail
            out.append(event.data)
    return out


@pytest.mark.parametrize("lead", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("inverted", [False, True])
def test_any_bit_offset_either_polarity(lead: int, inverted: bool) -> None:
    bits, cltus = stream(FRAMES, lead=lead)
    sync = CltuBitSynchronizer()
    sync.receive_bits(bits ^ 1 if inverted else bits)
    events = found(sync)
    # Handed on upright and byte-aligned, exactly as sent (no bit errors here).
    assert [e.cltu for e in events] == cltus
    assert [e.inverted for e in events] == [inverted] * len(FRAMES)
    assert events[0].bit_offset == lead
    assert all(e.ended_by_tail and e.start_errors == 0 for e in events)
    assert [e.codeblocks for e in events] == [(len(c) - 10) // 8 for c in cltus]
    assert sync.stats.cltus == len(FRAMES) and sync.stats.empty_starts == 0


def test_whole_bit_by_bit_and_with_trailing_garbage() -> None:
    bits, cltus = stream(FRAMES, lead=3)
    whole = CltuBitSynchronizer()
    whole.receive_bits(bits)
    one = CltuBitSynchronizer()
    for index in range(bits.size):
        one.receive_bits(bits[index : index + 1])
    garbage = CltuBitSynchronizer()
    rng = np.random.default_rng(5)
    garbage.receive_bits(np.concatenate((bits, rng.integers(0, 2, 3000, np.uint8))))
    assert [e.cltu for e in found(whole)] == cltus
    assert [e.cltu for e in found(one)] == cltus
    garbage_cltus = [e.cltu for e in found(garbage)]
    assert garbage_cltus[: len(cltus)] == cltus
    assert one.stats.bits == bits.size


def test_bit_errors_go_on_uncorrected_and_the_decoder_counts_them() -> None:
    bits, cltus = stream(FRAMES, lead=11)
    # One error in the start sequence of CLTU 0 and in a codeblock of every CLTU.
    starts = [11]
    for cltu in cltus[:-1]:
        starts.append(starts[-1] + 8 * len(cltu) + 37)
    bits = bits.copy()
    bits[starts[0] + 3] ^= 1
    for start in starts:
        bits[start + 16 + 21] ^= 1
    strict = CltuBitSynchronizer(start_sequence_errors=0)
    strict.receive_bits(bits)
    assert len(found(strict)) == len(FRAMES) - 1  # CLTU 0's start sequence missed
    tolerant = CltuBitSynchronizer(start_sequence_errors=1)
    tolerant.receive_bits(bits)
    events = found(tolerant)
    assert [e.start_errors for e in events] == [1, 0, 0, 0, 0]
    # The start sequence is handed on as the book writes it, the codeblock as received.
    assert all(e.cltu[:2] == START_SEQUENCE for e in events)
    assert [e.cltu[2:] != c[2:] for e, c in zip(events, cltus, strict=True)] == [True] * 5
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=True)
    for event in events:
        decoder.receive_bytes(event.cltu)
    datas = []
    while (event := decoder.next_event()) is not None:
        assert isinstance(event, CltuDecoded)
        assert event.corrected_bits == 1
        datas.append(event.data)
    assert [d[: len(f)] for d, f in zip(datas, FRAMES, strict=True)] == FRAMES


def test_a_rejected_codeblock_ends_the_cltu_and_is_handed_on() -> None:
    cltu = encode_cltu(FRAMES[2], randomize=False)
    bits = bits_of(cltu).copy()
    bits[16 + 64 + 5] ^= 1
    bits[16 + 64 + 9] ^= 1  # two errors in codeblock 1: rejected (E4)
    sync = CltuBitSynchronizer()
    sync.receive_bits(np.concatenate((idle(64), bits, idle(64))))
    (event,) = found(sync)
    assert (event.codeblocks, event.ended_by_tail) == (1, False)
    assert event.cltu == START_SEQUENCE + cltu[2:10] + np.packbits(bits[80:144]).tobytes()


def test_noise_and_idle_alone_find_nothing() -> None:
    sync = CltuBitSynchronizer(start_sequence_errors=1)
    sync.receive_bits(idle(100_000))
    sync.receive_bits(idle(1001, first=1))
    assert found(sync) == []
    assert sync.stats.bits_skipped == 101_001 - 15
    noise = CltuBitSynchronizer()
    noise.receive_bits(np.random.default_rng(2).integers(0, 2, 200_000, np.uint8))
    events = found(noise)
    # EB90 or 146F turns up in random bits (6 times in 200 000 expected), and in CORRECT
    # mode half of all random codeblocks pass (64 of the 128 syndromes are accepted),
    # so false CLTUs are handed on: never ended by a tail, for the frame layer to refuse.
    assert noise.stats.cltus + noise.stats.empty_starts >= 3
    assert len(events) == noise.stats.cltus
    assert not any(e.ended_by_tail for e in events)


def test_empty_cltu_and_channel_deactivation() -> None:
    sync = CltuBitSynchronizer()
    sync.receive_bits(np.concatenate((idle(40), bits_of(START_SEQUENCE + TAIL_SEQUENCE))))
    assert found(sync) == [] and sync.stats.empty_starts == 1
    cltu = encode_cltu(FRAMES[4], randomize=False)
    sync.receive_bits(bits_of(cltu)[: 16 + 3 * 64 + 10])  # cut inside codeblock 3
    assert found(sync) == []
    sync.channel_deactivation()
    (event,) = found(sync)
    assert event.cltu == cltu[: 2 + 3 * 8] and not event.ended_by_tail


def test_max_codeblocks_cuts_a_cltu_without_tail() -> None:
    cltu = encode_cltu(bytes(70), randomize=False)  # 10 codeblocks
    sync = CltuBitSynchronizer(max_codeblocks=4)
    sync.receive_bits(bits_of(cltu))
    (event,) = found(sync)
    assert event.codeblocks == 5 and event.cltu == cltu[: 2 + 5 * 8]


def test_soft_symbols_are_sliced_at_zero() -> None:
    bits, cltus = stream(FRAMES[:2], lead=6)
    soft = np.where(bits == 1, 0.8, -1.1).astype(np.float32)
    soft[2] = np.nan  # an erasure in the idle bits: read as 0
    sync = CltuBitSynchronizer()
    sync.receive_symbols(soft)
    assert [e.cltu for e in found(sync)] == cltus


@pytest.mark.parametrize(
    ("call", "value", "message"),
    [
        ("receive_bits", np.array([0, 1, 2]), "0 or 1"),
        ("receive_bits", np.zeros((2, 2), np.uint8), "1-D"),
        ("receive_bits", np.array([0.5]), "0/1 integers"),
        ("receive_symbols", np.array([1, 0]), "real float"),
        ("receive_symbols", np.zeros(3, np.complex64), "real float"),
    ],
)
def test_wrong_types_raise(call: str, value: np.ndarray, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        getattr(CltuBitSynchronizer(), call)(value)


def test_bad_settings_raise() -> None:
    with pytest.raises(LocalProtocolError, match="start_sequence_errors=2"):
        CltuBitSynchronizer(start_sequence_errors=2)
    with pytest.raises(LocalProtocolError, match="max_codeblocks=0"):
        CltuBitSynchronizer(max_codeblocks=0)
    with pytest.raises(LocalProtocolError, match="idle_bits"):
        CltuModulator(idle_bits=-1)
    with pytest.raises(LocalProtocolError, match="empty CLTU"):
        CltuModulator().modulate(b"")


# -- the IQ uplink -----------------------------------------------------------------------


@pytest.mark.parametrize("phase", [0.4, 0.4 + np.pi])
def test_iq_uplink_through_noise_offset_and_phase(phase: float) -> None:
    frames = [np.random.default_rng(i).bytes(40 + 13 * i) for i in range(12)]
    modulator = CltuModulator(sps=4)
    samples = np.concatenate([modulator.modulate(encode_cltu(f, randomize=True)) for f in frames])
    impaired = impair(
        samples,
        Impairments(offset_hz=40.0, phase=phase, ebn0_db=9.0, code_rate=56 / 64),
        modulation="bpsk",
        sps=4,
        sample_rate=38400.0,
        rng=np.random.default_rng(3),
    )
    receiver = CltuReceiver(sps=4, sample_rate=38400.0)
    cltus: list[bytes] = []
    for start in range(0, impaired.size, 5000):  # in pieces, as ZeroMQ messages come
        cltus += receiver.receive(impaired[start : start + 5000])
    # Each CLTU comes out with the samples of its own idle sequence: none waits for
    # the next one.
    datas = decoded(cltus)
    assert [d[: len(f)] for d, f in zip(datas, frames, strict=True)] == frames
    stats = receiver.synchronizer.stats
    assert stats.cltus == len(frames) and stats.empty_starts == 0
    assert stats.inverted in (0, len(frames))  # one polarity for the whole pass
