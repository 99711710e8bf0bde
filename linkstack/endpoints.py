"""The two composed link endpoints: the ground station and the spacecraft.

Each endpoint stacks the layers top to bottom as the CCSDS layer diagram does and
catches link errors once, at its boundary: bad bytes become :class:`Dropped` events
and counters, never exceptions.  Sans-I/O, aioquic style: ``receive_bytes(data,
now)`` in, ``next_event()`` and ``data_to_send()`` / ``next_cadu()`` out.

Uplink (ground -> spacecraft)::

    message -> Space Packet (TC, APID) -> route (APID -> TC VC, MAP)
            -> MAP packet processing (segment header)
            -> FOP-1 of the VC (Type-AD frames, N(S), retransmission) -> CLTU (randomizer, BCH)

    and on board: CLTU decoder -> TC frame -> FARM-1 of its VC -> MAP reassembly -> packet

Downlink (spacecraft -> ground)::

    message -> Space Packet (TM, APID) -> TM VC packetizer -> master channel
            (OCF = a FARM-1's CLCW, the TC VCs in turn) -> TM Transfer Frame
            -> R-S codeblock -> randomizer -> ASM (CADU)

COP-1 (CCSDS 232.1-B-2) makes the uplink reliable: every message goes up in Type-AD
frames unless sent ``expedited`` (Type-BD); the ground initiates the AD service with
Set V(R) on its first message, so a spacecraft that outlived an earlier ground
session is resynchronized rather than locked out.  The FOP-1 defaults are Yamcs's
(sliding window 10, Transmission_Limit 3, Timeout_Type 1): after 3 transmissions of a
frame without acknowledgement FOP-1 suspends (232.1-B-2 5.2.16) keeping every frame,
and the ground resumes it as soon as it hears a CLCW of that VC again, first raising
Transmission_Limit by its configured value (a resumed FOP-1 keeps Transmission_Count
at the limit, so Resume alone would suspend again at the next T1 without
retransmitting); the limit goes back once the frames are acknowledged.  So no command
is dropped and none executed twice across a loss of signal of any length, and the
ground stays silent through it instead of retransmitting blindly
(docs/interop.md has the figures).  With ``fop_timeout_type=ALERT``
(Timeout_Type 0) FOP-1 instead alerts at the limit (the command is then reported
lost, never silently) and is initiated again with Set V(R).  An Alert [T1] (the
limit reached with no CLCW answering; also where Timeout_Type 1 cannot suspend, in
S5 while a Set V(R) is outstanding) is initiated again only once a CLCW of its VC is
heard, not blindly into the silence.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from linkstack.cfdp.wire import CFDP_APID
from linkstack.coding.tc import CltuDecoded, CltuDecoder, DecoderMode, encode_cltu
from linkstack.coding.tm import (
    CaduSynchronizer,
    FrameDecoded,
    SyncAcquired,
    SyncLost,
    SyncState,
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
from linkstack.packets.space_packet import IDLE_APID, PacketSequencer, PacketType, SpacePacket
from linkstack.sdls import (
    SPI_LENGTH,
    ArsnRead,
    ArsnReplyPdu,
    ArsnReported,
    ArsnSet,
    KeyActivationPdu,
    KeyManagementError,
    KeyManager,
    KeyMaterial,
    KeyRing,
    KeysChanged,
    KeyState,
    Link,
    LinkSecurity,
    ReadArsnPdu,
    SaTable,
    SecurityAssociation,
    TxCounter,
    build_otar,
    decode_ep_pdu,
    master_counter_label,
)
from linkstack.tc.clcw import Clcw
from linkstack.tc.cop1 import (
    Alert,
    AlertCode,
    FarmConfig,
    FarmEngine,
    FopConfig,
    FopEngine,
    FopState,
    TimeoutType,
)
from linkstack.tc.frame import (
    MAX_MAP_ID,
    FrameType,
    SequenceFlags,
    TcFrame,
    TcVcConfig,
    peek_frame_length,
    peek_vcid,
)
from linkstack.tc.frame import MAX_VCID as TC_MAX_VCID
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
    DEFAULT_OID_VCID,
    TmChannelConfig,
    TmFrame,
)
from linkstack.tm.frame import MAX_VCID as TM_MAX_VCID

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TcRoute:
    """The TC Virtual Channel and MAP that carry the packets of one APID.

    CCSDS 232.0-B-4 gives each VC its own FARM-1 on board and FOP-1 on the ground
    (232.1-B-2 2.2), and the MAP ID of the Segment Header (4.1.3.2.2.3) multiplexes
    users within a VC: key management on its own VC, for instance, is never held up
    behind a long prompt, and the spacecraft accepts it on that VC only.
    """

    apid: int
    vcid: int
    map_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """Managed parameters both ends of one space link agree on."""

    #: Spacecraft Identifier, 10 bits (CCSDS 232.0-B-4 4.1.2.5, 132.0-B-3 4.1.2.2.3).
    scid: int = 0x1A5
    #: TC Virtual Channel and MAP carrying the inference requests, and every APID that
    #: ``tc_routes`` does not name.
    tc_vcid: int = 0
    map_id: int = 0
    #: APIDs sent on another TC VC or MAP, e.g. ``(TcRoute(Apid.KEY_MANAGEMENT, 1),)``;
    #: each VC named gets a FARM-1 on board and a FOP-1 on the ground.
    tc_routes: tuple[TcRoute, ...] = ()
    #: TC frames up to 1024 octets (CCSDS 232.0-B-4 4.1.2.7).
    tc_max_frame_length: int = 1024
    #: TC randomizer on (CCSDS 231.0-B-4 6).
    tc_randomize: bool = True
    #: TM Virtual Channel carrying the inference messages.
    tm_vcid: int = 0
    #: TM VC of the Only Idle Data frames (CCSDS 132.0-B-3 4.1.4.6), a packet VC.
    tm_oid_vcid: int = DEFAULT_OID_VCID
    #: TM VC of the CFDP PDUs (APID CFDP_APID, docs/cfdp.md): the master channel takes
    #: its VCs in turn (round robin), so a file shares the downlink fairly with tokens.
    cfdp_tm_vcid: int = 1
    #: TM synchronization and channel coding; its frame length is the TM frame length.
    tm_coding: TmCodingConfig = field(default_factory=TmCodingConfig)
    #: FOP-1 sliding window K and FARM-1 window W (232.1-B-2 5.1.12, 6.1.8.2): K <= W/2.
    fop_window: int = 10
    farm_window: int = 20
    #: FOP-1 T1_Initial (5.1.9): longer than a round trip plus the CLCW report delay.
    fop_t1: float = 2.0
    #: FOP-1 Transmission_Limit (5.1.10), Yamcs's ``txLimit`` 3: transmissions of a frame
    #: before the Timeout_Type action; 3 x T1 = 6 s without an acknowledgement.
    fop_transmission_limit: int = 3
    #: FOP-1 Timeout_Type (5.1.10), Yamcs's ``timeoutType`` 1: SUSPEND keeps every frame
    #: and the ground resumes as soon as it hears the spacecraft again (a CLCW of the
    #: VC), so no outage loses a command; ALERT (0) ends the AD service at the limit.
    fop_timeout_type: TimeoutType = TimeoutType.SUSPEND

    def __post_init__(self) -> None:
        for name, value, limit, clause in (
            ("tc_vcid", self.tc_vcid, TC_MAX_VCID, "CCSDS 232.0-B-4 4.1.2.6"),
            ("map_id", self.map_id, MAX_MAP_ID, "CCSDS 232.0-B-4 4.1.3.2.2.3"),
            ("tm_vcid", self.tm_vcid, TM_MAX_VCID, "CCSDS 132.0-B-3 4.1.2.3"),
            ("tm_oid_vcid", self.tm_oid_vcid, TM_MAX_VCID, "CCSDS 132.0-B-3 4.1.2.3"),
        ):
            if isinstance(value, bool) or not 0 <= value <= limit:
                raise LocalProtocolError(f"{name}={value!r} outside 0..{limit} ({clause})")
        apids: set[int] = set()
        for route in self.tc_routes:
            if not 0 <= route.apid < IDLE_APID:
                raise LocalProtocolError(
                    f"{route}: APID outside 0..{IDLE_APID - 1} (CCSDS 133.0-B-2 4.1.3.3.4)"
                )
            if not 0 <= route.vcid <= TC_MAX_VCID:
                raise LocalProtocolError(
                    f"{route}: VCID outside 0..{TC_MAX_VCID} (CCSDS 232.0-B-4 4.1.2.6)"
                )
            if not 0 <= route.map_id <= MAX_MAP_ID:
                raise LocalProtocolError(
                    f"{route}: MAP ID outside 0..{MAX_MAP_ID} (CCSDS 232.0-B-4 4.1.3.2.2.3)"
                )
            if route.apid in apids:
                raise LocalProtocolError(f"APID {route.apid:#05x} routed twice in {self.tc_routes}")
            apids.add(route.apid)

    @property
    def tc(self) -> TcVcConfig:
        """The TC VC of the inference requests (``tc_vcid``)."""
        return self.tc_for(self.tc_vcid)

    @property
    def tc_vcids(self) -> tuple[int, ...]:
        """Every TC VC in use: ``tc_vcid`` first, then those of ``tc_routes``."""
        return tuple(dict.fromkeys([self.tc_vcid, *sorted(r.vcid for r in self.tc_routes)]))

    def route(self, apid: int) -> tuple[int, int]:
        """(VCID, MAP ID) that carry ``apid`` on the uplink."""
        for route in self.tc_routes:
            if route.apid == apid:
                return route.vcid, route.map_id
        return self.tc_vcid, self.map_id

    def map_ids(self, vcid: int) -> frozenset[int]:
        """The MAPs in use on TC VC ``vcid`` (empty: not a VC of this link)."""
        maps = {r.map_id for r in self.tc_routes if r.vcid == vcid}
        if vcid == self.tc_vcid:
            maps.add(self.map_id)
        return frozenset(maps)

    def tc_for(self, vcid: int) -> TcVcConfig:
        """TC VC ``vcid`` of this link: MAPs on (Segment Header), the same frame size."""
        return TcVcConfig(
            scid=self.scid,
            vcid=vcid,
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
            timeout_type=self.fop_timeout_type,
        )

    @property
    def farm(self) -> FarmConfig:
        return self.farm_for(self.tc_vcid)

    def fop_for(self, tc: TcVcConfig) -> FopConfig:
        """FOP-1 of the TC VC ``tc`` (every VC has the same managed parameters)."""
        return dataclasses.replace(self.fop, tc=tc)

    def farm_for(self, vcid: int) -> FarmConfig:
        return FarmConfig(tc=self.tc_for(vcid), window_width=self.farm_window)


def route_key_management(config: LinkConfig, management: SecurityAssociation | None) -> LinkConfig:
    """``config`` with APID KEY_MANAGEMENT routed to the TC VC (and MAP) of the key file's
    ``management`` SA, or ``config`` itself when there is none.

    Both ends build their link this way from the same key file, so they agree: the
    spacecraft runs a FARM-1 on that VC and takes key management there only, and the
    ground sends Set ARSN there (CCSDS 355.1-B-1 SA management) under that SA, out of
    reach of the window it repairs.  A KEY_MANAGEMENT route ``config`` already has must
    be the same one.
    """
    if management is None:
        return config
    if management.link != Link.TC or len(management.vcids) != 1:
        raise LocalProtocolError(
            f"management SA {management.spi}: {management.link.name} VCs"
            f" {sorted(management.vcids)}; it must be a TC SA of one VC"
        )
    (vcid,) = management.vcids
    if vcid == config.tc_vcid:
        raise LocalProtocolError(
            f"management SA {management.spi} on TC VC {vcid}, the VC of the requests: it needs"
            " a VC of its own, or a long loss on that VC locks it out too"
        )
    route = TcRoute(Apid.KEY_MANAGEMENT, vcid, management.map_id or 0)
    for existing in config.tc_routes:
        if existing.apid == Apid.KEY_MANAGEMENT and existing != route:
            raise LocalProtocolError(
                f"{existing} disagrees with management SA {management.spi} ({route})"
            )
    others = tuple(r for r in config.tc_routes if r.apid != Apid.KEY_MANAGEMENT)
    return dataclasses.replace(config, tc_routes=(*others, route))


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message arrived whole."""

    apid: int
    message: Message
    at: float


@dataclass(frozen=True, slots=True)
class CfdpPduReceived:
    """A CFDP PDU (CCSDS 727.0-B-5) arrived: the user data of a packet on CFDP_APID."""

    pdu: bytes
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
#: ``ArsnSet`` / ``ArsnRead``: it applied Set ARSN / Read ARSN (355.1-B-1 SA management).
#: ``ArsnReported``: the ground heard the spacecraft's reply to Read ARSN.
Event = (
    MessageReceived
    | CfdpPduReceived
    | KeysChanged
    | ArsnSet
    | ArsnRead
    | ArsnReported
    | Dropped
    | FramesLost
    | Alert
)


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


def _plain_tc(tc: TcVcConfig, overhead: int) -> TcVcConfig:
    """The TC VC as FOP-1 and segmentation see it: frames shorter by the SDLS overhead."""
    return dataclasses.replace(tc, max_frame_length=tc.max_frame_length - overhead)


def _tc_send_security(
    config: LinkConfig,
    security: LinkSecurity | None,
    vc_security: Mapping[int, LinkSecurity] | None,
) -> dict[int, LinkSecurity | None]:
    """The SDLS each TC VC is sent under: ``vc_security[vcid]``, else ``security``.

    A TC SA applies to exactly one VC (``SecurityAssociation``), so with SDLS on, a
    second VC needs its own sending :class:`LinkSecurity` (its own SA, key
    and IV counter, the same SA table); a VC left without one raises here.
    """
    extra = dict(vc_security or {})
    unknown = sorted(set(extra) - set(config.tc_vcids))
    if unknown:
        raise LocalProtocolError(
            f"vc_security for TC VCs {unknown}, not VCs of this link {list(config.tc_vcids)}"
        )
    if extra and security is None:
        raise LocalProtocolError("vc_security given without security: SDLS is off")
    out: dict[int, LinkSecurity | None] = {}
    for vcid in config.tc_vcids:
        chosen = extra.get(vcid, security)
        if chosen is not None and (
            chosen.send_sa.link != Link.TC or vcid not in chosen.send_sa.vcids
        ):
            raise LocalProtocolError(
                f"TC VC {vcid}: send SA {chosen.send_spi} ({chosen.send_sa.link.name} VCs"
                f" {sorted(chosen.send_sa.vcids)}) does not apply to it; give"
                f" vc_security={{{vcid}: ...}} with a TC SA of VC {vcid}"
            )
        out[vcid] = chosen
    return out


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

    def _key_management(
        self, packet: SpacePacket, carried_by: frozenset[int]
    ) -> KeysChanged | ArsnSet | ArsnRead | ArsnReported | None:
        """The outcome of a key management PDU, or None: not one this end applies.
        ``carried_by``: the SPIs of the frames the packet arrived in (empty in the clear)."""
        return None

    def _tap(self, packet: bytes, now: float | None) -> None:
        if self.packet_tap is not None:
            self.packet_tap(packet, now)

    def _receive_packet(
        self, raw: bytes, now: float, carried_by: frozenset[int] = frozenset()
    ) -> None:
        self._tap(raw, now)
        try:
            packet = SpacePacket.from_bytes(raw)
            if packet.apid == CFDP_APID:
                self.counters.packets_received += 1
                self._events.append(CfdpPduReceived(packet.data, now))
                return
            changed = self._key_management(packet, carried_by)
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
    """Ground side: sends messages as CLTUs, receives a CADU byte stream.

    One FOP-1 per TC Virtual Channel of the link (CCSDS 232.1-B-2 2.2: COP-1 runs per
    VC); each CLCW heard in a TM frame's OCF goes to the FOP-1 of the VC it names
    (its VCID field, CCSDS 232.0-B-4 4.2.1.6).
    """

    def __init__(
        self,
        config: LinkConfig,
        security: LinkSecurity | None = None,
        *,
        vc_security: Mapping[int, LinkSecurity] | None = None,
    ) -> None:
        """``security``: SDLS (CCSDS 355.0-B-2), None for a link in the clear; it sends
        every TC VC whose VC its send SA applies to, ``vc_security`` the others."""
        super().__init__(config, GroundCounters())
        #: SDLS (CCSDS 355.0-B-2): None sends and accepts frames in the clear.
        self.security = security
        self._tc_security = _tc_send_security(config, security, vc_security)
        #: Each TC VC as FOP-1 and segmentation see it (shorter by its SDLS overhead).
        self._tcs = {
            vcid: _plain_tc(config.tc_for(vcid), 0 if sec is None else sec.overhead)
            for vcid, sec in self._tc_security.items()
        }
        self._tc = self._tcs[config.tc_vcid]
        self._sequencer = PacketSequencer(packet_type=PacketType.TC)
        self._synchronizer = CaduSynchronizer(config.tm_coding)
        self._depacketizer = TmDepacketizer(
            _plain_tm(config, _peer_overhead(security, Link.TM, config.tm_vcid)),
            vcids=(config.tm_vcid, config.tm_oid_vcid, config.cfdp_tm_vcid),
        )
        #: FOP-1 of each TC virtual channel (CCSDS 232.1-B-2 section 5), by VCID.
        self.fops = {vcid: FopEngine(config.fop_for(tc)) for vcid, tc in self._tcs.items()}
        #: FOP-1 of the VC of the inference requests (``config.tc_vcid``).
        self.fop = self.fops[config.tc_vcid]
        self._outgoing: deque[bytes] = deque()
        #: The last CLCW heard in a TM frame's OCF (None until one arrives), any VC.
        self.last_clcw: Clcw | None = None
        #: TC VCs whose FOP-1 alerted on T1 (Transmission_Limit x T1 without a CLCW
        #: answering, table 5-1 E17, or E18 in S5): initiated again once one is heard.
        self._unheard: set[int] = set()

    def send(self, message: Message, now: float, *, expedited: bool = False) -> None:
        """Queue ``message`` for the uplink, on the VC and MAP its APID is routed to.

        Sequence-controlled (Type-AD, FOP-1 retransmits until the FARM-1 acknowledges)
        unless ``expedited`` (Type-BD, sent once).
        """
        apid, data = encode_message(message)
        self._send_packet(apid, data, now, expedited=expedited)

    def send_key_management(self, pdu: bytes, now: float) -> None:
        """Queue one SDLS key management PDU (OTAR, activation, deactivation) on APID
        KEY_MANAGEMENT, sequence-controlled so that it arrives once and in order, on
        the VC and MAP it is routed to (``LinkConfig.tc_routes``)."""
        self._send_packet(Apid.KEY_MANAGEMENT, pdu, now, expedited=False)

    def read_arsn(self, spi: int, now: float) -> None:
        """Ask the spacecraft for the highest ARSN SA ``spi`` accepted (Read ARSN, CCSDS
        355.1-B-1), sequence-controlled on the VC of APID KEY_MANAGEMENT; the reply comes
        down as an :class:`ArsnReported` event.  The spacecraft answers only when the
        request came under its management SA (``LinkConfig.tc_routes`` and
        ``vc_security``)."""
        self.send_key_management(ReadArsnPdu(spi).to_bytes(), now)

    def _key_management(
        self, packet: SpacePacket, carried_by: frozenset[int]
    ) -> ArsnReported | None:
        """Downlink APID KEY_MANAGEMENT: the reply to Read ARSN, nothing else."""
        if packet.apid != Apid.KEY_MANAGEMENT:
            return None
        pdu = decode_ep_pdu(packet.data)
        if not isinstance(pdu, ArsnReplyPdu):
            raise KeyManagementError(
                "bad-pdu",
                "CCSDS 355.1-B-1",
                f"{type(pdu).__name__} on the downlink; only a Read ARSN reply comes down",
            )
        return ArsnReported(spi=pdu.spi, arsn=pdu.arsn)

    def send_cfdp(self, pdu: bytes, now: float, *, expedited: bool = False) -> None:
        """Queue one CFDP PDU (CCSDS 727.0-B-5) on APID CFDP_APID, on the VC and MAP it
        is routed to (``LinkConfig.tc_routes``): sequence-controlled (Type-AD, COP-1
        retransmits) unless ``expedited`` (Type-BD, sent once: CFDP's NAKs repair it)."""
        self._send_packet(CFDP_APID, pdu, now, expedited=expedited)

    @property
    def sync_state(self) -> SyncState:
        """The downlink's frame synchronizer state (search, check, lock): the frame
        lock the operator page shows."""
        return self._synchronizer.state

    @property
    def uplink_clear(self) -> bool:
        """No FOP-1 holds a command unacknowledged or waiting, on any TC VC."""
        return all(
            fop.sent_queue_length == 0 and fop.backlog_length == 0 and fop.wait_queue_empty
            for fop in self.fops.values()
        )

    def _send_packet(self, apid: int, data: bytes, now: float, *, expedited: bool) -> None:
        vcid, map_id = self.config.route(apid)
        fop = self.fops[vcid]
        packet = self._sequencer.packet(apid, data).to_bytes()
        self._tap(packet, now)
        if (
            not expedited
            and fop.state is FopState.S6
            and not fop.suspended
            and vcid not in self._unheard
        ):
            # Resynchronize the FARM-1 whatever an earlier session left it at.
            fop.initiate_ad_with_set_vr(0, now)
        for unit in packet_processing([packet], config=self._tcs[vcid], map_id=map_id):
            if expedited:
                fop.send_bd(unit.data, now, segment_header=unit.segment_header)
            else:
                fop.send_ad(unit.data, now, segment_header=unit.segment_header)
        self._flush_fop(now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (a FOP-1 T1), or None."""
        return min(
            (t for f in self.fops.values() if (t := f.get_timer()) is not None), default=None
        )

    def handle_timer(self, now: float) -> None:
        """Run the timers that are due (FOP-1 T1 retransmission, per VC)."""
        due = False
        for vcid, fop in self.fops.items():
            timer = fop.get_timer()
            if timer is not None and now >= timer:
                self._resync_arsn(vcid, now)
                fop.handle_timer(now)
                due = True
        if due:
            self._flush_fop(now)

    def _resync_arsn(self, vcid: int, now: float) -> None:
        """Before FOP-1 retransmits on TC VC ``vcid``, send Set ARSN (CCSDS 355.1-B-1)
        when its SA's receiver takes only a bounded jump ahead (``max_arsn_jump``).

        Every transmission takes a fresh ARSN, so retransmissions into a loss of signal
        can carry the sender past such a window for good.  Set ARSN, sent expedited on
        the VC of APID KEY_MANAGEMENT under that VC's (management) SA, moves the
        receiver up to the last ARSN used, so the retransmissions that follow it are
        inside; it never moves a receiver back, so a lost or stale one is harmless.
        """
        security = self._tc_security.get(vcid)
        if security is None or not security.window_limited:
            return
        management_vcid, _ = self.config.route(Apid.KEY_MANAGEMENT)
        management = self._tc_security.get(management_vcid)
        if management_vcid == vcid or management is None or not management.send_sa.management:
            return  # no way around the window on this link: see docs/interop.md
        logger.info("> Set ARSN for SPI %d before retransmitting on VC %d", security.send_spi, vcid)
        self._send_packet(Apid.KEY_MANAGEMENT, security.set_arsn_pdu(), now, expedited=True)

    def _flush_fop(self, now: float) -> None:
        retransmitted = 0
        for vcid, fop in self.fops.items():
            while (notification := fop.next_event()) is not None:
                if isinstance(notification, Alert):
                    logger.warning(
                        "COP-1 alert %s in %s on VC %d",
                        notification.code.name,
                        notification.state,
                        vcid,
                    )
                    self.counters.cop1_alerts += 1
                    if notification.code is AlertCode.T1:
                        self._unheard.add(vcid)
                    self._events.append(notification)
            if (
                fop.state is FopState.S6
                and fop.backlog_length
                and not fop.suspended
                and vcid not in self._unheard
            ):
                # After Alert [T1] only once the spacecraft is heard again: a Set V(R)
                # into silence would only go round S5 to the next Alert [T1].
                fop.initiate_ad_with_set_vr(fop.vs, now)
            limit = self.config.fop_transmission_limit
            if fop.transmission_limit != limit and fop.transmission_count < limit:
                fop.set_transmission_limit(limit, now)  # back from a resume (below)
            retransmitted += fop.stats.ad_retransmitted + fop.stats.bc_retransmitted
            security = self._tc_security[vcid]
            for plain in fop.frames_to_send():
                # Every transmission gets a fresh IV and sequence number: a FOP-1
                # retransmission re-sent as stored would be refused as a replay.
                frame = (
                    plain
                    if security is None
                    else security.protect_tc(plain, self.config.tc_for(vcid))
                )
                cltu = encode_cltu(frame.to_bytes(), randomize=self.config.tc_randomize)
                self.counters.tc_frames_sent += 1
                self.counters.cltus_sent += 1
                self.counters.uplink_octets += len(cltu)
                self._outgoing.append(cltu)
        self.counters.tc_frames_retransmitted = retransmitted

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
                if event.vcid in (self.config.tm_vcid, self.config.cfdp_tm_vcid):
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
            clcw = Clcw.from_int(ocf)
            fop = self.fops.get(clcw.vcid)
            if fop is None:
                raise RemoteProtocolError(
                    Layer.CLCW,
                    "unknown-vcid",
                    "CCSDS 232.0-B-4 4.2.1.6",
                    f"CLCW of TC VC {clcw.vcid}; FOP-1 runs on VCs {sorted(self.fops)}",
                )
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, at=now))
            return
        self.last_clcw = clcw
        self._unheard.discard(clcw.vcid)
        if fop.suspended:
            # Timeout_Type 1 suspended FOP-1 (232.1-B-2 5.2.16) and the spacecraft is
            # heard again: allow Transmission_Limit more transmissions (E38) and Resume
            # (E31-E34, 5.2.17); Resume alone leaves Transmission_Count at the limit.
            # Resumed first, so that this CLCW acknowledges what it reports rather
            # than being ignored in S6.
            limit = fop.transmission_count + self.config.fop_transmission_limit
            fop.set_transmission_limit(limit, now)
            fop.resume_ad(now)
            logger.info("FOP-1 VC %d resumed on a CLCW, Transmission_Limit %d", clcw.vcid, limit)
        dropped = fop.receive_clcw(clcw, now)
        if dropped is not None:
            self._drop(dropped)
        self._flush_fop(now)


class SpacecraftEndpoint(_Endpoint[SpacecraftCounters]):
    """Spacecraft side: receives a CLTU byte stream, sends messages as CADUs.

    One FARM-1 per TC Virtual Channel of the link (CCSDS 232.1-B-2 2.2).  A TM frame
    has one OCF (CCSDS 132.0-B-3 4.1.5), which holds one CLCW, and a CLCW reports on
    the one VC its VCID field names (CCSDS 232.0-B-4 4.2.1.6): with several TC VCs
    the CLCWs take turns, one per TM frame, round robin, so that each VC's FOP-1
    hears its report at least once every N frames (N TC VCs), however busy the others.
    With one TC VC every frame carries its CLCW, as before.
    """

    def __init__(self, config: LinkConfig, security: LinkSecurity | None = None) -> None:
        super().__init__(config, SpacecraftCounters())
        #: SDLS (CCSDS 355.0-B-2): None sends and accepts frames in the clear.
        self.security = security
        if security is not None:
            sa = security.send_sa
            for name, vcid in (("tm_vcid", config.tm_vcid), ("tm_oid_vcid", config.tm_oid_vcid)):
                if sa.link != Link.TM or vcid not in sa.vcids:
                    raise LocalProtocolError(
                        f"{name}={vcid}: send SA {sa.spi} ({sa.link.name} VCs"
                        f" {sorted(sa.vcids)}) does not apply to it"
                    )
        self._tc = config.tc
        self._sequencer = PacketSequencer(packet_type=PacketType.TM)
        self._decoder = CltuDecoder(DecoderMode.CORRECT, randomize=config.tc_randomize)
        self._reassembler = TcReassembler(deblock_packets=True)
        self._multiplexer = TmMultiplexer(
            _plain_tm(config, 0 if security is None else security.overhead),
            vcids=(config.tm_vcid, config.cfdp_tm_vcid),
            oid_vcid=config.tm_oid_vcid,
        )
        #: FARM-1 of each TC virtual channel (CCSDS 232.1-B-2 section 6), by VCID; their
        #: CLCWs go down in turn in the OCF of every TM frame, idle frames included.
        self.farms = {vcid: FarmEngine(config.farm_for(vcid)) for vcid in config.tc_vcids}
        #: FARM-1 of the VC of the inference requests (``config.tc_vcid``).
        self.farm = self.farms[config.tc_vcid]
        #: The CLCW each VC last reported, and whose turn is next (round robin).
        self._reported = {vcid: farm.clcw() for vcid, farm in self.farms.items()}
        self._clcw_turn: deque[int] = deque(self.farms)
        #: Applies the key management PDUs of APID KEY_MANAGEMENT to the security's key
        #: ring (None without SDLS); its OTAR replay state is the caller's to persist.
        self.key_manager = (
            None if security is None else KeyManager(security.table.keys, table=security.table)
        )
        #: The SPIs of the frames of the unit being rebuilt, per (VC, MAP): a key
        #: management PDU is judged by the SAs it arrived under (Set ARSN: management only).
        self._carriers: dict[tuple[int, int | None], frozenset[int]] = {}

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
            vcid = peek_vcid(data)
            farm = self.farms.get(vcid)
            # An unknown VC's frame is decoded as one of ours first, so that a frame
            # the channel corrupted is counted as such (FECF) rather than as a VC.
            tc = self._tc if farm is None else farm.config.tc
            frame = TcFrame.from_bytes(data[:length], config=dataclasses.replace(tc, vcid=vcid))
            if farm is None:
                raise RemoteProtocolError(
                    Layer.TC_FRAME,
                    "unknown-vcid",
                    "CCSDS 232.0-B-4 4.1.2.6, VC Demultiplexing Function",
                    f"TC VC {vcid}; FARM-1 runs on VCs {sorted(self.farms)}",
                )
            spi = None
            if self.security is not None:
                # The Security Header opens with the SPI (CCSDS 355.0-B-2 4.1.1.2).
                spi = int.from_bytes(frame.data[:SPI_LENGTH], "big")
                frame = self.security.unprotect_tc(frame)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(data), at=now))
            return
        self.counters.tc_frames_received += 1
        result = farm.receive_frame(frame)
        if not result.accepted:
            self.counters.tc_frames_rejected += int(result.discarded is not None)
            return
        self._note_carrier(frame, spi)
        self._reassembler.receive_frame(frame, now=now)
        if frame.frame_type is FrameType.AD:
            # The packet went straight to the application: the buffer is free again.
            farm.buffer_released()
        while (event := self._reassembler.next_event()) is not None:
            if isinstance(event, UnitReceived):
                self._receive_unit(event, now)
            else:
                self._drop(event)

    def _note_carrier(self, frame: TcFrame, spi: int | None) -> None:
        """Remember the SA of an accepted data frame for the unit it carries: a FIRST or
        UNSEGMENTED segment (232.0-B-4 4.1.3.2.2.2) starts a unit, the others add to it."""
        if frame.frame_type is FrameType.BC:
            return  # control commands carry no unit (and are sent in the clear)
        header = frame.segment_header
        key = (frame.vcid, None if header is None else header.map_id)
        fresh = header is None or header.sequence_flags in (
            SequenceFlags.FIRST,
            SequenceFlags.UNSEGMENTED,
        )
        carriers = frozenset() if fresh else self._carriers.get(key, frozenset())
        self._carriers[key] = carriers if spi is None else carriers | {spi}

    def _receive_unit(self, unit: UnitReceived, now: float) -> None:
        """MAP demultiplexing: a packet counts only on the VC and MAP its APID is
        routed to (``LinkConfig.tc_routes``), key management on its own VC included."""
        carried_by = self._carriers.get((unit.vcid, unit.map_id), frozenset())
        maps = self.config.map_ids(unit.vcid)
        try:
            if unit.map_id not in maps:
                raise RemoteProtocolError(
                    Layer.TC_FRAME,
                    "unknown-map",
                    "CCSDS 232.0-B-4 4.1.3.2.2.3, MAP Demultiplexing Function",
                    f"MAP {unit.map_id} on TC VC {unit.vcid}, which carries MAPs {sorted(maps)}",
                )
            apid = SpacePacket.from_bytes(unit.data).apid
            if self.config.route(apid) != (unit.vcid, unit.map_id):
                vcid, map_id = self.config.route(apid)
                raise RemoteProtocolError(
                    Layer.TC_FRAME,
                    "wrong-map",
                    "CCSDS 232.0-B-4 4.1.3.2.2.3, MAP Demultiplexing Function",
                    f"APID {apid:#05x} on VC {unit.vcid} MAP {unit.map_id};"
                    f" it is routed to VC {vcid} MAP {map_id}",
                )
        except RemoteProtocolError as exc:
            if exc.layer is not Layer.TC_FRAME:
                # Not a Space Packet: the packet layer says why, as it always did.
                self._receive_packet(unit.data, now, carried_by)
            else:
                self._drop(Dropped.from_error(exc, octets=len(unit.data), at=now))
            return
        self._receive_packet(unit.data, now, carried_by)

    def _key_management(
        self, packet: SpacePacket, carried_by: frozenset[int]
    ) -> KeysChanged | ArsnSet | ArsnRead | None:
        if packet.apid != Apid.KEY_MANAGEMENT:
            return None
        if self.key_manager is None:
            raise KeyManagementError(
                "key-management-off", "CCSDS 355.1-B-1", "SDLS is off on this link"
            )
        outcome = self.key_manager.handle_pdu(packet.data, carried_by=carried_by)
        if isinstance(outcome, ArsnRead):
            # The reply goes down on APID KEY_MANAGEMENT (355.1-B-1 Read ARSN reply).
            reply = self._sequencer.packet(Apid.KEY_MANAGEMENT, outcome.reply).to_bytes()
            self._tap(reply, None)
            self._multiplexer.queue_packet(self.config.tm_vcid, reply)
        return outcome

    # -- downlink ----------------------------------------------------------------------

    def send(self, message: Message, now: float | None = None) -> None:
        """Queue ``message`` for the downlink on its APID."""
        apid, data = encode_message(message)
        packet = self._sequencer.packet(apid, data).to_bytes()
        self._tap(packet, now)
        self._multiplexer.queue_packet(self.config.tm_vcid, packet)

    def send_cfdp(self, pdu: bytes, now: float | None = None) -> None:
        """Queue one CFDP PDU (CCSDS 727.0-B-5) for the downlink, APID CFDP_APID on
        the CFDP VC (``LinkConfig.cfdp_tm_vcid``)."""
        packet = self._sequencer.packet(CFDP_APID, pdu).to_bytes()
        self._tap(packet, now)
        self._multiplexer.queue_packet(self.config.cfdp_tm_vcid, packet)

    def cfdp_pending_octets(self) -> int:
        """Octets of CFDP packets waiting on the CFDP VC (flow control for a sender)."""
        return self._multiplexer.packetizer(self.config.cfdp_tm_vcid).pending_octets

    @property
    def pending_octets(self) -> int:
        """Octets of packets waiting for a TM frame."""
        return self._multiplexer.pending_octets

    @property
    def clcw(self) -> Clcw:
        """The CLCW the FARM-1 of ``config.tc_vcid`` reports now."""
        return self.farm.clcw()

    @property
    def clcw_changed(self) -> bool:
        """A FARM-1's report changed since its VC's CLCW last went down: send frames
        soon, so that FOP-1 hears the acknowledgement without waiting for idle frames
        (with N TC VCs, within N frames)."""
        return any(farm.clcw() != self._reported[vcid] for vcid, farm in self.farms.items())

    def next_cadu(self) -> bytes:
        """The next CADU of the constant-rate downlink: data if any waits, else idle.

        Every frame, idle (OID) frames included, carries a CLCW in its OCF: that of
        the next TC VC in turn.
        """
        vcid = self._clcw_turn[0]
        self._clcw_turn.rotate(-1)
        clcw = self.farms[vcid].clcw()
        self._reported[vcid] = clcw
        frame = self._multiplexer.next_frame(ocf=clcw.to_int())
        idle = frame.is_idle
        if self.security is not None:
            frame = self.security.protect_tm(frame, self.config.tm)
        if idle:
            self.counters.idle_frames_sent += 1
        cadu = encode_cadu(frame.to_bytes(), self.config.tm_coding)
        self.counters.cadus_sent += 1
        self.counters.downlink_octets += len(cadu)
        return cadu


#: IVs reserved at a time by the in-memory counters of :func:`ephemeral_security`.
_IV_BLOCK = 1024
#: The master key of :func:`ephemeral_security` (master key ids are below 128,
#: session keys from 128 on: ``linkstack.sdls.keys``).
_MASTER_KEY_ID = 0
_FIRST_SESSION_KEY_ID = 128


def _reserve_in_memory(counter: TxCounter) -> None:
    """Reserve IVs without a counter file: the keys live only as long as the process."""
    if counter.remaining_reserved <= 0:
        counter.confirm_reservation(counter.plan_reservation(_IV_BLOCK))


@dataclass(slots=True)
class EphemeralSecurity:
    """SDLS for both ends of a simulated link, keys made for this run only.

    One TC SA (and session key) per TC VC of the link, since a TC SA applies to one
    VC; one TM SA for the TM VCs; master key 0 for OTAR.  :meth:`rekey` gives the key
    management PDUs of one OTAR of a new session key and its activation.
    """

    ground: LinkSecurity
    spacecraft: LinkSecurity
    #: The ground's sending SDLS of each TC VC other than ``config.tc_vcid``.
    tc_vc_security: dict[int, LinkSecurity]
    random_octets: Callable[[int], bytes]
    _master_counter: TxCounter = field(init=False)

    def __post_init__(self) -> None:
        self._master_counter = TxCounter(master_counter_label(_MASTER_KEY_ID), limit=(1 << 96) - 1)

    @property
    def security(self) -> tuple[LinkSecurity, LinkSecurity]:
        """(ground, spacecraft), as ``Mission(security=...)`` takes them."""
        return self.ground, self.spacecraft

    def rekey(self, key_id: int) -> tuple[bytes, bytes]:
        """The OTAR of a new session key ``key_id`` under the master key, then its
        activation; the ground's key ring holds the key (ACTIVE) from now on."""
        material = KeyMaterial(self.random_octets(32))
        keys = self.ground.table.keys
        _reserve_in_memory(self._master_counter)
        otar = build_otar(
            keys,
            master_key_id=_MASTER_KEY_ID,
            counter=self._master_counter,
            new_keys=[(key_id, material)],
        )
        keys.add(key_id, material, KeyState.PREACTIVE)
        keys.transition(key_id, KeyState.ACTIVE)
        return otar.to_bytes(), KeyActivationPdu((key_id,)).to_bytes()


def ephemeral_security(
    link: LinkConfig, random_octets: Callable[[int], bytes]
) -> EphemeralSecurity:
    """SDLS for both ends of ``link`` under fresh keys from ``random_octets``."""
    key_ids = {vcid: _FIRST_SESSION_KEY_ID + i for i, vcid in enumerate(link.tc_vcids)}
    tm_key_id = _FIRST_SESSION_KEY_ID + len(key_ids)
    materials = {
        key_id: random_octets(32) for key_id in (_MASTER_KEY_ID, *key_ids.values(), tm_key_id)
    }
    tc_spis = {vcid: 1 + i for i, vcid in enumerate(link.tc_vcids)}
    tm_spi = 1 + len(tc_spis)
    sas = [
        *(
            SecurityAssociation(
                spi=tc_spis[vcid], link=Link.TC, vcids=frozenset({vcid}), key_id=key_ids[vcid]
            )
            for vcid in link.tc_vcids
        ),
        SecurityAssociation(
            spi=tm_spi,
            link=Link.TM,
            vcids=frozenset({link.tm_vcid, link.tm_oid_vcid}),
            key_id=tm_key_id,
        ),
    ]

    def end(send_spi: int) -> tuple[SaTable, LinkSecurity]:
        # Each end its own key ring and SA table (receive windows are per end).
        keys = KeyRing(
            (key_id, KeyMaterial(material), KeyState.ACTIVE)
            for key_id, material in materials.items()
        )
        table = SaTable(sas, keys)
        return table, _sender(table, send_spi)

    def _sender(table: SaTable, spi: int) -> LinkSecurity:
        return LinkSecurity(
            table=table,
            send_spi=spi,
            counter=TxCounter.for_sa(table[spi]),
            reserve=_reserve_in_memory,
        )

    ground_table, ground = end(tc_spis[link.tc_vcid])
    _, spacecraft = end(tm_spi)
    others = {
        vcid: _sender(ground_table, spi) for vcid, spi in tc_spis.items() if vcid != link.tc_vcid
    }
    return EphemeralSecurity(ground, spacecraft, others, random_octets)


__all__ = [
    "Apid",
    "CfdpPduReceived",
    "EphemeralSecurity",
    "Event",
    "GroundCounters",
    "GroundEndpoint",
    "KeysChanged",
    "LinkConfig",
    "MessageReceived",
    "SpacecraftCounters",
    "SpacecraftEndpoint",
    "TcRoute",
    "ephemeral_security",
    "route_key_management",
]
