"""The constellation: passes against skyfield's own find_events, light time against
skyfield's range, TLE and station files refused with the line or field named, contact
graph routing on hand-made plans, the simulation's determinism and the command line.

Provenance of the references: skyfield 1.53 (``EarthSatellite.find_events``, the
topocentric ``distance()``), an implementation independent of ours except for the
SGP4 C++ core both call.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84

from linkstack.cli.main import Streams, main
from linkstack.radio.channel import SPEED_OF_LIGHT_M_S
from linkstack.sim.constellation.contacts import (
    Geometry,
    doppler_hz,
    find_passes,
    isl_pairs,
    one_way_delay_s,
)
from linkstack.sim.constellation.orbits import (
    TleError,
    Walker,
    Window,
    load_tle,
    parse_tle,
    shipped_epoch,
)
from linkstack.sim.constellation.routing import Contact, Router
from linkstack.sim.constellation.simulation import (
    Query,
    SimConfig,
    contact_plan,
    run_queries,
    simulate,
)
from linkstack.sim.constellation.stations import (
    GroundStation,
    StationError,
    load_stations,
    parse_stations,
)

DATA = Path(__file__).parents[1] / "linkstack/sim/constellation/data"
TLE_TEXT = (DATA / "constellation12.tle").read_text()
HOURS = 24


@pytest.fixture(scope="module")
def shipped() -> tuple[Geometry, list]:
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    geo = Geometry(sats, load_stations(), Window.at(start, HOURS * 3600.0))
    return geo, find_passes(geo)


def _tle_pairs() -> list[tuple[str, str]]:
    lines = [line for line in TLE_TEXT.splitlines() if line[:2] in ("1 ", "2 ")]
    return list(zip(lines[::2], lines[1::2], strict=True))


def test_passes_match_skyfield_find_events(shipped: tuple[Geometry, list]) -> None:
    geo, passes = shipped
    ts = load.timescale(builtin=True)
    start = geo.window.start
    t0, t1 = ts.from_datetime(start), ts.from_datetime(start + timedelta(hours=HOURS))
    compared = 0
    for i, (line1, line2) in enumerate(_tle_pairs()):
        sat = EarthSatellite(line1, line2, ts=ts)
        for j, station in enumerate(geo.stations):
            place = wgs84.latlon(
                station.latitude_deg, station.longitude_deg, elevation_m=station.altitude_m
            )
            times, kinds = sat.find_events(
                place, t0, t1, altitude_degrees=station.min_elevation_deg
            )
            reference = [
                ((t.utc_datetime() - start).total_seconds(), int(k))
                for t, k in zip(times, kinds, strict=True)
            ]
            ours = []
            for p in passes:
                if (p.sat_index, p.station_index) != (i, j):
                    continue
                if not p.clipped_rise:
                    ours.append((p.rise_s, 0))
                if 1.0 < p.culmination_s < geo.window.duration_s - 1.0:
                    ours.append((p.culmination_s, 1))
                if not p.clipped_set:
                    ours.append((p.set_s, 2))
            ours.sort()
            assert [k for _, k in ours] == [k for _, k in reference], (i, j)
            for (mine, _), (theirs, _) in zip(ours, reference, strict=True):
                assert abs(mine - theirs) < 1.0
                compared += 1
    assert compared > 400  # 185 passes of 12 satellites over 3 stations in 24 h


def test_delay_is_range_over_c_and_doppler_sign(shipped: tuple[Geometry, list]) -> None:
    geo, passes = shipped
    p = max(passes, key=lambda p: p.max_elevation_deg)
    times = np.linspace(p.rise_s, p.set_s, 7)
    ts = load.timescale(builtin=True)
    line1, line2 = _tle_pairs()[p.sat_index]
    sat = EarthSatellite(line1, line2, ts=ts)
    station = geo.stations[p.station_index]
    place = wgs84.latlon(
        station.latitude_deg, station.longitude_deg, elevation_m=station.altitude_m
    )
    t = ts.from_datetimes([geo.window.start + timedelta(seconds=float(s)) for s in times])
    reference_km = (sat - place).at(t).distance().km
    delay = one_way_delay_s(geo, p, times)
    np.testing.assert_allclose(delay, reference_km * 1e3 / SPEED_OF_LIGHT_M_S, rtol=1e-5)
    doppler = doppler_hz(geo, p, times, carrier_hz=2.2e9)
    assert doppler[0] > 40e3 and doppler[-1] < -40e3  # approaching, then receding
    culmination = doppler_hz(geo, p, np.array([p.culmination_s]), carrier_hz=2.2e9)
    assert abs(culmination[0]) < 2e3


# -- bad input ------------------------------------------------------------------------------


def _first_set() -> list[str]:
    return [line for line in TLE_TEXT.splitlines() if not line.startswith("#")][:3]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda ls: [ls[0], ls[1][:-1] + str((int(ls[1][-1]) + 1) % 10), ls[2]],
            "line 2: checksum",
        ),
        (lambda ls: [ls[0], ls[1][:60], ls[2]], "line 2: a TLE line 1 has 69 columns"),
        (lambda ls: [ls[0], ls[1]], "line 2: TLE line 1 without a line 2"),
        (lambda ls: [ls[0], ls[2], ls[1]], "f.tle line 2: TLE line 2 without a line 1"),
        (lambda ls: ["X", ls[2]], "line 2: TLE line 2 without a line 1"),
        (lambda ls: [ls[0]], "name 'LINKSTACK-11' without TLE lines"),
    ],
)
def test_malformed_tle_names_the_line(mutate, message: str) -> None:
    with pytest.raises(TleError, match=message):
        parse_tle("\n".join(mutate(_first_set())) + "\n", source="f.tle")


def test_catalogue_number_mismatch() -> None:
    lines = [line for line in TLE_TEXT.splitlines() if not line.startswith("#")]
    with pytest.raises(
        TleError, match=r"f\.tle line 2: catalogue number 90002 differs from line 1's 90001"
    ):
        parse_tle("\n".join([lines[1], lines[5]]), source="f.tle")


def test_expired_tle() -> None:
    late = shipped_epoch() + timedelta(days=100)
    with pytest.raises(TleError, match=r"constellation12.tle line 9: expired: epoch 2025-03-01"):
        load_tle(None, window_start=late)
    assert len(load_tle(None, window_start=late, max_age_days=200)) == 12


def test_walker_pattern_and_planes() -> None:
    sats = Walker.parse("12/3/1", altitude_km=550, inclination_deg=53).satellites(shipped_epoch())
    again = parse_tle("\n".join(line for s in sats for line in s.tle_lines()))
    assert [(s.plane, s.slot) for s in again] == [(s.plane, s.slot) for s in sats]
    assert abs(sats[0].altitude_km - 550) < 1e-6
    assert isl_pairs(sats, "plane") == [
        (0, 1),
        (0, 3),
        (1, 2),
        (2, 3),
        (4, 5),
        (4, 7),
        (5, 6),
        (6, 7),
        (8, 9),
        (8, 11),
        (9, 10),
        (10, 11),
    ]
    assert len(isl_pairs(sats, "grid")) == 24
    for text in ("12/5/1", "12/3/3", "12-3-1", "0/1/0"):
        with pytest.raises(Exception, match="Walker"):
            Walker.parse(text, altitude_km=550, inclination_deg=53)


STATION = """[[station]]
name = "X"
latitude_deg = {lat}
longitude_deg = 10.0
altitude_m = 0.0
min_elevation_deg = 10.0
link = "{link}"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (STATION.format(lat=95.0, link="s-band"), "latitude_deg 95.0 is outside -90..90"),
        (STATION.format(lat=-91, link="s-band"), "latitude_deg -91.0 is outside"),
        (STATION.format(lat="nan", link="s-band"), "latitude_deg nan"),
        (STATION.format(lat=10, link="ka"), "link 'ka' is not one of"),
        (STATION.format(lat='"north"', link="s-band"), "latitude_deg 'north' is not a number"),
        (
            STATION.format(lat=10, link="uhf").replace("altitude_m = 0.0", "altitude_m = 12000.0"),
            "altitude_m 12000.0 is outside -500..9000",
        ),
        (STATION.format(lat=10, link="uhf").replace('name = "X"\n', ""), "missing field 'name'"),
        (STATION.format(lat=10, link="uhf") + "colour = 1\n", "unknown field 'colour'"),
        (STATION.format(lat=10, link="uhf") * 2, "station name 'X' is used twice"),
        ("[[station]\n", "not TOML"),
        ("", "no \\[\\[station\\]\\] tables"),
    ],
)
def test_impossible_stations(text: str, message: str) -> None:
    with pytest.raises(StationError, match=message):
        parse_stations(text, source="s.toml")


def _polar_station() -> GroundStation:
    # 53-deg orbits at 550 km never rise 10 deg above a station at 89 deg of latitude.
    return GroundStation("Pole", 89.0, 0.0, 0.0, 10.0, "s-band")


def test_window_without_contact_answers_no_contact() -> None:
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    config = SimConfig(hours=2, queries=5, tail_hours=1)
    result = simulate(sats, [_polar_station()], start, config)
    assert result.plan.passes == []
    assert result.report["answered"] == 0
    assert result.report["no_contact"] == 5
    assert result.report["round_trip_s"]["p50"] is None


# -- routing --------------------------------------------------------------------------------


def test_cgr_routes_through_a_relay_and_respects_volume() -> None:
    # Nodes: 0 (source), 1 (relay), 2 (ground).  0 sees the ground only at 100 s; the
    # ISL 0->1 is open now and 1 sees the ground from 10 s.
    contacts = [
        Contact(0, 2, 100.0, 200.0, 1000.0, 0.004, label="B"),
        Contact(0, 1, 0.0, 50.0, 1000.0, 0.01),
        Contact(1, 2, 10.0, 12.0, 1000.0, 0.003, label="A"),
    ]
    router = Router(3, contacts, buffer_bits=10_000)
    hops = router.route(0, 2, 1.0, 1000.0)
    assert hops is not None and [h.contact.label for h in hops] == ["isl", "A"]
    assert hops[-1].arrive == pytest.approx(10.0 + 1.0 + 0.003)
    router.book(hops, 1000.0)
    # Contact A (2 s x 1000 bit/s) has 1000 bits left: a second 1500-bit bundle waits
    # for the source's own pass.
    second = router.route(0, 2, 1.0, 1500.0)
    assert second is not None and [h.contact.label for h in second] == ["B"]
    assert second[0].depart == 100.0


def test_cgr_relay_buffer_bound() -> None:
    contacts = [
        Contact(0, 1, 0.0, 50.0, 1e6, 0.0),
        Contact(1, 2, 40.0, 60.0, 1e6, 0.0, label="A"),
        Contact(0, 2, 80.0, 90.0, 1e6, 0.0, label="B"),
    ]
    router = Router(3, contacts, buffer_bits=1500)
    first = router.route(0, 2, 0.0, 1000.0)
    assert first is not None and first[-1].contact.label == "A"
    router.book(first, 1000.0)
    # The relay holds 1000 of its 1500 bits from ~0 s to 40 s: no room for 1000 more.
    second = router.route(0, 2, 1.0, 1000.0)
    assert second is not None and [h.contact.label for h in second] == ["B"]


def test_answer_across_loss_of_signal_hands_over() -> None:
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    config = SimConfig(hours=3, queries=0, answer_tokens=4400, tail_hours=3)
    _, plan = contact_plan(sats, load_stations(), start, config)
    first = plan.passes[0]
    # A 100 s answer started 20 s before the pass ends must finish on another pass.
    query = Query(first.set_s - 60.0, first.station_index)
    (outcome,) = run_queries(plan, [query], config)
    assert outcome.failure is None
    assert outcome.tokens_delivered == 4400
    assert outcome.handovers >= 1
    assert outcome.round_trip_s is not None and outcome.round_trip_s > 100


def test_same_seed_same_report() -> None:
    start = shipped_epoch()
    sats = load_tle(None, window_start=start)
    config = SimConfig(hours=6, queries=50, seed=4, isl="grid")
    a = simulate(sats, load_stations(), start, config).report
    b = simulate(sats, load_stations(), start, config).report
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["answered"] == 50 and a["tokens_delivered"] == 50 * 256


# -- the command line -----------------------------------------------------------------------


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(list(argv), Streams(io.BytesIO(), out, err))
    return code, out.getvalue().decode(), err.getvalue()


def test_cli_passes_json(shipped: tuple[Geometry, list]) -> None:
    code, out, err = _run("constellation", "passes", "--hours", "24", "--json")
    assert code == 0, err
    document = json.loads(out)
    _, passes = shipped
    assert len(document["passes"]) == len(passes)
    assert document["passes"][0]["rise"].startswith("2025-03-01T")


def test_cli_no_contact(tmp_path: Path) -> None:
    path = tmp_path / "pole.toml"
    path.write_text(STATION.format(lat=89.0, link="s-band"))
    code, out, _ = _run("constellation", "passes", "--hours", "3", "--stations", str(path))
    assert code == 0 and out.startswith(
        "no contact between 2025-03-01T00:00:00.000Z and 2025-03-01T03:00:00.000Z"
    )


def test_cli_simulate_json(tmp_path: Path) -> None:
    code, out, err = _run(
        "constellation",
        "simulate",
        "--queries",
        "20",
        "--hours",
        "4",
        "--isl",
        "--seed",
        "2",
        "--json",
        "--plot",
        str(tmp_path),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["queries"] == 20 and report["config"]["isl"] == "grid"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "contact_timeline.png",
        "ground_tracks.png",
        "round_trip_cdf.png",
    ]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("--walker", "10/3/1"), 2, "--walker: Walker 10/3/1: T must be a positive multiple"),
        (("--walker", "12/3/1", "--tle", "x.tle"), 2, "--tle and --walker exclude"),
        (("--tle", "/nonexistent.tle"), 1, "/nonexistent.tle: No such file"),
        (("--hours", "-1"), 2, "not a positive number"),
        (("--start", "yesterday"), 2, "not an ISO 8601 time"),
    ],
)
def test_cli_bad_input(
    argv: tuple[str, ...], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, _, err = _run("constellation", "passes", *argv)
    assert got == code
    assert message in err + capsys.readouterr().err  # argparse writes to sys.stderr


def test_cli_bad_tle_file(tmp_path: Path) -> None:
    lines = _first_set()
    path = tmp_path / "bad.tle"
    path.write_text("\n".join([lines[0], lines[1], lines[2][:-1] + "0"]) + "\n")
    code, _, err = _run("constellation", "passes", "--tle", str(path))
    assert code == 1
    assert f"linkstack: {path} line 3: checksum" in err
