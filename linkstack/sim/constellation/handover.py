"""One query on the real stack across a contact plan: the mission simulator's ground,
link and spacecraft (COP-1, token-stream recovery, SDLS when given) on the virtual
clock, the link up only while some station sees the satellite.

The ground segment is one logical end: the stations are its antennas, joined by the
ground network, and COP-1 and the stream recovery run behind them (as at a mission
control centre that reaches its stations over SLE), so a handover between stations
is, to the protocol, a loss of signal followed by an acquisition.  Between contacts
both directions carry nothing (``Outage``); in contact the light time is the plan's
longest (a channel has one delay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import GenerationParams
from linkstack.radio.channel import Outage, link_profile
from linkstack.sdls import LinkSecurity
from linkstack.sim.mission import Generate, MissionConfig, MissionResult, simulate


@dataclass(frozen=True, slots=True)
class ContactWindow:
    """A station sees the satellite from ``start_s`` to ``end_s`` at ``delay_s`` one way."""

    station: str
    start_s: float
    end_s: float
    delay_s: float

    def __post_init__(self) -> None:
        if not (0 <= self.start_s < self.end_s and self.delay_s >= 0):
            raise LocalProtocolError(
                f"contact {self.station} [{self.start_s}, {self.end_s}] s, {self.delay_s} s:"
                " not a window"
            )


def outages(plan: Sequence[ContactWindow], horizon_s: float) -> tuple[Outage, ...]:
    """The complement of the plan's windows in [0, horizon_s]."""
    gaps = []
    at = 0.0
    for w in sorted(plan, key=lambda w: w.start_s):
        if w.start_s > at:
            gaps.append(Outage(at, w.start_s - at))
        at = max(at, w.end_s)
    if at < horizon_s:
        gaps.append(Outage(at, horizon_s - at))
    return tuple(gaps)


def plan_config(
    plan: Sequence[ContactWindow],
    *,
    profile: str = "s-band",
    horizon_s: float,
    seed: int = 0,
    first_token_s: float = 0.023,
    token_interval_s: float = 1 / 44.0,
    ber: float | None = None,
    delay_profile: tuple[tuple[float, float], ...] = (),
) -> MissionConfig:
    """Both directions cut outside the plan's windows; in them the light time is the
    plan's longest, or ``delay_profile``'s (sender time, delay) points when given."""
    if not plan:
        raise LocalProtocolError("a contact plan with no contact: no contact")
    link = link_profile(profile)
    gaps = outages(plan, horizon_s)
    delay = max(w.delay_s for w in plan)
    up, down = link.uplink, link.downlink
    return MissionConfig(
        uplink=dataclasses.replace(
            up,
            delay_s=delay,
            delay_profile=delay_profile,
            outages=gaps,
            ber=up.ber if ber is None else ber,
        ),
        downlink=dataclasses.replace(
            down,
            delay_s=delay,
            delay_profile=delay_profile,
            outages=gaps,
            ber=down.ber if ber is None else ber,
        ),
        seed=seed,
        first_token_s=first_token_s,
        token_interval_s=token_interval_s,
        time_limit_s=horizon_s,
    )


def run_over_plan(
    plan: Sequence[ContactWindow],
    prompt_ids: tuple[int, ...],
    params: GenerationParams,
    generate: Generate,
    config: MissionConfig,
    *,
    security: tuple[LinkSecurity, LinkSecurity] | None = None,
) -> MissionResult:
    """The query sent at the first contact's start, run until answered (or the horizon)."""
    del plan  # the plan lives in ``config``'s outages; kept for the caller's record
    return simulate(prompt_ids, params, generate, config, security=security)
