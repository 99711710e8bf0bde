"""The onboard model (onboard.model) and its token generator (onboard.generation)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from linkstack.errors import InvalidState
from linkstack.tokenizer import Tokenizer
from onboard.generation import (
    FinishReason,
    GenerationParams,
    GenerationRequestError,
    generate,
    generate_stream,
)
from onboard.model import ModelHandle, ModelLoadError, load_model, model_config, weights_digest

REPO = Path(__file__).resolve().parent.parent
PROMPT = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
GREEDY = GenerationParams(max_new_tokens=12, stop_ids=())
SAMPLED = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7, stop_ids=())


@pytest.fixture(scope="module")
def greedy_ids(embedded_model: ModelHandle) -> tuple[int, ...]:
    return generate(embedded_model, PROMPT, GREEDY).generated_ids


# -- the embedded model -----------------------------------------------------------


def test_embedded_model_shape(embedded_model: ModelHandle) -> None:
    config = embedded_model.model.config
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert config.vocab_size == embedded_model.vocab_size == 151936
    assert config.tie_word_embeddings
    model = embedded_model.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert embedded_model.stop_ids == (151645, 151643)
    assert str(embedded_model.device) == "cpu"
    assert "embedded" in embedded_model.description


def test_embedded_weights_are_identical_across_builds(
    embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    again = load_model("embedded", device="cpu", tokenizer=qwen3_tokenizer)
    assert weights_digest(again.model) == weights_digest(embedded_model.model)


def test_building_leaves_the_global_rng_alone(qwen3_tokenizer: Tokenizer) -> None:
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_model(None, device="cpu", tokenizer=qwen3_tokenizer)
    assert torch.equal(torch.rand(3), expected)


def test_embedded_model_and_generation_are_identical_in_another_process(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...], xdg_cache_root: Path
) -> None:
    code = f"""
import json
from onboard.generation import GenerationParams, generate
from onboard.model import load_model, weights_digest
handle = load_model("embedded", device="cpu")
prompt = {PROMPT}
print(json.dumps({{
    "digest": weights_digest(handle.model),
    "greedy": generate(handle, prompt, {GREEDY!r}).generated_ids,
    "sampled": generate(handle, prompt, {SAMPLED!r}).generated_ids,
}}))
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_root), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout)
    assert other["digest"] == weights_digest(embedded_model.model)
    assert tuple(other["greedy"]) == greedy_ids
    assert tuple(other["sampled"]) == generate(embedded_model, PROMPT, SAMPLED).generated_ids


def test_qwen3_0_6b_shape_matches_the_published_config() -> None:
    # Provenance: config.json of Qwen/Qwen3-0.6B on the Hugging Face hub.
    config = model_config("qwen3-0.6b-shape")
    assert config.num_hidden_layers == 28
    assert config.hidden_size == 1024
    assert config.intermediate_size == 3072
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (16, 8, 128)
    assert config.vocab_size == 151936
    assert config.tie_word_embeddings
    assert config.max_position_embeddings == 40960
    assert config.rope_parameters["rope_theta"] == 1_000_000.0
    assert config.rms_norm_eps == 1e-6


def test_unknown_builtin_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="qwen9"):
        model_config("qwen9")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dtype": "float8"}, "float8"), ({"device": "banana"}, "banana")],
)
def test_bad_device_or_dtype_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model("embedded", **kwargs)


# -- generation -----------------------------------------------------------------


def test_manual_loop_matches_transformers_generate(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    import torch

    with torch.inference_mode():
        out = embedded_model.model.generate(
            torch.tensor([PROMPT]), max_new_tokens=12, do_sample=False, eos_token_id=None
        )
    assert tuple(out[0, len(PROMPT) :].tolist()) == greedy_ids


def test_greedy_generation_is_deterministic(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    result = generate(embedded_model, PROMPT, GREEDY)
    assert result.generated_ids == greedy_ids
    assert len(set(greedy_ids)) > 3  # the embedded model does not just repeat itself
    assert result.finish_reason is FinishReason.MAX_TOKENS
    assert result.prompt_ids == tuple(PROMPT)
    assert result.timing.tokens == 12


def test_sampling_is_deterministic_per_seed(embedded_model: ModelHandle) -> None:
    first = generate(embedded_model, PROMPT, SAMPLED).generated_ids
    assert generate(embedded_model, PROMPT, SAMPLED).generated_ids == first
    other_seed = GenerationParams(
        max_new_tokens=12, temperature=1.0, top_p=0.9, seed=8, stop_ids=()
    )
    assert generate(embedded_model, PROMPT, other_seed).generated_ids != first


def test_a_tiny_nucleus_is_greedy(embedded_model: ModelHandle, greedy_ids: tuple[int, ...]) -> None:
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=1e-9, seed=3, stop_ids=())
    assert generate(embedded_model, PROMPT, params).generated_ids == greedy_ids


def _picks(probs: list[float], top_p: float, seeds: int) -> set[int]:
    import torch

    from onboard.generation import _pick

    logits = torch.tensor(probs).log()
    params = GenerationParams(temperature=1.0, top_p=top_p)
    return {_pick(logits, params, torch.Generator().manual_seed(seed)) for seed in range(seeds)}


def test_top_p_samples_only_from_the_nucleus() -> None:
    assert _picks([0.15, 0.5, 0.05, 0.3], top_p=0.7, seeds=200) == {1, 3}
    assert _picks([0.15, 0.5, 0.05, 0.3], top_p=0.75, seeds=200) == {1, 3}
    assert _picks([0.15, 0.5, 0.05, 0.3], top_p=0.81, seeds=400) == {0, 1, 3}
    assert _picks([0.15, 0.5, 0.05, 0.3], top_p=1.0, seeds=400) == {0, 1, 2, 3}


def test_a_nucleus_wider_than_the_first_look_is_found() -> None:
    # 3000 ids: the first 1000 hold 3/4 of the mass, so top_p 0.5 needs ~667 ids,
    # more than the 256 looked at first.
    probs = [3 / 4000] * 1000 + [1 / 8000] * 2000
    picked = _picks(probs, top_p=0.5, seeds=300)
    assert max(picked) < 1000
    assert len(picked) > 150


def test_sampling_does_not_touch_the_global_rng(embedded_model: ModelHandle) -> None:
    import torch

    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    generate(embedded_model, PROMPT, SAMPLED)
    assert torch.equal(torch.rand(2), expected)


def test_max_new_tokens_is_respected(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    result = generate(embedded_model, PROMPT, GenerationParams(max_new_tokens=3, stop_ids=()))
    assert result.generated_ids == greedy_ids[:3]
    assert result.finish_reason is FinishReason.MAX_TOKENS
    assert result.stop_id is None


def test_a_stop_id_ends_the_run_and_is_kept(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    stop = greedy_ids[4]
    assert stop not in greedy_ids[:4]
    result = generate(embedded_model, PROMPT, GenerationParams(max_new_tokens=12, stop_ids=(stop,)))
    assert result.generated_ids == greedy_ids[:5]
    assert result.finish_reason is FinishReason.STOP
    assert result.stop_id == stop


def test_default_stop_ids_come_from_the_handle(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    handle = replace(embedded_model, stop_ids=(greedy_ids[2],))
    result = generate(handle, PROMPT, GenerationParams(max_new_tokens=12))
    assert result.generated_ids == greedy_ids[:3]
    assert result.finish_reason is FinishReason.STOP


def test_on_token_sees_every_id_in_order(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    seen: list[int] = []
    result = generate(embedded_model, PROMPT, GREEDY, on_token=seen.append)
    assert tuple(seen) == result.generated_ids == greedy_ids


def test_cancel_stops_early(embedded_model: ModelHandle, greedy_ids: tuple[int, ...]) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_token(token_id: int) -> None:
        seen.append(token_id)
        if len(seen) == 3:
            cancel.set()

    result = generate(embedded_model, PROMPT, GREEDY, on_token=on_token, cancel=cancel)
    assert result.finish_reason is FinishReason.CANCELLED
    assert result.generated_ids == greedy_ids[:3]


def test_cancel_before_the_start_generates_nothing(embedded_model: ModelHandle) -> None:
    cancel = threading.Event()
    cancel.set()
    result = generate(embedded_model, PROMPT, GREEDY, cancel=cancel)
    assert result.finish_reason is FinishReason.CANCELLED
    assert result.generated_ids == ()


def test_stream_yields_the_same_ids(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    stream = generate_stream(embedded_model, PROMPT, GREEDY)
    with pytest.raises(InvalidState):
        _ = stream.result
    assert tuple(stream) == greedy_ids
    assert stream.result.generated_ids == greedy_ids
    assert stream.result.finish_reason is FinishReason.MAX_TOKENS
    assert list(stream) == []


def test_a_model_failure_becomes_an_error_result(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = embedded_model.model
    real_forward = model.forward
    calls = 0

    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("device lost")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", failing_forward)
    result = generate(embedded_model, PROMPT, GREEDY)
    assert result.finish_reason is FinishReason.ERROR
    assert result.error is not None
    assert result.error.kind == "runtime-error"
    assert "device lost" in result.error.message
    assert result.generated_ids == greedy_ids[:2]


def test_out_of_memory_is_reported_as_such(
    embedded_model: ModelHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(embedded_model.model, "forward", oom)
    stream = generate_stream(embedded_model, PROMPT, GREEDY)
    assert list(stream) == []
    assert stream.result.finish_reason is FinishReason.ERROR
    assert stream.result.error is not None
    assert stream.result.error.kind == "out-of-memory"


def test_threads_can_share_the_model(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    results: dict[int, tuple[int, ...]] = {}

    def work(seed: int) -> None:
        params = GenerationParams(max_new_tokens=12, temperature=0.0, seed=seed, stop_ids=())
        results[seed] = generate(embedded_model, PROMPT, params).generated_ids

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {seed: greedy_ids for seed in range(3)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an int"),
        ({"temperature": -0.1}, "temperature must be a finite number >= 0, got -0.1"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, "got 1.5"),
        ({"seed": -1}, "seed must be in"),
        ({"seed": 2**64}, "seed must be in"),
        ({"stop_ids": (1, -2)}, r"stop_ids must be ints >= 0, got \[-2\]"),
    ],
)
def test_bad_params_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GenerationRequestError, match=message):
        GenerationParams(**kwargs)


def test_stop_ids_are_frozen_as_a_tuple() -> None:
    assert GenerationParams(stop_ids=[5, 6]).stop_ids == (5, 6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ([], GREEDY, "no token ids"),
        ([1, 151936], GREEDY, r"\[151936\] are outside the model's vocabulary \[0, 151936\)"),
        ([-3], GREEDY, r"\[-3\]"),
        ([1.5], GREEDY, "prompt ids must be integers"),
        ([1] * 40950, GenerationParams(max_new_tokens=11), "40950 ids \\+ max_new_tokens 11"),
    ],
)
def test_impossible_requests_are_refused_up_front(
    embedded_model: ModelHandle, prompt: list[int], params: GenerationParams, message: str
) -> None:
    with pytest.raises(GenerationRequestError, match=message):
        generate(embedded_model, prompt, params)
    with pytest.raises(GenerationRequestError, match=message):
        generate_stream(embedded_model, prompt, params)


# -- loading a checkpoint directory ---------------------------------------------


def test_checkpoint_round_trip(
    embedded_checkpoint: Path, embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    config = json.loads((embedded_checkpoint / "tokenizer_config.json").read_text())
    assert "<|im_start|>assistant" in config["chat_template"]
    loaded = load_model(embedded_checkpoint, device="cpu")
    assert loaded.spec == str(embedded_checkpoint)
    assert weights_digest(loaded.model) == weights_digest(embedded_model.model)
    assert loaded.stop_ids == embedded_model.stop_ids
    # The checkpoint's own tokenizer, with the chat template rendered by jinja2.
    assert loaded.tokenizer.chat_template is not None
    assert loaded.tokenizer.encode_prompt("hi") == PROMPT
    assert generate(loaded, PROMPT, GREEDY).generated_ids == greedy_ids
    assert generate(loaded, PROMPT, SAMPLED).generated_ids == (
        generate(embedded_model, PROMPT, SAMPLED).generated_ids
    )


def test_transformers_reads_the_saved_tokenizer_alike(
    embedded_checkpoint: Path, qwen3_tokenizer: Tokenizer
) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(embedded_checkpoint, local_files_only=True)
    for text in ["Hello, world!", "日本語 🚀 code(x) {y}", "hi"]:
        assert theirs(text)["input_ids"] == qwen3_tokenizer.encode(text)
    rendered = theirs.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert rendered == qwen3_tokenizer.render_prompt("hi")
    assert theirs.eos_token_id == 151645


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing", device="cpu")


def test_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds no model"):
        load_model(tmp_path, device="cpu")


def test_checkpoint_without_tokenizer_is_a_clear_error(
    embedded_checkpoint: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(embedded_checkpoint / name, bare / name)
    with pytest.raises(ModelLoadError, match=r"no tokenizer\.json"):
        load_model(bare, device="cpu")


# -- GPU ------------------------------------------------------------------------


@pytest.mark.gpu
def test_bf16_generation_on_cuda(embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    handle = load_model("embedded", tokenizer=qwen3_tokenizer)
    assert handle.device.type == "cuda"
    assert handle.dtype is torch.bfloat16
    # The same weights as the CPU reference, cast to bfloat16.
    assert weights_digest(handle.model) == weights_digest(
        load_model("embedded", device="cpu", dtype="bfloat16", tokenizer=qwen3_tokenizer).model
    )
    first = generate(handle, PROMPT, GREEDY)
    assert first.finish_reason is FinishReason.MAX_TOKENS
    assert generate(handle, PROMPT, GREEDY).generated_ids == first.generated_ids
    sampled = generate(handle, PROMPT, SAMPLED).generated_ids
    assert generate(handle, PROMPT, SAMPLED).generated_ids == sampled
    big = load_model("qwen3-0.6b-shape", tokenizer=qwen3_tokenizer)
    assert big.model.config.num_hidden_layers == 28
    result = generate(big, PROMPT, GenerationParams(max_new_tokens=16, stop_ids=()))
    assert result.finish_reason is FinishReason.MAX_TOKENS
    assert len(result.generated_ids) == 16
