"""The coded downlink of the simulated channel (linkstack.radio.coded): CADUs through
the convolutional code, BPSK and white Gaussian noise, the phase ambiguity, a start
offset and symbol slips, and back to re-aligned CADUs that a ground endpoint takes;
the ``output="cadus"`` option of the soft synchronizer that it relies on; the
``coding="conv"`` mode of ``ChannelConfig`` and the mission simulator over it.

No external test vectors: every check is a round trip (what the transmitter sent
against what the receiver hands on), or, for the raw bit error rate, the textbook
BPSK figure Q(sqrt(2 Es/N0)).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pytest

from linkstack.coding.soft import (
    CaduAligned,
    SoftCaduSynchronizer,
    add_awgn,
    cadus_to_bits,
    ideal_soft,
)
from linkstack.coding.tm import (
    ASM,
    CaduSynchronizer,
    FrameDecoded,
    TmCodingConfig,
    encode_cadus,
)
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import GenerationParams
from linkstack.radio.channel import Channel, ChannelConfig, link_profile
from linkstack.radio.coded import START_OFFSET_SYMBOLS, CodedDownlink
from linkstack.sim.mission import MissionConfig, simulate
from onboard.generation import FinishReason, GenerationResult, GenerationTiming

if TYPE_CHECKING:
    from linkstack.sim.mission import Generate
    from onboard.model import ModelHandle
    from onboard.service import Job

SMALL = TmCodingConfig(interleave=1)  # 259-octet CADUs: quick
LINK = TmCodingConfig()  # the link's own: I = 5, 1279-octet CADUs


# ----------------------------------------------------------------------- helpers


def make_frames(config: TmCodingConfig, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, config.frame_octets, np.uint8).tobytes() for _ in range(count)]


def make_cadus(config: TmCodingConfig, count: int, seed: int = 0) -> list[bytes]:
    return [encode_cadus(frame, config) for frame in make_frames(config, count, seed)]


def stage(
    config: TmCodingConfig = SMALL,
    *,
    seed: int = 0,
    ebn0_db: float | None = None,
    slip_probability: float = 0.0,
) -> CodedDownlink:
    return CodedDownlink(
        config,
        ebn0_db=ebn0_db,
        slip_probability=slip_probability,
        rng=np.random.default_rng(seed),
    )


def through(downlink: CodedDownlink, cadus: Iterable[bytes]) -> list[bytes]:
    """Every CADU transmitted and received, unit by unit: what the receiver hands on."""
    return [out for cadu in cadus for out in downlink.receive(downlink.transmit(cadu))]


def decoded_frames(config: TmCodingConfig, stream: Iterable[bytes]) -> list[bytes]:
    """The frames a ground's hard-decision synchronizer gets from the handed-on CADUs."""
    sync = CaduSynchronizer(config)
    for cadu in stream:
        sync.receive_bytes(cadu)
    frames = []
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            frames.append(event.frame)
    return frames


def bpsk_error_rate(ebn0_db: float, rate: float = 0.5) -> float:
    """Q(sqrt(2 Es/N0)) = erfc(sqrt(Es/N0)) / 2, Es/N0 = R Eb/N0: hard-decision BPSK."""
    return 0.5 * math.erfc(math.sqrt(rate * 10 ** (ebn0_db / 10)))


# ----------------------------------------------------------------------- the stage


def test_noise_free_round_trip_is_lossless() -> None:
    cadus = make_cadus(SMALL, 12)
    downlink = stage()
    out = through(downlink, cadus)
    # The last CADU waits in the Viterbi decoder for the next one's symbols.
    assert out == cadus[:-1]
    stats = downlink.stats
    assert stats.raw_bit_errors == 0
    assert stats.cadus_encoded == 12
    assert stats.symbols_sent == 12 * 16 * SMALL.cadu_length
    assert stats.symbols_received == stats.symbols_sent + stats.start_offset
    assert stats.cadus_delivered == 11
    assert (stats.locks, stats.sync_losses, stats.hypothesis_changes, stats.slips) == (1, 0, 0, 0)
    assert stats.hypothesis is not None


def test_high_ebn0_round_trip_is_lossless() -> None:
    cadus = make_cadus(LINK, 20, seed=1)
    downlink = stage(LINK, seed=1, ebn0_db=8.0)
    out = through(downlink, cadus)
    assert out == cadus[:-1]  # byte for byte: the Viterbi decoder put every symbol right
    assert downlink.stats.raw_bit_errors > 0


def test_the_receiver_takes_the_units_whole_one_by_one_or_in_odd_chunks() -> None:
    cadus = make_cadus(SMALL, 8)
    transmitter = stage()
    on_air = [transmitter.transmit(cadu) for cadu in cadus]
    joined = b"".join(on_air)
    whole = stage().receive(joined)
    by_unit, by_chunk = stage(), stage()
    one_by_one = [out for unit in on_air for out in by_unit.receive(unit)]
    chunked = [
        out
        for start in range(0, len(joined), 997)
        for out in by_chunk.receive(joined[start : start + 997])
    ]
    assert whole == cadus[:-1]
    assert one_by_one == whole
    assert chunked == whole


def test_every_cadu_decodes_at_3_5_db() -> None:
    count = 120
    frames = make_frames(LINK, count, seed=2)
    downlink = stage(LINK, seed=2, ebn0_db=3.5)
    out = through(downlink, (encode_cadus(frame, LINK) for frame in frames))
    assert decoded_frames(LINK, out) == frames[:-1]
    stats = downlink.stats
    assert stats.cadus_delivered == count - 1
    # Hard decisions before the decoder: BPSK at Es/N0 = 3.5 - 3.01 dB, about 6.7 %.
    rate = stats.raw_bit_errors / stats.symbols_received
    assert rate == pytest.approx(bpsk_error_rate(3.5), rel=0.02)
    assert (stats.sync_losses, stats.hypothesis_changes) == (0, 0)


def test_the_same_seed_gives_the_same_run() -> None:
    cadus = make_cadus(SMALL, 10, seed=3)
    first, second = stage(seed=5, ebn0_db=3.0), stage(seed=5, ebn0_db=3.0)
    assert through(first, cadus) == through(second, cadus)
    assert first.stats == second.stats


def test_inversion_and_offset_are_resolved() -> None:
    """Seeds until all four sessions show up: 0 or 180 degrees, even or odd start."""
    frames = make_frames(SMALL, 5, seed=4)
    cadus = [encode_cadus(frame, SMALL) for frame in frames]
    seen = set()
    for seed in range(64):
        downlink = stage(seed=seed, ebn0_db=4.0)
        session = (downlink.inverted, downlink.stats.start_offset % 2)
        if session in seen:
            continue
        seen.add(session)
        assert decoded_frames(SMALL, through(downlink, cadus)) == frames[:-1]
        hypothesis = downlink.stats.hypothesis
        assert hypothesis is not None
        assert hypothesis.inverted == downlink.inverted
        assert downlink.stats.phase_deg == (180 if downlink.inverted else 0)
        assert hypothesis.symbol_offset == downlink.stats.start_offset % 2
        assert 0 <= downlink.stats.start_offset < START_OFFSET_SYMBOLS
        if len(seen) == 4:
            break
    assert len(seen) == 4


@pytest.mark.parametrize("seed", range(6))
def test_a_slip_loses_at_most_two_cadus(seed: int) -> None:
    count, slipped = 30, 10
    frames = make_frames(LINK, count, seed)
    downlink = stage(LINK, seed=seed, ebn0_db=3.5)
    out = []
    for index, frame in enumerate(frames):
        # One unit slips (a symbol dropped or inserted at a random place), no other.
        downlink.slip_probability = 1.0 if index == slipped else 0.0
        out += downlink.receive(downlink.transmit(encode_cadus(frame, LINK)))
    got = decoded_frames(LINK, out)
    lost = [index for index, frame in enumerate(frames[:-1]) if frame not in got]
    assert len(lost) <= 2
    assert all(slipped - 1 <= index <= slipped + 1 for index in lost)
    assert got == [frame for index, frame in enumerate(frames[:-1]) if index not in lost]
    stats = downlink.stats
    assert stats.slips == 1
    assert stats.symbols_dropped + stats.symbols_inserted == 1
    # One symbol more or less flips the C1/C2 pair alignment: a new hypothesis.
    assert (stats.sync_losses, stats.hypothesis_changes, stats.locks) == (1, 1, 2)
    assert stats.hypothesis is not None
    assert stats.hypothesis.symbol_offset != stats.start_offset % 2


def test_a_unit_that_is_not_a_cadu_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="CADUs of this link are 259 octets"):
        stage().transmit(b"\x1a\xcf\xfc\x1d" + bytes(10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ebn0_db": math.nan}, "not a finite number of dB"),
        ({"ebn0_db": math.inf}, "not a finite number of dB"),
        ({"slip_probability": 1.5}, "outside 0..1"),
        ({"slip_probability": -0.1}, "outside 0..1"),
    ],
)
def test_bad_stage_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        stage(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- output="cadus"


def test_soft_sync_hands_on_aligned_cadus_with_the_inversion_undone() -> None:
    cadus = make_cadus(SMALL, 6, seed=6)
    symbols = -ideal_soft(cadus_to_bits(b"".join(cadus)))  # 180 degrees
    symbols = np.concatenate((np.full(3, 0.5, np.float32), symbols))  # odd offset
    sync = SoftCaduSynchronizer(SMALL, output="cadus")
    sync.receive_symbols(symbols)
    sync.flush()
    events = []
    while (event := sync.next_event()) is not None:
        events.append(event)
    aligned = [event for event in events if isinstance(event, CaduAligned)]
    assert [event.cadu for event in aligned] == cadus
    assert not [event for event in events if isinstance(event, FrameDecoded)]
    for index, event in enumerate(aligned):
        assert event.cadu.startswith(ASM)
        assert event.offset == 3 + index * 16 * SMALL.cadu_length
        assert event.hypothesis.inverted is True
        assert event.hypothesis.symbol_offset == 1
        assert (event.asm_errors, event.flywheeled) == (0, False)
    assert (sync.stats.cadus, sync.stats.frames) == (6, 0)


def test_soft_sync_cadus_give_the_frames_that_frames_output_gives() -> None:
    frames = make_frames(SMALL, 10, seed=7)
    bits = cadus_to_bits(encode_cadus(b"".join(frames), SMALL))
    noisy = add_awgn(ideal_soft(bits), ebn0_db=3.0, rate="1/2", rng=np.random.default_rng(7))
    by_frames = SoftCaduSynchronizer(SMALL)
    by_cadus = SoftCaduSynchronizer(SMALL, output="cadus")
    for sync in (by_frames, by_cadus):
        sync.receive_symbols(noisy)
        sync.flush()
    direct = []
    while (event := by_frames.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            direct.append(event.frame)
    handed_on = []
    while (event := by_cadus.next_event()) is not None:
        if isinstance(event, CaduAligned):
            handed_on.append(event.cadu)
    assert direct == frames
    assert decoded_frames(SMALL, handed_on) == direct


def test_soft_sync_output_is_checked() -> None:
    with pytest.raises(LocalProtocolError, match="output 'bits' is not one of frames, cadus"):
        SoftCaduSynchronizer(SMALL, output="bits")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- the channel


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"coding": "turbo"}, "coding 'turbo' is not one of none, conv"),
        ({"ebn0_db": 3.0}, "need coding='conv'"),
        ({"slip_probability": 0.1}, "need coding='conv'"),
        ({"coding": "conv", "ber": 1e-5}, "with coding='conv' the noise is ebn0_db"),
        (
            {"coding": "conv", "burst_probability": 0.1, "burst_length_bits": 8},
            "with coding='conv' the noise is ebn0_db",
        ),
        ({"coding": "conv", "ebn0_db": math.inf}, "not a finite number of dB"),
        ({"coding": "conv", "slip_probability": 2.0}, "slip_probability 2.0 outside 0..1"),
    ],
)
def test_channel_config_checks_the_coding(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        ChannelConfig(rate_bps=1e6, **changes)  # type: ignore[arg-type]


def test_an_uncoded_channel_has_no_coded_stage() -> None:
    config = ChannelConfig(rate_bps=1e6)
    assert (config.coding, config.ebn0_db, config.slip_probability) == ("none", None, 0.0)
    assert Channel(config, random.Random(0)).coded is None


def test_a_coded_channel_keeps_the_timing_and_hands_out_cadus() -> None:
    cadus = make_cadus(LINK, 6, seed=8)
    plain = Channel(ChannelConfig(rate_bps=1e6, delay_s=0.003), random.Random(1))
    coded = Channel(ChannelConfig(rate_bps=1e6, delay_s=0.003, coding="conv"), random.Random(1))
    out = []
    for cadu in cadus:
        for channel in (plain, coded):
            channel.send(cadu, 0.0)
        assert coded.get_timer() == plain.get_timer()
    now = 0.0
    while (timer := coded.get_timer()) is not None:
        now = timer
        out += coded.deliveries(now)
    assert out == cadus[:-1]
    assert coded.stats.units_delivered == 5
    assert coded.stats.bits_sent == plain.stats.bits_sent == 6 * 8 * LINK.cadu_length
    assert coded.coded is not None
    assert coded.coded.stats.symbols_sent == 2 * coded.stats.bits_sent


def test_a_coded_channel_loses_only_the_units_lost_on_the_air() -> None:
    frames = make_frames(LINK, 60, seed=9)
    config = ChannelConfig(rate_bps=1e6, coding="conv", ebn0_db=3.5, loss_probability=0.1)
    channel = Channel(config, random.Random(9))
    out: list[bytes] = []
    for index, frame in enumerate(frames):
        channel.send(encode_cadus(frame, LINK), 0.02 * index)
        out += channel.deliveries(0.02 * index + 0.015)
    got = decoded_frames(LINK, out)
    assert channel.stats.units_lost > 0
    # Each lost unit is one CADU's symbols gone: the grid holds, only that CADU is lost
    # (and the last one waits for the next symbols).
    assert len(got) == 60 - channel.stats.units_lost - 1
    assert channel.coded is not None
    assert channel.coded.stats.sync_losses == 0


def test_a_coded_channel_carries_the_link_s_cadu_length() -> None:
    config = ChannelConfig(rate_bps=1e6, coding="conv")
    channel = Channel(config, random.Random(0), tm_coding=SMALL)
    channel.send(make_cadus(SMALL, 1)[0], 0.0)
    with pytest.raises(LocalProtocolError, match="259 octets"):
        channel.send(make_cadus(LINK, 1)[0], 0.0)
    # Refused before anything moved: nothing more sent, the transmitter still free.
    assert channel.stats.units_sent == 1
    assert channel.stats.bits_sent == 8 * SMALL.cadu_length


def test_the_uplink_cannot_be_coded() -> None:
    from linkstack.aio.links import LoopbackLink

    coded = ChannelConfig(rate_bps=1e6, coding="conv")
    with pytest.raises(LocalProtocolError, match="only a downlink is coded"):
        MissionConfig(uplink=coded, downlink=coded)
    with pytest.raises(LocalProtocolError, match="only a downlink is coded"):
        LoopbackLink(
            uplink=coded,
            downlink=coded,
            seed=0,
            to_ground=lambda data, now: None,
            to_spacecraft=lambda data, now: None,
        )


# ----------------------------------------------------------------------- the mission


def fake_generate(job: Job) -> GenerationResult:
    """Ids from the job alone: a stand-in for the model, deterministic and free."""
    count = job.params.max_new_tokens
    base = sum(job.prompt_ids) + 7919 * job.request_id
    ids = tuple((base + 104_729 * i) % 151_643 for i in range(count))
    return GenerationResult(
        prompt_ids=job.prompt_ids,
        generated_ids=ids,
        finish_reason=FinishReason.MAX_TOKENS,
        params=job.params,
        timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=count),
    )


def coded_mission(**downlink: object) -> MissionConfig:
    profile = link_profile("s-band")
    return MissionConfig(
        uplink=dataclasses.replace(profile.uplink, ber=0.0),
        downlink=dataclasses.replace(profile.downlink, ber=0.0, coding="conv", **downlink),
        seed=7,
    )


PROMPT_IDS = (151644, 872, 198, 9707, 30, 151645, 198, 151644, 77091, 198)


def test_a_mission_over_a_slipping_coded_downlink_recovers_every_id() -> None:
    wire = GenerationParams.from_floats(max_new_tokens=200)
    result = simulate(
        PROMPT_IDS, wire, fake_generate, coded_mission(ebn0_db=3.5, slip_probability=0.05)
    )
    assert result.match
    assert len(result.received_ids) == 200
    coded = result.downlink_coded
    assert coded is not None
    assert coded.slips > 0
    assert coded.hypothesis_changes > 0
    # What the slips cost, the ground's R-S refused and recovery asked for again.
    assert 0 < result.ground.rs_uncorrectable <= 2 * coded.slips
    assert result.recovery.resend_requests > 0


def test_an_uncoded_mission_reports_no_coded_stage() -> None:
    profile = link_profile("ideal")
    config = MissionConfig(uplink=profile.uplink, downlink=profile.downlink, seed=7)
    wire = GenerationParams.from_floats(max_new_tokens=10)
    result = simulate(PROMPT_IDS, wire, fake_generate, config)
    assert result.match
    assert result.downlink_coded is None


def test_a_mission_over_the_coded_downlink_at_3_5_db_delivers_the_reference_ids(
    embedded_model: ModelHandle,
) -> None:
    from onboard.generation import generate
    from onboard.service import params_from_wire

    def model(job: Job) -> GenerationResult:
        return generate(embedded_model, job.prompt_ids, job.params)

    run: Generate = model
    prompt_ids = tuple(embedded_model.tokenizer.encode_prompt("Tell the ground about orbit."))
    wire = GenerationParams.from_floats(max_new_tokens=40, seed=3, stop_ids=embedded_model.stop_ids)
    reference = generate(embedded_model, prompt_ids, params_from_wire(wire)).generated_ids

    result = simulate(prompt_ids, wire, run, coded_mission(ebn0_db=3.5))

    assert result.error is None
    assert result.generated_ids == reference
    assert result.received_ids == reference
    assert result.match
    assert result.ground.rs_uncorrectable == 0
    assert result.ground.rs_corrected_symbols > 0
    assert result.downlink_channel.bits_flipped == 0  # the noise is on the symbols
    coded = result.downlink_coded
    assert coded is not None
    assert coded.raw_bit_errors > 0
    assert (coded.slips, coded.sync_losses) == (0, 0)
    assert coded.hypothesis is not None
    assert coded.hypothesis.inverted == (coded.phase_deg == 180)
