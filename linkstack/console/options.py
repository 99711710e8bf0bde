"""Command-line options every program shares, so that their ids can be compared.

``linkstack demo``, ``onboard generate``, ``onboard serve`` and ``groundstation ask``
take the same generation flags with the same defaults and turn them into the same wire
parameters (docs/protocol.md §4): a link run and the reference run then agree id for
id.  Values the link cannot carry are refused here, in the user's words (``--top-p 0``),
before anything is loaded.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Final

from linkstack.console.base import UsageError
from linkstack.inference.protocol import MAX_NEW_TOKENS, MILLI

if TYPE_CHECKING:
    from linkstack.inference.protocol import GenerationParams

#: The wire carries temperature and top-p in thousandths (docs/protocol.md §4).
_MAX_TEMPERATURE: Final = 0xFFFF / MILLI  # u16 temperature_milli
_MAX_SEED: Final = (1 << 64) - 1  # u64 seed


def add_generation_options(parser: argparse.ArgumentParser, *, seed_help: str = "") -> None:
    """``--seed --max-new-tokens --temperature --top-p --no-chat``."""
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help=seed_help or "sampling seed, 0..2**64-1 (default 0)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        metavar="N",
        help=f"ids to generate at most, 1..{MAX_NEW_TOKENS} (default 64)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help=f"0 = greedy (default); up to {_MAX_TEMPERATURE:g}, a multiple of 0.001",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        metavar="P",
        help="nucleus sampling mass, 0.001..1 (default 1.0), a multiple of 0.001",
    )
    parser.add_argument(
        "--no-chat", action="store_true", help="encode PROMPT as is, without the chat template"
    )


def _thousandths(option: str, value: float, low: float, high: float) -> int:
    if not (math.isfinite(value) and low <= value <= high):
        raise UsageError(f"{option} {value:g} must be in {low:g}..{high:g}")
    milli = round(value * MILLI)
    if milli / MILLI != value:  # exact, as the wire codec requires
        raise UsageError(f"{option} {value:g} is not a multiple of 0.001")
    return milli


def wire_params(args: argparse.Namespace) -> GenerationParams:
    """The wire parameters of the parsed flags; raises :class:`UsageError` naming the
    option the user typed."""
    from linkstack.inference.protocol import GenerationParams

    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens} must be in 1..{MAX_NEW_TOKENS}")
    if not 0 <= args.seed <= _MAX_SEED:
        raise UsageError(f"--seed {args.seed} must be in 0..{_MAX_SEED}")
    return GenerationParams(
        max_new_tokens=args.max_new_tokens,
        temperature_milli=_thousandths("--temperature", args.temperature, 0.0, _MAX_TEMPERATURE),
        top_p_milli=_thousandths("--top-p", args.top_p, 1 / MILLI, 1.0),
        seed=args.seed,
    )
