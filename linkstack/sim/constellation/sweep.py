"""Parameter sweeps of the constellation simulation: constellations x station counts x
ISL topologies x seeds, run one after the other (``engine="local"``) or as Ray tasks
(``engine="ray"``), with the same JSON either way.

A case names everything it needs as plain values (a constellation spec, a station
count, a topology, a seed) and the stations themselves, so that a Ray worker rebuilds
its satellites and contact plan from them and returns its report as JSON-ready data;
the cases come back in the order they were listed, whatever order the workers finish
in.  Ray (``pip install 'linkstack[ray]'``) is imported only by the Ray engine; it
uses the Ray instance already started in the process (``ray.init(...)``), or starts a
local one (or joins ``address``) and shuts it down afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from linkstack.errors import LocalProtocolError
from linkstack.sim.constellation.contacts import TOPOLOGIES, Topology
from linkstack.sim.constellation.orbits import Satellite, Walker, load_tle
from linkstack.sim.constellation.simulation import SimConfig, simulate
from linkstack.sim.constellation.stations import GroundStation

Engine = Literal["local", "ray"]
ENGINES: Final[tuple[Engine, ...]] = ("local", "ray")
#: The constellation spec of the shipped 12 satellites; any other spec is a Walker
#: pattern T/P/F at the sweep's altitude and inclination.
SHIPPED: Final = "shipped"


@dataclass(frozen=True, slots=True)
class SweepCase:
    constellation: str
    stations: int
    isl: Topology
    seed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """The axes and what every case shares."""

    constellations: tuple[str, ...]
    station_counts: tuple[int, ...]
    isls: tuple[Topology, ...]
    seeds: tuple[int, ...]
    #: The station list; a case with ``stations=n`` uses its first n.
    stations: tuple[GroundStation, ...]
    start: datetime
    config: SimConfig
    altitude_km: float = 550.0
    inclination_deg: float = 53.0

    def __post_init__(self) -> None:
        for name in ("constellations", "station_counts", "isls", "seeds"):
            if not getattr(self, name):
                raise LocalProtocolError(f"sweep: no {name}")
        for count in self.station_counts:
            if not 1 <= count <= len(self.stations):
                raise LocalProtocolError(
                    f"sweep: station count {count} is not 1..{len(self.stations)}"
                    " (the stations given)"
                )
        for isl in self.isls:
            if isl not in TOPOLOGIES:
                raise LocalProtocolError(f"sweep: ISL topology {isl!r} is not one of {TOPOLOGIES}")
        for spec in self.constellations:
            if spec != SHIPPED:
                Walker.parse(
                    spec, altitude_km=self.altitude_km, inclination_deg=self.inclination_deg
                )

    def cases(self) -> list[SweepCase]:
        return [
            SweepCase(c, n, isl, seed)
            for c, n, isl, seed in itertools.product(
                self.constellations, self.station_counts, self.isls, self.seeds
            )
        ]


def _satellites(sweep: Sweep, spec: str) -> list[Satellite]:
    if spec == SHIPPED:
        return load_tle(None, window_start=sweep.start)
    walker = Walker.parse(
        spec, altitude_km=sweep.altitude_km, inclination_deg=sweep.inclination_deg
    )
    return walker.satellites(sweep.start)


def run_case(sweep: Sweep, case: SweepCase) -> dict[str, Any]:
    """One case's row: its axes and the simulation's report."""
    sats = _satellites(sweep, case.constellation)
    config = replace(sweep.config, isl=case.isl, seed=case.seed)
    source = "shipped 12 (synthetic)" if case.constellation == SHIPPED else case.constellation
    result = simulate(sats, sweep.stations[: case.stations], sweep.start, config, source=source)
    return {
        "constellation": case.constellation,
        "stations": case.stations,
        "isl": case.isl,
        "seed": case.seed,
        "report": result.report,
    }


def _run_local(sweep: Sweep, cases: Sequence[SweepCase]) -> list[dict[str, Any]]:
    return [run_case(sweep, case) for case in cases]


def _run_ray(sweep: Sweep, cases: Sequence[SweepCase], address: str | None) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise LocalProtocolError("engine 'ray' needs Ray: pip install 'linkstack[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(run_case)
        shared = ray.put(sweep)
        rows: list[dict[str, Any]] = ray.get([task.remote(shared, case) for case in cases])
        return rows
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    sweep: Sweep, *, engine: Engine = "local", address: str | None = None
) -> dict[str, Any]:
    """Every case of the sweep, in the order of :meth:`Sweep.cases`: one JSON document."""
    runners: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "local": lambda: _run_local(sweep, sweep.cases()),
        "ray": lambda: _run_ray(sweep, sweep.cases(), address),
    }
    if engine not in runners:
        raise LocalProtocolError(f"engine {engine!r} is not one of {ENGINES}")
    return {
        "sweep": {
            "constellations": list(sweep.constellations),
            "station_counts": list(sweep.station_counts),
            "isl": list(sweep.isls),
            "seeds": list(sweep.seeds),
            "stations": [s.name for s in sweep.stations],
        },
        "cases": runners[engine](),
    }
