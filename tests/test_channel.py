"""Seeded channel simulator (linkstack.radio.channel)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from linkstack.errors import InvalidState, LocalProtocolError
from linkstack.radio.channel import (
    DEFAULT_RAW_BER,
    PROFILE_NAMES,
    SPEED_OF_LIGHT_M_S,
    Channel,
    ChannelConfig,
    ChannelStats,
    Outage,
    link_profile,
    one_way_delay_s,
    slant_range_m,
)


class ScriptedRandom(random.Random):
    """A Random whose ``random()`` returns scripted values, and nothing else."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        if not self.values:
            raise AssertionError("channel drew more values than scripted")
        return self.values.pop(0)


def drain(channel: Channel, now: float = 0.0) -> list[tuple[float, bytes]]:
    """Step a fake clock from ``now`` timer to timer; (timer, unit) for each delivery.

    A timer already in the past (a unit due before the last ``send``) fires at ``now``.
    """
    out: list[tuple[float, bytes]] = []
    while (t := channel.get_timer()) is not None:
        now = max(now, t)
        out.extend((t, unit) for unit in channel.deliveries(now))
    return out


def popcount(data: bytes) -> int:
    return int.from_bytes(data, "big").bit_count()


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def test_slant_range_and_delay_known_values() -> None:
    # Provenance: computed over a sphere of R = 6371 km, slant
    # sqrt((R + h)^2 - (R cos e)^2) - R sin e and delay slant / c (c = 299 792 458 m/s):
    # zenith 1.67 ms (500 km), 3.34 (1000), 6.67 (2000); horizon slant 2573 km -> 8.6 ms
    # (500 km), 5430 km -> 18.1 ms (2000 km); at 10 deg: 5.7 / 9.2 / 14.8 ms.
    assert slant_range_m(500e3, 90) == pytest.approx(500e3, abs=1e-6)
    assert round(one_way_delay_s(500e3, 90) * 1e3, 2) == 1.67
    assert round(one_way_delay_s(1000e3, 90) * 1e3, 2) == 3.34
    assert round(one_way_delay_s(2000e3, 90) * 1e3, 2) == 6.67
    assert round(slant_range_m(500e3, 0) / 1e3) == 2573
    assert round(slant_range_m(2000e3, 0) / 1e3) == 5430
    assert round(one_way_delay_s(500e3, 0) * 1e3, 1) == 8.6
    assert round(one_way_delay_s(2000e3, 0) * 1e3, 1) == 18.1
    assert [round(one_way_delay_s(h, 10) * 1e3, 1) for h in (500e3, 1000e3, 2000e3)] == [
        5.7,
        9.2,
        14.8,
    ]


def test_horizon_slant_is_the_tangent_length() -> None:
    # Independent form at 0 deg: Pythagoras on the tangent line, sqrt((R+h)^2 - R^2).
    r = 6_371_000.0
    for h in (200e3, 500e3, 35_786e3):
        assert slant_range_m(h, 0) == pytest.approx(math.sqrt((r + h) ** 2 - r**2), rel=1e-12)


def test_delay_at_30_degrees_is_a_few_ms() -> None:
    delay = one_way_delay_s(500e3, 30)
    assert 3.0e-3 < delay < 3.1e-3  # 909 km slant
    assert delay == slant_range_m(500e3, 30) / SPEED_OF_LIGHT_M_S


@pytest.mark.parametrize(("h", "e"), [(-1.0, 30.0), (500e3, -0.1), (500e3, 90.1)])
def test_geometry_rejects_bad_arguments(h: float, e: float) -> None:
    with pytest.raises(LocalProtocolError):
        slant_range_m(h, e)


# ---------------------------------------------------------------------------
# Timing: serialization and propagation, exact with dyadic numbers
# ---------------------------------------------------------------------------


def test_rate_and_delay_give_exact_arrival_times() -> None:
    channel = Channel(ChannelConfig(rate_bps=1024.0, delay_s=0.25), random.Random(1))
    assert channel.get_timer() is None
    a, b, c = b"A" * 128, b"B" * 64, b"C" * 32  # 1 s, 0.5 s, 0.25 s on the air
    channel.send(a, now=0.0)  # on air 0..1, arrives 1.25
    channel.send(b, now=0.5)  # queues behind A: on air 1..1.5, arrives 1.75
    assert channel.get_timer() == 1.25
    assert channel.deliveries(1.2499) == []
    assert channel.deliveries(1.25) == [a]
    assert channel.get_timer() == 1.75
    channel.send(c, now=3.0)  # link idle again: on air 3..3.25, arrives 3.5
    assert channel.deliveries(3.49) == [b]
    assert channel.get_timer() == 3.5
    assert channel.deliveries(10.0) == [c]
    assert channel.get_timer() is None
    assert channel.stats == ChannelStats(units_sent=3, bits_sent=8 * 224, units_delivered=3)


def test_many_units_queue_back_to_back() -> None:
    channel = Channel(ChannelConfig(rate_bps=8.0, delay_s=0.5), random.Random(1))
    for i in range(10):
        channel.send(bytes([i]), now=0.0)  # one octet = one second each
    assert drain(channel) == [(i + 1.5, bytes([i])) for i in range(10)]


def test_time_must_not_go_backwards() -> None:
    channel = Channel(ChannelConfig(rate_bps=8.0), random.Random(1))
    channel.send(b"x", now=5.0)
    with pytest.raises(InvalidState, match="backwards"):
        channel.deliveries(4.0)
    with pytest.raises(InvalidState):
        channel.send(b"y", now=4.9)


def test_empty_unit_refused() -> None:
    with pytest.raises(LocalProtocolError, match="empty"):
        Channel(ChannelConfig(rate_bps=8.0), random.Random(1)).send(b"", now=0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_bps": 0.0},
        {"rate_bps": 1.0, "delay_s": -1.0},
        {"rate_bps": 1.0, "ber": 1.5},
        {"rate_bps": 1.0, "loss_probability": -0.1},
        {"rate_bps": 1.0, "burst_probability": 0.1},  # no burst length
        {"rate_bps": 1.0, "reorder_hold_s": -1.0},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        ChannelConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Outage(0.0, -1.0)


# ---------------------------------------------------------------------------
# Bit errors
# ---------------------------------------------------------------------------


def test_ber_statistics_within_binomial_bound() -> None:
    # 10^6 bits at 1e-3: mean 1000 errors, sigma = sqrt(n p (1-p)) = 31.6; allow 4.5 sigma.
    channel = Channel(ChannelConfig(rate_bps=1e9, ber=1e-3), random.Random(2024))
    zeros = bytes(125)  # 1000 bits
    for i in range(1000):
        channel.send(zeros, now=float(i))
    received = [unit for _, unit in drain(channel, 999.0)]
    flips = sum(popcount(unit) for unit in received)
    sigma = math.sqrt(1e6 * 1e-3 * (1 - 1e-3))
    assert abs(flips - 1000) <= 4.5 * sigma
    assert flips == channel.stats.bits_flipped
    assert channel.stats.units_corrupted == sum(1 for u in received if u != zeros)
    # Errors are spread over the stream: each half of it holds about half of them.
    first_half = sum(popcount(unit) for unit in received[:500])
    assert abs(first_half - flips / 2) <= 4.5 * math.sqrt(flips / 4)
    # And over the bit positions in an octet (8 cells, each ~125 +- 4.5 sigma).
    per_bit = [sum(1 for u in received for b in u if b & (0x80 >> k)) for k in range(8)]
    assert all(abs(n - flips / 8) <= 4.5 * math.sqrt(flips / 8) for n in per_bit)


def test_ber_one_flips_every_bit() -> None:
    channel = Channel(ChannelConfig(rate_bps=1e9, ber=1.0), random.Random(1))
    channel.send(bytes([0x00, 0xF0]), now=0.0)
    assert channel.deliveries(1.0) == [bytes([0xFF, 0x0F])]
    assert channel.stats.bits_flipped == 16


def test_burst_stays_inside_its_window() -> None:
    config = ChannelConfig(rate_bps=1e9, burst_probability=1.0, burst_length_bits=64)
    channel = Channel(config, random.Random(7))
    zeros = bytes(100)
    for i in range(50):
        channel.send(zeros, now=float(i))
    received = [unit for _, unit in drain(channel, 49.0)]
    assert channel.stats.bursts == 50
    assert channel.stats.bits_flipped == sum(popcount(u) for u in received)
    for unit in received:
        value = int.from_bytes(unit, "big")
        if value:
            span = value.bit_length() - (value & -value).bit_length() + 1
            assert span <= 64
    # Half the burst bits flip on average: 50 * 32 = 1600, sigma = sqrt(3200 / 4) = 28.3.
    assert abs(channel.stats.bits_flipped - 1600) <= 4.5 * 28.3


def test_burst_longer_than_unit_covers_it() -> None:
    config = ChannelConfig(rate_bps=1e9, burst_probability=1.0, burst_length_bits=10_000)
    channel = Channel(config, random.Random(3))
    channel.send(bytes(4), now=0.0)
    (unit,) = channel.deliveries(1.0)
    assert len(unit) == 4
    assert popcount(unit) == channel.stats.bits_flipped


# ---------------------------------------------------------------------------
# Loss, duplication, reordering: exact outcomes from scripted draws
# ---------------------------------------------------------------------------


def test_scripted_loss_duplicate_reorder() -> None:
    # Per unit the channel draws: loss, then (if kept) duplicate, then reorder
    # (only while nothing is held). p = 0.5 each: a draw below 0.5 means "yes".
    config = ChannelConfig(
        rate_bps=8.0,  # one octet per second
        loss_probability=0.5,
        duplicate_probability=0.5,
        reorder_probability=0.5,
        reorder_hold_s=10.0,
    )
    rng = ScriptedRandom(
        [
            0.9,
            0.9,
            0.1,  # A: kept, single, held back
            0.9,
            0.1,  # B: kept, duplicated (A is held: no reorder draw) -> B B A
            0.1,  # C: lost
            0.9,
            0.9,
            0.1,  # D: kept, single, held back
            0.1,  # E: lost -> D released where E would have arrived
            0.9,
            0.9,
            0.9,  # F: kept, single, in order
        ]
    )
    channel = Channel(config, rng)
    for unit in (b"A", b"B", b"C", b"D", b"E", b"F"):
        channel.send(unit, now=0.0)
    assert rng.values == []
    assert drain(channel) == [
        (2.0, b"B"),
        (2.0, b"B"),
        (2.0, b"A"),
        (5.0, b"D"),
        (6.0, b"F"),
    ]
    assert channel.stats == ChannelStats(
        units_sent=6,
        bits_sent=48,
        units_delivered=5,
        units_lost=2,
        units_duplicated=1,
        units_reordered=2,
    )


def test_held_unit_with_no_successor_arrives_at_its_deadline() -> None:
    config = ChannelConfig(rate_bps=8.0, reorder_probability=0.5, reorder_hold_s=0.5)
    channel = Channel(config, ScriptedRandom([0.1, 0.9]))
    channel.send(b"A", now=0.0)  # arrives 1.0, held until 1.5
    assert channel.in_flight == 1
    assert channel.get_timer() == 1.5
    assert channel.deliveries(1.4) == []
    assert channel.deliveries(1.5) == [b"A"]
    channel.send(b"B", now=2.0)  # in order
    assert drain(channel, 2.0) == [(3.0, b"B")]
    assert channel.stats.units_reordered == 1


def test_successor_after_deadline_does_not_overtake() -> None:
    config = ChannelConfig(rate_bps=8.0, reorder_probability=0.5, reorder_hold_s=0.5)
    channel = Channel(config, ScriptedRandom([0.1, 0.9]))
    channel.send(b"A", now=0.0)  # held, deadline 1.5
    channel.send(b"B", now=5.0)  # arrives 6.0 > 1.5: A goes alone at 1.5
    assert channel.get_timer() == 1.5  # already due when B was sent
    assert drain(channel, 5.0) == [(1.5, b"A"), (6.0, b"B")]


def test_duplicated_and_held_unit_keeps_both_copies() -> None:
    config = ChannelConfig(rate_bps=8.0, duplicate_probability=0.5, reorder_probability=0.5)
    channel = Channel(config, ScriptedRandom([0.1, 0.1, 0.9]))
    channel.send(b"A", now=0.0)
    assert channel.in_flight == 2
    channel.send(b"B", now=0.0)
    assert drain(channel) == [(2.0, b"B"), (2.0, b"A"), (2.0, b"A")]


def test_seeded_loss_and_duplicates_match_the_documented_draw_order() -> None:
    # Oracle: replay the documented draws (loss, then duplicate when kept) on the same seed.
    seed, n = 99, 2000
    config = ChannelConfig(rate_bps=8e6, loss_probability=0.2, duplicate_probability=0.1)
    oracle, expected = random.Random(seed), []
    for i in range(n):
        if oracle.random() < 0.2:
            continue
        expected.extend([i] * (2 if oracle.random() < 0.1 else 1))
    channel = Channel(config, random.Random(seed))
    for i in range(n):
        channel.send(i.to_bytes(2, "big"), now=0.0)
    got = [int.from_bytes(unit, "big") for _, unit in drain(channel)]
    assert got == expected
    stats = channel.stats
    assert stats.units_lost == n - len(set(expected))
    assert stats.units_duplicated == len(expected) - len(set(expected))
    assert stats.units_delivered == len(expected)


def test_same_seed_same_run_other_seed_other_run() -> None:
    config = ChannelConfig(
        rate_bps=64_000.0,
        delay_s=0.003,
        ber=1e-4,
        burst_probability=0.05,
        burst_length_bits=200,
        loss_probability=0.05,
        duplicate_probability=0.05,
        reorder_probability=0.05,
        outages=(Outage(1.0, 0.5),),
    )

    def run(seed: int) -> tuple[list[tuple[float, bytes]], ChannelStats]:
        channel = Channel(config, random.Random(seed))
        source = random.Random(0)
        for i in range(400):
            channel.send(source.randbytes(40), now=i * 0.01)
        return drain(channel, 3.99), channel.stats

    first, second, other = run(5), run(5), run(6)
    assert first == second
    assert first != other
    delivered, stats = first
    assert stats.units_sent == 400
    assert stats.units_lost_outage == 50  # units on the air in [1.0, 1.5), 10 ms apart
    assert stats.units_delivered == len(delivered)
    assert stats.units_delivered == (
        400 - stats.units_lost - stats.units_lost_outage + stats.units_duplicated
    )
    assert min(stats.units_lost, stats.units_duplicated, stats.units_reordered) > 0
    assert stats.bursts > 0 and stats.bits_flipped > 0


# ---------------------------------------------------------------------------
# Outages
# ---------------------------------------------------------------------------


def test_outage_drops_exactly_the_overlapping_units() -> None:
    # One octet per second: unit i is on the air [i, i+1).
    # Outage [2.5, 3.5) overlaps units 2 and 3; outage [6, 7) overlaps only unit 6
    # (unit 5 ends at 6 and unit 7 starts at 7: touching is not overlapping).
    config = ChannelConfig(rate_bps=8.0, outages=(Outage(2.5, 1.0), Outage(6.0, 1.0)))
    channel = Channel(config, random.Random(1))
    for i in range(9):
        channel.send(bytes([i]), now=0.0)
    assert [unit[0] for _, unit in drain(channel)] == [0, 1, 4, 5, 7, 8]
    assert channel.stats.units_lost_outage == 3
    assert channel.stats.units_delivered == 6


def test_outage_uses_transmission_time_not_send_time() -> None:
    # Sent at 0 but queued behind a 4 s unit: it is on the air [4, 5), inside the outage.
    config = ChannelConfig(rate_bps=8.0, outages=(Outage(4.5, 0.1),))
    channel = Channel(config, random.Random(1))
    channel.send(b"long", now=0.0)
    channel.send(b"x", now=0.0)
    assert drain(channel) == [(4.0, b"long")]
    assert channel.stats.units_lost_outage == 1


# ---------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------


def test_profiles() -> None:
    assert set(PROFILE_NAMES) >= {"ideal", "uhf", "s-band"}
    delay = one_way_delay_s(500e3, 30)
    uhf = link_profile("uhf")
    assert (uhf.uplink.rate_bps, uhf.downlink.rate_bps) == (9_600.0, 9_600.0)
    sband = link_profile("s-band")
    assert (sband.uplink.rate_bps, sband.downlink.rate_bps) == (64_000.0, 2_000_000.0)
    for profile in (uhf, sband):
        for config in (profile.uplink, profile.downlink):
            assert config.delay_s == delay
            assert config.ber == DEFAULT_RAW_BER
    ideal = link_profile("ideal")
    assert ideal.downlink.ber == 0 and ideal.downlink.delay_s == 0
    assert link_profile("uhf", elevation_deg=90).uplink.delay_s == one_way_delay_s(500e3, 90)
    with pytest.raises(LocalProtocolError, match="x-band"):
        link_profile("x-band")


def test_s_band_downlink_frame_timing() -> None:
    # A 1279-octet CADU (1115-octet frame + 5 x 32 R-S check octets + 4-octet ASM) at 2 Mbit/s.
    config = replace(link_profile("s-band").downlink, ber=0.0)
    channel = Channel(config, random.Random(1))
    channel.send(bytes(1279), now=10.0)
    expected = 10.0 + 1279 * 8 / 2e6 + one_way_delay_s(500e3, 30)
    assert channel.get_timer() == expected
    assert channel.deliveries(expected) == [bytes(1279)]


def test_ideal_profile_is_transparent() -> None:
    profile = link_profile("ideal")
    channel = Channel(profile.uplink, random.Random(1))
    units = [random.Random(i).randbytes(100) for i in range(100)]
    for unit in units:
        channel.send(unit, now=0.0)
    assert [u for _, u in drain(channel)] == units
    assert channel.stats.bits_flipped == 0
