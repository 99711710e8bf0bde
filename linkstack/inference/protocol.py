"""Inference application protocol: the messages carried in Space Packet user data.

Every message is the whole user data field of one CCSDS Space Packet (133.0-B-2);
the APID says which direction and purpose it serves and a one-octet header says
which message it is.  Byte layouts, limits and decode reasons are specified in
``docs/protocol.md``; each ``DecodeError`` cites the section it enforces.

Codecs only: no state, no I/O.  ``encode_message`` gives ``(apid, data)`` for the
packet layer; ``decode_message(apid, data)`` parses received user data or raises
:class:`~linkstack.errors.DecodeError`.

This module is the one to import from.  It holds the dispatch and the ErrorReport
detail texts both ends write and read; it re-exports the rest, from
:mod:`linkstack.inference.wire` (limits, header octet, coded fields, 18-bit id
packing) and :mod:`linkstack.inference.messages` (one dataclass per message).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from linkstack.errors import LocalProtocolError
from linkstack.inference.messages import (
    MAX_CHUNK_IDS,
    TOKEN_CHUNK_HEADER_OCTETS,
    Cancel,
    EndAck,
    EndOfStream,
    ErrorReport,
    GenerationParams,
    Housekeeping,
    Message,
    PromptRequest,
    ResendRequest,
    TokenChunk,
    TokenRange,
    token_chunk_capacity,
    token_chunk_octets,
)
from linkstack.inference.wire import (
    _APIDS,
    _MESSAGE_TYPES,
    IDLE_APID,
    MAX_DETAIL_OCTETS,
    MAX_DEVICE_OCTETS,
    MAX_NEW_TOKENS,
    MAX_PACKET_DATA_OCTETS,
    MAX_PROMPT_IDS,
    MAX_RESEND_RANGES,
    MAX_STOP_IDS,
    MAX_TOKEN_ID,
    MESSAGE_APID,
    MILLI,
    PROTOCOL_VERSION,
    QWEN3_VOCAB_SIZE,
    TOKEN_ID_BITS,
    Apid,
    ErrorReason,
    FinishReason,
    MessageType,
    _fail,
    check_token_ids,
    pack_token_ids,
    packed_length,
    unpack_token_ids,
)

# ---------------------------------------------------------------------------
# ErrorReport detail texts (docs/protocol.md §8.1, §10.3)
# ---------------------------------------------------------------------------


def format_ranges(ranges: Sequence[TokenRange], *, limit: int = MAX_DETAIL_OCTETS) -> str:
    """``first+count`` per range, comma-separated, at most ``limit`` characters.

    The detail text of a RESEND_UNAVAILABLE ErrorReport (docs/protocol.md §10.3): whole
    ranges only; when they do not all fit, the text ends with ``,...``.
    """
    parts = [f"{r.first_index}+{r.count}" for r in ranges]
    text = ",".join(parts)
    while len(text) > limit and parts:
        parts.pop()
        text = ",".join([*parts, "..."])
    return text[:limit]


def parse_ranges(text: str) -> tuple[TokenRange, ...]:
    """The ranges :func:`format_ranges` wrote (a trailing ``...`` is skipped).

    Raises LocalProtocolError naming the first item that is not ``first+count``.
    """
    ranges: list[TokenRange] = []
    for item in text.split(",") if text else ():
        if item == "...":
            continue
        first, sep, count = item.partition("+")
        if not (sep and first.isdigit() and count.isdigit()):
            raise LocalProtocolError(f"range {item!r} in {text!r} is not FIRST+COUNT")
        ranges.append(TokenRange(int(first), int(count)))
    return tuple(ranges)


#: Octets of the SHA-256 of the refused PromptRequest that a DUPLICATE_REQUEST names.
DUPLICATE_DIGEST_OCTETS: Final = 8  # docs/protocol.md §8.1
_DUPLICATE_DETAIL: Final = re.compile(
    r"^id (?P<id>\d+) (?P<state>[^;]+); "
    rf"refused sha256:(?P<digest>[0-9a-f]{{{2 * DUPLICATE_DIGEST_OCTETS}}})$"
)


def request_digest(request: PromptRequest) -> str:
    """First 8 octets of the SHA-256 of ``request``'s octets, in hex: how a
    DUPLICATE_REQUEST detail names the request it refused (docs/protocol.md §8.1)."""
    return hashlib.sha256(request.to_bytes()).digest()[:DUPLICATE_DIGEST_OCTETS].hex()


@dataclass(frozen=True, slots=True)
class DuplicateDetail:
    """What the detail of a DUPLICATE_REQUEST ErrorReport says (docs/protocol.md §8.1)."""

    #: The id still in use on board.
    request_id: int
    #: Where the request that holds it is: ``queued``, ``running``, ``streaming`` or
    #: ``held for resend``.
    state: str
    #: :func:`request_digest` of the refused request, so that the ground whose request
    #: it was can tell it from the one the id belongs to.
    digest: str


def format_duplicate_detail(request_id: int, state: str, refused: PromptRequest) -> str:
    """``id N STATE; refused sha256:HHHHHHHHHHHHHHHH``: the DUPLICATE_REQUEST detail
    (docs/protocol.md §8.1) for ``refused``, whose id ``request_id`` is held ``state``."""
    return f"id {request_id} {state}; refused sha256:{request_digest(refused)}"


def parse_duplicate_detail(detail: str) -> DuplicateDetail | None:
    """What :func:`format_duplicate_detail` wrote, or None when ``detail`` is not that."""
    match = _DUPLICATE_DETAIL.match(detail)
    if match is None:
        return None
    return DuplicateDetail(int(match["id"]), match["state"], match["digest"])


_BUSY_DETAIL: Final = re.compile(
    r"^queue (?P<queued>\d+)/(?P<limit>\d+); retry after (?P<ms>\d+) ms$"
)


@dataclass(frozen=True, slots=True)
class BusyDetail:
    """What the detail of a QUEUE_FULL ErrorReport says (docs/protocol.md §8.2): the
    spacecraft is busy; ask again after ``retry_after_ms``."""

    #: Requests waiting on board when the request was refused, and the queue's size.
    queued: int
    limit: int
    #: When a queue place is likely free again, milliseconds from the refusal.
    retry_after_ms: int

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, rounded up (an HTTP ``Retry-After`` value, RFC 9110 10.2.3)."""
        return -(-self.retry_after_ms // 1000)


def format_busy_detail(queued: int, limit: int, retry_after_s: float) -> str:
    """``queue Q/N; retry after T ms``: the QUEUE_FULL detail (docs/protocol.md §8.2)."""
    retry_ms = max(0, round(retry_after_s * 1000))
    return f"queue {queued}/{limit}; retry after {retry_ms} ms"


def parse_busy_detail(detail: str) -> BusyDetail | None:
    """What :func:`format_busy_detail` wrote, or None when ``detail`` is not that."""
    match = _BUSY_DETAIL.match(detail)
    if match is None:
        return None
    return BusyDetail(int(match["queued"]), int(match["limit"]), int(match["ms"]))


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------

_CODECS: Final[dict[MessageType, type[Message]]] = {
    MessageType.PROMPT_REQUEST: PromptRequest,
    MessageType.CANCEL: Cancel,
    MessageType.RESEND_REQUEST: ResendRequest,
    MessageType.END_ACK: EndAck,
    MessageType.TOKEN_CHUNK: TokenChunk,
    MessageType.END_OF_STREAM: EndOfStream,
    MessageType.ERROR_REPORT: ErrorReport,
    MessageType.HOUSEKEEPING: Housekeeping,
}


def encode_message(message: Message) -> tuple[int, bytes]:
    """The APID a message travels on and the packet user data that carries it."""
    return MESSAGE_APID[message.message_type], message.to_bytes()


def decode_message(apid: int, data: bytes) -> Message:
    """Parse the user data of a packet received on ``apid``.

    Raises DecodeError: ``unknown-apid``, ``truncated``, ``unsupported-version``,
    ``unknown-type``, ``wrong-apid`` here, and each codec's reasons below.
    """
    if apid not in _APIDS:
        _fail("unknown-apid", 1, f"APID 0x{apid:03X} carries no inference message")
    if len(data) < 1:
        _fail("truncated", 2, "empty user data")
    version, raw_type = data[0] >> 5, data[0] & 0x1F
    if version != PROTOCOL_VERSION:
        _fail("unsupported-version", 2, f"version {version}, expected {PROTOCOL_VERSION}")
    if raw_type not in _MESSAGE_TYPES:
        _fail("unknown-type", 2, f"message type 0x{raw_type:02X}")
    message_type = MessageType(raw_type)
    if MESSAGE_APID[message_type] != apid:
        _fail(
            "wrong-apid",
            1,
            f"{message_type.name} belongs on APID 0x{MESSAGE_APID[message_type]:03X}, "
            f"received on 0x{apid:03X}",
        )
    return _CODECS[message_type].from_bytes(data)


__all__ = [
    "DUPLICATE_DIGEST_OCTETS",
    "IDLE_APID",
    "MAX_CHUNK_IDS",
    "MAX_DETAIL_OCTETS",
    "MAX_DEVICE_OCTETS",
    "MAX_NEW_TOKENS",
    "MAX_PACKET_DATA_OCTETS",
    "MAX_PROMPT_IDS",
    "MAX_RESEND_RANGES",
    "MAX_STOP_IDS",
    "MAX_TOKEN_ID",
    "MESSAGE_APID",
    "MILLI",
    "PROTOCOL_VERSION",
    "QWEN3_VOCAB_SIZE",
    "TOKEN_CHUNK_HEADER_OCTETS",
    "TOKEN_ID_BITS",
    "Apid",
    "BusyDetail",
    "Cancel",
    "DuplicateDetail",
    "EndAck",
    "EndOfStream",
    "ErrorReason",
    "ErrorReport",
    "FinishReason",
    "GenerationParams",
    "Housekeeping",
    "Message",
    "MessageType",
    "PromptRequest",
    "ResendRequest",
    "TokenChunk",
    "TokenRange",
    "check_token_ids",
    "decode_message",
    "encode_message",
    "format_busy_detail",
    "format_duplicate_detail",
    "format_ranges",
    "pack_token_ids",
    "packed_length",
    "parse_busy_detail",
    "parse_duplicate_detail",
    "parse_ranges",
    "request_digest",
    "token_chunk_capacity",
    "token_chunk_octets",
    "unpack_token_ids",
]
