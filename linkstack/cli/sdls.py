"""``linkstack sdls protect|verify``: SDLS over frames on stdin (CCSDS 355.0-B-2).

Both read frames on stdin: TC Transfer Frames concatenated (self-delimiting through the
Frame Length field, CCSDS 232.0-B-4 4.1.2.7) with ``--link tc``, TM Transfer Frames of
``--frame-length`` octets with ``--link tm``.  The security associations and keys come
from ``--keys FILE`` (a linkstack key file, mode 0600); each frame's SCID and VCID come
from its own header.

``verify`` runs ProcessSecurity on each frame (SA by the frame's SPI, MAC, anti-replay
across the frames of the input) and writes each verified frame in the clear (its data
field decrypted, the Security Header and Trailer removed) on stdout.  ``protect`` runs
ApplySecurity under SA ``--spi`` (default: the key file's first SA of the link) with
IVs counted up from ``--iv``, on TM frames shorter by the SA's overhead (what
``verify`` writes); it never reads or writes counter files, so take the IVs
from a range no operational sender uses: an IV used twice under one key breaks AES-GCM.

One JSON line per frame goes to stderr: ``index``, ``offset``, ``spi``, ``iv`` (hex),
``arsn``, ``verdict`` (``ok`` or ``dropped``) and ``reason`` (``layer/reason`` of a
dropped frame, with ``detail``); then a summary line with ``frames``, ``ok`` and
``drops`` (count per reason).  Exit 0 when every frame passed, 2 when some were dropped
(a cut last frame included), 1 for a key file or option that cannot be used.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkstack.cli.main import EXIT_OK, EXIT_USAGE_OR_PARTIAL, CliError, Streams
from linkstack.errors import DecodeError, Layer, LocalProtocolError, RemoteProtocolError
from linkstack.sdls import (
    SPI_LENGTH,
    Link,
    SaTable,
    SecurityAssociation,
    TxCounter,
    protect_tc,
    protect_tm,
    unprotect_tc,
    unprotect_tm,
)
from linkstack.sdls.keystore import KeyFile, load_key_file
from linkstack.tc.frame import PRIMARY_HEADER_LENGTH as TC_PRIMARY_HEADER_LENGTH
from linkstack.tc.frame import TcFrame, TcVcConfig, peek_frame_length, peek_vcid
from linkstack.tm.frame import PRIMARY_HEADER_LENGTH as TM_PRIMARY_HEADER_LENGTH
from linkstack.tm.frame import TmChannelConfig, TmFrame


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sdls`` command and its ``protect`` / ``verify`` sub-commands."""
    parser = subparsers.add_parser(
        "sdls", help="protect or verify frames with SDLS (CCSDS 355.0-B-2)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    protect = actions.add_parser("protect", help="clear frames on stdin -> protected frames")
    _options(protect)
    protect.add_argument("--spi", type=int, default=None, help="SA to protect under")
    protect.add_argument(
        "--iv",
        type=lambda text: int(text, 0),
        required=True,
        metavar="N",
        help="IV (counter value) of the first frame, e.g. 5 or 0x5; one more per frame",
    )
    protect.set_defaults(handler=run_protect)
    verify = actions.add_parser("verify", help="protected frames on stdin -> clear frames")
    _options(verify)
    verify.set_defaults(handler=run_verify)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=Path, required=True, metavar="FILE", help="key file")
    parser.add_argument("--link", choices=["tc", "tm"], required=True, help="frame kind")
    parser.add_argument(
        "--segment-header",
        action="store_true",
        help="tc: frames carry the Segment Header (232.0-B-4 4.1.3.2)",
    )
    parser.add_argument(
        "--frame-length",
        type=int,
        default=None,
        metavar="N",
        help="tm: octets per frame (132.0-B-3 4.1.1.2); required with --link tm",
    )
    parser.add_argument(
        "--no-ocf", action="store_true", help="tm: frames carry no OCF (132.0-B-3 4.1.5)"
    )
    parser.add_argument(
        "--secondary-header-length",
        type=int,
        default=0,
        metavar="N",
        help="tm: secondary header data octets (132.0-B-3 4.1.3), default 0",
    )
    parser.add_argument(
        "--no-fecf", action="store_true", help="frames carry no FECF (232.0-B-4 4.1.4)"
    )


@dataclass(slots=True)
class _Job:
    args: argparse.Namespace
    io: Streams
    keys: KeyFile
    link: Link
    table: SaTable
    outcomes: Counter[str]
    frames: int = 0


def _load(args: argparse.Namespace, io: Streams) -> _Job:
    if args.link == "tm" and args.frame_length is None:
        raise CliError("--link tm needs --frame-length N")
    if args.link == "tc" and (
        args.frame_length is not None or args.no_ocf or args.secondary_header_length
    ):
        raise CliError("--frame-length, --no-ocf and --secondary-header-length are tm options")
    if args.link == "tm" and args.segment_header:
        raise CliError("--segment-header is a tc option")
    keys = load_key_file(args.keys)
    link = Link.TC if args.link == "tc" else Link.TM
    if not any(sa.link == link for sa in keys.sas):
        raise CliError(f"key file {args.keys} has no {link.name} security association")
    return _Job(args, io, keys, link, keys.sa_table(), Counter())


def _tc_config(args: argparse.Namespace, header: bytes) -> TcVcConfig:
    """The VC of this frame (its SCID and VCID) with the frame options; a frame shorter
    than its Frame Length field says is refused here as ``truncated``."""
    length = peek_frame_length(header)
    if length > len(header):
        raise DecodeError(
            Layer.TC_FRAME,
            "truncated",
            "CCSDS 232.0-B-4 4.1.2.7",
            f"frame length {length}, the input ends after {len(header)} octets",
        )
    scid = ((header[0] & 0x03) << 8) | header[1]  # 232.0-B-4 4.1.2.5
    return TcVcConfig(
        scid=scid,
        vcid=peek_vcid(header),
        segment_header=args.segment_header,
        fecf_present=not args.no_fecf,
    )


def _tm_config(args: argparse.Namespace, header: bytes, *, shorter: int = 0) -> TmChannelConfig:
    scid = (int.from_bytes(header[:2], "big") >> 4) & 0x3FF  # 132.0-B-3 4.1.2.2.3
    try:
        return TmChannelConfig(
            scid=scid,
            frame_length=args.frame_length - shorter,
            ocf_present=not args.no_ocf,
            fecf_present=not args.no_fecf,
            secondary_header_length=args.secondary_header_length,
        )
    except LocalProtocolError as exc:
        raise CliError(f"TM frame options: {exc}") from None


def _frames(job: _Job, tm_length: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, octets) of each frame on stdin (TM frames of ``tm_length`` octets); a
    cut last frame is yielded whole so that its parser reports it."""
    data = job.io.stdin.read()
    offset = 0
    while offset < len(data):
        if job.link == Link.TM:
            n = tm_length
        else:
            n = (
                peek_frame_length(data[offset:])
                if len(data) - offset >= TC_PRIMARY_HEADER_LENGTH
                else len(data) - offset
            )
        yield offset, bytes(data[offset : offset + n])
        offset += n


def _cut(got: int, length: int) -> DecodeError:
    return DecodeError(
        Layer.TM_FRAME,
        "truncated",
        "CCSDS 132.0-B-3 4.1.1.2",
        f"{got} octets, frames have {length}",
    )


def _security_fields(sa: SecurityAssociation | None, field_: bytes) -> dict[str, Any]:
    """SPI, IV and ARSN as they stand in a protected data field (for the JSON line)."""
    if len(field_) < SPI_LENGTH:
        return {"spi": None, "iv": None, "arsn": None}
    spi = int.from_bytes(field_[:SPI_LENGTH], "big")
    if sa is None or sa.spi != spi or len(field_) < sa.header_length:
        return {"spi": spi, "iv": None, "arsn": None}
    iv = field_[SPI_LENGTH : SPI_LENGTH + sa.iv_length]
    sn = field_[SPI_LENGTH + sa.iv_length : SPI_LENGTH + sa.iv_length + sa.sn_length]
    arsn = int.from_bytes(sn if sa.arsn_length == sa.sn_length and sa.sn_length else iv, "big")
    return {"spi": spi, "iv": iv.hex(), "arsn": arsn}


def _report(job: _Job, offset: int, fields: dict[str, Any], exc: Exception | None) -> None:
    line: dict[str, Any] = {"index": job.frames, "offset": offset, **fields}
    if exc is None:
        line["verdict"] = "ok"
        job.outcomes["ok"] += 1
    else:
        reason = (
            f"{exc.layer}/{exc.reason}" if isinstance(exc, RemoteProtocolError) else "sdls/misuse"
        )
        line.update(verdict="dropped", reason=reason, detail=str(getattr(exc, "detail", exc)))
        job.outcomes[reason] += 1
    job.frames += 1
    job.io.stderr.write(json.dumps(line) + "\n")


def _finish(job: _Job) -> int:
    drops = {k: v for k, v in sorted(job.outcomes.items()) if k != "ok"}
    summary = {"frames": job.frames, "ok": job.outcomes["ok"], "drops": drops}
    job.io.stderr.write(json.dumps(summary) + "\n")
    return EXIT_USAGE_OR_PARTIAL if drops else EXIT_OK


def _sa_of(job: _Job, field_: bytes) -> SecurityAssociation | None:
    spi = int.from_bytes(field_[:SPI_LENGTH], "big") if len(field_) >= SPI_LENGTH else None
    return job.table[spi] if spi is not None and spi in job.table else None


def run_verify(args: argparse.Namespace, io: Streams) -> int:
    job = _load(args, io)
    for offset, raw in _frames(job, args.frame_length or 0):
        fields: dict[str, Any] = {"spi": None, "iv": None, "arsn": None}
        try:
            if job.link == Link.TC:
                frame = TcFrame.from_bytes(raw, config=_tc_config(args, raw))
                fields = _security_fields(_sa_of(job, frame.data), frame.data)
                clear_tc = unprotect_tc(frame, job.table)
                out = clear_tc.to_bytes()
            else:
                if len(raw) < TM_PRIMARY_HEADER_LENGTH:
                    raise _cut(len(raw), args.frame_length)
                tm = TmFrame.from_bytes(raw, config=_tm_config(args, raw))
                fields = _security_fields(_sa_of(job, tm.data), tm.data)
                clear_tm = unprotect_tm(tm, job.table)
                out = clear_tm.to_bytes()
        except RemoteProtocolError as exc:
            _report(job, offset, fields, exc)
            continue
        io.stdout.write(out)
        _report(job, offset, fields, None)
    return _finish(job)


def _protect_sa(job: _Job, spi: int | None) -> SecurityAssociation:
    candidates = sorted(
        (sa for sa in job.keys.sas if sa.link == job.link and not sa.management),
        key=lambda sa: sa.spi,
    )
    if spi is None:
        if not candidates:
            raise CliError(f"key file {job.args.keys} has no {job.link.name} data SA")
        return candidates[0]
    if spi not in job.table or job.table[spi].link != job.link:
        raise CliError(f"--spi {spi}: no {job.link.name} SA with that SPI in {job.args.keys}")
    return job.table[spi]


def run_protect(args: argparse.Namespace, io: Streams) -> int:
    job = _load(args, io)
    sa = _protect_sa(job, args.spi)
    try:
        counter = TxCounter.for_sa(sa, next_value=args.iv)
    except LocalProtocolError as exc:
        raise CliError(f"--iv {args.iv}: {exc}") from None
    clear_length = (args.frame_length or 0) - sa.overhead
    for offset, raw in _frames(job, clear_length):
        fields: dict[str, Any] = {"spi": sa.spi, "iv": None, "arsn": None}
        try:
            if counter.remaining_reserved <= 0:
                counter.confirm_reservation(counter.plan_reservation(1024))
            if job.link == Link.TC:
                config = _tc_config(args, raw)
                frame = TcFrame.from_bytes(raw, config=config)
                done_tc = protect_tc(
                    frame, sa=sa, keys=job.keys.keys, counter=counter, config=config
                )
                out, field_ = done_tc.to_bytes(), done_tc.data
            else:
                if len(raw) < TM_PRIMARY_HEADER_LENGTH:
                    raise _cut(len(raw), clear_length)
                config_tm = _tm_config(args, raw)
                tm = TmFrame.from_bytes(raw, config=_tm_config(args, raw, shorter=sa.overhead))
                done_tm = protect_tm(
                    tm, sa=sa, keys=job.keys.keys, counter=counter, config=config_tm
                )
                out, field_ = done_tm.to_bytes(), done_tm.data
        except (RemoteProtocolError, LocalProtocolError) as exc:
            _report(job, offset, fields, exc)
            continue
        io.stdout.write(out)
        _report(job, offset, _security_fields(sa, field_), None)
    return _finish(job)
