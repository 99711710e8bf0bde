"""Links of the asyncio adapter (with :mod:`linkstack.aio.pacing`, the one package of
``linkstack`` that touches sockets and the clock).

A *link* moves raw radio-boundary units between the two endpoints: CLTUs up, CADUs
down.  Three kinds share one small surface (:class:`Link`): ``send(data)`` and a
``on_receive(data, now)`` callback given when the link is opened.

* :class:`LoopbackLink` - both ends in one process, a seeded
  :class:`~linkstack.radio.channel.Channel` per direction (rate, delay, bit errors, bursts,
  loss, duplication, reordering, outages), timed by the event loop's clock;
* UDP - one unit per datagram, ``udp://HOST:PORT``: the spacecraft binds, the ground
  sends to it, and the spacecraft answers the peer it last heard from;
* TCP - a byte stream, ``tcp://HOST:PORT``: the spacecraft listens, the ground
  connects.  Receivers find CLTU and CADU boundaries themselves (start sequence, ASM),
  so the same ports can face an SDR flowgraph.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import Channel, ChannelConfig

if TYPE_CHECKING:
    from linkstack.aio.zmq_link import ZmqLink
    from linkstack.coding.tm import TmCodingConfig

logger = logging.getLogger(__name__)

Receiver = Callable[[bytes, float], None]
Role = Literal["ground", "spacecraft"]


class Link(Protocol):
    """One end of a bidirectional unit link."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkAddress:
    scheme: Literal["tcp", "udp", "zmq"]
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> LinkAddress:
        """``tcp://HOST:PORT``, ``udp://HOST:PORT`` or a ``zmq://`` URL
        (:mod:`linkstack.aio.zmq_link`: HOST:PORT is the UDP uplink of its ``iq=`` form;
        its ``tx=``/``rx=`` form has none, and gives host "" and port 0); raises
        LocalProtocolError."""
        parts = urlsplit(url)
        if parts.scheme == "zmq":
            from linkstack.aio.zmq_link import ZmqOptions

            uplink = ZmqOptions.parse(url).uplink
            return cls("zmq", "", 0) if uplink is None else cls("zmq", uplink.host, uplink.port)
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
    arrive, through that direction's channel, at the other's receiver.  A downlink
    with ``coding="conv"`` carries CADUs of ``tm_coding`` (default ``TmCodingConfig()``).
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
        tm_coding: TmCodingConfig | None = None,
    ) -> None:
        if uplink.coding != "none":
            raise LocalProtocolError(f"uplink coding {uplink.coding!r}: only a downlink is coded")
        loop = loop or asyncio.get_running_loop()
        # One generator per direction, both derived from the seed, so that traffic in
        # one direction does not shift the other's random draws.
        seeds = random.Random(seed)
        self.uplink = Channel(uplink, random.Random(seeds.getrandbits(64)))
        self.downlink = Channel(downlink, random.Random(seeds.getrandbits(64)), tm_coding=tm_coding)
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


async def open_link(url: str, *, role: Role, on_receive: Receiver) -> UdpLink | TcpLink | ZmqLink:
    """Open ``tcp://HOST:PORT`` or ``udp://HOST:PORT``: the spacecraft listens or binds,
    the ground connects or sends to it; or ``zmq://`` (:mod:`linkstack.aio.zmq_link`:
    IQ samples over ZeroMQ, both ways or the downlink only with a UDP uplink)."""
    address = LinkAddress.parse(url)
    if address.scheme == "zmq":
        from linkstack.aio.zmq_link import open_zmq

        return await open_zmq(url, role=role, on_receive=on_receive)
    if address.scheme == "udp":
        return await _open_udp(address, role, on_receive)
    return await _open_tcp(address, role, on_receive)
