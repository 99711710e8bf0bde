"""The whole system on a virtual clock: what the ground receives is what the model made.

The reference is the onboard generator run on the spot with no link (what
``onboard generate`` prints); the link run must reproduce its ids bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from linkstack.inference.protocol import GenerationParams
from linkstack.radio.channel import link_profile

if TYPE_CHECKING:
    from linkstack.sim.mission import Generate, MissionConfig
    from onboard.model import ModelHandle

PROMPT = "Tell the ground station about orbit."


@pytest.fixture(scope="module")
def model_generate(embedded_model: ModelHandle) -> Generate:
    from onboard.generation import generate
    from onboard.service import Job

    def run(job: Job) -> object:
        return generate(embedded_model, job.prompt_ids, job.params)

    return run  # type: ignore[return-value]


def reference_ids(
    handle: ModelHandle, prompt_ids: tuple[int, ...], wire: GenerationParams
) -> tuple:
    from onboard.generation import generate
    from onboard.service import params_from_wire

    return generate(handle, prompt_ids, params_from_wire(wire)).generated_ids


def mission_config(profile: str, **downlink: float) -> MissionConfig:
    from linkstack.sim.mission import MissionConfig

    link = link_profile(profile)
    return MissionConfig(
        uplink=link.uplink,
        downlink=dataclasses.replace(link.downlink, **downlink),
        seed=7,
    )


@pytest.mark.parametrize(
    ("profile", "ber"),
    [("ideal", 0.0), ("s-band", 0.0), ("s-band", 1e-4), ("uhf", 1e-4)],
)
def test_received_ids_equal_reference(
    embedded_model: ModelHandle, model_generate: Generate, profile: str, ber: float
) -> None:
    from linkstack.sim.mission import simulate

    tokenizer = embedded_model.tokenizer
    prompt_ids = tuple(tokenizer.encode_prompt(PROMPT))
    wire = GenerationParams.from_floats(max_new_tokens=40, seed=3, stop_ids=embedded_model.stop_ids)
    result = simulate(prompt_ids, wire, model_generate, mission_config(profile, ber=ber))

    assert result.error is None
    assert result.generated_ids == reference_ids(embedded_model, prompt_ids, wire)
    assert result.received_ids == result.generated_ids
    assert result.match
    assert result.ground.rs_uncorrectable == 0
    if ber:
        # The channel flipped bits and Reed-Solomon put every one of them right.
        assert result.downlink_channel.bits_flipped > 0
        assert result.ground.rs_corrected_symbols > 0
    else:
        assert result.ground.rs_corrected_symbols == 0
    assert result.time_to_first_token_s is not None
    assert result.total_s is not None
    assert 0 < result.time_to_first_token_s <= result.total_s


def test_sampling_with_a_seed_survives_the_link(
    embedded_model: ModelHandle, model_generate: Generate
) -> None:
    from linkstack.sim.mission import simulate

    prompt_ids = tuple(embedded_model.tokenizer.encode_prompt(PROMPT))
    wire = GenerationParams.from_floats(
        max_new_tokens=30, temperature=0.8, top_p=0.9, seed=11, stop_ids=embedded_model.stop_ids
    )
    result = simulate(prompt_ids, wire, model_generate, mission_config("s-band"))
    assert result.match
    assert result.generated_ids == reference_ids(embedded_model, prompt_ids, wire)


def test_simulation_is_deterministic(model_generate: Generate) -> None:
    from linkstack.sim.mission import simulate

    wire = GenerationParams.from_floats(max_new_tokens=20, seed=5)
    config = mission_config("s-band", ber=1e-4)
    first = simulate((1, 2, 3, 4), wire, model_generate, config)
    second = simulate((1, 2, 3, 4), wire, model_generate, config)
    assert first == second


def test_a_request_the_spacecraft_refuses_ends_with_its_error(model_generate: Generate) -> None:
    from linkstack.sim.mission import MissionConfig, simulate
    from onboard.service import CoreConfig

    link = link_profile("ideal")
    config = MissionConfig(
        uplink=link.uplink, downlink=link.downlink, core=CoreConfig(max_prompt_ids=4)
    )
    result = simulate(
        tuple(range(100, 110)),
        GenerationParams.from_floats(max_new_tokens=5),
        model_generate,
        config,
    )
    assert result.error is not None
    assert result.error.startswith("PROMPT_TOO_LONG")
    assert result.received_ids == ()
    assert not result.match


def test_time_limit_reports_a_timeout_when_the_downlink_is_dead(model_generate: Generate) -> None:
    from linkstack.sim.mission import MissionConfig, simulate

    link = link_profile("ideal")
    config = MissionConfig(
        uplink=link.uplink,
        downlink=dataclasses.replace(link.downlink, loss_probability=1.0),
        time_limit_s=5.0,
    )
    result = simulate(
        (1, 2, 3), GenerationParams.from_floats(max_new_tokens=5), model_generate, config
    )
    assert result.error is not None and result.error.startswith("timeout")
    assert result.received_ids == ()
    # No CLCW ever comes down: FOP-1 keeps repeating its Set V(R) on T1 and never
    # releases the request, so nothing was generated either.
    assert result.generated_ids == ()
    assert result.ground.tc_frames_retransmitted >= 2
    assert result.spacecraft.messages_received == 0
