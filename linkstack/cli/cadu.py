"""``linkstack cadu encode|decode``: TM frames to CADUs and back (CCSDS 131.0-B-5).

``encode`` reads concatenated TM Transfer Frames of N octets (default 223*I, or
239*I with ``--error-correction 8``) and writes one CADU per frame: ASM, then the
randomized Reed-Solomon codeblock.  Input that is not a whole number of frames is
encoded up to the last whole frame, then reported as an error (exit 1).

``decode`` reads a CADU stream in chunks (any alignment, leading garbage allowed),
writes the decoded frames as they come and one JSON line per codeblock on stderr;
it exits 0 when every codeblock decoded, 2 when some did not.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, BinaryIO

from linkstack.cli.main import EXIT_OK, EXIT_USAGE_OR_PARTIAL, CliError, Streams
from linkstack.coding.tm import (
    Basis,
    CaduSynchronizer,
    CodeblockDropped,
    FrameDecoded,
    TmCodingConfig,
    encode_cadus,
)
from linkstack.console.base import UsageError
from linkstack.errors import Dropped, LocalProtocolError

CHUNK = 64 * 1024
_DEFAULTS = TmCodingConfig(interleave=1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cadu`` command and its ``encode`` / ``decode`` sub-commands."""
    parser = subparsers.add_parser(
        "cadu", help="TM frames <-> CADUs (R-S, CCSDS 131.0-B-5)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    encode = actions.add_parser("encode", help="concatenated TM frames on stdin -> CADUs on stdout")
    _coding_options(encode)
    encode.set_defaults(handler=run_encode)

    decode = actions.add_parser(
        "decode", help="CADU stream on stdin -> TM frames on stdout, JSON report on stderr"
    )
    _coding_options(decode)
    decode.add_argument(
        "--asm-search-errors",
        type=int,
        default=_DEFAULTS.asm_search_errors,
        help=f"ASM bit errors tolerated while searching (default {_DEFAULTS.asm_search_errors})",
    )
    decode.add_argument(
        "--asm-lock-errors",
        type=int,
        default=_DEFAULTS.asm_lock_errors,
        help=f"ASM bit errors tolerated once locked (default {_DEFAULTS.asm_lock_errors})",
    )
    decode.set_defaults(handler=run_decode)


def _coding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interleave",
        type=int,
        required=True,
        metavar="I",
        help="R-S interleaving depth: 1, 2, 3, 4, 5 or 8 (131.0-B-5 4.3.5)",
    )
    parser.add_argument(
        "--frame-length",
        type=int,
        default=None,
        metavar="N",
        help="TM frame octets (default k*I; shorter frames use virtual fill, 4.3.7)",
    )
    parser.add_argument(
        "--error-correction",
        type=int,
        default=16,
        metavar="E",
        help="R-S correction capability: 16 (default) or 8 symbols (4.3.1)",
    )
    parser.add_argument(
        "--basis",
        choices=[b.value for b in Basis],
        default=Basis.DUAL.value,
        help="R-S symbol basis on the wire (default dual, as 4.3.9 mandates)",
    )
    parser.add_argument(
        "--no-randomize",
        action="store_true",
        help="do not apply the pseudo-randomizer (131.0-B-5 10)",
    )


def _config(args: argparse.Namespace, **sync: int) -> TmCodingConfig:
    try:
        return TmCodingConfig(
            interleave=args.interleave,
            error_correction=args.error_correction,
            frame_length=args.frame_length,
            basis=Basis(args.basis),
            randomize=not args.no_randomize,
            **sync,
        )
    except LocalProtocolError as exc:  # a value the options cannot take: usage
        raise UsageError(str(exc)) from exc


def _read_chunk(stream: BinaryIO) -> bytes:
    read1 = getattr(stream, "read1", None)
    data = read1(CHUNK) if read1 is not None else stream.read(CHUNK)
    return bytes(data)


def run_encode(args: argparse.Namespace, io: Streams) -> int:
    """One CADU per N-octet frame; a partial last frame fails after the whole ones."""
    config = _config(args)
    n_frame = config.frame_octets
    buffer = bytearray()
    frames = 0
    while True:
        chunk = _read_chunk(io.stdin)
        buffer += chunk
        whole = len(buffer) - len(buffer) % n_frame
        if whole:
            io.stdout.write(encode_cadus(bytes(buffer[:whole]), config))
            io.stdout.flush()
            frames += whole // n_frame
            del buffer[:whole]
        if not chunk:
            break
    if buffer:
        raise CliError(
            f"input ends with {len(buffer)} octets that do not make a whole {n_frame}-octet"
            f" frame (at stream offset {frames * n_frame}); the {frames} whole frame(s)"
            " before them were encoded"
        )
    return EXIT_OK


def _report(io: Streams, record: dict[str, Any]) -> None:
    io.stderr.write(json.dumps(record, separators=(",", ":")) + "\n")


def run_decode(args: argparse.Namespace, io: Streams) -> int:
    """Decode a CADU stream; exit 2 when some codeblock could not be decoded."""
    config = _config(
        args, asm_search_errors=args.asm_search_errors, asm_lock_errors=args.asm_lock_errors
    )
    sync = CaduSynchronizer(config)
    failed = 0
    done = False
    while not done:
        chunk = _read_chunk(io.stdin)
        if chunk:
            sync.receive_bytes(chunk)
        else:
            sync.flush()
            done = True
        while (event := sync.next_event()) is not None:
            if isinstance(event, FrameDecoded):
                io.stdout.write(event.frame)
                _report(
                    io,
                    {
                        "offset": event.offset,
                        "status": "decoded",
                        "corrected": list(event.corrected),
                        "asm_errors": event.asm_errors,
                    },
                )
            elif isinstance(event, Dropped):
                failed += 1
                record: dict[str, Any] = {"status": event.reason, "reason": event.reason}
                if isinstance(event, CodeblockDropped):
                    record = {"offset": event.offset} | record
                    if event.corrected:
                        record["corrected"] = list(event.corrected)
                record["detail"] = event.detail
                _report(io, record)
        io.stdout.flush()
    if sync.stats.frames == 0 and failed == 0 and sync.stats.skipped_octets:
        raise CliError(
            f"no CADU found in {sync.stats.skipped_octets} octets (ASM 1ACFFC1D,"
            f" {config.cadu_length}-octet CADUs with these options)"
        )
    return EXIT_USAGE_OR_PARTIAL if failed else EXIT_OK
