"""groundstation.diagnosis: the likely cause of a link that does not work, from what
the ground sees, on a fake clock.  The same causes, with real processes, are in
tests/test_user_failures.py."""

from __future__ import annotations

import pytest

from groundstation.diagnosis import MIN_FRAMES, SETTLE_S, SILENCE_S, LinkDiagnosis
from linkstack.endpoints import GroundCounters

URL = "udp://127.0.0.1:5005"


def seen(frames: int = 0, messages: int = 0) -> GroundCounters:
    return GroundCounters(frames_received=frames, messages_received=messages)


def test_a_healthy_link_is_never_blamed() -> None:
    diagnosis = LinkDiagnosis(URL, started_at=10.0, key_path="k.json")
    for t in range(100):
        assert diagnosis.check(10.0 + t, seen(frames=4 * t, messages=t), {}) is None


def test_a_link_error_is_fatal_and_names_the_address() -> None:
    diagnosis = LinkDiagnosis(URL, started_at=0.0)
    found = diagnosis.check(0.1, seen(), {}, link_error="Connection refused")
    assert found is not None and found.fatal
    assert found.message == (
        f"nothing answers at {URL} (Connection refused): is `onboard serve --link {URL}` running?"
    )


def test_silence_is_told_once_and_is_not_fatal() -> None:
    diagnosis = LinkDiagnosis(URL, started_at=0.0)
    assert diagnosis.check(SILENCE_S - 0.01, seen(), {}) is None
    found = diagnosis.check(SILENCE_S, seen(), {})
    assert found is not None and not found.fatal
    assert found.message.startswith(f"nothing heard from {URL} in 3 s")
    assert diagnosis.check(SILENCE_S + 5, seen(), {}) is None  # told once


@pytest.mark.parametrize(
    ("key_path", "drops", "words"),
    [
        ("k.json", {"sdls/mac-mismatch": MIN_FRAMES}, "failed their MAC: it protects them with"),
        ("k.json", {"sdls/unknown-spi": MIN_FRAMES}, "(sdls/unknown-spi): is it running without"),
        (None, {"space-packet/bad-version": 1, "application/unknown-apid": 2}, "protects its"),
    ],
)
def test_unreadable_frames_name_the_keys(
    key_path: str | None, drops: dict[str, int], words: str
) -> None:
    diagnosis = LinkDiagnosis(URL, started_at=0.0, key_path=key_path)
    # Not before the first answer had time to come, nor with too few frames.
    assert diagnosis.check(SETTLE_S - 0.01, seen(frames=MIN_FRAMES), drops) is None
    assert diagnosis.check(SETTLE_S, seen(frames=MIN_FRAMES - 1), drops) is None
    found = diagnosis.check(SETTLE_S, seen(frames=MIN_FRAMES), drops)
    assert found is not None and found.fatal
    assert words in found.message


def test_drops_beside_readable_messages_are_no_key_problem() -> None:
    diagnosis = LinkDiagnosis(URL, started_at=0.0, key_path="k.json")
    drops = {"sdls/mac-mismatch": 50}  # a noisy link, but messages get through
    assert diagnosis.check(10.0, seen(frames=100, messages=3), drops) is None
