"""The clock cfdp-py's timers read, set from the ``now`` the caller gives.

cfdp-py's handlers start ``spacepackets.countdown.Countdown`` objects (positive ACK
timer, CCSDS 727.0-B-5 4.7.1; NAK timer, 4.6.4.2; check timer, 4.6.3.2) that read the
host's wall clock.  A sans-I/O adapter must run them on the caller's time instead, so
that a simulation advances them by hours in milliseconds and a test never waits.  The
handler modules' ``Countdown`` is replaced, once, by :class:`VirtualCountdown`, whose
clock is :data:`CLOCK`; the adapter sets ``CLOCK.now`` before every call into a
handler.  One process runs one clock: entities on different clocks in one process
must be driven in turn (the simulation and the programs are single-threaded).
"""

from __future__ import annotations

import math
from datetime import timedelta

import cfdppy.handler.dest as _dest
import cfdppy.handler.source as _source
from cfdppy.mib import CheckTimerProvider, EntityType
from spacepackets.countdown import Countdown
from spacepackets.util import UnsignedByteField


class _Clock:
    """The time cfdp-py's timers see: seconds, as the adapter's caller gives them."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0


#: The one clock of this process.
CLOCK = _Clock()


class VirtualCountdown(Countdown):
    """A ``Countdown`` that reads :data:`CLOCK` instead of the wall clock."""

    def __init__(self, init_timeout: timedelta | None) -> None:
        super().__init__(init_timeout)
        self._start_time_ms = round(CLOCK.now * 1000) if init_timeout is not None else 0

    def timed_out(self) -> bool:
        return bool(round(CLOCK.now * 1000) - self._start_time_ms >= self._timeout_ms)

    def start(self) -> None:
        self._start_time_ms = round(CLOCK.now * 1000)

    def time_out(self) -> None:
        self._start_time_ms = -(2**62)

    def remaining_time(self) -> timedelta:
        remaining = self._start_time_ms + self._timeout_ms - round(CLOCK.now * 1000)
        return timedelta(milliseconds=max(0, remaining))

    @property
    def expires_at(self) -> float:
        """When it times out, seconds on :data:`CLOCK` (-inf once forced out)."""
        if self._start_time_ms < -(2**61):
            return -math.inf
        return float(self._start_time_ms + self._timeout_ms) / 1000


# The handlers look ``Countdown`` up in their own module at call time.
_source.Countdown = VirtualCountdown
_dest.Countdown = VirtualCountdown


class CheckTimers(CheckTimerProvider):
    """Check timers (CCSDS 727.0-B-5 4.6.3.2) of ``interval_s`` on :data:`CLOCK`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s

    def provide_check_timer(
        self,
        local_entity_id: UnsignedByteField,
        remote_entity_id: UnsignedByteField,
        entity_type: EntityType,
    ) -> Countdown:
        return VirtualCountdown(timedelta(seconds=self.interval_s))


__all__ = ["CLOCK", "CheckTimers", "VirtualCountdown"]
