"""Parameter sweeps: every case's row is the report ``simulate`` gives for it alone,
the Ray engine's JSON is the local engine's, bad sweeps are refused naming the axis.

The Ray test starts a local Ray (one CPU, no dashboard); it skips where Ray is not
installed (``pip install 'linkstack[ray]'``: Ray is not in the ``all`` extra).
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import replace

import pytest

from linkstack.cli.main import Streams, main
from linkstack.errors import LocalProtocolError
from linkstack.sim.constellation.orbits import Walker, load_tle, shipped_epoch
from linkstack.sim.constellation.simulation import SimConfig, simulate
from linkstack.sim.constellation.stations import shipped_stations
from linkstack.sim.constellation.sweep import Sweep, run_sweep

CONFIG = SimConfig(hours=3, tail_hours=2, queries=40)


def _sweep(**changes: object) -> Sweep:
    base = Sweep(
        constellations=("shipped", "8/2/1"),
        station_counts=(1, 3),
        isls=("none", "grid"),
        seeds=(1, 2),
        stations=tuple(shipped_stations("stations10.toml")),
        start=shipped_epoch(),
        config=CONFIG,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _dump(document: dict[str, object]) -> str:
    return json.dumps(document, sort_keys=True)


def test_local_sweep_rows_are_the_single_runs() -> None:
    sweep = _sweep()
    document = run_sweep(sweep)
    cases = document["cases"]
    assert [(c["constellation"], c["stations"], c["isl"], c["seed"]) for c in cases] == [
        (k, n, isl, seed)
        for k in ("shipped", "8/2/1")
        for n in (1, 3)
        for isl in ("none", "grid")
        for seed in (1, 2)
    ]
    start = shipped_epoch()
    ten = shipped_stations("stations10.toml")
    for case in (cases[0], cases[-1]):
        if case["constellation"] == "shipped":
            sats, source = load_tle(None, window_start=start), "shipped 12 (synthetic)"
        else:
            sats = Walker.parse("8/2/1", altitude_km=550, inclination_deg=53).satellites(start)
            source = "8/2/1"
        config = replace(CONFIG, isl=case["isl"], seed=case["seed"])
        alone = simulate(sats, ten[: case["stations"]], start, config, source=source).report
        assert _dump(case["report"]) == _dump(alone)
    # Seeds change the arrivals; the same seed gives the same report.
    assert _dump(cases[0]["report"]) != _dump(cases[1]["report"])
    assert _dump(run_sweep(sweep)) == _dump(document)


@pytest.mark.slow  # a local Ray takes 10-20 s to start
def test_ray_engine_gives_the_local_json() -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'linkstack[ray]'")
    sweep = _sweep(constellations=("shipped",), isls=("grid",))
    local = run_sweep(sweep, engine="local")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(sweep, engine="ray")
        assert ray.is_initialized()  # the caller's instance is left running
    finally:
        ray.shutdown()
    assert len(remote["cases"]) == 4
    assert _dump(remote) == _dump(local)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"station_counts": (0,)}, r"station count 0 is not 1\.\.10"),
        ({"station_counts": (11,)}, r"station count 11 is not 1\.\.10"),
        ({"seeds": ()}, "sweep: no seeds"),
        ({"isls": ("mesh",)}, "ISL topology 'mesh' is not one of"),
        ({"constellations": ("10/3/1",)}, "Walker 10/3/1"),
    ],
)
def test_bad_sweeps(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        _sweep(**changes)


def test_bad_engine_and_ray_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = _sweep(constellations=("shipped",), station_counts=(1,), isls=("none",), seeds=(1,))
    with pytest.raises(LocalProtocolError, match="engine 'spark' is not one of"):
        run_sweep(sweep, engine="spark")  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(LocalProtocolError, match=r"engine 'ray' needs Ray: pip install"):
        run_sweep(sweep, engine="ray")


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(list(argv), Streams(io.BytesIO(), out, err))
    return code, out.getvalue().decode(), err.getvalue()


def test_cli_sweep_json() -> None:
    argv = ["constellation", "sweep", "--station-counts", "1,3", "--isl", "none"]
    code, out, err = _run(*argv, "--seeds", "1,2", "--queries", "30", "--hours", "3")
    assert code == 0, err
    document = json.loads(out)
    assert document["sweep"]["station_counts"] == [1, 3]
    assert [c["seed"] for c in document["cases"]] == [1, 2, 1, 2]
    assert all(c["report"]["queries"] == 30 for c in document["cases"])
    assert "4 cases in" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--isl", "none,mesh"), "'mesh' is not one of none, plane, grid"),
        (("--station-counts", "1,,3"), "an empty item in the list"),
        (("--station-counts", "12"), "station count 12 is not 1..10"),
        (("--constellations", "10/3/1"), "Walker 10/3/1"),
        (("--engine", "spark"), "invalid choice: 'spark'"),
        (("--queries", "-1"), "--queries -1 must be 0 or more"),
    ],
)
def test_cli_sweep_bad_input(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run("constellation", "sweep", *argv)
    assert code == 2
    assert message in err + capsys.readouterr().err
