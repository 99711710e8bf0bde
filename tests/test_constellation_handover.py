"""An answer that spans a loss of signal completes on the real stack through another
station's pass, every id once and in order (a hand-made contact plan).

The mission simulator runs COP-1, the token stream's recovery and the embedded model on
the virtual clock; the plan: station A sees the satellite for the first 20 s, nothing
sees it for 40 s, station B from 60 s.  The model releases an id every 0.5 s, so the
80-id answer (40 s) is cut by the gap: what the gap swallowed comes again after it.
The reference is the model run with no link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkstack.inference.protocol import GenerationParams
from linkstack.sim.constellation.handover import ContactWindow, outages, plan_config, run_over_plan

if TYPE_CHECKING:
    from onboard.model import ModelHandle

PLAN = (
    ContactWindow("A", 0.0, 20.0, 0.0030),
    ContactWindow("B", 60.0, 400.0, 0.0042),
)


def test_outages_are_the_plans_complement() -> None:
    gaps = outages(PLAN, 500.0)
    assert [(g.start, g.end) for g in gaps] == [(20.0, 60.0), (400.0, 500.0)]


def test_answer_across_los_completes_at_the_next_station(embedded_model: ModelHandle) -> None:
    from onboard.generation import generate
    from onboard.service import Job, params_from_wire

    def run(job: Job):  # type: ignore[no-untyped-def]
        return generate(embedded_model, job.prompt_ids, job.params)

    prompt = tuple(embedded_model.tokenizer.encode_prompt("Hand the answer over."))
    wire = GenerationParams.from_floats(max_new_tokens=80, seed=5, stop_ids=embedded_model.stop_ids)
    config = plan_config(PLAN, horizon_s=400.0, first_token_s=0.05, token_interval_s=0.5)
    result = run_over_plan(PLAN, prompt, wire, run, config)

    reference = generate(embedded_model, prompt, params_from_wire(wire)).generated_ids
    assert result.error is None
    assert len(reference) == 80
    assert result.generated_ids == reference
    assert result.received_ids == reference  # every id once, in order
    assert result.downlink_channel.units_lost_outage > 0  # the gap cut the stream
    assert result.recovery.resend_requests > 0  # ... and recovery asked again
    assert result.total_s is not None and result.total_s > 60.0  # finished at B
