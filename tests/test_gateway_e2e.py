"""``groundstation serve`` as a real process, over a UDP link to ``onboard serve``.

The official ``openai`` client streams a chat completion through the gateway and must
get exactly the text ``onboard generate`` makes for the same seed; curl does the same
(skipped without curl).  Four clients stream at once, each getting its own reference
text; a client that disconnects mid-stream gets its request cancelled on board (the
spacecraft ends the stream CANCELLED and serves the next request); 401, 413 and 429
come through the real HTTP stack.  The operator page is opened in headless Chromium
(skipped without Chromium or Playwright) and a screenshot is kept in
``test-artifacts/operator_page.png`` (ignored by git).

Both servers and the reference run start together at module setup, so that their
model loads overlap.  Nothing sleeps to wait: waits are on ready lines, events and
states, each with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from groundstation.gateway.auth import add_key
from tests.test_onboard_serve import Program, Server, free_port, onboard, python_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
READY_TIMEOUT = 180.0
SAMPLING = {"seed": 42, "temperature": 0.8, "top_p": 0.95, "max_tokens": 12}
REFERENCE_ARGS = ["--seed", "42", "--temperature", "0.8", "--top-p", "0.95"]
REFERENCE_ARGS += ["--max-new-tokens", "12", "--device", "cpu"]


@dataclass
class Setup:
    url: str
    tokens: dict[str, str]
    gateway: Program
    spacecraft: Server
    reference: subprocess.Popen[str]
    env: dict[str, str]

    def auth(self, name: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def state(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/operator/state", headers=self.auth("ops"), timeout=30)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def wait_state(
        self, done: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Look at the operator state until ``done`` says yes (a deadline, no fixed wait)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if done(state):
                return state
            assert time.monotonic() < deadline, json.dumps(state, indent=1)[:4000]
            threading.Event().wait(0.1)


@pytest.fixture(scope="module")
def setup(xdg_cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("gateway")
    env = python_env(xdg_cache_root)
    env["XDG_STATE_HOME"] = str(tmp / "state")
    keys = tmp / "api-keys.json"
    tokens = {
        "alice": add_key(keys, "alice", requests_per_minute=1000),
        "slow": add_key(keys, "slow", requests_per_minute=1),
        "ops": add_key(keys, "ops", requests_per_minute=100_000, operator=True),
    }
    link = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    spacecraft = Server(
        onboard(
            *("serve", "--link", link, "--device", "cpu", "--max-queue", "8"),
            *("--housekeeping-interval", "1"),
            env=env,
            stderr=subprocess.PIPE,
        ),
        ready_timeout=READY_TIMEOUT,
    )
    reference = onboard(
        "generate", "hi", "--json", *REFERENCE_ARGS, env=env, stdout=subprocess.PIPE
    )
    gateway = Program(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "groundstation.cli",
                "serve",
                "--http",
                "127.0.0.1:0",
                "--link",
                link,
                "--api-keys",
                str(keys),
                "--default-max-tokens",
                "16",
            ],
            cwd=ROOT,
            env=env,
            text=True,
            stderr=subprocess.PIPE,
        ),
        "groundstation: serving ",
        ready_timeout=READY_TIMEOUT,
    )
    try:
        spacecraft.wait_ready()
        url = gateway.wait_url()
        yield Setup(url, tokens, gateway, spacecraft, reference, env)
    finally:
        for proc in (gateway, spacecraft):
            if proc.process.poll() is None:
                proc.stop()
        if reference.poll() is None:
            reference.kill()
            reference.wait()


@pytest.fixture(scope="module")
def reference_text(setup: Setup) -> str:
    out, _ = setup.reference.communicate(timeout=READY_TIMEOUT)
    assert setup.reference.returncode == 0
    record = json.loads(out)
    assert record["finish_reason"] == "max_tokens" and len(record["generated_ids"]) == 12
    text: str = record["text"]
    return text


def test_the_openai_client_streams_what_onboard_generate_makes(
    setup: Setup, reference_text: str
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{setup.url}/v1", api_key=setup.tokens["alice"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["embedded"]
    stream = client.chat.completions.create(
        model="embedded",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        **SAMPLING,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference_text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    figures = finals[0].to_dict()["linkstack"]
    assert figures["seed"] == 42 and figures["uplink_bits"] > 0
    assert figures["time_to_first_token_s"]["onboard"] > 0

    whole = client.chat.completions.create(
        model="embedded", messages=[{"role": "user", "content": "hi"}], **SAMPLING
    )
    assert whole.choices[0].message.content == reference_text
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 12


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_streams_the_same_text(setup: Setup, reference_text: str) -> None:
    body = {"model": "embedded", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            f"{setup.url}/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {setup.tokens['alice']}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({**body, **SAMPLING}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == reference_text


def test_four_clients_stream_at_once_each_their_own_answer(
    setup: Setup, embedded_model: Any
) -> None:
    from openai import AsyncOpenAI

    from linkstack.inference.protocol import GenerationParams
    from onboard.generation import generate

    tokenizer = embedded_model.tokenizer
    jobs = [(f"prompt number {n}", 100 + n) for n in range(4)]
    references = []
    for prompt, seed in jobs:
        params = GenerationParams.from_floats(
            max_new_tokens=24,
            temperature=0.9,
            top_p=0.9,
            seed=seed,
            stop_ids=embedded_model.stop_ids,
        )
        result = generate(embedded_model, tokenizer.encode_prompt(prompt), params)
        references.append(tokenizer.decode(result.generated_ids, skip_special=True))
    assert len(set(references)) == 4

    async def one(client: AsyncOpenAI, prompt: str, seed: int) -> str:
        stream = await client.chat.completions.create(
            model="embedded",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            seed=seed,
            temperature=0.9,
            top_p=0.9,
            max_tokens=24,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def all_at_once() -> list[str]:
        client = AsyncOpenAI(
            base_url=f"{setup.url}/v1", api_key=setup.tokens["alice"], max_retries=0
        )
        async with client:
            return list(await asyncio.gather(*(one(client, p, s) for p, s in jobs)))

    assert asyncio.run(all_at_once()) == references
    state = setup.state()
    assert state["station"]["in_flight"] == []
    ids = [r["request_id"] for r in state["requests"][:4]]
    assert len(set(ids)) == 4


def test_a_client_that_disconnects_gets_its_request_cancelled_on_board(setup: Setup) -> None:
    body = {
        "model": "embedded",
        "messages": [{"role": "user", "content": "talk for long"}],
        "stream": True,
        "max_tokens": 16000,
        "temperature": 0,
        "seed": 1,
    }
    before = setup.state()["gateway"]["disconnect_cancels"]
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{setup.url}/v1/chat/completions", json=body, headers=setup.auth()
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                break  # one piece of text, then the client goes away
    state = setup.wait_state(
        lambda s: (
            s["gateway"]["disconnect_cancels"] == before + 1
            and any(r["finish_on_board"] == "cancelled" for r in s["requests"])
        )
    )
    gone = next(r for r in state["requests"] if r["finish_on_board"] == "cancelled")
    assert gone["status"] == "client gone; Cancel sent"
    assert 0 < gone["tokens"] < 16000
    assert gone["request_id"] not in state["station"]["in_flight"]
    assert state["station"]["cancels_sent"] >= 1
    # The slot is free: the spacecraft reports an empty queue and serves the next one.
    setup.wait_state(lambda s: s["spacecraft"] is not None and s["spacecraft"]["queue_depth"] == 0)
    response = httpx.post(
        f"{setup.url}/v1/chat/completions",
        json={"model": "embedded", "messages": [{"role": "user", "content": "hi"}], **SAMPLING},
        headers=setup.auth(),
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_keys_budget_and_rate_through_the_real_server(setup: Setup) -> None:
    url = f"{setup.url}/v1/chat/completions"
    body = {"model": "embedded", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    response = httpx.post(url, json=body, timeout=30)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_api_key")
    big = {**body, "messages": [{"role": "user", "content": "word " * 17_000}]}
    response = httpx.post(url, json=big, headers=setup.auth(), timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "prompt_too_long")
    response = httpx.post(url, content=b"{", headers=setup.auth(), timeout=30)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
    assert httpx.get(f"{setup.url}/v1/models", headers=setup.auth("slow")).status_code == 200
    response = httpx.get(f"{setup.url}/v1/models", headers=setup.auth("slow"))
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 59


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_the_operator_page_shows_the_link_and_text_streaming_live(setup: Setup) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    body = {
        "model": "embedded",
        "messages": [{"role": "user", "content": "operator page"}],
        "stream": True,
        "max_tokens": 400,
        "temperature": 0,
        "seed": 5,
    }
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(setup.url + "/")
            page.wait_for_selector("#login", state="visible", timeout=30_000)
            page.fill("#key", setup.tokens["ops"])
            page.click("button[type=submit]")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('live')",
                timeout=30_000,
            )
            with (
                httpx.Client(timeout=120) as client,
                client.stream(
                    "POST", f"{setup.url}/v1/chat/completions", json=body, headers=setup.auth()
                ) as response,
            ):
                lines = response.iter_lines()
                for line in lines:
                    if '"content"' in line and '"content": ""' not in line:
                        break
                # The row of the request in flight shows its text while it streams.
                page.wait_for_function(
                    "[...document.querySelectorAll('#requests tr.in-flight td.text')]"
                    ".some(td => td.textContent.length > 0)",
                    timeout=60_000,
                )
                link = page.inner_text("#link")
                assert "frame lock" in link and "lock" in link
                assert "S1" in page.inner_text("#cop")
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "operator_page.png"), full_page=True)
                for _ in lines:
                    pass
            page.wait_for_function(
                "document.querySelectorAll('#requests tr.in-flight').length === 0",
                timeout=60_000,
            )
        finally:
            browser.close()
    assert (ARTIFACTS / "operator_page.png").stat().st_size > 10_000
