"""What a capture records: units, each a CLTU (CCSDS 231.0-B-4), a CADU (CCSDS
131.0-B-5) or a Space Packet (CCSDS 133.0-B-2), with its direction and time.

Directions are the ground station's on either side of the link: uplink units travel
from the ground to the spacecraft, downlink units back.  The pcapng file records them
in ``epb_flags`` (draft-ietf-opsawg-pcapng 4.3.1): uplink *outbound*, downlink
*inbound*.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Direction", "Unit", "UnitKind"]


class Direction(StrEnum):
    """Which way a unit travelled; the ground station's epb_flags direction follows."""

    UPLINK = "uplink"  # ground -> spacecraft: outbound
    DOWNLINK = "downlink"  # spacecraft -> ground: inbound


class UnitKind(StrEnum):
    """What a recorded unit is."""

    CLTU = "cltu"
    CADU = "cadu"
    PACKET = "packet"


@dataclass(frozen=True, slots=True)
class Unit:
    """One recorded unit, in file order."""

    direction: Direction
    kind: UnitKind
    #: The CLTU, the CADU, or the Space Packet (without its UDP/IPv4 wrapping).
    data: bytes
    #: Seconds since the session's start when the capture names a
    #: :class:`~linkstack.capture.TimeReference`; else the time as the recorder passed
    #: it.  Nanosecond resolution either way.
    t: float
    comment: str | None = None
