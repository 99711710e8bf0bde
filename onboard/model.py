"""The Qwen-3 model that runs onboard, loaded without a model hub.

Four kinds of spec:

* ``None`` or ``"embedded"``: a tiny Qwen-3 (hidden 64, 2 layers, 4 heads, 2 KV
  heads, head_dim 16, the full 151,936-token vocabulary, tied embeddings) with
  seeded random weights, built on the CPU in float32 so that every process on
  every machine gets the same weights (then cast and moved).  Its output is
  confined to the words of ``polite_vocab.txt`` (see :func:`confine_output`): every
  other logit is -inf, so whatever picks ids from its logits (greedy, sampling,
  ``model.generate``) gets one of those words, never a stop id;
* ``"embedded-full-vocab"``: the same model, weights included, without the
  confinement: random ids from the whole vocabulary (for link tests that want
  every id);
* ``"qwen3-0.6b-shape"``: the Qwen3-0.6B configuration with seeded random weights,
  for speed measurement (built directly on the target device, so its weights
  differ between CPU and GPU), confined to the same words as ``"embedded"``;
* anything else: a local checkpoint directory, loaded with
  ``from_pretrained(path, local_files_only=True)`` together with its own tokenizer.

torch and transformers are imported inside the functions so that importing this
module (for the CLI's option parsing) stays fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from linkstack.errors import LinkError
from linkstack.inference.tokenizer import (
    QWEN3_CHAT_TEMPLATE,
    QWEN3_EOS_TOKEN,
    QWEN3_PAD_TOKEN,
    Tokenizer,
    TokenizerError,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EMBEDDED: Final = "embedded"
EMBEDDED_FULL_VOCAB: Final = "embedded-full-vocab"
QWEN3_0_6B_SHAPE: Final = "qwen3-0.6b-shape"
#: Seed of the random weights of the built-in specs.
WEIGHTS_SEED: Final = 0
#: The curated words of the embedded model, one a line (package data of ``onboard``).
POLITE_VOCAB_FILE: Final = "polite_vocab.txt"
#: Config attribute that carries the confinement through ``save_pretrained``:
#: :func:`load_model` confines a checkpoint whose config.json holds it (plain
#: transformers ignores it).
OUTPUT_IDS_ATTRIBUTE: Final = "linkstack_output_ids"
#: The mask :func:`confine_output` puts on ``lm_head``: True for every blocked id.
_BLOCKED_BUFFER: Final = "blocked_ids"

# Qwen3-0.6B config.json (huggingface.co/Qwen/Qwen3-0.6B): bos 151643, eos 151645,
# generation_config.json eos_token_id [151645, 151643].
_QWEN3_BOS_ID: Final = 151643
_QWEN3_EOS_ID: Final = 151645
_QWEN3_STOP_IDS: Final = (151645, 151643)
_QWEN3_VOCAB: Final = 151936

_TINY_SHAPE: Final[dict[str, Any]] = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    # Wider than Qwen's 0.02 so that the random layers move the residual stream
    # and greedy decoding wanders instead of echoing the last prompt token.
    "initializer_range": 0.3,
}

_SHAPES: Final[dict[str, dict[str, Any]]] = {
    EMBEDDED: _TINY_SHAPE,
    EMBEDDED_FULL_VOCAB: _TINY_SHAPE,
    # Qwen3-0.6B config.json (checked against the published file).
    QWEN3_0_6B_SHAPE: {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_window_layers": 28,
        "initializer_range": 0.02,
    },
}
#: Built on the CPU in float32 wherever they run, so that their weights are the same
#: in every process on every machine.
_BUILT_ON_CPU: Final = frozenset({EMBEDDED, EMBEDDED_FULL_VOCAB})
#: Confined to the words of :data:`POLITE_VOCAB_FILE` (random weights speak to users).
_CONFINED: Final = frozenset({EMBEDDED, QWEN3_0_6B_SHAPE})


class ModelLoadError(LinkError):
    """The model spec names nothing loadable (missing path, no model, bad device)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelHandle:
    """A loaded model with what generation needs around it."""

    #: A transformers ``PreTrainedModel`` in eval mode.
    model: Any
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    #: The spec it was loaded from (a built-in name or a path).
    spec: str
    #: One line for logs: spec, parameters, device, dtype.
    description: str
    #: Default stop ids: the tokenizer's eos ids and the model's generation config.
    stop_ids: tuple[int, ...]
    #: Size of the model's embedding: ids generated are below it.
    vocab_size: int
    max_positions: int
    #: The only ids the model can generate, sorted (every other logit is -inf);
    #: ``None`` when any id below ``vocab_size`` can come.
    output_ids: tuple[int, ...] | None = None


def model_config(spec: str) -> Any:
    """The ``Qwen3Config`` of a built-in spec (``"embedded"``, ``"embedded-full-vocab"``
    or ``"qwen3-0.6b-shape"``)."""
    from transformers import Qwen3Config

    if spec not in _SHAPES:
        raise ModelLoadError(f"no built-in model {spec!r}; built-ins are {sorted(_SHAPES)}")
    return Qwen3Config(
        vocab_size=_QWEN3_VOCAB,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=_QWEN3_BOS_ID,
        eos_token_id=_QWEN3_EOS_ID,
        **_SHAPES[spec],
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; a CUDA device must exist."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"bad device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


_DTYPES: Final = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"bad dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    resolved: torch.dtype = getattr(torch, dtype)
    return resolved


def polite_words() -> tuple[str, ...]:
    """The curated words of the embedded model, as :data:`POLITE_VOCAB_FILE` lists them."""
    text = resources.files("onboard").joinpath(POLITE_VOCAB_FILE).read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def polite_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The ids of ``" " + word`` for every curated word, sorted.

    Raises :class:`ModelLoadError` when a word is not exactly one token of
    ``tokenizer`` (the Qwen-3 tokenizer splits none of them).
    """
    ids: set[int] = set()
    for word in polite_words():
        encoded = tokenizer.encode(" " + word)
        if len(encoded) != 1:
            raise ModelLoadError(
                f"{POLITE_VOCAB_FILE}: {word!r} is {len(encoded)} tokens of "
                f"{tokenizer.source}, not one"
            )
        ids.add(encoded[0])
    return tuple(sorted(ids))


def confine_output(model: Any, output_ids: Sequence[int]) -> None:
    """Make ``output_ids`` the only ids ``model`` can generate.

    A forward hook on ``lm_head`` sets every other logit to -inf (in any dtype,
    at any temperature, a zero probability), so every consumer of the logits
    (greedy, sampling, ``model.generate``, onboard.generation) picks among
    ``output_ids``.  The mask is a non-persistent buffer of ``lm_head``: it moves
    with the model and stays out of the state dict (the weights, and
    :func:`weights_digest`, are unchanged).  ``output_ids`` are also written to
    the config (:data:`OUTPUT_IDS_ATTRIBUTE`), so that a checkpoint saved from
    ``model`` is confined again when :func:`load_model` reads it.
    """
    import torch

    vocab = int(model.config.vocab_size)
    ids = sorted({int(i) for i in output_ids})
    if not ids or not 0 <= ids[0] <= ids[-1] < vocab:
        raise ModelLoadError(
            f"output ids must be a non-empty set within [0, {vocab}), got {len(ids)} ids"
            + (f" from {ids[0]} to {ids[-1]}" if ids else "")
        )
    head = model.get_output_embeddings()
    hooked = _BLOCKED_BUFFER in dict(head.named_buffers(recurse=False))
    blocked = torch.ones(vocab, dtype=torch.bool, device=head.weight.device)
    blocked[ids] = False
    head.register_buffer(_BLOCKED_BUFFER, blocked, persistent=False)
    if not hooked:  # confining again replaces the set

        def mask(module: Any, _args: Any, logits: torch.Tensor) -> torch.Tensor:
            blocked_ids: torch.Tensor = getattr(module, _BLOCKED_BUFFER)
            return logits.masked_fill(blocked_ids, float("-inf"))

        head.register_forward_hook(mask)
    setattr(model.config, OUTPUT_IDS_ATTRIBUTE, ids)


def _output_ids(model: Any) -> tuple[int, ...] | None:
    ids = getattr(model.config, OUTPUT_IDS_ATTRIBUTE, None)
    return None if ids is None else tuple(ids)


def _build_random(spec: str, device: torch.device, dtype: torch.dtype, tokenizer: Tokenizer) -> Any:
    """A seeded random Qwen-3 of a built-in shape; the global RNG is left untouched."""
    import torch
    from transformers import Qwen3ForCausalLM

    config = model_config(spec)
    build_on = torch.device("cpu") if spec in _BUILT_ON_CPU else device
    forked = [build_on.index or 0] if build_on.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), build_on:
        torch.manual_seed(WEIGHTS_SEED)
        model: Any = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = list(_QWEN3_STOP_IDS)
    model.generation_config.pad_token_id = _QWEN3_BOS_ID
    if spec in _CONFINED:
        # Words only: the stop ids stay blocked too, so that answers run to
        # max_new_tokens as the full-vocabulary model's (which, in practice, never
        # draws one of its 2 stop ids among 151,936).
        confine_output(model, polite_token_ids(tokenizer))
    return model.to(device=device, dtype=dtype)


def _load_checkpoint(path: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    if not path.exists():
        raise ModelLoadError(f"model path {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model path {str(path)!r} holds no model (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the model in {str(path)!r}: {exc}") from exc
    output_ids = getattr(model.config, OUTPUT_IDS_ATTRIBUTE, None)
    if output_ids is not None:
        # Saved from a confined model (the embedded one): confine it again.
        if not isinstance(output_ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in output_ids
        ):
            raise ModelLoadError(
                f"model path {str(path)!r}: config.json {OUTPUT_IDS_ATTRIBUTE} must be a "
                f"list of ints, got {type(output_ids).__name__}"
            )
        confine_output(model, output_ids)
    return model


def load_model(
    spec: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: Tokenizer | None = None,
) -> ModelHandle:
    """Load the model named by ``spec`` (see the module doc) in eval mode.

    ``tokenizer`` overrides the tokenizer that comes with the spec (the embedded
    Qwen-3 one for built-ins, the checkpoint's own for a path); pass a shared one
    to skip building it again.
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    name = EMBEDDED if spec is None else str(spec)
    if name in _SHAPES:
        tok = tokenizer or Tokenizer.qwen3()
        model = _build_random(name, resolved_device, resolved_dtype, tok)
    else:
        path = Path(name)
        model = _load_checkpoint(path, resolved_dtype).to(resolved_device)
        try:
            tok = tokenizer or Tokenizer.from_pretrained_dir(path)
        except TokenizerError as exc:
            raise ModelLoadError(f"model path {name!r}: {exc}") from exc
    model.eval()
    config = model.config
    generation_eos = model.generation_config.eos_token_id
    if generation_eos is None:
        generation_eos = []
    elif isinstance(generation_eos, int):
        generation_eos = [generation_eos]
    stop_ids = tuple(dict.fromkeys([*tok.eos_ids, *(int(i) for i in generation_eos)]))
    parameters = sum(p.numel() for p in model.parameters())
    dtype_name = str(resolved_dtype).removeprefix("torch.")
    output_ids = _output_ids(model)
    confined = "" if output_ids is None else f", output confined to {len(output_ids)} ids"
    return ModelHandle(
        model=model,
        tokenizer=tok,
        device=resolved_device,
        dtype=resolved_dtype,
        spec=name,
        description=(
            f"{name}: {type(model).__name__}, {parameters / 1e6:.1f}M parameters, "
            f"{config.num_hidden_layers} layers, {resolved_device} {dtype_name}{confined}"
        ),
        stop_ids=stop_ids,
        vocab_size=int(config.vocab_size),
        max_positions=int(config.max_position_embeddings),
        output_ids=output_ids,
    )


def weights_digest(model: Any) -> str:
    """SHA-256 over every tensor of the state dict (name, dtype, shape, bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(handle: ModelHandle, directory: Path | str) -> Path:
    """Save model and tokenizer with ``save_pretrained`` into ``directory``.

    The tokenizer is saved as a transformers fast tokenizer; its chat template
    (Qwen-3's for the embedded tokenizer) goes both to ``chat_template.jinja``
    and, as older checkpoints have it, to ``tokenizer_config.json``.
    """
    from tokenizers import Tokenizer as Backend
    from transformers import PreTrainedTokenizerFast

    path = Path(directory)
    tok = handle.tokenizer
    template = tok.chat_template or QWEN3_CHAT_TEMPLATE
    handle.model.save_pretrained(path)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=Backend.from_str(tok.to_json()),
        eos_token=tok.special_token("eos_token") or QWEN3_EOS_TOKEN,
        pad_token=tok.special_token("pad_token") or QWEN3_PAD_TOKEN,
        chat_template=template,
    )
    fast.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text("utf-8"))
    config["chat_template"] = template
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return path
