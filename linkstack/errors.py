"""Errors and drop events shared by every layer of the stack.

Two kinds of failure, kept apart as h11 and aioquic keep them:

* the *caller* broke a rule (asked for an APID that does not fit in 11 bits, a TC
  frame longer than 1024 octets...): a :class:`LocalProtocolError` or
  :class:`InvalidState` is raised, and its message names the offending values;
* the *link* delivered bytes that break the standard: codecs raise a
  :class:`RemoteProtocolError` carrying the layer, a stable machine-readable
  ``reason`` and the book clause; engines catch it at their boundary and turn it
  into a :class:`Dropped` event plus a counter.  Bad bytes never escape an engine.

::

    LinkError
    ├── LocalProtocolError    the caller asked for what the standard forbids
    ├── InvalidState          API misuse in the current state
    └── RemoteProtocolError   received bytes break the standard: .layer .reason .clause
        ├── DecodeError
        ├── FecfMismatch
        └── UncorrectableCodeword
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum


class Layer(StrEnum):
    """Where in the stack a drop happened, named after the layer's book."""

    SPACE_PACKET = "space-packet"  # CCSDS 133.0-B-2
    TM_FRAME = "tm-frame"  # CCSDS 132.0-B-3
    TC_FRAME = "tc-frame"  # CCSDS 232.0-B-4
    CLCW = "clcw"  # CCSDS 232.0-B-4 4.2
    COP1 = "cop-1"  # CCSDS 232.1-B-2
    TC_CODING = "tc-coding"  # CCSDS 231.0-B-4
    TM_CODING = "tm-coding"  # CCSDS 131.0-B-5
    SDLS = "sdls"  # CCSDS 355.0-B-2
    APPLICATION = "application"  # docs/protocol.md


class LinkError(Exception):
    """Base of every error this package raises."""


class LocalProtocolError(LinkError):
    """The caller asked for something the standard forbids.

    The message always carries the offending values and, where one exists, the
    clause that forbids them.
    """


class InvalidState(LinkError):
    """The call is not allowed in the object's current state."""


class RemoteProtocolError(LinkError):
    """Received bytes break the standard.

    ``reason`` is a short, stable, kebab-case key (``"fecf-mismatch"``,
    ``"truncated"``...) that tests and counters use; ``detail`` is for people.
    """

    def __init__(self, layer: Layer, reason: str, clause: str, detail: str = "") -> None:
        self.layer = layer
        self.reason = reason
        self.clause = clause
        self.detail = detail
        text = f"{layer}: {reason} ({clause})"
        super().__init__(f"{text}: {detail}" if detail else text)


class DecodeError(RemoteProtocolError):
    """A field or length does not parse."""


class FecfMismatch(RemoteProtocolError):
    """The Frame Error Control Field does not match the frame."""


class UncorrectableCodeword(RemoteProtocolError):
    """A channel code detected more errors than it can correct."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped:
    """Received data was discarded; nothing of it was delivered."""

    layer: Layer
    #: Stable key, equal to the :class:`RemoteProtocolError` reason that caused it.
    reason: str
    #: Book and clause whose rule the data broke.
    clause: str
    #: Octets of received data discarded with it (0 when not meaningful).
    octets: int = 0
    #: Human-readable detail; never holds key material or payload bytes.
    detail: str = ""
    #: Time of the drop as the caller passed it in, if the engine is timed.
    at: float | None = None

    @classmethod
    def from_error(
        cls, exc: RemoteProtocolError, *, octets: int = 0, at: float | None = None
    ) -> Dropped:
        return cls(
            layer=exc.layer,
            reason=exc.reason,
            clause=exc.clause,
            octets=octets,
            detail=exc.detail,
            at=at,
        )


class DropCounter(Counter[str]):
    """Drops counted by ``"layer/reason"``; engines expose one as ``.drops``."""

    def count(self, event: Dropped) -> Dropped:
        self[f"{event.layer}/{event.reason}"] += 1
        return event
