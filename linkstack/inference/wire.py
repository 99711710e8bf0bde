"""The wire format below the inference messages (docs/protocol.md §1-§3, §7, §8, §11).

The limits, the one-octet message header, the coded fields (APIDs, message types,
finish and error reasons), the 18-bit token id packing, and the checks every codec of
:mod:`linkstack.inference.messages` shares.  Import the public names from
:mod:`linkstack.inference.protocol`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Final, NoReturn, TypeVar

import numpy as np

from linkstack.errors import DecodeError, Layer, LocalProtocolError

# ---------------------------------------------------------------------------
# Wire constants
# ---------------------------------------------------------------------------

#: Version carried in the top three bits of every message header.
PROTOCOL_VERSION: Final = 1  # docs/protocol.md §2
#: Bits per packed token id: Qwen-3's vocabulary (151936 ids) is below 2**18.
TOKEN_ID_BITS: Final = 18  # docs/protocol.md §3
#: Largest id the 18-bit packing can carry.
MAX_TOKEN_ID: Final = (1 << TOKEN_ID_BITS) - 1
#: Qwen-3 embedding rows (ids 151669-151935 are unused padding); for callers, not checked here.
QWEN3_VOCAB_SIZE: Final = 151_936

#: APID reserved for Idle Packets; never assigned to a message.
IDLE_APID: Final = 0x7FF  # CCSDS 133.0-B-2 4.1.3.3.4.4
#: Largest Packet Data Field: the 16-bit Packet Data Length holds octets - 1.
MAX_PACKET_DATA_OCTETS: Final = 65_536  # CCSDS 133.0-B-2 4.1.3.5.3

#: Prompt ids per request; with MAX_NEW_TOKENS it fills Qwen-3's 32,768-token native context.
MAX_PROMPT_IDS: Final = 16_384  # docs/protocol.md §11
#: Tokens one request may ask for.
MAX_NEW_TOKENS: Final = 16_384  # docs/protocol.md §11
#: Stop ids per request.
MAX_STOP_IDS: Final = 16  # docs/protocol.md §11
#: Ranges in one ResendRequest.
MAX_RESEND_RANGES: Final = 32  # docs/protocol.md §11
#: Octets of ErrorReport detail text.
MAX_DETAIL_OCTETS: Final = 80  # docs/protocol.md §11
#: Octets of the Housekeeping device name.
MAX_DEVICE_OCTETS: Final = 48  # docs/protocol.md §11
#: Fixed-point scale of temperature and top-p: the wire carries value * 1000.
MILLI: Final = 1000  # docs/protocol.md §4

_T = TypeVar("_T")

_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


class Apid(IntEnum):
    """Application Process Identifiers of the inference service (docs/protocol.md §1)."""

    #: Uplink (TC packets): PromptRequest, Cancel, ResendRequest, EndAck.
    REQUEST = 0x040
    #: Downlink (TM packets): TokenChunk and EndOfStream, in stream order.
    TOKEN_STREAM = 0x041
    #: Downlink (TM packets): ErrorReport.
    CONTROL = 0x042
    #: Downlink (TM packets): Housekeeping.
    HOUSEKEEPING = 0x043
    #: Uplink (TC packets): one SDLS key management PDU (CCSDS 355.1-B-1 in spirit:
    #: OTAR, activation, deactivation) as the raw user data, no inference message.
    KEY_MANAGEMENT = 0x044

    @property
    def uplink(self) -> bool:
        """True for ground-to-spacecraft APIDs (Packet Type 1, telecommand)."""
        return self in (Apid.REQUEST, Apid.KEY_MANAGEMENT)


class MessageType(IntEnum):
    """Low five bits of the message header octet (docs/protocol.md §2).

    Type 0 is never assigned, so zero fill never parses as a message.
    """

    PROMPT_REQUEST = 0x01
    CANCEL = 0x02
    RESEND_REQUEST = 0x03
    END_ACK = 0x04
    TOKEN_CHUNK = 0x08
    END_OF_STREAM = 0x09
    ERROR_REPORT = 0x10
    HOUSEKEEPING = 0x18


#: The APID each message type travels on.
MESSAGE_APID: Final[dict[MessageType, Apid]] = {
    MessageType.PROMPT_REQUEST: Apid.REQUEST,
    MessageType.CANCEL: Apid.REQUEST,
    MessageType.RESEND_REQUEST: Apid.REQUEST,
    MessageType.END_ACK: Apid.REQUEST,
    MessageType.TOKEN_CHUNK: Apid.TOKEN_STREAM,
    MessageType.END_OF_STREAM: Apid.TOKEN_STREAM,
    MessageType.ERROR_REPORT: Apid.CONTROL,
    MessageType.HOUSEKEEPING: Apid.HOUSEKEEPING,
}


class FinishReason(IntEnum):
    """Why a token stream ended (docs/protocol.md §7); also how a generation run ends."""

    #: A stop id was generated (it is the last id of the stream).
    STOP_ID = 0
    #: max_new_tokens ids were generated.
    MAX_TOKENS = 1
    #: A Cancel stopped the request, queued or running.
    CANCELLED = 2
    #: Generation failed; an ErrorReport says why.
    ERROR = 3

    @property
    def label(self) -> str:
        """The name users see in ``--json`` records and program output (docs/json.md):
        ``stop``, ``max_tokens``, ``cancelled`` or ``error``."""
        return _FINISH_LABELS[self]


_FINISH_LABELS: Final[dict[FinishReason, str]] = {
    FinishReason.STOP_ID: "stop",
    FinishReason.MAX_TOKENS: "max_tokens",
    FinishReason.CANCELLED: "cancelled",
    FinishReason.ERROR: "error",
}


class ErrorReason(IntEnum):
    """What an ErrorReport reports (docs/protocol.md §8)."""

    MALFORMED_REQUEST = 1
    PROMPT_TOO_LONG = 2
    QUEUE_FULL = 3
    GENERATION_FAILED = 4
    UNKNOWN_APID = 5
    UNKNOWN_MESSAGE = 6
    OUT_OF_MEMORY = 7
    UNKNOWN_REQUEST = 8
    DUPLICATE_REQUEST = 9
    UNSUPPORTED_VERSION = 10
    #: A ResendRequest named a stream the spacecraft no longer holds (§10.3); the
    #: detail lists the ranges (:func:`~linkstack.inference.protocol.format_ranges`).
    RESEND_UNAVAILABLE = 11
    INTERNAL = 255


#: The APIDs that carry inference messages (KEY_MANAGEMENT carries SDLS PDUs).
_APIDS: Final = frozenset(Apid) - {Apid.KEY_MANAGEMENT}
_MESSAGE_TYPES: Final = frozenset(MessageType)
_FINISH_REASONS: Final = frozenset(FinishReason)
_ERROR_REASONS: Final = frozenset(ErrorReason)

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _clause(section: int) -> str:
    return f"docs/protocol.md §{section}"


def _fail(reason: str, section: int, detail: str) -> NoReturn:
    raise DecodeError(Layer.APPLICATION, reason, _clause(section), detail)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LocalProtocolError(f"{name} {value} outside {low}..{high}")


#  0 1 2 3 4 5 6 7
# +-----+---------+
# | VER |  TYPE   |   VER = 1 (3 bits), TYPE = MessageType (5 bits)
# +-----+---------+
def _header_octet(message_type: MessageType) -> int:
    return (PROTOCOL_VERSION << 5) | message_type


def _check_header(data: bytes, message_type: MessageType, fixed: int, section: int) -> None:
    """Check the header octet and that ``data`` holds the ``fixed``-octet part."""
    if len(data) < 1:
        _fail("truncated", 2, "empty message")
    version, raw_type = data[0] >> 5, data[0] & 0x1F
    if version != PROTOCOL_VERSION:
        _fail("unsupported-version", 2, f"version {version}, expected {PROTOCOL_VERSION}")
    if raw_type != message_type:
        _fail("wrong-type", 2, f"type 0x{raw_type:02X}, expected {message_type.name}")
    if len(data) < fixed:
        _fail("truncated", section, f"{len(data)} octets, fixed part needs {fixed}")


def _check_total(data: bytes, expected: int, section: int) -> None:
    if len(data) < expected:
        _fail("truncated", section, f"{len(data)} octets, fields declare {expected}")
    if len(data) > expected:
        _fail("bad-length", section, f"{len(data)} octets, fields declare {expected}")


def _build(section: int, build: Callable[[], _T]) -> _T:
    """Construct a decoded message; a value its constructor refuses is a DecodeError."""
    try:
        return build()
    except LocalProtocolError as exc:
        _fail("bad-value", section, str(exc))


def _check_ascii(name: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise LocalProtocolError(f"{name} of {len(text)} characters exceeds {limit}")
    if not all(" " <= c <= "~" for c in text):
        raise LocalProtocolError(f"{name} {text!r} is not printable ASCII")


def _decode_ascii(name: str, raw: bytes, section: int) -> str:
    if not all(0x20 <= b <= 0x7E for b in raw):
        _fail("bad-text", section, f"{name} holds non-printable or non-ASCII octets")
    return raw.decode("ascii")


def _check_request_id(request_id: int) -> None:
    _check_range("request_id", request_id, 0, _U16_MAX)


# ---------------------------------------------------------------------------
# Token id packing (docs/protocol.md §3)
# ---------------------------------------------------------------------------

_SHIFTS: Final = np.arange(TOKEN_ID_BITS - 1, -1, -1, dtype=np.uint32)
_WEIGHTS: Final = (np.uint32(1) << _SHIFTS).astype(np.uint32)


def packed_length(count: int) -> int:
    """Octets that ``count`` packed 18-bit ids occupy (4 ids in 9 octets)."""
    if count < 0:
        raise LocalProtocolError(f"id count {count} is negative")
    return (count * TOKEN_ID_BITS + 7) // 8


def check_token_ids(ids: Sequence[int], *, name: str = "token id") -> None:
    """Raise LocalProtocolError naming the first id that does not fit in 18 bits."""
    if ids and (min(ids) < 0 or max(ids) > MAX_TOKEN_ID):
        index, value = next((i, v) for i, v in enumerate(ids) if not 0 <= v <= MAX_TOKEN_ID)
        raise LocalProtocolError(
            f"{name} {value} at index {index} outside 0..{MAX_TOKEN_ID} (18 bits)"
        )


def pack_token_ids(ids: Sequence[int]) -> bytes:
    """Pack ids as a dense big-endian 18-bit stream; the last octet is zero-padded."""
    check_token_ids(ids)
    if not ids:
        return b""
    values = np.fromiter(ids, dtype=np.uint32, count=len(ids))
    bits = ((values[:, None] >> _SHIFTS) & 1).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_token_ids(data: bytes, count: int, *, section: int = 3) -> tuple[int, ...]:
    """Unpack ``count`` ids from exactly ``packed_length(count)`` octets.

    Raises DecodeError ``bad-length`` when the length disagrees with the count and
    ``bad-padding`` when the pad bits after the last id are not zero.
    """
    expected = packed_length(count)
    if len(data) != expected:
        _fail("bad-length", section, f"{count} ids need {expected} octets, got {len(data)}")
    if count == 0:
        return ()
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    used = count * TOKEN_ID_BITS
    if bits[used:].any():
        _fail("bad-padding", section, f"{len(bits) - used} pad bits are not all zero")
    values = bits[:used].reshape(count, TOKEN_ID_BITS).astype(np.uint32) @ _WEIGHTS
    return tuple(values.tolist())
