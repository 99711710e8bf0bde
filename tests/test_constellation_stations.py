"""Which station a query goes up from and which one its answer comes down at, checked
against skyfield's own pass events; why more stations made the 12 satellites' round
trips longer (docs/constellation.md, "Why more stations looked worse").

Provenance of the reference: skyfield 1.53 ``EarthSatellite.find_events`` over the
shipped TLEs (independent of our pass search except for the SGP4 C++ core both call),
turned into in-view intervals here; the earliest contact at or after a time is the
earliest moment, over those intervals, that a satellite is above the station's mask.
"""

from __future__ import annotations

import io
import json
import math
from datetime import datetime, timedelta

import pytest
from skyfield.api import EarthSatellite, load, wgs84

from linkstack.cli.main import Streams, main
from linkstack.errors import LocalProtocolError
from linkstack.sim.constellation.orbits import Satellite, load_tle, shipped_epoch
from linkstack.sim.constellation.simulation import (
    Query,
    SimConfig,
    contact_plan,
    longest_gap_s,
    poisson_queries,
    run_queries,
    simulate,
)
from linkstack.sim.constellation.stations import GroundStation, shipped_stations

HOURS = 24.0
TAIL_HOURS = 6.0
SPAN_S = (HOURS + TAIL_HOURS) * 3600.0
#: Our pass times agree with skyfield's within 0.25 s (test_constellation.py).
TOLERANCE_S = 1.0

Intervals = list[tuple[float, float]]
InView = dict[tuple[int, int], Intervals]
Setup = tuple[datetime, list[Satellite], list[GroundStation]]


@pytest.fixture(scope="module")
def setup() -> Setup:
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    stations = shipped_stations("stations10.toml")[:3]
    return start, sats, stations


@pytest.fixture(scope="module")
def in_view(setup: Setup) -> dict[tuple[int, int], Intervals]:
    """(satellite, station) -> the intervals, s from the start, with it above the mask."""
    start, sats, stations = setup
    ts = load.timescale(builtin=True)
    t0 = ts.from_datetime(start)
    t1 = ts.from_datetime(start + timedelta(seconds=SPAN_S))
    out: dict[tuple[int, int], Intervals] = {}
    for i, sat in enumerate(sats):
        line1, line2 = sat.tle_lines()
        earth_sat = EarthSatellite(line1, line2, ts=ts)
        for j, station in enumerate(stations):
            place = wgs84.latlon(
                station.latitude_deg, station.longitude_deg, elevation_m=station.altitude_m
            )
            times, kinds = earth_sat.find_events(
                place, t0, t1, altitude_degrees=station.min_elevation_deg
            )
            intervals: Intervals = []
            rise: float | None = 0.0 if len(kinds) and kinds[0] != 0 else None
            for t, kind in zip(times, kinds, strict=True):
                at = (t.utc_datetime() - start).total_seconds()
                if kind == 0:
                    rise = at
                elif kind == 2 and rise is not None:
                    intervals.append((rise, at))
                    rise = None
            if rise is not None:
                intervals.append((rise, SPAN_S))
            out[(i, j)] = intervals
    return out


def earliest(intervals: Intervals, t: float) -> float:
    """The first moment at or after ``t`` inside one of ``intervals`` (inf if none)."""
    return min((max(a, t) for a, b in intervals if b > t), default=math.inf)


def earliest_from(
    in_view: dict[tuple[int, int], Intervals], sats: range, stations: range, t: float
) -> dict[int, float]:
    """Per station: the first moment at or after ``t`` one of ``sats`` is in view."""
    return {j: min(earliest(in_view[(i, j)], t) for i in sats) for j in stations}


def test_query_goes_up_at_the_earliest_contact_of_its_own_station(
    setup: Setup, in_view: InView
) -> None:
    start, sats, stations = setup
    config = SimConfig(hours=HOURS, tail_hours=TAIL_HOURS, queries=300, seed=1)
    result = simulate(sats, stations, start, config)
    assert result.report["answered"] == 300
    waited = 0
    for o in result.outcomes:
        j = o.query.station
        reference = earliest_from(in_view, range(len(sats)), range(j, j + 1), o.query.arrival_s)
        assert o.up_station == stations[j].name
        assert o.up_at_s is not None and abs(o.up_at_s - reference[j]) < TOLERANCE_S
        waited += o.up_at_s > o.query.arrival_s + TOLERANCE_S
    assert waited > 100  # most queries arrive with no satellite in view


def test_query_forwarded_goes_up_wherever_a_satellite_is_first(
    setup: Setup, in_view: InView
) -> None:
    start, sats, stations = setup
    config = SimConfig(hours=HOURS, tail_hours=TAIL_HOURS, queries=300, seed=1, uplink="any")
    result = simulate(sats, stations, start, config)
    elsewhere = 0
    for o in result.outcomes:
        reference = earliest_from(in_view, range(len(sats)), range(3), o.query.arrival_s)
        first = min(reference.values())
        assert o.up_at_s is not None and abs(o.up_at_s - first) < TOLERANCE_S
        # The station it went up from had a satellite in view then.
        j = next(k for k, s in enumerate(stations) if s.name == o.up_station)
        assert reference[j] < first + TOLERANCE_S
        elsewhere += j != o.query.station
    assert elsewhere > 50


def test_every_bundle_comes_down_at_the_first_station_to_see_its_satellite(
    setup: Setup, in_view: InView
) -> None:
    start, sats, stations = setup
    # 4400 ids (100 s) per answer: many answers outlive their pass and change station.
    config = SimConfig(hours=HOURS, tail_hours=TAIL_HOURS, queries=200, seed=3, answer_tokens=4400)
    _, plan = contact_plan(sats, stations, start, config)
    queries = poisson_queries(config, len(stations))
    outcomes = run_queries(plan, queries, config)
    interval = 1.0 / config.model.tokens_per_s
    per_bundle = int(config.bundle_s * config.model.tokens_per_s)
    handed_over = 0
    for o in outcomes:
        assert o.failure is None and o.started_s is not None and o.satellite is not None
        # The bundles' times, as the timing model makes them: the first id alone, then
        # every per_bundle ids.
        made = [1, *range(1 + per_bundle, config.answer_tokens, per_bundle)]
        if made[-1] != config.answer_tokens:
            made.append(config.answer_tokens)
        first = o.started_s + config.model.first_token_s
        times = [first + (m - 1) * interval for m in made]
        assert len(o.down_via) == len(times)
        for at, via in zip(times, o.down_via, strict=True):
            reference = earliest_from(in_view, range(o.satellite, o.satellite + 1), range(3), at)
            best = min(reference.values())
            assert best < math.inf
            assert reference[[s.name for s in stations].index(via)] < best + TOLERANCE_S
        handed_over += len(set(o.down_via)) > 1
    # Seed 3: 21 answers come down at two stations, each changing once.
    assert handed_over == 21
    assert sum(o.handovers for o in outcomes) == 21


def test_own_uplink_ignores_the_other_stations_forwarding_never_waits_longer(setup: Setup) -> None:
    start, sats, _ = setup
    ten = shipped_stations("stations10.toml")
    config = SimConfig(hours=HOURS, tail_hours=TAIL_HOURS, queries=200, seed=5)
    # The same 200 queries, all arriving at Weilheim (station 0 of every set).
    queries = [Query(q.arrival_s, 0) for q in poisson_queries(config, 1)]
    up: dict[tuple[str, int], list[float]] = {}
    for uplink in ("own", "any"):
        for n in (1, 3, 10):
            _, plan = contact_plan(sats, ten[:n], start, config)
            forwarded = SimConfig(
                hours=HOURS, tail_hours=TAIL_HOURS, queries=200, seed=5, uplink=uplink
            )
            outcomes = run_queries(plan, queries, forwarded)
            up[(uplink, n)] = [o.up_at_s if o.up_at_s is not None else math.inf for o in outcomes]
    # Own station: adding stations changes nothing for a Weilheim query.
    assert up[("own", 1)] == up[("own", 3)] == up[("own", 10)]
    assert up[("any", 1)] == up[("own", 1)]
    # Forwarded: a superset of stations never makes a query wait longer, and helps.
    for one, three, ten_ in zip(up[("any", 1)], up[("any", 3)], up[("any", 10)], strict=True):
        assert ten_ <= three <= one
    wait = {
        n: sum(u - q.arrival_s for u, q in zip(up[("any", n)], queries, strict=True))
        for n in (1, 3, 10)
    }
    assert wait[10] < wait[3] < wait[1]


def test_per_station_report_gives_the_gaps_that_set_the_percentiles(
    setup: Setup, in_view: InView
) -> None:
    start, sats, stations = setup
    config = SimConfig(hours=HOURS, tail_hours=TAIL_HOURS, queries=1000, seed=1)
    report = simulate(sats, stations, start, config).report
    rows = {row["station"]: row for row in report["per_station"]}
    span = HOURS * 3600.0
    for j, station in enumerate(stations):
        merged = [iv for i in range(len(sats)) for iv in in_view[(i, j)]]
        reference_gap = longest_gap_s(merged, span)
        assert abs(rows[station.name]["longest_gap_s"] - reference_gap) < TOLERANCE_S
        assert rows[station.name]["passes"] == sum(1 for iv in merged if iv[0] < span)
    # The evidence of docs/constellation.md: Weilheim, near the shell's turning
    # latitude, never waits 20 minutes; Hartebeesthoek waits over four hours.
    assert rows["Weilheim"]["longest_gap_s"] < 20 * 60
    assert rows["Hartebeesthoek"]["longest_gap_s"] > 4 * 3600
    assert sum(row["queries"] for row in rows.values()) == 1000
    # The overall share under two minutes is the per-station shares, weighted by queries.
    weighted = sum(row["share_under_120_s"] * row["queries"] for row in rows.values()) / 1000
    assert weighted == pytest.approx(report["share_under_120_s"], abs=1e-3)


def test_longest_gap_by_hand() -> None:
    assert longest_gap_s([], 100.0) == 100.0
    assert longest_gap_s([(10.0, 20.0), (15.0, 30.0), (70.0, 80.0)], 100.0) == 40.0
    assert longest_gap_s([(0.0, 50.0), (90.0, 200.0)], 100.0) == 40.0
    assert longest_gap_s([(0.0, 100.0)], 100.0) == 0.0


def test_bad_uplink_and_station_index(setup: Setup) -> None:
    start, sats, stations = setup
    with pytest.raises(LocalProtocolError, match="uplink 'nearest' is not one of"):
        SimConfig(uplink="nearest")  # type: ignore[arg-type]
    config = SimConfig(hours=1, tail_hours=0, queries=0)
    _, plan = contact_plan(sats, stations, start, config)
    with pytest.raises(LocalProtocolError, match=r"station 3 is not 0\.\.2"):
        run_queries(plan, [Query(10.0, 3)], config)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(list(argv), Streams(io.BytesIO(), out, err))
    return code, out.getvalue().decode(), err.getvalue()


def test_cli_profile_uplink_and_per_station() -> None:
    argv = ["constellation", "simulate", "--queries", "20", "--hours", "3", "--seed", "2"]
    code, out, err = _cli(*argv, "--profile", "cpu-embedded", "--uplink", "any", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["config"]["model"] == {"first_token_s": 0.009, "tokens_per_s": 96.0}
    assert report["config"]["uplink"] == "any"
    assert [row["station"] for row in report["per_station"]] == [
        "Weilheim",
        "Hartebeesthoek",
        "Wallops",
    ]
    assert sum(row["queries"] for row in report["per_station"]) == 20
    code, out, err = _cli(*argv, "--profile", "cpu-embedded", "--tokens-per-s", "10", "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["model"] == {"first_token_s": 0.009, "tokens_per_s": 10.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--uplink", "nearest"), "invalid choice: 'nearest'"),
        (("--profile", "a100"), "invalid choice: 'a100'"),
        (("--first-token-s", "-1"), "--first-token-s -1.0 must be 0 or more"),
    ],
)
def test_cli_bad_profile_and_uplink(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli("constellation", "simulate", "--queries", "1", "--hours", "1", *argv)
    assert code == 2
    assert message in err + capsys.readouterr().err
