"""Recording one end of a live link into a capture: the glue between a link and
:class:`~linkstack.capture.CaptureWriter`.

A :class:`SessionRecorder` sits at the radio boundary of one end (``side``):

============  ===========================================  ==========================
 side          uplink CLTUs                                 downlink CADUs
============  ===========================================  ==========================
 ground        as sent (:meth:`link` wraps its ``send``)    as received, errors and all
 spacecraft    as received, errors and all                  as sent
============  ===========================================  ==========================

Received units are recorded with the ``now`` the link gives the receiver
(:meth:`receiver` wraps it); sent units with ``clock()`` at the moment of sending.
:meth:`tap` is an endpoint's ``packet_tap``: every Space Packet the endpoint sends or
receives whole, recorded as a UDP/IPv4 datagram, its direction from the Packet Type bit
(TC packets go up, TM packets come down, CCSDS 133.0-B-2 4.1.3.3.2).

On UDP and on the loopback link each unit is one CLTU or CADU.  On a TCP link the
receiving end reads a byte stream: with ``split_cltus`` the spacecraft's recorder cuts
the uplink stream after each CLTU tail sequence (CCSDS 231.0-B-4 5.2.4), so that each
record is one CLTU; the ground records each read of the CADU stream as it came (a
piece of the stream, not necessarily one whole CADU; the ground finds the CADU
boundaries itself, in a replay as live).

Times are the clock's (an event loop's monotonic ``loop.time()``); the writer's
:class:`~linkstack.capture.TimeReference` turns them into Unix time in the file, and
:func:`~linkstack.capture.read_capture` back into seconds since the session's start.
Each unit is written (and flushed) as it is recorded, so a session killed mid-way
leaves a capture readable up to its last unit.

Sans-I/O: the caller opens the stream the writer writes to and passes the clock
(:func:`linkstack.cli.capture.open_recorder` does both for the command lines).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from linkstack.capture import CaptureWriter, Direction
from linkstack.coding.tc import TAIL_SEQUENCE

__all__ = ["RecordingLink", "SessionRecorder", "Side"]

Side = Literal["ground", "spacecraft"]
Receiver = Callable[[bytes, float], None]

_PACKET_TYPE_TC = 0x10  # Packet Type bit in the first octet (CCSDS 133.0-B-2 4.1.3.3.2)
#: A stream that shows no tail sequence for this long is recorded as it is.
_MAX_HELD_OCTETS = 1 << 16


class _Sender(Protocol):
    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class RecordingLink:
    """A link end whose ``send`` records each unit before passing it on.

    Other attributes (``local_address``...) are the wrapped link's.
    """

    def __init__(self, link: _Sender, recorder: SessionRecorder) -> None:
        self._link = link
        self._recorder = recorder

    def send(self, data: bytes) -> None:
        self._recorder.sent(data)
        self._link.send(data)

    def close(self) -> None:
        self._link.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._link, name)


class SessionRecorder:
    """Records what crosses one end's radio boundary into ``writer``."""

    def __init__(
        self,
        writer: CaptureWriter,
        *,
        side: Side,
        clock: Callable[[], float],
        record_packets: bool = True,
        split_cltus: bool = False,
    ) -> None:
        if side not in ("ground", "spacecraft"):
            raise ValueError(f"side {side!r} is neither 'ground' nor 'spacecraft'")
        self.writer = writer
        self.side = side
        self._clock = clock
        #: False for a protected (SDLS) session: its capture holds ciphertext only.
        self.record_packets = record_packets
        self._split = split_cltus and side == "spacecraft"
        self._held = b""

    def sent(self, unit: bytes, now: float | None = None) -> None:
        """A unit this end radiated (a CLTU on the ground, a CADU on board)."""
        t = self._clock() if now is None else now
        if self.side == "ground":
            self.writer.record_uplink(unit, t)
        else:
            self.writer.record_downlink(unit, t)

    def received(self, unit: bytes, now: float) -> None:
        """A unit this end received (a CADU on the ground, a CLTU on board)."""
        if not unit:
            return
        if self.side == "ground":
            self.writer.record_downlink(unit, now)
        elif not self._split:
            self.writer.record_uplink(unit, now)
        else:
            self._held += unit
            while (end := self._held.find(TAIL_SEQUENCE)) >= 0:
                end += len(TAIL_SEQUENCE)
                self.writer.record_uplink(self._held[:end], now)
                self._held = self._held[end:]
            if len(self._held) > _MAX_HELD_OCTETS:
                self.flush(now)

    def flush(self, now: float) -> None:
        """Record what a split stream still holds (no tail sequence seen yet)."""
        if self._held:
            self.writer.record_uplink(self._held, now)
            self._held = b""

    def tap(self, packet: bytes, now: float | None) -> None:
        """An endpoint's ``packet_tap``: one whole Space Packet, sent or received."""
        if not self.record_packets or not packet:
            return
        direction = Direction.UPLINK if packet[0] & _PACKET_TYPE_TC else Direction.DOWNLINK
        self.writer.record_packet(packet, self._clock() if now is None else now, direction)

    def receiver(self, receive: Receiver) -> Receiver:
        """``receive`` (a link's ``on_receive``) recording each unit first."""

        def recording_receiver(data: bytes, now: float) -> None:
            self.received(data, now)
            receive(data, now)

        return recording_receiver

    def link(self, link: _Sender) -> RecordingLink:
        """``link`` recording each unit sent on it."""
        return RecordingLink(link, self)
