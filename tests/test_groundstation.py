"""GroundStation over a LoopbackLink against a scripted spacecraft; the groundstation CLI.

The spacecraft here is a few lines over :class:`SpacecraftEndpoint`: it answers
each PromptRequest with the messages a test scripts, each sent in its own CADU on
the link's spacecraft end, then one idle CADU whose marker confirms the last data
frame to the ground's synchronizer.  Times come from the event loop's clock; no
test sleeps to wait for something.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from groundstation.cli import default_stop_ids, main
from groundstation.request_ids import RequestIdAllocator
from groundstation.station import (
    GroundStation,
    RequestIdInUseError,
    RequestTimeoutError,
    SpacecraftError,
    Update,
    request_digest,
)
from linkstack.aio import Link, LoopbackLink, open_link
from linkstack.endpoints import LinkConfig, MessageReceived, SpacecraftEndpoint
from linkstack.errors import InvalidState, LocalProtocolError
from linkstack.inference.protocol import (
    Cancel,
    EndAck,
    EndOfStream,
    ErrorReason,
    ErrorReport,
    FinishReason,
    GenerationParams,
    Housekeeping,
    Message,
    PromptRequest,
    TokenChunk,
)
from linkstack.inference.tokenizer import QWEN3_CHAT_TEMPLATE, Tokenizer
from linkstack.radio.channel import link_profile

REPO = Path(__file__).resolve().parent.parent
PARAMS = GenerationParams(max_new_tokens=32, stop_ids=(151645,))

Script = Callable[[PromptRequest], Sequence[Message]]


def eos(request_id: int, count: int, reason: FinishReason = FinishReason.MAX_TOKENS) -> EndOfStream:
    return EndOfStream(
        request_id=request_id,
        finish_reason=reason,
        token_count=count,
        time_to_first_token_us=1500,
        generation_time_ms=12,
        tokens_per_s_milli=250_000,
    )


def chunks(request_id: int, ids: Sequence[int], size: int = 1) -> list[TokenChunk]:
    return [
        TokenChunk(request_id, first, tuple(ids[first : first + size]))
        for first in range(0, len(ids), size)
    ]


class FakeSpacecraft:
    """Answers PromptRequests with scripted messages, one CADU each."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.endpoint = SpacecraftEndpoint(LinkConfig())
        self.link: LoopbackLink | None = None
        self.requests: list[PromptRequest] = []
        self.cancels: list[int] = []
        self.others: list[Message] = []
        self.cancelled = asyncio.Event()

    def receive(self, data: bytes, now: float) -> None:
        self.endpoint.receive_bytes(data, now)
        while (event := self.endpoint.next_event()) is not None:
            if not isinstance(event, MessageReceived):
                continue
            message = event.message
            if isinstance(message, PromptRequest):
                self.requests.append(message)
                self.downlink(self.script(message))
            elif isinstance(message, Cancel):
                self.cancels.append(message.request_id)
                self.cancelled.set()
            else:
                self.others.append(message)
        if self.endpoint.clcw_changed and self.link is not None:
            # Report FARM-1's acknowledgement at once (an idle frame carries the CLCW),
            # then one more idle frame whose marker confirms it to the synchronizer.
            self.link.spacecraft.send(self.endpoint.next_cadu())
            self.link.spacecraft.send(self.endpoint.next_cadu())

    def downlink(self, messages: Sequence[Message]) -> None:
        assert self.link is not None
        for message in messages:
            self.endpoint.send(message)
            while self.endpoint.pending_octets:
                self.link.spacecraft.send(self.endpoint.next_cadu())
        self.link.spacecraft.send(self.endpoint.next_cadu())  # idle: confirms the last frame


def connect(station: GroundStation, spacecraft: FakeSpacecraft, *, seed: int = 1) -> LoopbackLink:
    profile = link_profile("ideal")
    link = LoopbackLink(
        uplink=profile.uplink,
        downlink=profile.downlink,
        seed=seed,
        to_ground=station.on_receive,
        to_spacecraft=spacecraft.receive,
    )
    spacecraft.link = link
    station.attach(link.ground)
    return link


@pytest.fixture
def tokenizer(qwen3_tokenizer: Tokenizer) -> Tokenizer:
    return qwen3_tokenizer


@pytest.fixture(autouse=True)
def request_id_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The request-id state of every ground process these tests start: a file of the
    test's own (never the user's ``~/.local/state``), whose next id is 0."""
    state = tmp_path / "xdg-state" / "linkstack" / "request-ids.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"version": 1, "next_request_id": 0}))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    return state


_BYTE_IDS: dict[int, int] = {}


def _byte_ids(tokenizer: Tokenizer) -> dict[int, int]:
    if not _BYTE_IDS:
        for token_id in range(151_643):
            data = tokenizer.token_bytes(token_id)
            if len(data) == 1:
                _BYTE_IDS.setdefault(data[0], token_id)
    return _BYTE_IDS


# -- answers -------------------------------------------------------------------------------


async def test_answer_arrives_whole_with_live_updates_in_order(tokenizer: Tokenizer) -> None:
    reply = [*tokenizer.encode("The ground hears the spacecraft."), 151645]
    station = GroundStation(tokenizer)
    spacecraft = FakeSpacecraft(
        lambda r: [
            *chunks(r.request_id, reply, 3),
            eos(r.request_id, len(reply), FinishReason.STOP_ID),
        ]
    )
    link = connect(station, spacecraft)
    updates: list[Update] = []
    prompt = tokenizer.encode_prompt("Hello?")
    answer = await station.ask(prompt, PARAMS, on_update=updates.append, timeout=10)
    link.close()

    assert spacecraft.requests == [
        PromptRequest(request_id=0, params=PARAMS, prompt_ids=tuple(prompt))
    ]
    assert answer.complete
    assert answer.error is None
    assert answer.request_id == 0
    assert answer.prompt_ids == tuple(prompt)
    assert answer.received_ids == tuple(reply)
    assert answer.finish_reason is FinishReason.STOP_ID
    assert answer.text == "The ground hears the spacecraft."  # <|im_end|> skipped
    assert answer.end == eos(0, len(reply), FinishReason.STOP_ID)
    # One update per chunk, in index order, their text the answer's text.
    assert [u.first_index for u in updates] == list(range(0, len(reply), 3))
    assert [i for u in updates for i in u.ids] == list(reply)
    assert "".join(u.text for u in updates) == answer.text
    assert all(a.at <= b.at for a, b in itertools.pairwise(updates))
    # Timing from the loop clock.
    assert answer.time_to_first_token_s is not None
    assert 0 < answer.time_to_first_token_s <= answer.total_s
    assert len(answer.token_arrival_s) == len(reply)
    assert list(answer.token_arrival_s) == sorted(answer.token_arrival_s)
    # Link counters snapshot: COP-1's Set V(R) (BC), the request (AD), the EndAck (AD).
    assert answer.counters.cltus_sent == 3
    assert spacecraft.others == [EndAck(0)]
    assert station.recovery_counters.end_acks == 1
    assert station.recovery_counters.resend_requests == 0
    assert answer.counters.uplink_octets > 0
    assert answer.counters.frames_received >= len(updates)
    assert answer.counters.dropped == 0
    assert answer.stats.chunks == len(updates)
    assert station.in_flight == ()
    assert station.counters.answers_complete == 1


async def test_updates_iterator_and_reordered_duplicated_chunks(tokenizer: Tokenizer) -> None:
    reply = list(range(100, 110))

    def script(r: PromptRequest) -> list[Message]:
        parts = chunks(r.request_id, reply, 2)
        # The end first, then the chunks reversed with the middle one twice.
        return [eos(r.request_id, len(reply)), *parts[:1:-1], parts[2], *parts[1::-1]]

    station = GroundStation(tokenizer)
    link = connect(station, FakeSpacecraft(script))
    handle = station.submit(tokenizer.encode("x"), PARAMS)
    seen = [update async for update in handle.updates()]
    answer = await handle.answer(timeout=10)
    link.close()

    # Nothing can be delivered until index 0 arrives last: one update with all of it.
    assert [(u.first_index, u.ids) for u in seen] == [(0, tuple(reply))]
    assert answer.complete
    assert answer.received_ids == tuple(reply)
    assert answer.stats.duplicate_chunks == 1
    assert answer.stats.out_of_order_chunks == 4
    # A second reader of a finished request ends too.
    assert [u async for u in handle.updates()] == []


async def test_multibyte_character_split_across_tokens(tokenizer: Tokenizer) -> None:
    satellite = "\N{SATELLITE}".encode()  # U+1F6F0: F0 9F 9B B0
    assert len(satellite) == 4
    head = tokenizer.encode("Orbit: ")
    reply = head + [_byte_ids(tokenizer)[b] for b in satellite] + [151645]
    station = GroundStation(tokenizer)
    spacecraft = FakeSpacecraft(
        lambda r: [
            *chunks(r.request_id, reply, 1),
            eos(r.request_id, len(reply), FinishReason.STOP_ID),
        ]
    )
    link = connect(station, spacecraft)
    updates: list[Update] = []
    answer = await station.ask(tokenizer.encode("?"), PARAMS, on_update=updates.append, timeout=10)
    link.close()

    texts = [u.text for u in updates]
    n = len(head)
    assert "".join(texts[:n]) == "Orbit: "
    # The character's first three octets complete nothing; the fourth completes it.
    assert texts[n : n + 4] == ["", "", "", "\N{SATELLITE}"]
    assert texts[n + 4] == ""  # <|im_end|>, special, skipped
    assert answer.text == "Orbit: \N{SATELLITE}"
    assert "\ufffd" not in "".join(texts)


async def test_unfinished_character_at_the_end_becomes_replacement(tokenizer: Tokenizer) -> None:
    reply = [_byte_ids(tokenizer)[0xF0], _byte_ids(tokenizer)[0x9F]]
    station = GroundStation(tokenizer)
    link = connect(
        station, FakeSpacecraft(lambda r: [*chunks(r.request_id, reply), eos(r.request_id, 2)])
    )
    updates: list[Update] = []
    answer = await station.ask([1, 2], PARAMS, on_update=updates.append, timeout=10)
    link.close()
    assert [u.text for u in updates] == ["", "", "\ufffd"]
    assert updates[-1].ids == ()
    assert answer.text == "\ufffd"


# -- errors, cancel, timeout ---------------------------------------------------------------


async def test_error_report_ends_the_request_with_a_typed_error(tokenizer: Tokenizer) -> None:
    def script(r: PromptRequest) -> list[Message]:
        return [
            TokenChunk(r.request_id, 0, (11, 12)),
            ErrorReport(
                request_id=r.request_id, reason=ErrorReason.GENERATION_FAILED, detail="cuda oom"
            ),
            eos(r.request_id, 2, FinishReason.ERROR),
        ]

    station = GroundStation(tokenizer)
    link = connect(station, FakeSpacecraft(script))
    answer = await station.ask([1, 2, 3], PARAMS, timeout=10)
    link.close()
    assert not answer.complete
    assert isinstance(answer.error, SpacecraftError)
    assert answer.error.reason is ErrorReason.GENERATION_FAILED
    assert answer.error.detail == "cuda oom"
    assert "GENERATION_FAILED: cuda oom" in str(answer.error)
    assert answer.received_ids == (11, 12)
    assert station.counters.answers_failed == 1


async def test_end_with_reason_error_and_no_report_is_an_error(tokenizer: Tokenizer) -> None:
    station = GroundStation(tokenizer)
    link = connect(
        station,
        FakeSpacecraft(lambda r: [eos(r.request_id, 0, FinishReason.ERROR)]),
    )
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert isinstance(answer.error, SpacecraftError)
    assert answer.error.reason is None
    assert answer.finish_reason is FinishReason.ERROR


async def test_refused_request_error_report_without_tokens(tokenizer: Tokenizer) -> None:
    station = GroundStation(tokenizer)
    link = connect(
        station,
        FakeSpacecraft(
            lambda r: [ErrorReport(request_id=r.request_id, reason=ErrorReason.QUEUE_FULL)]
        ),
    )
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert isinstance(answer.error, SpacecraftError)
    assert answer.error.reason is ErrorReason.QUEUE_FULL
    assert answer.received_ids == ()
    assert answer.time_to_first_token_s is None


async def test_timeout_cancels_onboard_and_reports_what_is_missing(tokenizer: Tokenizer) -> None:
    # Index 2 never comes: the stream cannot complete.
    spacecraft = FakeSpacecraft(
        lambda r: [
            TokenChunk(r.request_id, 0, (5, 6)),
            TokenChunk(r.request_id, 3, (8,)),
            eos(r.request_id, 4),
        ]
    )
    station = GroundStation(tokenizer)
    link = connect(station, spacecraft)
    answer = await station.ask([1], PARAMS, timeout=0.2)
    await asyncio.wait_for(spacecraft.cancelled.wait(), 5)
    link.close()
    assert isinstance(answer.error, RequestTimeoutError)
    assert answer.error.received == 2
    assert [(r.first_index, r.count) for r in answer.missing] == [(2, 1)]
    assert answer.received_ids == (5, 6)
    assert answer.finish_reason is FinishReason.MAX_TOKENS
    assert spacecraft.cancels == [0]
    assert station.in_flight == ()


async def test_cancel_gets_a_cancelled_stream(tokenizer: Tokenizer) -> None:
    spacecraft = FakeSpacecraft(lambda r: [TokenChunk(r.request_id, 0, (5,))])
    station = GroundStation(tokenizer)
    link = connect(station, spacecraft)
    handle = station.submit([1], PARAMS)
    first = await anext(aiter(handle.updates()))
    assert first.ids == (5,)
    handle.cancel()
    await asyncio.wait_for(spacecraft.cancelled.wait(), 5)
    spacecraft.downlink([eos(handle.request_id, 1, FinishReason.CANCELLED)])
    answer = await handle.answer(timeout=10)
    link.close()
    assert answer.finish_reason is FinishReason.CANCELLED
    assert answer.error is None
    assert answer.received_ids == (5,)
    assert station.counters.cancels_sent == 1
    with pytest.raises(InvalidState, match="request 0 is not in flight"):
        station.cancel(0)


# -- link-side oddities and station state ---------------------------------------------------


async def test_housekeeping_and_messages_for_unknown_requests(tokenizer: Tokenizer) -> None:
    housekeeping = Housekeeping(
        queue_depth=1, tokens_per_s_milli=0, memory_used_octets=1 << 20, uptime_s=5, device="cpu"
    )

    def script(r: PromptRequest) -> list[Message]:
        return [
            housekeeping,
            TokenChunk(r.request_id + 1, 0, (1,)),  # nobody asked
            ErrorReport(request_id=None, reason=ErrorReason.UNKNOWN_APID, detail="apid 0x7"),
            PromptRequest(request_id=3, params=PARAMS, prompt_ids=(1,)),  # uplink type
            TokenChunk(r.request_id, 0, (42,)),
            eos(r.request_id, 1),
        ]

    station = GroundStation(tokenizer)
    link = connect(station, FakeSpacecraft(script))
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert answer.complete
    assert station.housekeeping == housekeeping
    assert station.housekeeping_at is not None
    assert station.counters.unmatched_messages == 1
    assert station.counters.unexpected_messages == 1
    assert [e.reason for e in station.general_errors] == [ErrorReason.UNKNOWN_APID]


async def test_garbage_on_the_downlink_is_counted_not_raised(tokenizer: Tokenizer) -> None:
    station = GroundStation(tokenizer)
    spacecraft = FakeSpacecraft(lambda r: [TokenChunk(r.request_id, 0, (7,)), eos(r.request_id, 1)])
    link = connect(station, spacecraft)
    station.on_receive(bytes(range(256)) * 20, now=0.0)
    station.end_of_stream(now=0.0)
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert answer.complete
    assert answer.received_ids == (7,)


async def test_request_ids_wrap_at_u16(tokenizer: Tokenizer) -> None:
    spacecraft = FakeSpacecraft(lambda r: [TokenChunk(r.request_id, 0, (7,)), eos(r.request_id, 1)])
    station = GroundStation(tokenizer, first_request_id=0xFFFF)
    link = connect(station, spacecraft)
    first = await station.ask([1], PARAMS, timeout=10)
    second = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert (first.request_id, second.request_id) == (0xFFFF, 0)
    assert first.complete and second.complete


async def test_ids_come_from_the_id_source_skipping_those_in_flight(tokenizer: Tokenizer) -> None:
    given = iter([7, 7, 8])

    def script(r: PromptRequest) -> list[Message]:
        return (
            [] if r.request_id == 7 else [TokenChunk(r.request_id, 0, (7,)), eos(r.request_id, 1)]
        )

    station = GroundStation(tokenizer, id_source=lambda: next(given, 7))
    link = connect(station, FakeSpacecraft(script))
    silent = station.submit([1], PARAMS)  # 7 stays in flight
    second = await station.ask([1], PARAMS, timeout=10)
    assert (silent.request_id, second.request_id) == (7, 8)  # the second 7 was skipped
    assert station.in_flight == (7,)
    with pytest.raises(InvalidState, match="id_source gave only ids in flight"):
        station.submit([1], PARAMS)  # the source gives 7 for ever
    link.close()


async def test_an_id_source_out_of_range_or_with_a_first_id_is_misuse(
    tokenizer: Tokenizer,
) -> None:
    with pytest.raises(LocalProtocolError, match="first_request_id 3 and id_source"):
        GroundStation(tokenizer, first_request_id=3, id_source=lambda: 0)
    station = GroundStation(tokenizer, id_source=lambda: 0x10000)
    link = connect(station, FakeSpacecraft(lambda r: []))
    with pytest.raises(LocalProtocolError, match=r"request id 65536 outside 0\.\.65535"):
        station.submit([1], PARAMS)
    link.close()


def duplicate_refusal(r: PromptRequest, *, digest: str | None = None) -> ErrorReport:
    """The spacecraft's refusal of ``r`` (docs/protocol.md §8.1)."""
    return ErrorReport(
        request_id=r.request_id,
        reason=ErrorReason.DUPLICATE_REQUEST,
        detail=f"id {r.request_id} running; refused sha256:{digest or request_digest(r)}",
    )


async def test_a_refused_reused_id_is_a_clear_error_naming_the_id(tokenizer: Tokenizer) -> None:
    station = GroundStation(tokenizer, first_request_id=41)
    link = connect(station, FakeSpacecraft(lambda r: [duplicate_refusal(r)]))
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert isinstance(answer.error, RequestIdInUseError)
    assert isinstance(answer.error, SpacecraftError)
    assert answer.error.reason is ErrorReason.DUPLICATE_REQUEST
    assert answer.error.state == "running"
    assert str(answer.error) == (
        "request 41: refused by the spacecraft: request id 41 is still in use on board"
        " (running) by another request; ask again for a new id"
    )
    assert answer.received_ids == ()
    assert station.counters.answers_failed == 1
    assert station.counters.refusals_of_other_requests == 0


async def test_a_refusal_without_the_digest_is_taken_as_ours(tokenizer: Tokenizer) -> None:
    report = ErrorReport(request_id=0, reason=ErrorReason.DUPLICATE_REQUEST, detail="id in use")
    station = GroundStation(tokenizer)
    link = connect(station, FakeSpacecraft(lambda r: [report]))
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert isinstance(answer.error, RequestIdInUseError)
    assert answer.error.state is None
    assert "request id 0 is still in use on board (id in use)" in str(answer.error)


async def test_the_refusal_of_another_grounds_request_leaves_ours_going(
    tokenizer: Tokenizer,
) -> None:
    # Another ground reused our id 0; the spacecraft refused its request, not ours.
    def script(r: PromptRequest) -> list[Message]:
        return [
            TokenChunk(r.request_id, 0, (5,)),
            duplicate_refusal(r, digest="0123456789abcdef"),
            TokenChunk(r.request_id, 1, (6,)),
            eos(r.request_id, 2),
        ]

    station = GroundStation(tokenizer)
    link = connect(station, FakeSpacecraft(script))
    answer = await station.ask([1], PARAMS, timeout=10)
    link.close()
    assert answer.complete, answer.error
    assert answer.received_ids == (5, 6)
    assert station.counters.refusals_of_other_requests == 1
    assert station.counters.error_reports == 1


async def test_a_station_on_the_allocator_continues_the_previous_process(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    state = tmp_path / "request-ids.json"
    spacecraft = FakeSpacecraft(lambda r: [TokenChunk(r.request_id, 0, (7,)), eos(r.request_id, 1)])
    ids = []
    for _ in range(2):  # two ground processes in a row
        station = GroundStation(tokenizer, id_source=RequestIdAllocator(state))
        link = connect(station, spacecraft)
        answer = await station.ask([1], PARAMS, timeout=10)
        link.close()
        assert answer.complete
        ids.append(answer.request_id)
    assert ids[1] == (ids[0] + 1) % 0x1_0000
    assert [r.request_id for r in spacecraft.requests] == ids


async def test_caller_misuse_raises_typed_errors(tokenizer: Tokenizer) -> None:
    station = GroundStation(tokenizer)
    with pytest.raises(InvalidState, match="no link attached"):
        station.submit([1], PARAMS)
    with pytest.raises(LocalProtocolError, match="first_request_id 65536"):
        GroundStation(tokenizer, first_request_id=0x10000)
    link = connect(station, FakeSpacecraft(lambda r: []))
    with pytest.raises(LocalProtocolError, match="prompt length 0"):
        station.submit([], PARAMS)
    with pytest.raises(LocalProtocolError, match="prompt id 300000"):
        station.submit([1, 300_000], PARAMS)
    handle = station.submit([1], PARAMS)
    with pytest.raises(LocalProtocolError, match="timeout -1"):
        await handle.answer(timeout=-1)
    with pytest.raises(InvalidState, match="request 9 is not in flight"):
        station.cancel(9)
    link.close()


# -- the CLI -------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "hi", "--link", "http://x:1"], "scheme must be tcp:// or udp://"),
        (["ask", "hi", "--link", "tcp://localhost"], "expected tcp://HOST:PORT"),
        (["ask", "hi", "--link", "udp://h:99999"], "expected udp://HOST:PORT"),
        (["ask", "hi", "--link", "tcp://h:1", "--temperature", "0.7001"], "not a multiple"),
        (["ask", "hi", "--link", "tcp://h:1", "--temperature", "nan"], "--temperature nan must"),
        (["ask", "hi", "--link", "tcp://h:1", "--top-p", "0"], "--top-p 0 must be in 0.001..1"),
        (["ask", "hi", "--link", "tcp://h:1", "--max-new-tokens", "0"], "--max-new-tokens 0"),
        (["ask", "hi", "--link", "tcp://h:1", "--max-new-tokens", "99999"], "1..16384"),
        (["ask", "hi", "--link", "tcp://h:1", "--seed", "-1"], "--seed -1"),
        (["ask", "hi", "--link", "tcp://h:1", "--model", "/no/such/dir"], "/no/such/dir"),
        (["ask", "hi", "--link", "tcp://h:1", "--seed", "x"], "invalid int value"),
        (["ask", "hi", "--link", "tcp://h:1", "--top-p", "big"], "invalid float value"),
        (["ask", "--link", "tcp://h:1"], "the following arguments are required: PROMPT"),
        (["ask", "hi"], "the following arguments are required: --link"),
        ([], "required: COMMAND"),
    ],
)
def test_cli_bad_options_exit_2_with_a_message(argv: list[str], message: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "0 is not a positive number of seconds"), ("inf", "'inf' is not a finite number")],
)
def test_cli_bad_timeout_is_a_usage_error(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli("ask", "hi", "--link", "tcp://h:1", "--timeout", value)
    assert code == 2
    assert f"argument --timeout: {message}" in err + capsys.readouterr().err


def test_cli_empty_prompt_without_chat_is_a_usage_error(
    xdg_cache_home: Path, qwen3_tokenizer: Tokenizer
) -> None:
    code, _, err = run_cli("ask", "", "--no-chat", "--link", "udp://127.0.0.1:9")
    assert code == 2
    assert "prompt length 0" in err


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_cli_timeout_when_nobody_answers(xdg_cache_home: Path, qwen3_tokenizer: Tokenizer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{silent.getsockname()[1]}"
        code, out, err = run_cli("ask", "hello", "--link", url, "--timeout", "0.3", "--json")
    assert code == 1
    assert "no complete answer after 0.3 s, 0 ids received" in err
    assert "Traceback" not in err
    record = json.loads(out)
    assert record["received_ids"] == []
    assert record["prompt_ids"] == qwen3_tokenizer.encode_prompt("hello")
    assert record["finish_reason"] is None
    # COP-1's Set V(R) only: nobody acknowledges it, so the request and the Cancel
    # wait in FOP-1 (T1 is longer than the timeout).
    assert record["counters"]["cltus_sent"] == 1
    assert record["counters"]["uplink_bits"] == 8 * record["counters"]["uplink_octets"]


def test_cli_tcp_connection_refused_is_a_clean_failure(
    xdg_cache_home: Path, qwen3_tokenizer: Tokenizer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run_cli("ask", "hello", "--link", f"tcp://127.0.0.1:{port}", "--timeout", "5")
    assert code == 1
    assert f"cannot reach tcp://127.0.0.1:{port}: Connection refused" in err
    assert "Traceback" not in err


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_cli_ask_over_tcp_live_text_and_json(
    xdg_cache_home: Path, qwen3_tokenizer: Tokenizer
) -> None:
    reply = [*qwen3_tokenizer.encode("Fine, thanks."), 151645]
    endpoint = SpacecraftEndpoint(LinkConfig())
    requests: list[PromptRequest] = []
    links: list[Link] = []

    def receive(data: bytes, now: float) -> None:
        endpoint.receive_bytes(data, now)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived) and isinstance(event.message, PromptRequest):
                rid = event.message.request_id
                requests.append(event.message)
                messages: list[Message] = [*chunks(rid, reply, 2)]
                messages.append(eos(rid, len(reply), FinishReason.STOP_ID))
                for message in messages:
                    endpoint.send(message)
                while endpoint.pending_octets:
                    links[0].send(endpoint.next_cadu())
                links[0].send(endpoint.next_cadu())
        if endpoint.clcw_changed:  # FARM-1's acknowledgement, in idle frames
            links[0].send(endpoint.next_cadu())
            links[0].send(endpoint.next_cadu())

    url = f"tcp://127.0.0.1:{free_tcp_port()}"
    links.append(await open_link(url, role="spacecraft", on_receive=receive))
    try:
        options = ["--link", url, "--timeout", "20", "--temperature", "0.7", "--top-p", "0.9"]
        code, out, err = await asyncio.to_thread(
            run_cli, "ask", "How are you?", *options, "--seed", "5", "--max-new-tokens", "16"
        )
        assert (code, out) == (0, "Fine, thanks.\n"), err
        assert f"groundstation: stop, {len(reply)} ids, first id" in err
        assert "up 3 CLTU(s)" in err  # Set V(R), the request, the EndAck
        code, out, err = await asyncio.to_thread(run_cli, "ask", "How are you?", *options, "--json")
        assert code == 0, err
    finally:
        links[0].close()
    prompt = qwen3_tokenizer.encode_prompt("How are you?")
    assert requests[0] == PromptRequest(
        request_id=0,
        params=GenerationParams(
            max_new_tokens=16,
            temperature_milli=700,
            top_p_milli=900,
            seed=5,
            stop_ids=(151645, 151643),
        ),
        prompt_ids=tuple(prompt),
    )
    record = json.loads(out)
    assert record["prompt_ids"] == prompt
    assert record["received_ids"] == reply
    assert record["text"] == "Fine, thanks."
    assert record["finish_reason"] == "stop"
    assert record["error"] is None
    assert record["complete"] is True
    assert 0 < record["time_to_first_token_s"] <= record["total_s"]
    assert record["params"] == {
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 0,
        "chat": True,
        "stop_ids": [151645, 151643],
    }
    assert record["onboard"] == {
        "time_to_first_token_s": 0.0015,
        "generation_s": 0.012,
        "tokens_per_s": 250.0,
    }
    counters = record["counters"]
    assert counters["cltus_sent"] == 3  # Set V(R), the request, the EndAck
    assert counters["frames_received"] >= 1
    assert counters["dropped"] == 0
    assert record["missing"] == []


def test_cli_model_directory_uses_the_checkpoint_tokenizer(
    qwen3_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    # A checkpoint's tokenizer files as save_checkpoint writes them (no weights needed).
    (tmp_path / "tokenizer.json").write_text(qwen3_tokenizer.to_json())
    config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text(QWEN3_CHAT_TEMPLATE)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 7]}))
    url = f"udp://127.0.0.1:{free_udp_port()}"
    argv = ["ask", "Bonjour", "--model", str(tmp_path), "--link", url, "--timeout", "0.1"]
    code, out, err = run_cli(*argv, "--json")
    assert code == 1
    assert "no complete answer" in err
    record = json.loads(out)
    expected = Tokenizer.from_pretrained_dir(tmp_path).encode_prompt("Bonjour")
    assert record["prompt_ids"] == expected == qwen3_tokenizer.encode_prompt("Bonjour")
    assert record["params"]["stop_ids"] == [151645, 7]


def test_stop_ids_match_onboard_defaults(qwen3_tokenizer: Tokenizer, tmp_path: Path) -> None:
    assert default_stop_ids("embedded", qwen3_tokenizer.eos_ids) == (151645, 151643)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 151645]}))
    assert default_stop_ids(str(tmp_path), (151645,)) == (151645, 7)
    (tmp_path / "generation_config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 9}))
    assert default_stop_ids(str(tmp_path), (151645,)) == (151645, 9)


def test_importing_groundstation_and_parsing_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import groundstation, groundstation.cli, groundstation.station\n"
        "groundstation.cli.build_parser().parse_args(['ask', 'hi', '--link', 'tcp://h:1'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
