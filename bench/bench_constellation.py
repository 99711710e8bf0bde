"""The constellation's figures for docs/constellation.md: round trips for 12 satellites
x {1, 3, 10} stations x {no ISL, ISL grid}, each query up from its own station and
forwarded to whichever station sees a satellite first (``--uplink any``), with the
per-station breakdown; 2,800 satellites (Walker 53:2800/40/1 at 550 km) x 3 stations
with --big, x 50 stations with --scale.  1000 Poisson queries over 24 hours, seed 1.

    .venv/bin/python bench/bench_constellation.py [--big] [--scale] [--plot DIR]
        [--profile h200|cpu-embedded]

``--profile`` picks the onboard model's timing (docs/constellation.md, "Timing
profiles"): ``h200`` (default), a Qwen3-0.6B-shaped model in bf16 on one H200;
``cpu-embedded``, the embedded test model on this project's CPU machine, measured with
bench/bench_onboard.py.  Each case prints one JSON line, with its wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from linkstack.sim.constellation.contacts import Topology
from linkstack.sim.constellation.orbits import Walker, load_tle, shipped_epoch
from linkstack.sim.constellation.simulation import PROFILES, SimConfig, simulate
from linkstack.sim.constellation.stations import (
    GroundStation,
    shipped_stations,
    spread_stations,
)


def row(label: str, report: dict[str, Any], wall: float, cpu: float, *, stations: bool) -> None:
    rt = report["round_trip_s"]
    line = {
        "case": label,
        "p50_s": rt["p50"],
        "p95_s": rt["p95"],
        "max_s": rt["max"],
        "share_under_120_s": report["share_under_120_s"],
        "answered": report["answered"],
        "handovers": report["handovers"],
        "passes": report["contact_plan"]["passes"],
        "isl_windows": report["contact_plan"]["isl_windows"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
    }
    if stations:
        parts = report["round_trip_parts_s"]
        line["parts_p50_p95_s"] = {k: (v["p50"], v["p95"]) for k, v in parts.items()}
        line["per_station"] = report["per_station"]
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", action="store_true", help="also 2,800 satellites x 3 stations")
    parser.add_argument("--scale", action="store_true", help="also 2,800 x 50 stations")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="h200")
    parser.add_argument("--plot", metavar="DIR")
    args = parser.parse_args()
    model = PROFILES[args.profile]
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    ten = shipped_stations("stations10.toml")
    if not (args.big or args.scale):
        for uplink in ("own", "any"):
            isls: tuple[Topology, ...] = ("none", "grid")
            for isl in isls:
                for n in (1, 3, 10):
                    t, c = time.perf_counter(), time.process_time()
                    config = SimConfig(isl=isl, seed=1, uplink=uplink, model=model)
                    result = simulate(sats, ten[:n], start, config)
                    row(
                        f"12 sats x {n} stations, isl={isl}, uplink={uplink}",
                        result.report,
                        time.perf_counter() - t,
                        time.process_time() - c,
                        stations=isl == "none",
                    )
    big = Walker(2800, 40, 1, 550.0, 53.0).satellites(start)
    cases: list[tuple[list[GroundStation], Topology]] = []
    if args.big:
        cases += [(ten[:3], "none"), (ten[:3], "grid")]
    if args.scale:
        cases += [(spread_stations(50), "grid")]
    for stations, isl in cases:
        t, c = time.perf_counter(), time.process_time()
        config = SimConfig(isl=isl, seed=1, step_s=60.0, tolerance_s=0.5, model=model)
        result = simulate(big, stations, start, config, source="walker 2800/40/1")
        row(
            f"2800 sats x {len(stations)} stations, isl={isl}",
            result.report,
            time.perf_counter() - t,
            time.process_time() - c,
            stations=False,
        )
        if args.plot:
            from linkstack.sim.constellation.plots import write_plots

            write_plots(result, args.plot, prefix=f"big{len(stations)}_{isl}_")


if __name__ == "__main__":
    main()
