"""``linkstack constellation passes|simulate``: a constellation's contact plan and the
round trips of queries through it (docs/constellation.md).

``passes`` lists every pass (rise, culmination, set, maximum elevation, light time and
Doppler at culmination) of every satellite over every station in the window; a window
with no pass at all says ``no contact``.  ``simulate`` sends queries (Poisson, or a
``--trace`` file of ``seconds,station`` lines) up at the earliest contact, runs them
through each satellite's model (a timing model: ``--first-token-s``, ``--tokens-per-s``)
and routes the answers down, through inter-satellite links with ``--isl``; it reports
the round trip's percentiles, the share under two minutes, tokens delivered and
handovers, the same per station of arrival, and with ``--plot DIR`` writes PNGs.
``--uplink any`` sends each query up from whichever station sees a satellite first
(a ground network forwarding queries) instead of its own.  ``sweep`` runs
``simulate`` over constellations x station counts x ISL topologies x seeds, one case
after the other or as Ray tasks (``--engine ray``), and prints one JSON document,
the same for both engines.  ``simulate --stack real`` then runs every answered query
on the real stack (COP-1, stream recovery, SDLS with ``--keys``) over its satellite's
passes, and reports those round trips beside the model's (small runs).

Satellites come from ``--tle FILE`` (elements older than ``--max-age-days`` at the
window start are refused as expired), a Walker-delta pattern (``--walker T/P/F
--altitude-km H --inclination-deg I``), or by default the shipped set of 12 synthetic
satellites; stations from ``--stations FILE`` (TOML) or the shipped three.  The window
starts at ``--start`` (ISO 8601, UTC) or the shipped elements' epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from linkstack.cli.main import EXIT_OK, Streams
from linkstack.console.base import UsageError, positive_int, positive_number
from linkstack.errors import LocalProtocolError

#: ``simulate --stack real`` runs each query on the mission simulator, seconds of CPU
#: each (more across a gap between passes): a small run's worth.
REAL_STACK_MAX_QUERIES: Final = 100


def _start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hours", type=positive_number, default=24.0, help="window length")
    parser.add_argument("--start", type=_start, help="window start, ISO 8601 UTC")
    parser.add_argument("--tle", metavar="FILE", help="satellites from a TLE file")
    parser.add_argument("--walker", metavar="T/P/F", help="a Walker-delta pattern")
    parser.add_argument(
        "--altitude-km", type=positive_number, default=550.0, help="--walker: altitude, km"
    )
    parser.add_argument(
        "--inclination-deg", type=float, default=53.0, help="--walker: inclination, deg"
    )
    parser.add_argument(
        "--max-age-days",
        type=positive_number,
        default=14.0,
        help="TLEs further than this from the window start are expired",
    )
    parser.add_argument("--stations", metavar="FILE", help="ground stations (TOML)")
    parser.add_argument(
        "--step", type=positive_number, default=30.0, help="pass search grid step, s"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "constellation",
        help="contact plan and query round trips of a constellation",
        description=__doc__,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    passes = actions.add_parser("passes", help="every pass over every station")
    _common(passes)
    passes.add_argument(
        "--doppler",
        action="store_true",
        help="each pass's delay and Doppler over time (JSON: 'profile'; text: at rise and set)",
    )
    passes.add_argument(
        "--carrier-hz", type=positive_number, default=2.2e9, help="--doppler: carrier, Hz"
    )
    passes.add_argument(
        "--doppler-step",
        type=positive_number,
        default=10.0,
        help="--doppler: seconds between the profile's points",
    )
    passes.set_defaults(handler=_passes)
    sim = actions.add_parser("simulate", help="queries up, answers down: round trips")
    _common(sim)
    sim.add_argument("--queries", type=int, default=1000, help="Poisson arrivals in the window")
    sim.add_argument("--trace", metavar="FILE", help="queries from 'seconds,station' lines")
    sim.add_argument("--seed", type=int, default=0, help="seed of the query arrivals")
    sim.add_argument(
        "--isl",
        nargs="?",
        const="grid",
        choices=("none", "plane", "grid"),
        default="none",
        help="inter-satellite links (--isl alone: grid)",
    )
    sim.add_argument("--isl-range-km", type=positive_number, default=5000.0, help="longest ISL, km")
    sim.add_argument("--isl-rate-bps", type=positive_number, default=10e6, help="ISL rate, bit/s")
    sim.add_argument(
        "--buffer-octets",
        type=positive_int,
        default=1_000_000,
        help="each relay satellite's store-and-forward buffer",
    )
    sim.add_argument("--answer-tokens", type=positive_int, default=256, help="ids per answer")
    sim.add_argument("--prompt-tokens", type=positive_int, default=64, help="ids per prompt")
    sim.add_argument(
        "--profile",
        choices=("h200", "cpu-embedded"),
        default="h200",
        help="onboard timing: h200 (Qwen3-0.6B bf16: 23 ms, 44 ids/s) or cpu-embedded"
        " (the embedded model on one CPU core: 9 ms, 96 ids/s)",
    )
    sim.add_argument(
        "--first-token-s",
        type=float,
        help="onboard time to the first id, s (overrides the profile's)",
    )
    sim.add_argument(
        "--tokens-per-s",
        type=positive_number,
        help="onboard decode rate, ids/s (overrides the profile's)",
    )
    sim.add_argument(
        "--tail-hours",
        type=float,
        default=6.0,
        help="contact plan past the window, for late answers",
    )
    sim.add_argument(
        "--uplink",
        choices=("own", "any"),
        default="own",
        help="queries go up from their own station, or from any (forwarded on the ground)",
    )
    sim.add_argument(
        "--stack",
        choices=("model", "real"),
        default="model",
        help="links as a timing model (default), or every query on the real stack (COP-1,"
        " stream recovery, SDLS with --keys) over its satellite's passes: small runs, at"
        f" most {REAL_STACK_MAX_QUERIES} queries, no --isl",
    )
    sim.add_argument(
        "--keys",
        type=Path,
        metavar="PATH",
        help="--stack real: protect both directions with SDLS under this key file",
    )
    sim.add_argument("--plot", metavar="DIR", help="write PNGs (CDF, timeline, ground tracks)")
    sim.set_defaults(handler=_simulate)
    sweep = actions.add_parser("sweep", help="simulate over a grid of parameters (JSON)")
    sweep.add_argument(
        "--constellations",
        type=_list(str),
        default=["shipped"],
        help="comma-separated: 'shipped' or Walker T/P/F patterns (default shipped)",
    )
    sweep.add_argument(
        "--station-counts",
        type=_list(positive_int),
        default=[1, 3, 10],
        help="comma-separated: the first N of --stations (default 1,3,10)",
    )
    sweep.add_argument(
        "--isl",
        type=_list(_topology),
        default=["none", "grid"],
        help="comma-separated ISL topologies: none, plane, grid (default none,grid)",
    )
    sweep.add_argument(
        "--seeds", type=_list(int), default=[1], help="comma-separated seeds (default 1)"
    )
    sweep.add_argument(
        "--stations",
        metavar="FILE",
        help="ground stations (TOML; default: the shipped ten, stations10.toml)",
    )
    sweep.add_argument("--hours", type=positive_number, default=24.0, help="window length")
    sweep.add_argument("--start", type=_start, help="window start, ISO 8601 UTC")
    sweep.add_argument("--queries", type=int, default=1000, help="Poisson arrivals per case")
    sweep.add_argument(
        "--altitude-km", type=positive_number, default=550.0, help="Walker altitude, km"
    )
    sweep.add_argument(
        "--inclination-deg", type=float, default=53.0, help="Walker inclination, deg"
    )
    sweep.add_argument(
        "--uplink",
        choices=("own", "any"),
        default="own",
        help="queries go up from their own station, or from any (forwarded on the ground)",
    )
    sweep.add_argument(
        "--profile",
        choices=("h200", "cpu-embedded"),
        default="h200",
        help="onboard timing: h200 (23 ms to the first id, 44 ids/s) or cpu-embedded",
    )
    sweep.add_argument(
        "--step", type=positive_number, default=30.0, help="pass search grid step, s"
    )
    sweep.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run the sweep's cases here (default) or as Ray tasks (extra 'ray')",
    )
    sweep.add_argument(
        "--ray-address", metavar="ADDR", help="--engine ray: join this cluster (default: local)"
    )
    sweep.set_defaults(handler=_sweep)


def _list(item: Any) -> Any:
    def parse(text: str) -> list[Any]:
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r}: an empty item in the list")
        return [item(p) for p in parts]

    return parse


def _topology(text: str) -> str:
    if text not in ("none", "plane", "grid"):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of none, plane, grid")
    return text


def _setup(args: argparse.Namespace) -> tuple[Any, Any, datetime, str]:
    from linkstack.sim.constellation.orbits import Walker, load_tle, shipped_epoch
    from linkstack.sim.constellation.stations import load_stations

    if args.tle and args.walker:
        raise UsageError("--tle and --walker exclude each other")
    start = args.start or shipped_epoch()
    if args.walker:
        try:
            walker = Walker.parse(
                args.walker, altitude_km=args.altitude_km, inclination_deg=args.inclination_deg
            )
        except LocalProtocolError as exc:
            raise UsageError(f"--walker: {exc}") from None
        sats = walker.satellites(start)
        source = f"walker {args.walker} {args.altitude_km:g} km {args.inclination_deg:g} deg"
    else:
        sats = load_tle(args.tle, window_start=start, max_age_days=args.max_age_days)
        source = f"tle {args.tle}" if args.tle else "shipped 12 (synthetic)"
    return sats, load_stations(args.stations), start, source


def _iso(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _write(io: Streams, text: str) -> None:
    io.stdout.write(text.encode())
    io.stdout.flush()


def _passes(args: argparse.Namespace, io: Streams) -> int:
    from linkstack.sim.constellation.contacts import (
        Geometry,
        doppler_hz,
        find_passes,
        one_way_delay_s,
    )
    from linkstack.sim.constellation.orbits import Window

    sats, stations, start, source = _setup(args)
    geo = Geometry(sats, stations, Window.at(start, args.hours * 3600.0))
    passes = find_passes(geo, step_s=args.step)
    rows = []
    for p in passes:
        at = np.array([p.culmination_s])
        rows.append(
            {
                "station": p.station,
                "satellite": p.satellite,
                "rise": _iso(start, p.rise_s),
                "culmination": _iso(start, p.culmination_s),
                "set": _iso(start, p.set_s),
                "rise_s": round(p.rise_s, 3),
                "culmination_s": round(p.culmination_s, 3),
                "set_s": round(p.set_s, 3),
                "max_elevation_deg": round(p.max_elevation_deg, 3),
                "delay_ms_at_culmination": round(float(one_way_delay_s(geo, p, at)[0]) * 1e3, 4),
                "doppler_hz_at_rise_2200mhz": round(
                    float(doppler_hz(geo, p, np.array([p.rise_s]), carrier_hz=2.2e9)[0]), 1
                ),
                "clipped": p.clipped_rise or p.clipped_set,
            }
        )
        if args.doppler:
            rows[-1].update(_doppler(geo, p, args.carrier_hz, args.doppler_step))
    end = _iso(start, args.hours * 3600.0)
    if args.json:
        _write(
            io,
            json.dumps(
                {
                    "window": {"start": _iso(start, 0.0), "end": end, "hours": args.hours},
                    "satellites": source,
                    "stations": [s.name for s in stations],
                    "no_contact": not rows,
                    "passes": rows,
                },
                indent=1,
            )
            + "\n",
        )
        return EXIT_OK
    if not rows:
        _write(io, f"no contact between {_iso(start, 0.0)} and {end}\n")
        return EXIT_OK
    extra = f" {'Doppler kHz rise':>16} {'set':>8}" if args.doppler else ""
    lines = [
        f"{'station':<15} {'satellite':<14} {'rise':<23} {'culmination':<23} "
        f"{'set':<23} {'max el':>7} {'delay ms':>9}" + extra
    ]
    for r in rows:
        doppler = ""
        if args.doppler:
            profile: dict[str, list[float]] = r["profile"]  # type: ignore[assignment]
            doppler = (
                f" {profile['doppler_hz'][0] / 1e3:>16.3f} {profile['doppler_hz'][-1] / 1e3:>8.3f}"
            )
        lines.append(
            f"{r['station']:<15} {r['satellite']:<14} {r['rise']:<23} {r['culmination']:<23} "
            f"{r['set']:<23} {r['max_elevation_deg']:>7.2f} {r['delay_ms_at_culmination']:>9.3f}"
            + doppler
        )
    lines.append(f"{len(rows)} passes")
    _write(io, "\n".join(lines) + "\n")
    return EXIT_OK


def _doppler(geo: Any, p: Any, carrier_hz: float, step_s: float) -> dict[str, Any]:
    """A pass's delay and Doppler every ``step_s`` from rise to set (and at set), from
    the same sampled pass the radio layer's ``PassChannel`` takes."""
    from linkstack.radio.channel import SPEED_OF_LIGHT_M_S
    from linkstack.sim.constellation.contacts import sampled_pass

    profile = sampled_pass(geo, p, carrier_hz=carrier_hz)
    times = [*np.arange(p.rise_s, p.set_s, step_s), p.set_s]
    return {
        "profile": {
            "carrier_hz": carrier_hz,
            "t_s": [round(float(t), 3) for t in times],
            "delay_ms": [
                round(profile.range_m(float(t)) / SPEED_OF_LIGHT_M_S * 1e3, 5) for t in times
            ],
            "doppler_hz": [round(profile.doppler_hz(float(t)), 2) for t in times],
        }
    }


def _simulate(args: argparse.Namespace, io: Streams) -> int:
    from linkstack.sim.constellation.simulation import (
        PROFILES,
        ModelTiming,
        SimConfig,
        load_trace,
        simulate,
    )

    if args.queries < 0:
        raise UsageError(f"--queries {args.queries} must be 0 or more")
    profile = PROFILES[args.profile]
    first_token_s = profile.first_token_s if args.first_token_s is None else args.first_token_s
    tokens_per_s = profile.tokens_per_s if args.tokens_per_s is None else args.tokens_per_s
    if not (math.isfinite(first_token_s) and first_token_s >= 0):
        raise UsageError(f"--first-token-s {first_token_s} must be 0 or more")
    if not (math.isfinite(args.tail_hours) and args.tail_hours >= 0):
        raise UsageError(f"--tail-hours {args.tail_hours} must be 0 or more")
    if args.stack == "model" and args.keys is not None:
        raise UsageError("--keys needs --stack real (the timing model carries no frames)")
    if args.stack == "real" and args.isl != "none":
        raise UsageError(
            f"--stack real with --isl {args.isl}: relays are not run on the real stack"
        )
    if args.stack == "real" and args.queries > REAL_STACK_MAX_QUERIES and args.trace is None:
        raise UsageError(
            f"--stack real with --queries {args.queries}: at most {REAL_STACK_MAX_QUERIES}"
        )
    sats, stations, start, source = _setup(args)
    config = SimConfig(
        hours=args.hours,
        queries=args.queries,
        seed=args.seed,
        isl=args.isl,
        isl_max_range_km=args.isl_range_km,
        isl_rate_bps=args.isl_rate_bps,
        buffer_octets=args.buffer_octets,
        prompt_tokens=args.prompt_tokens,
        answer_tokens=args.answer_tokens,
        tail_hours=args.tail_hours,
        step_s=args.step,
        uplink=args.uplink,
        model=ModelTiming(first_token_s=first_token_s, tokens_per_s=tokens_per_s),
    )
    queries = None if args.trace is None else load_trace(args.trace, stations, args.hours)
    began = time.perf_counter()
    if args.stack == "real" and queries is not None and len(queries) > REAL_STACK_MAX_QUERIES:
        raise UsageError(
            f"--stack real with {len(queries)} queries in {args.trace}: at most"
            f" {REAL_STACK_MAX_QUERIES}"
        )
    result = simulate(sats, stations, start, config, queries=queries, source=source)
    report = result.report
    if args.stack == "real":
        report = _real_stack(args, result, config, stations)
    if args.plot:
        from linkstack.sim.constellation.plots import write_plots

        write_plots(result, args.plot)
    print(f"linkstack: simulated in {time.perf_counter() - began:.1f} s", file=io.stderr)
    if report["answered"] == 0 and report["queries"]:
        print("linkstack: no contact: no query was answered in the window", file=io.stderr)
    if args.json:
        _write(io, json.dumps(report, indent=1, sort_keys=True) + "\n")
        return EXIT_OK
    rt = report["round_trip_s"]
    share = report["share_under_120_s"]
    _write(
        io,
        "\n".join(
            [
                f"{report['constellation']['satellites']} satellites ({source}),"
                f" {len(stations)} stations, ISL {args.isl}",
                f"queries {report['queries']}, answered {report['answered']},"
                f" no contact {report['no_contact']}, no route down {report['no_route_down']}",
                "round trip s: " + ", ".join(f"{k} {v}" for k, v in rt.items()),
                f"under two minutes: {'-' if share is None else f'{share:.1%}'}",
                f"tokens delivered {report['tokens_delivered']}, handovers {report['handovers']}",
            ]
        )
        + "\n",
    )
    return EXIT_OK


def _real_stack(args: argparse.Namespace, result: Any, config: Any, stations: Any) -> Any:
    """The report with the real stack's round trips in place of the model's (which
    move to ``model``), and the real stack's figures per query in ``real_stack``."""
    from linkstack.sim.constellation.realstack import (
        RealStackConfig,
        real_report,
        run_real_stack,
    )

    links = {s.link for s in stations}
    if len(links) != 1:
        raise UsageError(
            f"--stack real: the stations' link profiles differ ({', '.join(sorted(links))});"
            " one profile carries every query"
        )
    keys = None
    if args.keys is not None:
        from linkstack.sdls.keystore import link_security

        keys = (
            link_security(args.keys, role="ground"),
            link_security(args.keys, role="spacecraft"),
        )
    outcomes = run_real_stack(
        result,
        config,
        RealStackConfig(),
        profile=links.pop(),
        security=None if keys is None else (keys[0].security, keys[1].security),
    )
    for side in keys or ():
        side.save_receive_state()
    real = real_report(outcomes)
    report = dict(result.report)
    report["stack"] = "real"
    report["model"] = {
        "round_trip_s": report["round_trip_s"],
        "share_under_120_s": report["share_under_120_s"],
    }
    report["round_trip_s"] = real["round_trip_s"]
    report["share_under_120_s"] = real["share_under_120_s"]
    report["real_stack"] = real
    return report


def _sweep(args: argparse.Namespace, io: Streams) -> int:
    from linkstack.sim.constellation.orbits import shipped_epoch
    from linkstack.sim.constellation.simulation import PROFILES, SimConfig
    from linkstack.sim.constellation.stations import (
        TEN_STATIONS,
        load_stations,
        shipped_stations,
    )
    from linkstack.sim.constellation.sweep import Sweep, run_sweep

    if args.queries < 0:
        raise UsageError(f"--queries {args.queries} must be 0 or more")
    stations = (
        shipped_stations(TEN_STATIONS) if args.stations is None else load_stations(args.stations)
    )
    try:
        sweep = Sweep(
            constellations=tuple(args.constellations),
            station_counts=tuple(args.station_counts),
            isls=tuple(args.isl),
            seeds=tuple(args.seeds),
            stations=tuple(stations),
            start=args.start or shipped_epoch(),
            config=SimConfig(
                hours=args.hours,
                queries=args.queries,
                step_s=args.step,
                uplink=args.uplink,
                model=PROFILES[args.profile],
            ),
            altitude_km=args.altitude_km,
            inclination_deg=args.inclination_deg,
        )
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from None
    began = time.perf_counter()
    document = run_sweep(sweep, engine=args.engine, address=args.ray_address)
    print(
        f"linkstack: {len(document['cases'])} cases in {time.perf_counter() - began:.1f} s"
        f" ({args.engine})",
        file=io.stderr,
    )
    _write(io, json.dumps(document, indent=1, sort_keys=True) + "\n")
    return EXIT_OK


__all__ = ["register"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
