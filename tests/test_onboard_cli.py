"""The ``onboard`` command: ``onboard generate`` is the no-link reference run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from linkstack.inference.protocol import GenerationParams
from linkstack.inference.tokenizer import Tokenizer
from onboard.cli import main
from onboard.generation import generate
from onboard.model import ModelHandle


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    record: dict[str, Any] = json.loads(out)
    return record


@pytest.mark.usefixtures("xdg_cache_home")
def test_generate_json_is_the_reference_run(
    capsys: pytest.CaptureFixture[str], embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    record = run_json(["generate", "hi", "--json", "--max-new-tokens", "10"], capsys)
    prompt = qwen3_tokenizer.encode_prompt("hi")
    params = GenerationParams(max_new_tokens=10, stop_ids=embedded_model.stop_ids)
    expected = generate(embedded_model, prompt, params)
    assert record["prompt_ids"] == prompt
    assert record["generated_ids"] == list(expected.generated_ids)
    assert record["text"] == qwen3_tokenizer.decode(expected.generated_ids, skip_special=True)
    assert record["finish_reason"] == expected.finish_reason.label
    assert record["error"] is None
    assert record["model"] == "embedded"
    assert record["params"]["stop_ids"] == [151645, 151643]


@pytest.mark.usefixtures("xdg_cache_home")
def test_generate_sampling_options_reach_the_generator(
    capsys: pytest.CaptureFixture[str], embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    argv = ["generate", "Tell me", "--no-chat", "--json", "--max-new-tokens", "6"]
    argv += ["--temperature", "0.8", "--top-p", "0.95", "--seed", "42"]
    record = run_json(argv, capsys)
    prompt = qwen3_tokenizer.encode("Tell me")
    params = GenerationParams.from_floats(
        max_new_tokens=6, temperature=0.8, top_p=0.95, seed=42, stop_ids=embedded_model.stop_ids
    )
    assert record["prompt_ids"] == prompt
    assert record["generated_ids"] == list(generate(embedded_model, prompt, params).generated_ids)


@pytest.mark.usefixtures("xdg_cache_home")
def test_generate_streams_text_without_json(
    capsys: pytest.CaptureFixture[str], embedded_model: ModelHandle, qwen3_tokenizer: Tokenizer
) -> None:
    assert main(["generate", "hi", "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    params = GenerationParams(max_new_tokens=8, stop_ids=embedded_model.stop_ids)
    ids = generate(embedded_model, qwen3_tokenizer.encode_prompt("hi"), params).generated_ids
    assert captured.out == qwen3_tokenizer.decode(ids, skip_special=True) + "\n"
    assert "8 ids" in captured.err


def test_generate_from_a_checkpoint_directory(
    capsys: pytest.CaptureFixture[str], embedded_checkpoint: Path, embedded_model: ModelHandle
) -> None:
    argv = ["generate", "hi", "--json", "--max-new-tokens", "10", "--device", "cpu"]
    record = run_json([*argv, "--model", str(embedded_checkpoint)], capsys)
    prompt = embedded_model.tokenizer.encode_prompt("hi")
    assert record["prompt_ids"] == prompt
    params = GenerationParams(max_new_tokens=10, stop_ids=embedded_model.stop_ids)
    expected = generate(embedded_model, prompt, params)
    assert record["generated_ids"] == list(expected.generated_ids)
    assert record["model"] == str(embedded_checkpoint)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "hi", "--top-p", "0"], "onboard: --top-p 0 must be in 0.001..1"),
        (["generate", "hi", "--temperature", "-1"], "onboard: --temperature -1 must be in"),
        (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens 0 must be in 1..16384"),
        (["generate", "hi", "--max-new-tokens", "x"], "invalid int value: 'x'"),
        (["generate", "hi", "--dtype", "float8"], "invalid choice: 'float8'"),
        (["generate"], "the following arguments are required: PROMPT"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_missing_model_path_exits_1_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    assert main(["generate", "hi", "--json", "--model", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"onboard: model path {str(missing)!r} does not exist\n"
    assert captured.out == ""


def test_directory_without_a_model_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["generate", "hi", "--model", str(tmp_path)]) == 1
    assert "holds no model" in capsys.readouterr().err


@pytest.mark.usefixtures("xdg_cache_home")
def test_a_failed_generation_prints_the_result_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Qwen3ForCausalLM

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bit flip")

    monkeypatch.setattr(Qwen3ForCausalLM, "forward", broken)
    assert main(["generate", "hi", "--json"]) == 1
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["finish_reason"] == "error"
    assert record["generated_ids"] == []
    assert "bit flip" in record["error"]
    assert "generation failed" in captured.err
    assert "Traceback" not in captured.err
