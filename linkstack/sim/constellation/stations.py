"""Ground stations: from a TOML file (``[[station]]`` tables), or the shipped sets.

Each station has a name, a geodetic position on the WGS84 ellipsoid, a minimum
elevation (its antenna mask) and the link profile its passes use
(:func:`linkstack.radio.channel.link_profile`).  Positions are Earth-fixed through
skyfield's ``wgs84``, which needs no data file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import PROFILE_NAMES

F64 = npt.NDArray[np.float64]

DEFAULT_STATIONS: Final = "stations.toml"
TEN_STATIONS: Final = "stations10.toml"
_FIELDS: Final = (
    "name",
    "latitude_deg",
    "longitude_deg",
    "altitude_m",
    "min_elevation_deg",
    "link",
)
#: Altitudes a station can have, m: the Dead Sea shore to above Everest's summit.
MIN_ALTITUDE_M: Final = -500.0
MAX_ALTITUDE_M: Final = 9_000.0


class StationError(LocalProtocolError):
    """A station file that cannot be used: the message names the file, station and field."""


@dataclass(frozen=True, slots=True)
class GroundStation:
    name: str
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    min_elevation_deg: float
    link: str

    def __post_init__(self) -> None:
        checks = (
            ("latitude_deg", self.latitude_deg, -90.0, 90.0),
            ("longitude_deg", self.longitude_deg, -180.0, 180.0),
            ("altitude_m", self.altitude_m, MIN_ALTITUDE_M, MAX_ALTITUDE_M),
            ("min_elevation_deg", self.min_elevation_deg, 0.0, 90.0),
        )
        for field, value, low, high in checks:
            if not (math.isfinite(value) and low <= value <= high):
                raise StationError(
                    f"station {self.name!r}: {field} {value} is outside {low:g}..{high:g}"
                )
        if self.link not in PROFILE_NAMES:
            raise StationError(
                f"station {self.name!r}: link {self.link!r} is not one of"
                f" {', '.join(PROFILE_NAMES)}"
            )

    def ecef_km(self) -> F64:
        """Earth-fixed (ITRS) position, km."""
        from skyfield.api import wgs84

        place = wgs84.latlon(self.latitude_deg, self.longitude_deg, elevation_m=self.altitude_m)
        return np.asarray(place.itrs_xyz.km, dtype=np.float64)

    def up(self) -> F64:
        """The geodetic zenith, a unit vector Earth-fixed."""
        lat, lon = math.radians(self.latitude_deg), math.radians(self.longitude_deg)
        return np.array(
            [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
        )


def _station(source: str, index: int, table: Mapping[str, Any]) -> GroundStation:
    where = f"{source}: station {index + 1}"
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise StationError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(_FIELDS)}")
    missing = [f for f in _FIELDS if f not in table]
    if missing:
        raise StationError(f"{where}: missing field {missing[0]!r}")
    name = table["name"]
    if not isinstance(name, str) or not name.strip():
        raise StationError(f"{where}: name {name!r} is not a non-empty string")
    values: dict[str, float] = {}
    for field in _FIELDS[1:5]:
        value = table[field]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StationError(f"{where} ({name}): {field} {value!r} is not a number")
        values[field] = float(value)
    link = table["link"]
    if not isinstance(link, str):
        raise StationError(f"{where} ({name}): link {link!r} is not a profile name")
    try:
        return GroundStation(name=name, link=link, **values)
    except StationError as exc:
        raise StationError(f"{source}: {exc}") from None


def parse_stations(text: str, *, source: str = "<stations>") -> list[GroundStation]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StationError(f"{source}: not TOML: {exc}") from None
    tables = document.get("station")
    if not isinstance(tables, list) or not tables:
        raise StationError(f"{source}: no [[station]] tables")
    stations = [_station(source, i, table) for i, table in enumerate(tables)]
    names = [s.name for s in stations]
    for name in names:
        if names.count(name) > 1:
            raise StationError(f"{source}: station name {name!r} is used twice")
    return stations


def load_stations(path: str | Path | None = None) -> list[GroundStation]:
    """Stations from a TOML file, or the shipped default set (three) when None."""
    if path is None:
        return shipped_stations(DEFAULT_STATIONS)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StationError(f"{path}: {reason}") from None
    return parse_stations(text, source=str(path))


def shipped_stations(name: str) -> list[GroundStation]:
    text = resources.files(__package__).joinpath("data", name).read_text()
    return parse_stations(text, source=name)


def spread_stations(count: int, *, max_latitude_deg: float = 55.0) -> list[GroundStation]:
    """``count`` stations spread evenly (a Fibonacci lattice) over the band of latitudes
    within ``max_latitude_deg`` of the equator: the large runs' generated networks."""
    if count < 1:
        raise StationError(f"station count {count} must be 1 or more")
    golden = math.pi * (3 - math.sqrt(5))
    band = math.sin(math.radians(max_latitude_deg))
    stations = []
    for i in range(count):
        z = band * (1 - 2 * (i + 0.5) / count)
        lon = math.degrees((i * golden) % (2 * math.pi)) - 180
        stations.append(
            GroundStation(
                name=f"GS{i:02d}",
                latitude_deg=round(math.degrees(math.asin(z)), 2),
                longitude_deg=round(lon, 2),
                altitude_m=0.0,
                min_elevation_deg=10.0,
                link="s-band",
            )
        )
    return stations


def station_names(stations: Sequence[GroundStation]) -> list[str]:
    return [s.name for s in stations]
