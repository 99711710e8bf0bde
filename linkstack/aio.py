"""asyncio adapter: the one module of ``linkstack`` that touches sockets and the clock.

A *link* moves raw radio-boundary units between the two endpoints: CLTUs up, CADUs
down.  Three kinds share one small surface (:class:`Link`): ``send(data)`` and a
``on_receive(data, now)`` callback given when the link is opened.

* :class:`LoopbackLink` - both ends in one process, a seeded
  :class:`~linkstack.channel.Channel` per direction (rate, delay, bit errors, bursts,
  loss, duplication, reordering, outages), timed by the event loop's clock;
* UDP - one unit per datagram, ``udp://HOST:PORT``: the spacecraft binds, the ground
  sends to it, and the spacecraft answers the peer it last heard from;
* TCP - a byte stream, ``tcp://HOST:PORT``: the spacecraft listens, the ground
  connects.  Receivers find CLTU and CADU boundaries themselves (start sequence, ASM),
  so the same ports can face an SDR flowgraph.

:class:`DownlinkTransmitter` paces the spacecraft's CADUs onto a link: a frame as soon
as data waits (no faster than the downlink rate), otherwise an idle frame every
``idle_interval`` so that the ground keeps frame lock and hears the CLCW.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from linkstack.channel import Channel, ChannelConfig
from linkstack.endpoints import SpacecraftEndpoint
from linkstack.errors import LocalProtocolError

logger = logging.getLogger(__name__)

Receiver = Callable[[bytes, float], None]
Role = Literal["ground", "spacecraft"]


class Link(Protocol):
    """One end of a bidirectional unit link."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkAddress:
    scheme: Literal["tcp", "udp"]
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> LinkAddress:
        """``tcp://HOST:PORT`` or ``udp://HOST:PORT``; raises LocalProtocolError."""
        parts = urlsplit(url)
        if parts.scheme not in ("tcp", "udp"):
            raise LocalProtocolError(
                f"link {url!r}: scheme must be tcp:// or udp://, got {parts.scheme!r}"
            )
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise LocalProtocolError(f"link {url!r}: expected {parts.scheme}://HOST:PORT")
        return cls(parts.scheme, parts.hostname, port)  # type: ignore[arg-type]


# -- in-process loopback -----------------------------------------------------------------


class _ChannelPipe:
    """Feeds one Channel's deliveries to a receiver on the loop's clock."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, channel: Channel, receiver: Receiver
    ) -> None:
        self._loop = loop
        self.channel = channel
        self._receiver = receiver
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def send(self, data: bytes) -> None:
        if self._closed:
            return
        self.channel.send(data, self._loop.time())
        self._arm()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.channel.get_timer()
        if when is not None and not self._closed:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        for unit in self.channel.deliveries(now):
            self._receiver(unit, now)
        self._arm()


class LoopbackLink:
    """Both ends of a simulated link in one process.

    ``ground`` and ``spacecraft`` are the two :class:`Link` ends; units sent on one
    arrive, through that direction's channel, at the other's receiver.
    """

    def __init__(
        self,
        *,
        uplink: ChannelConfig,
        downlink: ChannelConfig,
        seed: int,
        to_ground: Receiver,
        to_spacecraft: Receiver,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        loop = loop or asyncio.get_running_loop()
        # One generator per direction, both derived from the seed, so that traffic in
        # one direction does not shift the other's random draws.
        seeds = random.Random(seed)
        self.uplink = Channel(uplink, random.Random(seeds.getrandbits(64)))
        self.downlink = Channel(downlink, random.Random(seeds.getrandbits(64)))
        self.ground = _ChannelPipe(loop, self.uplink, to_spacecraft)
        self.spacecraft = _ChannelPipe(loop, self.downlink, to_ground)

    def close(self) -> None:
        self.ground.close()
        self.spacecraft.close()


# -- UDP ------------------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver, answer: bool) -> None:
        self._loop = loop
        self._receiver = receiver
        self._answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None
        self.last_error: OSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._answer:
            self.peer = addr
        self._receiver(data, self._loop.time())

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier datagram, e.g. "port unreachable" from a peer
        # where nothing listens: kept for the application to diagnose.
        logger.debug("udp: %s", exc)
        if isinstance(exc, OSError):
            self.last_error = exc


class UdpLink:
    """Units as UDP datagrams."""

    def __init__(self, protocol: _UdpProtocol) -> None:
        self._protocol = protocol
        self.datagrams_unsent = 0

    def send(self, data: bytes) -> None:
        transport, peer = self._protocol.transport, self._protocol.peer
        if transport is None or transport.is_closing() or peer is None:
            # The spacecraft has not heard its ground yet: nobody to answer.
            self.datagrams_unsent += 1
            return
        transport.sendto(data, peer)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    @property
    def failure(self) -> str | None:
        """Why the peer cannot be reached, as the socket last reported it (None: no
        error seen).  Datagrams go on being sent: a peer may start later."""
        error = self._protocol.last_error
        return None if error is None else (error.strerror or str(error))

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The bound (host, port), once open."""
        transport = self._protocol.transport
        return None if transport is None else transport.get_extra_info("sockname")[:2]


async def _open_udp(address: LinkAddress, role: Role, receiver: Receiver) -> UdpLink:
    loop = asyncio.get_running_loop()
    protocol = _UdpProtocol(loop, receiver, answer=role == "spacecraft")
    if role == "spacecraft":
        await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=(address.host, address.port)
        )
    else:
        await loop.create_datagram_endpoint(
            lambda: protocol, remote_addr=(address.host, address.port)
        )
        protocol.peer = (address.host, address.port)
    return UdpLink(protocol)


# -- TCP ------------------------------------------------------------------------------------


class TcpLink:
    """A byte stream; the spacecraft end serves one ground connection at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self._loop = loop
        self._receiver = receiver
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.octets_unsent = 0
        #: The ground's connection was closed by the spacecraft (or broke).
        self.closed_by_peer = False
        self._closing = False

    def send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            self.octets_unsent += len(data)
            return
        self._writer.write(data)

    def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
        for task in self._readers:
            task.cancel()

    @property
    def failure(self) -> str | None:
        """Why the ground's connection is gone (None while it stands)."""
        return "connection closed by the spacecraft" if self.closed_by_peer else None

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The listening (host, port) of the spacecraft end, or the ground's own."""
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[:2]  # type: ignore[no-any-return]
        if self._writer is not None:
            return self._writer.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old = self._writer
        if old is not None and old is not writer and not old.is_closing():
            old.close()  # a new ground connection replaces the old one
        self._writer = writer
        self.connected.set()
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        try:
            while chunk := await reader.read(65536):
                self._receiver(chunk, self._loop.time())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._readers.discard(task)
            if self._writer is writer:
                self._writer = None
                self.connected.clear()
                if self._server is None and not self._closing:
                    self.closed_by_peer = True
            writer.close()


async def _open_tcp(address: LinkAddress, role: Role, receiver: Receiver) -> TcpLink:
    loop = asyncio.get_running_loop()
    link = TcpLink(loop, receiver)
    if role == "spacecraft":
        link._server = await asyncio.start_server(link._serve, address.host, address.port)
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        # Writable at once: what the ground sends right after opening must not wait
        # for the reader task to start.
        link._writer = writer
        link.connected.set()
        task = loop.create_task(link._serve(reader, writer))
        link._readers.add(task)
    return link


async def open_link(url: str, *, role: Role, on_receive: Receiver) -> UdpLink | TcpLink:
    """Open ``tcp://HOST:PORT`` or ``udp://HOST:PORT``: the spacecraft listens or binds,
    the ground connects or sends to it."""
    address = LinkAddress.parse(url)
    if address.scheme == "udp":
        return await _open_udp(address, role, on_receive)
    return await _open_tcp(address, role, on_receive)


# -- downlink pacing ------------------------------------------------------------------------


class DownlinkTransmitter:
    """Sends the spacecraft's CADUs onto a link, paced like a radio downlink.

    ``refill(capacity)`` is called before each frame is built, so that the
    application can queue what is waiting (for example a TokenChunk) sized to fit
    ``capacity`` octets of packet space; it returns nothing.
    """

    def __init__(
        self,
        endpoint: SpacecraftEndpoint,
        link: Link,
        *,
        rate_bps: float | None,
        idle_interval: float = 0.25,
        refill: Callable[[int], None] | None = None,
    ) -> None:
        if rate_bps is not None and rate_bps <= 0:
            raise LocalProtocolError(f"downlink rate {rate_bps} bit/s must be positive")
        if idle_interval <= 0:
            raise LocalProtocolError(f"idle_interval {idle_interval} s must be positive")
        self._endpoint = endpoint
        self._link = link
        self._cadu_time = (
            0.0 if rate_bps is None else endpoint.config.tm_coding.cadu_length * 8 / rate_bps
        )
        self._idle_interval = idle_interval
        self._refill = refill
        self._wake = asyncio.Event()

    @property
    def frame_capacity(self) -> int:
        """Octets of packet space in one TM frame's data field."""
        return self._endpoint.config.tm.data_field_length

    def wake(self) -> None:
        """Data was queued: send a frame as soon as the downlink allows."""
        self._wake.set()

    async def run(self) -> None:
        """Transmit until cancelled."""
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that races with the event, leaving this loop unstoppable.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_interval):
                    await self._wake.wait()
            self._wake.clear()
            self._send_frame()
            # Keep sending while data waits, then one more (idle) frame so that the
            # ground's synchronizer sees the marker that confirms the last data frame.
            while True:
                if self._cadu_time:
                    await asyncio.sleep(self._cadu_time)
                else:
                    await asyncio.sleep(0)
                more = self._wake.is_set() or self._endpoint.pending_octets > 0
                self._wake.clear()
                self._send_frame()
                if not more:
                    break

    def _send_frame(self) -> None:
        if self._refill is not None:
            self._refill(self.frame_capacity)
        self._link.send(self._endpoint.next_cadu())
