"""A CFDP file transfer through the whole link, on a virtual clock.

The same sans-I/O pieces the programs use - two :class:`~linkstack.endpoints`
endpoints, two seeded :class:`~linkstack.radio.channel.Channel` objects and two
:class:`~linkstack.cfdp.entity.CfdpEntity` objects around cfdp-py's handlers - wired
together by a discrete-event loop that jumps from one event to the next: a 20 MB
upload that takes 45 minutes at 64 kbit/s runs in seconds, and the same seed gives the
same run on any machine.

Uplink: each CFDP PDU is a Space Packet on APID CFDP_APID, on its own TC Virtual
Channel (``TcRoute``; its own FOP-1 and FARM-1), segmented into TC frames that COP-1
sends Type-AD and retransmits until the CLCW acknowledges them.  The ground hands the
next PDU to FOP-1 only when FOP-1 has nothing waiting, so that the modulator never holds
more than the sliding window (go-back-N wastes what is queued behind a loss).
Downlink: CFDP's replies (NAK, ACK, Finished; or file data, for a download) ride TM VC
``cfdp_tm_vcid``, which the master channel serves in turn with the token stream's VC; a
frame goes down whenever something waits or FARM-1's CLCW changed, else an idle frame
every ``idle_interval_s``.

Loss of signal (``ChannelConfig.outages``, both directions at once) is ridden out by
COP-1 (FOP-1 keeps retransmitting for ``fop_t1 x fop_transmission_limit`` seconds) and
by CFDP's positive ACK and NAK timers, whose limits are sized to outlive the outage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from linkstack.cfdp.entity import CfdpConfig, CfdpCounters, CfdpEntity, TransferFinished
from linkstack.cfdp.memstore import MemoryFilestore
from linkstack.cfdp.wire import CFDP_APID, GROUND_ENTITY_ID, SPACECRAFT_ENTITY_ID
from linkstack.endpoints import (
    CfdpPduReceived,
    GroundCounters,
    GroundEndpoint,
    LinkConfig,
    SpacecraftCounters,
    SpacecraftEndpoint,
    TcRoute,
)
from linkstack.errors import LocalProtocolError
from linkstack.packets.space_packet import PRIMARY_HEADER_LENGTH
from linkstack.radio.channel import Channel, ChannelConfig, ChannelStats

#: TC frame header (5, CCSDS 232.0-B-4 4.1.2), Segment Header (1, 4.1.3.2) and FECF
#: (2, 4.1.4): what each TC frame spends besides packet octets.
TC_FRAME_OVERHEAD = 5 + 1 + 2
#: Octets of a BCH codeblock's information field (CCSDS 231.0-B-4 4.2.2): a TC frame a
#: multiple of it long fills its last codeblock, no fill octets wasted.
BCH_INFORMATION_OCTETS = 7


#: The FARM-B Counter of the CLCW word (CCSDS 232.0-B-4 4.2.1.9, bits 21-22).
_FARM_B_COUNTER_MASK = 0b11 << 9


def _is_file_data(pdu: bytes) -> bool:
    """PDU type bit of the fixed header (CCSDS 727.0-B-5 5.1.1, bit 3): 1 = file data."""
    return bool(pdu[0] >> 4 & 1)


def file_transfer_link(*, cfdp_tc_vcid: int = 1, window: int = 3) -> LinkConfig:
    """The link a file transfer is tuned for: CFDP on its own TC VC, TC frames of 1022
    octets (146 whole BCH codeblocks), a short FOP-1 window (go-back-N wastes less
    behind a lost frame) and a T1 that, with the limit, outlives a 200 s outage."""
    return LinkConfig(
        tc_routes=(TcRoute(CFDP_APID, cfdp_tc_vcid),),
        tc_max_frame_length=146 * BCH_INFORMATION_OCTETS,
        fop_window=window,
        farm_window=2 * window + 2,
        fop_t1=1.0,
        fop_transmission_limit=300,
    )


def pdu_length_for(link: LinkConfig, frames: int) -> int:
    """The longest CFDP PDU whose Space Packet fills exactly ``frames`` TC frames."""
    per_frame = link.tc_max_frame_length - TC_FRAME_OVERHEAD
    return frames * per_frame - PRIMARY_HEADER_LENGTH


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferConfig:
    """One simulated transfer: link, channels, CFDP parameters, seed."""

    link: LinkConfig = field(default_factory=file_transfer_link)
    uplink: ChannelConfig
    downlink: ChannelConfig
    seed: int = 0
    #: CFDP of the ground entity; the spacecraft's mirrors it (ids swapped).
    cfdp: CfdpConfig = field(
        default_factory=lambda: CfdpConfig(
            local_id=GROUND_ENTITY_ID, remote_id=SPACECRAFT_ENTITY_ID, max_pdu_length=4050
        )
    )
    #: File data PDUs go up Type-BD (COP-1's expedited service, sent once; CFDP's NAKs
    #: repair what the link loses: selective repeat) instead of Type-AD (FOP-1's
    #: go-back-N).  Directives (Metadata, EOF, ACK) always go Type-AD.  With
    #: ``expedited_file_data`` each file data PDU must fit one TC frame.
    expedited_file_data: bool = False
    #: An idle frame keeps the ground locked and carries the CLCW when nothing waits.
    idle_interval_s: float = 0.5
    #: Give up after this many virtual seconds.
    time_limit_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        for name in ("idle_interval_s", "time_limit_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LocalProtocolError(f"{name} {value} s must be positive and finite")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferResult:
    """What one simulated transfer gave."""

    size: int
    sent_sha256: str
    received_sha256: str | None
    finished: TransferFinished | None
    #: Virtual seconds from the Put to the sender's Transaction-Finished.
    elapsed_s: float
    #: Virtual seconds of the transfer during which an outage held the link down.
    outage_s: float
    #: File octets x 8 / elapsed: the goodput, and its ratio to the raw uplink rate
    #: (``goodput_ratio``) and to the rate over the time the link was up.
    goodput_bps: float
    goodput_ratio: float
    goodput_ratio_link_up: float
    rate_bps: float
    ground: GroundCounters
    spacecraft: SpacecraftCounters
    sender: CfdpCounters
    receiver: CfdpCounters
    uplink_channel: ChannelStats
    downlink_channel: ChannelStats

    @property
    def bit_exact(self) -> bool:
        return self.received_sha256 == self.sent_sha256

    @property
    def ok(self) -> bool:
        return self.finished is not None and self.finished.ok and self.bit_exact


class FileTransfer:
    """Ground, link and spacecraft with a CFDP entity at each end, on a virtual clock."""

    def __init__(
        self,
        config: TransferConfig,
        *,
        ground_store: MemoryFilestore | None = None,
        spacecraft_store: MemoryFilestore | None = None,
    ) -> None:
        self.config = config
        seeds = random.Random(config.seed)
        self.uplink = Channel(config.uplink, random.Random(seeds.getrandbits(64)))
        self.downlink = Channel(
            config.downlink, random.Random(seeds.getrandbits(64)), tm_coding=config.link.tm_coding
        )
        self.ground = GroundEndpoint(config.link)
        self.spacecraft = SpacecraftEndpoint(config.link)
        self.ground_store = ground_store or MemoryFilestore()
        self.spacecraft_store = spacecraft_store or MemoryFilestore()
        self.ground_cfdp = CfdpEntity(config.cfdp, self.ground_store)
        self.spacecraft_cfdp = CfdpEntity(
            dataclasses.replace(
                config.cfdp, local_id=config.cfdp.remote_id, remote_id=config.cfdp.local_id
            ),
            self.spacecraft_store,
        )
        self.now = 0.0
        vcid, _ = config.link.route(CFDP_APID)
        self._fop = self.ground.fops[vcid]
        rate = config.downlink.rate_bps
        self._cadu_time = config.link.tm_coding.cadu_length * 8 / rate
        self._next_frame = 0.0
        self._last_frame = -math.inf
        self._trailing_idle = False
        self._data_field = config.link.tm.data_field_length
        self.finished: list[TransferFinished] = []
        self._uplink_rate = config.uplink.rate_bps
        #: When the ground's modulator has radiated every CLTU handed to it.
        self._uplink_free_at = 0.0
        #: The CLCWs last sent down, FARM-B counters masked: a Type-BD frame accepted
        #: steps the FARM-B counter (232.0-B-4 4.2.1.9) and needs no report of its own.
        self._reported: tuple[tuple[int, ...], tuple[int, ...], int] = ((), (), 0)
        per_frame = pdu_length_for(config.link, 1)
        if config.expedited_file_data and config.cfdp.max_pdu_length > per_frame:
            raise LocalProtocolError(
                f"expedited_file_data: max_pdu_length {config.cfdp.max_pdu_length} exceeds"
                f" the {per_frame} octets one TC frame carries; a Type-BD PDU must not span"
                " frames (any frame lost loses it)"
            )

    # -- the two ends ----------------------------------------------------------------------

    def _feed_uplink(self) -> None:
        """Hand the ground's PDUs to FOP-1 while it has room (flow control): nothing in
        its backlog, and (Type-BD) the modulator about to be free."""
        expedited = self.config.expedited_file_data
        while self._fop.backlog_length == 0 and self._fop.sent_queue_length < (
            self.config.link.fop_window
        ):
            if expedited and self._uplink_free_at > self.now:
                break
            pdus = self.ground_cfdp.pdus_to_send(self.now, 1)
            if not pdus:
                break
            self.ground.send_cfdp(pdus[0], self.now, expedited=expedited and _is_file_data(pdus[0]))
            self._radiate()
        self._radiate()

    def _radiate(self) -> None:
        for cltu in self.ground.data_to_send():
            start = max(self.now, self._uplink_free_at)
            self._uplink_free_at = start + len(cltu) * 8 / self._uplink_rate
            self.uplink.send(cltu, self.now)

    def _feed_downlink(self) -> None:
        """Hand the spacecraft's PDUs to its CFDP VC while less than a frame waits."""
        while self.spacecraft.cfdp_pending_octets() < self._data_field:
            pdus = self.spacecraft_cfdp.pdus_to_send(self.now, 1)
            if not pdus:
                break
            self.spacecraft.send_cfdp(pdus[0], self.now)

    def _events(self) -> None:
        for endpoint, entity in (
            (self.spacecraft, self.spacecraft_cfdp),
            (self.ground, self.ground_cfdp),
        ):
            while (event := endpoint.next_event()) is not None:
                if isinstance(event, CfdpPduReceived):
                    entity.receive_pdu(event.pdu, self.now)
            while (finished := entity.next_event()) is not None:
                if isinstance(finished, TransferFinished):
                    self.finished.append(finished)

    def _transmit(self) -> None:
        if self.now < self._next_frame:
            return
        waiting = self._waiting()
        if not waiting and not self._trailing_idle and self.now < self._next_idle():
            return
        carried = self.spacecraft.pending_octets > 0
        self._reported = self._clcws()
        self.downlink.send(self.spacecraft.next_cadu(), self.now)
        self._last_frame = self.now
        self._trailing_idle = carried
        self._next_frame = self.now + self._cadu_time

    def _clcws(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """The CLCWs less their FARM-B counters, the counters, and TC frames received."""
        words = [farm.clcw().to_int() for farm in self.spacecraft.farms.values()]
        return (
            tuple(w & ~_FARM_B_COUNTER_MASK for w in words),
            tuple(w & _FARM_B_COUNTER_MASK for w in words),
            self.spacecraft.counters.tc_frames_received,
        )

    def _waiting(self) -> bool:
        """Data waits, or FOP-1 needs a report: any TC frame arrived (a Set V(R) to the
        value V(R) already had changes no CLCW but FOP-1 waits for one).  With Type-BD
        file data, a report per frame would be one CADU per BD frame: then only a CLCW
        that changed (its FARM-B counter aside, which every Type-B frame steps) or a
        frame that left the FARM-B counter alone (Type-AD) calls for one."""
        if self.spacecraft.pending_octets > 0:
            return True
        words, counters, received = self._clcws()
        old_words, old_counters, old_received = self._reported
        if received != old_received and not self.config.expedited_file_data:
            return True
        return words != old_words or (received != old_received and counters == old_counters)

    def _next_idle(self) -> float:
        return self._last_frame + self.config.idle_interval_s

    # -- the clock -------------------------------------------------------------------------

    def _next_time(self) -> float:
        times = [self.config.time_limit_s]
        for timer in (
            self.ground.get_timer(),
            self.uplink.get_timer(),
            self.downlink.get_timer(),
            self.ground_cfdp.get_timer(),
            self.spacecraft_cfdp.get_timer(),
        ):
            if timer is not None:
                times.append(timer)
        if self._uplink_free_at > self.now and self.ground_cfdp.sending:
            times.append(self._uplink_free_at)
        if self._waiting() or self._trailing_idle:
            times.append(self._next_frame)
        else:
            times.append(max(self._next_frame, self._next_idle()))
        return max(self.now, min(times))

    def step(self) -> None:
        """Advance to the next event and process everything due then."""
        self.now = self._next_time()
        for cltu in self.uplink.deliveries(self.now):
            self.spacecraft.receive_bytes(cltu, self.now)
        self._events()
        for entity in (self.spacecraft_cfdp, self.ground_cfdp):
            timer = entity.get_timer()
            if timer is not None and timer <= self.now:
                entity.handle_timer(self.now)
        self._feed_downlink()
        self._transmit()
        for cadu in self.downlink.deliveries(self.now):
            self.ground.receive_bytes(cadu, self.now)
        self.ground.handle_timer(self.now)
        self._events()
        self._feed_uplink()

    def run(self, *, sending: CfdpEntity) -> TransferFinished | None:
        """Run until ``sending``'s transaction finishes (or the time limit)."""
        while self.now < self.config.time_limit_s:
            self.step()
            for finished in self.finished:
                if finished.sending and (
                    int(finished.transaction.source_id.value) == sending.config.local_id
                ):
                    return finished
        return None

    # -- whole transfers -------------------------------------------------------------------

    def upload(
        self, data: bytes, name: str = "upload.bin", *, acknowledged: bool = True
    ) -> TransferResult:
        """Put ``data`` from the ground to the spacecraft, run it to the end."""
        return self._transfer(
            data,
            name,
            self.ground_cfdp,
            self.ground_store,
            self.spacecraft_store,
            acknowledged=acknowledged,
            rate=self.config.uplink.rate_bps,
        )

    def download(
        self, data: bytes, name: str = "download.bin", *, acknowledged: bool = True
    ) -> TransferResult:
        """Put ``data`` from the spacecraft to the ground, run it to the end."""
        return self._transfer(
            data,
            name,
            self.spacecraft_cfdp,
            self.spacecraft_store,
            self.ground_store,
            acknowledged=acknowledged,
            rate=self.config.downlink.rate_bps,
        )

    def _transfer(
        self,
        data: bytes,
        name: str,
        sender: CfdpEntity,
        source: MemoryFilestore,
        dest: MemoryFilestore,
        *,
        acknowledged: bool,
        rate: float,
    ) -> TransferResult:
        source_path = f"/out/{name}"
        dest_path = f"/in/{name}"
        source.files[Path(source_path)] = bytearray(data)
        start = self.now
        sender.put(source_path, dest_path, self.now, acknowledged=acknowledged)
        finished = self.run(sending=sender)
        elapsed = self.now - start
        received = dest.files.get(Path(dest_path))
        outage = sum(
            max(0.0, min(o.end, self.now) - max(o.start, start)) for o in self.config.uplink.outages
        )
        goodput = len(data) * 8 / elapsed if elapsed > 0 else 0.0
        up = elapsed - outage
        return TransferResult(
            size=len(data),
            sent_sha256=hashlib.sha256(data).hexdigest(),
            received_sha256=None if received is None else hashlib.sha256(received).hexdigest(),
            finished=finished,
            elapsed_s=elapsed,
            outage_s=outage,
            goodput_bps=goodput,
            goodput_ratio=goodput / rate,
            goodput_ratio_link_up=(len(data) * 8 / up / rate) if up > 0 else 0.0,
            rate_bps=rate,
            ground=dataclasses.replace(self.ground.counters),
            spacecraft=dataclasses.replace(self.spacecraft.counters),
            sender=dataclasses.replace(sender.counters),
            receiver=dataclasses.replace(
                (self.spacecraft_cfdp if sender is self.ground_cfdp else self.ground_cfdp).counters
            ),
            uplink_channel=dataclasses.replace(self.uplink.stats),
            downlink_channel=dataclasses.replace(self.downlink.stats),
        )


__all__ = [
    "FileTransfer",
    "TransferConfig",
    "TransferResult",
    "file_transfer_link",
    "pdu_length_for",
]
