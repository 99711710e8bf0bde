"""Why an answer does not come: the ground's diagnosis of a link that does not work.

A ground station whose peer is not running, or whose peer protects its frames with SDLS
when the ground does not (or with other keys), would otherwise wait out its whole
timeout and report only "no complete answer".  :class:`LinkDiagnosis` looks at what the
ground sees, a few times a second, and names the likely cause within seconds:

* the link itself failed (a UDP peer answered "port unreachable", a TCP peer closed
  the connection): nothing listens there;
* nothing at all came down for a while: the spacecraft is not there, or not sending;
* frames come down but not one message decodes, and the drops say why: MAC failures
  (other keys), SDLS headers with SPIs the key file does not know (the spacecraft runs
  without ``--keys``, or with another key file), or, without keys, frames whose data
  field does not parse as Space Packets (the spacecraft protects its downlink).

Sans-I/O: the caller passes what it saw and ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from linkstack.endpoints import GroundCounters

#: Seconds of downlink silence before the ground says it hears nothing.  The
#: spacecraft sends an idle frame at least every 0.25 s (linkstack.aio).
SILENCE_S: Final = 3.0
#: Frames that must arrive, none of them readable, before blaming the keys.
MIN_FRAMES: Final = 16
#: Seconds after the request before blaming the keys (the first answer may be slow).
SETTLE_S: Final = 2.0

_SDLS: Final = "sdls/"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A likely cause, in the user's words; ``fatal`` when waiting longer cannot help."""

    message: str
    fatal: bool


class LinkDiagnosis:
    """Watches one ground run: call :meth:`check` periodically; each cause is told once."""

    def __init__(self, url: str, *, started_at: float, key_path: str | None = None) -> None:
        self._url = url
        self._started_at = started_at
        self._key_path = key_path
        self._told: set[str] = set()

    def check(
        self,
        now: float,
        counters: GroundCounters,
        drops: Mapping[str, int],
        *,
        link_error: str | None = None,
    ) -> Diagnosis | None:
        """The newest likely cause, or None (also when it was already told)."""
        for key, diagnosis in self._causes(now, counters, drops, link_error):
            if key not in self._told:
                self._told.add(key)
                return diagnosis
        return None

    def _causes(
        self,
        now: float,
        counters: GroundCounters,
        drops: Mapping[str, int],
        link_error: str | None,
    ) -> list[tuple[str, Diagnosis]]:
        url, elapsed = self._url, now - self._started_at
        causes: list[tuple[str, Diagnosis]] = []
        if link_error is not None:
            causes.append(
                (
                    "link",
                    Diagnosis(
                        f"nothing answers at {url} ({link_error}): is `onboard serve --link"
                        f" {url}` running?",
                        fatal=True,
                    ),
                )
            )
        if counters.frames_received == 0 and elapsed >= SILENCE_S:
            causes.append(
                (
                    "silence",
                    Diagnosis(
                        f"nothing heard from {url} in {elapsed:.0f} s: is the spacecraft"
                        " running there, and sending to this ground?",
                        fatal=False,
                    ),
                )
            )
        unreadable = (
            counters.messages_received == 0
            and counters.frames_received >= MIN_FRAMES
            and elapsed >= SETTLE_S
        )
        if not unreadable:
            return causes
        sdls = {key: n for key, n in drops.items() if key.startswith(_SDLS)}
        keys = "" if self._key_path is None else f" {self._key_path}"
        if sdls.get("sdls/mac-mismatch", 0) >= MIN_FRAMES // 2:
            causes.append(
                (
                    "keys",
                    Diagnosis(
                        f"{sdls['sdls/mac-mismatch']} frames from the spacecraft failed their"
                        f" MAC: it protects them with other keys than{keys}",
                        fatal=True,
                    ),
                )
            )
        elif sum(sdls.values()) >= MIN_FRAMES // 2:
            worst = max(sdls, key=lambda key: sdls[key])
            causes.append(
                (
                    "keys",
                    Diagnosis(
                        f"{sum(sdls.values())} frames from the spacecraft refused by SDLS"
                        f" ({worst}): is it running without --keys, or with another key"
                        " file than" + (keys or " this one") + "?",
                        fatal=True,
                    ),
                )
            )
        elif self._key_path is None and sum(drops.values()) >= 2:
            causes.append(
                (
                    "keys",
                    Diagnosis(
                        f"{counters.frames_received} frames came down but none carried a"
                        " readable message: the spacecraft probably protects its downlink"
                        " with SDLS; give this ground the same --keys",
                        fatal=True,
                    ),
                )
            )
        return causes


__all__ = ["MIN_FRAMES", "SETTLE_S", "SILENCE_S", "Diagnosis", "LinkDiagnosis"]
