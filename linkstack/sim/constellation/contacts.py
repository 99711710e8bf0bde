"""The contact plan: passes of every satellite over every station, and the windows of
the inter-satellite links.

Passes are found the way skyfield's ``find_events`` finds them, vectorized over the
whole constellation: the elevation of every satellite from every station on a time grid
(one SGP4 call for all satellites and times), the grid intervals where it crosses the
station's mask (and, for passes shorter than the grid step, the grid's local maxima just
below it), then the crossings refined by regula falsi (the Illinois variant) and the
culmination by golden-section search, all events of a satellite in one SGP4 call per
iteration.  Elevation is geodetic (WGS84 zenith), without refraction, as skyfield's
``altaz()`` gives it.

Per pass, the slant range at any time gives the one-way light time ``range / c`` and
the Doppler shift ``-f_c range' / c`` of a carrier ``f_c`` (positive while the
satellite approaches), the figures the radio layer's channel takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import SPEED_OF_LIGHT_M_S, SampledPass
from linkstack.sim.constellation.orbits import Satellite, Window, ecef_km, ecef_one_km
from linkstack.sim.constellation.stations import GroundStation

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Default grid step of the pass search, s: a tenth of a 550 km pass above 10 deg.
DEFAULT_STEP_S: Final = 30.0
#: Crossings and culminations refined to this, s.
DEFAULT_TOLERANCE_S: Final = 0.01
#: A grid maximum this close below the mask (in sine of elevation) is searched for a
#: pass shorter than the grid step.
PEAK_MARGIN: Final = 0.15
#: Illinois iterations: the crossing is converged to far below a millisecond by then.
_ILLINOIS_ITERATIONS: Final = 14
_GOLDEN: Final = (math.sqrt(5) - 1) / 2
#: Lines of sight between satellites must clear the Earth by this, km (the dense
#: atmosphere; an optical link's usual grazing height).
DEFAULT_GRAZING_KM: Final = 80.0
EARTH_MEAN_RADIUS_KM: Final = 6371.0
SPEED_OF_LIGHT_KM_S: Final = SPEED_OF_LIGHT_M_S / 1000.0


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass of a satellite over a station, times in seconds from the window start."""

    station: str
    satellite: str
    sat_index: int
    station_index: int
    rise_s: float
    culmination_s: float
    set_s: float
    max_elevation_deg: float
    #: The pass was in progress at the window's start / still at its end: rise_s or
    #: set_s is the window's edge, not a crossing.
    clipped_rise: bool = False
    clipped_set: bool = False

    @property
    def duration_s(self) -> float:
        return self.set_s - self.rise_s


class Geometry:
    """Satellites, stations and window: elevation, range and their derivatives at any
    (satellite, station, time), vectorized."""

    def __init__(
        self, sats: Sequence[Satellite], stations: Sequence[GroundStation], window: Window
    ) -> None:
        if not sats:
            raise LocalProtocolError("no satellites")
        self.sats = list(sats)
        self.stations = list(stations)
        self.window = window
        self.station_km = np.array([s.ecef_km() for s in stations]).reshape(-1, 3)
        self.up = np.array([s.up() for s in stations]).reshape(-1, 3)
        self.sin_mask = np.sin(np.radians([s.min_elevation_deg for s in stations]))

    def positions(self, sat_idx: I64, times: F64) -> F64:
        """Earth-fixed km of satellite ``sat_idx[k]`` at ``times[k]``, shape (n, 3)."""
        out = np.empty((len(times), 3))
        if len(times) == 0:
            return out
        order = np.argsort(sat_idx, kind="stable")
        sorted_sats = sat_idx[order]
        bounds = np.flatnonzero(np.diff(sorted_sats)) + 1
        for chunk in np.split(order, bounds):
            sat = self.sats[int(sat_idx[chunk[0]])]
            out[chunk] = ecef_one_km(sat, self.window, times[chunk])
        return out

    def slant_km(self, sat_idx: I64, st_idx: I64, times: F64) -> F64:
        d = self.positions(sat_idx, times) - self.station_km[st_idx]
        return np.asarray(np.linalg.norm(d, axis=-1), dtype=np.float64)

    def margin(self, sat_idx: I64, st_idx: I64, times: F64) -> F64:
        """sin(elevation) - sin(mask): >= 0 while the satellite is in view."""
        d = self.positions(sat_idx, times) - self.station_km[st_idx]
        rng = np.linalg.norm(d, axis=-1)
        value = np.einsum("ij,ij->i", d, self.up[st_idx]) / rng - self.sin_mask[st_idx]
        return np.asarray(np.nan_to_num(value, nan=-2.0), dtype=np.float64)


def _crossings(geo: Geometry, sat: I64, st: I64, lo: F64, hi: F64) -> F64:
    """Where the margin crosses zero in each [lo, hi] (sign change assumed): Illinois."""
    f_lo = geo.margin(sat, st, lo)
    f_hi = geo.margin(sat, st, hi)
    lo, hi = lo.copy(), hi.copy()
    side = np.zeros(len(lo), dtype=np.int8)
    mid = (lo + hi) / 2
    for _ in range(_ILLINOIS_ITERATIONS):
        denominator = f_hi - f_lo
        safe = np.where(denominator == 0, 1.0, denominator)
        mid = np.where(denominator == 0, (lo + hi) / 2, (lo * f_hi - hi * f_lo) / safe)
        mid = np.clip(mid, lo, hi)
        f_mid = geo.margin(sat, st, mid)
        same_as_lo = np.sign(f_mid) == np.sign(f_lo)
        # Illinois: halve the kept end's value when the same end is kept twice.
        lo = np.where(same_as_lo, mid, lo)
        f_lo_new = np.where(same_as_lo, f_mid, f_lo)
        hi = np.where(same_as_lo, hi, mid)
        f_hi_new = np.where(same_as_lo, f_hi, f_mid)
        f_hi_new = np.where(same_as_lo & (side == 1), f_hi_new / 2, f_hi_new)
        f_lo_new = np.where(~same_as_lo & (side == -1), f_lo_new / 2, f_lo_new)
        side = np.where(same_as_lo, 1, -1).astype(np.int8)
        f_lo, f_hi = f_lo_new, f_hi_new
    return np.asarray(mid, dtype=np.float64)


def _maxima(
    geo: Geometry, sat: I64, st: I64, lo: F64, hi: F64, *, tolerance_s: float
) -> tuple[F64, F64]:
    """Golden-section search of the margin's maximum in each [lo, hi]: (time, margin)."""
    a, b = lo.copy(), hi.copy()
    if len(a) == 0:
        return a, a
    width = float(np.max(b - a))
    steps = max(1, math.ceil(math.log(max(width, tolerance_s) / tolerance_s) / -math.log(_GOLDEN)))
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    f_c = geo.margin(sat, st, c)
    f_d = geo.margin(sat, st, d)
    for _ in range(steps):
        left = f_c >= f_d  # the maximum lies in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new_c = np.where(left, b - _GOLDEN * (b - a), d)
        new_d = np.where(left, c, a + _GOLDEN * (b - a))
        probe = np.where(left, new_c, new_d)
        f_probe = geo.margin(sat, st, probe)
        f_c, f_d = np.where(left, f_probe, f_d), np.where(left, f_c, f_probe)
        c, d = new_c, new_d
    t = (a + b) / 2
    return t, geo.margin(sat, st, t)


def find_passes(
    geo: Geometry,
    *,
    step_s: float = DEFAULT_STEP_S,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> list[Pass]:
    """Every pass of every satellite over every station in the window, by rise time."""
    if not (math.isfinite(step_s) and step_s > 0):
        raise LocalProtocolError(f"grid step {step_s} s must be positive")
    duration = geo.window.duration_s
    times = np.append(np.arange(0.0, duration, step_s), duration)
    pos = ecef_km(geo.sats, geo.window, times)
    n_sat, n_t = pos.shape[0], pos.shape[1]
    rises: list[tuple[I64, I64, F64, F64]] = []  # (sat, station, lo, hi) brackets
    sets: list[tuple[I64, I64, F64, F64]] = []
    clipped: list[tuple[I64, I64, F64, int]] = []  # edge events: kind 0 rise, 2 set
    peaks: list[tuple[I64, I64, F64, F64]] = []
    for j in range(len(geo.stations)):
        d = pos - geo.station_km[j]
        rng = np.linalg.norm(d, axis=-1)
        f = np.nan_to_num(d @ geo.up[j] / rng - geo.sin_mask[j], nan=-2.0)
        above = f >= 0
        st_all = np.full(n_sat, j)
        s_r, k_r = np.nonzero(~above[:, :-1] & above[:, 1:])
        rises.append((s_r, st_all[s_r], times[k_r], times[k_r + 1]))
        s_s, k_s = np.nonzero(above[:, :-1] & ~above[:, 1:])
        sets.append((s_s, st_all[s_s], times[k_s], times[k_s + 1]))
        first = np.flatnonzero(above[:, 0])
        clipped.append((first, st_all[first], np.zeros(len(first)), 0))
        last = np.flatnonzero(above[:, -1])
        clipped.append((last, st_all[last], np.full(len(last), duration), 2))
        if n_t >= 3:
            mid = f[:, 1:-1]
            is_peak = (mid > f[:, :-2]) & (mid >= f[:, 2:]) & (mid < 0) & (mid > -PEAK_MARGIN)
            s_p, k_p = np.nonzero(is_peak)
            peaks.append((s_p, st_all[s_p], times[k_p], times[k_p + 2]))
    # Passes shorter than the grid step: a maximum above the mask between two samples.
    p_sat, p_st, p_lo, p_hi = (
        (np.concatenate(x) for x in zip(*peaks, strict=True))
        if peaks
        else (
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0),
            np.zeros(0),
        )
    )
    t_peak, f_peak = _maxima(geo, p_sat, p_st, p_lo, p_hi, tolerance_s=tolerance_s)
    up = f_peak >= 0
    rises.append((p_sat[up], p_st[up], p_lo[up], t_peak[up]))
    sets.append((p_sat[up], p_st[up], t_peak[up], p_hi[up]))

    def refine(brackets: list[tuple[I64, I64, F64, F64]]) -> tuple[I64, I64, F64]:
        sat, st, lo, hi = (np.concatenate(x) for x in zip(*brackets, strict=True))
        return sat.astype(np.int64), st.astype(np.int64), _crossings(geo, sat, st, lo, hi)

    r_sat, r_st, r_t = refine(rises)
    s_sat, s_st, s_t = refine(sets)
    c_sat = np.concatenate([c[0] for c in clipped]).astype(np.int64)
    c_st = np.concatenate([c[1] for c in clipped]).astype(np.int64)
    c_t = np.concatenate([c[2] for c in clipped])
    c_kind = np.concatenate([np.full(len(c[0]), c[3]) for c in clipped])
    sat = np.concatenate([r_sat, s_sat, c_sat])
    st = np.concatenate([r_st, s_st, c_st])
    t = np.concatenate([r_t, s_t, c_t])
    kind = np.concatenate([np.zeros(len(r_t)), np.full(len(s_t), 2), c_kind]).astype(np.int64)
    edge = np.concatenate([np.zeros(len(r_t) + len(s_t), bool), np.ones(len(c_t), bool)])
    order = np.lexsort((kind, t, st, sat))
    sat, st, t, kind, edge = sat[order], st[order], t[order], kind[order], edge[order]
    # Pair each rise with the set that follows it (same satellite and station).
    pair = (kind[:-1] == 0) & (kind[1:] == 2) & (sat[:-1] == sat[1:]) & (st[:-1] == st[1:])
    k = np.flatnonzero(pair)
    if len(k) == 0:
        return []
    c_time, c_margin = _maxima(geo, sat[k], st[k], t[k], t[k + 1], tolerance_s=tolerance_s)
    sin_el = np.clip(c_margin + geo.sin_mask[st[k]], -1.0, 1.0)
    passes = [
        Pass(
            station=geo.stations[int(st[i])].name,
            satellite=geo.sats[int(sat[i])].name,
            sat_index=int(sat[i]),
            station_index=int(st[i]),
            rise_s=float(t[i]),
            culmination_s=float(c_time[n]),
            set_s=float(t[i + 1]),
            max_elevation_deg=math.degrees(math.asin(float(sin_el[n]))),
            clipped_rise=bool(edge[i]),
            clipped_set=bool(edge[i + 1]),
        )
        for n, i in enumerate(k)
    ]
    passes.sort(key=lambda p: (p.rise_s, p.station_index, p.sat_index))
    return passes


# -- per pass: range, light time, Doppler ---------------------------------------------------


def slant_range_km(geo: Geometry, p: Pass, times_s: F64) -> F64:
    times = np.asarray(times_s, dtype=np.float64)
    n = len(times)
    return geo.slant_km(
        np.full(n, p.sat_index, dtype=np.int64), np.full(n, p.station_index, dtype=np.int64), times
    )


def one_way_delay_s(geo: Geometry, p: Pass, times_s: F64) -> F64:
    """Light time station-satellite: range / c."""
    return slant_range_km(geo, p, times_s) / SPEED_OF_LIGHT_KM_S


#: Half-step of the central difference of the range, s.
_RATE_STEP_S: Final = 0.5


def range_rate_km_s(geo: Geometry, p: Pass, times_s: F64) -> F64:
    times = np.asarray(times_s, dtype=np.float64)
    ahead = slant_range_km(geo, p, times + _RATE_STEP_S)
    behind = slant_range_km(geo, p, times - _RATE_STEP_S)
    return (ahead - behind) / (2 * _RATE_STEP_S)


def doppler_hz(geo: Geometry, p: Pass, times_s: F64, *, carrier_hz: float) -> F64:
    """The received carrier's offset: ``-f_c range' / c`` (positive while approaching)."""
    return -carrier_hz * range_rate_km_s(geo, p, times_s) / SPEED_OF_LIGHT_KM_S


#: Half-step of the central difference that gives a sampled pass its range rates, s
#: (error about h^2 / 6 of the range's third derivative: well under 1 mm/s).
_SAMPLE_RATE_STEP_S: Final = 0.05
#: Default spacing of a sampled pass's samples, s.
DEFAULT_PROFILE_STEP_S: Final = 1.0


def sampled_pass(
    geo: Geometry,
    p: Pass,
    *,
    carrier_hz: float,
    start_s: float | None = None,
    end_s: float | None = None,
    step_s: float = DEFAULT_PROFILE_STEP_S,
) -> SampledPass:
    """The pass (from ``start_s`` to ``end_s``, default rise to set) as the radio
    layer's :class:`~linkstack.radio.channel.SampledPass`: slant range and range rate
    every ``step_s`` on the window's time axis, for ``PassChannel`` to apply (delay,
    Doppler, the symbol clock's Doppler)."""
    begin = p.rise_s if start_s is None else start_s
    end = p.set_s if end_s is None else end_s
    if not (math.isfinite(step_s) and step_s > 0):
        raise LocalProtocolError(f"profile step {step_s} s must be positive")
    if not (math.isfinite(begin) and math.isfinite(end) and begin < end):
        raise LocalProtocolError(f"profile [{begin}, {end}] s is not an interval")
    if begin < p.rise_s or end > p.set_s:
        raise LocalProtocolError(
            f"profile [{begin}, {end}] s is outside the pass of {p.satellite} over"
            f" {p.station}, [{p.rise_s:.3f}, {p.set_s:.3f}] s"
        )
    times = np.linspace(begin, end, max(2, math.ceil((end - begin) / step_s) + 1))
    ranges = slant_range_km(geo, p, times) * 1e3
    ahead = slant_range_km(geo, p, times + _SAMPLE_RATE_STEP_S)
    behind = slant_range_km(geo, p, times - _SAMPLE_RATE_STEP_S)
    rates = (ahead - behind) * 1e3 / (2 * _SAMPLE_RATE_STEP_S)
    return SampledPass(
        carrier_hz=carrier_hz,
        times_s=tuple(float(t) for t in times),
        ranges_m=tuple(float(r) for r in ranges),
        range_rates_m_s=tuple(float(r) for r in rates),
    )


# -- inter-satellite links --------------------------------------------------------------------

Topology = Literal["none", "plane", "grid"]
TOPOLOGIES: Final[tuple[Topology, ...]] = ("none", "plane", "grid")


@dataclass(frozen=True, slots=True)
class IslWindow:
    """Satellites ``a`` and ``b`` can talk from ``start_s`` to ``end_s``."""

    a: int
    b: int
    start_s: float
    end_s: float
    #: The longest range in the window, km (its light time is the link's delay).
    max_range_km: float


def isl_pairs(sats: Sequence[Satellite], topology: Topology) -> list[tuple[int, int]]:
    """Neighbours: "plane" the satellites before and after in the plane, "grid" those
    and the same slot in the planes on either side (the "+grid" of LEO constellations)."""
    if topology not in TOPOLOGIES:
        raise LocalProtocolError(f"ISL topology {topology!r} is not one of {TOPOLOGIES}")
    if topology == "none":
        return []
    index = {(s.plane, s.slot): i for i, s in enumerate(sats)}
    planes = max(s.plane for s in sats) + 1
    per_plane: dict[int, int] = {}
    for s in sats:
        per_plane[s.plane] = max(per_plane.get(s.plane, 0), s.slot + 1)
    pairs: set[tuple[int, int]] = set()
    for i, s in enumerate(sats):
        size = per_plane[s.plane]
        if size > 1:
            j = index.get((s.plane, (s.slot + 1) % size))
            if j is not None and j != i:
                pairs.add((min(i, j), max(i, j)))
        if topology == "grid" and planes > 1:
            j = index.get(((s.plane + 1) % planes, s.slot))
            if j is not None and j != i:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def isl_windows(
    geo: Geometry,
    pairs: Sequence[tuple[int, int]],
    *,
    max_range_km: float,
    step_s: float = DEFAULT_STEP_S,
    grazing_km: float = DEFAULT_GRAZING_KM,
    chunk: int = 512,
) -> list[IslWindow]:
    """When each pair is within ``max_range_km`` and its line of sight clears the
    Earth (a sphere ``grazing_km`` above the mean radius): windows on the grid, from
    the first sample in reach to the last (resolution ``step_s``)."""
    if not pairs:
        return []
    duration = geo.window.duration_s
    times = np.append(np.arange(0.0, duration, step_s), duration)
    pos = ecef_km(geo.sats, geo.window, times)
    limit = EARTH_MEAN_RADIUS_KM + grazing_km
    out: list[IslWindow] = []
    pair_arr = np.asarray(pairs, dtype=np.int64)
    for begin in range(0, len(pair_arr), chunk):
        part = pair_arr[begin : begin + chunk]
        a, b = pos[part[:, 0]], pos[part[:, 1]]
        ab = b - a
        rng = np.linalg.norm(ab, axis=-1)
        along = np.clip(-np.einsum("ptk,ptk->pt", a, ab) / np.maximum(rng**2, 1e-9), 0, 1)
        closest = np.linalg.norm(a + along[..., None] * ab, axis=-1)
        ok = np.nan_to_num((rng <= max_range_km) & (closest >= limit), nan=0).astype(bool)
        padded = np.pad(ok, ((0, 0), (1, 1)))
        change = np.diff(padded.astype(np.int8), axis=1)
        starts = np.nonzero(change == 1)
        ends = np.nonzero(change == -1)
        for (p, k0), k1 in zip(zip(*starts, strict=True), ends[1], strict=True):
            out.append(
                IslWindow(
                    int(part[p, 0]),
                    int(part[p, 1]),
                    float(times[k0]),
                    float(times[k1 - 1]),
                    float(np.max(rng[p, k0:k1])),
                )
            )
    return out
