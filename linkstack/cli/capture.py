"""``linkstack capture info FILE``: what a linkstack pcapng capture holds.

``capture info`` counts the recorded units per direction (CLTUs, CADUs, Space
Packets), their octets and time span, then decodes the CLTUs (CCSDS 231.0-B-4,
232.0-B-4) and the CADUs (CCSDS 131.0-B-5, 132.0-B-3) with the link configuration
recorded in the capture's metadata: frames per Virtual Channel, packets per APID,
Reed-Solomon corrections, uncorrectable codeblocks and drops by reason.  A recording
cut short (a crash, ``kill -9``) is read up to its last whole block, with a line
saying what was cut.  ``--json`` prints the same as one JSON object.  A file that is
not a readable linkstack capture is an error (exit 1, one line on stderr).

"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping

from linkstack.capture import (
    CaptureError,
    CaptureSummary,
    read_capture,
    summarize,
)
from linkstack.cli.main import EXIT_OK, CliError, Streams

__all__ = ["register", "run_info"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``capture`` command and its ``info`` sub-command."""
    parser = subparsers.add_parser(
        "capture", help="inspect linkstack pcapng captures", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="summarise a capture: units, times, decoding, errors")
    info.add_argument("file", metavar="FILE", help="a .pcapng written by linkstack")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=run_info)


def run_info(args: argparse.Namespace, io: Streams) -> int:
    try:
        with open(args.file, "rb") as stream:
            capture = read_capture(stream)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except CaptureError as exc:
        raise CliError(f"{args.file}: {exc}") from exc
    try:
        summary = summarize(capture)
    except CaptureError as exc:
        raise CliError(f"{args.file}: {exc}") from exc
    if args.json:
        text = json.dumps({"file": args.file, **summary.to_json()}, indent=2) + "\n"
    else:
        text = _text(args.file, summary)
    io.stdout.write(text.encode())
    return EXIT_OK


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "none"


def _vcs(counts: Counter[int]) -> str:
    return _counts({str(vcid): n for vcid, n in sorted(counts.items())})


def _apids(counts: Counter[int]) -> str:
    return _counts({f"0x{apid:03X}": n for apid, n in sorted(counts.items())})


def _text(path: str, summary: CaptureSummary) -> str:
    lines = [
        f"capture {path}",
        f"  written by linkstack {summary.linkstack_version}, Python {summary.python_version}",
    ]
    if summary.truncated is not None:
        lines.append(f"  {summary.truncated}")
    reference = summary.time_reference
    if reference is not None:
        lines.append(f"  started: {reference.utc} (Unix {reference.unix_s:.6f} s); times from it")
    metadata = summary.metadata
    for key in ("profile", "seed"):
        if key in metadata:
            lines.append(f"  {key}: {metadata[key]}")
    if not summary.link_from_metadata:
        lines.append("  link configuration: not in the metadata, decoded with the defaults")
    elif isinstance(link := metadata.get("link"), Mapping):
        lines.append(f"  link: {json.dumps(link, sort_keys=True)}")
    first, last = summary.first_t, summary.last_t
    if first is None or last is None:
        lines.append("  no units recorded")
    else:
        lines.append(f"  time: {first:.9f} .. {last:.9f} s ({last - first:.6f} s)")
    for name, side in summary.directions.items():
        lines.append(
            f"  {name}: {sum(side.units.values())} units, {sum(side.octets.values())} octets"
            f" ({_counts({k: side.units[k] for k in sorted(side.units)})})"
        )
    lines += [
        "  uplink decoded:",
        f"    TC frames per VC: {_vcs(summary.tc_frames_per_vc)}",
        f"    packets per APID: {_apids(summary.tc_packets_per_apid)}",
        f"    BCH corrected bits: {summary.tc_corrected_bits}",
        "  downlink decoded:",
        f"    TM frames per VC: {_vcs(summary.tm_frames_per_vc)}",
        f"    packets per APID: {_apids(summary.tm_packets_per_apid)}",
        f"    R-S corrected symbols: {summary.rs_corrected_symbols},"
        f" uncorrectable codeblocks: {summary.rs_uncorrectable},"
        f" sync losses: {summary.sync_losses}, frames lost: {summary.tm_frames_lost}",
    ]
    for name, counts in summary.recorded_packets_per_apid.items():
        lines.append(f"  recorded {name} packets per APID: {_apids(counts)}")
    lines.append(f"  drops: {_counts(dict(sorted(summary.drops.items())))}")
    return "\n".join(lines) + "\n"
