"""End-to-end figures: time to first token, ground tokens/s, uplink bits per character.

Run: ``.venv/bin/python bench/bench_mission.py [--model SPEC] [--device DEV]``

1. Onboard generation rate of the model alone (wall clock, this machine).
2. A 100-token answer through the whole system on the virtual clock
   (:mod:`linkstack.sim.mission`) over the ideal, S-band and UHF profiles, with ids
   released at the measured onboard rate: time to first token and tokens/s as the
   ground sees them.
3. The same answer live through ``linkstack demo``'s objects on the ideal loopback
   (asyncio, wall clock): onboard tokens/s with the link attached.
4. Uplink cost per prompt character: packed ids, the PromptRequest message and the
   CLTUs on the air, against the prompt's UTF-8 size.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from linkstack.coding.tm import TmCodingConfig
from linkstack.endpoints import GroundEndpoint, LinkConfig
from linkstack.inference.protocol import GenerationParams, PromptRequest, pack_token_ids
from linkstack.radio.channel import link_profile
from linkstack.sim.mission import MissionConfig, simulate
from onboard.generation import generate
from onboard.model import ModelHandle, load_model
from onboard.service import Job

PROMPTS = {
    "english": "Describe the thermal environment of a satellite in low Earth orbit.",
    "code": "def crc16(data: bytes) -> int:\n    # CCITT, init 0xFFFF\n    ...",
    "chinese": "请用三句话解释近地轨道卫星的热环境。",
    "mixed": "Résumé: 12 satellites, 2 Mbit/s downlink, ΔT = 40 K, 🛰️ ready.",
}
TOKENS = 100


def onboard_rate(handle: ModelHandle, prompt_ids: tuple[int, ...], wire: GenerationParams) -> float:
    generate(handle, prompt_ids, wire)  # warm up
    start = time.perf_counter()
    result = generate(handle, prompt_ids, wire)
    return len(result.generated_ids) / (time.perf_counter() - start)


def through_the_link(
    handle: ModelHandle, prompt_ids: tuple[int, ...], wire: GenerationParams, rate: float
) -> None:
    print(f"\n{TOKENS}-token answer on the virtual clock, ids released at {rate:.0f} ids/s:")
    print(f"  {'profile':8} (I) {'first id':>10} {'total':>9} {'ground ids/s':>13} {'match':>6}")

    def run(job: Job) -> object:
        return generate(handle, job.prompt_ids, job.params)

    for name in ("ideal", "s-band", "uhf"):
        profile = link_profile(name)
        # A 9.6 kbit/s link uses short frames: I=1 (223 octets, 0.2 s on the air)
        # instead of I=5 (1115 octets, 1.1 s).
        interleave = 1 if name == "uhf" else 5
        config = MissionConfig(
            link=LinkConfig(tm_coding=TmCodingConfig(interleave=interleave)),
            uplink=profile.uplink,
            downlink=profile.downlink,
            first_token_s=1 / rate,
            token_interval_s=1 / rate,
        )
        result = simulate(prompt_ids, wire, run, config)  # type: ignore[arg-type]
        ttft, total = result.time_to_first_token_s or 0.0, result.total_s or 0.0
        # Ids after the first, over the time after the first: the streaming rate.
        later = len(result.received_ids) - 1
        ids_per_s = later / (total - ttft) if total > ttft else float("inf")
        print(
            f"  {name:8} ({interleave}) {ttft * 1e3:8.1f} ms {total:7.2f} s {ids_per_s:13.1f} "
            f"{result.match!s:>6}"
        )


async def live(handle: ModelHandle, prompt_ids: tuple[int, ...], wire: GenerationParams) -> None:
    from groundstation.station import GroundStation
    from linkstack.aio import LoopbackLink
    from onboard.service import OnboardService

    profile = link_profile("ideal")
    config = LinkConfig()
    station = GroundStation(handle.tokenizer, config=config)
    service = OnboardService.for_model(handle, link_config=config)
    link = LoopbackLink(
        uplink=profile.uplink,
        downlink=profile.downlink,
        seed=0,
        to_ground=station.on_receive,
        to_spacecraft=service.on_receive,
    )
    service.attach(link.spacecraft)
    station.attach(link.ground)
    task = asyncio.create_task(service.run())
    try:
        answer = await station.ask(prompt_ids, wire, timeout=120)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        service.close()
        link.close()
    end = answer.end
    onboard = end.tokens_per_s if end is not None else float("nan")
    ground = len(answer.received_ids) / answer.total_s if answer.total_s else float("nan")
    print(
        f"\nlive over the ideal loopback (wall clock): onboard {onboard:.1f} ids/s, "
        f"ground {ground:.1f} ids/s end to end, first id "
        f"{(answer.time_to_first_token_s or 0) * 1e3:.1f} ms, complete={answer.complete}"
    )


def uplink_cost(handle: ModelHandle) -> None:
    print("\nuplink cost per prompt character (chat template included in the ids):")
    print(
        f"  {'prompt':8} {'chars':>5} {'utf-8 b/ch':>10} {'ids':>4} {'packed b/ch':>11} "
        f"{'message b/ch':>12} {'on air b/ch':>11}"
    )
    for name, text in PROMPTS.items():
        ids = tuple(handle.tokenizer.encode_prompt(text))
        wire = GenerationParams.from_floats(max_new_tokens=TOKENS, stop_ids=handle.stop_ids)
        request = PromptRequest(request_id=1, params=wire, prompt_ids=ids)
        ground = GroundEndpoint(LinkConfig())
        ground.send(request, 0.0, expedited=True)  # the AD handshake's Set V(R) aside
        air = sum(len(c) for c in ground.data_to_send())
        chars = len(text)
        print(
            f"  {name:8} {chars:5d} {len(text.encode()) * 8 / chars:10.1f} {len(ids):4d} "
            f"{len(pack_token_ids(ids)) * 8 / chars:11.1f} "
            f"{len(request.to_bytes()) * 8 / chars:12.1f} {air * 8 / chars:11.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    handle = load_model(args.model, device=args.device)
    print(f"model: {handle.description}")
    prompt_ids = tuple(handle.tokenizer.encode_prompt(PROMPTS["english"]))
    # No stop ids: always exactly TOKENS ids, whatever the weights.
    wire = GenerationParams.from_floats(max_new_tokens=TOKENS)
    rate = onboard_rate(handle, prompt_ids, wire)
    print(f"onboard generation alone: {rate:.1f} ids/s ({TOKENS} ids, greedy)")
    through_the_link(handle, prompt_ids, wire, rate)
    asyncio.run(live(handle, prompt_ids, dataclasses.replace(wire)))
    uplink_cost(handle)


if __name__ == "__main__":
    main()
