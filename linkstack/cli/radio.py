"""``linkstack radio tx|rx``: TM frames to IQ samples and back (BPSK/QPSK, CCSDS 131.0-B-5).

``tx`` reads concatenated TM Transfer Frames of N octets (default 223*I) on stdin and
writes the samples of their coded downlink: Reed-Solomon, randomizer and ASM, the
convolutional code (rate 1/2, or punctured with ``--conv-rate``; NRZ-M at the encoder
input with ``--nrzm``), BPSK or QPSK with root-raised-cosine pulses at ``--sps``
samples per symbol.  Ahead of the first CADU go 1024 idle symbols and 1024 coded
bits of the CCSDS pseudo-random sequence, after the last 256 coded zero bits, so that
a receiver can lock.  The output is a SigMF recording (``--output REC``:
``REC.sigmf-meta`` and ``REC.sigmf-data``, sample rate = baud * sps, one annotation per
CADU at the peak of its first symbol, and the coding and modulation as
``linkstack:`` fields) or a bare IQ file (``--raw FILE``).  The samples are made and
written 64 frames at a time, so a long pass never sits in memory as samples, and
scaled to an rms level of 0.25 of full scale (computed from the symbol energy and the
noise, not measured).  For test signals ``--ebn0`` (dB per bit into the convolutional
encoder), ``--cfo-hz``, ``--clock-ppm`` and ``--phase`` impair them, seeded by
``--seed``; ``--doppler-pass`` adds the Doppler of an overhead LEO pass
(``linkstack.radio.channel.LeoPass``: ``--pass-carrier-hz``, default 2.2 GHz,
``--pass-altitude-km``, default 400 km, ``--pass-start-s``, the first sample's time
from culmination, by default half the recording before it) to the carrier and the
symbol clock, the full ramp: +-53 kHz and up to 1.02 kHz/s by default.  A recording
that would run below the horizon is refused.

``rx`` reads a recording (SigMF, or ``--raw`` with ``--samp-rate`` and
``--datatype``), demodulates it, finds the symbol alignment and the carrier phase
ambiguity, decodes, and writes the frames on stdout and one JSON line per CADU on
stderr: ``time_s`` (in the recording), ``sample``, ``status`` (``decoded``,
``uncorrectable``, ``truncated``), ``frequency_offset_hz`` and ``snr_db`` (Es/N0)
measured by the demodulator there, ``corrected`` (R-S symbols per codeword, -1
where uncorrectable), ``asm_errors`` and ``hypothesis``; and a line with ``event``
(``locked``, ``sync_lost``) at each synchronization change.  Options left out are
taken from the recording's ``linkstack:`` fields (what tx wrote), so
``radio tx ... --output REC`` then ``radio rx REC`` needs none repeated; options
given win over them.  A progress line is shown on stderr only when it is a terminal;
``--json-progress`` writes progress as JSON lines instead (``event``: ``progress``).
Exit 0 when every CADU decoded, 2 when some did not, 1 when the run failed (an
unreadable, empty or truncated recording, contradicting metadata, no CADU found).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt

from linkstack.cli.main import EXIT_OK, EXIT_USAGE_OR_PARTIAL, CliError, Streams
from linkstack.coding.convolutional import CODE_RATES, CodeRate, check_rate
from linkstack.coding.soft import NrzmMode
from linkstack.coding.tm import Basis, TmCodingConfig
from linkstack.console.base import UsageError, positive_int, positive_number
from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import LeoPass
from linkstack.radio.modem import (
    BITS_PER_SYMBOL,
    MODULATIONS,
    Impairments,
    Modulation,
    PassChannel,
)
from linkstack.radio.receiver import (
    DEFAULT_LEAD_BITS,
    DEFAULT_RAMP_SYMBOLS,
    DEFAULT_TAIL_BITS,
    CaduReceived,
    IqReceiver,
    IqTransmitter,
    SyncChanged,
    code_rate_value,
)
from linkstack.radio.recording import (
    CaduAnnotation,
    Datatype,
    ExtensionValue,
    RecordingMeta,
    TruncatedRecording,
)
from linkstack.radio.sigmf_files import (
    DEFAULT_CHUNK,
    Recording,
    read_raw_iq,
    read_recording,
    write_raw_iq,
    write_recording,
)

#: rms level of the written samples, of full scale (12 dB of headroom for the peaks of
#: the SRRC pulses and the noise, and many codes for ci8/cu8).
TX_RMS: Final = 0.25
#: Relative tolerance of core:sample_rate against linkstack:symbol_rate * sps.
RATE_TOLERANCE: Final = 1e-6
_CHUNK: Final = DEFAULT_CHUNK
#: Frames made into samples and written at a time by tx.
_TX_BATCH: Final = 64


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``radio`` command and its ``tx`` / ``rx`` sub-commands."""
    parser = subparsers.add_parser(
        "radio", help="TM frames <-> IQ samples (BPSK/QPSK, SigMF)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    tx = actions.add_parser(
        "tx",
        help="concatenated TM frames on stdin -> a SigMF recording or raw IQ",
        description="Concatenated TM frames on stdin -> the samples of their coded\n"
        "BPSK/QPSK downlink, as a SigMF recording (one annotation per CADU) or raw IQ.",
    )
    tx.add_argument("--interleave", type=int, required=True, metavar="I", help="R-S depth I")
    tx.add_argument(
        "--frame-length", type=int, default=None, metavar="N", help="frame octets (default 223*I)"
    )
    tx.add_argument("--modulation", choices=MODULATIONS, default="bpsk", help="default bpsk")
    tx.add_argument("--sps", type=positive_int, default=4, metavar="N", help="samples per symbol")
    tx.add_argument(
        "--baud", type=positive_number, required=True, metavar="B", help="symbols per second"
    )
    tx.add_argument(
        "--rolloff", type=float, default=0.35, metavar="R", help="SRRC roll-off (default 0.35)"
    )
    tx.add_argument("--conv-rate", choices=CODE_RATES, default="1/2", metavar="R", help="code rate")
    tx.add_argument("--nrzm", action="store_true", help="NRZ-M at the encoder input (3.3.3)")
    tx.add_argument(
        "--ebn0", type=float, default=None, metavar="DB", help="add noise: Eb/N0 per bit, dB"
    )
    tx.add_argument("--cfo-hz", type=float, default=0.0, metavar="F", help="carrier offset, Hz")
    tx.add_argument(
        "--clock-ppm", type=float, default=0.0, metavar="P", help="symbol clock offset, ppm"
    )
    tx.add_argument(
        "--phase",
        default="0",
        metavar="DEG",
        help="carrier phase in degrees, or 'random' (drawn from --seed); default 0",
    )
    tx.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the impairments")
    tx.add_argument(
        "--doppler-pass",
        action="store_true",
        help="the Doppler of an overhead LEO pass on the carrier and the symbol clock",
    )
    tx.add_argument(
        "--pass-carrier-hz",
        type=positive_number,
        default=None,
        metavar="F",
        help="the pass's carrier frequency (default 2.2e9)",
    )
    tx.add_argument(
        "--pass-altitude-km",
        type=positive_number,
        default=None,
        metavar="KM",
        help="the circular orbit's altitude (default 400)",
    )
    tx.add_argument(
        "--pass-start-s",
        type=float,
        default=None,
        metavar="S",
        help="time of the first sample from culmination (default: centred on it)",
    )
    out = tx.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", metavar="REC", help="SigMF recording REC[.sigmf-meta]")
    out.add_argument("--raw", metavar="FILE", help="bare IQ file (no metadata)")
    tx.add_argument(
        "--datatype",
        choices=[d.value for d in Datatype],
        default=Datatype.CF32_LE.value,
        help="sample format (default cf32_le)",
    )
    tx.add_argument("--force", action="store_true", help="replace existing files")
    tx.set_defaults(handler=run_tx)

    rx = actions.add_parser(
        "rx",
        help="a recording -> TM frames on stdout, JSON report on stderr",
        description="A SigMF recording (or raw IQ) -> TM frames on stdout, one JSON line\n"
        "per CADU on stderr.  Options left out come from the recording's linkstack:\n"
        "fields.  Exit 0 when every CADU decoded, 2 when some did not.",
    )
    rx.add_argument("recording", metavar="RECORDING", help="REC[.sigmf-meta], or FILE with --raw")
    rx.add_argument("--raw", action="store_true", help="RECORDING is bare IQ (needs --samp-rate)")
    rx.add_argument(
        "--samp-rate", type=positive_number, default=None, metavar="R", help="raw IQ sample rate"
    )
    rx.add_argument("--datatype", default=None, metavar="T", help="raw IQ format (default cf32_le)")
    rx.add_argument("--interleave", type=int, default=None, metavar="I", help="R-S depth I")
    rx.add_argument("--frame-length", type=int, default=None, metavar="N", help="frame octets")
    rx.add_argument("--modulation", choices=MODULATIONS, default=None, help="bpsk or qpsk")
    rx.add_argument("--sps", type=positive_int, default=None, metavar="N", help="samples/symbol")
    rx.add_argument("--rolloff", type=float, default=None, metavar="R", help="SRRC roll-off")
    rx.add_argument("--conv-rate", choices=CODE_RATES, default=None, metavar="R", help="code rate")
    rx.add_argument(
        "--nrzm",
        nargs="?",
        const="on",
        default=None,
        choices=("on", "auto"),
        metavar="auto",
        help="NRZ-M in use (3.3.3); --nrzm auto tries NRZ-L and NRZ-M both",
    )
    rx.add_argument("--json-progress", action="store_true", help="progress as JSON lines on stderr")
    rx.set_defaults(handler=run_rx)


# --------------------------------------------------------------------------- tx


def _config(interleave: int, frame_length: int | None) -> TmCodingConfig:
    try:
        return TmCodingConfig(interleave=interleave, frame_length=frame_length, basis=Basis.DUAL)
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc


def _phase(text: str, rng: np.random.Generator) -> float:
    if text == "random":
        return float(rng.uniform(0.0, 2.0 * math.pi))
    try:
        degrees = float(text)
    except ValueError:
        raise UsageError(f"--phase {text!r} is neither degrees nor 'random'") from None
    if not math.isfinite(degrees):
        raise UsageError(f"--phase {text!r} is not a finite number of degrees")
    return math.radians(degrees)


def _pass_geometry(args: argparse.Namespace, duration_s: float) -> tuple[LeoPass | None, float]:
    """The pass asked for with --doppler-pass, and the time of the first sample on its
    axis (culmination at 0); refuses a recording that would run below the horizon."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("pass_carrier_hz", "pass_altitude_km", "pass_start_s")
        if getattr(args, name) is not None
    ]
    if not args.doppler_pass:
        if given:
            raise UsageError(f"{', '.join(given)} need --doppler-pass")
        return None, 0.0
    carrier = 2.2e9 if args.pass_carrier_hz is None else args.pass_carrier_hz
    altitude_km = 400.0 if args.pass_altitude_km is None else args.pass_altitude_km
    try:
        geometry = LeoPass(carrier_hz=carrier, altitude_m=altitude_km * 1e3)
    except LocalProtocolError as exc:
        raise UsageError(f"--doppler-pass: {exc}") from exc
    start = -duration_s / 2.0 if args.pass_start_s is None else args.pass_start_s
    half = geometry.half_pass_s
    if not math.isfinite(start) or start < -half or start + duration_s > half:
        raise UsageError(
            f"--pass-start-s {start:g} with {duration_s:.3f} s of signal runs outside the"
            f" pass: a {altitude_km:g} km orbit is above the horizon from {-half:.1f} s to"
            f" {half:.1f} s around culmination"
        )
    return geometry, start


def run_tx(args: argparse.Namespace, io: Streams) -> int:
    """Frames on stdin -> a recording, made and written a batch of frames at a time
    (a 10-minute pass never sits in memory as samples); refuses a partial frame and
    bad options before writing anything."""
    config = _config(args.interleave, args.frame_length)
    rate = check_rate(args.conv_rate)
    data = io.stdin.read()
    n_frame = config.frame_octets
    if not data:
        raise CliError("no frames on stdin: a recording needs at least one frame")
    if len(data) % n_frame:
        raise CliError(
            f"input ends with {len(data) % n_frame} octets that do not make a whole"
            f" {n_frame}-octet frame (after {len(data) // n_frame} whole frames);"
            " nothing written"
        )
    try:
        transmitter = IqTransmitter(
            config,
            rate=rate,
            nrzm=args.nrzm,
            modulation=args.modulation,
            sps=args.sps,
            rolloff=args.rolloff,
        )
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc
    sample_rate = float(args.baud) * args.sps
    count = len(data) // n_frame
    bits_per_symbol = BITS_PER_SYMBOL[transmitter.modulation]
    coded_bits = (8 * config.cadu_length * count + DEFAULT_LEAD_BITS + DEFAULT_TAIL_BITS) / float(
        code_rate_value(rate)
    )
    duration_s = (DEFAULT_RAMP_SYMBOLS + coded_bits / bits_per_symbol) / float(args.baud)
    geometry, start_s = _pass_geometry(args, duration_s)
    rng = np.random.default_rng(args.seed)
    phase = _phase(args.phase, rng)
    impairments = Impairments(
        clock_ppm=args.clock_ppm,
        offset_hz=args.cfo_hz,
        phase=phase,
        ebn0_db=args.ebn0,
        code_rate=float(code_rate_value(rate)),
    )
    try:
        channel = PassChannel(
            impairments,
            sample_rate=sample_rate,
            modulation=args.modulation,
            sps=args.sps,
            rng=rng,
            geometry=geometry,
            start_s=start_s,
        )
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc
    # Modulator output has unit-energy symbols through a unit-energy pulse: 1/sps per
    # sample, plus the noise's N0.  Scaled from these rather than measured, so that
    # the first chunk can be written before the last is made.
    scale = TX_RMS / math.sqrt(1.0 / args.sps + channel.noise_power)
    notes: list[CaduAnnotation] = []

    def place(note: CaduAnnotation) -> CaduAnnotation:
        start = channel.received_index(note.sample_start)
        end = channel.received_index(note.sample_start + (note.sample_count or 0))
        return CaduAnnotation(
            sample_start=max(0, round(start)),
            sample_count=max(1, round(end - start)),
            comment=note.comment,
            vcid=note.vcid,
            vc_count=note.vc_count,
        )

    def chunks() -> Iterator[npt.NDArray[np.complex64]]:
        for first in range(0, len(data), _TX_BATCH * n_frame):
            block = transmitter.transmit(data[first : first + _TX_BATCH * n_frame])
            notes.extend(place(note) for note in block.annotations)
            yield (channel.process(block.samples) * scale).astype(np.complex64)
        yield (channel.process(transmitter.flush()) * scale).astype(np.complex64)
        yield (channel.flush() * scale).astype(np.complex64)

    def kept() -> Iterator[CaduAnnotation]:  # read once every sample is written
        return (note for note in notes if note.sample_end <= channel.samples_out)

    if args.raw is not None:
        write_raw_iq(args.raw, chunks(), args.datatype, force=args.force)
        return EXIT_OK
    extensions: dict[str, ExtensionValue] = {
        "modulation": args.modulation,
        "sps": args.sps,
        "symbol_rate": float(args.baud),
        "rolloff": float(args.rolloff),
        "interleave": config.interleave,
        "frame_length": n_frame,
        "conv_rate": rate,
        "nrzm": bool(args.nrzm),
    }
    if geometry is not None:
        extensions |= {
            "pass_carrier_hz": geometry.carrier_hz,
            "pass_altitude_m": geometry.altitude_m,
            "pass_start_s": start_s,
        }
    meta = RecordingMeta(
        sample_rate=sample_rate,
        datatype=Datatype(args.datatype),
        description=f"linkstack radio tx: {count} CADUs, {args.modulation}, rate {rate}"
        + ("" if geometry is None else f", LEO pass from {start_s:g} s"),
        extensions=extensions,
    )
    write_recording(args.output, chunks(), meta, _Deferred(kept), force=args.force)
    return EXIT_OK


class _Deferred:
    """An iterable whose items are made when it is iterated (the annotations, known
    only once the samples are written)."""

    def __init__(self, make: Callable[[], Iterator[CaduAnnotation]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[CaduAnnotation]:
        return self._make()


# --------------------------------------------------------------------------- rx


@dataclass(frozen=True, slots=True)
class _RxSettings:
    config: TmCodingConfig
    modulation: Modulation
    sps: int
    rolloff: float
    rate: CodeRate
    nrzm: NrzmMode


def _field(recording: Recording, name: str, kind: type | tuple[type, ...]) -> Any:
    value = recording.meta.extensions.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        value = None
    if not isinstance(value, kind):
        raise CliError(
            f"{recording.meta_path}: linkstack:{name} is {recording.meta.extensions[name]!r},"
            f" not a {getattr(kind, '__name__', 'value')} as linkstack radio tx writes it"
        )
    return value


def _settings(args: argparse.Namespace, recording: Recording) -> _RxSettings:
    """Options, else the recording's linkstack: fields, else the defaults."""
    meta_modulation = _field(recording, "modulation", str)
    if meta_modulation is not None and meta_modulation not in MODULATIONS:
        raise CliError(
            f"{recording.meta_path}: linkstack:modulation {meta_modulation!r} is not one of"
            f" {', '.join(MODULATIONS)}"
        )
    meta_sps = _field(recording, "sps", int)
    symbol_rate = _field(recording, "symbol_rate", (int, float))
    if meta_sps is not None and symbol_rate is not None:
        expected = float(symbol_rate) * meta_sps
        rate_hz = recording.meta.sample_rate
        if abs(expected - rate_hz) > RATE_TOLERANCE * rate_hz:
            raise CliError(
                f"{recording.meta_path}: contradicting metadata: core:sample_rate {rate_hz:g}"
                f" Hz is not linkstack:symbol_rate {float(symbol_rate):g} * linkstack:sps"
                f" {meta_sps} = {expected:g} Hz"
            )
    meta_rate = _field(recording, "conv_rate", str)
    if meta_rate is not None and meta_rate not in CODE_RATES:
        raise CliError(f"{recording.meta_path}: linkstack:conv_rate {meta_rate!r} is unknown")
    interleave = args.interleave or _field(recording, "interleave", int)
    if interleave is None:
        raise UsageError(
            "--interleave is needed: the recording does not say (linkstack:interleave)"
        )
    frame_length = args.frame_length or _field(recording, "frame_length", int)
    meta_nrzm = _field(recording, "nrzm", bool)
    nrzm: NrzmMode = (
        "auto" if args.nrzm == "auto" else True if args.nrzm == "on" else bool(meta_nrzm)
    )
    rolloff = args.rolloff if args.rolloff is not None else _field(recording, "rolloff", float)
    return _RxSettings(
        config=_config(interleave, frame_length),
        modulation=args.modulation or meta_modulation or "bpsk",
        sps=args.sps or meta_sps or 4,
        rolloff=0.35 if rolloff is None else float(rolloff),
        rate=check_rate(args.conv_rate or meta_rate or "1/2"),
        nrzm=nrzm,
    )


def _open(args: argparse.Namespace) -> Recording:
    if args.raw:
        if args.samp_rate is None:
            raise UsageError("--raw needs --samp-rate (a bare IQ file does not say its rate)")
        return read_raw_iq(
            args.recording, samp_rate=args.samp_rate, datatype=args.datatype or "cf32_le"
        )
    for option in ("samp_rate", "datatype"):
        if getattr(args, option) is not None:
            raise UsageError(
                f"--{option.replace('_', '-')} is for --raw files; a SigMF recording says it"
            )
    return read_recording(args.recording)


def _number(value: float) -> float | None:
    """JSON has no infinities: a figure not yet known is null."""
    return round(value, 3) if math.isfinite(value) else None


def _report(stream: TextIO, record: dict[str, Any]) -> None:
    stream.write(json.dumps(record, separators=(",", ":")) + "\n")


class _Progress:
    """A carriage-return line on a terminal; JSON lines with --json-progress; else nothing."""

    def __init__(self, stream: TextIO, *, as_json: bool, duration_s: float) -> None:
        self._stream = stream
        self._json = as_json
        self._tty = not as_json and _isatty(stream)
        self._duration = duration_s
        self._shown = False

    def update(self, time_s: float, frames: int) -> None:
        if self._json:
            _report(
                self._stream,
                {
                    "event": "progress",
                    "time_s": round(time_s, 6),
                    "duration_s": round(self._duration, 6),
                    "frames": frames,
                },
            )
        elif self._tty:
            percent = 100.0 * time_s / self._duration if self._duration else 100.0
            self._stream.write(
                f"\rrx {percent:5.1f} %  {time_s:.2f} / {self._duration:.2f} s  {frames} frames"
            )
            self._stream.flush()
            self._shown = True

    def clear(self) -> None:
        """Wipe the line before a report line or at the end."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_rx(args: argparse.Namespace, io: Streams) -> int:
    """A recording -> frames; exit 2 when some CADU could not be decoded."""
    recording = _open(args)
    settings = _settings(args, recording)
    try:
        receiver = IqReceiver(
            settings.config,
            sample_rate=recording.meta.sample_rate,
            rate=settings.rate,
            nrzm=settings.nrzm,
            modulation=settings.modulation,
            sps=settings.sps,
            rolloff=settings.rolloff,
        )
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc
    progress = _Progress(io.stderr, as_json=args.json_progress, duration_s=recording.duration_s)
    frames = failed = 0
    position = 0

    def drain() -> None:
        nonlocal frames, failed
        while (event := receiver.next_event()) is not None:
            progress.clear()
            if isinstance(event, CaduReceived):
                if event.frame is not None:
                    io.stdout.write(event.frame)
                    frames += 1
                else:
                    failed += 1
                record: dict[str, Any] = {
                    "time_s": round(event.time_s, 6),
                    "sample": event.sample,
                    "status": event.status,
                    "frequency_offset_hz": _number(event.frequency_offset_hz),
                    "snr_db": _number(event.snr_db),
                    "corrected": list(event.corrected),
                    "asm_errors": event.asm_errors,
                    "hypothesis": None if event.hypothesis is None else event.hypothesis.to_json(),
                }
                if event.detail:
                    record["detail"] = event.detail
                _report(io.stderr, record)
            elif isinstance(event, SyncChanged):
                _report(
                    io.stderr,
                    {
                        "event": event.event,
                        "time_s": round(event.time_s, 6),
                        "sample": event.sample,
                        "hypothesis": None
                        if event.hypothesis is None
                        else event.hypothesis.to_json(),
                    },
                )
        io.stdout.flush()

    try:
        for chunk in recording.iter_samples(_CHUNK):
            receiver.receive_samples(chunk)
            position += chunk.size
            drain()
            progress.update(position / recording.meta.sample_rate, frames)
        receiver.flush()
        drain()
    finally:
        progress.clear()
    stats = receiver.stats
    invalid = stats.demodulator.invalid_samples
    nan_note = (
        f" ({invalid} of {stats.samples} samples were NaN or infinite, read as zeros)"
        if invalid
        else ""
    )
    for problem in recording.problems:
        if isinstance(problem, TruncatedRecording):
            raise CliError(
                f"{problem}; the {problem.whole_samples} whole samples gave {frames} frames"
            )
    if frames == 0 and failed == 0:
        raise CliError(
            f"no CADU found in {stats.samples} samples ({recording.duration_s:.3f} s,"
            f" {settings.modulation}, sps {settings.sps}, rate {settings.rate},"
            f" I={settings.config.interleave}){nan_note}"
        )
    if invalid:
        io.stderr.write(f"linkstack: warning:{nan_note}\n")
    return EXIT_USAGE_OR_PARTIAL if failed else EXIT_OK


__all__ = ["register", "run_rx", "run_tx"]
