"""Downlink pacing: :class:`DownlinkTransmitter` sends the spacecraft's CADUs onto a link
as a radio downlink would: a frame as soon as data waits (no faster than the downlink
rate), otherwise an idle frame every ``idle_interval`` so that the ground keeps frame
lock and hears the CLCW.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from linkstack.aio.links import Link
from linkstack.endpoints import SpacecraftEndpoint
from linkstack.errors import LocalProtocolError

__all__ = ["DownlinkTransmitter"]


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
