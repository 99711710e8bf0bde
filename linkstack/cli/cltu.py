"""``linkstack cltu encode|decode``: TC frames to CLTUs and back (CCSDS 231.0-B-4).

``encode`` reads concatenated TC Transfer Frames (self-delimiting through the Frame
Length field, CCSDS 232.0-B-4 4.1.2.7) and writes one CLTU per frame.  ``decode`` reads
a CLTU octet stream in chunks, writes the TC frames (fill removed using the decoded
frame's own length field) and one JSON line per CLTU on stderr; it exits 0 when every
CLTU gave a frame, 2 when some were rejected.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, BinaryIO

from linkstack.cli.main import EXIT_OK, EXIT_USAGE_OR_PARTIAL, CliError, Streams
from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu
from linkstack.errors import DecodeError, Dropped
from linkstack.tc.frame import peek_frame_length

CHUNK = 64 * 1024
#: TC Transfer Frame primary header: the octets ``peek_frame_length`` needs.
PRIMARY_HEADER_LEN = 5  # CCSDS 232.0-B-4 4.1.2.1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cltu`` command and its ``encode`` / ``decode`` sub-commands."""
    parser = subparsers.add_parser(
        "cltu", help="TC frames <-> CLTUs (BCH, CCSDS 231.0-B-4)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    encode = actions.add_parser("encode", help="concatenated TC frames on stdin -> CLTUs on stdout")
    encode.add_argument(
        "--randomize", action="store_true", help="apply the TC randomizer (231.0-B-4 6)"
    )
    encode.set_defaults(handler=run_encode)

    decode = actions.add_parser(
        "decode", help="CLTU stream on stdin -> TC frames on stdout, JSON report on stderr"
    )
    decode.add_argument(
        "--randomize", action="store_true", help="derandomize decoded data (231.0-B-4 6)"
    )
    decode.add_argument(
        "--mode",
        choices=[m.value for m in DecoderMode],
        default=DecoderMode.CORRECT.value,
        help="codeblock decoding: single-error correction or detection only (default correct)",
    )
    decode.add_argument(
        "--start-sequence-errors",
        type=int,
        choices=[0, 1],
        default=0,
        help="bit errors tolerated in the start sequence (default 0)",
    )
    decode.set_defaults(handler=run_decode)


def _read_chunk(stream: BinaryIO) -> bytes:
    read1 = getattr(stream, "read1", None)
    data = read1(CHUNK) if read1 is not None else stream.read(CHUNK)
    return bytes(data)


def run_encode(args: argparse.Namespace, io: Streams) -> int:
    """One CLTU per TC frame; a truncated last frame fails after the whole ones."""
    buffer = bytearray()
    offset = 0  # stream offset of buffer[0]
    while True:
        chunk = _read_chunk(io.stdin)
        buffer += chunk
        start = 0
        while len(buffer) - start >= PRIMARY_HEADER_LEN:
            length = peek_frame_length(bytes(buffer[start : start + PRIMARY_HEADER_LEN]))
            if len(buffer) - start < length:
                break
            frame = bytes(buffer[start : start + length])
            io.stdout.write(encode_cltu(frame, randomize=args.randomize))
            start += length
        del buffer[:start]
        offset += start
        if not chunk:
            break
    io.stdout.flush()
    if buffer:
        if len(buffer) < PRIMARY_HEADER_LEN:
            need = f"a {PRIMARY_HEADER_LEN}-octet primary header"
        else:
            need = f"{peek_frame_length(bytes(buffer[:PRIMARY_HEADER_LEN]))} octets"
        raise CliError(
            f"truncated TC frame at stream offset {offset}: {len(buffer)} octets left, "
            f"its header needs {need} (CCSDS 232.0-B-4 4.1.2.7)"
        )
    return EXIT_OK


def _report(io: Streams, record: dict[str, Any]) -> None:
    io.stderr.write(json.dumps(record, separators=(",", ":")) + "\n")


def _frame_from(event: CltuDecoded) -> tuple[bytes | None, dict[str, Any]]:
    """The TC frame in a decoded CLTU and its report; no frame when it does not fit."""
    record: dict[str, Any] = {
        "codeblocks": event.codeblocks,
        "corrected_bits": event.corrected_bits,
        "ended_by_tail": event.ended_by_tail,
    }
    data = event.data
    try:
        length = peek_frame_length(data[:PRIMARY_HEADER_LEN])
    except DecodeError as exc:
        record |= {"status": "rejected", "reason": "frame-truncated", "detail": exc.detail}
        return None, record
    record["frame_octets"] = length
    if length > len(data):
        detail = f"frame length field says {length} octets, CLTU carried {len(data)}"
        record |= {"status": "rejected", "reason": "frame-truncated", "detail": detail}
        return None, record
    fill = len(data) - length
    if fill >= 7:  # one codeblock holds 7 octets: more fill means a wrong length field
        detail = f"frame length field says {length} octets, CLTU carried {len(data)}"
        record |= {"status": "rejected", "reason": "length-mismatch", "detail": detail}
        return None, record
    record |= {"status": "ok", "fill_octets": fill}
    return data[:length], record


def run_decode(args: argparse.Namespace, io: Streams) -> int:
    """Decode a CLTU stream in chunks; exit 2 when any CLTU was rejected."""
    decoder = CltuDecoder(
        DecoderMode(args.mode),
        randomize=args.randomize,
        start_sequence_errors=args.start_sequence_errors,
    )
    index = 0
    rejected = 0

    def drain() -> None:
        nonlocal index, rejected
        while (event := decoder.next_event()) is not None:
            if isinstance(event, Dropped):
                record: dict[str, Any] = {
                    "status": "rejected",
                    "reason": event.reason,
                    "clause": event.clause,
                    "detail": event.detail,
                }
                frame = None
            else:
                frame, record = _frame_from(event)
            if frame is None:
                rejected += 1
            else:
                io.stdout.write(frame)
            _report(io, {"cltu": index, **record})
            index += 1
        io.stdout.flush()

    while chunk := _read_chunk(io.stdin):
        decoder.receive_bytes(chunk)
        drain()
    decoder.channel_deactivation()  # end of input: E2
    drain()
    return EXIT_USAGE_OR_PARTIAL if rejected else EXIT_OK
