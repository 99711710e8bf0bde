"""The OpenAI-compatible gateway in one process: request mapping, keys, rate limit, and
the app over a GroundStation on a LoopbackLink against a scripted spacecraft.

The spacecraft is :class:`tests.test_groundstation.FakeSpacecraft`: it answers each
PromptRequest with the messages a test scripts.  HTTP goes through httpx's ASGI
transport; nothing sleeps, every wait has a generous timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from groundstation.gateway.app import BUSY_RETRY_AFTER_S, MAX_BODY_OCTETS, Gateway, GatewayConfig
from groundstation.gateway.auth import (
    ApiKey,
    ApiKeyFileError,
    ApiKeys,
    RateLimiter,
    add_key,
    hash_token,
)
from groundstation.gateway.schema import (
    ApiError,
    ParseContext,
    StopMatcher,
    parse_chat,
    parse_completion,
    render_qwen3_turns,
)
from groundstation.station import GroundStation
from linkstack.inference.protocol import (
    ErrorReason,
    ErrorReport,
    FinishReason,
    Message,
    PromptRequest,
)
from linkstack.inference.tokenizer import Tokenizer
from tests.test_groundstation import FakeSpacecraft, chunks, connect, eos

STOP_IDS = (151645, 151643)


@pytest.fixture
def ctx(qwen3_tokenizer: Tokenizer) -> ParseContext:
    return ParseContext(
        tokenizer=qwen3_tokenizer,
        model_name="embedded",
        stop_ids=STOP_IDS,
        max_prompt_tokens=64,
        default_max_tokens=32,
        seed_source=lambda: 7,
    )


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "embedded", "messages": [{"role": "user", "content": "hi"}], **fields}


# -- request mapping ---------------------------------------------------------------------------


def test_one_user_message_gives_the_prompt_ids_of_onboard_generate(
    ctx: ParseContext, qwen3_tokenizer: Tokenizer
) -> None:
    job = parse_chat(chat(temperature=0.8, top_p=0.95, seed=42, max_tokens=12), ctx)
    assert job.prompt_ids == tuple(qwen3_tokenizer.encode_prompt("hi", chat=True))
    assert (job.params.temperature_milli, job.params.top_p_milli) == (800, 950)
    assert (job.params.seed, job.params.max_new_tokens, job.params.stop_ids) == (42, 12, STOP_IDS)
    assert (job.stream, job.stop, job.seed_drawn) == (False, (), False)


def test_defaults_are_openais_and_a_missing_seed_is_drawn(ctx: ParseContext) -> None:
    job = parse_chat(chat(), ctx)
    assert (job.params.temperature_milli, job.params.top_p_milli) == (1000, 1000)
    assert (job.params.seed, job.seed_drawn, job.params.max_new_tokens) == (7, True, 32)


def test_several_turns_render_in_qwen3_format(
    ctx: ParseContext, qwen3_tokenizer: Tokenizer
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
        },
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Orbit?"},
    ]
    job = parse_chat({"model": "embedded", "messages": messages}, ctx)
    text = render_qwen3_turns(
        [("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi."), ("user", "Orbit?")]
    )
    assert job.prompt_ids == tuple(qwen3_tokenizer.encode(text))
    assert render_qwen3_turns([("user", "x")]) == qwen3_tokenizer.render_prompt("x")


def test_completions_take_text_as_is_or_token_ids(
    ctx: ParseContext, qwen3_tokenizer: Tokenizer
) -> None:
    job = parse_completion({"model": "embedded", "prompt": "Once upon"}, ctx)
    assert job.prompt_ids == tuple(qwen3_tokenizer.encode("Once upon"))
    assert job.kind == "text"
    job = parse_completion({"model": "embedded", "prompt": [1, 2, 3], "stop": "x"}, ctx)
    assert (job.prompt_ids, job.stop) == ((1, 2, 3), ("x",))


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ([1, 2], 400, None, None),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", None),
        (chat(model="gpt-4o"), 404, "model", "model_not_found"),
        (chat(messages="hi"), 400, "messages", None),
        (chat(messages=[]), 400, "messages", None),
        (chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages", None),
        (chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content", None),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            400,
            "messages[0].content",
            None,
        ),
        (chat(temperature="hot"), 400, "temperature", None),
        (chat(temperature=True), 400, "temperature", None),
        (chat(temperature=2.5), 400, "temperature", None),
        (chat(temperature=0.12345), 400, "temperature", None),
        (chat(top_p=0), 400, "top_p", None),
        (chat(max_tokens=0), 400, "max_tokens", None),
        (chat(max_tokens="10"), 400, "max_tokens", None),
        (chat(max_tokens=5, max_completion_tokens=5), 400, "max_tokens", None),
        (chat(seed=-1), 400, "seed", None),
        (chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", None),
        (chat(stop=[1]), 400, "stop", None),
        (chat(stop=[""]), 400, "stop", None),
        (chat(n=2), 400, "n", "unsupported_parameter"),
        (chat(logprobs=True), 400, "logprobs", "unsupported_parameter"),
        (chat(tools=[{"type": "function"}]), 400, "tools", "unsupported_parameter"),
        (chat(frequency_penalty=0.5), 400, "frequency_penalty", "unsupported_parameter"),
        (chat(echo=False), 400, "echo", "unsupported_parameter"),
        (chat(foo=1), 400, "foo", "unsupported_parameter"),
        (chat(stream="yes"), 400, "stream", None),
        (chat(stream_options={"include_usage": True}), 400, "stream_options", None),
        (
            chat(messages=[{"role": "user", "content": "word " * 100}]),
            413,
            "messages",
            "prompt_too_long",
        ),
    ],
)
def test_bad_chat_requests_are_refused_naming_the_parameter(
    ctx: ParseContext, body: object, status: int, param: str | None, code: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat(body, ctx)
    assert (caught.value.status, caught.value.param, caught.value.code) == (status, param, code)
    assert caught.value.body()["error"]["message"]


def test_neutral_values_clients_send_are_accepted(ctx: ParseContext) -> None:
    job = parse_chat(
        chat(
            n=1,
            frequency_penalty=0,
            presence_penalty=0.0,
            logprobs=False,
            user="ops",
            stream=True,
            stream_options={"include_usage": True},
        ),
        ctx,
    )
    assert (job.stream, job.include_usage) == (True, True)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embedded"}, "prompt"),
        ({"model": "embedded", "prompt": ""}, "prompt"),
        ({"model": "embedded", "prompt": ["a", "b"]}, None),
        ({"model": "embedded", "prompt": [1, -1]}, "prompt"),
        ({"model": "embedded", "prompt": "x", "best_of": 2}, "best_of"),
        ({"model": "embedded", "prompt": "x", "max_completion_tokens": 2}, "max_completion_tokens"),
    ],
)
def test_bad_completion_requests_are_refused(
    ctx: ParseContext, body: object, param: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_completion(body, ctx)
    assert (caught.value.status, caught.value.param) == (400, param)


# -- stop strings -------------------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 2, 3, 100])
def test_stop_strings_end_the_text_before_them_in_any_pieces(piece: int) -> None:
    text = "alpha beta ST gamma STOP delta"
    matcher = StopMatcher(["STOP", "xyz"])
    shown, stopped = [], False
    for start in range(0, len(text), piece):
        out, stopped = matcher.push(text[start : start + piece])
        shown.append(out)
        if stopped:
            break
    assert ("".join(shown), stopped) == ("alpha beta ST gamma ", True)
    assert matcher.flush() == ""


def test_a_held_prefix_of_a_stop_string_is_released_at_the_end() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("ends with ST") == ("ends with ", False)
    assert matcher.flush() == "ST"
    assert StopMatcher([]).push("as is") == ("as is", False)


# -- keys and rate ------------------------------------------------------------------------------


def test_api_keys_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    token = add_key(path, "alice", requests_per_minute=5)
    other = add_key(path, "ops", operator=True)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert token not in path.read_text() and hash_token(token) in path.read_text()
    keys = ApiKeys.load(path)
    assert keys.authenticate(token) == ApiKey("alice", hash_token(token), 5, False)
    assert keys.authenticate(other) == ApiKey("ops", hash_token(other), 60, True)
    assert keys.authenticate(token + "x") is None
    with pytest.raises(ApiKeyFileError, match="already has a key named 'alice'"):
        add_key(path, "alice")


@pytest.mark.parametrize(
    ("text", "mode", "match"),
    [
        ('{"format": "linkstack-api-keys-1", "keys": []}', 0o644, "mode 0644"),
        ("{not json", 0o600, "not valid JSON"),
        ('{"format": "other", "keys": []}', 0o600, "not an API key file"),
        (
            '{"format": "linkstack-api-keys-1", "keys": [{"name": "a", "sha256": "zz"}]}',
            0o600,
            "64 hex",
        ),
        (
            '{"format": "linkstack-api-keys-1", "keys": [{"name": "a", "sha256": "%s",'
            ' "requests_per_minute": 0}]}' % ("0" * 64),
            0o600,
            "requests_per_minute",
        ),
    ],
)
def test_bad_api_key_files_are_refused(tmp_path: Path, text: str, mode: int, match: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(ApiKeyFileError, match=match):
        ApiKeys.load(path)


def test_the_rate_limit_is_a_token_bucket_per_key() -> None:
    limiter = RateLimiter()
    assert [limiter.acquire("a", 2, 0.0) for _ in range(2)] == [None, None]
    assert limiter.acquire("a", 2, 0.0) == pytest.approx(30.0)
    assert limiter.acquire("b", 2, 0.0) is None  # another key, another bucket
    assert limiter.acquire("a", 2, 29.0) == pytest.approx(1.0)
    assert limiter.acquire("a", 2, 30.0) is None


# -- the app over a scripted spacecraft ---------------------------------------------------------

REPLY = "The spacecraft answers STOP here."


def script_for(tokenizer: Tokenizer):  # type: ignore[no-untyped-def]
    reply = tokenizer.encode(REPLY)

    def script(request: PromptRequest) -> Sequence[Message]:
        prompt = tokenizer.decode(request.prompt_ids)
        rid = request.request_id
        if "busy" in prompt:
            return [
                ErrorReport(
                    request_id=rid, reason=ErrorReason.QUEUE_FULL, detail="8 requests queued"
                )
            ]
        if "broken" in prompt:
            return [
                ErrorReport(request_id=rid, reason=ErrorReason.GENERATION_FAILED, detail="boom")
            ]
        if "cancelled" in prompt:
            return [*chunks(rid, reply[:2]), eos(rid, 2, FinishReason.CANCELLED)]
        if "never" in prompt:
            return chunks(rid, reply[:3])  # the stream stays open: the client leaves
        return [*chunks(rid, reply, 2), eos(rid, len(reply), FinishReason.STOP_ID)]

    return script


class Harness:
    def __init__(self, gateway: Gateway, spacecraft: FakeSpacecraft, tokens: dict[str, str]):
        self.gateway = gateway
        self.spacecraft = spacecraft
        self.tokens = tokens
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway"
        )

    def auth(self, name: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    async def post(self, path: str, body: object, name: str = "alice") -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.auth(name))


@pytest.fixture
async def harness(qwen3_tokenizer: Tokenizer, tmp_path: Path) -> AsyncIterator[Harness]:
    station = GroundStation(qwen3_tokenizer)
    spacecraft = FakeSpacecraft(script_for(qwen3_tokenizer))
    link = connect(station, spacecraft)
    path = tmp_path / "keys.json"
    tokens = {
        "alice": add_key(path, "alice", requests_per_minute=1000),
        "slow": add_key(path, "slow", requests_per_minute=2),
        "ops": add_key(path, "ops", operator=True),
    }
    clock = [0.0]
    gateway = Gateway(
        station,
        GatewayConfig(
            model_name="embedded", stop_ids=STOP_IDS, link_url="loopback", max_prompt_tokens=64
        ),
        keys=ApiKeys.load(path),
        seed_source=lambda: 9,
        clock=lambda: clock[0],
    )
    h = Harness(gateway, spacecraft, tokens)
    async with asyncio.timeout(60):
        yield h
    await h.client.aclose()
    await gateway.close()
    station.close()
    link.close()


def sse_events(text: str) -> list[Any]:
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_no_key_or_a_wrong_key_is_401(harness: Harness) -> None:
    for headers in ({}, {"Authorization": "Bearer lsk-wrong"}, {"Authorization": "Basic x"}):
        response = await harness.client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="linkstack"'
        assert response.json()["error"]["code"] == "invalid_api_key"
    response = await harness.client.get("/v1/models")
    assert response.status_code == 401
    assert harness.spacecraft.requests == []


async def test_models_lists_the_served_model(harness: Harness) -> None:
    response = await harness.client.get("/v1/models", headers=harness.auth())
    assert response.status_code == 200
    data = response.json()
    assert [m["id"] for m in data["data"]] == ["embedded"]
    assert data["data"][0]["object"] == "model"
    assert (
        await harness.client.get("/v1/models/embedded", headers=harness.auth())
    ).status_code == 200
    missing = await harness.client.get("/v1/models/gpt-4o", headers=harness.auth())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")


async def test_the_rate_limit_answers_429_with_retry_after(harness: Harness) -> None:
    statuses = [
        (await harness.client.get("/v1/models", headers=harness.auth("slow"))).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 200]
    response = await harness.client.get("/v1/models", headers=harness.auth("slow"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await harness.client.get("/v1/models", headers=harness.auth())).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[]", 400, None),
        (b"x" * (MAX_BODY_OCTETS + 1), 413, "body_too_large"),
    ],
)
async def test_malformed_bodies_get_openai_errors(
    harness: Harness, content: bytes, status: int, code: str | None
) -> None:
    response = await harness.client.post(
        "/v1/chat/completions", content=content, headers=harness.auth()
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, "invalid_request_error")


async def test_unknown_urls_and_methods_get_openai_errors(harness: Harness) -> None:
    response = await harness.client.get("/v1/embeddings", headers=harness.auth())
    assert (response.status_code, response.json()["error"]["code"]) == (404, "unknown_url")
    response = await harness.client.get("/v1/chat/completions", headers=harness.auth())
    assert response.status_code == 405 and "error" in response.json()


async def test_a_prompt_over_the_uplink_budget_is_413(harness: Harness) -> None:
    body = chat(messages=[{"role": "user", "content": "word " * 100}])
    response = await harness.post("/v1/chat/completions", body)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "prompt_too_long")
    assert harness.spacecraft.requests == []


async def test_a_chat_answer_whole(harness: Harness, qwen3_tokenizer: Tokenizer) -> None:
    response = await harness.post("/v1/chat/completions", chat(seed=3, max_tokens=20))
    assert response.status_code == 200
    body = response.json()
    reply_ids = qwen3_tokenizer.encode(REPLY)
    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": REPLY, "refusal": None},
        }
    ]
    prompt = len(qwen3_tokenizer.encode_prompt("hi"))
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": len(reply_ids),
        "total_tokens": prompt + len(reply_ids),
    }
    ext = body["linkstack"]
    assert (ext["seed"], ext["seed_drawn"], ext["finish_on_board"]) == (3, False, "stop")
    assert ext["uplink_bits"] > 0 and ext["time_to_first_token_s"]["onboard"] == 0.0015
    assert ext["request_id"] == harness.spacecraft.requests[0].request_id
    assert harness.spacecraft.requests[0].params.max_new_tokens == 20
    assert harness.gateway.station.in_flight == ()


async def test_a_chat_answer_streams_as_openai_chunks(harness: Harness) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    response = await harness.post("/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    first, *middle, last, usage, _ = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert "".join(e["choices"][0]["delta"]["content"] for e in middle) == REPLY
    assert all(e["choices"][0]["finish_reason"] is None for e in middle)
    assert last["choices"][0] == {
        "index": 0,
        "finish_reason": "stop",
        "logprobs": None,
        "delta": {},
    }
    assert last["linkstack"]["seed"] == 9
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


async def test_completions_stream_text(harness: Harness) -> None:
    response = await harness.post(
        "/v1/completions", {"model": "embedded", "prompt": "Say", "stream": True}
    )
    events = sse_events(response.text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == REPLY
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert {e["object"] for e in events[:-1]} == {"text_completion"}
    whole = (await harness.post("/v1/completions", {"model": "embedded", "prompt": "Say"})).json()
    assert whole["choices"][0]["text"] == REPLY


async def test_a_stop_string_ends_the_text_and_cancels_on_board(harness: Harness) -> None:
    response = await harness.post("/v1/chat/completions", chat(stop=["STOP"]))
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "The spacecraft answers "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["linkstack"]["stopped_on_ground"] is True
    async with asyncio.timeout(10):
        await harness.spacecraft.cancelled.wait()
    assert harness.spacecraft.cancels == [body["linkstack"]["request_id"]]
    assert harness.gateway.counters["stop_cancels"] == 1


async def test_a_full_queue_on_board_is_429_with_retry_after(harness: Harness) -> None:
    for stream in (False, True):
        body = chat(messages=[{"role": "user", "content": "busy"}], stream=stream)
        response = await harness.post("/v1/chat/completions", body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == str(BUSY_RETRY_AFTER_S)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "spacecraft_busy")
        assert "8 requests queued" in error["message"]


async def test_a_failure_on_board_is_502_named(harness: Harness) -> None:
    body = chat(messages=[{"role": "user", "content": "broken"}])
    response = await harness.post("/v1/chat/completions", body)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "spacecraft_error"
    assert "GENERATION_FAILED: boom" in response.json()["error"]["message"]


async def test_a_stream_cancelled_on_board_ends_with_an_error_object(harness: Harness) -> None:
    body = chat(messages=[{"role": "user", "content": "cancelled"}], stream=True)
    events = sse_events((await harness.post("/v1/chat/completions", body)).text)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert (error["code"], error["type"]) == ("cancelled", "server_error")
    assert "linkstack" in events[-2]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2]) != ""


async def test_the_operator_state_needs_an_operator_key(harness: Harness) -> None:
    assert (await harness.client.get("/operator/state")).status_code == 401
    response = await harness.client.get("/operator/state", headers=harness.auth("alice"))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "not_operator")
    await harness.post("/v1/chat/completions", chat())
    state = (await harness.client.get("/operator/state", headers=harness.auth("ops"))).json()
    assert state["link"]["fop"]["state"] == "S1"
    assert state["link"]["counters"]["frames_received"] > 0
    assert state["link"]["sdls"]["enabled"] is False
    assert [(r["status"], r["text"], r["user"]) for r in state["requests"]] == [
        ("stop", REPLY, "alice")
    ]
    page = await harness.client.get("/")
    assert page.status_code == 200 and "/operator/events" in page.text


def test_retry_after_reads_the_spacecrafts_hint_in_milliseconds() -> None:
    """The QUEUE_FULL detail onboard serve writes carries its hint in milliseconds:
    2.5 s becomes Retry-After 3, a detail without one the gateway's default."""
    from groundstation.gateway.app import _retry_after
    from linkstack.inference.protocol import format_busy_detail

    assert _retry_after(format_busy_detail(4, 8, 2.5)) == 3
    assert _retry_after(format_busy_detail(4, 8, 0.0)) == 1
    assert _retry_after("8 requests queued") == BUSY_RETRY_AFTER_S
