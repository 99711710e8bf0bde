"""Token generation that streams ids as they come, deterministically.

A manual KV-cache loop over the model's forward pass (the same computation as
``model.generate``, which the tests check), so that every step is in our hands:

* the parameters are the wire's :class:`~linkstack.inference.protocol.GenerationParams`
  as a PromptRequest carries them: the stop ids are exactly those it names (none
  means none), ``top_k`` must be 0 (:func:`check_params`);
* greedy when ``temperature == 0``; otherwise temperature + top-p sampling on
  the CPU in float32 from a private ``torch.Generator`` seeded with
  ``params.seed``: the same prompt ids and params give the same ids in every run
  and every process, and no global RNG (hence no lock) is involved;
* ``cancel`` (a ``threading.Event``) is checked before every forward pass;
* a failure inside the model (CUDA out of memory, ``RuntimeError``...) ends the
  run with ``FinishReason.ERROR`` and a :class:`GenerationFailure`, with
  the ids produced so far; it never propagates.

Threading: run :func:`generate` in a worker thread.  ``on_token`` is called in
that thread, once per id, in order, before the next forward pass starts; it must
be quick and must not block on the event loop.  To hand ids to asyncio::

    on_token=lambda token_id: loop.call_soon_threadsafe(queue.put_nowait, token_id)

and set ``cancel`` from any thread to stop within one step.  Exceptions raised
by ``on_token`` are the caller's and propagate.  One model may serve several
threads at once (each run has its own cache and generator).
"""

from __future__ import annotations

import inspect
import logging
import operator
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from linkstack.errors import InvalidState, LinkError
from linkstack.inference.protocol import FinishReason, GenerationParams

if TYPE_CHECKING:
    import threading

    import torch

    from onboard.model import ModelHandle

logger = logging.getLogger(__name__)


class GenerationRequestError(LinkError):
    """The request itself is impossible (bad params, empty or out-of-range prompt)."""


def check_params(params: GenerationParams) -> None:
    """Raise GenerationRequestError for what the wire can carry but this generator
    lacks: ``top_k`` other than 0.  Everything else the wire type has checked."""
    if params.top_k != 0:
        raise GenerationRequestError(f"top_k {params.top_k} is not supported onboard (use 0)")


@dataclass(frozen=True, slots=True)
class GenerationTiming:
    """Onboard wall-clock times of one run (``time.perf_counter``)."""

    #: From the start to the first id (prompt prefill + first step).
    first_token_s: float
    #: From the first id to the end.
    decode_s: float
    tokens: int

    @property
    def total_s(self) -> float:
        return self.first_token_s + self.decode_s

    @property
    def decode_tokens_per_s(self) -> float:
        """Ids per second after the first (0 when fewer than two ids)."""
        if self.tokens < 2 or self.decode_s <= 0:
            return 0.0
        return (self.tokens - 1) / self.decode_s


@dataclass(frozen=True, slots=True)
class GenerationFailure:
    """The model failed mid-run; reported, not raised."""

    #: "out-of-memory" or "runtime-error" (any other exception from the model).
    kind: str
    #: Exception type and message.
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationResult:
    """How a run ended, with every id it produced."""

    prompt_ids: tuple[int, ...]
    #: Every id generated, the stop id included when there was one.
    generated_ids: tuple[int, ...]
    finish_reason: FinishReason
    params: GenerationParams
    timing: GenerationTiming
    error: GenerationFailure | None = None

    @property
    def stop_id(self) -> int | None:
        """The stop id that ended the run, if one did."""
        if self.finish_reason is FinishReason.STOP_ID:
            return self.generated_ids[-1]
        return None


def check_request(
    handle: ModelHandle, prompt_ids: Sequence[int], params: GenerationParams
) -> tuple[int, ...]:
    """The prompt as a tuple of ints, once the request is possible on ``handle``;
    raises :class:`GenerationRequestError` otherwise (shared with onboard.batching)."""
    check_params(params)
    try:
        prompt = tuple(operator.index(i) for i in prompt_ids)
    except TypeError as exc:
        raise GenerationRequestError(f"prompt ids must be integers: {exc}") from exc
    if not prompt:
        raise GenerationRequestError("the prompt has no token ids")
    bad = [i for i in prompt if not 0 <= i < handle.vocab_size]
    if bad:
        raise GenerationRequestError(
            f"prompt ids {bad[:5]} are outside the model's vocabulary [0, {handle.vocab_size})"
        )
    if len(prompt) + params.max_new_tokens > handle.max_positions:
        raise GenerationRequestError(
            f"prompt of {len(prompt)} ids + max_new_tokens {params.max_new_tokens} exceeds "
            f"the model's {handle.max_positions} positions"
        )
    return prompt


def pick_next_id(logits: torch.Tensor, params: GenerationParams, rng: torch.Generator) -> int:
    """The next id from one row of logits: argmax, or temperature + top-p sampling."""
    import torch

    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.to(device="cpu", dtype=torch.float32) / params.temperature, -1)
    candidates: torch.Tensor | None = None
    if params.top_p < 1:
        # The nucleus: the smallest set of most likely ids whose mass reaches top_p.
        # Look among the top k first (a full sort of 151,936 probabilities costs
        # ~13 ms on a small CPU); sort everything only when the nucleus is wider.
        k = 256
        while True:
            k = min(k, probs.numel())
            top, order = torch.topk(probs, k)
            if k == probs.numel() or float(top.sum()) >= params.top_p:
                break
            k *= 8
        keep = (torch.cumsum(top, -1) - top) < params.top_p  # always keeps the first
        probs, candidates = top[keep], order[keep]
    # Inverse-CDF draw: one uniform from the private generator per id (much
    # cheaper than torch.multinomial over the whole vocabulary).
    cdf = torch.cumsum(probs.to(torch.float64), -1)
    u = torch.rand((), generator=rng, dtype=torch.float64) * cdf[-1]
    index = min(int(torch.searchsorted(cdf, u, right=True)), cdf.numel() - 1)
    return index if candidates is None else int(candidates[index])


#: The name tests knew it by.
_pick = pick_next_id


_CACHE_KEYWORDS: dict[type, str] = {}


def _cache_keyword(model_class: type) -> str:
    keyword = _CACHE_KEYWORDS.get(model_class)
    if keyword is None:
        forward = getattr(model_class, "forward", None)
        # A stand-in that is only callable gets today's name.
        names = () if forward is None else inspect.signature(forward).parameters
        keyword = "past_key_values" if "past_key_values" in names else "cache"
        _CACHE_KEYWORDS[model_class] = keyword
    return keyword


def cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that hands ``cache`` to ``model``'s forward pass.

    transformers 5 renamed ``past_key_values`` to ``cache`` part way through its 5.x
    releases; a forward pass given the other name takes it into ``**kwargs`` and runs
    without the cache (every step would then see only its newest id). The name is read
    off the model class's signature once.
    """
    return {_cache_keyword(type(model)): cache}


def describe_failure(exc: Exception) -> GenerationFailure:
    """What a model failure reports: out-of-memory or runtime-error, with the message."""
    import torch

    kind = "out-of-memory" if isinstance(exc, torch.OutOfMemoryError) else "runtime-error"
    return GenerationFailure(kind=kind, message=f"{type(exc).__name__}: {exc}")


def _run(
    handle: ModelHandle,
    prompt: tuple[int, ...],
    params: GenerationParams,
    cancel: threading.Event | None,
) -> Generator[int, None, GenerationResult]:
    """Yield ids one by one; return the result."""
    import torch
    from transformers import DynamicCache

    model = handle.model
    stop = frozenset(params.stop_ids)
    rng = torch.Generator(device="cpu")
    rng.manual_seed(params.seed)
    generated: list[int] = []
    reason = FinishReason.MAX_TOKENS
    failure: GenerationFailure | None = None
    started = time.perf_counter()
    first_at: float | None = None
    cache: Any = None
    next_input = [list(prompt)]
    while len(generated) < params.max_new_tokens:
        if cancel is not None and cancel.is_set():
            reason = FinishReason.CANCELLED
            break
        try:
            with torch.inference_mode():
                if cache is None:
                    cache = DynamicCache(config=model.config)
                input_ids = torch.tensor(next_input, dtype=torch.long, device=handle.device)
                out = model(
                    input_ids=input_ids,
                    use_cache=True,
                    logits_to_keep=1,
                    **cache_argument(model, cache),
                )
                token_id = pick_next_id(out.logits[0, -1], params, rng)
        except Exception as exc:  # any model failure is reported, never raised
            # Reported through the result; the traceback is kept for debugging only.
            logger.debug("generation failed after %d ids", len(generated), exc_info=True)
            failure = describe_failure(exc)
            reason = FinishReason.ERROR
            cache = None
            if handle.device.type == "cuda":
                torch.cuda.empty_cache()
            break
        if first_at is None:
            first_at = time.perf_counter()
        generated.append(token_id)
        next_input = [[token_id]]
        yield token_id
        if token_id in stop:
            reason = FinishReason.STOP_ID
            break
    ended = time.perf_counter()
    first = first_at if first_at is not None else ended
    return GenerationResult(
        prompt_ids=prompt,
        generated_ids=tuple(generated),
        finish_reason=reason,
        params=params,
        timing=GenerationTiming(
            first_token_s=first - started, decode_s=ended - first, tokens=len(generated)
        ),
        error=failure,
    )


def generate(
    handle: ModelHandle,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    on_token: Callable[[int], object] | None = None,
    cancel: threading.Event | None = None,
) -> GenerationResult:
    """Run to the end, calling ``on_token(id)`` for each id as it is generated.

    Raises :class:`GenerationRequestError` for an impossible request; model
    failures come back as a result with ``FinishReason.ERROR``.
    """
    steps = _run(handle, check_request(handle, prompt_ids, params), params, cancel)
    while True:
        try:
            token_id = next(steps)
        except StopIteration as done:
            result: GenerationResult = done.value
            return result
        if on_token is not None:
            on_token(token_id)


@dataclass(slots=True)
class TokenStream:
    """Iterator over generated ids; :attr:`result` is set once it is exhausted.

    Consume it from one thread.  Abandoning it early is fine (no resources held
    beyond the garbage-collected cache); prefer ``cancel`` for a clean result.
    """

    _steps: Generator[int, None, GenerationResult]
    _result: GenerationResult | None = field(default=None)

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self._result is not None:
            raise StopIteration
        try:
            return next(self._steps)
        except StopIteration as done:
            self._result = done.value
            raise

    @property
    def result(self) -> GenerationResult:
        """How the run ended; only once every id has been consumed."""
        if self._result is None:
            raise InvalidState("the stream has not finished: consume every id first")
        return self._result


def generate_stream(
    handle: ModelHandle,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    cancel: threading.Event | None = None,
) -> TokenStream:
    """Ids as they are generated; the request is checked now, not at the first id."""
    prompt = check_request(handle, prompt_ids, params)
    return TokenStream(_run(handle, prompt, params, cancel))


__all__ = [
    "FinishReason",
    "GenerationFailure",
    "GenerationParams",
    "GenerationRequestError",
    "GenerationResult",
    "GenerationTiming",
    "TokenStream",
    "check_params",
    "check_request",
    "describe_failure",
    "generate",
    "generate_stream",
    "pick_next_id",
]
