"""The anti-replay window of a receiving SDLS end (CCSDS 355.0-B-2 4.2.4).

:class:`ReplayWindow` holds the highest anti-replay sequence number accepted (the
Sequence Number field, 4.1.1.4, or the IV when the SA has none, 4.1.1.4.2) and a bitmap
of the ``window`` values below it (the SA's ARSNW).  ProcessSecurity checks a frame's
ARSN after its MAC verified and commits it only once every check passed, so a forged
frame never moves the window (nasa/CryptoLib PR#78).  The OTAR IVs of each master key
(355.1-B-1) are screened by a window of width 1.
"""

from __future__ import annotations

from linkstack.sdls.errors import ReplayRejected


class ReplayWindow:
    """Anti-replay state of one receiving SA: highest ARSN accepted and a bitmap.

    A value is accepted when it is above the highest seen (up to ``max_jump`` ahead
    when set), or not yet seen and less than ``window`` behind it.  Check first, commit
    only once the whole frame passed.
    """

    __slots__ = ("_seen", "highest", "max_jump", "window")

    def __init__(
        self, window: int, *, highest: int | None = None, max_jump: int | None = None
    ) -> None:
        self.window = window
        self.max_jump = max_jump
        self.highest = highest
        self._seen = 1 if highest is not None else 0  # bit i: highest - i seen

    def check(self, value: int, clause: str) -> None:
        if self.highest is None:
            return
        if value > self.highest:
            if self.max_jump is not None and value - self.highest > self.max_jump:
                raise ReplayRejected(
                    "too-far-ahead",
                    clause,
                    f"ARSN {value} is {value - self.highest} ahead of {self.highest},"
                    f" limit {self.max_jump}",
                )
            return
        behind = self.highest - value
        if behind >= self.window:
            raise ReplayRejected(
                "outside-window",
                clause,
                f"ARSN {value} is {behind} behind {self.highest}, window {self.window}",
            )
        if self._seen >> behind & 1:
            raise ReplayRejected("replay", clause, f"ARSN {value} already accepted")

    def commit(self, value: int) -> None:
        if self.highest is None:
            self.highest, self._seen = value, 1
        elif value > self.highest:
            shift = value - self.highest
            self._seen = ((self._seen << shift) | 1) & ((1 << self.window) - 1)
            self.highest = value
        else:
            self._seen |= 1 << (self.highest - value)

    def jump_to(self, value: int) -> None:
        """Make ``value`` the highest accepted, with nothing below it accepted any more
        (Set ARSN, 355.1-B-1): only ever forward, the caller checks."""
        self.highest, self._seen = value, (1 << self.window) - 1

    def __repr__(self) -> str:
        return f"ReplayWindow(highest={self.highest}, window={self.window})"
