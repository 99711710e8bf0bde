"""Queries through a constellation on a virtual clock: up at the earliest contact
from the station where the query arrived (or, with ``uplink="any"``, from whichever
station sees a satellite first: a ground network that forwards queries), answered on
board, the answer routed down (through inter-satellite links when there are any) to
whichever station can take it first.

Each satellite runs one request at a time, first come first served, timed by
:class:`ModelTiming` (time to first id, then ids per second).  The answer leaves the
satellite as bundles: the first id alone (so that the time to first token is the
link's, not the batching's), then the ids made in each ``bundle_s`` of generation.
Every bundle is routed by :class:`~linkstack.sim.constellation.routing.Router` when it
is made, in time order from one event queue: idle time costs nothing.  A query's round
trip runs from its arrival at its station to the arrival on the ground of its last
id; a change of (satellite, station) between successive bundles of one answer is a
handover.  Everything random comes from ``seed``: the same inputs give the same JSON.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import link_profile
from linkstack.sim.constellation.contacts import (
    SPEED_OF_LIGHT_KM_S,
    Geometry,
    IslWindow,
    Pass,
    Topology,
    find_passes,
    isl_pairs,
    isl_windows,
)
from linkstack.sim.constellation.orbits import Satellite, Window
from linkstack.sim.constellation.routing import Contact, Router, _Series
from linkstack.sim.constellation.stations import GroundStation

#: Octets per token id on the link and per bundle of framing (Space Packet, TokenChunk
#: and frame headers, amortized): an estimate for the routing's volume accounting.
OCTETS_PER_ID: Final = 4
OCTETS_PER_BUNDLE: Final = 32
#: The round trip the project aims at, s.
TARGET_S: Final = 120.0

#: Where a query goes up: "own", from the station where it arrived (the issue's rule);
#: "any", from whichever station sees a satellite first (the ground network forwards
#: the query, in no time).
Uplink = Literal["own", "any"]
UPLINKS: Final[tuple[Uplink, ...]] = ("own", "any")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTiming:
    """The onboard model as a timing model.  Defaults: Qwen3-0.6B-shaped model in bf16
    on one NVIDIA H200, one request at a time: 23 ms to the first id, 44 ids/s."""

    first_token_s: float = 0.023
    tokens_per_s: float = 44.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.first_token_s) and self.first_token_s >= 0):
            raise LocalProtocolError(f"time to first token {self.first_token_s} s is not >= 0")
        if not (math.isfinite(self.tokens_per_s) and self.tokens_per_s > 0):
            raise LocalProtocolError(f"{self.tokens_per_s} tokens/s is not positive")


#: Named timing profiles (docs/constellation.md, "Timing profiles"), one request at a
#: time.  "h200": a Qwen3-0.6B-shaped model in bf16 on one NVIDIA H200.  "cpu-embedded":
#: the embedded test model (Qwen3ForCausalLM, 9.8M parameters, 2 layers, float32) on
#: this project's 2-core CPU machine, one thread, measured with bench/bench_onboard.py
#: (64-id prompt, 256 ids, median of 5).
PROFILES: Final[dict[str, ModelTiming]] = {
    "h200": ModelTiming(first_token_s=0.023, tokens_per_s=44.0),
    "cpu-embedded": ModelTiming(first_token_s=0.009, tokens_per_s=96.0),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    hours: float = 24.0
    queries: int = 1000
    seed: int = 0
    #: Inter-satellite links: "none", "plane" or "grid" (docs/constellation.md).
    isl: Topology = "none"
    uplink: Uplink = "own"
    isl_max_range_km: float = 5000.0
    isl_rate_bps: float = 10e6
    #: Each relay satellite's store-and-forward buffer, octets.
    buffer_octets: int = 1_000_000
    prompt_tokens: int = 64
    answer_tokens: int = 256
    bundle_s: float = 2.0
    #: The contact plan runs this long past the query window, so late queries finish.
    tail_hours: float = 6.0
    step_s: float = 30.0
    tolerance_s: float = 0.01
    model: ModelTiming = field(default_factory=ModelTiming)

    def __post_init__(self) -> None:
        for name in ("hours", "bundle_s", "step_s", "tolerance_s", "isl_max_range_km"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LocalProtocolError(f"{name} {value} must be positive")
        if self.uplink not in UPLINKS:
            raise LocalProtocolError(f"uplink {self.uplink!r} is not one of {UPLINKS}")
        if self.tail_hours < 0 or self.queries < 0 or self.answer_tokens < 1:
            raise LocalProtocolError(
                f"tail_hours {self.tail_hours}, queries {self.queries}, answer_tokens"
                f" {self.answer_tokens}: out of range"
            )


@dataclass(frozen=True, slots=True)
class Query:
    arrival_s: float
    station: int


@dataclass(slots=True)
class QueryOutcome:
    query: Query
    satellite: int | None = None
    #: The station the query went up from and when it left it.
    up_station: str | None = None
    up_at_s: float | None = None
    onboard_s: float | None = None
    #: When the satellite's model took the query (later than on board when busy).
    started_s: float | None = None
    first_token_s: float | None = None
    round_trip_s: float | None = None
    handovers: int = 0
    tokens_delivered: int = 0
    #: The station each delivered bundle of the answer came down at, in order.
    down_via: list[str] = field(default_factory=list)
    #: None when answered; else "no contact" (never got up) or "no route down".
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class ContactPlan:
    passes: list[Pass]
    isl: list[IslWindow]
    contacts: list[Contact]
    uplinks: list[list[Contact]]
    nodes: int
    sink: int


def poisson_queries(config: SimConfig, stations: int) -> list[Query]:
    """``config.queries`` arrivals of a Poisson process over the window (given the
    count, their times are uniform order statistics), each at a station drawn uniformly."""
    rng = random.Random(config.seed)
    span = config.hours * 3600.0
    times = sorted(rng.uniform(0.0, span) for _ in range(config.queries))
    return [Query(t, rng.randrange(stations)) for t in times]


def load_trace(path: str | Path, stations: Sequence[GroundStation], hours: float) -> list[Query]:
    """Queries from a trace file: one ``seconds,station-name`` per line, ``#`` comments."""
    names = {s.name: i for i, s in enumerate(stations)}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LocalProtocolError(f"{path}: {reason}") from None
    queries = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise LocalProtocolError(f"{path} line {number}: expected 'seconds,station'")
        try:
            at = float(parts[0])
        except ValueError:
            raise LocalProtocolError(f"{path} line {number}: {parts[0]!r} is not seconds") from None
        if not (math.isfinite(at) and 0 <= at <= hours * 3600):
            raise LocalProtocolError(
                f"{path} line {number}: {parts[0]} s is outside the window 0..{hours * 3600:g}"
            )
        if parts[1] not in names:
            raise LocalProtocolError(f"{path} line {number}: unknown station {parts[1]!r}")
        queries.append(Query(at, names[parts[1]]))
    return sorted(queries, key=lambda q: q.arrival_s)


def contact_plan(
    sats: Sequence[Satellite],
    stations: Sequence[GroundStation],
    start: datetime,
    config: SimConfig,
) -> tuple[Geometry, ContactPlan]:
    window = Window.at(start, (config.hours + config.tail_hours) * 3600.0)
    geo = Geometry(sats, stations, window)
    passes = find_passes(geo, step_s=config.step_s, tolerance_s=config.tolerance_s)
    n = len(sats)
    sink = n
    contacts: list[Contact] = []
    uplinks: list[list[Contact]] = [[] for _ in stations]
    if passes:
        sat_idx = np.array([p.sat_index for p in passes], dtype=np.int64)
        st_idx = np.array([p.station_index for p in passes], dtype=np.int64)
        at_rise = geo.slant_km(sat_idx, st_idx, np.array([p.rise_s for p in passes]))
        at_set = geo.slant_km(sat_idx, st_idx, np.array([p.set_s for p in passes]))
        longest = np.maximum(at_rise, at_set) / SPEED_OF_LIGHT_KM_S
    profiles = {s.link: link_profile(s.link) for s in stations}
    for k, p in enumerate(passes):
        profile = profiles[stations[p.station_index].link]
        owlt = float(longest[k])
        uplinks[p.station_index].append(
            Contact(
                n + 1 + p.station_index,
                p.sat_index,
                p.rise_s,
                p.set_s,
                profile.uplink.rate_bps,
                owlt,
                label=p.station,
            )
        )
        contacts.append(
            Contact(
                p.sat_index,
                sink,
                p.rise_s,
                p.set_s,
                profile.downlink.rate_bps,
                owlt,
                label=p.station,
            )
        )
    isl: list[IslWindow] = []
    if config.isl != "none":
        isl = isl_windows(
            geo,
            isl_pairs(sats, config.isl),
            max_range_km=config.isl_max_range_km,
            step_s=config.step_s,
        )
        for w in isl:
            owlt = w.max_range_km / SPEED_OF_LIGHT_KM_S
            contacts.append(Contact(w.a, w.b, w.start_s, w.end_s, config.isl_rate_bps, owlt))
            contacts.append(Contact(w.b, w.a, w.start_s, w.end_s, config.isl_rate_bps, owlt))
    plan = ContactPlan(passes, isl, contacts, uplinks, n + 1 + len(stations), sink)
    return geo, plan


def run_queries(
    plan: ContactPlan, queries: Sequence[Query], config: SimConfig
) -> list[QueryOutcome]:
    """Every query up, through its satellite's model and down: the outcomes, in order."""
    router = Router(plan.nodes, plan.contacts, config.buffer_octets * 8.0)
    if config.uplink == "own":
        up_series = [_Series(ups) for ups in plan.uplinks]
    else:
        every = _Series([c for ups in plan.uplinks for c in ups])
        up_series = [every] * len(plan.uplinks)
    outcomes = [QueryOutcome(q) for q in queries]
    prompt_bits = (config.prompt_tokens * OCTETS_PER_ID + OCTETS_PER_BUNDLE) * 8.0
    arrivals: list[tuple[float, int, int]] = []  # (on board, query, satellite)
    for i, q in enumerate(queries):
        if not 0 <= q.station < len(up_series):
            raise LocalProtocolError(
                f"query at {q.arrival_s} s: station {q.station} is not 0..{len(up_series) - 1}"
            )
        found = up_series[q.station].next(q.arrival_s, prompt_bits)
        if found is None:
            outcomes[i].failure = "no contact"
            continue
        contact, depart = found
        contact.residual_bits -= prompt_bits
        onboard = depart + prompt_bits / contact.rate_bps + contact.owlt_s
        outcomes[i].up_station, outcomes[i].up_at_s = contact.label, depart
        arrivals.append((onboard, i, contact.to))
    arrivals.sort()
    model = config.model
    free = [0.0] * plan.sink
    events: list[tuple[float, int, int, int]] = []  # (made at, query, bundle, ids in it)
    for onboard, i, sat in arrivals:
        start = max(onboard, free[sat])
        first = start + model.first_token_s
        interval = 1.0 / model.tokens_per_s
        last = first + (config.answer_tokens - 1) * interval
        free[sat] = last
        outcomes[i].satellite, outcomes[i].onboard_s = sat, onboard
        outcomes[i].started_s = start
        heapq.heappush(events, (first, i, 0, 1))
        made, bundle = 1, 1
        per_bundle = max(1, int(config.bundle_s * model.tokens_per_s))
        while made < config.answer_tokens:
            count = min(per_bundle, config.answer_tokens - made)
            made += count
            heapq.heappush(events, (first + (made - 1) * interval, i, bundle, count))
            bundle += 1
    last_link: dict[int, tuple[int, str]] = {}
    done: dict[int, float] = {}
    while events:
        at, i, bundle, count = heapq.heappop(events)
        outcome = outcomes[i]
        if outcome.failure is not None:
            continue
        bits = (count * OCTETS_PER_ID + OCTETS_PER_BUNDLE) * 8.0
        assert outcome.satellite is not None
        hops = router.route(outcome.satellite, plan.sink, at, bits)
        if hops is None:
            outcome.failure = "no route down"
            continue
        router.book(hops, bits)
        down = hops[-1]
        link = (down.contact.frm, down.contact.label)
        if i in last_link and last_link[i] != link:
            outcome.handovers += 1
        last_link[i] = link
        outcome.down_via.append(down.contact.label)
        outcome.tokens_delivered += count
        if bundle == 0:
            outcome.first_token_s = down.arrive - outcome.query.arrival_s
        done[i] = max(done.get(i, 0.0), down.arrive)
    for i, outcome in enumerate(outcomes):
        if outcome.failure is None and i in done:
            outcome.round_trip_s = done[i] - outcome.query.arrival_s
    return outcomes


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {key: None for key in ("p50", "p90", "p95", "p99", "max", "mean")}
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p90": round(float(np.percentile(arr, 90)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
        "mean": round(float(arr.mean()), 3),
    }


def longest_gap_s(windows: Sequence[tuple[float, float]], span_s: float) -> float:
    """The longest stretch of ``[0, span_s]`` covered by none of the (rise, set)
    ``windows`` of one station: how long a query arriving there can wait for an uplink."""
    longest, free_from = 0.0, 0.0
    for rise, set_ in sorted(windows):
        if rise >= span_s:
            break
        longest = max(longest, rise - free_from)
        free_from = max(free_from, set_)
    return max(longest, span_s - free_from)


def per_station(
    plan: ContactPlan,
    outcomes: Sequence[QueryOutcome],
    names: Sequence[str],
    span_s: float,
) -> list[dict[str, Any]]:
    """Per station of arrival: passes rising in the query window, the longest gap
    without a satellite in view, and the round trips of the queries that arrived there."""
    windows: list[list[tuple[float, float]]] = [[] for _ in names]
    for p in plan.passes:
        windows[p.station_index].append((p.rise_s, p.set_s))
    arrived: list[list[QueryOutcome]] = [[] for _ in names]
    for o in outcomes:
        arrived[o.query.station].append(o)
    rows = []
    for j, name in enumerate(names):
        trips = [o.round_trip_s for o in arrived[j] if o.round_trip_s is not None]
        stats = _stats(trips)
        count = len(arrived[j])
        rows.append(
            {
                "station": name,
                "passes": sum(1 for rise, _ in windows[j] if rise < span_s),
                "longest_gap_s": round(longest_gap_s(windows[j], span_s), 1),
                "queries": count,
                "round_trip_p50_s": stats["p50"],
                "round_trip_p95_s": stats["p95"],
                "share_under_120_s": round(sum(1 for t in trips if t <= TARGET_S) / count, 4)
                if count
                else None,
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class SimResult:
    report: dict[str, Any]
    outcomes: list[QueryOutcome]
    plan: ContactPlan
    geometry: Geometry


def simulate(
    sats: Sequence[Satellite],
    stations: Sequence[GroundStation],
    start: datetime,
    config: SimConfig,
    *,
    queries: Sequence[Query] | None = None,
    source: str = "",
) -> SimResult:
    geo, plan = contact_plan(sats, stations, start, config)
    chosen = poisson_queries(config, len(stations)) if queries is None else list(queries)
    outcomes = run_queries(plan, chosen, config)
    answered = [o for o in outcomes if o.round_trip_s is not None]
    trips = [o.round_trip_s for o in answered if o.round_trip_s is not None]
    firsts = [o.first_token_s for o in answered if o.first_token_s is not None]
    total = len(outcomes)
    report: dict[str, Any] = {
        "constellation": {
            "satellites": len(sats),
            "source": source,
            "planes": len({s.plane for s in sats}),
        },
        "stations": [s.name for s in stations],
        "window": {
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hours": config.hours,
            "plan_hours": config.hours + config.tail_hours,
        },
        "seed": config.seed,
        "config": {k: v for k, v in asdict(config).items() if k not in ("seed", "hours")},
        "contact_plan": {"passes": len(plan.passes), "isl_windows": len(plan.isl)},
        "queries": total,
        "answered": len(answered),
        "no_contact": sum(1 for o in outcomes if o.failure == "no contact"),
        "no_route_down": sum(1 for o in outcomes if o.failure == "no route down"),
        "round_trip_s": _stats(trips),
        # Where the round trip goes: waiting at the ground for a contact, queued behind
        # other queries on board, and from the model taking it to the last id down.
        "round_trip_parts_s": {
            "uplink_wait": _stats(
                [o.up_at_s - o.query.arrival_s for o in answered if o.up_at_s is not None]
            ),
            "onboard_queue": _stats(
                [
                    o.started_s - o.onboard_s
                    for o in answered
                    if o.started_s is not None and o.onboard_s is not None
                ]
            ),
            "answer": _stats(
                [
                    o.query.arrival_s + o.round_trip_s - o.started_s
                    for o in answered
                    if o.round_trip_s is not None and o.started_s is not None
                ]
            ),
        },
        "time_to_first_token_s": _stats(firsts),
        "share_under_120_s": round(sum(1 for t in trips if t <= TARGET_S) / total, 4)
        if total
        else None,
        "tokens_delivered": sum(o.tokens_delivered for o in outcomes),
        "handovers": sum(o.handovers for o in outcomes),
        "per_station": per_station(
            plan, outcomes, [s.name for s in stations], config.hours * 3600.0
        ),
    }
    return SimResult(report, outcomes, plan, geo)
