"""What ``linkstack capture info`` reports: a capture counted and decoded again.

:func:`summarize` counts each direction's units, octets and times, and runs the
receiving half of the protocol stack over the recorded units with the link
configuration in the metadata (the defaults when it has none):

* uplink: each CLTU through the CLTU decoder (CCSDS 231.0-B-4, error-correcting
  mode), its TC frames (CCSDS 232.0-B-4) counted per VCID and, on the recorded VC,
  reassembled into Space Packets (CCSDS 133.0-B-2) counted per APID;
* downlink: the CADUs through the synchronizer and Reed-Solomon decoder (CCSDS
  131.0-B-5), the TM frames (CCSDS 132.0-B-3) counted per VCID and depacketized into
  Space Packets counted per APID;
* the recorded Space Packets (already whole) counted per direction and APID.

Every drop of every decoder is counted by ``layer/reason``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from linkstack.capture.framing import TruncatedTail
from linkstack.capture.pcapng import Capture, TimeReference
from linkstack.capture.units import UnitKind
from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded, SyncLost
from linkstack.endpoints import LinkConfig
from linkstack.errors import DropCounter, Dropped, RemoteProtocolError
from linkstack.packets.space_packet import PRIMARY_HEADER_LENGTH
from linkstack.tc.frame import (
    TcFrame,
    peek_frame_length,
    peek_vcid,
)
from linkstack.tc.segments import (
    TcReassembler,
    UnitReceived,
)
from linkstack.tm.channels import (
    FramesLost,
    PacketReceived,
    TmDepacketizer,
)
from linkstack.tm.frame import (
    TmFrame,
)

__all__ = ["CaptureSummary", "DirectionSummary", "summarize"]


@dataclass(slots=True)
class DirectionSummary:
    """Units, octets and times of one direction."""

    units: Counter[str] = field(default_factory=Counter)
    octets: Counter[str] = field(default_factory=Counter)
    first_t: float | None = None
    last_t: float | None = None


@dataclass(slots=True)
class CaptureSummary:
    """What ``linkstack capture info`` reports."""

    linkstack_version: str
    python_version: str
    metadata: Mapping[str, object]
    #: False when the metadata has no link configuration and the defaults were used.
    link_from_metadata: bool
    #: What a recording cut short lost after its last whole block, None for a whole file.
    truncated: TruncatedTail | None = None
    #: The session's start (the times count from it), None in older captures.
    time_reference: TimeReference | None = None
    directions: dict[str, DirectionSummary] = field(default_factory=dict)
    #: Decoded from the CLTUs: TC frames per VCID, packets per APID.
    tc_frames_per_vc: Counter[int] = field(default_factory=Counter)
    tc_packets_per_apid: Counter[int] = field(default_factory=Counter)
    tc_corrected_bits: int = 0
    #: Decoded from the CADUs: TM frames per VCID (OID frames under their VCID),
    #: packets per APID.
    tm_frames_per_vc: Counter[int] = field(default_factory=Counter)
    tm_packets_per_apid: Counter[int] = field(default_factory=Counter)
    rs_corrected_symbols: int = 0
    rs_uncorrectable: int = 0
    sync_losses: int = 0
    tm_frames_lost: int = 0
    #: Recorded (already decoded) Space Packets per direction and APID.
    recorded_packets_per_apid: dict[str, Counter[int]] = field(default_factory=dict)
    #: Drops by ``layer/reason``, from every decoder above.
    drops: Counter[str] = field(default_factory=Counter)

    @property
    def first_t(self) -> float | None:
        times = [d.first_t for d in self.directions.values() if d.first_t is not None]
        return min(times) if times else None

    @property
    def last_t(self) -> float | None:
        times = [d.last_t for d in self.directions.values() if d.last_t is not None]
        return max(times) if times else None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dictionary (integer keys become strings)."""
        first, last = self.first_t, self.last_t
        return {
            "linkstack_version": self.linkstack_version,
            "python_version": self.python_version,
            "metadata": dict(self.metadata),
            "link_from_metadata": self.link_from_metadata,
            "truncated": None if self.truncated is None else self.truncated.to_json(),
            "started_utc": None if self.time_reference is None else self.time_reference.utc,
            "first_t": first,
            "last_t": last,
            "duration_s": None if first is None or last is None else last - first,
            "directions": {
                name: {
                    "units": dict(d.units),
                    "octets": dict(d.octets),
                    "total_units": sum(d.units.values()),
                    "total_octets": sum(d.octets.values()),
                    "first_t": d.first_t,
                    "last_t": d.last_t,
                }
                for name, d in self.directions.items()
            },
            "uplink_decoded": {
                "tc_frames_per_vc": _keys(self.tc_frames_per_vc),
                "packets_per_apid": _keys(self.tc_packets_per_apid, apid=True),
                "corrected_bits": self.tc_corrected_bits,
            },
            "downlink_decoded": {
                "tm_frames_per_vc": _keys(self.tm_frames_per_vc),
                "packets_per_apid": _keys(self.tm_packets_per_apid, apid=True),
                "rs_corrected_symbols": self.rs_corrected_symbols,
                "rs_uncorrectable": self.rs_uncorrectable,
                "sync_losses": self.sync_losses,
                "frames_lost": self.tm_frames_lost,
            },
            "recorded_packets_per_apid": {
                name: _keys(counts, apid=True)
                for name, counts in self.recorded_packets_per_apid.items()
            },
            "drops": dict(sorted(self.drops.items())),
        }


def _keys(counter: Counter[int], *, apid: bool = False) -> dict[str, int]:
    """JSON object keys: VCIDs in decimal, APIDs in hex as docs/protocol.md writes them."""
    return {(f"0x{key:03X}" if apid else str(key)): value for key, value in sorted(counter.items())}


def _apid(packet: bytes) -> int:
    return ((packet[0] & 0x07) << 8) | packet[1]


def summarize(capture: Capture) -> CaptureSummary:
    """Count a capture's units and decode its CLTUs and CADUs with the recorded link."""
    config = capture.link_config()
    summary = CaptureSummary(
        linkstack_version=capture.linkstack_version,
        python_version=capture.python_version,
        metadata=capture.metadata,
        link_from_metadata=config is not None,
        truncated=capture.truncated,
        time_reference=capture.time_reference,
    )
    config = config or LinkConfig()
    for unit in capture.units:
        side = summary.directions.setdefault(unit.direction.value, DirectionSummary())
        side.units[unit.kind.value] += 1
        side.octets[unit.kind.value] += len(unit.data)
        side.first_t = unit.t if side.first_t is None else min(side.first_t, unit.t)
        side.last_t = unit.t if side.last_t is None else max(side.last_t, unit.t)
        if unit.kind is UnitKind.PACKET and len(unit.data) >= PRIMARY_HEADER_LENGTH:
            counts = summary.recorded_packets_per_apid.setdefault(unit.direction.value, Counter())
            counts[_apid(unit.data)] += 1
    _summarize_uplink(capture, config, summary)
    _summarize_downlink(capture, config, summary)
    return summary


def _summarize_uplink(capture: Capture, config: LinkConfig, summary: CaptureSummary) -> None:
    decoder = CltuDecoder(DecoderMode.CORRECT, randomize=config.tc_randomize)
    reassembler = TcReassembler(deblock_packets=True)
    drops = DropCounter()
    tc = config.tc
    for unit in capture.units:
        if unit.kind is not UnitKind.CLTU:
            continue
        decoder.receive_bytes(unit.data)
        decoder.channel_deactivation()  # each recorded CLTU is one carrier burst
        while (event := decoder.next_event()) is not None:
            if not isinstance(event, CltuDecoded):
                drops.count(event)
                continue
            summary.tc_corrected_bits += event.corrected_bits
            try:
                vcid = peek_vcid(event.data)
                frame_bytes = event.data[: peek_frame_length(event.data)]
                summary.tc_frames_per_vc[vcid] += 1
                if vcid != tc.vcid:
                    continue
                frame = TcFrame.from_bytes(frame_bytes, config=tc)
            except RemoteProtocolError as exc:
                drops.count(Dropped.from_error(exc, octets=len(event.data)))
                continue
            reassembler.receive_frame(frame, now=unit.t)
            while (out := reassembler.next_event()) is not None:
                if isinstance(out, UnitReceived):
                    summary.tc_packets_per_apid[_apid(out.data)] += 1
                else:
                    drops.count(out)
    summary.drops.update(drops)


def _summarize_downlink(capture: Capture, config: LinkConfig, summary: CaptureSummary) -> None:
    synchronizer = CaduSynchronizer(config.tm_coding)
    depacketizer = TmDepacketizer(config.tm)
    drops = DropCounter()

    def receive_frame(frame: bytes) -> None:
        try:
            parsed = TmFrame.from_bytes(frame, config=config.tm)
        except RemoteProtocolError:
            depacketizer.receive_frame(frame)  # drops it and counts the drop
            return
        summary.tm_frames_per_vc[parsed.vcid] += 1
        depacketizer.receive_tm_frame(parsed)

    def drain() -> None:
        while (event := synchronizer.next_event()) is not None:
            if isinstance(event, FrameDecoded):
                summary.rs_corrected_symbols += sum(event.corrected)
                receive_frame(event.frame)
            elif isinstance(event, Dropped):
                if event.reason == "uncorrectable":
                    summary.rs_uncorrectable += 1
                drops.count(event)
            elif isinstance(event, SyncLost):
                summary.sync_losses += 1
        while (out := depacketizer.next_event()) is not None:
            if isinstance(out, PacketReceived):
                summary.tm_packets_per_apid[_apid(out.packet)] += 1
            elif isinstance(out, FramesLost):
                if out.vcid is None:
                    summary.tm_frames_lost += out.missing
            elif isinstance(out, Dropped):
                drops.count(out)

    for unit in capture.units:
        if unit.kind is UnitKind.CADU:
            synchronizer.receive_bytes(unit.data)
            drain()
    synchronizer.flush()
    drain()
    summary.drops.update(drops)
