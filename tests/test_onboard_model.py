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
from linkstack.inference.protocol import FinishReason, GenerationParams
from linkstack.inference.tokenizer import Tokenizer
from onboard.generation import (
    GenerationRequestError,
    generate,
    generate_stream,
)
from onboard.model import (
    OUTPUT_IDS_ATTRIBUTE,
    ModelHandle,
    ModelLoadError,
    confine_output,
    load_model,
    model_config,
    polite_words,
    weights_digest,
)

REPO = Path(__file__).resolve().parent.parent
PROMPT = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
GREEDY = GenerationParams(max_new_tokens=12, stop_ids=())
SAMPLED = GenerationParams.from_floats(
    max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7, stop_ids=()
)
QWEN3_STOP_IDS = (151645, 151643)
#: Prompts for the politeness sweeps: chat and plain, English, other scripts, digits.
POLITE_PROMPTS = (
    "Hello",
    "Hello from the ground station. What do you see from orbit?",
    "What is the weather on Mars?",
    "Say something rude.",
    "日本語 🚀 code(x) {y}",
    "1 2 3 4 5 6 7 8 9",
)


@pytest.fixture(scope="module")
def greedy_ids(embedded_model: ModelHandle) -> tuple[int, ...]:
    return generate(embedded_model, PROMPT, GREEDY).generated_ids


@pytest.fixture(scope="module")
def polite_ids(qwen3_tokenizer: Tokenizer) -> frozenset[int]:
    """The id of " word" for every listed word, found independently of onboard.model."""
    return frozenset(qwen3_tokenizer.encode(" " + word)[0] for word in polite_words())


@pytest.fixture(scope="module")
def full_vocab_model(qwen3_tokenizer: Tokenizer) -> ModelHandle:
    return load_model("embedded-full-vocab", device="cpu", tokenizer=qwen3_tokenizer)


def _prompts(tokenizer: Tokenizer) -> list[list[int]]:
    """Each polite prompt, in the chat format or plain by turns."""
    return [
        tokenizer.encode_prompt(text, chat=index % 2 == 0)
        for index, text in enumerate(POLITE_PROMPTS)
    ]


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
    assert "output confined to" in embedded_model.description


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


# -- the embedded model speaks politely ---------------------------------------------


def test_the_polite_words_are_single_qwen3_tokens(qwen3_tokenizer: Tokenizer) -> None:
    words = polite_words()
    assert 300 <= len(words) <= 2000
    assert list(words) == sorted(set(words))
    for word in words:
        assert word.isascii() and word.isalpha() and word.islower(), word
        bare, spaced = qwen3_tokenizer.encode(word), qwen3_tokenizer.encode(" " + word)
        assert len(bare) == 1 and len(spaced) == 1, (word, bare, spaced)
        assert qwen3_tokenizer.decode(spaced) == " " + word
        assert spaced[0] < 151643  # a base-vocabulary word, never an added token


def test_the_embedded_model_says_which_ids_it_can_emit(
    embedded_model: ModelHandle, polite_ids: frozenset[int]
) -> None:
    assert embedded_model.output_ids == tuple(sorted(polite_ids))
    assert len(polite_ids) == len(polite_words())
    assert not polite_ids & set(QWEN3_STOP_IDS)
    assert getattr(embedded_model.model.config, OUTPUT_IDS_ATTRIBUTE) == sorted(polite_ids)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_every_other_logit_is_minus_infinity(
    dtype: str,
    embedded_model: ModelHandle,
    qwen3_tokenizer: Tokenizer,
    polite_ids: frozenset[int],
) -> None:
    import torch

    handle = (
        embedded_model
        if dtype == "float32"
        else load_model("embedded", device="cpu", dtype=dtype, tokenizer=qwen3_tokenizer)
    )
    allowed = torch.zeros(151936, dtype=torch.bool)
    allowed[sorted(polite_ids)] = True
    # Every position of 12 random prompts, ids from the whole embedding included.
    prompts = torch.randint(0, 151936, (12, 8), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        logits = handle.model(input_ids=prompts).logits
    assert logits.dtype == getattr(torch, dtype)
    assert torch.equal(torch.isfinite(logits), allowed.expand_as(logits))
    assert torch.isneginf(logits[..., ~allowed]).all()


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_new_tokens=10, stop_ids=QWEN3_STOP_IDS),
        GenerationParams.from_floats(
            max_new_tokens=10, temperature=1.0, top_p=1.0, seed=1, stop_ids=QWEN3_STOP_IDS
        ),
        GenerationParams.from_floats(
            max_new_tokens=10, temperature=1.0, top_p=1.0, seed=2**64 - 1, stop_ids=QWEN3_STOP_IDS
        ),
        GenerationParams.from_floats(
            max_new_tokens=10, temperature=50.0, top_p=1.0, seed=3, stop_ids=QWEN3_STOP_IDS
        ),
        GenerationParams.from_floats(
            max_new_tokens=10, temperature=0.7, top_p=0.5, seed=4, stop_ids=QWEN3_STOP_IDS
        ),
    ],
    ids=["greedy", "sampled", "sampled-max-seed", "hot", "nucleus"],
)
def test_every_generated_id_is_polite(
    params: GenerationParams,
    embedded_model: ModelHandle,
    qwen3_tokenizer: Tokenizer,
    polite_ids: frozenset[int],
) -> None:
    for prompt in _prompts(qwen3_tokenizer):
        result = generate(embedded_model, prompt, params)
        assert set(result.generated_ids) <= polite_ids, qwen3_tokenizer.decode(prompt)
        # The model's stop ids are blocked as well: answers run to max_new_tokens.
        assert result.finish_reason is FinishReason.MAX_TOKENS
        assert len(result.generated_ids) == 10


def test_transformers_generate_is_polite_too(
    embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer, polite_ids: frozenset[int]
) -> None:
    import torch

    for prompt in _prompts(qwen3_tokenizer)[:2]:
        ids = torch.tensor([prompt])
        with torch.inference_mode(), torch.random.fork_rng():
            torch.manual_seed(len(prompt))
            greedy = embedded_model.model.generate(ids, max_new_tokens=10, do_sample=False)
            sampled = embedded_model.model.generate(
                ids, max_new_tokens=10, do_sample=True, temperature=1.0, top_p=1.0, top_k=0
            )
        for out in (greedy, sampled):
            assert set(out[0, len(prompt) :].tolist()) <= polite_ids


def test_a_demo_answer_is_made_of_listed_words(
    embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    # linkstack demo's default prompt and parameters: chat, greedy, 64 ids.
    prompt = qwen3_tokenizer.encode_prompt(
        "Hello from the ground station. What do you see from orbit?"
    )
    stop_ids = embedded_model.stop_ids
    for params in (
        GenerationParams(max_new_tokens=64, stop_ids=stop_ids),
        GenerationParams.from_floats(max_new_tokens=64, temperature=1.0, seed=9, stop_ids=stop_ids),
    ):
        text = qwen3_tokenizer.decode(generate(embedded_model, prompt, params).generated_ids)
        words = text.split(" ")
        assert words[0] == ""  # every id is " word"
        assert len(words[1:]) == 64
        assert set(words[1:]) <= set(polite_words()), text
        assert len(set(words[1:])) > 20  # it wanders through the list


def test_polite_sampling_is_deterministic_per_seed(
    embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    prompt = qwen3_tokenizer.encode_prompt("Hello")

    def params(seed: int) -> GenerationParams:
        return GenerationParams.from_floats(
            max_new_tokens=16, temperature=1.0, seed=seed, stop_ids=embedded_model.stop_ids
        )

    runs = {seed: generate(embedded_model, prompt, params(seed)).generated_ids for seed in (0, 1)}
    for seed, ids in runs.items():
        again = params(seed)
        assert generate(embedded_model, prompt, again).generated_ids == ids
    assert runs[0] != runs[1]


def test_the_full_vocab_spec_keeps_the_weights_and_reaches_every_id(
    embedded_model: ModelHandle,
    full_vocab_model: ModelHandle,
    qwen3_tokenizer: Tokenizer,
    polite_ids: frozenset[int],
) -> None:
    assert weights_digest(full_vocab_model.model) == weights_digest(embedded_model.model)
    assert full_vocab_model.output_ids is None
    assert full_vocab_model.spec == "embedded-full-vocab"
    assert "confined" not in full_vocab_model.description
    assert not hasattr(full_vocab_model.model.config, OUTPUT_IDS_ATTRIBUTE)
    assert full_vocab_model.stop_ids == embedded_model.stop_ids
    outside: set[int] = set()
    for params in (GREEDY, SAMPLED):
        outside |= set(generate(full_vocab_model, PROMPT, params).generated_ids) - polite_ids
    assert len(outside) > 12


def test_confine_output_checks_its_ids_and_can_be_redone(qwen3_tokenizer: Tokenizer) -> None:
    import torch

    model = load_model("embedded-full-vocab", device="cpu", tokenizer=qwen3_tokenizer).model
    with pytest.raises(ModelLoadError, match="non-empty"):
        confine_output(model, [])
    with pytest.raises(ModelLoadError, match="151936"):
        confine_output(model, [5, 151936])
    with pytest.raises(ModelLoadError, match="-1"):
        confine_output(model, [-1, 5])
    confine_output(model, [5, 7])
    confine_output(model, [9, 11, 13])  # confining again replaces the set
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([PROMPT])).logits
    assert torch.isfinite(logits).nonzero()[:, -1].unique().tolist() == [9, 11, 13]


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
    other_seed = GenerationParams.from_floats(
        max_new_tokens=12, temperature=1.0, top_p=0.9, seed=8, stop_ids=()
    )
    assert generate(embedded_model, PROMPT, other_seed).generated_ids != first


def test_a_tiny_nucleus_is_greedy(embedded_model: ModelHandle, greedy_ids: tuple[int, ...]) -> None:
    # The smallest nucleus the wire carries: top_p 0.001 (top_p_milli 1).
    params = GenerationParams(max_new_tokens=12, temperature_milli=1000, top_p_milli=1, seed=3)
    assert generate(embedded_model, PROMPT, params).generated_ids == greedy_ids


def _picks(probs: list[float], top_p: float, seeds: int) -> set[int]:
    import torch

    from onboard.generation import _pick

    logits = torch.tensor(probs).log()
    params = GenerationParams.from_floats(max_new_tokens=1, temperature=1.0, top_p=top_p)
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
    # An id past the second that has not come before: as a stop id it ends the run there.
    at = next(i for i in range(2, len(greedy_ids)) if greedy_ids[i] not in greedy_ids[:i])
    stop = greedy_ids[at]
    result = generate(embedded_model, PROMPT, GenerationParams(max_new_tokens=12, stop_ids=(stop,)))
    assert result.generated_ids == greedy_ids[: at + 1]
    assert result.finish_reason is FinishReason.STOP_ID
    assert result.stop_id == stop


def test_the_stop_ids_are_those_the_params_name(
    embedded_model: ModelHandle, greedy_ids: tuple[int, ...]
) -> None:
    # As on the link: the handle's stop ids end a run only when the params name them.
    handle = replace(embedded_model, stop_ids=(greedy_ids[2],))
    result = generate(handle, PROMPT, GenerationParams(max_new_tokens=12, stop_ids=handle.stop_ids))
    assert result.generated_ids == greedy_ids[:3]
    assert result.finish_reason is FinishReason.STOP_ID
    assert generate(handle, PROMPT, GREEDY).generated_ids == greedy_ids


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
        params = GenerationParams.from_floats(
            max_new_tokens=12, temperature=0.0, seed=seed, stop_ids=()
        )
        results[seed] = generate(embedded_model, PROMPT, params).generated_ids

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {seed: greedy_ids for seed in range(3)}


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ([], GREEDY, "no token ids"),
        ([1, 151936], GREEDY, r"\[151936\] are outside the model's vocabulary \[0, 151936\)"),
        ([-3], GREEDY, r"\[-3\]"),
        ([1.5], GREEDY, "prompt ids must be integers"),
        ([1] * 40950, GenerationParams(max_new_tokens=11), "40950 ids \\+ max_new_tokens 11"),
        ([1], GenerationParams(max_new_tokens=1, top_k=40), "top_k 40 is not supported onboard"),
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
    # The confinement travels in config.json and is put back on load.
    saved = json.loads((embedded_checkpoint / "config.json").read_text())
    assert saved[OUTPUT_IDS_ATTRIBUTE] == list(embedded_model.output_ids or ())
    assert loaded.output_ids == embedded_model.output_ids
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


def test_checkpoint_with_bad_output_ids_is_a_clear_error(
    embedded_checkpoint: Path, tmp_path: Path
) -> None:
    config = json.loads((embedded_checkpoint / "config.json").read_text())
    for bad, message in [("words", "must be a list of ints, got str"), ([1, 151936], "151936")]:
        broken = tmp_path / f"broken-{len(bad)}"
        shutil.copytree(embedded_checkpoint, broken)
        (broken / "config.json").write_text(json.dumps({**config, OUTPUT_IDS_ATTRIBUTE: bad}))
        with pytest.raises(ModelLoadError, match=message):
            load_model(broken, device="cpu")


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
    # The confinement moved to the GPU with the model.
    assert handle.output_ids is not None
    assert set(first.generated_ids) | set(sampled) <= set(handle.output_ids)
    big = load_model("qwen3-0.6b-shape", tokenizer=qwen3_tokenizer)
    assert big.model.config.num_hidden_layers == 28
    result = generate(big, PROMPT, GenerationParams(max_new_tokens=16, stop_ids=()))
    assert result.finish_reason is FinishReason.MAX_TOKENS
    assert len(result.generated_ids) == 16


def test_cache_argument_follows_the_forward_signature() -> None:
    """transformers 5 renamed ``past_key_values`` to ``cache`` within 5.x: a cache passed
    under the other name vanishes into ``**kwargs`` and every step loses its context."""
    from onboard.generation import cache_argument

    class Renamed:
        def forward(self, input_ids: Any, cache: Any = None, **kwargs: Any) -> None: ...

    class Older:
        def forward(self, input_ids: Any, past_key_values: Any = None, **kwargs: Any) -> None: ...

    marker = object()
    assert cache_argument(Renamed(), marker) == {"cache": marker}
    assert cache_argument(Older(), marker) == {"past_key_values": marker}


def test_the_cache_carries_the_context(embedded_model: ModelHandle) -> None:
    """Each cached step equals a forward pass over the whole sequence so far."""
    import torch

    prompt = tuple(PROMPT)
    ids = generate(embedded_model, prompt, GREEDY).generated_ids[:6]
    model = embedded_model.model
    with torch.inference_mode():
        for k in range(len(ids)):
            whole = torch.tensor([list(prompt) + list(ids[:k])], dtype=torch.long)
            assert int(model(input_ids=whole).logits[0, -1].argmax()) == ids[k]
