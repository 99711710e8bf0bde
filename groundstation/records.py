"""The ``--json`` record of an answer, one schema for ``groundstation ask``,
``groundstation replay`` and ``linkstack demo`` (written down in docs/json.md).

Counters are per end: ``counters`` holds what the ground's endpoint counts (what it sent
up, what it received down), ``spacecraft_counters`` (``linkstack demo`` only, the one
program that sees both ends) what the spacecraft's endpoint counts: each is its end's
counters type as a dict, so a field one end never fills is not printed for it.
``recovery`` tells how the answer was made whole: COP-1 retransmissions and alerts, the
ground's ResendRequests and EndAcks, and, where the spacecraft is seen, what it resent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

from linkstack.inference.protocol import FinishReason

if TYPE_CHECKING:
    from groundstation.recovery import RecoveryCounters
    from groundstation.station import Answer
    from linkstack.endpoints import GroundCounters
    from linkstack.inference.protocol import GenerationParams

#: Version of the record's schema (docs/json.md); bumped when a field changes meaning.
SCHEMA_VERSION: Final = 2


def finish_name(reason: int | None) -> str | None:
    """The wire FinishReason under its user-facing name (:attr:`FinishReason.label`);
    a value outside the enum as its number."""
    if reason is None:
        return None
    try:
        return FinishReason(int(reason)).label
    except ValueError:
        return str(reason)


def ground_counters(counters: GroundCounters) -> dict[str, int]:
    """The ground end's counters, with ``uplink_bits``."""
    record: dict[str, int] = dataclasses.asdict(counters)
    record["uplink_bits"] = counters.uplink_octets * 8
    return record


def recovery_record(
    answer: Answer,
    recovery: RecoveryCounters,
    *,
    ids_resent: int | None = None,
    ends_resent: int | None = None,
) -> dict[str, Any]:
    """What the link and the recovery did to get the answer whole (docs/protocol.md §10);
    ``ids_resent`` / ``ends_resent`` where the spacecraft's side is known."""
    record: dict[str, Any] = {
        "tc_frames_retransmitted": answer.counters.tc_frames_retransmitted,
        "cop1_alerts": answer.counters.cop1_alerts,
        "resend_requests": recovery.resend_requests,
        "token_ranges_requested": recovery.ranges_requested,
        "token_ids_requested": recovery.ids_requested,
        "end_acks": recovery.end_acks,
        "tokens_lost": recovery.tokens_lost,
        "lost_ranges": [[r.first_index, r.count] for r in answer.lost],
        "duplicate_ids_dropped": answer.stats.duplicate_ids,
    }
    if ids_resent is not None:
        record["token_ids_resent"] = ids_resent
    if ends_resent is not None:
        record["ends_resent"] = ends_resent
    return record


def answer_record(
    answer: Answer,
    params: GenerationParams,
    *,
    link: str,
    model: str,
    chat: bool,
    recovery: RecoveryCounters | None = None,
) -> dict[str, Any]:
    """The ``--json`` object of an answer as the ground sees it (``linkstack demo``
    extends it with what the spacecraft and the channel saw)."""
    end = answer.end
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "link": link,
        "model": model,
        "params": {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "chat": chat,
            "stop_ids": list(params.stop_ids),
        },
        "request_id": answer.request_id,
        "prompt_ids": list(answer.prompt_ids),
        "received_ids": list(answer.received_ids),
        "text": answer.text,
        "finish_reason": finish_name(answer.finish_reason),
        "error": None if answer.error is None else str(answer.error),
        "complete": answer.complete,
        "time_to_first_token_s": answer.time_to_first_token_s,
        "total_s": answer.total_s,
        "onboard": None
        if end is None
        else {
            "time_to_first_token_s": end.time_to_first_token_us / 1e6,
            "generation_s": end.generation_time_ms / 1e3,
            "tokens_per_s": end.tokens_per_s,
        },
        "missing": [[r.first_index, r.count] for r in answer.missing],
        "reassembly": dataclasses.asdict(answer.stats),
        "uplink_bits": answer.counters.uplink_octets * 8,
        "frames_received": answer.counters.frames_received,
        "frames_dropped": answer.counters.dropped,
        "rs_symbols_corrected": answer.counters.rs_corrected_symbols,
        "counters": ground_counters(answer.counters),
        "drops": answer.drops,
    }
    if recovery is not None:
        record["recovery"] = recovery_record(answer, recovery)
    return record


def answer_summary(answer: Answer) -> str:
    """One line of link statistics for stderr."""
    c = answer.counters
    ttft = (
        "no id"
        if answer.time_to_first_token_s is None
        else f"first id {answer.time_to_first_token_s * 1e3:.0f} ms"
    )
    return (
        f"{finish_name(answer.finish_reason) or 'no end'}, "
        f"{len(answer.received_ids)} ids, {ttft}, total {answer.total_s:.2f} s; "
        f"up {c.cltus_sent} CLTU(s), {c.uplink_octets * 8} bits; "
        f"down {c.frames_received} frames, {c.frames_lost} lost, {c.dropped} dropped, "
        f"{c.rs_corrected_symbols} RS symbols corrected, {c.rs_uncorrectable} uncorrectable"
    )


__all__ = [
    "SCHEMA_VERSION",
    "answer_record",
    "answer_summary",
    "finish_name",
    "ground_counters",
    "recovery_record",
]
