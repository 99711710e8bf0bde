"""Request ids that stay unique across ground processes and restarts.

The allocator on one state file: two instances (two "processes") in one test, then
real processes allocating at once; restart continuity, the wrap at 65535, the state
file's format and atomic replacement, and every way the state can be unusable (the
ask goes on from a random id).  Then two ground stations in a row against one
onboard service: ids from 0 collide with what the spacecraft still holds and are
refused by id; ids from the allocator do not collide.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from groundstation.request_ids import (
    STATE_FILE_NAME,
    RequestIdAllocator,
    default_state_dir,
)
from groundstation.station import GroundStation, IdSource, RequestIdInUseError, Update
from linkstack.aio import LoopbackLink
from linkstack.errors import LocalProtocolError
from linkstack.inference.protocol import ErrorReason, FinishReason, GenerationParams
from linkstack.inference.tokenizer import Tokenizer
from linkstack.radio.channel import link_profile
from onboard.generation import FinishReason as RunFinish
from onboard.generation import GenerationResult, GenerationTiming
from onboard.service import CoreConfig, Job, OnboardService

REPO = Path(__file__).resolve().parent.parent


def fixed_random(value: int) -> Callable[[int], bytes]:
    """A stand-in for ``os.urandom`` whose two octets make ``value``."""

    def draw(n: int) -> bytes:
        assert n == 2
        return value.to_bytes(2, "big")

    return draw


def write_state(path: Path, next_id: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "next_request_id": next_id}))


def read_state(path: Path) -> object:
    return json.loads(path.read_text())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / STATE_FILE_NAME


# -- one machine, one file -------------------------------------------------------------------


def test_a_new_state_file_starts_at_a_random_id_and_keeps_the_next(state: Path) -> None:
    allocator = RequestIdAllocator(state, random_bytes=fixed_random(0x1234))
    assert [allocator(), allocator.allocate(), allocator()] == [0x1234, 0x1235, 0x1236]
    assert allocator.persistent
    assert read_state(state) == {"version": 1, "next_request_id": 0x1237}
    # Written whole by rename: no temporary file is left, the lock file stays.
    assert sorted(p.name for p in state.parent.iterdir()) == [
        STATE_FILE_NAME,
        STATE_FILE_NAME + ".lock",
    ]


def test_a_new_allocator_continues_after_the_last_id(state: Path) -> None:
    first = RequestIdAllocator(state, random_bytes=fixed_random(100))
    assert [first() for _ in range(3)] == [100, 101, 102]
    del first  # the process ends
    restarted = RequestIdAllocator(state, random_bytes=fixed_random(9999))
    assert restarted() == 103


def test_two_allocators_on_one_file_never_give_the_same_id(state: Path) -> None:
    write_state(state, 40)
    a, b = RequestIdAllocator(state), RequestIdAllocator(state)
    assert [a(), b(), b(), a(), b()] == [40, 41, 42, 43, 44]


def test_ids_wrap_at_65535(state: Path) -> None:
    write_state(state, 0xFFFE)
    allocator = RequestIdAllocator(state)
    assert [allocator() for _ in range(4)] == [0xFFFE, 0xFFFF, 0, 1]
    assert read_state(state) == {"version": 1, "next_request_id": 2}


_CHILD = """
import pathlib, sys, time
from groundstation.request_ids import RequestIdAllocator
state, go, count = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
allocator = RequestIdAllocator(state, lock_timeout_s=60)
while not go.exists():
    time.sleep(0.001)
ids = [allocator() for _ in range(count)]
if not allocator.persistent:
    sys.exit("the allocator fell back to memory")
print(" ".join(map(str, ids)))
"""


def test_concurrent_processes_share_the_ids_without_a_duplicate(
    state: Path, tmp_path: Path
) -> None:
    processes, count, start = 4, 100, 65_400  # 400 ids: they wrap past 65535 on the way
    write_state(state, start)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(state), str(go), str(count)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    go.touch()  # all allocate at once, each as soon as it has started
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * processes, outputs
    per_process = [[int(i) for i in out.split()] for out, _ in outputs]
    every = [i for ids in per_process for i in ids]
    assert len(every) == len(set(every)) == processes * count
    # Together, exactly the next 400 ids; each process's own ids in allocation order.
    assert set(every) == {(start + k) % 0x1_0000 for k in range(processes * count)}
    for ids in per_process:
        offsets = [(i - start) % 0x1_0000 for i in ids]
        assert offsets == sorted(offsets)
    assert read_state(state) == {
        "version": 1,
        "next_request_id": (start + processes * count) % 0x1_0000,
    }


# -- where the state lives -------------------------------------------------------------------


def test_default_state_dir_follows_xdg_then_home() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/g"}) == Path(
        "/srv/state/linkstack"
    )
    # A relative XDG_STATE_HOME is invalid (XDG Base Directory) and ignored.
    assert default_state_dir({"XDG_STATE_HOME": "state", "HOME": "/home/g"}) == Path(
        "/home/g/.local/state/linkstack"
    )
    assert default_state_dir({"HOME": "/home/g"}) == Path("/home/g/.local/state/linkstack")


def test_default_allocator_uses_the_state_dir_given_or_the_environment(tmp_path: Path) -> None:
    given = RequestIdAllocator.default(tmp_path / "mine", random_bytes=fixed_random(5))
    assert given.path == tmp_path / "mine" / STATE_FILE_NAME
    assert given() == 5
    assert read_state(tmp_path / "mine" / STATE_FILE_NAME) == {"version": 1, "next_request_id": 6}
    from_env = RequestIdAllocator.default(environ={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert from_env.path == tmp_path / "xdg" / "linkstack" / STATE_FILE_NAME


# -- unusable state: warn and go on from a random id --------------------------------------------


def test_a_state_dir_that_cannot_be_created_falls_back_to_a_random_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    allocator = RequestIdAllocator.default(blocker / "state", random_bytes=fixed_random(4660))
    with caplog.at_level(logging.WARNING, logger="groundstation.request_ids"):
        assert [allocator(), allocator(), allocator()] == [4660, 4661, 4662]
    assert not allocator.persistent
    (record,) = caplog.records  # warned once, not per id
    assert str(blocker / "state" / STATE_FILE_NAME) in record.getMessage()
    assert "random id 4660" in record.getMessage()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_state_dir_falls_back_to_a_random_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        allocator = RequestIdAllocator.default(directory, random_bytes=fixed_random(77))
        with caplog.at_level(logging.WARNING, logger="groundstation.request_ids"):
            assert allocator() == 77
        assert not allocator.persistent
        assert "random id 77" in caplog.text
    finally:
        directory.chmod(0o755)


def test_a_failed_write_keeps_the_old_state_and_leaves_no_temporary(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_state(state, 10)

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    allocator = RequestIdAllocator(state, random_bytes=fixed_random(3000))
    assert allocator() == 3000
    assert not allocator.persistent
    assert read_state(state) == {"version": 1, "next_request_id": 10}
    assert sorted(p.name for p in state.parent.iterdir()) == [
        STATE_FILE_NAME,
        STATE_FILE_NAME + ".lock",
    ]


def test_a_lock_held_too_long_falls_back_to_a_random_start(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_state(state, 10)
    holder = os.open(state.with_name(STATE_FILE_NAME + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a stopped ground process holding it
        allocator = RequestIdAllocator(state, lock_timeout_s=0.05, random_bytes=fixed_random(8))
        with caplog.at_level(logging.WARNING, logger="groundstation.request_ids"):
            assert allocator() == 8
        assert "held by another process" in caplog.text
    finally:
        os.close(holder)
    assert read_state(state) == {"version": 1, "next_request_id": 10}


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '{"version": 1}',
        '{"version": 1, "next_request_id": 65536}',
        '{"version": 1, "next_request_id": -1}',
        '{"version": 1, "next_request_id": true}',
        '{"version": 2, "next_request_id": 5}',
    ],
)
def test_an_unreadable_state_file_starts_again_at_random_and_is_rewritten(
    state: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    state.parent.mkdir(parents=True)
    state.write_text(content)
    allocator = RequestIdAllocator(state, random_bytes=fixed_random(321))
    with caplog.at_level(logging.WARNING, logger="groundstation.request_ids"):
        assert [allocator(), allocator()] == [321, 322]
    assert allocator.persistent
    assert "is not a version 1 state" in caplog.text
    assert read_state(state) == {"version": 1, "next_request_id": 323}


def test_no_state_file_keeps_ids_in_memory(caplog: pytest.LogCaptureFixture) -> None:
    allocator = RequestIdAllocator(None, random_bytes=fixed_random(0xFFFF))
    with caplog.at_level(logging.WARNING, logger="groundstation.request_ids"):
        assert [allocator(), allocator()] == [0xFFFF, 0]
    assert not allocator.persistent
    assert "no state file" in caplog.text
    with pytest.raises(LocalProtocolError, match="lock_timeout_s -1"):
        RequestIdAllocator(None, lock_timeout_s=-1)


# -- two ground processes in a row against one spacecraft ------------------------------------

PARAMS = GenerationParams(max_new_tokens=6)


class HeldGenerator:
    """Deterministic ids; the first run stops after two ids until cancelled."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(
        self, job: Job, on_token: Callable[[int], object], cancel: threading.Event
    ) -> GenerationResult:
        self.runs += 1
        hold = 2 if self.runs == 1 else None
        out: list[int] = []
        reason = RunFinish.MAX_TOKENS
        for index in range(job.params.max_new_tokens):
            if hold is not None and index == hold:
                cancel.wait(30)
            if cancel.is_set():
                reason = RunFinish.CANCELLED
                break
            token = 1000 + job.prompt_ids[0] + index
            out.append(token)
            on_token(token)
        return GenerationResult(
            prompt_ids=job.prompt_ids,
            generated_ids=tuple(out),
            finish_reason=reason,
            params=job.params,
            timing=GenerationTiming(first_token_s=0.0, decode_s=0.0, tokens=len(out)),
        )


class Ground:
    """The ground end of one loopback link; each 'process' plugs its own station in."""

    def __init__(self) -> None:
        self.station: GroundStation | None = None

    def receive(self, data: bytes, now: float) -> None:
        if self.station is not None:
            self.station.on_receive(data, now)


@pytest.fixture
async def spacecraft() -> AsyncIterator[tuple[Ground, LoopbackLink, OnboardService]]:
    service = OnboardService(HeldGenerator(), core_config=CoreConfig(housekeeping_interval=1e6))
    profile = link_profile("ideal")
    ground = Ground()
    link = LoopbackLink(
        uplink=profile.uplink,
        downlink=profile.downlink,
        seed=3,
        to_ground=ground.receive,
        to_spacecraft=service.on_receive,
    )
    service.attach(link.spacecraft)
    task = asyncio.create_task(service.run())
    yield ground, link, service
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    service.close()
    link.close()


async def first_process_times_out(
    ground: Ground, link: LoopbackLink, tokenizer: Tokenizer, id_source: IdSource | None = None
) -> int:
    """A ground process whose request times out: the spacecraft keeps its record."""
    station = GroundStation(tokenizer, id_source=id_source)
    ground.station = station
    station.attach(link.ground)
    seen = asyncio.Event()

    def show(update: Update) -> None:
        if len(update.ids):
            seen.set()

    handle = station.submit([1], PARAMS, on_update=show)
    await asyncio.wait_for(seen.wait(), 10)
    answer = await handle.answer(timeout=0.01)  # gives up and sends a Cancel
    assert answer.error is not None
    station.close()
    return answer.request_id


async def test_a_second_ground_counting_from_0_is_refused_by_id(
    spacecraft: tuple[Ground, LoopbackLink, OnboardService], qwen3_tokenizer: Tokenizer
) -> None:
    ground, link, service = spacecraft
    assert await first_process_times_out(ground, link, qwen3_tokenizer) == 0
    # The next process counts from 0 again: id 0 is still held on board.
    station = GroundStation(qwen3_tokenizer)
    ground.station = station
    station.attach(link.ground)
    answer = await station.ask([2], PARAMS, timeout=10)
    station.close()
    assert isinstance(answer.error, RequestIdInUseError)
    assert answer.error.reason is ErrorReason.DUPLICATE_REQUEST
    assert answer.error.state in ("running", "streaming", "held for resend")
    assert "request id 0 is still in use on board" in str(answer.error)
    assert answer.received_ids == ()
    assert service.core.counters.duplicate_ids_refused == 1
    assert service.core.counters.requests_accepted == 1


async def test_a_second_ground_with_the_allocator_takes_the_next_id(
    spacecraft: tuple[Ground, LoopbackLink, OnboardService],
    qwen3_tokenizer: Tokenizer,
    state: Path,
) -> None:
    ground, link, service = spacecraft
    write_state(state, 0)
    first = await first_process_times_out(
        ground, link, qwen3_tokenizer, id_source=RequestIdAllocator(state)
    )
    station = GroundStation(qwen3_tokenizer, id_source=RequestIdAllocator(state))
    ground.station = station
    station.attach(link.ground)
    answer = await station.ask([2], PARAMS, timeout=10)
    station.close()
    assert (first, answer.request_id) == (0, 1)
    assert answer.complete, answer.error
    assert answer.received_ids == tuple(1002 + i for i in range(6))
    assert answer.finish_reason is FinishReason.MAX_TOKENS
    assert service.core.counters.duplicate_ids_refused == 0
