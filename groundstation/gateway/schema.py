"""OpenAI request bodies to linkstack requests, and linkstack answers to OpenAI objects.

What is mapped, and how (docs/gateway.md has the table):

* ``messages`` (chat) render in the model's chat format exactly as ``onboard generate``
  renders its PROMPT; one user message gives the same prompt ids as
  ``onboard generate PROMPT``.  Several messages (system, developer = system, user,
  assistant turns) need the built-in Qwen-3 format; tool and function turns are refused.
* ``prompt`` (completions) is encoded as is (``onboard generate --no-chat``), or given
  as token ids.
* ``temperature`` (0..2, OpenAI's default 1), ``top_p`` (0.001..1), ``top_k`` (an
  extension, 0..65535), ``max_tokens`` / ``max_completion_tokens`` and ``seed`` go up
  as they are; the link carries temperature and top-p in thousandths, so 0.7 is taken
  and 0.7001 refused.  Without ``seed`` the gateway draws one and reports it.
* ``stop`` (up to 4 strings) is matched on the ground on the decoded text: the text
  ends before the stop string, the finish reason is ``stop`` and a Cancel goes up.
* Parameters that would change the answer and that the link cannot carry
  (``frequency_penalty`` other than 0, ``logprobs``, ``n`` > 1, tools...) are refused
  with 400 naming the parameter; ``user`` is accepted and ignored; unknown names are
  refused.

Errors are :class:`ApiError`: an HTTP status and OpenAI's error object
(``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from linkstack.errors import LinkError, LocalProtocolError
from linkstack.inference.protocol import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_IDS,
    MILLI,
    GenerationParams,
    PromptRequest,
)
from linkstack.inference.tokenizer import Tokenizer
from linkstack.inference.wire import MAX_TOKEN_ID

#: OpenAI's limits: temperature 0..2, at most 4 stop sequences.
MAX_TEMPERATURE: Final = 2.0
MAX_STOP_SEQUENCES: Final = 4
#: Seeds the wire carries: u64 (docs/protocol.md §4).
MAX_SEED: Final = (1 << 64) - 1
#: top_k the wire carries: u16 (docs/protocol.md §4).
MAX_TOP_K: Final = 0xFFFF
#: OpenAI's defaults for what a request leaves out.
DEFAULT_TEMPERATURE: Final = 1.0
DEFAULT_TOP_P: Final = 1.0

Kind = Literal["chat", "text"]


class ApiError(Exception):
    """An error answered as OpenAI answers errors: ``status`` and the error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400, ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What the gateway knows that a request body does not say."""

    tokenizer: Tokenizer
    #: The name /v1/models lists; the only ``model`` a request may name.
    model_name: str
    #: The stop ids ``onboard --model`` uses (eos ids): sent with every request.
    stop_ids: tuple[int, ...]
    #: Prompts longer than this (ids) are refused with 413: the uplink budget.
    max_prompt_tokens: int = MAX_PROMPT_IDS
    #: ``max_tokens`` when a request leaves it out.
    default_max_tokens: int = 256
    #: Draws the seed of a request that gives none (0..2**64-1).
    seed_source: Callable[[], int] = lambda: 0


@dataclass(frozen=True, slots=True)
class CompletionJob:
    """One OpenAI request, checked and ready for the link."""

    kind: Kind
    model: str
    prompt_ids: tuple[int, ...]
    params: GenerationParams
    stream: bool
    #: ``stream_options.include_usage``: a last chunk with the usage.
    include_usage: bool
    #: Stop strings matched on the ground.
    stop: tuple[str, ...]
    #: Whether the seed was drawn by the gateway (the request gave none).
    seed_drawn: bool
    #: A short text for the operator page.
    preview: str = field(default="")


# -- parameters -----------------------------------------------------------------------------

#: Parameters accepted only with the value that changes nothing (OpenAI clients send
#: some of them by default): name -> the neutral values.
_NEUTRAL: Final[dict[str, tuple[object, ...]]] = {
    "n": (1,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logprobs": (False, 0),
    "top_logprobs": (0,),
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none",),
    "function_call": ("none",),
    "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},),
    "store": (False,),
    "logit_bias": ({},),
    "service_tier": ("auto", "default"),
}
#: Accepted and ignored: they do not change the answer.
_IGNORED: Final = frozenset({"user", "metadata"})
_SAMPLING: Final = frozenset(
    {"model", "stream", "stream_options", "temperature", "top_p", "top_k", "seed", "stop"}
)
_CHAT_KEYS: Final = (
    _SAMPLING | {"messages", "max_tokens", "max_completion_tokens"} | _IGNORED | set(_NEUTRAL)
)
_TEXT_KEYS: Final = _SAMPLING | {"prompt", "max_tokens"} | _IGNORED | set(_NEUTRAL)
_CHAT_ONLY_NEUTRAL: Final = frozenset({"echo", "best_of", "suffix"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise invalid(f"'{name}' must be a number, not {_json_type(value)}", name)
    if not low <= value <= high:
        raise invalid(f"'{name}' {value} must be in {low:g}..{high:g}", name)
    milli = round(value * MILLI)
    if milli / MILLI != value:
        raise invalid(
            f"'{name}' {value} is not a multiple of 0.001 (the link carries thousandths)", name
        )
    return float(value)


def _integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise invalid(f"'{name}' must be an integer, not {_json_type(value)}", name)
    if not low <= value <= high:
        raise invalid(f"'{name}' {value} must be in {low}..{high}", name)
    result: int = value
    return result


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_keys(body: Mapping[str, Any], allowed: frozenset[str] | set[str], kind: Kind) -> None:
    for name in body:
        if name not in allowed or (kind == "chat" and name in _CHAT_ONLY_NEUTRAL):
            raise invalid(
                f"unsupported parameter '{name}': the link to the spacecraft cannot carry it",
                name,
                "unsupported_parameter",
            )
        value = body[name]
        if name in _NEUTRAL and value is not None and value not in _NEUTRAL[name]:
            neutral = " or ".join(repr(v) for v in _NEUTRAL[name])
            raise invalid(
                f"unsupported value of '{name}': only {neutral} is supported over this link",
                name,
                "unsupported_parameter",
            )


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise invalid("'stop' must be a string or an array of strings", "stop")
    if len(items) > MAX_STOP_SEQUENCES:
        raise invalid(f"'stop' has {len(items)} sequences; at most {MAX_STOP_SEQUENCES}", "stop")
    if any(not s for s in items):
        raise invalid("'stop' sequences must not be empty", "stop")
    return tuple(items)


def _stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid(f"'stream' must be a boolean, not {_json_type(stream)}", "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise invalid("'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise invalid("'stream_options' may hold 'include_usage' only", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("'stream_options.include_usage' must be a boolean", "stream_options")
    return stream, include


def _model(body: Mapping[str, Any], ctx: ParseContext) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required: a string naming the model", "model")
    if model != ctx.model_name:
        raise ApiError(
            404,
            f"The model '{model}' does not exist; this gateway serves '{ctx.model_name}'",
            param="model",
            code="model_not_found",
        )
    return model


def _params(body: Mapping[str, Any], ctx: ParseContext, max_tokens: int | None) -> GenerationParams:
    temperature = _number(body, "temperature", DEFAULT_TEMPERATURE, 0.0, MAX_TEMPERATURE)
    top_p = _number(body, "top_p", DEFAULT_TOP_P, 0.001, 1.0)
    top_k = _integer(body, "top_k", 0, MAX_TOP_K) or 0
    seed = _integer(body, "seed", 0, MAX_SEED)
    return GenerationParams.from_floats(
        max_new_tokens=ctx.default_max_tokens if max_tokens is None else max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=ctx.seed_source() if seed is None else seed,
        stop_ids=ctx.stop_ids,
    )


def _check_prompt(prompt_ids: Sequence[int], ctx: ParseContext, params: GenerationParams) -> None:
    if not prompt_ids:
        raise invalid("the prompt is empty", "prompt")
    if len(prompt_ids) > ctx.max_prompt_tokens:
        raise ApiError(
            413,
            f"the prompt is {len(prompt_ids)} tokens; the uplink takes at most"
            f" {ctx.max_prompt_tokens} per request",
            param="messages",
            code="prompt_too_long",
        )
    try:  # every other limit of the wire, checked before anything goes up
        PromptRequest(request_id=0, params=params, prompt_ids=tuple(prompt_ids))
    except LocalProtocolError as exc:
        raise invalid(f"the request cannot go up the link: {exc}") from exc


# -- chat ----------------------------------------------------------------------------------

#: OpenAI's roles -> the chat format's ("developer" is the newer name of "system").
_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def _content(message: Mapping[str, Any], index: int) -> str:
    content = message.get("content")
    where = f"messages[{index}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else _json_type(part)
                raise invalid(f"{where}: only text parts are supported, not {kind!r}", where)
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}: a text part needs a string 'text'", where)
            texts.append(text)
        return "".join(texts)
    raise invalid(f"{where} must be a string or an array of text parts", where)


def _turns(messages: object) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array", "messages")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{index}] must be an object", "messages")
        role = message.get("role")
        if role not in _ROLES:
            raise invalid(
                f"messages[{index}].role {role!r} is not supported"
                " (system, developer, user, assistant)",
                "messages",
            )
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise invalid(
                f"messages[{index}]: unsupported field(s) {', '.join(sorted(extra))}",
                "messages",
                "unsupported_parameter",
            )
        turns.append((_ROLES[role], _content(message, index)))
    return turns


def render_qwen3_turns(turns: Sequence[tuple[str, str]]) -> str:
    """Several turns in Qwen-3's chat format, thinking disabled: for one user turn the
    very text of :func:`linkstack.inference.tokenizer.render_qwen3_chat`."""
    body = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
    return body + "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def chat_prompt_ids(tokenizer: Tokenizer, turns: Sequence[tuple[str, str]]) -> list[int]:
    """The prompt ids of chat ``turns``, as ``onboard generate`` makes them for one."""
    if len(turns) == 1 and turns[0][0] == "user":
        return tokenizer.encode_prompt(turns[0][1], chat=True)
    if tokenizer.chat_template is not None:
        raise invalid(
            "this model's checkpoint has its own chat template: send one user message",
            "messages",
        )
    return tokenizer.encode(render_qwen3_turns(turns))


def parse_chat(body: object, ctx: ParseContext) -> CompletionJob:
    """A ``POST /v1/chat/completions`` body, checked (raises :class:`ApiError`)."""
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {_json_type(body)}")
    _check_keys(body, _CHAT_KEYS, "chat")
    model = _model(body, ctx)
    turns = _turns(body.get("messages"))
    sampling = _sampling(body, ctx, chat=True)
    try:
        prompt_ids = chat_prompt_ids(ctx.tokenizer, turns)
    except LinkError as exc:
        raise invalid(f"cannot tokenize the messages: {exc}", "messages") from exc
    return _job("chat", model, prompt_ids, sampling, ctx, preview=turns[-1][1][:200])


def parse_completion(body: object, ctx: ParseContext) -> CompletionJob:
    """A ``POST /v1/completions`` body, checked (raises :class:`ApiError`)."""
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {_json_type(body)}")
    _check_keys(body, _TEXT_KEYS, "text")
    model = _model(body, ctx)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        prompt_ids = ctx.tokenizer.encode(prompt)
        preview = prompt[:200]
    elif isinstance(prompt, list) and all(_is_int(i) for i in prompt):
        if any(not 0 <= i <= MAX_TOKEN_ID for i in prompt):
            raise invalid(f"'prompt' token ids must be in 0..{MAX_TOKEN_ID}", "prompt")
        prompt_ids = list(prompt)
        preview = ctx.tokenizer.decode(prompt_ids[:200])
    elif isinstance(prompt, list):
        raise invalid("'prompt': one prompt per request (a batch of several is not served)")
    else:
        raise invalid("'prompt' must be a string or an array of token ids", "prompt")
    sampling = _sampling(body, ctx, chat=False)
    return _job("text", model, prompt_ids, sampling, ctx, preview=preview)


@dataclass(frozen=True, slots=True)
class _Sampling:
    """What both endpoints read alike: streaming, the length limit, stop strings and
    the generation parameters."""

    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    params: GenerationParams
    seed_drawn: bool


def _sampling(body: Mapping[str, Any], ctx: ParseContext, *, chat: bool) -> _Sampling:
    """``stream``, the length limit (chat: ``max_completion_tokens`` or its older name
    ``max_tokens``, not both), ``stop`` and the parameters, checked in that order."""
    stream, include_usage = _stream(body)
    max_tokens = None
    if chat:
        if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
            raise invalid("give 'max_tokens' or 'max_completion_tokens', not both", "max_tokens")
        max_tokens = _integer(body, "max_completion_tokens", 1, MAX_NEW_TOKENS)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, MAX_NEW_TOKENS)
    stop = _stop(body)
    params = _params(body, ctx, max_tokens)
    return _Sampling(stream, include_usage, stop, params, seed_drawn=body.get("seed") is None)


def _job(
    kind: Kind,
    model: str,
    prompt_ids: Sequence[int],
    sampling: _Sampling,
    ctx: ParseContext,
    *,
    preview: str,
) -> CompletionJob:
    """The job, once its prompt is known to fit (:func:`_check_prompt`)."""
    _check_prompt(prompt_ids, ctx, sampling.params)
    return CompletionJob(
        kind=kind,
        model=model,
        prompt_ids=tuple(prompt_ids),
        params=sampling.params,
        stream=sampling.stream,
        include_usage=sampling.include_usage,
        stop=sampling.stop,
        seed_drawn=sampling.seed_drawn,
        preview=preview,
    )


# -- stop strings ----------------------------------------------------------------------------


class StopMatcher:
    """Finds the first of ``stops`` in a text that arrives in pieces.

    :meth:`push` returns the text that can be shown now (never a prefix of a stop
    string that may still complete) and whether a stop string was found; the text
    ends before it.  :meth:`flush` returns what was held back at the end.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self._stops:
            return text, False
        buffer = self._held + text
        found = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return buffer[: min(found)], True
        keep = 0  # the longest tail of buffer that begins a stop string
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if stop.startswith(buffer[-size:]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


__all__ = [
    "ApiError",
    "CompletionJob",
    "ParseContext",
    "StopMatcher",
    "chat_prompt_ids",
    "invalid",
    "parse_chat",
    "parse_completion",
    "render_qwen3_turns",
]
