"""Continuous batching: concurrent requests decoded together, one forward pass per step.

:class:`BatchEngine` holds up to ``max_batch`` requests.  A request joins between
steps (:meth:`~BatchEngine.admit`): its prompt is prefilled by a forward pass of its
own, exactly as :func:`onboard.generation.generate` does, which gives its first id.
From then on every :meth:`~BatchEngine.step` makes the next id of every running
request with **one** forward pass over the whole batch; a request leaves between
steps (stop id, ``max_new_tokens``, :meth:`~BatchEngine.cancel`, a failure) and its
place is free for the next one.

Exactness: each request keeps its own ``torch.Generator`` seeded with
``params.seed`` and its own sampling parameters, and the decode step computes, row by
row, the very operations the single run computes, so that its ids equal
``generate()``'s for the same prompt and params:

* the KV cache is one buffer per layer of ``[max_batch, kv_heads, positions, head_dim]``;
  row ``i`` holds request ``i``'s keys and values at their own positions (no
  padding on the left, no shift of position ids);
* attention is computed per request over its own length (a ``scaled_dot_product_attention``
  call per row, with the shapes the single run uses): a padded, masked attention sums
  over another length and rounds differently;
* with ``exact=True`` (the default) every linear layer of the step runs as a batched
  matrix product of ``1 x K`` rows (``torch.bmm`` against the weight broadcast over the
  batch), which is the kernel the single run's ``1 x K`` product uses; a plain
  ``B x K`` GEMM blocks its sums differently and moves the last bits of the logits.
  On the CPU in float32 both give bit-identical ids (``tests/test_onboard_batching.py``);
  on CUDA ``bench/bench_onboard.py --batch N`` reports whether they do on that device.
  ``exact=False`` uses the plain GEMM and one masked attention call: faster on a GPU,
  but a near tie between two logits may then resolve otherwise than in ``generate()``.

Both are done by a thread-local ``TorchFunctionMode`` active only inside the batched
forward pass (the model, its config and its attention registry are untouched, so
single runs in other threads are unaffected).  The model must use transformers'
``sdpa`` attention and full (not sliding-window) attention layers.

Threading: an engine belongs to one thread (the service's generation worker); it
holds no lock.  :func:`onboard.generation.generate` may run on the same model in other
threads meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from linkstack.errors import InvalidState, LinkError
from linkstack.inference.protocol import FinishReason, GenerationParams
from onboard.generation import (
    GenerationFailure,
    GenerationResult,
    GenerationTiming,
    cache_argument,
    check_request,
    describe_failure,
    pick_next_id,
)

if TYPE_CHECKING:
    import torch

    from onboard.model import ModelHandle

logger = logging.getLogger(__name__)


class BatchingUnsupported(LinkError):
    """The model cannot be batched by :class:`BatchEngine` (attention implementation,
    sliding-window layers)."""


@dataclass(frozen=True, slots=True)
class TokenMade:
    """Request ``key`` has its next id."""

    key: int
    token_id: int


@dataclass(frozen=True, slots=True)
class RequestEnded:
    """Request ``key`` left the batch; ``result`` holds every id it made."""

    key: int
    result: GenerationResult


StepEvent = TokenMade | RequestEnded


@dataclass(slots=True, eq=False)
class _Slot:
    key: int
    prompt: tuple[int, ...]
    params: GenerationParams
    rng: torch.Generator
    stop: frozenset[int]
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    started: float = 0.0
    first_at: float | None = None

    @property
    def cached(self) -> int:
        """Positions in the KV cache: the prompt and every id but the last."""
        return len(self.prompt) + len(self.generated) - 1


class _KvBuffers:
    """Per layer, keys and values of every running request: ``[rows, heads, positions, dim]``."""

    def __init__(self, like: Any, rows: int, positions: int) -> None:
        import torch

        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in like.layers:
            _, heads, _, dim = layer.keys.shape
            shape = (rows, heads, positions, dim)
            self.keys.append(torch.zeros(shape, dtype=layer.keys.dtype, device=layer.keys.device))
            self.values.append(
                torch.zeros(shape, dtype=layer.values.dtype, device=layer.values.device)
            )

    @property
    def positions(self) -> int:
        return int(self.keys[0].shape[2])

    def grow(self, positions: int) -> None:
        """At least ``positions`` positions per row (the held ones are kept)."""
        import torch

        old = self.positions
        if positions <= old:
            return
        for store in (self.keys, self.values):
            for index, tensor in enumerate(store):
                rows, heads, _, dim = tensor.shape
                wider = torch.zeros(
                    (rows, heads, positions, dim), dtype=tensor.dtype, device=tensor.device
                )
                wider[:, :, :old] = tensor
                store[index] = wider

    def load(self, row: int, cache: Any) -> None:
        """Row ``row`` takes the keys and values of a single run's ``DynamicCache``."""
        for index, layer in enumerate(cache.layers):
            length = layer.keys.shape[2]
            self.keys[index][row, :, :length] = layer.keys[0]
            self.values[index][row, :, :length] = layer.values[0]

    def move(self, source: int, target: int, length: int) -> None:
        for store in (self.keys, self.values):
            for tensor in store:
                tensor[target, :, :length] = tensor[source, :, :length]


class _StepCache:
    """The cache one batched decode step hands the model: writes each row's new key
    and value at that row's own position, returns the buffers of the running rows."""

    is_compileable = False

    def __init__(self, buffers: _KvBuffers, rows: torch.Tensor, positions: torch.Tensor) -> None:
        self._buffers = buffers
        self._rows = rows
        self._positions = positions

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = key_states.shape[0]
        keys = self._buffers.keys[layer_idx]
        values = self._buffers.values[layer_idx]
        keys[self._rows, :, self._positions] = key_states[:, :, 0]
        values[self._rows, :, self._positions] = value_states[:, :, 0]
        return keys[:batch], values[:batch]


def _step_mode(lengths: Sequence[int], exact: bool) -> Any:
    """The TorchFunctionMode of one batched decode forward (see the module doc)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch.overrides import TorchFunctionMode

    sdpa = F.scaled_dot_product_attention
    linear = F.linear

    class _Mode(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func is sdpa:
                query, key, value, *rest = args
                if not exact:
                    span = max(lengths)
                    index = torch.arange(span, device=query.device)
                    limit = torch.tensor(lengths, device=query.device)
                    mask = (index[None, :] < limit[:, None])[:, None, None, :]
                    kwargs = {**kwargs, "attn_mask": mask}
                    return func(query, key[:, :, :span], value[:, :, :span], **kwargs)
                rows = [
                    func(
                        query[i : i + 1],
                        key[i : i + 1, :, :length],
                        value[i : i + 1, :, :length],
                        *rest,
                        **kwargs,
                    )
                    for i, length in enumerate(lengths)
                ]
                return torch.cat(rows)
            if exact and func is linear:
                x, weight = args[0], args[1]
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                if x.dim() == 3 and x.shape[0] > 1 and x.shape[1] == 1:
                    if bias is None:
                        batch = x.shape[0]
                        return torch.bmm(x, weight.t().unsqueeze(0).expand(batch, -1, -1))
                    return torch.cat([func(x[i : i + 1], weight, bias) for i in range(len(x))])
            return func(*args, **kwargs)

    return _Mode()


class BatchEngine:
    """Up to ``max_batch`` requests decoded together (see the module doc)."""

    def __init__(self, handle: ModelHandle, *, max_batch: int = 4, exact: bool = True) -> None:
        if max_batch < 1:
            raise InvalidState(f"max_batch {max_batch} must be at least 1")
        config = handle.model.config
        implementation = getattr(config, "_attn_implementation", None)
        if implementation != "sdpa":
            raise BatchingUnsupported(
                f"{handle.spec}: attention {implementation!r}; batching needs 'sdpa'"
            )
        layer_types = tuple(getattr(config, "layer_types", None) or ("full_attention",))
        if set(layer_types) != {"full_attention"}:
            raise BatchingUnsupported(
                f"{handle.spec}: layer types {sorted(set(layer_types))}; batching needs "
                "full attention in every layer"
            )
        self.handle = handle
        self.max_batch = max_batch
        self.exact = exact
        self._no_masks = dict.fromkeys(layer_types)
        #: Admitted, prefill not yet run (they join at the next step).
        self._joining: list[_Slot] = []
        #: Decoding, in KV buffer row order.
        self._rows: list[_Slot] = []
        self._buffers: _KvBuffers | None = None
        #: Forward passes run: prefills and batched steps (for tests and benches).
        self.prefills = 0
        self.decode_steps = 0

    # -- state -----------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Requests admitted and not yet ended."""
        return len(self._joining) + len(self._rows)

    @property
    def free_slots(self) -> int:
        return self.max_batch - self.active

    def keys(self) -> tuple[int, ...]:
        """Keys of the requests admitted and not yet ended."""
        return tuple(s.key for s in (*self._rows, *self._joining))

    # -- between steps ---------------------------------------------------------------

    def admit(self, key: int, prompt_ids: Sequence[int], params: GenerationParams) -> None:
        """Request ``key`` joins at the next step.

        Raises GenerationRequestError for an impossible request (as ``generate``),
        InvalidState when the batch is full or ``key`` is already in it.
        """
        import torch

        prompt = check_request(self.handle, prompt_ids, params)
        if self.free_slots <= 0:
            raise InvalidState(f"the batch is full ({self.max_batch} requests)")
        if key in self.keys():
            raise InvalidState(f"request {key} is already in the batch")
        rng = torch.Generator(device="cpu")
        rng.manual_seed(params.seed)
        self._joining.append(
            _Slot(key=key, prompt=prompt, params=params, rng=rng, stop=frozenset(params.stop_ids))
        )

    def cancel(self, key: int) -> bool:
        """Request ``key`` leaves at the next step, CANCELLED with its ids so far."""
        for slot in (*self._rows, *self._joining):
            if slot.key == key:
                slot.cancelled = True
                return True
        return False

    def abort(self) -> tuple[int, ...]:
        """Drop every request at once (after an unexpected error); their keys."""
        keys = self.keys()
        self._joining, self._rows, self._buffers = [], [], None
        self._release_memory()
        return keys

    # -- one step --------------------------------------------------------------------

    def step(self) -> list[StepEvent]:
        """One step: cancelled requests leave, running ones get their next id (one
        forward pass for all), joining ones are prefilled (their first id)."""
        events: list[StepEvent] = []
        for slot in [s for s in self._rows if s.cancelled]:
            self._leave(slot, FinishReason.CANCELLED, None, events)
        for slot in [s for s in self._joining if s.cancelled]:
            self._joining.remove(slot)
            slot.started = time.perf_counter()
            events.append(RequestEnded(slot.key, self._result(slot, FinishReason.CANCELLED, None)))
        if self._rows:
            self._decode(events)
        joining, self._joining = self._joining, []
        for slot in joining:
            self._prefill(slot, events)
        return events

    def _prefill(self, slot: _Slot, events: list[StepEvent]) -> None:
        import torch
        from transformers import DynamicCache

        model = self.handle.model
        slot.started = time.perf_counter()
        try:
            with torch.inference_mode():
                cache = DynamicCache(config=model.config)
                input_ids = torch.tensor([slot.prompt], dtype=torch.long, device=self.handle.device)
                out = model(
                    input_ids=input_ids,
                    use_cache=True,
                    logits_to_keep=1,
                    **cache_argument(model, cache),
                )
                token_id = pick_next_id(out.logits[0, -1], slot.params, slot.rng)
        except Exception as exc:  # reported through the result, as generate() does
            logger.debug("request %d: prefill failed", slot.key, exc_info=True)
            events.append(RequestEnded(slot.key, self._result(slot, FinishReason.ERROR, exc)))
            self._release_memory()
            return
        self.prefills += 1
        if self._took(slot, token_id, events):
            return
        row = len(self._rows)
        need = len(slot.prompt) + slot.params.max_new_tokens
        if self._buffers is None:
            self._buffers = _KvBuffers(cache, self.max_batch, need)
        elif need > self._buffers.positions:
            self._buffers.grow(
                max(need, min(2 * self._buffers.positions, self.handle.max_positions))
            )
        self._buffers.load(row, cache)
        self._rows.append(slot)

    def _decode(self, events: list[StepEvent]) -> None:
        import torch

        rows = list(self._rows)
        buffers = self._buffers
        if buffers is None:  # pragma: no cover - rows imply buffers
            raise InvalidState("running rows without a KV buffer")
        device = self.handle.device
        lengths = [s.cached + 1 for s in rows]
        try:
            with torch.inference_mode():
                input_ids = torch.tensor(
                    [[s.generated[-1]] for s in rows], dtype=torch.long, device=device
                )
                positions = torch.tensor(
                    [[s.cached] for s in rows], dtype=torch.long, device=device
                )
                cache = _StepCache(buffers, torch.arange(len(rows), device=device), positions[:, 0])
                with _step_mode(lengths, self.exact):
                    out = self.handle.model(
                        input_ids=input_ids,
                        position_ids=positions,
                        attention_mask=self._no_masks,
                        use_cache=True,
                        **cache_argument(self.handle.model, cache),
                        logits_to_keep=1,
                    )
                picked = [
                    pick_next_id(out.logits[i, -1], s.params, s.rng) for i, s in enumerate(rows)
                ]
        except Exception as exc:  # every running request ends ERROR, as generate() does
            logger.debug("batched step of %d requests failed", len(rows), exc_info=True)
            for slot in rows:
                self._leave(slot, FinishReason.ERROR, exc, events)
            self._release_memory()
            return
        self.decode_steps += 1
        for slot, token_id in zip(rows, picked, strict=True):
            if self._took(slot, token_id, events):
                self._remove_row(slot)

    def _took(self, slot: _Slot, token_id: int, events: list[StepEvent]) -> bool:
        """Record ``token_id``; True when the request ended with it (event given)."""
        if slot.first_at is None:
            slot.first_at = time.perf_counter()
        slot.generated.append(token_id)
        events.append(TokenMade(slot.key, token_id))
        reason: FinishReason | None = None
        if token_id in slot.stop:
            reason = FinishReason.STOP_ID
        elif len(slot.generated) >= slot.params.max_new_tokens:
            reason = FinishReason.MAX_TOKENS
        if reason is None:
            return False
        events.append(RequestEnded(slot.key, self._result(slot, reason, None)))
        return True

    def _leave(
        self, slot: _Slot, reason: FinishReason, exc: Exception | None, events: list[StepEvent]
    ) -> None:
        self._remove_row(slot)
        events.append(RequestEnded(slot.key, self._result(slot, reason, exc)))

    def _remove_row(self, slot: _Slot) -> None:
        """Free ``slot``'s row: the last row moves into it (rows stay 0..n-1)."""
        index = self._rows.index(slot)
        last = self._rows.pop()
        if last is not slot:
            self._rows[index] = last
            if self._buffers is not None:
                self._buffers.move(len(self._rows), index, last.cached + 1)

    def _release_memory(self) -> None:
        if self.handle.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    @staticmethod
    def _result(slot: _Slot, reason: FinishReason, exc: Exception | None) -> GenerationResult:
        ended = time.perf_counter()
        first = slot.first_at if slot.first_at is not None else ended
        failure: GenerationFailure | None = None if exc is None else describe_failure(exc)
        return GenerationResult(
            prompt_ids=slot.prompt,
            generated_ids=tuple(slot.generated),
            finish_reason=FinishReason.ERROR if exc is not None else reason,
            params=slot.params,
            timing=GenerationTiming(
                first_token_s=first - slot.started,
                decode_s=ended - first,
                tokens=len(slot.generated),
            ),
            error=failure,
        )


__all__ = [
    "BatchEngine",
    "BatchingUnsupported",
    "RequestEnded",
    "StepEvent",
    "TokenMade",
]
