"""The queries of a constellation run on the real stack (``simulate --stack real``).

The timing model (:mod:`~linkstack.sim.constellation.simulation`) decides where each
query goes: its satellite, and when it leaves the ground (the first contact its
uplink rule allows).  Here each answered query then runs on the mission simulator
(:mod:`linkstack.sim.mission`: COP-1 up, the token stream and its recovery down,
SDLS when keys are given) on its own virtual clock, which starts when the query
leaves the ground:

- the link is up only while some station sees the query's satellite, cut
  (``Outage``) outside the plan's passes, both ways;
- one station holds the satellite at a time: the one whose pass began first, until
  it sets, then the next (a handover is, to the protocol, a loss of signal and an
  acquisition: the ground is one logical end whose antennas are the stations, as in
  :mod:`~linkstack.sim.constellation.handover`);
- the light time is the holding station's slant range / c, sampled every
  ``delay_step_s`` and linear between (``ChannelConfig.delay_profile``); at a
  handover the delay moves from one station's to the other's over
  :data:`HANDOVER_BLEND_S`;
- the onboard model starts the query when the timing model's satellite was free to
  (its queue wait is added to the time to the first id), and releases one id every
  ``1 / tokens_per_s``; the ids come from ``generate`` (by default
  :func:`scripted_generate`: ids from the job alone, as free as the timing model).

A query's round trip is then its wait at the ground (the model's) plus the time from
its uplink to the ground holding every id and the end of the stream.  Relays (ISLs)
are not run on the real stack: refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import GenerationParams
from linkstack.sdls import LinkSecurity
from linkstack.sim.constellation.contacts import Pass, one_way_delay_s
from linkstack.sim.constellation.handover import ContactWindow, plan_config
from linkstack.sim.constellation.simulation import QueryOutcome, SimConfig, SimResult
from linkstack.sim.mission import Generate, MissionResult, simulate
from onboard.generation import FinishReason, GenerationResult, GenerationTiming
from onboard.service import Job

#: At a handover the link's delay goes from one station's to the next's over this
#: long, s (a channel delivers in the order it sends; the jump is a few ms).
HANDOVER_BLEND_S: Final = 0.1
#: Vocabulary of the scripted ids (Qwen3's ordinary tokens, below its specials).
_VOCABULARY: Final = 151_643


def scripted_generate(job: Job) -> GenerationResult:
    """``max_new_tokens`` ids from the job alone (request id, prompt): a stand-in for
    the model, deterministic and free, never stopping early."""
    count = job.params.max_new_tokens
    base = sum(job.prompt_ids) + 7919 * job.request_id
    ids = tuple((base + 104_729 * i) % _VOCABULARY for i in range(count))
    return GenerationResult(
        prompt_ids=job.prompt_ids,
        generated_ids=ids,
        finish_reason=FinishReason.MAX_TOKENS,
        params=job.params,
        timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=count),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RealStackConfig:
    #: Slant range sampled this often for the delay profile, s.
    delay_step_s: float = 10.0
    #: A query's mission gives up this long after its uplink, s (virtual), or at the
    #: end of the contact plan, whichever comes first.
    time_limit_s: float = 6 * 3600.0
    #: The link profile's raw BER both ways; None: the profile's (1e-5 for s-band).
    ber: float | None = None

    def __post_init__(self) -> None:
        for name in ("delay_step_s", "time_limit_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LocalProtocolError(f"{name} {value} must be positive")
        if self.ber is not None and not 0 <= self.ber <= 1:
            raise LocalProtocolError(f"ber {self.ber} outside 0..1")


@dataclass(frozen=True, slots=True)
class Holding:
    """The station of ``pass_`` holds the satellite from ``start_s`` to ``end_s``."""

    pass_: Pass
    start_s: float
    end_s: float


def holdings(passes: Sequence[Pass], start_s: float, end_s: float) -> list[Holding]:
    """Who holds the satellite in ``[start_s, end_s]``: the pass that began first
    keeps it until it sets, then the one in view that began first after it."""
    out: list[Holding] = []
    at = start_s
    for p in sorted(passes, key=lambda p: (p.rise_s, p.station_index)):
        if p.set_s <= at or p.rise_s >= end_s:
            continue
        begin = max(p.rise_s, at)
        out.append(Holding(p, begin, min(p.set_s, end_s)))
        at = min(p.set_s, end_s)
    return out


def delay_profile(
    result: SimResult, held: Sequence[Holding], origin_s: float, step_s: float
) -> tuple[tuple[float, float], ...]:
    """(time from ``origin_s``, range / c) through the holdings: sampled every
    ``step_s``, a handover's jump spread over :data:`HANDOVER_BLEND_S`."""
    points: list[tuple[float, float]] = []
    for h in held:
        count = max(2, math.ceil((h.end_s - h.start_s) / step_s) + 1)
        times = np.linspace(h.start_s, h.end_s, count)
        if points and times[0] - origin_s < points[-1][0] + HANDOVER_BLEND_S:
            first = points[-1][0] + HANDOVER_BLEND_S + origin_s
            times = times[times > first]
            if len(times) == 0 or times[0] > first:
                times = np.concatenate([[first], times])
        delays = one_way_delay_s(result.geometry, h.pass_, times)
        points.extend((float(t - origin_s), float(d)) for t, d in zip(times, delays, strict=True))
    return tuple(points)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealOutcome:
    """One query on the real stack, beside the timing model's figures for it."""

    query: int
    satellite: str
    #: The stations that held the satellite from the uplink to the end, in order.
    stations: tuple[str, ...]
    model_round_trip_s: float
    round_trip_s: float | None
    mission: MissionResult

    @property
    def match(self) -> bool:
        return self.mission.match

    def row(self) -> dict[str, Any]:
        m = self.mission
        return {
            "query": self.query,
            "satellite": self.satellite,
            "stations": list(self.stations),
            "model_round_trip_s": round(self.model_round_trip_s, 4),
            "round_trip_s": None if self.round_trip_s is None else round(self.round_trip_s, 4),
            "ids": len(m.received_ids),
            "match": self.match,
            "error": m.error,
            "frames_lost_outage": m.downlink_channel.units_lost_outage
            + m.uplink_channel.units_lost_outage,
            "resend_requests": m.recovery.resend_requests,
            "retransmitted_tc_frames": m.ground.tc_frames_retransmitted,
        }


def run_query(
    result: SimResult,
    index: int,
    sim: SimConfig,
    config: RealStackConfig,
    generate: Generate,
    *,
    profile: str,
    security: tuple[LinkSecurity, LinkSecurity] | None = None,
) -> RealOutcome:
    """Query ``index`` of ``result`` (answered by the timing model) on the real stack."""
    outcome: QueryOutcome = result.outcomes[index]
    if (
        outcome.round_trip_s is None
        or outcome.satellite is None
        or outcome.up_at_s is None
        or outcome.started_s is None
        or outcome.onboard_s is None
    ):
        raise LocalProtocolError(f"query {index} was not answered by the timing model")
    origin = outcome.up_at_s
    sat = outcome.satellite
    horizon = min(config.time_limit_s, result.geometry.window.duration_s - origin)
    passes = [p for p in result.plan.passes if p.sat_index == sat]
    held = holdings(passes, origin, origin + horizon)
    windows = [
        ContactWindow(
            h.pass_.station,
            h.start_s - origin,
            h.end_s - origin,
            float(
                np.max(one_way_delay_s(result.geometry, h.pass_, np.array([h.start_s, h.end_s])))
            ),
        )
        for h in held
        if h.end_s > h.start_s
    ]
    model = sim.model
    mission_config = plan_config(
        windows,
        profile=profile,
        horizon_s=horizon,
        seed=sim.seed * 1_000_003 + index,
        first_token_s=model.first_token_s + (outcome.started_s - outcome.onboard_s),
        token_interval_s=1.0 / model.tokens_per_s,
        ber=config.ber,
        delay_profile=delay_profile(result, held, origin, config.delay_step_s),
    )
    prompt = tuple((7 + 31 * index + 104_729 * k) % _VOCABULARY for k in range(sim.prompt_tokens))
    params = GenerationParams.from_floats(max_new_tokens=sim.answer_tokens, seed=index)
    mission = simulate(
        prompt, params, generate, mission_config, request_id=1 + index % 65_535, security=security
    )
    wait = origin - outcome.query.arrival_s
    ended = horizon if mission.total_s is None else mission.total_s
    return RealOutcome(
        query=index,
        satellite=result.geometry.sats[sat].name,
        stations=tuple(w.station for w in windows if w.start_s <= ended),
        model_round_trip_s=outcome.round_trip_s,
        round_trip_s=None if mission.total_s is None else wait + mission.total_s,
        mission=mission,
    )


def run_real_stack(
    result: SimResult,
    sim: SimConfig,
    config: RealStackConfig,
    generate: Generate = scripted_generate,
    *,
    profile: str,
    security: tuple[LinkSecurity, LinkSecurity] | None = None,
) -> list[RealOutcome]:
    """Every query the timing model answered, one after another on the real stack
    (SDLS, when given, carries its counters from one query to the next)."""
    if sim.isl != "none":
        raise LocalProtocolError(
            f"ISL {sim.isl!r}: relays are not run on the real stack (use isl 'none')"
        )
    return [
        run_query(result, i, sim, config, generate, profile=profile, security=security)
        for i, o in enumerate(result.outcomes)
        if o.round_trip_s is not None
    ]


def real_report(outcomes: Sequence[RealOutcome]) -> dict[str, Any]:
    """The real stack's figures for a report, per query and together."""
    from linkstack.sim.constellation.simulation import TARGET_S, _stats

    trips = [o.round_trip_s for o in outcomes if o.round_trip_s is not None]
    extra = [o.round_trip_s - o.model_round_trip_s for o in outcomes if o.round_trip_s is not None]
    return {
        "queries_run": len(outcomes),
        "answered_whole": sum(1 for o in outcomes if o.match),
        "round_trip_s": _stats(trips),
        "share_under_120_s": round(sum(1 for t in trips if t <= TARGET_S) / len(outcomes), 4)
        if outcomes
        else None,
        "extra_over_model_s": _stats(extra),
        "handovers": sum(max(0, len(o.stations) - 1) for o in outcomes if o.round_trip_s),
        "queries": [o.row() for o in outcomes],
    }
