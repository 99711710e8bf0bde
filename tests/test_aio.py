"""The asyncio adapter's own pieces: link addresses and the paced downlink transmitter."""

from __future__ import annotations

import asyncio

import pytest

from linkstack.aio import DownlinkTransmitter, LinkAddress
from linkstack.endpoints import LinkConfig, SpacecraftEndpoint
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import TokenChunk
from linkstack.inference.tokenizer import Tokenizer


class Collect:
    def __init__(self) -> None:
        self.units: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.units.append(data)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp://127.0.0.1:5005", LinkAddress("udp", "127.0.0.1", 5005)),
        ("tcp://localhost:1", LinkAddress("tcp", "localhost", 1)),
        ("tcp://[::1]:7000", LinkAddress("tcp", "::1", 7000)),
    ],
)
def test_link_addresses_parse(url: str, expected: LinkAddress) -> None:
    assert LinkAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    ["ftp://x:1", "udp://127.0.0.1", "tcp://:5", "udp://h:99999", "tcp://h:5/path", "", "h:5"],
)
def test_bad_link_addresses_are_refused_with_the_url(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="link"):
        LinkAddress.parse(url)


async def test_transmitter_sends_data_then_a_trailing_idle_frame() -> None:
    endpoint = SpacecraftEndpoint(LinkConfig())
    link = Collect()
    transmitter = DownlinkTransmitter(endpoint, link, rate_bps=None, idle_interval=60.0)
    task = asyncio.create_task(transmitter.run())
    endpoint.send(TokenChunk(1, 0, (1, 2, 3)))
    transmitter.wake()
    for _ in range(50):
        await asyncio.sleep(0)
    assert endpoint.counters.cadus_sent == 2  # the data frame, then one idle frame
    assert endpoint.counters.idle_frames_sent == 1
    assert len(link.units) == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_the_onboard_downlink_stops_when_cancelled_after_an_answer(
    qwen3_tokenizer: Tokenizer,
) -> None:
    """Regression: with asyncio.wait_for in the transmitter's idle wait, cancelling the
    onboard service after a ground station's answer never finished on Python 3.11."""
    from groundstation.station import GroundStation
    from linkstack.aio import LoopbackLink
    from linkstack.inference.protocol import GenerationParams
    from linkstack.radio.channel import link_profile
    from onboard.service import CoreConfig, OnboardService
    from tests.test_onboard_service import FakeGenerator

    profile, config = link_profile("ideal"), LinkConfig()
    service = OnboardService(FakeGenerator(), core_config=CoreConfig(vocab_size=151_936))
    station = GroundStation(qwen3_tokenizer, config=config)
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
    answer = await station.ask((1, 2, 3), GenerationParams(max_new_tokens=20), timeout=30)
    assert len(answer.received_ids) == 20
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    service.close()
    link.close()
    assert done == {task}
    assert task.cancelled()


@pytest.mark.parametrize(("rate", "idle"), [(0.0, 1.0), (-1.0, 1.0), (None, 0.0)])
def test_transmitter_refuses_bad_pacing(rate: float | None, idle: float) -> None:
    with pytest.raises(LocalProtocolError):
        DownlinkTransmitter(
            SpacecraftEndpoint(LinkConfig()), Collect(), rate_bps=rate, idle_interval=idle
        )
