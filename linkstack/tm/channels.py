"""TM Space Data Link Protocol (CCSDS 132.0-B-3): the virtual and master channel engines.

Built on the frame codec of :mod:`linkstack.tm.frame`:

* :class:`OidFill`: the pseudo-random data field of OID frames (4.1.4.6.2).
* :class:`TmPacketizer`: packs Space Packets of one virtual channel into frame data
  fields (packets span frames; the First Header Pointer marks the first header).
* :class:`TmMultiplexer`: the master channel; holds the MC frame count, schedules the
  virtual channels, inserts the caller's OCF (the CLCW) into every frame and sends an
  OID frame when no packet waits.
* :class:`TmDepacketizer`: the receiving engine; extracts packets across frames,
  detects lost frames from the counts and resynchronizes on the First Header Pointer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from linkstack.errors import DropCounter, Dropped, LocalProtocolError, RemoteProtocolError
from linkstack.packets.space_packet import (
    IDLE_APID,
    MAX_PACKET_LENGTH,
    MIN_PACKET_LENGTH,
    SEQUENCE_COUNT_MODULUS,
    PacketType,
    idle_packet,
    peek_packet_length,
)
from linkstack.packets.space_packet import (
    PRIMARY_HEADER_LENGTH as PACKET_HEADER_LENGTH,
)
from linkstack.tm.frame import (
    _CLAUSE_FHP,
    _CLAUSE_VC_COUNT,
    _LAYER,
    DEFAULT_OID_VCID,
    FHP_IDLE_ONLY,
    FHP_NO_PACKET_START,
    FRAME_COUNT_MODULUS,
    MAX_VCID,
    TmChannelConfig,
    TmFrame,
    _check,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# OID fill: CCSDS 132.0-B-3 4.1.4.6.2, a 32-cell Fibonacci LFSR D0+D1+D2+D22+D32,
# seeded all ones and never restarted; its first octets are FF FF FF FF 6D B6 D8 61 45 1F.

_OID_SEED: Final = 0xFFFFFFFF  # CCSDS 132.0-B-3 4.1.4.6.2.1


def _oid_step8(state: int) -> tuple[int, int]:
    """Eight register steps: (octet out, new state). Stage 1 is bit 31, stage 32 bit 0."""
    out = 0
    for _ in range(8):
        out = out << 1 | (state & 1)
        feedback = (state >> 31 ^ state >> 30 ^ state >> 10 ^ state) & 1
        state = state >> 1 | feedback << 31
    return out, state


def _oid_tables() -> tuple[list[list[int]], list[list[int]]]:
    # The register is linear over GF(2): eight steps of any state are the XOR of eight
    # steps of its four octets taken alone.
    outs = [[0] * 256 for _ in range(4)]
    states = [[0] * 256 for _ in range(4)]
    for lane in range(4):
        for value in range(256):
            outs[lane][value], states[lane][value] = _oid_step8(value << (8 * lane))
    return outs, states


_OID_OUT, _OID_NEXT = _oid_tables()


class OidFill:
    """The OID data-field generator of CCSDS 132.0-B-3 4.1.4.6.2 (state kept across frames)."""

    def __init__(self) -> None:
        self._state = _OID_SEED

    def take(self, length: int) -> bytes:
        """The next ``length`` octets of the sequence."""
        out = bytearray(length)
        state = self._state
        o0, o1, o2, o3 = _OID_OUT
        n0, n1, n2, n3 = _OID_NEXT
        for i in range(length):
            b0, b1, b2, b3 = state & 0xFF, state >> 8 & 0xFF, state >> 16 & 0xFF, state >> 24
            out[i] = o0[b0] ^ o1[b1] ^ o2[b2] ^ o3[b3]
            state = n0[b0] ^ n1[b1] ^ n2[b2] ^ n3[b3]
        self._state = state
        return bytes(out)


# --------------------------------------------------------------------------------------
# Sending side.


@dataclass(slots=True)
class PacketizerStats:
    """Counters of a :class:`TmPacketizer`."""

    #: Frames made on this VC, OID frames included.
    frames: int = 0
    #: Space Packets queued by the caller (Idle Packets not counted).
    packets: int = 0
    #: Idle Packets (APID 0x7FF) made to complete a data field.
    idle_packets: int = 0
    #: OID frames made on this VC (CCSDS 132.0-B-3 4.1.4.6).
    oid_frames: int = 0


class TmPacketizer:
    """Packs the Space Packets of one virtual channel into frame data fields (sans-I/O).

    Packets are inserted contiguously and may span frames (CCSDS 132.0-B-3 4.1.4.2.2);
    the First Header Pointer locates the first packet header that starts in each frame,
    or is '11111111111' when a long packet fills the whole data field. A partly filled
    data field is completed with an Idle Packet (APID 0x7FF) so that a waiting packet
    is never held back; an Idle Packet that does not fit spills into the next frame.
    The VC Frame Count lives here.
    """

    def __init__(
        self, config: TmChannelConfig, vcid: int, *, packet_type: PacketType = PacketType.TM
    ) -> None:
        _check("vcid", vcid, 0, MAX_VCID, "CCSDS 132.0-B-3 4.1.2.3")
        self.config = config
        self.vcid = vcid
        self._packet_type = packet_type
        self._queue: deque[bytes] = deque()
        self._offset = 0  # octets of _queue[0] already sent
        self._pending = 0
        self._vc_count = 0
        self._idle_count = 0
        self.stats = PacketizerStats()

    @property
    def pending_octets(self) -> int:
        """Octets queued and not yet placed in a frame (idle spill included)."""
        return self._pending

    @property
    def at_packet_boundary(self) -> bool:
        """True when no packet is half sent, so an OID frame may go on this VC."""
        return self._offset == 0 and not self._queue

    @property
    def vc_count(self) -> int:
        """VC Frame Count of the next frame (4.1.2.6)."""
        return self._vc_count

    def queue_packet(self, packet: bytes) -> None:
        """Queue one whole encoded Space Packet for this VC."""
        if not MIN_PACKET_LENGTH <= len(packet) <= MAX_PACKET_LENGTH:
            raise LocalProtocolError(
                f"packet of {len(packet)} octets outside {MIN_PACKET_LENGTH}.."
                f"{MAX_PACKET_LENGTH} (CCSDS 133.0-B-2 4.1.3.5)"
            )
        try:
            announced = peek_packet_length(packet)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"not a Space Packet: {exc}") from exc
        if announced != len(packet):
            raise LocalProtocolError(
                f"packet of {len(packet)} octets announces {announced} (CCSDS 133.0-B-2 4.1.3.5)"
            )
        self._queue.append(bytes(packet))
        self._pending += len(packet)
        self.stats.packets += 1

    def next_data_field(self, *, flush: bool = True) -> tuple[bytes, int] | None:
        """The next data field and its First Header Pointer, or None.

        None when nothing is queued, or when ``flush`` is False and the queue does not
        fill a whole data field yet. With ``flush`` the field is completed with an
        Idle Packet.
        """
        capacity = self.config.data_field_length
        if self._pending == 0 or (not flush and self._pending < capacity):
            return None
        out = bytearray()
        fhp: int | None = None
        while len(out) < capacity:
            if not self._queue:
                room = capacity - len(out)
                spill = idle_packet(
                    max(room, MIN_PACKET_LENGTH),
                    sequence_count=self._idle_count,
                    packet_type=self._packet_type,
                ).to_bytes()
                self._idle_count = (self._idle_count + 1) % SEQUENCE_COUNT_MODULUS
                self._queue.append(spill)
                self._pending += len(spill)
                self.stats.idle_packets += 1
            head = self._queue[0]
            if self._offset == 0 and fhp is None:
                fhp = len(out)
            take = min(len(head) - self._offset, capacity - len(out))
            out += head[self._offset : self._offset + take]
            self._offset += take
            self._pending -= take
            if self._offset == len(head):
                self._queue.popleft()
                self._offset = 0
        return bytes(out), FHP_NO_PACKET_START if fhp is None else fhp

    def next_frame(
        self,
        *,
        mc_count: int,
        ocf: int | None = None,
        secondary_header: bytes = b"",
        flush: bool = True,
    ) -> TmFrame | None:
        """The next packet frame of this VC (see :meth:`next_data_field`), or None."""
        _check_trailer(self.config, ocf, secondary_header)
        field_and_fhp = self.next_data_field(flush=flush)
        if field_and_fhp is None:
            return None
        data, fhp = field_and_fhp
        return self._frame(mc_count, ocf, secondary_header, data, fhp)

    def oid_frame(
        self, *, mc_count: int, fill: OidFill, ocf: int | None = None, secondary_header: bytes = b""
    ) -> TmFrame:
        """An OID frame on this VC (4.1.4.6): FHP '11111111110', data from ``fill``."""
        _check_trailer(self.config, ocf, secondary_header)
        if not self.at_packet_boundary:
            raise LocalProtocolError(
                f"VC {self.vcid} is in the middle of a packet ({self._pending} octets pending): "
                "an OID frame would cut it (CCSDS 132.0-B-3 4.1.4.2.2)"
            )
        self.stats.oid_frames += 1
        data = fill.take(self.config.data_field_length)
        return self._frame(mc_count, ocf, secondary_header, data, FHP_IDLE_ONLY)

    def _frame(
        self, mc_count: int, ocf: int | None, secondary_header: bytes, data: bytes, fhp: int
    ) -> TmFrame:
        frame = TmFrame(
            scid=self.config.scid,
            vcid=self.vcid,
            mc_count=mc_count,
            vc_count=self._vc_count,
            first_header_pointer=fhp,
            data=data,
            ocf=ocf,
            fecf_present=self.config.fecf_present,
            secondary_header=bytes(secondary_header),
        )
        self._vc_count = (self._vc_count + 1) % FRAME_COUNT_MODULUS
        self.stats.frames += 1
        return frame


def _check_trailer(config: TmChannelConfig, ocf: int | None, secondary_header: bytes) -> None:
    if config.ocf_present and ocf is None:
        raise LocalProtocolError(
            "the channel carries an OCF in every frame: pass ocf= (CCSDS 132.0-B-3 4.1.2.4)"
        )
    if not config.ocf_present and ocf is not None:
        raise LocalProtocolError(
            f"ocf={ocf:#010x} on a channel without OCF (CCSDS 132.0-B-3 4.1.2.4)"
        )
    if len(secondary_header) != config.secondary_header_length:
        raise LocalProtocolError(
            f"secondary header of {len(secondary_header)} octets, the channel's has "
            f"{config.secondary_header_length} (CCSDS 132.0-B-3 4.1.3)"
        )


@dataclass(slots=True)
class MultiplexerStats:
    """Counters of a :class:`TmMultiplexer`."""

    #: Frames released on the master channel, OID frames included.
    frames: int = 0
    #: OID frames released because no VC had a frame to send (CCSDS 132.0-B-3 4.1.4.6).
    oid_frames: int = 0


class TmMultiplexer:
    """The master channel: MC Frame Count, VC scheduling, OCF insertion, OID frames.

    Every call to :meth:`next_frame` releases one frame, as a constant-rate physical
    channel needs: the next VC with packets waiting (round robin), else an OID frame on
    ``oid_vcid``. CCSDS 132.0-B-3 4.1.4.6 requires the OID frame's VCID to be one used
    for packets, so ``oid_vcid`` (7 by default, as ECSS missions do) is always set up as
    a packet VC and the receiver must treat it as one.
    """

    def __init__(
        self,
        config: TmChannelConfig,
        *,
        vcids: Iterable[int] = (0,),
        oid_vcid: int = DEFAULT_OID_VCID,
        packet_type: PacketType = PacketType.TM,
    ) -> None:
        self.config = config
        self.oid_vcid = oid_vcid
        order = list(dict.fromkeys([*vcids, oid_vcid]))
        self._vcs = {v: TmPacketizer(config, v, packet_type=packet_type) for v in order}
        self._order: deque[int] = deque(order)
        self._mc_count = 0
        self._fill = OidFill()
        self.stats = MultiplexerStats()

    @property
    def mc_count(self) -> int:
        """MC Frame Count of the next frame (4.1.2.5)."""
        return self._mc_count

    def packetizer(self, vcid: int) -> TmPacketizer:
        try:
            return self._vcs[vcid]
        except KeyError:
            raise LocalProtocolError(
                f"vcid={vcid} is not a VC of this master channel (have {sorted(self._vcs)})"
            ) from None

    def queue_packet(self, vcid: int, packet: bytes) -> None:
        self.packetizer(vcid).queue_packet(packet)

    @property
    def pending_octets(self) -> int:
        return sum(vc.pending_octets for vc in self._vcs.values())

    def next_frame(
        self, *, ocf: int | None = None, secondary_header: bytes = b"", flush: bool = True
    ) -> TmFrame:
        """Release the next frame of the master channel, carrying ``ocf`` (the CLCW).

        With ``flush`` (the default) a VC with any packet waiting sends it now, padded
        with an Idle Packet; without it only VCs that fill a whole frame send, and the
        others wait behind OID frames.
        """
        _check_trailer(self.config, ocf, secondary_header)
        frame: TmFrame | None = None
        for _ in range(len(self._order)):
            vcid = self._order[0]
            self._order.rotate(-1)
            frame = self._vcs[vcid].next_frame(
                mc_count=self._mc_count, ocf=ocf, secondary_header=secondary_header, flush=flush
            )
            if frame is not None:
                break
        if frame is None:
            frame = self._vcs[self.oid_vcid].oid_frame(
                mc_count=self._mc_count, fill=self._fill, ocf=ocf, secondary_header=secondary_header
            )
            self.stats.oid_frames += 1
        self._mc_count = (self._mc_count + 1) % FRAME_COUNT_MODULUS
        self.stats.frames += 1
        logger.debug("> %s", frame)
        return frame


# --------------------------------------------------------------------------------------
# Receiving side.


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketReceived:
    """A whole Space Packet extracted from the frames of one VC."""

    vcid: int
    packet: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OcfReceived:
    """The Operational Control Field of a received frame (OID frames included)."""

    vcid: int
    ocf: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FramesLost:
    """A frame count jumped: ``missing`` frames did not arrive (mod 256).

    ``vcid`` is None for the Master Channel Frame Count (4.1.2.5), else the VC whose
    Virtual Channel Frame Count (4.1.2.6) jumped.
    """

    vcid: int | None
    expected: int
    got: int
    missing: int


TmEvent = PacketReceived | OcfReceived | FramesLost | Dropped


@dataclass(slots=True)
class _VcRx:
    expected_count: int | None = None
    synced: bool = False
    buf: bytearray = field(default_factory=bytearray)
    total: int = 0  # length of the packet in buf, 0 while its header is incomplete


@dataclass(slots=True)
class DepacketizerStats:
    """Counters of a :class:`TmDepacketizer`."""

    #: Frames accepted (undecodable ones are drops, not counted here).
    frames: int = 0
    #: OID frames (First Header Pointer '11111111110') discarded (CCSDS 132.0-B-3 4.1.4.6).
    oid_frames: int = 0
    #: Space Packets delivered (:class:`PacketReceived` events).
    packets: int = 0
    #: Idle Packets (APID 0x7FF) discarded.
    idle_packets: int = 0
    #: Frames missing from the VC Frame Count sequence (CCSDS 132.0-B-3 4.1.2.6).
    frames_lost: int = 0
    #: Data field octets passed over while resynchronizing on the First Header Pointer.
    octets_skipped: int = 0


class TmDepacketizer:
    """Extracts Space Packets from received TM frames (sans-I/O engine).

    ``receive_frame`` takes one frame as the channel decoder delivers it; events come
    out of ``next_event``. A counter gap, a corrupt frame or a First Header Pointer that
    disagrees with the packet lengths discards the partial packet and resynchronizes
    on the next First Header Pointer, so no packet is ever delivered corrupt. Idle
    Packets and OID frames are discarded and counted in ``stats``.
    """

    def __init__(self, config: TmChannelConfig, *, vcids: Iterable[int] | None = None) -> None:
        self.config = config
        #: The VCs of this master channel the receiver knows (None: any). A frame of
        #: another VC is dropped whole, OCF included ('unknown-vcid'): the Virtual
        #: Channel Demultiplexing Function has no user for it (CCSDS 132.0-B-3 4.3,
        #: on the VCID of 4.1.2.3).
        self.vcids: frozenset[int] | None = None if vcids is None else frozenset(vcids)
        if self.vcids is not None:
            for vcid in self.vcids:
                _check("vcid", vcid, 0, MAX_VCID, "CCSDS 132.0-B-3 4.1.2.3")
        self._events: deque[TmEvent] = deque()
        self._expected_mc: int | None = None
        self._vcs: dict[int, _VcRx] = {}
        self.drops = DropCounter()
        self.stats = DepacketizerStats()

    def next_event(self) -> TmEvent | None:
        return self._events.popleft() if self._events else None

    def receive_frame(self, frame: bytes) -> None:
        """Accept one whole frame (already RS-decoded); bad frames become Dropped events."""
        try:
            parsed = TmFrame.from_bytes(frame, config=self.config)
        except RemoteProtocolError as exc:
            self._drop(Dropped.from_error(exc, octets=len(frame)))
            return
        self.receive_tm_frame(parsed)

    receive_bytes = receive_frame

    def receive_tm_frame(self, frame: TmFrame) -> None:
        """Accept one already parsed (and, with SDLS, already unprotected) frame."""
        # The MC Frame Count runs over every frame of the master channel (4.1.2.5),
        # a frame of an unknown VC included.
        got_mc = frame.mc_count
        if self._expected_mc is not None and got_mc != self._expected_mc:
            self._lost(None, self._expected_mc, got_mc)
        self._expected_mc = (got_mc + 1) % FRAME_COUNT_MODULUS
        if self.vcids is not None and frame.vcid not in self.vcids:
            self._drop(
                Dropped(
                    layer=_LAYER,
                    reason="unknown-vcid",
                    clause="CCSDS 132.0-B-3 4.1.2.3",
                    octets=len(frame.data),
                    detail=f"VC {frame.vcid}; this receiver knows VCs {sorted(self.vcids)}",
                )
            )
            return
        self.stats.frames += 1

        vc = self._vcs.setdefault(frame.vcid, _VcRx())
        lost = vc.expected_count is not None and frame.vc_count != vc.expected_count
        if lost and vc.expected_count is not None:
            self._lost(frame.vcid, vc.expected_count, frame.vc_count)
        vc.expected_count = (frame.vc_count + 1) % FRAME_COUNT_MODULUS

        if frame.ocf is not None:
            self._events.append(OcfReceived(vcid=frame.vcid, ocf=frame.ocf))

        if lost:
            self._discard_partial(frame.vcid, vc, "frames-lost", _CLAUSE_VC_COUNT)
            vc.synced = False
        if frame.sync_flag:
            self._discard_partial(frame.vcid, vc, "sync-flag-set", "CCSDS 132.0-B-3 4.1.2.7.3")
            vc.synced = False
            self._drop(
                Dropped(
                    layer=_LAYER,
                    reason="sync-flag-set",
                    clause="CCSDS 132.0-B-3 4.1.2.7.3",
                    octets=len(frame.data),
                    detail=f"VC {frame.vcid} carries VCA_SDUs, not packets",
                )
            )
            return
        if frame.first_header_pointer == FHP_IDLE_ONLY:
            self.stats.oid_frames += 1
            # Packets never straddle an OID frame, so the VC is at a packet boundary.
            self._discard_partial(frame.vcid, vc, "packet-interrupted", f"{_CLAUSE_FHP}.5")
            vc.synced = True
            return
        self._extract(frame.vcid, vc, frame.data, frame.first_header_pointer)

    def _extract(self, vcid: int, vc: _VcRx, data: bytes, fhp: int) -> None:
        if vc.synced:
            expected = self._expected_fhp(vc, data)
            if expected == fhp:
                self._unpack(vcid, vc, data, 0)
                return
            self._discard_partial(
                vcid,
                vc,
                "fhp-mismatch",
                _CLAUSE_FHP,
                detail=f"FHP {fhp}, packet lengths put the next header at {expected}",
            )
        if fhp == FHP_NO_PACKET_START:
            vc.synced = False
            self.stats.octets_skipped += len(data)
            return
        vc.synced = True
        self.stats.octets_skipped += fhp
        self._unpack(vcid, vc, data, fhp)

    @staticmethod
    def _expected_fhp(vc: _VcRx, data: bytes) -> int | None:
        """Where the packet lengths say the first header of ``data`` starts (None: unknown)."""
        if not vc.buf:
            return 0
        total = vc.total
        if not total:
            head = bytes(vc.buf) + data[: PACKET_HEADER_LENGTH - len(vc.buf)]
            if len(head) < PACKET_HEADER_LENGTH:
                return FHP_NO_PACKET_START
            try:
                total = peek_packet_length(head)
            except RemoteProtocolError:
                return None
        end = total - len(vc.buf)
        return end if end < len(data) else FHP_NO_PACKET_START

    def _unpack(self, vcid: int, vc: _VcRx, data: bytes, start: int) -> None:
        i = start
        n = len(data)
        while i < n:
            if not vc.total:
                take = min(PACKET_HEADER_LENGTH - len(vc.buf), n - i)
                vc.buf += data[i : i + take]
                i += take
                if len(vc.buf) < PACKET_HEADER_LENGTH:
                    return
                try:
                    vc.total = peek_packet_length(vc.buf)
                except RemoteProtocolError as exc:
                    self._drop(Dropped.from_error(exc, octets=len(vc.buf) + n - i))
                    vc.buf.clear()
                    vc.total = 0
                    vc.synced = False
                    return
            take = min(vc.total - len(vc.buf), n - i)
            vc.buf += data[i : i + take]
            i += take
            if len(vc.buf) == vc.total:
                packet = bytes(vc.buf)
                vc.buf.clear()
                vc.total = 0
                if (packet[0] & 0x07) << 8 | packet[1] == IDLE_APID:
                    self.stats.idle_packets += 1
                else:
                    self.stats.packets += 1
                    self._events.append(PacketReceived(vcid=vcid, packet=packet))

    def _discard_partial(
        self, vcid: int, vc: _VcRx, reason: str, clause: str, *, detail: str = ""
    ) -> None:
        if vc.buf:
            self._drop(
                Dropped(
                    layer=_LAYER,
                    reason=reason,
                    clause=clause,
                    octets=len(vc.buf),
                    detail=detail or f"partial packet of VC {vcid} discarded",
                )
            )
        vc.buf.clear()
        vc.total = 0

    def _lost(self, vcid: int | None, expected: int, got: int) -> None:
        missing = (got - expected) % FRAME_COUNT_MODULUS
        if vcid is not None:
            self.stats.frames_lost += missing
        self._events.append(FramesLost(vcid=vcid, expected=expected, got=got, missing=missing))

    def _drop(self, event: Dropped) -> None:
        logger.debug("< dropped %s/%s: %s", event.layer, event.reason, event.detail)
        self._events.append(self.drops.count(event))
