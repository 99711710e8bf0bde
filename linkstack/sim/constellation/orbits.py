"""Satellites: two-line element sets, a Walker-delta generator, vectorized SGP4.

Propagation is the ``sgp4`` package's C++ SGP4 (Vallado's, the one skyfield wraps),
over many satellites and times at once (``SatrecArray``).  Positions come out in TEME
and are turned Earth-fixed by the Greenwich mean sidereal angle of AIAA 2006-6753
appendix C (skyfield's ``theta_GMST1982``, on UT1), polar motion left out: the same
pseudo-Earth-fixed frame skyfield's ``find_events`` sees a satellite in.  Time on the
simulator's axis is seconds from the window's start (UTC).

A TLE file is checked line by line before SGP4 sees it: the line numbers, the length
(69 columns), the modulo-10 checksum of columns 1-68 (a minus sign counts 1) and the
catalogue number shared by both lines; elements older than ``max_age_days`` at the
window's start (or newer by as much) are refused as expired, because SGP4's error grows
by kilometres a day away from the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from sgp4.api import WGS72, Satrec, SatrecArray
from sgp4.exporter import export_tle

from linkstack.errors import LocalProtocolError

F64 = npt.NDArray[np.float64]

#: The Earth's gravitational parameter of WGS-72, km^3/s^2 (SGP4's own constants).
WGS72_MU_KM3_S2: Final = 398600.8
#: WGS-72 equatorial radius, km.
WGS72_RADIUS_KM: Final = 6378.135
SECONDS_PER_DAY: Final = 86_400.0
#: Julian date of the Unix epoch, 1970-01-01T00:00Z.
JD_UNIX_EPOCH: Final = 2_440_587.5
#: TLE line length, columns.
TLE_LINE_LENGTH: Final = 69
#: Default: elements more than this many days from the window's start are expired.
DEFAULT_MAX_AGE_DAYS: Final = 14.0
#: The shipped 12-satellite set (synthetic; see its header).
SHIPPED_TLE: Final = "constellation12.tle"


class TleError(LocalProtocolError):
    """A TLE file that cannot be used: the message names the file, the line and why."""


@dataclass(frozen=True, slots=True)
class Satellite:
    """One satellite: its name, SGP4 record and, where known, its plane and slot."""

    name: str
    satrec: Satrec
    #: Orbital plane (0..P-1) and position in it (0..S-1): the ISL topology's grid.
    plane: int
    slot: int

    @property
    def epoch(self) -> datetime:
        return jd_to_datetime(self.satrec.jdsatepoch + self.satrec.jdsatepochF)

    @property
    def altitude_km(self) -> float:
        """Mean altitude from the mean motion (Kepler), km above the WGS-72 radius."""
        n = self.satrec.no_kozai / 60.0  # rad/min -> rad/s
        return float((WGS72_MU_KM3_S2 / n**2) ** (1 / 3) - WGS72_RADIUS_KM)

    def tle_lines(self) -> tuple[str, str]:
        line1, line2 = export_tle(self.satrec)
        return str(line1), str(line2)


def jd_to_datetime(jd: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=(jd - JD_UNIX_EPOCH) * SECONDS_PER_DAY
    )


def datetime_to_jd(moment: datetime) -> tuple[float, float]:
    """(whole, fraction) Julian date of ``moment`` (UTC), the split SGP4 takes."""
    if moment.tzinfo is None:
        raise LocalProtocolError(f"time {moment.isoformat()} has no time zone (give UTC)")
    seconds = (moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    days = seconds / SECONDS_PER_DAY
    whole = math.floor(days) + JD_UNIX_EPOCH
    return whole, days - math.floor(days)


# -- TLE files -------------------------------------------------------------------------------


def tle_checksum(line: str) -> int:
    """Modulo-10 sum of the digits of columns 1-68, each minus sign counting 1."""
    total = 0
    for char in line[:68]:
        if char.isdigit():
            total += int(char)
        elif char == "-":
            total += 1
    return total % 10


def _check_line(source: str, number: int, line: str, expected: str) -> None:
    where = f"{source} line {number}"
    if len(line) != TLE_LINE_LENGTH:
        raise TleError(
            f"{where}: a TLE line {expected} has {TLE_LINE_LENGTH} columns, this one {len(line)}"
        )
    if not line.startswith(f"{expected} "):
        raise TleError(f"{where}: expected TLE line {expected}, got {line[:2]!r}")
    if not line[68].isdigit():
        raise TleError(f"{where}: checksum column 69 is {line[68]!r}, not a digit")
    if int(line[68]) != tle_checksum(line):
        raise TleError(
            f"{where}: checksum {line[68]} does not match the line's {tle_checksum(line)}"
        )


def parse_tle(
    text: str,
    *,
    source: str = "<tle>",
    window_start: datetime | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
) -> list[Satellite]:
    """Satellites from TLE text: 2-line or 3-line (a name line first) sets, ``#``
    comments and blank lines skipped.  Planes are found from the elements
    (:func:`assign_planes`)."""
    lines = [
        (number, raw.rstrip("\r\n").rstrip())
        for number, raw in enumerate(text.splitlines(), start=1)
    ]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    records: list[tuple[str, Satrec]] = []
    i = 0
    while i < len(lines):
        number, line = lines[i]
        name = None
        if not line.startswith("1 "):
            if line.startswith("2 "):
                raise TleError(f"{source} line {number}: TLE line 2 without a line 1")
            name = line[2:].strip() if line.startswith("0 ") else line.strip()
            i += 1
            if i >= len(lines):
                raise TleError(f"{source} line {number}: name {name!r} without TLE lines")
            number, line = lines[i]
            if line.startswith("2 "):
                raise TleError(f"{source} line {number}: TLE line 2 without a line 1")
        if i + 1 >= len(lines):
            raise TleError(f"{source} line {number}: TLE line 1 without a line 2")
        number2, line2 = lines[i + 1]
        _check_line(source, number, line, "1")
        _check_line(source, number2, line2, "2")
        if line[2:7] != line2[2:7]:
            raise TleError(
                f"{source} line {number2}: catalogue number {line2[2:7].strip()} differs"
                f" from line {number}'s {line[2:7].strip()}"
            )
        try:
            satrec = Satrec.twoline2rv(line, line2, WGS72)
        except ValueError as exc:
            raise TleError(f"{source} line {number}: {exc}") from None
        if satrec.error:
            raise TleError(
                f"{source} line {number}: SGP4 refuses the elements (error {satrec.error})"
            )
        if window_start is not None:
            epoch = jd_to_datetime(satrec.jdsatepoch + satrec.jdsatepochF)
            age = (window_start - epoch).total_seconds() / SECONDS_PER_DAY
            if abs(age) > max_age_days:
                when = "before" if age > 0 else "after"
                raise TleError(
                    f"{source} line {number}: expired: epoch {epoch:%Y-%m-%dT%H:%M:%SZ} is"
                    f" {abs(age):.1f} days {when} the window start"
                    f" {window_start:%Y-%m-%dT%H:%M:%SZ} (limit {max_age_days:g} days)"
                )
        records.append((name or f"SAT-{line[2:7].strip()}", satrec))
        i += 2
    if not records:
        raise TleError(f"{source}: no TLE sets")
    return assign_planes(records)


def load_tle(
    path: str | Path | None,
    *,
    window_start: datetime | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
) -> list[Satellite]:
    """Satellites from a TLE file, or the shipped 12-satellite set when ``path`` is None."""
    if path is None:
        text = resources.files(__package__).joinpath("data", SHIPPED_TLE).read_text()
        source = SHIPPED_TLE
    else:
        try:
            text = Path(path).read_text(encoding="ascii")
        except UnicodeDecodeError as exc:
            raise TleError(f"{path}: not an ASCII TLE file (octet {exc.start})") from None
        except OSError as exc:
            raise TleError(f"{path}: {exc.strerror}") from None
        source = str(path)
    return parse_tle(text, source=source, window_start=window_start, max_age_days=max_age_days)


def shipped_epoch() -> datetime:
    """The epoch of the shipped set: the default window start."""
    return max(sat.epoch for sat in load_tle(None))


#: Two planes whose ascending nodes differ by less than this are one plane, deg.
PLANE_RAAN_TOLERANCE_DEG: Final = 2.0


def assign_planes(records: Sequence[tuple[str, Satrec]]) -> list[Satellite]:
    """Group satellites into planes by inclination and right ascension of the node,
    and order each plane by argument of latitude (perigee + mean anomaly)."""
    planes: list[tuple[float, float]] = []
    plane_of: list[int] = []
    for _, satrec in records:
        raan = math.degrees(satrec.nodeo) % 360
        incl = math.degrees(satrec.inclo)
        for k, (raan_k, incl_k) in enumerate(planes):
            gap = abs((raan - raan_k + 180) % 360 - 180)
            if gap < PLANE_RAAN_TOLERANCE_DEG and abs(incl - incl_k) < PLANE_RAAN_TOLERANCE_DEG:
                plane_of.append(k)
                break
        else:
            planes.append((raan, incl))
            plane_of.append(len(planes) - 1)
    order = sorted(range(len(planes)), key=lambda k: planes[k][0])
    rank = {k: r for r, k in enumerate(order)}
    slots: dict[int, list[tuple[float, int]]] = {}
    for index, (_, satrec) in enumerate(records):
        u = math.degrees(satrec.argpo + satrec.mo) % 360
        slots.setdefault(plane_of[index], []).append((u, index))
    slot_of: dict[int, int] = {}
    for members in slots.values():
        for slot, (_, index) in enumerate(sorted(members)):
            slot_of[index] = slot
    return [
        Satellite(name, satrec, rank[plane_of[i]], slot_of[i])
        for i, (name, satrec) in enumerate(records)
    ]


# -- Walker delta ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walker:
    """A Walker-delta pattern i:T/P/F: T satellites in P planes evenly spread in right
    ascension, F the phasing (satellites of plane p lead those of plane p-1 by
    ``360 F / T`` degrees of argument of latitude)."""

    total: int
    planes: int
    phasing: int
    altitude_km: float
    inclination_deg: float

    def __post_init__(self) -> None:
        if self.total < 1 or self.planes < 1 or self.total % self.planes:
            raise LocalProtocolError(
                f"Walker {self.total}/{self.planes}/{self.phasing}: T must be a positive"
                " multiple of P"
            )
        if not 0 <= self.phasing < self.planes:
            raise LocalProtocolError(
                f"Walker phasing F={self.phasing} must be in 0..P-1 ({self.planes - 1})"
            )
        if not (math.isfinite(self.altitude_km) and 150 <= self.altitude_km <= 40_000):
            raise LocalProtocolError(f"altitude {self.altitude_km} km is outside 150..40000 km")
        if not (math.isfinite(self.inclination_deg) and 0 <= self.inclination_deg <= 180):
            raise LocalProtocolError(f"inclination {self.inclination_deg} deg is outside 0..180")

    @classmethod
    def parse(cls, text: str, *, altitude_km: float, inclination_deg: float) -> Walker:
        """``T/P/F`` as typed on a command line."""
        parts = text.split("/")
        try:
            total, planes, phasing = (int(p) for p in parts)
        except ValueError:
            raise LocalProtocolError(
                f"Walker pattern {text!r} is not T/P/F (three whole numbers)"
            ) from None
        return cls(total, planes, phasing, altitude_km, inclination_deg)

    def satellites(self, epoch: datetime) -> list[Satellite]:
        """SGP4 records of the pattern at ``epoch``: circular (e = 1e-4: SGP4 wants
        e > 0), no drag, mean motion from Kepler's third law at the altitude."""
        whole, fraction = datetime_to_jd(epoch)
        epoch_days = whole + fraction - 2433281.5  # days since 1949 December 31 00:00 UT
        a = WGS72_RADIUS_KM + self.altitude_km
        n_rad_min = math.sqrt(WGS72_MU_KM3_S2 / a**3) * 60.0
        per_plane = self.total // self.planes
        sats = []
        for p in range(self.planes):
            raan = 2 * math.pi * p / self.planes
            for s in range(per_plane):
                u = 2 * math.pi * (s / per_plane + self.phasing * p / self.total)
                satrec = Satrec()
                satrec.sgp4init(
                    WGS72,
                    "i",
                    p * per_plane + s + 1,
                    epoch_days,
                    0.0,  # bstar
                    0.0,  # ndot
                    0.0,  # nddot
                    1e-4,  # eccentricity
                    0.0,  # argument of perigee
                    math.radians(self.inclination_deg),
                    u % (2 * math.pi),  # mean anomaly
                    n_rad_min,
                    raan,
                )
                sats.append(Satellite(f"W{p:02d}-{s:03d}", satrec, p, s))
        return sats


# -- propagation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The simulated time window: start (UTC) and length; times are seconds from start."""

    start: datetime
    duration_s: float
    #: UT1 - UTC at the start, s (skyfield's built-in table; no download).
    dut1_s: float

    @classmethod
    def at(cls, start: datetime, duration_s: float) -> Window:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise LocalProtocolError(f"window of {duration_s} s: must be positive")
        from skyfield.api import load

        ts = load.timescale(builtin=True)
        return cls(start, duration_s, float(ts.from_datetime(start).dut1))


def ecef_km(sats: Sequence[Satellite], window: Window, times_s: F64) -> F64:
    """Earth-fixed positions, km, shape (satellites, times, 3): every satellite at
    every time, one vectorized SGP4 call.  A satellite SGP4 gives up on (decayed) is
    NaN there."""
    whole, fraction = datetime_to_jd(window.start)
    frac = fraction + np.asarray(times_s, dtype=np.float64) / SECONDS_PER_DAY
    jd = np.full_like(frac, whole)
    errors, r_teme, _ = SatrecArray([s.satrec for s in sats]).sgp4(jd, frac)
    r_teme[errors != 0] = np.nan
    return _teme_to_ecef(r_teme, whole, frac, window.dut1_s)


def ecef_one_km(sat: Satellite, window: Window, times_s: F64) -> F64:
    """One satellite at the times given, km, shape (times, 3)."""
    whole, fraction = datetime_to_jd(window.start)
    frac = fraction + np.asarray(times_s, dtype=np.float64) / SECONDS_PER_DAY
    jd = np.full_like(frac, whole)
    errors, r_teme, _ = sat.satrec.sgp4_array(jd, frac)
    r_teme[errors != 0] = np.nan
    out: F64 = _teme_to_ecef(r_teme[np.newaxis], whole, frac, window.dut1_s)[0]
    return out


def _teme_to_ecef(r_teme: F64, whole: float, frac: F64, dut1_s: float) -> F64:
    from skyfield.sgp4lib import theta_GMST1982

    theta, _ = theta_GMST1982(whole, frac + dut1_s / SECONDS_PER_DAY)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    out = np.empty_like(r_teme)
    x, y = r_teme[..., 0], r_teme[..., 1]
    out[..., 0] = cos_t * x + sin_t * y
    out[..., 1] = -sin_t * x + cos_t * y
    out[..., 2] = r_teme[..., 2]
    return out
