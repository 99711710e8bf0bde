"""The sending counters of SDLS: IV and anti-replay sequence number (CCSDS 355.0-B-2
4.1.1.3, 4.1.1.4; OTAR IVs of 355.1-B-1).

Counter-based IVs (AES-GCM needs a unique 96-bit IV per key, NIST SP 800-38D 8.2.1):
each sending SA owns one key and one :class:`TxCounter`; the counter value is the IV
and, when the SA has no Sequence Number field, also the anti-replay sequence number
(355.0-B-2 4.1.1.4.2 as quoted: the IV may serve as the ARSN).  With a Sequence Number
field the same counter value is carried there too, so both stay monotonic together.
Each master key has one counter too, for the IVs of the OTAR PDUs it encrypts.

:func:`counter_label` and :func:`master_counter_label` name the counters in the
counter file that ``linkstack.sdls.keystore`` writes.
"""

from __future__ import annotations

from linkstack.errors import LocalProtocolError
from linkstack.sdls.associations import SecurityAssociation, ServiceType
from linkstack.sdls.errors import CounterExhausted, CounterNotReserved


class TxCounter:
    """IV / ARSN counter of a sending SA (or of a master key for OTAR).

    Values are handed out only inside a *reserved* range whose upper end the
    application has persisted first (``keystore.reserve``): plan, write durably, then
    confirm.  After a restart the counter resumes at the persisted mark, skipping what
    was left of the block, so no value is ever used twice under one key.
    """

    __slots__ = ("_next", "_reserved_until", "label", "limit")

    def __init__(self, label: str, *, limit: int, next_value: int = 1) -> None:
        if limit < 1:
            raise LocalProtocolError(f"counter {label}: limit {limit} < 1")
        if not 0 <= next_value <= limit + 1:
            raise LocalProtocolError(
                f"counter {label}: next value {next_value} outside 0..{limit + 1}"
            )
        self.label = label
        self.limit = limit
        self._next = next_value
        self._reserved_until = next_value  # exclusive; nothing reserved yet

    @classmethod
    def for_sa(cls, sa: SecurityAssociation, *, next_value: int = 1) -> TxCounter:
        if sa.service_type == ServiceType.SA_PLAINTEXT:
            raise LocalProtocolError(f"SA {sa.spi} is SA_PLAINTEXT and has no counter")
        return cls(counter_label(sa.spi), limit=sa.counter_limit, next_value=next_value)

    @property
    def next_value(self) -> int:
        return self._next

    @property
    def reserved_until(self) -> int:
        """First value not covered by the persisted reservation."""
        return self._reserved_until

    @property
    def remaining_reserved(self) -> int:
        return self._reserved_until - self._next

    def plan_reservation(self, block: int) -> int:
        """The mark to persist before the next ``block`` values may be used."""
        if block < 1:
            raise LocalProtocolError(f"counter {self.label}: block {block} < 1")
        if self._next > self.limit:
            raise CounterExhausted(
                f"counter {self.label} reached its limit {self.limit}: rekey, nothing sent"
            )
        return min(self._next + block, self.limit + 1)

    def advance_to(self, value: int) -> None:
        """Skip every value below ``value``: another holder of the same key (a second
        process on the same counter file) may have reserved them.

        Values inside this counter's own confirmed reservation stay its own (they were
        persisted before anyone else could reserve past them), so ``value`` at or below
        :attr:`reserved_until` changes nothing.  Above it, the counter restarts at
        ``value`` with nothing reserved; a value of ``limit + 1`` exhausts it.
        """
        if not 0 <= value <= self.limit + 1:
            raise LocalProtocolError(
                f"counter {self.label}: cannot advance to {value}, outside 0..{self.limit + 1}"
            )
        if value > self._reserved_until:
            self._next = self._reserved_until = value

    def confirm_reservation(self, mark: int) -> None:
        """Call once ``mark`` is durably stored."""
        if not self._reserved_until <= mark <= self.limit + 1:
            raise LocalProtocolError(
                f"counter {self.label}: mark {mark} outside"
                f" {self._reserved_until}..{self.limit + 1}"
            )
        self._reserved_until = mark

    def take(self) -> int:
        """The next value; raises before a wrap or outside the persisted reservation."""
        if self._next > self.limit:
            raise CounterExhausted(
                f"counter {self.label} reached its limit {self.limit}: rekey, nothing sent"
            )
        if self._next >= self._reserved_until:
            raise CounterNotReserved(
                f"counter {self.label}: value {self._next} not reserved (reserved until"
                f" {self._reserved_until}); persist a new block first"
            )
        value = self._next
        self._next += 1
        return value

    def __repr__(self) -> str:
        return (
            f"TxCounter({self.label!r}, next={self._next}, reserved_until={self._reserved_until})"
        )


def counter_label(spi: int) -> str:
    """Name of an SA's sending counter in the counter file."""
    return f"spi-{spi}"


def master_counter_label(key_id: int) -> str:
    """Name of a master key's OTAR IV counter in the counter file."""
    return f"mkid-{key_id}"
