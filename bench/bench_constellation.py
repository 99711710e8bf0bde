"""The constellation's figures for docs/constellation.md: round trips for 12 satellites
x {1, 3, 10} stations x {no ISL, ISL grid}, and 2,800 satellites (Walker 53:2800/40/1 at
550 km) x 3 stations (and x 50 with --scale), 1000 Poisson queries over 24 hours, seed 1.

    .venv/bin/python bench/bench_constellation.py [--big] [--scale] [--plot DIR]
"""

from __future__ import annotations

import argparse
import json
import time

from linkstack.sim.constellation.orbits import Walker, load_tle, shipped_epoch
from linkstack.sim.constellation.simulation import SimConfig, simulate
from linkstack.sim.constellation.stations import shipped_stations, spread_stations


def row(label: str, report: dict, wall: float) -> None:
    rt = report["round_trip_s"]
    print(
        json.dumps(
            {
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
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", action="store_true", help="also 2,800 satellites x 3 stations")
    parser.add_argument("--scale", action="store_true", help="also 2,800 x 50 stations")
    parser.add_argument("--plot", metavar="DIR")
    args = parser.parse_args()
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    ten = shipped_stations("stations10.toml")
    if not (args.big or args.scale):
        for isl in ("none", "grid"):
            for n in (1, 3, 10):
                t = time.perf_counter()
                result = simulate(sats, ten[:n], start, SimConfig(isl=isl, seed=1))
                row(f"12 sats x {n} stations, isl={isl}", result.report, time.perf_counter() - t)
    big = Walker(2800, 40, 1, 550.0, 53.0).satellites(start)
    cases = []
    if args.big:
        cases += [(ten[:3], "none"), (ten[:3], "grid")]
    if args.scale:
        cases += [(spread_stations(50), "grid")]
    for stations, isl in cases:
        t = time.perf_counter()
        config = SimConfig(isl=isl, seed=1, step_s=60.0, tolerance_s=0.5)
        result = simulate(big, stations, start, config, source="walker 2800/40/1")
        row(
            f"2800 sats x {len(stations)} stations, isl={isl}",
            result.report,
            time.perf_counter() - t,
        )
        if args.plot:
            from linkstack.sim.constellation.plots import write_plots

            write_plots(result, args.plot, prefix=f"big{len(stations)}_{isl}_")


if __name__ == "__main__":
    main()
