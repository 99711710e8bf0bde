"""Command-line options every program shares, so that their ids can be compared.

``linkstack demo``, ``onboard generate``, ``onboard serve`` and ``groundstation ask``
take the same generation flags with the same defaults and turn them into the same wire
parameters (docs/protocol.md §4): a link run and the reference run then agree id for
id.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from linkstack.inference_protocol import GenerationParams


def add_generation_options(parser: argparse.ArgumentParser, *, seed_help: str = "") -> None:
    """``--seed --max-new-tokens --temperature --top-p --no-chat``."""
    parser.add_argument(
        "--seed", type=int, default=0, help=seed_help or "sampling seed (default 0)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="default 64")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="0 = greedy (default); a multiple of 0.001",
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, metavar="P", help="default 1.0; a multiple of 0.001"
    )
    parser.add_argument(
        "--no-chat", action="store_true", help="encode PROMPT as is, without the chat template"
    )


def wire_params(args: argparse.Namespace) -> GenerationParams:
    """The wire parameters of the parsed flags; raises LocalProtocolError naming a bad one."""
    from linkstack.inference_protocol import GenerationParams

    return GenerationParams.from_floats(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
