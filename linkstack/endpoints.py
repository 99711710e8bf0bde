"""The two composed link endpoints: the ground station and the spacecraft.

Each endpoint stacks the layers top to bottom as the CCSDS layer diagram does and
catches link errors once, at its boundary: bad bytes become :class:`Dropped` events
and counters, never exceptions.  Sans-I/O, aioquic style: ``receive_bytes(data,
now)`` in, ``next_event()`` and ``data_to_send()`` / ``next_cadu()`` out.

Uplink (ground -> spacecraft)::

    message -> Space Packet (TC, APID) -> MAP packet processing (segment header)
            -> TC Transfer Frame (Type-BD) -> CLTU (randomizer, BCH)

Downlink (spacecraft -> ground)::

    message -> Space Packet (TM, APID) -> TM VC packetizer -> master channel (OCF)
            -> TM Transfer Frame -> R-S codeblock -> randomizer -> ASM (CADU)

Not yet here: COP-1 (uplink frames go as Type-BD, expedited, until FOP-1/FARM-1
arrive) and SDLS (frames are not protected).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from linkstack.clcw import Clcw
from linkstack.errors import DropCounter, Dropped, Layer, RemoteProtocolError
from linkstack.inference_protocol import Apid, Message, decode_message, encode_message
from linkstack.space_packet import PacketSequencer, PacketType, SpacePacket
from linkstack.tc_coding import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu
from linkstack.tc_frame import (
    BypassFlag,
    TcFrame,
    TcReassembler,
    TcVcConfig,
    UnitReceived,
    packet_processing,
    peek_frame_length,
)
from linkstack.tm_coding import (
    CaduSynchronizer,
    FrameDecoded,
    SyncAcquired,
    SyncLost,
    TmCodingConfig,
    encode_cadu,
)
from linkstack.tm_frame import (
    FramesLost,
    OcfReceived,
    PacketReceived,
    TmChannelConfig,
    TmDepacketizer,
    TmMultiplexer,
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


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message arrived whole."""

    apid: int
    message: Message
    at: float


@dataclass(slots=True)
class LinkCounters:
    """What one endpoint sent and received; each side fills the fields of its role."""

    # uplink
    cltus_sent: int = 0
    tc_frames_sent: int = 0
    uplink_octets: int = 0
    cltus_received: int = 0
    tc_frames_received: int = 0
    tc_corrected_bits: int = 0
    # downlink
    cadus_sent: int = 0
    idle_frames_sent: int = 0
    downlink_octets: int = 0
    frames_received: int = 0
    frames_lost: int = 0
    rs_corrected_symbols: int = 0
    rs_uncorrectable: int = 0
    sync_losses: int = 0
    # both
    packets_received: int = 0
    messages_received: int = 0
    dropped: int = 0


Event = MessageReceived | Dropped | FramesLost

#: Called with every whole Space Packet an endpoint sends or receives, and ``now``
#: (None where the caller gave no time); captures record the decoded packets with it.
PacketTap = Callable[[bytes, float | None], None]


class _Endpoint:
    """What both ends share: the event queue, drop counting and message parsing."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.counters = LinkCounters()
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

    def _tap(self, packet: bytes, now: float | None) -> None:
        if self.packet_tap is not None:
            self.packet_tap(packet, now)

    def _receive_packet(self, raw: bytes, now: float) -> None:
        self._tap(raw, now)
        try:
            packet = SpacePacket.from_bytes(raw)
            message = decode_message(packet.apid, packet.data)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(raw), at=now))
            return
        self.counters.packets_received += 1
        self.counters.messages_received += 1
        logger.debug("< %s", message)
        self._events.append(MessageReceived(packet.apid, message, now))


class GroundEndpoint(_Endpoint):
    """Ground side: sends messages as CLTUs, receives a CADU byte stream."""

    def __init__(self, config: LinkConfig) -> None:
        super().__init__(config)
        self._tc = config.tc
        self._sequencer = PacketSequencer(packet_type=PacketType.TC)
        self._synchronizer = CaduSynchronizer(config.tm_coding)
        self._depacketizer = TmDepacketizer(config.tm)
        self._outgoing: deque[bytes] = deque()
        #: The last CLCW heard in a TM frame's OCF (None until one arrives).
        self.last_clcw: Clcw | None = None

    def send(self, message: Message, now: float | None = None) -> None:
        """Queue ``message`` for the uplink: one CLTU per TC frame it needs."""
        apid, data = encode_message(message)
        packet = self._sequencer.packet(apid, data).to_bytes()
        self._tap(packet, now)
        for unit in packet_processing([packet], config=self._tc, map_id=self.config.map_id):
            frame = unit.to_frame(self._tc, bypass=BypassFlag.TYPE_B, sequence_number=0)
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
                self._depacketizer.receive_frame(event.frame)
                self._drain_depacketizer(now)
            elif isinstance(event, Dropped):
                if event.reason == "uncorrectable":
                    self.counters.rs_uncorrectable += 1
                self._drop(event)
            elif isinstance(event, SyncLost):
                self.counters.sync_losses += 1
            elif isinstance(event, SyncAcquired):
                logger.debug("TM sync acquired at octet %d", event.offset)

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


class SpacecraftEndpoint(_Endpoint):
    """Spacecraft side: receives a CLTU byte stream, sends messages as CADUs."""

    def __init__(self, config: LinkConfig) -> None:
        super().__init__(config)
        self._tc = config.tc
        self._sequencer = PacketSequencer(packet_type=PacketType.TM)
        self._decoder = CltuDecoder(DecoderMode.CORRECT, randomize=config.tc_randomize)
        self._reassembler = TcReassembler(deblock_packets=True)
        self._multiplexer = TmMultiplexer(config.tm, vcids=(config.tm_vcid,))
        #: The CLCW reported in every TM frame's OCF (COP-1 fills it in; until then
        #: it reports VC ``tc_vcid`` with FARM-1 idle).
        self.clcw = Clcw(vcid=config.tc_vcid, report_value=0)

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
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(data), at=now))
            return
        self.counters.tc_frames_received += 1
        self._reassembler.receive_frame(frame, now=now)
        while (event := self._reassembler.next_event()) is not None:
            if isinstance(event, UnitReceived):
                self._receive_packet(event.data, now)
            else:
                self._drop(event)

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

    def next_cadu(self) -> bytes:
        """The next CADU of the constant-rate downlink: data if any waits, else idle.

        Every frame, idle (OID) frames included, carries the CLCW in its OCF.
        """
        frame = self._multiplexer.next_frame(ocf=self.clcw.to_int())
        if frame.is_idle:
            self.counters.idle_frames_sent += 1
        cadu = encode_cadu(frame.to_bytes(), self.config.tm_coding)
        self.counters.cadus_sent += 1
        self.counters.downlink_octets += len(cadu)
        return cadu


__all__ = [
    "Apid",
    "Event",
    "GroundEndpoint",
    "LinkConfig",
    "LinkCounters",
    "MessageReceived",
    "SpacecraftEndpoint",
]
