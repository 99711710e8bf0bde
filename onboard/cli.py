"""``onboard`` command: the spacecraft side of linkstack.

``onboard generate PROMPT`` runs the model on the spot, with no link: the
reference that any link run must reproduce id for id.  With ``--json`` it prints
one JSON object (``prompt_ids``, ``generated_ids``, ``text``, ``finish_reason``,
``error``, ``model``, ``params``) and nothing time-dependent; without it, it
streams the text and prints a one-line summary with the timing on stderr.

Exit status: 0 success, 1 a model that cannot be loaded or a generation that
failed (a message on stderr, never a traceback), 2 bad options, 130 interrupted.
torch and transformers are imported only once the options have parsed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from linkstack.errors import LinkError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """Options that parse but make no sense together: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard", description="Spacecraft side of linkstack: Qwen-3 onboard."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate", help="generate from a prompt on the spot (no link): the reference run"
    )
    gen.add_argument("prompt", metavar="PROMPT", help="prompt text")
    gen.add_argument(
        "--model",
        default="embedded",
        metavar="SPEC",
        help='"embedded" (default), "qwen3-0.6b-shape", or a local checkpoint directory',
    )
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    gen.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="default 64")
    gen.add_argument(
        "--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)"
    )
    gen.add_argument("--top-p", type=float, default=1.0, metavar="P", help="default 1.0")
    gen.add_argument(
        "--no-chat", action="store_true", help="encode PROMPT as is, without the chat template"
    )
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    gen.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on CUDA, float32 on CPU",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(handler=_generate)

    # The `serve` sub-command (the onboard end of the link) is registered here by
    # the link server module; it does not exist yet.
    return parser


def _generate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from onboard.generation import (
        FinishReason,
        GenerationParams,
        GenerationRequestError,
        generate,
    )
    from onboard.model import load_model

    try:
        params = GenerationParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
    except GenerationRequestError as exc:
        raise _UsageError(str(exc)) from exc
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    tokenizer = handle.tokenizer
    prompt_ids = tokenizer.encode_prompt(args.prompt, chat=not args.no_chat)
    try:
        if args.json:
            result = generate(handle, prompt_ids, params)
        else:
            decoder = tokenizer.incremental_decoder(skip_special=True)

            def show(token_id: int) -> None:
                stdout.write(decoder.push([token_id]))
                stdout.flush()

            result = generate(handle, prompt_ids, params, on_token=show)
            stdout.write(decoder.flush() + "\n")
    except GenerationRequestError as exc:
        raise _UsageError(str(exc)) from exc
    error = None if result.error is None else f"{result.error.kind}: {result.error.message}"
    if args.json:
        record: dict[str, Any] = {
            "model": handle.spec,
            "params": {
                "max_new_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
                "chat": not args.no_chat,
                "stop_ids": list(handle.stop_ids),
            },
            "prompt_ids": list(result.prompt_ids),
            "generated_ids": list(result.generated_ids),
            "text": tokenizer.decode(result.generated_ids, skip_special=True),
            "finish_reason": str(result.finish_reason),
            "error": error,
        }
        stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        timing = result.timing
        stderr.write(
            f"onboard: {result.finish_reason}, {timing.tokens} ids, "
            f"first id {timing.first_token_s * 1e3:.0f} ms, "
            f"{timing.decode_tokens_per_s:.1f} ids/s ({handle.description})\n"
        )
    if result.finish_reason is FinishReason.ERROR:
        stderr.write(f"onboard: generation failed: {error}\n")
        return EXIT_FAILED
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``onboard`` console script."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    try:
        return int(args.handler(args, out, err))
    except _UsageError as exc:
        err.write(f"onboard: {exc}\n")
        return EXIT_USAGE
    except LinkError as exc:
        err.write(f"onboard: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
