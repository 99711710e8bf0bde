"""Packet captures of a linkstack session: pcapng files of the radio boundary.

One capture file (pcapng, IETF draft-ietf-opsawg-pcapng, "the draft" below) holds one
section whose Section Header Block carries the session metadata as JSON in its
comment (:mod:`linkstack.capture.metadata`), and three interfaces:

====  ==================  ==================  ==========================================
 id   if_name             link type           what each Enhanced Packet Block holds
====  ==================  ==================  ==========================================
 0    linkstack-uplink    LINKTYPE_USER0 147  one CLTU as the recording side saw it
 1    linkstack-downlink  LINKTYPE_USER1 148  one CADU as the recording side saw it
 2    linkstack-packets   LINKTYPE_IPV4  228  one decoded Space Packet in a UDP datagram
====  ==================  ==================  ==========================================

This module is the file format: :class:`CaptureWriter` writes it, :func:`read_capture`
reads it back into a :class:`Capture` of :class:`~linkstack.capture.units.Unit`.  The
UDP/IPv4 datagrams (RFC 791, RFC 768) are :mod:`linkstack.capture.datagrams`; cutting
the file into whole blocks, and a recording's cut tail, :mod:`linkstack.capture.framing`;
decoding a capture's units again, :mod:`linkstack.capture.summary`.

The metadata's ``side`` says which end recorded, and each interface's
``if_description`` says it in words: a ground recording holds the CLTUs as the ground
sent them and the CADUs as it received them, bit errors included; a spacecraft
recording the CLTUs as received and the CADUs as sent.  Directions are the ground
station's on either side, in ``epb_flags`` (draft 4.3.1): uplink CLTUs and uplink (TC)
packets are *outbound*, downlink CADUs and (TM) packets *inbound*.  Space Packets
travel between documentation addresses (RFC 5737) on a Dynamic port, so Wireshark
dissects them with no plugin.

Time: the recorder's clock is monotonic (an event loop's), which says nothing about the
date.  A writer given a :class:`TimeReference` (the wall clock and the recorder's clock
read at the same moment, the session's start) records each ``t`` as Unix time,
``unix_ns + (t - clock_s)``, in integer nanoseconds (``if_tsresol`` 9), so Wireshark
shows the real date while the order stays the monotonic clock's; the reference is
written into the metadata (``time_reference``) and :func:`read_capture` gives each
unit's ``t`` back as seconds since the start, to the nanosecond.  Without a reference
(older captures) ``t`` is stored and read back as it was given: it equals the one
written whenever ``t`` is the float nearest a whole number of nanoseconds, or is at
least 2**23 s, where the float spacing is coarser than 1 ns.

Crashes: each block goes to the stream in one ``write`` followed by a ``flush``, so a
recorder killed mid-session (``kill -9``) leaves every block it wrote whole but the one
being written.  :func:`read_capture` reads such a file up to its last whole block and
says what it dropped (:class:`~linkstack.capture.framing.TruncatedTail`); any other
damage is a :class:`~linkstack.capture.CaptureError`.

Library: python-pcapng (2.1.1) writes and reads the whole block model we need
(Section Header options and comments, several Interface Description Blocks each
with its own link type, ``if_tsresol``, Enhanced Packet Blocks with ``epb_flags`` and
comments); scapy's pcapng writer writes neither Section Header options nor
``if_description``/``if_tsresol`` and imports a whole packet toolkit, and dpkt's pcapng
Reader takes the first interface's link type for every packet, so it cannot read a
multi-interface file back.  python-pcapng writes a block in four ``write`` calls and
never flushes, so the writer has it encode each block into memory and writes the
block itself; the reader cuts the file into whole blocks itself (draft 3.1) and hands
python-pcapng only whole blocks to parse.  The tests read our files again with dpkt's
block classes and with tshark, as independent readers.

Sans-I/O: the caller opens the stream and reads the clocks; this module reads and
writes only the stream it is given.  Keys never enter a capture: metadata keys that
look like key material are refused with :class:`~linkstack.capture.SecretInMetadata`.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import struct
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Final

import pcapng  # type: ignore[import-untyped]
import pcapng.exceptions  # type: ignore[import-untyped]
from pcapng import blocks

from linkstack import __version__
from linkstack.capture.datagrams import (
    GROUND_ADDRESS,
    MAX_DATAGRAM_PAYLOAD,
    PACKET_UDP_PORT,
    SPACECRAFT_ADDRESS,
    packet_from_datagram,
    packet_to_datagram,
)
from linkstack.capture.errors import CaptureError
from linkstack.capture.framing import PCAPNG_MAGIC, BlockFramer, BlockStream, TruncatedTail
from linkstack.capture.metadata import check_no_secrets, link_config_from_metadata
from linkstack.capture.units import Direction, Unit, UnitKind
from linkstack.endpoints import LinkConfig
from linkstack.errors import LinkError, LocalProtocolError
from linkstack.packets.space_packet import peek_packet_length

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LINKTYPE_IPV4",
    "LINKTYPE_USER0",
    "LINKTYPE_USER1",
    "TIME_REFERENCE_KEY",
    "Capture",
    "CaptureWriter",
    "TimeReference",
    "interface_descriptions",
    "read_cadu_file",
    "read_capture",
]

# ----------------------------------------------------------------------------- constants

FORMAT: Final = "linkstack-capture"
FORMAT_VERSION: Final = 1

# Link types, https://www.tcpdump.org/linktypes.html
LINKTYPE_USER0: Final = 147  # reserved for private use: uplink CLTUs
LINKTYPE_USER1: Final = 148  # reserved for private use: downlink CADUs
LINKTYPE_IPV4: Final = 228  # raw IPv4, the packet begins with an IPv4 header

_TSRESOL_NS: Final = b"\x09"  # if_tsresol: 10**-9 s (draft 4.2, option 9)
_NS_PER_S: Final = 10**9
_MAX_NS: Final = (1 << 64) - 1  # 64-bit timestamp (draft 4.3)
_MAX_OPTION_OCTETS: Final = 0xFFFF  # 16-bit Option Length (draft 3.5)
_PCAP_MAGICS: Final = {  # libpcap file header magic, both byte orders, us and ns
    bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1")
}
_EPB_INBOUND: Final = 1  # epb_flags bits 0-1 (draft 4.3.1)
_EPB_OUTBOUND: Final = 2

#: The metadata entry the writer adds for its :class:`TimeReference`.
TIME_REFERENCE_KEY: Final = "time_reference"


@dataclass(frozen=True, slots=True)
class _Interface:
    kind: UnitKind
    name: str
    link_type: int


_INTERFACES: Final = (
    _Interface(UnitKind.CLTU, "linkstack-uplink", LINKTYPE_USER0),
    _Interface(UnitKind.CADU, "linkstack-downlink", LINKTYPE_USER1),
    _Interface(UnitKind.PACKET, "linkstack-packets", LINKTYPE_IPV4),
)
_BY_KIND: Final = {iface.kind: index for index, iface in enumerate(_INTERFACES)}

_CLTU_BOOK: Final = "CCSDS 231.0-B-4"
_CADU_BOOK: Final = "CCSDS 131.0-B-5"
_PACKET_BOOK: Final = "CCSDS 133.0-B-2"
_DATAGRAMS: Final = (
    f"in UDP/IPv4, port {PACKET_UDP_PORT}, ground {GROUND_ADDRESS}, spacecraft {SPACECRAFT_ADDRESS}"
)
#: ``if_description`` of each interface (draft 4.2, option 3) for the side that
#: recorded (the metadata's ``side``; None when it names neither).
_DESCRIPTIONS: Final[Mapping[str | None, Mapping[UnitKind, str]]] = {
    "ground": {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}) as sent by the ground, one per packet",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}) as received by the ground, bit errors"
        " included, one per packet (on a TCP link: the stream as each read returned it)",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) sent and received whole by the"
        f" ground, {_DATAGRAMS}",
    },
    "spacecraft": {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}) as received by the spacecraft, bit errors"
        " included, one per packet; outbound: directions are the ground's",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}) as sent by the spacecraft, one per"
        " packet; inbound: directions are the ground's",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) sent and received whole by the"
        f" spacecraft, {_DATAGRAMS}; directions are the ground's",
    },
    None: {
        UnitKind.CLTU: f"Uplink CLTUs ({_CLTU_BOOK}), one per packet",
        UnitKind.CADU: f"Downlink CADUs ({_CADU_BOOK}), one per packet",
        UnitKind.PACKET: f"Space Packets ({_PACKET_BOOK}) {_DATAGRAMS}",
    },
}


def interface_descriptions(side: object) -> dict[str, str]:
    """``if_name`` -> ``if_description`` the writer gives a recording by ``side``
    ("ground", "spacecraft", anything else for neither)."""
    key = side if isinstance(side, str) and side in _DESCRIPTIONS else None
    by_kind = _DESCRIPTIONS[key]
    return {iface.name: by_kind[iface.kind] for iface in _INTERFACES}


# ----------------------------------------------------------------------------- time


@dataclass(frozen=True, slots=True)
class TimeReference:
    """Where a session's clock stands in Unix time: at its start, the wall clock read
    ``unix_ns`` and the recorder's (monotonic) clock read ``clock_s``.

    A writer given one records ``t`` as ``unix_ns + (t - clock_s)`` nanoseconds (Unix
    time, UTC), and :func:`read_capture` gives ``t`` back as seconds since the start.
    """

    #: Wall clock at the start: nanoseconds since 1970-01-01T00:00:00Z.
    unix_ns: int
    #: The recorder's clock at that moment, seconds (``loop.time()``).
    clock_s: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.unix_ns, bool) or not isinstance(self.unix_ns, int):
            raise LocalProtocolError(f"unix_ns {self.unix_ns!r} is not an integer")
        if not 0 <= self.unix_ns <= _MAX_NS:
            raise LocalProtocolError(
                f"unix_ns {self.unix_ns} outside 0..{_MAX_NS}, the 64-bit timestamp (draft 4.3)"
            )
        if not (isinstance(self.clock_s, int | float) and math.isfinite(self.clock_s)):
            raise LocalProtocolError(f"clock_s {self.clock_s!r} is not a finite number of seconds")

    @property
    def unix_s(self) -> float:
        """The start in Unix seconds."""
        return self.unix_ns / _NS_PER_S

    @property
    def utc(self) -> str:
        """The start in ISO 8601, UTC, to the nanosecond: ``2025-06-01T12:00:00.000000001Z``."""
        seconds, ns = divmod(self.unix_ns, _NS_PER_S)
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"

    def to_json(self) -> dict[str, object]:
        """The metadata entry :data:`TIME_REFERENCE_KEY`."""
        return {
            "unix_ns": self.unix_ns,
            "unix_s": self.unix_s,
            "utc": self.utc,
            "clock_s": self.clock_s,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> TimeReference | None:
        """The reference a capture's metadata names, None if it names none.

        Raises :class:`CaptureError` when the entry is there but does not parse.
        """
        entry = metadata.get(TIME_REFERENCE_KEY)
        if entry is None:
            return None
        try:
            if not isinstance(entry, Mapping):
                raise TypeError(f"it is a {type(entry).__name__}, not an object")
            clock_s = entry.get("clock_s", 0.0)
            if isinstance(clock_s, bool) or not isinstance(clock_s, int | float):
                raise TypeError(f"clock_s {clock_s!r} is not a number")
            return cls(unix_ns=entry["unix_ns"], clock_s=float(clock_s))
        except (KeyError, TypeError, LocalProtocolError) as exc:
            raise CaptureError(
                f"{TIME_REFERENCE_KEY} in the metadata does not parse: {exc}", offset=0
            ) from exc


# ----------------------------------------------------------------------------- writing


def _python_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _timestamp_ns(t: float, reference: TimeReference | None) -> int:
    """``t`` as the 64-bit nanosecond timestamp (draft 4.3, ``if_tsresol`` 9): Unix time
    with a reference, ``t`` itself without."""
    if not (isinstance(t, int | float) and math.isfinite(t)):
        raise LocalProtocolError(f"time t={t!r} is not a finite number of seconds")
    if reference is None:
        ns = round(Fraction(t) * _NS_PER_S)
    else:
        ns = reference.unix_ns + round((Fraction(t) - Fraction(reference.clock_s)) * _NS_PER_S)
    if not 0 <= ns <= _MAX_NS:
        since = "" if reference is None else f" ({reference.unix_ns} ns + t - {reference.clock_s})"
        raise LocalProtocolError(
            f"time t={t} s gives a timestamp of {ns} ns{since}, outside 0..{_MAX_NS}"
            f" ({_MAX_NS / _NS_PER_S:.0f} s, the 64-bit timestamp, draft 4.3)"
        )
    return ns


class CaptureWriter:
    """Writes one capture to a binary stream the caller opened (and closes).

    The Section Header (with the metadata) and the three Interface Description
    Blocks are written at construction, each ``record_*`` call one Enhanced Packet
    Block: each time in one ``write`` of whole blocks, then a ``flush``, so a capture
    cut short by a crash is readable up to its last whole block.

    ``time_reference`` (the session's start in wall-clock and recorder-clock time)
    makes the timestamps Unix time and goes into the metadata as
    :data:`TIME_REFERENCE_KEY`, which the caller's metadata must not hold.  The
    metadata's ``side`` ("ground" or "spacecraft") chooses the interface descriptions.
    """

    def __init__(
        self,
        stream: BinaryIO,
        metadata: Mapping[str, object],
        *,
        time_reference: TimeReference | None = None,
    ) -> None:
        check_no_secrets(metadata)
        if TIME_REFERENCE_KEY in metadata:
            raise LocalProtocolError(
                f"metadata key {TIME_REFERENCE_KEY!r} is the writer's own: pass"
                " time_reference=TimeReference(...) instead"
            )
        if time_reference is not None and not isinstance(time_reference, TimeReference):
            raise LocalProtocolError(f"time_reference {time_reference!r} is not a TimeReference")
        recorded = dict(metadata)
        if time_reference is not None:
            recorded[TIME_REFERENCE_KEY] = time_reference.to_json()
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "linkstack": __version__,
            "python": _python_version(),
            "metadata": recorded,
        }
        try:
            comment = json.dumps(header, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"metadata is not JSON-serialisable: {exc}") from exc
        if len(comment.encode()) > _MAX_OPTION_OCTETS:
            raise LocalProtocolError(
                f"metadata is {len(comment.encode())} octets of JSON, more than the"
                f" {_MAX_OPTION_OCTETS} a pcapng option holds (draft 3.5)"
            )
        self._stream = stream
        self._reference = time_reference
        self._section = blocks.SectionHeader(
            options={"shb_userappl": f"linkstack {__version__}", "opt_comment": comment}
        )
        descriptions = interface_descriptions(metadata.get("side"))
        self._interfaces = [
            self._section.new_member(
                blocks.InterfaceDescription,
                link_type=iface.link_type,
                snaplen=0,  # no limit (draft 4.2)
                options={
                    "if_name": iface.name,
                    "if_description": descriptions[iface.name],
                    "if_tsresol": _TSRESOL_NS,
                },
            )
            for iface in _INTERFACES
        ]
        # python-pcapng writes a block in several writes: it writes to memory, and
        # _emit() hands the stream whole blocks in one write.
        self._encoded = io.BytesIO()
        with warnings.catch_warnings():
            # python-pcapng's own schema gives if_tsresol no type and warns about it.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._writer = pcapng.FileWriter(self._encoded, self._section)
        self._emit()
        self._identification = 0
        #: Enhanced Packet Blocks written.
        self.units_written = 0

    @property
    def time_reference(self) -> TimeReference | None:
        """The reference the timestamps are Unix time by, None if they are ``t`` as given."""
        return self._reference

    def record_uplink(self, cltu: bytes, t: float, *, comment: str | None = None) -> None:
        """One CLTU as the ground radiates it, at time ``t`` (s)."""
        self._record(UnitKind.CLTU, Direction.UPLINK, bytes(cltu), t, comment)

    def record_downlink(self, cadu: bytes, t: float, *, comment: str | None = None) -> None:
        """One CADU as the ground receives it (bit errors and all), at time ``t`` (s)."""
        self._record(UnitKind.CADU, Direction.DOWNLINK, bytes(cadu), t, comment)

    def record_packet(
        self, packet: bytes, t: float, direction: Direction, *, comment: str | None = None
    ) -> None:
        """One decoded Space Packet, whole, sent (uplink) or received (downlink) at ``t``."""
        packet = bytes(packet)
        if not isinstance(direction, Direction):
            raise LocalProtocolError(f"direction {direction!r} is not a Direction")
        try:
            declared = peek_packet_length(packet)
        except LinkError as exc:
            raise LocalProtocolError(f"not a Space Packet: {exc}") from exc
        if declared != len(packet):
            raise LocalProtocolError(
                f"Space Packet header says {declared} octets, {len(packet)} given"
                " (CCSDS 133.0-B-2 4.1.3.5)"
            )
        if len(packet) > MAX_DATAGRAM_PAYLOAD:
            raise LocalProtocolError(
                f"Space Packet of {len(packet)} octets does not fit one UDP/IPv4 datagram"
                f" (at most {MAX_DATAGRAM_PAYLOAD})"
            )
        datagram = packet_to_datagram(packet, direction, self._identification)
        self._identification = (self._identification + 1) & 0xFFFF
        self._record(UnitKind.PACKET, direction, datagram, t, comment)

    def flush(self) -> None:
        """Flush the underlying stream (each block is flushed as it is written)."""
        self._stream.flush()

    def _emit(self) -> None:
        """Write the encoded blocks to the stream in one write, then flush it."""
        data = self._encoded.getvalue()
        self._encoded.seek(0)
        self._encoded.truncate()
        view = memoryview(data)
        while view:  # a raw stream may take fewer octets than it is given
            written = self._stream.write(view)
            if not written:
                raise LocalProtocolError(
                    f"the capture stream took {written!r} of {len(view)} octets:"
                    " a non-blocking stream cannot hold a capture"
                )
            view = view[written:]
        self._stream.flush()

    def _record(
        self, kind: UnitKind, direction: Direction, data: bytes, t: float, comment: str | None
    ) -> None:
        if not data:
            raise LocalProtocolError(f"empty {kind}: nothing to record")
        ns = _timestamp_ns(t, self._reference)
        flags = _EPB_OUTBOUND if direction is Direction.UPLINK else _EPB_INBOUND
        options: dict[str, object] = {"epb_flags": flags}
        if comment is not None:
            if len(comment.encode()) > _MAX_OPTION_OCTETS:
                raise LocalProtocolError(f"comment of {len(comment.encode())} octets is too long")
            options["opt_comment"] = comment
        block = self._section.new_member(
            blocks.EnhancedPacket,
            interface_id=_BY_KIND[kind],
            timestamp_high=ns >> 32,
            timestamp_low=ns & 0xFFFFFFFF,
            packet_len=len(data),
            packet_data=data,
            options=options,
        )
        self._writer.write_block(block)
        self._emit()
        self.units_written += 1


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture read back: the recorder's metadata and the units in file order."""

    #: The metadata mapping given to :class:`CaptureWriter` (with the writer's
    #: :data:`TIME_REFERENCE_KEY` entry when it was given a reference).
    metadata: Mapping[str, object]
    linkstack_version: str
    python_version: str
    units: tuple[Unit, ...]
    #: What was dropped after the last whole block of a recording cut short, None for
    #: a whole file.
    truncated: TruncatedTail | None = None
    #: The session's start; the units' ``t`` count from it.  None in older captures.
    time_reference: TimeReference | None = None

    def link_config(self) -> LinkConfig | None:
        """The link configuration recorded in the metadata, None if it has none."""
        return link_config_from_metadata(self.metadata)


def _check_magic(head: bytes) -> None:
    if not head:
        raise CaptureError("empty file: not a capture")
    if head[:4] in _PCAP_MAGICS:
        raise CaptureError(
            "a libpcap (.pcap) file, not pcapng: linkstack captures are pcapng",
            offset=0,
        )
    if head[:4] != PCAPNG_MAGIC[: len(head[:4])]:
        raise CaptureError(f"not a pcapng file: it starts with {head[:8].hex()}", offset=0)


def _read_header(section: blocks.SectionHeader) -> dict[str, object]:
    comments = section.options.get_all("opt_comment") if "opt_comment" in section.options else []
    for comment in comments:
        try:
            header = json.loads(comment)
        except (TypeError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == FORMAT:
            if header.get("format_version") != FORMAT_VERSION:
                raise CaptureError(
                    f"linkstack capture format version {header.get('format_version')!r};"
                    f" this reader knows {FORMAT_VERSION}",
                    offset=0,
                )
            if not isinstance(header.get("metadata"), dict):
                raise CaptureError("linkstack metadata is not a JSON object", offset=0)
            return header
    raise CaptureError(
        "no linkstack metadata in the section header: a pcapng written by another tool",
        offset=0,
    )


def _interface_kind(block: blocks.InterfaceDescription, offset: int) -> UnitKind:
    name = block.options.get("if_name")
    for iface in _INTERFACES:
        if (iface.name, iface.link_type) == (name, block.link_type):
            if "if_tsresol" in block.options and block.options["if_tsresol"] != _TSRESOL_NS:
                raise CaptureError(f"interface {name} is not in nanoseconds", offset=offset)
            return iface.kind
    raise CaptureError(
        f"foreign interface {name!r} with link type {block.link_type}", offset=offset
    )


def _unit(
    block: blocks.EnhancedPacket, kinds: Mapping[int, UnitKind], offset: int, start_ns: int
) -> Unit:
    kind = kinds.get(block.interface_id)
    if kind is None:
        raise CaptureError(
            f"packet on interface {block.interface_id}, which is not described", offset=offset
        )
    flags = int(block.options["epb_flags"]) & 3 if "epb_flags" in block.options else 0
    direction = {_EPB_OUTBOUND: Direction.UPLINK, _EPB_INBOUND: Direction.DOWNLINK}.get(flags)
    if direction is None:
        raise CaptureError("packet without an inbound/outbound direction", offset=offset)
    expected = {UnitKind.CLTU: Direction.UPLINK, UnitKind.CADU: Direction.DOWNLINK}.get(kind)
    if expected not in (None, direction):
        raise CaptureError(f"{kind} recorded as {direction}", offset=offset)
    data = bytes(block.packet_data)
    if block.captured_len != block.packet_len or len(data) != block.packet_len:
        raise CaptureError(f"packet cut to {len(data)} of {block.packet_len} octets", offset=offset)
    if kind is UnitKind.PACKET:
        data = packet_from_datagram(data, direction, offset)
    ns = ((block.timestamp_high << 32) | block.timestamp_low) - start_ns
    comment = block.options.get("opt_comment")
    return Unit(direction, kind, data, ns / _NS_PER_S, comment)


#: What python-pcapng raises on bad input, besides its own exceptions.
_LIBRARY_ERRORS: Final = (
    pcapng.exceptions.PcapngException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    RuntimeError,
    UnicodeDecodeError,
    OverflowError,
)


def read_capture(stream: BinaryIO) -> Capture:
    """Read a capture written by :class:`CaptureWriter` from a binary stream.

    A capture cut short (its last block cut, or zeros from inside it to the end) is
    read up to its last whole block, and :attr:`Capture.truncated` says what was
    dropped.  Raises :class:`CaptureError`, and nothing else, for an empty, corrupted
    or foreign file, and for one cut before its interfaces are all described.
    """
    head = stream.read(8)
    _check_magic(head)
    framer = BlockFramer(head, stream)
    scanner = pcapng.FileScanner(BlockStream(framer))
    header: dict[str, object] | None = None
    reference: TimeReference | None = None
    kinds: dict[int, UnitKind] = {}
    units: list[Unit] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # strictness warnings; we check what we need
            for block in scanner:
                offset = framer.block_start
                if isinstance(block, blocks.SectionHeader):
                    header = _read_header(block)
                    metadata = header["metadata"]
                    if isinstance(metadata, Mapping):
                        reference = TimeReference.from_metadata(metadata)
                elif header is None:  # pragma: no cover - the scanner requires an SHB first
                    raise CaptureError("no section header", offset=offset)
                elif isinstance(block, blocks.InterfaceDescription):
                    kinds[len(kinds)] = _interface_kind(block, offset)
                elif isinstance(block, blocks.EnhancedPacket):
                    start_ns = 0 if reference is None else reference.unix_ns
                    units.append(_unit(block, kinds, offset, start_ns))
                else:
                    raise CaptureError(f"unexpected {type(block).__name__} block", offset=offset)
    except CaptureError:
        raise
    except _LIBRARY_ERRORS as exc:
        raise CaptureError(f"corrupted block: {exc}", offset=framer.block_start) from exc
    tail = framer.tail
    if header is None:
        raise CaptureError(
            "truncated file: no whole section header" + ("" if tail is None else f"; {tail}"),
            offset=0,
        )
    if len(kinds) != len(_INTERFACES) or sorted(kinds.values()) != sorted(_BY_KIND):
        if len(kinds) < len(_INTERFACES) and not units:
            raise CaptureError(
                "truncated file: it ends before its interfaces are all described"
                + ("" if tail is None else f"; {tail}"),
                offset=framer.position if tail is None else tail.offset,
            )
        raise CaptureError(f"interfaces {sorted(kinds.values())}, expected {sorted(_BY_KIND)}")
    metadata = header["metadata"]
    if not isinstance(metadata, dict):  # pragma: no cover - checked by _read_header
        raise CaptureError("linkstack metadata is not a JSON object", offset=0)
    return Capture(
        metadata=metadata,
        linkstack_version=str(header.get("linkstack")),
        python_version=str(header.get("python")),
        units=tuple(units),
        truncated=tail,
        time_reference=reference,
    )


def read_cadu_file(stream: BinaryIO, *, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """Chunks of a plain file of concatenated CADUs, as SDR tools write them.

    No timestamps and no alignment: feed the chunks to a :class:`CaduSynchronizer`
    (or ``GroundEndpoint.receive_bytes``).  Raises :class:`CaptureError` for an empty
    file and for a pcap or pcapng file, which is not a plain CADU file.
    """
    if chunk_size < 1:
        raise LocalProtocolError(f"chunk_size {chunk_size} must be at least 1")
    first = stream.read(chunk_size)
    if not first:
        raise CaptureError("empty file: no CADUs")
    if first[:4] == PCAPNG_MAGIC:
        raise CaptureError("a pcapng file, not a plain CADU file: read it as a capture", offset=0)
    if first[:4] in _PCAP_MAGICS:
        raise CaptureError("a libpcap (.pcap) file, not a plain CADU file", offset=0)
    return _chunks(first, stream, chunk_size)


def _chunks(first: bytes, stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    chunk = first
    while chunk:
        yield chunk
        chunk = stream.read(chunk_size)
