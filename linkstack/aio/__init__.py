"""The asyncio adapter: the one package of ``linkstack`` that touches sockets and the
clock.  Links (loopback over simulated channels, UDP, TCP) and downlink pacing."""

from linkstack.aio.links import (
    Link,
    LinkAddress,
    LoopbackLink,
    Receiver,
    Role,
    TcpLink,
    UdpLink,
    open_link,
)
from linkstack.aio.pacing import DownlinkTransmitter

__all__ = [
    "DownlinkTransmitter",
    "Link",
    "LinkAddress",
    "LoopbackLink",
    "Receiver",
    "Role",
    "TcpLink",
    "UdpLink",
    "open_link",
]
