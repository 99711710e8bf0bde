"""Contact graph routing over the time-varying graph of the contact plan.

Nodes are the satellites and one ground node (the stations' terrestrial network, which
takes a bundle the moment any station receives it).  A :class:`Contact` is one window
in which ``frm`` can send to ``to``: start, end, rate, one-way light time and the volume
left (rate x duration, less what bundles already booked), as CCSDS 734.3-B-1 (Schedule-
Aware Bundle Routing) and ION's CGR describe contacts.  :meth:`Router.route` is CGR's
route search: a Dijkstra on earliest arrival time through the contact graph, a hop
leaving at ``max(arrival at the node, contact start)`` and arriving
``bits / rate + light time`` later, over contacts that still have the volume and end
after the bundle has gone out.  A relay satellite stores a bundle until its next contact
in a bounded buffer: a hop that would overfill it is not taken (the bundle's own
satellite holds its answer in the onboard core's resend history, not in the relay
buffer).  :meth:`Router.book` takes the volume and the buffer space once a route is
chosen: bundles are never dropped, lost or duplicated; one that finds no route stays
undelivered and is counted.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from linkstack.errors import LocalProtocolError


@dataclass(slots=True)
class Contact:
    frm: int
    to: int
    start: float
    end: float
    rate_bps: float
    owlt_s: float
    #: Bits this contact can still carry.
    residual_bits: float = math.nan
    #: The station (downlinks and uplinks) or "isl".
    label: str = "isl"

    def __post_init__(self) -> None:
        if not (self.end >= self.start and self.rate_bps > 0 and self.owlt_s >= 0):
            raise LocalProtocolError(
                f"contact {self.frm}->{self.to} [{self.start}, {self.end}] at"
                f" {self.rate_bps} bit/s, {self.owlt_s} s: not a contact"
            )
        if math.isnan(self.residual_bits):
            self.residual_bits = (self.end - self.start) * self.rate_bps


class _Series:
    """The contacts of one (from, to) pair, by start, with the running latest end."""

    def __init__(self, contacts: list[Contact]) -> None:
        self.contacts = sorted(contacts, key=lambda c: (c.start, c.end))
        self.starts = [c.start for c in self.contacts]
        self.best_end: list[int] = []  # index of the latest-ending contact among 0..k
        best = -1
        for k, c in enumerate(self.contacts):
            if best < 0 or c.end > self.contacts[best].end:
                best = k
            self.best_end.append(best)

    def next(self, t: float, bits: float) -> tuple[Contact, float] | None:
        """The contact that gets ``bits`` out earliest from time ``t``: (contact, departure)."""
        k = bisect.bisect_right(self.starts, t)
        if k:
            c = self.contacts[self.best_end[k - 1]]
            if c.end - t >= bits / c.rate_bps and c.residual_bits >= bits:
                return c, t
        # Rarely reached past the first candidate: a contact already open whose volume
        # is spent, or one starting later.
        best: tuple[Contact, float] | None = None
        for c in self.contacts[:k]:
            if c.end - t >= bits / c.rate_bps and c.residual_bits >= bits:
                return c, t
        for c in self.contacts[k:]:
            if c.end - c.start >= bits / c.rate_bps and c.residual_bits >= bits:
                best = (c, c.start)
                break
        return best


@dataclass(frozen=True, slots=True)
class Hop:
    contact: Contact
    depart: float
    arrive: float


@dataclass(slots=True)
class _Stored:
    start: float
    end: float
    bits: float


@dataclass(slots=True)
class Router:
    """The contact graph of ``nodes`` nodes; relay buffers of ``buffer_bits`` each."""

    nodes: int
    contacts: Sequence[Contact]
    buffer_bits: float
    _adjacent: list[list[tuple[int, _Series]]] = field(init=False)
    _stored: dict[int, list[_Stored]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        pairs: dict[tuple[int, int], list[Contact]] = {}
        for c in self.contacts:
            if not (0 <= c.frm < self.nodes and 0 <= c.to < self.nodes):
                raise LocalProtocolError(f"contact {c.frm}->{c.to}: nodes are 0..{self.nodes - 1}")
            pairs.setdefault((c.frm, c.to), []).append(c)
        self._adjacent = [[] for _ in range(self.nodes)]
        for (frm, to), members in sorted(pairs.items()):
            self._adjacent[frm].append((to, _Series(members)))

    def _buffer_allows(self, node: int, start: float, end: float, bits: float) -> bool:
        if end <= start:
            return True
        stored = self._stored.get(node)
        if not stored:
            return bits <= self.buffer_bits
        # The most held at once during [start, end), this bundle added.
        points = sorted(
            [(s.start, s.bits) for s in stored if s.start < end and s.end > start]
            + [(s.end, -s.bits) for s in stored if s.start < end and s.end > start]
        )
        level = sum(s.bits for s in stored if s.start <= start < s.end)
        peak = level
        for at, delta in points:
            if start < at < end:
                level += delta
                peak = max(peak, level)
        return peak + bits <= self.buffer_bits

    def route(self, source: int, target: int, t: float, bits: float) -> list[Hop] | None:
        """The earliest-arrival route of a bundle of ``bits`` created at ``source`` at ``t``."""
        best = {source: t}
        previous: dict[int, Hop] = {}
        heap = [(t, source)]
        while heap:
            now, node = heapq.heappop(heap)
            if node == target:
                hops = []
                while node != source:
                    hop = previous[node]
                    hops.append(hop)
                    node = hop.contact.frm
                return hops[::-1]
            if now > best.get(node, math.inf):
                continue
            for to, series in self._adjacent[node]:
                found = series.next(now, bits)
                if found is None:
                    continue
                contact, depart = found
                arrive = depart + bits / contact.rate_bps + contact.owlt_s
                if arrive >= best.get(to, math.inf):
                    continue
                if node != source and not self._buffer_allows(node, now, depart, bits):
                    continue
                best[to] = arrive
                previous[to] = Hop(contact, depart, arrive)
                heapq.heappush(heap, (arrive, to))
        return None

    def book(self, hops: Sequence[Hop], bits: float) -> None:
        """Take the route's volume and its relays' buffer space."""
        for k, hop in enumerate(hops):
            hop.contact.residual_bits -= bits
            if k:
                node = hop.contact.frm
                self._stored.setdefault(node, []).append(
                    _Stored(hops[k - 1].arrive, hop.depart, bits)
                )
