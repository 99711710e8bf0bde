"""Seeded, sans-I/O simulator of one direction of a space link.

A :class:`Channel` takes transmission units (CADUs, CLTUs, or any bytes) with
``send(unit, now)`` and hands them back, impaired, from ``deliveries(now)`` once
their arrival time has come; ``get_timer()`` says when the next one arrives.
Time is always the caller's ``now``; randomness comes from the ``random.Random``
passed in, so a seed fixes every outcome.  One instance per direction.

What happens to a unit, in this order (the order of the random draws too):

1. serialization: it starts when the transmitter is free (``max(now, busy_until)``)
   and occupies ``8 * len(unit) / rate_bps`` seconds; it arrives ``delay_s`` after
   its last bit leaves (or the ``delay_profile``'s delay then: a pass's range / c);
2. outage: a unit whose transmission interval ``[start, end)`` overlaps an outage
   window ``[start, start + duration)`` is lost (no draw);
3. loss: lost with ``loss_probability`` (one draw);
4. random bit errors at ``ber``, independent over the stream of bits of the units
   that survive loss: the gap to the next error is drawn geometrically, so the cost
   is per error, not per bit;
5. burst: with ``burst_probability`` (one draw) a burst of ``burst_length_bits``
   starts at a uniform bit offset (clipped to the unit) and replaces those bits by
   random ones, so each flips with probability 1/2;
6. duplication: with ``duplicate_probability`` (one draw) an identical copy arrives
   right after the original;
7. reordering: with ``reorder_probability`` (one draw, made only when no unit was
   held at the time of this ``send``) the unit is held back and delivered right
   behind the next unit sent, at that unit's arrival time (even if that unit is
   lost); if the next unit would arrive later than ``reorder_hold_s`` after the held
   unit's own arrival time, the held unit arrives at that deadline instead, alone.

A draw is made only when its probability is non-zero.  ``get_timer()`` may return a
time before the caller's clock (a unit that fell due during a ``send``): deliver it
at once.

A TM downlink can instead run over the concatenated code's inner code
(``coding="conv"``, :mod:`linkstack.radio.coded`): each unit, a CADU, is
convolutionally encoded as one continuous stream when sent, carried as coded bits
through steps 1 to 3, 6 and 7 (its time on the air still counts the CADU's own bits:
``rate_bps`` is the information rate, symbols go at twice it), and on arrival becomes
BPSK soft symbols with white Gaussian noise at ``ebn0_db``, the session's phase
ambiguity and ``slip_probability`` symbol slips; a soft-decision receiver turns them
back into re-aligned CADUs, which ``deliveries`` hands out (a CADU one unit late: the
Viterbi decoder's delay).  Its generator is seeded from ``rng`` at construction (one
draw), so its noise leaves the other draws where they are.  ``ber`` and bursts act on
the bits of an uncoded channel and are refused with ``coding="conv"``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol, get_args

from linkstack.errors import InvalidState, LocalProtocolError

if TYPE_CHECKING:
    from linkstack.coding.tm import TmCodingConfig
    from linkstack.radio.coded import CodedDownlink

#: Speed of light in vacuum, m/s (exact by the SI definition of the metre).
SPEED_OF_LIGHT_M_S: Final = 299_792_458.0
#: Mean Earth radius of the spherical model, m.
EARTH_RADIUS_M: Final = 6_371_000.0

#: What carries a unit's bits: as they are ("none"), or the convolutional code over
#: BPSK and white Gaussian noise ("conv", a TM downlink; linkstack.radio.coded).
Coding = Literal["none", "conv"]
CODINGS: Final[tuple[Coding, ...]] = get_args(Coding)


def slant_range_m(altitude_m: float, elevation_deg: float) -> float:
    """Ground station to satellite distance over a spherical Earth.

    ``sqrt((R + h)^2 - (R cos e)^2) - R sin e``: the law of cosines in the triangle
    Earth centre, station, satellite.  500 km at zenith gives 500 km; at the
    horizon, sqrt(6871^2 - 6371^2) = 2573 km.
    """
    if altitude_m < 0:
        raise LocalProtocolError(f"altitude {altitude_m} m is negative")
    if not 0 <= elevation_deg <= 90:
        raise LocalProtocolError(f"elevation {elevation_deg} deg outside 0..90")
    r, e = EARTH_RADIUS_M, math.radians(elevation_deg)
    return math.sqrt((r + altitude_m) ** 2 - (r * math.cos(e)) ** 2) - r * math.sin(e)


def one_way_delay_s(altitude_m: float, elevation_deg: float) -> float:
    """One-way light time over :func:`slant_range_m`."""
    return slant_range_m(altitude_m, elevation_deg) / SPEED_OF_LIGHT_M_S


#: The Earth's gravitational parameter GM, m^3/s^2 (IERS Conventions 2010, IERS
#: Technical Note 36, table 1.1).
EARTH_GM_M3_S2: Final = 3.986004418e14


@dataclass(frozen=True, slots=True, kw_only=True)
class LeoPass:
    """An overhead pass of a satellite in a circular orbit, for its Doppler.

    The station lies in the orbit's plane on a spherical Earth of radius
    ``EARTH_RADIUS_M`` that does not turn: the satellite culminates at the zenith at
    ``culmination_s`` and sweeps the angle ``theta = n (t - culmination_s)`` seen
    from the Earth's centre, at the mean motion ``n = sqrt(GM / r^3)``, ``r`` the
    orbit's radius (Kepler).  The slant range is the law of cosines in the triangle
    Earth centre, station, satellite, ``rho = sqrt(R^2 + r^2 - 2 R r cos theta)``; the
    carrier arrives with the phase ``-2 pi f_c rho / c`` and the offset
    ``-f_c rho' / c`` (positive while the satellite approaches).  The fastest change,
    at culmination, is ``-f_c R r n^2 / (c h)``.  The default, 2.2 GHz from 400 km
    (an S-band downlink from the altitude of the ISS): horizon to horizon in 610 s,
    +-53.0 kHz at the horizon, -1.02 kHz/s at culmination (from 500 km: 693 s,
    +-51.8 kHz, -0.79 kHz/s).  Time is an argument:
    nothing here reads a clock.
    """

    #: Carrier frequency, Hz (2.2 GHz: the 2200-2290 MHz band allocated to space
    #: research, space-to-Earth, by the ITU Radio Regulations, article 5).
    carrier_hz: float = 2.2e9
    #: Orbit altitude above the sphere, m.
    altitude_m: float = 400_000.0
    #: Time of culmination (zenith), s, on the caller's time axis.
    culmination_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.carrier_hz) and self.carrier_hz > 0):
            raise LocalProtocolError(f"carrier {self.carrier_hz!r} Hz is not a positive frequency")
        if not (math.isfinite(self.altitude_m) and 100e3 <= self.altitude_m <= 40_000e3):
            raise LocalProtocolError(
                f"altitude {self.altitude_m!r} m is outside 100 km .. 40000 km"
            )
        if not math.isfinite(self.culmination_s):
            raise LocalProtocolError(f"culmination time {self.culmination_s!r} s is not finite")

    @property
    def orbit_radius_m(self) -> float:
        return EARTH_RADIUS_M + self.altitude_m

    @property
    def mean_motion_rad_s(self) -> float:
        """n = sqrt(GM / r^3)."""
        return math.sqrt(EARTH_GM_M3_S2 / self.orbit_radius_m**3)

    @property
    def half_pass_s(self) -> float:
        """Culmination to the horizon (elevation 0), s."""
        return math.acos(EARTH_RADIUS_M / self.orbit_radius_m) / self.mean_motion_rad_s

    def range_m(self, t: float) -> float:
        """Slant range at time ``t``, m."""
        theta = self.mean_motion_rad_s * (t - self.culmination_s)
        r, big_r = self.orbit_radius_m, EARTH_RADIUS_M
        return math.sqrt(big_r * big_r + r * r - 2.0 * big_r * r * math.cos(theta))

    def range_rate_m_s(self, t: float) -> float:
        """d rho / dt = R r n sin(theta) / rho."""
        n = self.mean_motion_rad_s
        theta = n * (t - self.culmination_s)
        return EARTH_RADIUS_M * self.orbit_radius_m * n * math.sin(theta) / self.range_m(t)

    def doppler_hz(self, t: float) -> float:
        """The carrier's offset at time ``t``: ``-f_c rho' / c``."""
        return -self.carrier_hz * self.range_rate_m_s(t) / SPEED_OF_LIGHT_M_S

    def doppler_rate_hz_s(self, t: float) -> float:
        """d/dt of :meth:`doppler_hz`: ``-f_c rho'' / c``, with
        ``rho'' = (R r n^2 cos(theta) - rho'^2) / rho``."""
        n = self.mean_motion_rad_s
        theta = n * (t - self.culmination_s)
        rho = self.range_m(t)
        rate = self.range_rate_m_s(t)
        second = (
            EARTH_RADIUS_M * self.orbit_radius_m * n * n * math.cos(theta) - rate * rate
        ) / rho
        return -self.carrier_hz * second / SPEED_OF_LIGHT_M_S

    def elevation_deg(self, t: float) -> float:
        """Elevation above the station's horizon, degrees (negative below it)."""
        theta = self.mean_motion_rad_s * (t - self.culmination_s)
        r = self.orbit_radius_m
        return math.degrees(
            math.atan2(r * math.cos(theta) - EARTH_RADIUS_M, r * abs(math.sin(theta)))
        )


class PassGeometry(Protocol):
    """What a channel needs of a pass (:class:`LeoPass`, :class:`SampledPass`): the
    carrier and the slant range at any time of the pass's time axis."""

    @property
    def carrier_hz(self) -> float: ...

    def range_m(self, t: float) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SampledPass:
    """A pass given by its slant range and range rate at sample times (from an orbit
    propagator: ``linkstack.sim.constellation.contacts.sampled_pass``), for the same
    channel as :class:`LeoPass`.

    Between samples the range is the cubic Hermite interpolant of the ranges and
    rates, so range and Doppler are continuous; beyond the first and last sample it
    goes on along the end's rate.  The offset is ``-f_c rho' / c``.
    """

    carrier_hz: float
    #: Sample times, s (the caller's axis), increasing.
    times_s: tuple[float, ...]
    ranges_m: tuple[float, ...]
    range_rates_m_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.carrier_hz) and self.carrier_hz > 0):
            raise LocalProtocolError(f"carrier {self.carrier_hz!r} Hz is not a positive frequency")
        n = len(self.times_s)
        if n < 2 or len(self.ranges_m) != n or len(self.range_rates_m_s) != n:
            raise LocalProtocolError(
                f"{n} times, {len(self.ranges_m)} ranges, {len(self.range_rates_m_s)} rates:"
                " need at least two samples, as many of each"
            )
        values = (*self.times_s, *self.ranges_m, *self.range_rates_m_s)
        if not all(math.isfinite(v) for v in values):
            raise LocalProtocolError("a sampled pass's times, ranges and rates must be finite")
        if any(b <= a for a, b in itertools.pairwise(self.times_s)):
            raise LocalProtocolError("a sampled pass's times must increase")
        if min(self.ranges_m) <= 0:
            raise LocalProtocolError(f"range {min(self.ranges_m)} m is not positive")

    def _segment(self, t: float) -> tuple[int, float, float]:
        """(k, h, s): t lies in [times[k], times[k + 1]], h long, at fraction s."""
        times = self.times_s
        k = min(max(bisect.bisect_right(times, t) - 1, 0), len(times) - 2)
        h = times[k + 1] - times[k]
        return k, h, (t - times[k]) / h

    def range_m(self, t: float) -> float:
        times = self.times_s
        if t <= times[0]:
            return self.ranges_m[0] + self.range_rates_m_s[0] * (t - times[0])
        if t >= times[-1]:
            return self.ranges_m[-1] + self.range_rates_m_s[-1] * (t - times[-1])
        k, h, s = self._segment(t)
        p0, p1 = self.ranges_m[k], self.ranges_m[k + 1]
        m0, m1 = self.range_rates_m_s[k] * h, self.range_rates_m_s[k + 1] * h
        s2, s3 = s * s, s * s * s
        return (
            (2 * s3 - 3 * s2 + 1) * p0
            + (s3 - 2 * s2 + s) * m0
            + (-2 * s3 + 3 * s2) * p1
            + (s3 - s2) * m1
        )

    def range_rate_m_s(self, t: float) -> float:
        times = self.times_s
        if t <= times[0]:
            return self.range_rates_m_s[0]
        if t >= times[-1]:
            return self.range_rates_m_s[-1]
        k, h, s = self._segment(t)
        p0, p1 = self.ranges_m[k], self.ranges_m[k + 1]
        m0, m1 = self.range_rates_m_s[k] * h, self.range_rates_m_s[k + 1] * h
        s2 = s * s
        return (
            (6 * s2 - 6 * s) * p0
            + (3 * s2 - 4 * s + 1) * m0
            + (-6 * s2 + 6 * s) * p1
            + (3 * s2 - 2 * s) * m1
        ) / h

    def doppler_hz(self, t: float) -> float:
        """The carrier's offset at time ``t``: ``-f_c rho' / c``."""
        return -self.carrier_hz * self.range_rate_m_s(t) / SPEED_OF_LIGHT_M_S


@dataclass(frozen=True, slots=True)
class Outage:
    """The link carries nothing from ``start`` for ``duration`` seconds (sender time)."""

    start: float
    duration: float

    def __post_init__(self) -> None:
        if self.duration < 0:
            raise LocalProtocolError(f"outage duration {self.duration} s is negative")

    @property
    def end(self) -> float:
        return self.start + self.duration

    def overlaps(self, start: float, end: float) -> bool:
        """True when ``[start, end)`` and ``[self.start, self.end)`` share an instant."""
        return start < self.end and end > self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    """Impairments of one direction; see the module docstring for their order."""

    #: Bits per second on the air (coding="conv": information bits, symbols at twice it).
    rate_bps: float
    #: One-way propagation delay, seconds.
    delay_s: float = 0.0
    #: Raw bit error rate of independent errors.
    ber: float = 0.0
    #: Probability per unit of one error burst.
    burst_probability: float = 0.0
    #: Bits a burst covers.
    burst_length_bits: int = 0
    #: Probability per unit of losing it whole.
    loss_probability: float = 0.0
    #: Probability per unit of delivering it twice.
    duplicate_probability: float = 0.0
    #: Probability per unit of holding it back behind the next one.
    reorder_probability: float = 0.0
    #: Longest a held-back unit waits for a successor, seconds past its arrival time.
    reorder_hold_s: float = 1.0
    outages: tuple[Outage, ...] = ()
    #: "none", or "conv": CADUs over the convolutional code (see the module docstring).
    coding: Coding = "none"
    #: coding="conv": Eb/N0 per information bit, dB; None gives noise-free symbols.
    ebn0_db: float | None = None
    #: coding="conv": probability per unit that one symbol is dropped or inserted.
    slip_probability: float = 0.0
    #: A delay that changes (a pass's slant range / c): (sender time s, one-way delay
    #: s) points, times increasing; a unit's delay is read at the end of its
    #: transmission, linear between points, held at the first and last beyond them.
    #: Empty: ``delay_s`` throughout.
    delay_profile: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.rate_bps > 0:
            raise LocalProtocolError(f"rate_bps {self.rate_bps} is not positive")
        if not self.delay_s >= 0:
            raise LocalProtocolError(f"delay_s {self.delay_s} is negative")
        self._check_delay_profile()
        if not self.reorder_hold_s >= 0:
            raise LocalProtocolError(f"reorder_hold_s {self.reorder_hold_s} is negative")
        for name in (
            "ber",
            "burst_probability",
            "loss_probability",
            "duplicate_probability",
            "reorder_probability",
            "slip_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise LocalProtocolError(f"{name} {value} outside 0..1")
        if self.burst_probability > 0 and self.burst_length_bits < 1:
            raise LocalProtocolError(
                f"burst_length_bits {self.burst_length_bits} must be >= 1 "
                f"when burst_probability is {self.burst_probability}"
            )
        self._check_coding()

    def _check_delay_profile(self) -> None:
        points = self.delay_profile
        for at, delay in points:
            if not (math.isfinite(at) and math.isfinite(delay) and delay >= 0):
                raise LocalProtocolError(
                    f"delay_profile point ({at}, {delay}): time and delay must be finite,"
                    " the delay >= 0"
                )
        for (t0, d0), (t1, d1) in itertools.pairwise(points):
            # Arrival times must keep the order of sending: the delay may not shrink
            # as fast as time passes (a range rate below c does not).
            if not (t1 > t0 and d1 - d0 > -(t1 - t0)):
                raise LocalProtocolError(
                    f"delay_profile points ({t0}, {d0}) then ({t1}, {d1}): times must"
                    " increase and the delay fall slower than time passes"
                )

    def delay_at(self, at: float) -> float:
        """The one-way delay of a unit whose last bit leaves at ``at``."""
        points = self.delay_profile
        if not points:
            return self.delay_s
        k = bisect.bisect_right(points, at, key=lambda point: point[0])
        if k == 0:
            return points[0][1]
        if k == len(points):
            return points[-1][1]
        (t0, d0), (t1, d1) = points[k - 1], points[k]
        return d0 + (d1 - d0) * (at - t0) / (t1 - t0)

    def _check_coding(self) -> None:
        if self.coding not in CODINGS:
            raise LocalProtocolError(f"coding {self.coding!r} is not one of {', '.join(CODINGS)}")
        if self.ebn0_db is not None and not math.isfinite(self.ebn0_db):
            raise LocalProtocolError(f"ebn0_db {self.ebn0_db} is not a finite number of dB")
        if self.coding == "none":
            if self.ebn0_db is not None or self.slip_probability > 0:
                raise LocalProtocolError(
                    f"ebn0_db {self.ebn0_db} and slip_probability {self.slip_probability}"
                    " need coding='conv' (an uncoded channel has ber)"
                )
        elif self.ber > 0 or self.burst_probability > 0:
            raise LocalProtocolError(
                f"ber {self.ber} and burst_probability {self.burst_probability} act on an"
                " uncoded channel's bits: with coding='conv' the noise is ebn0_db"
            )


@dataclass(slots=True)
class ChannelStats:
    """What the channel did, counted since it was created."""

    units_sent: int = 0
    bits_sent: int = 0
    #: Copies handed out by ``deliveries``, duplicates included (coding="conv": CADUs).
    units_delivered: int = 0
    #: Lost to ``loss_probability``.
    units_lost: int = 0
    #: Lost because their transmission overlapped an outage.
    units_lost_outage: int = 0
    units_duplicated: int = 0
    units_reordered: int = 0
    #: Units with at least one bit flipped.
    units_corrupted: int = 0
    #: Flips applied (random errors plus burst bits that changed).
    bits_flipped: int = 0
    bursts: int = 0


@dataclass(slots=True)
class _Held:
    unit: bytes
    copies: int
    deadline: float


class Channel:
    """One direction of a link: ``send`` in, ``deliveries`` out, ``get_timer`` between."""

    __slots__ = (
        "_busy_until",
        "_error_gap",
        "_held",
        "_now",
        "_queue",
        "_seq",
        "coded",
        "config",
        "rng",
        "stats",
    )

    def __init__(
        self,
        config: ChannelConfig,
        rng: random.Random,
        *,
        tm_coding: TmCodingConfig | None = None,
    ) -> None:
        """``tm_coding``: the link's TM coding, whose CADUs a coded channel carries
        (default ``TmCodingConfig()``); unused by an uncoded one."""
        self.config = config
        self.rng = rng
        self.stats = ChannelStats()
        #: The coded stage (coding="conv"): transmitter, noise and receiver; else None.
        self.coded: CodedDownlink | None = None
        if config.coding == "conv":
            self.coded = _coded_stage(config, rng, tm_coding)
        #: (arrival time, tie-breaking sequence, unit), a heap.
        self._queue: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._busy_until = -math.inf
        self._now = -math.inf
        #: Error-free bits left before the next random error; None until first drawn.
        self._error_gap: int | None = None
        self._held: _Held | None = None

    @property
    def in_flight(self) -> int:
        """Copies sent and not yet delivered, a held-back unit included."""
        return len(self._queue) + (self._held.copies if self._held is not None else 0)

    def send(self, unit: bytes, now: float) -> None:
        """Put ``unit`` on the air at ``now`` (or when the transmitter frees up)."""
        self._advance(now)
        if not unit:
            raise LocalProtocolError("cannot send an empty unit")
        cfg, stats = self.config, self.stats
        bits = 8 * len(unit)
        if self.coded is not None:  # the transmitter encodes all it sends
            unit = self.coded.transmit(unit)
        start = max(now, self._busy_until)
        end = start + bits / cfg.rate_bps
        self._busy_until = end
        arrival = end + cfg.delay_at(end)
        stats.units_sent += 1
        stats.bits_sent += bits

        held, self._held = self._held, None
        if held is not None and held.deadline < arrival:
            self._push(held.deadline, held.unit, held.copies)
            held = None

        if any(o.overlaps(start, end) for o in cfg.outages):
            stats.units_lost_outage += 1
        elif cfg.loss_probability > 0 and self.rng.random() < cfg.loss_probability:
            stats.units_lost += 1
        else:
            self._transmit(unit, arrival, may_hold=held is None)
        if held is not None:
            # Behind this unit, or where it would have been had it not been lost.
            self._push(arrival, held.unit, held.copies)

    def get_timer(self) -> float | None:
        """Arrival time of the next delivery, or None when nothing is in flight."""
        times = [self._queue[0][0]] if self._queue else []
        if self._held is not None:
            times.append(self._held.deadline)
        return min(times, default=None)

    def deliveries(self, now: float) -> list[bytes]:
        """Units whose arrival time is ``<= now``, in arrival order; removed from flight."""
        self._advance(now)
        if self._held is not None and self._held.deadline <= now:
            self._push(self._held.deadline, self._held.unit, self._held.copies)
            self._held = None
        out: list[bytes] = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        if self.coded is not None:  # coded bits in, re-aligned CADUs out
            out = [cadu for coded in out for cadu in self.coded.receive(coded)]
        self.stats.units_delivered += len(out)
        return out

    # -- internals ---------------------------------------------------------

    def _advance(self, now: float) -> None:
        if now < self._now:
            raise InvalidState(f"time went backwards: now {now} after {self._now}")
        self._now = now

    def _push(self, at: float, unit: bytes, copies: int = 1) -> None:
        for _ in range(copies):
            heapq.heappush(self._queue, (at, self._seq, unit))
            self._seq += 1

    def _transmit(self, unit: bytes, arrival: float, *, may_hold: bool) -> None:
        cfg, rng, stats = self.config, self.rng, self.stats
        received = self._random_errors(unit)
        if cfg.burst_probability > 0 and rng.random() < cfg.burst_probability:
            received = self._burst(received)
        if received != unit:
            stats.units_corrupted += 1
        copies = 1
        if cfg.duplicate_probability > 0 and rng.random() < cfg.duplicate_probability:
            stats.units_duplicated += 1
            copies = 2
        if may_hold and cfg.reorder_probability > 0 and rng.random() < cfg.reorder_probability:
            stats.units_reordered += 1
            self._held = _Held(received, copies, arrival + cfg.reorder_hold_s)
        else:
            self._push(arrival, received, copies)

    def _random_errors(self, unit: bytes) -> bytes:
        """``unit`` with bits flipped at the raw BER (the same object when none is hit)."""
        ber = self.config.ber
        if ber <= 0:
            return unit
        bits = 8 * len(unit)
        gap = self._error_gap if self._error_gap is not None else self._draw_gap(ber)
        if gap >= bits:
            self._error_gap = gap - bits
            return unit
        buf = bytearray(unit)
        while gap < bits:
            buf[gap >> 3] ^= 0x80 >> (gap & 7)
            self.stats.bits_flipped += 1
            gap += 1 + self._draw_gap(ber)
        self._error_gap = gap - bits
        return bytes(buf)

    def _draw_gap(self, ber: float) -> int:
        """Error-free bits before the next error: geometric, P(k) = (1 - ber)^k ber."""
        if ber >= 1:
            return 0
        return math.floor(math.log(1.0 - self.rng.random()) / math.log1p(-ber))

    def _burst(self, unit: bytes) -> bytes:
        self.stats.bursts += 1
        bits = 8 * len(unit)
        length = min(self.config.burst_length_bits, bits)
        offset = self.rng.randrange(bits - length + 1)
        mask = self.rng.getrandbits(length) << (bits - offset - length)
        self.stats.bits_flipped += mask.bit_count()
        value = int.from_bytes(unit, "big") ^ mask
        return value.to_bytes(len(unit), "big")


def _coded_stage(
    config: ChannelConfig, rng: random.Random, tm_coding: TmCodingConfig | None
) -> CodedDownlink:
    # Imported here: the Viterbi decoder brings numba, which an uncoded channel
    # (and every program that only names a profile) need not load.
    import numpy as np

    from linkstack.coding.tm import TmCodingConfig
    from linkstack.radio.coded import CodedDownlink

    return CodedDownlink(
        TmCodingConfig() if tm_coding is None else tm_coding,
        ebn0_db=config.ebn0_db,
        slip_probability=config.slip_probability,
        rng=np.random.default_rng(rng.getrandbits(64)),
    )


# ---------------------------------------------------------------------------
# Named profiles
# ---------------------------------------------------------------------------

#: Default geometry: a 500 km LEO seen at 30 deg elevation, 909 km slant, 3.03 ms one way
#: (slant_range_m / c over the 6371 km sphere: 1.67 ms at zenith, 5.7 ms at 10 deg, 8.6 ms
#: at 0 deg).
DEFAULT_ALTITUDE_M: Final = 500_000.0
DEFAULT_ELEVATION_DEG: Final = 30.0
#: Raw channel BER: the middle of the three (1e-4, 1e-5, 1e-6) for which CCSDS 200.0-G-6
#: (Telecommand Summary of Concept and Rationale) annex D tabulates TC performance
#: (codeblock rejection, table D-3); a design point, not a measured value.
DEFAULT_RAW_BER: Final = 1e-5

#: (uplink, downlink) bit rates per profile, bit/s.
_RATES: Final[dict[str, tuple[float, float]]] = {
    # No impairment, no delay: functional tests.
    "ideal": (1e9, 1e9),
    # 9.6 kbit/s both ways: UHF BPSK/GMSK (rftools.io CubeSat UHF link budget) and the
    # ISIS S-band transceiver's 9.6 kbit/s AX.25 uplink (isispace.nl/product/s-band-transceiver).
    "uhf": (9_600.0, 9_600.0),
    # 64 kbit/s up (an assumed upper end of small-satellite TC rates: no published figure
    # found), 2 Mbit/s down (below the 4.3 Mbit/s info rate of the ISIS S-band transceiver).
    "s-band": (64_000.0, 2_000_000.0),
}
PROFILE_NAMES: Final = tuple(_RATES)


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Channel settings for both directions of a named link."""

    name: str
    uplink: ChannelConfig
    downlink: ChannelConfig


def link_profile(
    name: str,
    *,
    altitude_m: float = DEFAULT_ALTITUDE_M,
    elevation_deg: float = DEFAULT_ELEVATION_DEG,
) -> LinkProfile:
    """The named profile; its delay comes from the geometry (``ideal`` has none).

    Add losses, bursts or outages with ``dataclasses.replace(profile.downlink, ...)``.
    """
    if name not in _RATES:
        raise LocalProtocolError(f"unknown link profile {name!r}; known: {PROFILE_NAMES}")
    up, down = _RATES[name]
    if name == "ideal":
        return LinkProfile(name, ChannelConfig(rate_bps=up), ChannelConfig(rate_bps=down))
    delay = one_way_delay_s(altitude_m, elevation_deg)
    return LinkProfile(
        name,
        ChannelConfig(rate_bps=up, delay_s=delay, ber=DEFAULT_RAW_BER),
        ChannelConfig(rate_bps=down, delay_s=delay, ber=DEFAULT_RAW_BER),
    )
