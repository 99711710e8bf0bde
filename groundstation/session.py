"""Waiting for one answer as a person at a terminal does: Ctrl-C, SIGTERM and a link
that does not work.

:func:`await_answer` waits for a submitted request's answer, and meanwhile

* on SIGINT or SIGTERM sends a Cancel up, so that the spacecraft stops generating for
  nobody and frees its slot for the next user, then waits a bounded time
  (:data:`CANCEL_WAIT_S`) for the spacecraft to confirm, and returns what arrived,
  marked ``interrupted``;
* asks a :class:`~groundstation.diagnosis.LinkDiagnosis` a few times a second why
  nothing comes, reports each cause once, and gives up at once (with a Cancel) when
  the cause is one that waiting cannot cure.

Used by ``groundstation ask`` and ``linkstack demo``.

:func:`station_link` is how a program builds its ground station's link from a key
file: with a management SA in it, APID KEY_MANAGEMENT goes up on that SA's VC under
that SA, so that the ground can send Set ARSN (CCSDS 355.1-B-1) when a long loss has
carried it past the spacecraft's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from groundstation.diagnosis import Diagnosis
from groundstation.station import Answer, GroundStation, RequestHandle
from linkstack.endpoints import LinkConfig, route_key_management
from linkstack.errors import LinkError

if TYPE_CHECKING:
    from groundstation.station import IdSource
    from linkstack.inference.tokenizer import Tokenizer
    from linkstack.sdls import LinkSecurity
    from linkstack.sdls.keystore import RoleSecurity

#: Seconds to wait for the spacecraft to confirm a Cancel after an interruption.
CANCEL_WAIT_S: Final = 3.0
#: After a fatal diagnosis the spacecraft cannot hear us or is not there: the Cancel
#: goes up on the chance that it can, without waiting long for its confirmation.
_GIVE_UP_WAIT_S: Final = 0.1
#: Seconds between two looks at the link's health.
CHECK_INTERVAL_S: Final = 0.25

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answer, and what cut it short, if anything."""

    answer: Answer
    #: SIGINT or SIGTERM arrived: a Cancel was sent.
    interrupted: bool = False
    #: The name of the signal, when ``interrupted``.
    signal_name: str | None = None
    #: The diagnosis that ended the wait (fatal), if one did.
    diagnosis: Diagnosis | None = None
    #: Whether the spacecraft confirmed the Cancel (finish reason "cancelled").
    cancel_confirmed: bool = False


@dataclass(frozen=True, slots=True)
class StationLink:
    """What a ground station's endpoint is built from: ``GroundStation(tokenizer,
    config=..., security=..., vc_security=...)``."""

    config: LinkConfig
    #: SDLS of the requests' VC; None in the clear.
    security: LinkSecurity | None
    #: SDLS of the other TC VCs (the management SA's); None when there are none.
    vc_security: Mapping[int, LinkSecurity] | None


def station_link(keys: RoleSecurity | None, config: LinkConfig | None = None) -> StationLink:
    """The ground's link for the key file ``keys`` (``link_security(..., role="ground")``):
    ``config`` (default :class:`LinkConfig`) with key management routed to the
    management SA's VC when the file has one (the spacecraft does the same with the
    same file), and that SA sending there."""
    config = config or LinkConfig()
    if keys is None:
        return StationLink(config, None, None)
    return StationLink(
        route_key_management(config, keys.management_sa),
        keys.security,
        keys.vc_security or None,
    )


def keyed_station(
    tokenizer: Tokenizer, keys: RoleSecurity | None, *, id_source: IdSource | None
) -> GroundStation:
    """A :class:`GroundStation` on :func:`station_link` of ``keys``: with a management SA
    in the key file, key management (Set ARSN) on its own TC VC.  ``groundstation ask``
    and the gateway build their station so."""
    setup = station_link(keys)
    return GroundStation(
        tokenizer,
        config=setup.config,
        security=setup.security,
        vc_security=setup.vc_security,
        id_source=id_source,
    )


@contextlib.contextmanager
def _signals_to(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]
) -> Iterator[None]:
    installed = []
    for signum in _SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _cancel_and_wait(handle: RequestHandle, wait_s: float) -> tuple[Answer, bool]:
    """Send a Cancel and wait ``wait_s`` for the end of the stream."""
    with contextlib.suppress(LinkError):  # a link already gone: the answer ends anyway
        handle.cancel()
    answer = await handle.answer(wait_s)
    return answer, answer.error is None and answer.end is not None


async def await_answer(
    handle: RequestHandle,
    *,
    timeout: float,
    diagnose: Callable[[float], Diagnosis | None] | None = None,
    report: Callable[[str], None] | None = None,
) -> Outcome:
    """The answer of ``handle`` within ``timeout`` seconds, cut short by SIGINT/SIGTERM
    or by a fatal diagnosis (see the module docstring).

    ``diagnose(now)`` returns a new likely cause or None; ``report`` shows a non-fatal one.
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    with _signals_to(loop, on_signal):
        waiting = loop.create_task(handle.answer(timeout))
        stopping = loop.create_task(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {waiting, stopping},
                    timeout=CHECK_INTERVAL_S if diagnose is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiting in done:
                    return Outcome(waiting.result())
                if stopping in done:
                    waiting.cancel()
                    answer, confirmed = await _cancel_and_wait(handle, CANCEL_WAIT_S)
                    return Outcome(
                        answer,
                        interrupted=True,
                        signal_name=signal.Signals(received[0]).name,
                        cancel_confirmed=confirmed,
                    )
                found = diagnose(loop.time()) if diagnose is not None else None
                if found is not None and found.fatal:
                    waiting.cancel()
                    answer, confirmed = await _cancel_and_wait(handle, _GIVE_UP_WAIT_S)
                    return Outcome(answer, diagnosis=found, cancel_confirmed=confirmed)
                if found is not None and report is not None:
                    report(found.message)
        finally:
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)


__all__ = [
    "CANCEL_WAIT_S",
    "CHECK_INTERVAL_S",
    "Outcome",
    "StationLink",
    "await_answer",
    "station_link",
]
