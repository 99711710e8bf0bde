"""``linkstack cadu encode|decode``: TM frames to CADUs and back (CCSDS 131.0-B-5).

``encode`` reads concatenated TM Transfer Frames of N octets (default 223*I, or
239*I with ``--error-correction 8``) and writes one CADU per frame: ASM, then the
randomized Reed-Solomon codeblock.  Input that is not a whole number of frames is
encoded up to the last whole frame, then reported as an error (exit 1).

``decode`` reads a CADU stream in chunks (any alignment, leading garbage allowed),
writes the decoded frames as they come and one JSON line per codeblock on stderr;
it exits 0 when every codeblock decoded, 2 when some did not.

With ``--conv`` the CADUs also go through the convolutional code (131.0-B-5 section 3:
rate 1/2, K = 7, or punctured with ``--puncture``; NRZ-M at the encoder input with
``--nrzm``), one continuous stream from the all-zeros state and no tail, as a downlink
carries it.  ``encode --output`` and ``decode --input`` name the channel symbols:

* ``bytes``: coded bits packed eight to an octet, first bit in the most significant
  (encode pads the last octet with 0 bits);
* ``bits``: one coded bit per octet, 0 or 1 (GNU Radio's "unpacked" bytes);
* ``soft-f32``: one little-endian float32 per coded symbol, positive = bit 1 (GNU
  Radio's convention; encode writes +-1.0, decode takes any scale, 0 = erasure);
* ``soft-i8``: one int8 per coded symbol, the same convention (encode writes +-127);
* ``iq-symbols-c64``: one complex64 (float32 I, then Q) per QPSK channel symbol, I
  the first coded bit (encode pads an odd last bit with a 0 bit).

``decode --conv`` finds by itself which symbol starts a C1/C2 pair or a puncturing
period, a carrier off by 180 degrees (inverted symbols) or, for QPSK, 90 or 270, and
with ``--nrzm auto`` whether NRZ-M is in use: it runs one Viterbi decoder per
hypothesis until Attached Sync Markers one CADU apart show which one holds.  Its JSON
lines on stderr are of two kinds:

* one per CADU, with ``status`` (``decoded``, ``uncorrectable``, ``truncated``),
  ``offset`` (in coded symbols from the start of the input; two per QPSK symbol),
  ``corrected`` (R-S symbols corrected per codeword, -1 where uncorrectable),
  ``asm_errors`` (bit errors in its ASM) and ``hypothesis`` (``symbol_offset``,
  ``quarter_turn``, ``inverted``, ``nrzm``);
* one per synchronization change, with ``event``: ``locked`` (lock declared on
  ``hypothesis`` at coded symbol ``at_symbol``) or ``sync_lost`` (``flywheel``
  consecutive ASMs missed; ``at_symbol`` is the first unconfirmed one).

A stream whose end cuts a symbol (a float32 of fewer than 4 octets) or that holds an
octet other than 0 or 1 under ``--input bits`` is decoded up to that point, then
reported as an error (exit 1).  NaN is taken as an erasure; inf and huge values are
clipped.  Input in which no CADU is found is an error (exit 1); empty input is not.
``--puncture``, ``--nrzm`` and an ``--output`` / ``--input`` other than ``bytes`` are
usage errors without ``--conv`` (exit 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from linkstack.cli.main import EXIT_OK, EXIT_USAGE_OR_PARTIAL, CliError, Streams
from linkstack.coding.convolutional import (
    CODE_RATES,
    CodeRate,
    ConvolutionalEncoder,
    check_rate,
    unpack_bits,
)
from linkstack.coding.soft import (
    HypothesisLocked,
    NrzmMode,
    SoftCaduSynchronizer,
)
from linkstack.coding.tm import (
    Basis,
    CaduSynchronizer,
    CodeblockDropped,
    FrameDecoded,
    SyncLost,
    TmCodingConfig,
    encode_cadus,
)
from linkstack.console.base import UsageError, positive_int
from linkstack.errors import Dropped, LocalProtocolError

CHUNK = 64 * 1024
#: Coded symbols per read with --conv (64 KiB of packed bits; more octets for wider
#: formats), so that the R-S decoder gets a few CADUs at a time.
SYMBOLS_PER_READ: Final = 8 * CHUNK
_DEFAULTS = TmCodingConfig(interleave=1)

U8 = npt.NDArray[np.uint8]

#: Soft symbols written by ``--output soft-i8``: the full scale of a signed octet,
#: -128 left out so that 0 (an erasure) sits in the middle.
SOFT_I8_FULL_SCALE: Final = 127

#: Channel symbol formats of ``encode --output`` / ``decode --input``.
SYMBOL_FORMATS: Final = ("bytes", "bits", "soft-f32", "soft-i8", "iq-symbols-c64")
QPSK_FORMAT: Final = "iq-symbols-c64"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cadu`` command and its ``encode`` / ``decode`` sub-commands."""
    parser = subparsers.add_parser(
        "cadu", help="TM frames <-> CADUs (R-S, CCSDS 131.0-B-5)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    encode = actions.add_parser(
        "encode",
        help="concatenated TM frames on stdin -> CADUs on stdout",
        description="Concatenated TM frames on stdin -> CADUs on stdout; with --conv,\n"
        "the convolutionally coded symbols of the CADU stream in the --output format.",
    )
    _coding_options(encode)
    _conv_options(encode)
    encode.add_argument(
        "--nrzm",
        action="store_true",
        help="with --conv: NRZ-L to NRZ-M at the encoder input (131.0-B-5 3.3.3)",
    )
    encode.add_argument(
        "--output",
        choices=SYMBOL_FORMATS,
        default="bytes",
        help="with --conv: the coded symbols as packed bits (bytes, default), one bit"
        " per octet (bits), float32 or int8 soft symbols, positive = 1 (soft-f32,"
        " soft-i8) or QPSK complex64, I first (iq-symbols-c64)",
    )
    encode.set_defaults(handler=run_encode)

    decode = actions.add_parser(
        "decode",
        help="CADU stream on stdin -> TM frames on stdout, JSON report on stderr",
        description="CADU stream (with --conv: coded symbols in the --input format) on\n"
        "stdin -> TM frames on stdout, one JSON line per CADU on stderr; with --conv\n"
        'also a line with "event": "locked" or "sync_lost" at each synchronization\n'
        "change.  Exit 0 when every CADU decoded, 2 when some did not (see linkstack\n"
        "cadu --help for the formats and the JSON fields).",
    )
    _coding_options(decode)
    _conv_options(decode)
    decode.add_argument(
        "--nrzm",
        nargs="?",
        const="on",
        default=None,
        choices=("on", "auto"),
        metavar="auto",
        help="with --conv: the symbols carry NRZ-M (131.0-B-5 3.3.3), undone after the"
        " Viterbi decoder; --nrzm auto tries NRZ-L and NRZ-M both",
    )
    decode.add_argument(
        "--input",
        choices=SYMBOL_FORMATS,
        default="bytes",
        help="with --conv: coded symbols as packed hard bits (bytes, default), one bit"
        " per octet (bits), float32 or int8 soft symbols, positive = 1 (soft-f32,"
        " soft-i8) or QPSK complex64 symbols, I first (iq-symbols-c64)",
    )
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
    decode.add_argument(
        "--flywheel",
        type=positive_int,
        default=_DEFAULTS.flywheel,
        metavar="N",
        help=f"consecutive missed ASMs that lose lock; the blocks before are decoded on"
        f" the locked grid (default {_DEFAULTS.flywheel})",
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


def _conv_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conv",
        action="store_true",
        help="convolutional code around the CADUs (131.0-B-5 3.3: K=7, rate 1/2,"
        " continuous, no tail)",
    )
    parser.add_argument(
        "--puncture",
        choices=CODE_RATES,
        default=None,
        metavar="R",
        help=f"with --conv: code rate, one of {', '.join(CODE_RATES)} (default 1/2;"
        " the others are punctured, 131.0-B-5 3.4)",
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


def _check_conv_options(args: argparse.Namespace, symbols: str, flag: str) -> None:
    """Refuse the convolutional code's options without ``--conv``."""
    if args.conv:
        return
    given = [
        f"--puncture {args.puncture}" if args.puncture is not None else "",
        ("--nrzm auto" if args.nrzm == "auto" else "--nrzm") if args.nrzm else "",
        f"{flag} {symbols}" if symbols != "bytes" else "",
    ]
    named = [text for text in given if text]
    if named:
        raise UsageError(
            f"{' and '.join(named)} need{'s' if len(named) == 1 else ''} --conv (without"
            " it the CADUs are octets on the wire, not coded symbols)"
        )


def _rate(args: argparse.Namespace) -> CodeRate:
    return check_rate(args.puncture or "1/2")


def _read_chunk(stream: BinaryIO, size: int = CHUNK) -> bytes:
    read1 = getattr(stream, "read1", None)
    data = read1(size) if read1 is not None else stream.read(size)
    return bytes(data)


# --------------------------------------------------------------------------- encode


class _CodedOutput:
    """CADUs in, the channel symbols of one ``--output`` format out, as a stream: the
    encoder's register, puncturing phase and NRZ-M level carry from call to call, and
    so do coded bits that do not yet fill an octet (bytes) or a QPSK symbol."""

    def __init__(self, output: str, rate: CodeRate, *, nrzm: bool) -> None:
        self._encoder = ConvolutionalEncoder(rate, nrzm=nrzm)
        self._output = output
        self._unit = {"bytes": 8, QPSK_FORMAT: 2}.get(output, 1)  # coded bits per item
        self._spare: U8 = np.zeros(0, np.uint8)

    def encode(self, cadus: bytes) -> bytes:
        bits = self._encoder.encode(unpack_bits(cadus))
        if self._spare.size:
            bits = np.concatenate((self._spare, bits))
        whole = bits.size - bits.size % self._unit
        self._spare = bits[whole:].copy()
        return self._format(bits[:whole])

    def finish(self) -> bytes:
        """The coded bits left over, padded with 0 bits to a whole item."""
        if not self._spare.size:
            return b""
        padded = np.zeros(self._unit, np.uint8)
        padded[: self._spare.size] = self._spare
        self._spare = np.zeros(0, np.uint8)
        return self._format(padded)

    def _format(self, bits: U8) -> bytes:
        if self._output == "bytes":
            return np.packbits(bits).tobytes()
        if self._output == "bits":
            return bits.tobytes()
        if self._output == "soft-i8":
            return (
                np.where(bits == 1, SOFT_I8_FULL_SCALE, -SOFT_I8_FULL_SCALE)
                .astype(np.int8)
                .tobytes()
            )
        soft = bits.astype("<f4") * 2 - 1  # bit 1 -> +1.0, bit 0 -> -1.0
        if self._output == "soft-f32":
            return soft.tobytes()
        iq = np.empty(soft.size // 2, "<c8")  # QPSK: I = first bit, Q = second
        iq.real, iq.imag = soft[0::2], soft[1::2]
        return iq.tobytes()


def run_encode(args: argparse.Namespace, io: Streams) -> int:
    """One CADU per N-octet frame; a partial last frame fails after the whole ones."""
    config = _config(args)
    _check_conv_options(args, args.output, "--output")
    coder = _CodedOutput(args.output, _rate(args), nrzm=args.nrzm) if args.conv else None
    n_frame = config.frame_octets
    buffer = bytearray()
    frames = 0
    while True:
        chunk = _read_chunk(io.stdin)
        buffer += chunk
        whole = len(buffer) - len(buffer) % n_frame
        if whole:
            cadus = encode_cadus(bytes(buffer[:whole]), config)
            io.stdout.write(cadus if coder is None else coder.encode(cadus))
            io.stdout.flush()
            frames += whole // n_frame
            del buffer[:whole]
        if not chunk:
            break
    if coder is not None:
        io.stdout.write(coder.finish())
        io.stdout.flush()
    if buffer:
        raise CliError(
            f"input ends with {len(buffer)} octets that do not make a whole {n_frame}-octet"
            f" frame (at stream offset {frames * n_frame}); the {frames} whole frame(s)"
            " before them were encoded"
        )
    return EXIT_OK


# --------------------------------------------------------------------------- decode


def _report(io: Streams, record: dict[str, Any]) -> None:
    io.stderr.write(json.dumps(record, separators=(",", ":")) + "\n")


def _drain(next_event: Callable[[], object], io: Streams, *, sync_lines: bool) -> int:
    """Write the frames and JSON lines of the pending events; the count of drops."""
    failed = 0
    while (event := next_event()) is not None:
        if isinstance(event, FrameDecoded):
            io.stdout.write(event.frame)
            record: dict[str, Any] = {
                "offset": event.offset,
                "status": "decoded",
                "corrected": list(event.corrected),
                "asm_errors": event.asm_errors,
            }
            if event.hypothesis is not None:
                record["hypothesis"] = event.hypothesis.to_json()
            _report(io, record)
        elif isinstance(event, Dropped):
            failed += 1
            record = {"status": event.reason, "reason": event.reason}
            if isinstance(event, CodeblockDropped):
                record = {"offset": event.offset} | record
                if event.corrected:
                    record["corrected"] = list(event.corrected)
                record["asm_errors"] = event.asm_errors
                if event.hypothesis is not None:
                    record["hypothesis"] = event.hypothesis.to_json()
            record["detail"] = event.detail
            _report(io, record)
        elif sync_lines and isinstance(event, HypothesisLocked):
            _report(
                io,
                {
                    "event": "locked",
                    "at_symbol": event.at_symbol,
                    "hypothesis": event.hypothesis.to_json(),
                },
            )
        elif sync_lines and isinstance(event, SyncLost) and event.hypothesis is not None:
            _report(
                io,
                {
                    "event": "sync_lost",
                    "at_symbol": event.offset,
                    "hypothesis": event.hypothesis.to_json(),
                },
            )
    io.stdout.flush()
    return failed


def run_decode(args: argparse.Namespace, io: Streams) -> int:
    """Decode a CADU stream; exit 2 when some codeblock could not be decoded."""
    config = _config(
        args,
        asm_search_errors=args.asm_search_errors,
        asm_lock_errors=args.asm_lock_errors,
        flywheel=args.flywheel,
    )
    _check_conv_options(args, args.input, "--input")
    if args.conv:
        return _decode_symbols(args, io, config)
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
        failed += _drain(sync.next_event, io, sync_lines=False)
    if sync.stats.frames == 0 and failed == 0 and sync.stats.skipped_octets:
        raise CliError(
            f"no CADU found in {sync.stats.skipped_octets} octets (ASM 1ACFFC1D,"
            f" {config.cadu_length}-octet CADUs with these options)"
        )
    return EXIT_USAGE_OR_PARTIAL if failed else EXIT_OK


# -- channel symbols in --------------------------------------------------------------------

Symbols = npt.NDArray[Any]


def _packed_bits(data: bytes) -> tuple[Symbols, int | None]:
    hard = np.unpackbits(np.frombuffer(data, np.uint8)).view(np.int8)
    return hard * np.int8(2) - np.int8(1), None  # bit 1 -> +1, bit 0 -> -1


def _unpacked_bits(data: bytes) -> tuple[Symbols, int | None]:
    octets = np.frombuffer(data, np.uint8)
    bad = np.flatnonzero(octets > 1)
    first_bad = int(bad[0]) if bad.size else None
    hard = octets[:first_bad].view(np.int8)
    return hard * np.int8(2) - np.int8(1), first_bad


def _typed(dtype: str) -> Callable[[bytes], tuple[Symbols, int | None]]:
    def convert(data: bytes) -> tuple[Symbols, int | None]:
        return np.frombuffer(data, dtype), None

    return convert


@dataclass(frozen=True, slots=True)
class _InputFormat:
    octets: int  # octets per item on the wire
    what: str  # one item, in words
    #: Whole items -> synchronizer input, and the index of the first invalid octet.
    convert: Callable[[bytes], tuple[Symbols, int | None]]
    symbols: int = 1  # coded symbols per item

    @property
    def read_size(self) -> int:
        """Octets per read: ``SYMBOLS_PER_READ`` coded symbols."""
        return SYMBOLS_PER_READ * self.octets // self.symbols


_INPUTS: Final = {
    "bytes": _InputFormat(1, "octet of 8 hard bits", _packed_bits, symbols=8),
    "bits": _InputFormat(1, "bit", _unpacked_bits),
    "soft-f32": _InputFormat(4, "little-endian float32 soft symbol", _typed("<f4")),
    "soft-i8": _InputFormat(1, "int8 soft symbol", _typed("i1")),
    QPSK_FORMAT: _InputFormat(8, "little-endian complex64 QPSK symbol", _typed("<c8"), symbols=2),
}


class _SymbolReader:
    """Octets of one ``--input`` format in, whole symbols out; a symbol cut between two
    reads waits for the rest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.format = _INPUTS[name]
        self.octets = 0  # octets converted so far (whole items)
        self.part = b""  # the start of an item cut by the end of a read

    def feed(self, chunk: bytes) -> tuple[Symbols, str | None]:
        """Symbols of the whole items so far, and what is wrong with the input, if
        anything (the symbols then stop before it)."""
        data = self.part + chunk if self.part else chunk
        whole = len(data) - len(data) % self.format.octets
        self.part = data[whole:]
        symbols, first_bad = self.format.convert(data[:whole])
        if first_bad is None:
            self.octets += whole
            return symbols, None
        offset = self.octets + first_bad
        self.octets += first_bad
        return symbols, (
            f"octet 0x{data[first_bad]:02X} at stream offset {offset} is not a bit"
            f" (--input bits takes one 0 or 1 per octet); the {offset} symbols before it"
            " were decoded"
        )

    def leftover(self) -> str | None:
        """At end of input: the octets that do not make a whole symbol, in words."""
        if not self.part:
            return None
        return (
            f"input ends with {len(self.part)} octets that do not make a whole"
            f" {self.format.octets}-octet {self.format.what} (at stream offset"
            f" {self.octets}, --input {self.name}); the symbols before them were decoded"
        )


def _decode_symbols(args: argparse.Namespace, io: Streams, config: TmCodingConfig) -> int:
    """``decode --conv``: channel symbols through the soft synchronizer."""
    nrzm: NrzmMode = "auto" if args.nrzm == "auto" else args.nrzm == "on"
    rate = _rate(args)
    try:
        sync = SoftCaduSynchronizer(
            config,
            rate=rate,
            nrzm=nrzm,
            modulation="qpsk" if args.input == QPSK_FORMAT else "bpsk",
        )
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc
    reader = _SymbolReader(args.input)
    failed = 0
    problem: str | None = None
    while True:
        chunk = _read_chunk(io.stdin, reader.format.read_size)
        if chunk:
            symbols, problem = reader.feed(chunk)
            sync.receive_symbols(symbols)
        last = not chunk or problem is not None
        if last:
            sync.flush()
        failed += _drain(sync.next_event, io, sync_lines=True)
        if last:
            break
    problem = problem or reader.leftover()
    if problem is not None:
        raise CliError(problem)
    if sync.stats.frames == 0 and failed == 0 and sync.stats.symbols:
        raise CliError(
            f"no CADU found in {sync.stats.symbols} coded symbols (ASM 1ACFFC1D every"
            f" {config.cadu_length} octets, rate {rate}; {len(sync.hypotheses)}"
            " symbol alignments and phases tried with these options)"
        )
    return EXIT_USAGE_OR_PARTIAL if failed else EXIT_OK
