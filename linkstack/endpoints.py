"""The two composed link endpoints: the ground station and the spacecraft.

Each endpoint stacks the layers top to bottom as the CCSDS layer diagram does and
catches link errors once, at its boundary: bad bytes become :class:`Dropped` events
and counters, never exceptions.  Sans-I/O, aioquic style: ``receive_bytes(data,
now)`` in, ``next_event()`` and ``data_to_send()`` / ``next_cadu()`` out.

Uplink (ground -> spacecraft)::

    message -> Space Packet (TC, APID) -> MAP packet processing (segment header)
            -> FOP-1 (Type-AD frames, N(S), retransmission) -> CLTU (randomizer, BCH)

    and on board: CLTU decoder -> TC frame -> FARM-1 -> MAP reassembly -> packet

Downlink (spacecraft -> ground)::

    message -> Space Packet (TM, APID) -> TM VC packetizer -> master channel
            (OCF = FARM-1's CLCW) -> TM Transfer Frame -> R-S codeblock -> randomizer
            -> ASM (CADU)

COP-1 (CCSDS 232.1-B-2) makes the uplink reliable: every message goes up in Type-AD
frames unless sent ``expedited`` (Type-BD); the ground initiates the AD service with
Set V(R) on its first message, so a spacecraft that outlived an earlier ground
session is resynchronized rather than locked out.  Transmission_Limit is sized to
ride out a loss of signal (100 x T1 = 200 s by default): FOP-1 keeps the command and
retransmits it blindly until the spacecraft is heard again, so no command is dropped
and none executed twice across such an outage.  Past it, FOP-1 alerts (the command
is then reported lost, never silently) and is initiated again with Set V(R).
(Timeout_Type 1, suspend and resume, is no help here: a resumed FOP-1 keeps its
Transmission_Count at the limit and suspends again at the next T1 unless a CLCW
acknowledges something, which a frame lost in the outage never gets.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu
from linkstack.coding.tm import (
    CaduSynchronizer,
    FrameDecoded,
    SyncAcquired,
    SyncLost,
    TmCodingConfig,
    encode_cadu,
)
from linkstack.errors import (
    DropCounter,
    Dropped,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.inference.protocol import Apid, Message, decode_message, encode_message
from linkstack.packets.space_packet import PacketSequencer, PacketType, SpacePacket
from linkstack.sdls import (
    KeyManagementError,
    KeyManager,
    KeysChanged,
    Link,
    LinkSecurity,
)
from linkstack.tc.clcw import Clcw
from linkstack.tc.cop1 import (
    Alert,
    FarmConfig,
    FarmEngine,
    FopConfig,
    FopEngine,
    FopState,
    TimeoutType,
)
from linkstack.tc.frame import (
    FrameType,
    TcFrame,
    TcVcConfig,
    peek_frame_length,
)
from linkstack.tc.segments import (
    TcReassembler,
    UnitReceived,
    packet_processing,
)
from linkstack.tm.channels import (
    FramesLost,
    OcfReceived,
    PacketReceived,
    TmDepacketizer,
    TmMultiplexer,
)
from linkstack.tm.frame import (
    TmChannelConfig,
    TmFrame,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """Managed parameters both ends of one space link agree on."""

    #: Spacecraft Identifier, 10 bits (CCSDS 232.0-B-4 4.1.2.5, 132.0-B-3 4.1.2.2.3).
    scid: int = 0x1A5
    #: TC Virtual Channel and MAP carrying the inference requests.
    tc_vcid: int = 0
    map_id: int = 0
    #: TC frames up to 1024 octets (CCSDS 232.0-B-4 4.1.2.7).
    tc_max_frame_length: int = 1024
    #: TC randomizer on (CCSDS 231.0-B-4 6).
    tc_randomize: bool = True
    #: TM Virtual Channel carrying the inference messages.
    tm_vcid: int = 0
    #: TM synchronization and channel coding; its frame length is the TM frame length.
    tm_coding: TmCodingConfig = field(default_factory=TmCodingConfig)
    #: FOP-1 sliding window K and FARM-1 window W (232.1-B-2 5.1.12, 6.1.8.2): K <= W/2.
    fop_window: int = 10
    farm_window: int = 20
    #: FOP-1 T1_Initial (5.1.9): longer than a round trip plus the CLCW report delay.
    fop_t1: float = 2.0
    #: FOP-1 Transmission_Limit (5.1.10): with T1, the longest outage survived.
    fop_transmission_limit: int = 100

    @property
    def tc(self) -> TcVcConfig:
        return TcVcConfig(
            scid=self.scid,
            vcid=self.tc_vcid,
            segment_header=True,
            max_frame_length=self.tc_max_frame_length,
        )

    @property
    def tm(self) -> TmChannelConfig:
        return TmChannelConfig(scid=self.scid, frame_length=self.tm_coding.frame_octets)

    @property
    def fop(self) -> FopConfig:
        return FopConfig(
            tc=self.tc,
            window_width=self.fop_window,
            t1_initial=self.fop_t1,
            transmission_limit=self.fop_transmission_limit,
            timeout_type=TimeoutType.ALERT,
        )

    @property
    def farm(self) -> FarmConfig:
        return FarmConfig(tc=self.tc, window_width=self.farm_window)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message arrived whole."""

    apid: int
    message: Message
    at: float


@dataclass(slots=True)
class GroundCounters:
    """What the ground endpoint sent up and received down (``GroundEndpoint.counters``)."""

    # uplink
    cltus_sent: int = 0
    tc_frames_sent: int = 0
    #: FOP-1 retransmissions (Type-AD and Type-BC), included in ``tc_frames_sent``.
    tc_frames_retransmitted: int = 0
    uplink_octets: int = 0
    cop1_alerts: int = 0
    # downlink
    frames_received: int = 0
    #: TM frames missed, from gaps in the master channel frame count.
    frames_lost: int = 0
    rs_corrected_symbols: int = 0
    rs_uncorrectable: int = 0
    sync_losses: int = 0
    packets_received: int = 0
    messages_received: int = 0
    #: Units dropped at any layer (the endpoint's ``drops`` says why).
    dropped: int = 0


@dataclass(slots=True)
class SpacecraftCounters:
    """What the spacecraft endpoint received up and sent down
    (``SpacecraftEndpoint.counters``)."""

    # uplink
    cltus_received: int = 0
    tc_frames_received: int = 0
    #: TC frames FARM-1 discarded (``FarmResult.discarded`` set).
    tc_frames_rejected: int = 0
    tc_corrected_bits: int = 0
    # downlink
    cadus_sent: int = 0
    idle_frames_sent: int = 0
    downlink_octets: int = 0
    # uplink packets
    packets_received: int = 0
    messages_received: int = 0
    #: Units dropped at any layer (the endpoint's ``drops`` says why).
    dropped: int = 0


#: One end's counters: both count the packets and messages they receive and their drops.
_CountersT = TypeVar("_CountersT", GroundCounters, SpacecraftCounters)


#: ``KeysChanged``: the spacecraft applied a key management PDU (APID KEY_MANAGEMENT).
Event = MessageReceived | KeysChanged | Dropped | FramesLost | Alert


def _peer_overhead(security: LinkSecurity | None, link: Link, vcid: int) -> int:
    """Octets the peer's SA for ``link``/``vcid`` adds to each frame (0 in the clear)."""
    if security is None:
        return 0
    overheads = {sa.overhead for sa in security.table if sa.link == link and vcid in sa.vcids}
    if len(overheads) > 1:
        raise LocalProtocolError(
            f"{link.name} VC {vcid}: SAs of different overheads {sorted(overheads)}; the frame"
            " layout must not change with the SA"
        )
    return overheads.pop() if overheads else 0


def _plain_tc(config: LinkConfig, overhead: int) -> TcVcConfig:
    """The TC VC as FOP-1 and segmentation see it: frames shorter by the SDLS overhead."""
    tc = config.tc
    return dataclasses.replace(tc, max_frame_length=tc.max_frame_length - overhead)


def _plain_tm(config: LinkConfig, overhead: int) -> TmChannelConfig:
    """The TM channel as the packetizer sees it: data field shorter by the SDLS overhead."""
    tm = config.tm
    return dataclasses.replace(tm, frame_length=tm.frame_length - overhead)


#: Called with every whole Space Packet an endpoint sends or receives, and ``now``
#: (None where the caller gave no time); captures record the decoded packets with it.
PacketTap = Callable[[bytes, float | None], None]


class _Endpoint(Generic[_CountersT]):
    """What both ends share: the event queue, drop counting and message parsing."""

    def __init__(self, config: LinkConfig, counters: _CountersT) -> None:
        self.config = config
        #: What this end counts: :class:`GroundCounters` or :class:`SpacecraftCounters`.
        self.counters: _CountersT = counters
        self.drops = DropCounter()
        self._events: deque[Event] = deque()
        #: Optional observer of every Space Packet sent or received whole.
        self.packet_tap: PacketTap | None = None

    def next_event(self) -> Event | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def _drop(self, event: Dropped) -> None:
        logger.debug("dropped %s/%s: %s", event.layer, event.reason, event.detail)
        self.counters.dropped += 1
        self._events.append(self.drops.count(event))

    def _key_management(self, packet: SpacePacket) -> KeysChanged | None:
        """The outcome of a key management PDU, or None: not one this end applies."""
        return None

    def _tap(self, packet: bytes, now: float | None) -> None:
        if self.packet_tap is not None:
            self.packet_tap(packet, now)

    def _receive_packet(self, raw: bytes, now: float) -> None:
        self._tap(raw, now)
        try:
            packet = SpacePacket.from_bytes(raw)
            changed = self._key_management(packet)
            if changed is None:
                message = decode_message(packet.apid, packet.data)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(raw), at=now))
            return
        self.counters.packets_received += 1
        if changed is not None:
            logger.info("< key management: %s", changed)
            self._events.append(changed)
            return
        self.counters.messages_received += 1
        logger.debug("< %s", message)
        self._events.append(MessageReceived(packet.apid, message, now))


class GroundEndpoint(_Endpoint[GroundCounters]):
    """Ground side: sends messages as CLTUs, receives a CADU byte stream."""

    def __init__(self, config: LinkConfig, security: LinkSecurity | None = None) -> None:
        super().__init__(config, GroundCounters())
        #: SDLS (CCSDS 355.0-B-2): None sends and accepts frames in the clear.
        self.security = security
        self._tc = _plain_tc(config, 0 if security is None else security.overhead)
        self._sequencer = PacketSequencer(packet_type=PacketType.TC)
        self._synchronizer = CaduSynchronizer(config.tm_coding)
        self._depacketizer = TmDepacketizer(
            _plain_tm(config, _peer_overhead(security, Link.TM, config.tm_vcid))
        )
        #: FOP-1 of the TC virtual channel (CCSDS 232.1-B-2 section 5).
        self.fop = FopEngine(dataclasses.replace(config.fop, tc=self._tc))
        self._outgoing: deque[bytes] = deque()
        #: The last CLCW heard in a TM frame's OCF (None until one arrives).
        self.last_clcw: Clcw | None = None

    def send(self, message: Message, now: float, *, expedited: bool = False) -> None:
        """Queue ``message`` for the uplink.

        Sequence-controlled (Type-AD, FOP-1 retransmits until the FARM-1 acknowledges)
        unless ``expedited`` (Type-BD, sent once).
        """
        apid, data = encode_message(message)
        self._send_packet(apid, data, now, expedited=expedited)

    def send_key_management(self, pdu: bytes, now: float) -> None:
        """Queue one SDLS key management PDU (OTAR, activation, deactivation) on APID
        KEY_MANAGEMENT, sequence-controlled so that it arrives once and in order."""
        self._send_packet(Apid.KEY_MANAGEMENT, pdu, now, expedited=False)

    def _send_packet(self, apid: int, data: bytes, now: float, *, expedited: bool) -> None:
        packet = self._sequencer.packet(apid, data).to_bytes()
        self._tap(packet, now)
        if not expedited and self.fop.state is FopState.S6:
            # Resynchronize the FARM-1 whatever an earlier session left it at.
            self.fop.initiate_ad_with_set_vr(0, now)
        for unit in packet_processing([packet], config=self._tc, map_id=self.config.map_id):
            if expedited:
                self.fop.send_bd(unit.data, now, segment_header=unit.segment_header)
            else:
                self.fop.send_ad(unit.data, now, segment_header=unit.segment_header)
        self._flush_fop(now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (FOP-1 T1), or None."""
        return self.fop.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run the timers that are due (FOP-1 T1 retransmission)."""
        timer = self.fop.get_timer()
        if timer is not None and now >= timer:
            self.fop.handle_timer(now)
            self._flush_fop(now)

    def _flush_fop(self, now: float) -> None:
        while (notification := self.fop.next_event()) is not None:
            if isinstance(notification, Alert):
                logger.warning("COP-1 alert %s in %s", notification.code.name, notification.state)
                self.counters.cop1_alerts += 1
                self._events.append(notification)
        if self.fop.state is FopState.S6 and self.fop.backlog_length:
            self.fop.initiate_ad_with_set_vr(self.fop.vs, now)
        retransmitted = self.fop.stats.ad_retransmitted + self.fop.stats.bc_retransmitted
        self.counters.tc_frames_retransmitted = retransmitted
        for plain in self.fop.frames_to_send():
            # Every transmission gets a fresh IV and sequence number: a FOP-1
            # retransmission re-sent as stored would be refused as a replay.
            frame = (
                plain if self.security is None else self.security.protect_tc(plain, self.config.tc)
            )
            cltu = encode_cltu(frame.to_bytes(), randomize=self.config.tc_randomize)
            self.counters.tc_frames_sent += 1
            self.counters.cltus_sent += 1
            self.counters.uplink_octets += len(cltu)
            self._outgoing.append(cltu)

    def data_to_send(self) -> list[bytes]:
        """CLTUs to radiate, oldest first; each is one datagram on a packet link."""
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_bytes(self, data: bytes, now: float) -> None:
        """Add octets of the received CADU stream (any chunking, any alignment)."""
        self._synchronizer.receive_bytes(data)
        self._drain_synchronizer(now)

    def end_of_stream(self, now: float) -> None:
        """The downlink ended (loss of signal, end of a file): settle what is held."""
        self._synchronizer.flush()
        self._drain_synchronizer(now)

    def _drain_synchronizer(self, now: float) -> None:
        while (event := self._synchronizer.next_event()) is not None:
            if isinstance(event, FrameDecoded):
                self.counters.frames_received += 1
                self.counters.rs_corrected_symbols += sum(event.corrected)
                self._receive_tm_frame(event.frame, now)
            elif isinstance(event, Dropped):
                if event.reason == "uncorrectable":
                    self.counters.rs_uncorrectable += 1
                self._drop(event)
            elif isinstance(event, SyncLost):
                self.counters.sync_losses += 1
            elif isinstance(event, SyncAcquired):
                logger.debug("TM sync acquired at octet %d", event.offset)

    def _receive_tm_frame(self, data: bytes, now: float) -> None:
        if self.security is None:
            self._depacketizer.receive_frame(data)
        else:
            try:
                frame = self.security.unprotect_tm(TmFrame.from_bytes(data, config=self.config.tm))
            except RemoteProtocolError as exc:
                # Nothing of a frame that fails verification is used, its OCF included.
                self._drop(Dropped.from_error(exc, octets=len(data), at=now))
                return
            self._depacketizer.receive_tm_frame(frame)
        self._drain_depacketizer(now)

    def _drain_depacketizer(self, now: float) -> None:
        while (event := self._depacketizer.next_event()) is not None:
            if isinstance(event, PacketReceived):
                if event.vcid == self.config.tm_vcid:
                    self._receive_packet(event.packet, now)
            elif isinstance(event, OcfReceived):
                self._receive_ocf(event.ocf, now)
            elif isinstance(event, FramesLost):
                if event.vcid is None:
                    self.counters.frames_lost += event.missing
                self._events.append(event)
            else:
                self._drop(event)

    def _receive_ocf(self, ocf: int, now: float) -> None:
        try:
            self.last_clcw = Clcw.from_int(ocf)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, at=now))
            return
        dropped = self.fop.receive_clcw(self.last_clcw, now)
        if dropped is not None:
            self._drop(dropped)
        self._flush_fop(now)


class SpacecraftEndpoint(_Endpoint[SpacecraftCounters]):
    """Spacecraft side: receives a CLTU byte stream, sends messages as CADUs."""

    def __init__(self, config: LinkConfig, security: LinkSecurity | None = None) -> None:
        super().__init__(config, SpacecraftCounters())
        #: SDLS (CCSDS 355.0-B-2): None sends and accepts frames in the clear.
        self.security = security
        self._tc = config.tc
        self._sequencer = PacketSequencer(packet_type=PacketType.TM)
        self._decoder = CltuDecoder(DecoderMode.CORRECT, randomize=config.tc_randomize)
        self._reassembler = TcReassembler(deblock_packets=True)
        self._multiplexer = TmMultiplexer(
            _plain_tm(config, 0 if security is None else security.overhead),
            vcids=(config.tm_vcid,),
        )
        #: FARM-1 of the TC virtual channel (CCSDS 232.1-B-2 section 6); its CLCW goes
        #: down in the OCF of every TM frame, idle frames included.
        self.farm = FarmEngine(config.farm)
        self._reported_clcw = self.farm.clcw()
        #: Applies the key management PDUs of APID KEY_MANAGEMENT to the security's key
        #: ring (None without SDLS); its OTAR replay state is the caller's to persist.
        self.key_manager = None if security is None else KeyManager(security.table.keys)

    # -- uplink ------------------------------------------------------------------------

    def receive_bytes(self, data: bytes, now: float) -> None:
        """Add octets of the received CLTU stream (any chunking)."""
        self._decoder.receive_bytes(data)
        self._drain_decoder(now)

    def end_of_stream(self, now: float) -> None:
        """The uplink carrier went away: abandon a CLTU in progress (231.0-B-4 E2)."""
        self._decoder.channel_deactivation()
        self._drain_decoder(now)

    def _drain_decoder(self, now: float) -> None:
        while (event := self._decoder.next_event()) is not None:
            if isinstance(event, CltuDecoded):
                self.counters.cltus_received += 1
                self.counters.tc_corrected_bits += event.corrected_bits
                self._receive_tc_frame(event.data, now)
            else:
                self._drop(event)

    def _receive_tc_frame(self, data: bytes, now: float) -> None:
        try:
            length = peek_frame_length(data)
            if length > len(data):
                raise RemoteProtocolError(
                    Layer.TC_FRAME,
                    "truncated",
                    "CCSDS 232.0-B-4 4.1.2.7",
                    f"frame length {length} but the CLTU held {len(data)} octets",
                )
            frame = TcFrame.from_bytes(data[:length], config=self._tc)
            if self.security is not None:
                frame = self.security.unprotect_tc(frame)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(data), at=now))
            return
        self.counters.tc_frames_received += 1
        if frame.vcid != self._tc.vcid:
            return
        result = self.farm.receive_frame(frame)
        if not result.accepted:
            self.counters.tc_frames_rejected += int(result.discarded is not None)
            return
        self._reassembler.receive_frame(frame, now=now)
        if frame.frame_type is FrameType.AD:
            # The packet went straight to the application: the buffer is free again.
            self.farm.buffer_released()
        while (event := self._reassembler.next_event()) is not None:
            if isinstance(event, UnitReceived):
                self._receive_packet(event.data, now)
            else:
                self._drop(event)

    def _key_management(self, packet: SpacePacket) -> KeysChanged | None:
        if packet.apid != Apid.KEY_MANAGEMENT:
            return None
        if self.key_manager is None:
            raise KeyManagementError(
                "key-management-off", "CCSDS 355.1-B-1", "SDLS is off on this link"
            )
        return self.key_manager.handle_pdu(packet.data)

    # -- downlink ----------------------------------------------------------------------

    def send(self, message: Message, now: float | None = None) -> None:
        """Queue ``message`` for the downlink on its APID."""
        apid, data = encode_message(message)
        packet = self._sequencer.packet(apid, data).to_bytes()
        self._tap(packet, now)
        self._multiplexer.queue_packet(self.config.tm_vcid, packet)

    @property
    def pending_octets(self) -> int:
        """Octets of packets waiting for a TM frame."""
        return self._multiplexer.pending_octets

    @property
    def clcw(self) -> Clcw:
        """The CLCW FARM-1 reports now."""
        return self.farm.clcw()

    @property
    def clcw_changed(self) -> bool:
        """FARM-1's report changed since the last frame went down: send one soon, so
        that FOP-1 hears the acknowledgement without waiting for an idle frame."""
        return self.farm.clcw() != self._reported_clcw

    def next_cadu(self) -> bytes:
        """The next CADU of the constant-rate downlink: data if any waits, else idle.

        Every frame, idle (OID) frames included, carries the CLCW in its OCF.
        """
        self._reported_clcw = self.farm.clcw()
        frame = self._multiplexer.next_frame(ocf=self._reported_clcw.to_int())
        idle = frame.is_idle
        if self.security is not None:
            frame = self.security.protect_tm(frame, self.config.tm)
        if idle:
            self.counters.idle_frames_sent += 1
        cadu = encode_cadu(frame.to_bytes(), self.config.tm_coding)
        self.counters.cadus_sent += 1
        self.counters.downlink_octets += len(cadu)
        return cadu


__all__ = [
    "Apid",
    "Event",
    "GroundCounters",
    "GroundEndpoint",
    "KeysChanged",
    "LinkConfig",
    "MessageReceived",
    "SpacecraftCounters",
    "SpacecraftEndpoint",
]
