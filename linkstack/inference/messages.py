"""The inference messages (docs/protocol.md §4-§10): one frozen dataclass per message,
each with ``to_bytes()`` and ``from_bytes(data)``, and the values they carry
(:class:`GenerationParams`, :class:`TokenRange`).

The header octet, the coded fields, the limits and the 18-bit id packing they share
are in :mod:`linkstack.inference.wire`; dispatch by APID and type is
:func:`linkstack.inference.protocol.decode_message`.  Import the public names from
:mod:`linkstack.inference.protocol`, which re-exports them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Final, Self

from linkstack.errors import LocalProtocolError
from linkstack.inference.wire import (
    _ERROR_REASONS,
    _FINISH_REASONS,
    _U16_MAX,
    _U32_MAX,
    _U64_MAX,
    MAX_DETAIL_OCTETS,
    MAX_DEVICE_OCTETS,
    MAX_NEW_TOKENS,
    MAX_PACKET_DATA_OCTETS,
    MAX_PROMPT_IDS,
    MAX_RESEND_RANGES,
    MAX_STOP_IDS,
    MILLI,
    TOKEN_ID_BITS,
    ErrorReason,
    FinishReason,
    MessageType,
    _build,
    _check_ascii,
    _check_header,
    _check_range,
    _check_request_id,
    _check_total,
    _decode_ascii,
    _fail,
    _header_octet,
    check_token_ids,
    pack_token_ids,
    packed_length,
    unpack_token_ids,
)

# ---------------------------------------------------------------------------
# Uplink: PromptRequest, Cancel, ResendRequest, EndAck
# ---------------------------------------------------------------------------


def _milli(name: str, value: float) -> int:
    """Exact fixed-point value: ``value`` must be a multiple of 0.001."""
    if not math.isfinite(value):
        raise LocalProtocolError(f"{name} {value!r} is not finite")
    milli = round(value * MILLI)
    if milli / MILLI != value:
        raise LocalProtocolError(f"{name} {value!r} is not a multiple of 1/{MILLI}")
    return milli


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationParams:
    """Sampling parameters; temperature and top-p travel as exact integers in 1/1000.

    The onboard generator runs on this very object: :attr:`temperature` and
    :attr:`top_p` are the doubles it samples with, the same on both sides of the link.
    """

    #: Tokens to generate at most, 1..MAX_NEW_TOKENS.
    max_new_tokens: int
    #: Temperature * 1000, 0..65535; 0 means greedy decoding.
    temperature_milli: int = 0
    #: Top-p * 1000, 1..1000; 1000 disables nucleus sampling.
    top_p_milli: int = 1000
    #: Top-k, 0..65535; 0 disables it.
    top_k: int = 0
    #: Seed of the onboard sampler's generator, 0..2**64-1.
    seed: int = 0
    #: Ids that end generation (the eos id included), at most MAX_STOP_IDS.
    stop_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_range("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_range("temperature_milli", self.temperature_milli, 0, _U16_MAX)
        _check_range("top_p_milli", self.top_p_milli, 1, MILLI)
        _check_range("top_k", self.top_k, 0, _U16_MAX)
        _check_range("seed", self.seed, 0, _U64_MAX)
        if len(self.stop_ids) > MAX_STOP_IDS:
            raise LocalProtocolError(f"{len(self.stop_ids)} stop ids exceed {MAX_STOP_IDS}")
        check_token_ids(self.stop_ids, name="stop id")

    @classmethod
    def from_floats(
        cls,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        stop_ids: Sequence[int] = (),
    ) -> GenerationParams:
        """Build from floats that are exact multiples of 0.001 (0.7 yes, 0.7001 no)."""
        return cls(
            max_new_tokens=max_new_tokens,
            temperature_milli=_milli("temperature", temperature),
            top_p_milli=_milli("top_p", top_p),
            top_k=top_k,
            seed=seed,
            stop_ids=tuple(stop_ids),
        )

    @property
    def temperature(self) -> float:
        """``temperature_milli / 1000``: the same double on both sides of the link."""
        return self.temperature_milli / MILLI

    @property
    def top_p(self) -> float:
        """``top_p_milli / 1000``: the same double on both sides of the link."""
        return self.top_p_milli / MILLI


# octet 0       1-2         3-4            5-6          7-8         9-10    11-18
# +--------+------------+--------------+------------+------------+-------+--------+
# | header | request_id | max_new_tok  | temp_milli | top_p_milli| top_k |  seed  |
# +--------+------------+--------------+------------+------------+-------+--------+
# 19          20-21          22...
# +----------+--------------+-------------------------+---------------------------+
# | n_stop   | n_prompt     | stop ids, 18-bit packed | prompt ids, 18-bit packed |
# +----------+--------------+-------------------------+---------------------------+
_PROMPT_REQUEST: Final = struct.Struct(">BHHHHHQBH")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRequest:
    """Ground asks for a generation from a tokenized prompt (docs/protocol.md §4)."""

    message_type: ClassVar[MessageType] = MessageType.PROMPT_REQUEST

    #: Ground-assigned id, 0..65535, echoed by every reply about this request.
    request_id: int
    params: GenerationParams
    #: Prompt token ids, 1..MAX_PROMPT_IDS of them.
    prompt_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_range("prompt length", len(self.prompt_ids), 1, MAX_PROMPT_IDS)
        check_token_ids(self.prompt_ids, name="prompt id")

    def to_bytes(self) -> bytes:
        p = self.params
        head = _PROMPT_REQUEST.pack(
            _header_octet(self.message_type),
            self.request_id,
            p.max_new_tokens,
            p.temperature_milli,
            p.top_p_milli,
            p.top_k,
            p.seed,
            len(p.stop_ids),
            len(self.prompt_ids),
        )
        return head + pack_token_ids(p.stop_ids) + pack_token_ids(self.prompt_ids)

    @classmethod
    def from_bytes(cls, data: bytes) -> PromptRequest:
        _check_header(data, cls.message_type, _PROMPT_REQUEST.size, 4)
        (_, request_id, max_new, temp, top_p, top_k, seed, n_stop, n_prompt) = (
            _PROMPT_REQUEST.unpack_from(data)
        )
        if n_stop > MAX_STOP_IDS:
            _fail("too-many-ids", 4, f"{n_stop} stop ids exceed {MAX_STOP_IDS}")
        if n_prompt > MAX_PROMPT_IDS:
            _fail("too-many-ids", 4, f"{n_prompt} prompt ids exceed {MAX_PROMPT_IDS}")
        stop_end = _PROMPT_REQUEST.size + packed_length(n_stop)
        _check_total(data, stop_end + packed_length(n_prompt), 4)
        stop_ids = unpack_token_ids(data[_PROMPT_REQUEST.size : stop_end], n_stop, section=4)
        prompt_ids = unpack_token_ids(data[stop_end:], n_prompt, section=4)
        params = _build(
            4,
            lambda: GenerationParams(
                max_new_tokens=max_new,
                temperature_milli=temp,
                top_p_milli=top_p,
                top_k=top_k,
                seed=seed,
                stop_ids=stop_ids,
            ),
        )
        return _build(4, lambda: cls(request_id=request_id, params=params, prompt_ids=prompt_ids))


# octet 0       1-2
# +--------+------------+
# | header | request_id |
# +--------+------------+
_REQUEST_ONLY: Final = struct.Struct(">BH")


def _pack_request_only(message_type: MessageType, request_id: int) -> bytes:
    return _REQUEST_ONLY.pack(_header_octet(message_type), request_id)


def _unpack_request_only(data: bytes, message_type: MessageType, section: int) -> int:
    """The request id of a message that carries nothing else (Cancel, EndAck)."""
    _check_header(data, message_type, _REQUEST_ONLY.size, section)
    _check_total(data, _REQUEST_ONLY.size, section)
    request_id: int = _REQUEST_ONLY.unpack_from(data)[1]
    return request_id


@dataclass(frozen=True, slots=True)
class _RequestOnly:
    """A message that names a request and nothing else: one codec for each such type."""

    message_type: ClassVar[MessageType]
    #: The section of docs/protocol.md that defines the message.
    section: ClassVar[int]

    request_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)

    def to_bytes(self) -> bytes:
        return _pack_request_only(self.message_type, self.request_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls(_unpack_request_only(data, cls.message_type, cls.section))


@dataclass(frozen=True, slots=True)
class Cancel(_RequestOnly):
    """Ground asks the spacecraft to stop a request (docs/protocol.md §5)."""

    message_type: ClassVar[MessageType] = MessageType.CANCEL
    section: ClassVar[int] = 5


@dataclass(frozen=True, slots=True)
class EndAck(_RequestOnly):
    """Ground holds a whole stream; the spacecraft may free it (docs/protocol.md §10.2)."""

    message_type: ClassVar[MessageType] = MessageType.END_ACK
    section: ClassVar[int] = 10


@dataclass(frozen=True, slots=True)
class TokenRange:
    """``count`` token indices from ``first_index`` on."""

    first_index: int
    count: int

    def __post_init__(self) -> None:
        _check_range("first_index", self.first_index, 0, _U32_MAX)
        _check_range("range count", self.count, 1, _U16_MAX)
        if self.first_index + self.count - 1 > _U32_MAX:
            raise LocalProtocolError(
                f"range {self.first_index}+{self.count} runs past index {_U32_MAX}"
            )


# octet 0       1-2          3          4...            (6 octets per range)
# +--------+------------+----------+---------------------------------------+
# | header | request_id | n_ranges | { first_index u32 | count u16 } * n   |
# +--------+------------+----------+---------------------------------------+
_RESEND_REQUEST: Final = struct.Struct(">BHB")
_RANGE: Final = struct.Struct(">IH")


@dataclass(frozen=True, slots=True)
class ResendRequest:
    """Ground asks again for token ranges it lost (docs/protocol.md §10.1)."""

    message_type: ClassVar[MessageType] = MessageType.RESEND_REQUEST

    request_id: int
    ranges: tuple[TokenRange, ...]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_range("range count", len(self.ranges), 1, MAX_RESEND_RANGES)

    def to_bytes(self) -> bytes:
        head = _RESEND_REQUEST.pack(
            _header_octet(self.message_type), self.request_id, len(self.ranges)
        )
        return head + b"".join(_RANGE.pack(r.first_index, r.count) for r in self.ranges)

    @classmethod
    def from_bytes(cls, data: bytes) -> ResendRequest:
        _check_header(data, cls.message_type, _RESEND_REQUEST.size, 10)
        _, request_id, n_ranges = _RESEND_REQUEST.unpack_from(data)
        if n_ranges > MAX_RESEND_RANGES:
            _fail("too-many-ids", 10, f"{n_ranges} ranges exceed {MAX_RESEND_RANGES}")
        _check_total(data, _RESEND_REQUEST.size + n_ranges * _RANGE.size, 10)
        ranges = tuple(
            _build(10, partial(TokenRange, *_RANGE.unpack_from(data, offset)))
            for offset in range(_RESEND_REQUEST.size, len(data), _RANGE.size)
        )
        return _build(10, lambda: cls(request_id, ranges))


# ---------------------------------------------------------------------------
# Downlink: TokenChunk, EndOfStream, ErrorReport, Housekeeping
# ---------------------------------------------------------------------------

# octet 0       1-2          3-6           7-8       9...
# +--------+------------+-------------+---------+--------------------------+
# | header | request_id | first_index | n_ids   | ids, 18-bit packed       |
# +--------+------------+-------------+---------+--------------------------+
_TOKEN_CHUNK: Final = struct.Struct(">BHIH")
#: Octets of a TokenChunk before its packed ids.
TOKEN_CHUNK_HEADER_OCTETS: Final = _TOKEN_CHUNK.size
#: Ids in the largest TokenChunk one Space Packet can carry.
MAX_CHUNK_IDS: Final = (MAX_PACKET_DATA_OCTETS - _TOKEN_CHUNK.size) * 8 // TOKEN_ID_BITS


def token_chunk_capacity(data_octets: int) -> int:
    """Most ids a TokenChunk of at most ``data_octets`` octets can carry."""
    if data_octets < _TOKEN_CHUNK.size:
        raise LocalProtocolError(
            f"{data_octets} octets cannot hold the {_TOKEN_CHUNK.size}-octet TokenChunk header"
        )
    return min(MAX_CHUNK_IDS, (data_octets - _TOKEN_CHUNK.size) * 8 // TOKEN_ID_BITS)


def token_chunk_octets(count: int) -> int:
    """Octets of a TokenChunk carrying ``count`` ids."""
    return _TOKEN_CHUNK.size + packed_length(count)


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """Generated ids ``first_index .. first_index + len(ids) - 1`` (docs/protocol.md §6)."""

    message_type: ClassVar[MessageType] = MessageType.TOKEN_CHUNK

    request_id: int
    #: Index of ``ids[0]`` in the request's output, counted from 0.
    first_index: int
    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_range("first_index", self.first_index, 0, _U32_MAX)
        _check_range("chunk length", len(self.ids), 0, MAX_CHUNK_IDS)
        if self.first_index + len(self.ids) > _U32_MAX + 1:
            raise LocalProtocolError(
                f"chunk {self.first_index}+{len(self.ids)} runs past index {_U32_MAX}"
            )
        check_token_ids(self.ids)

    def to_bytes(self) -> bytes:
        head = _TOKEN_CHUNK.pack(
            _header_octet(self.message_type), self.request_id, self.first_index, len(self.ids)
        )
        return head + pack_token_ids(self.ids)

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenChunk:
        _check_header(data, cls.message_type, _TOKEN_CHUNK.size, 6)
        _, request_id, first_index, count = _TOKEN_CHUNK.unpack_from(data)
        if count > MAX_CHUNK_IDS:
            _fail("too-many-ids", 6, f"{count} ids exceed {MAX_CHUNK_IDS}")
        _check_total(data, token_chunk_octets(count), 6)
        ids = unpack_token_ids(data[_TOKEN_CHUNK.size :], count, section=6)
        return _build(6, lambda: cls(request_id, first_index, ids))


# octet 0       1-2         3        4-7          8-11       12-15         16-19
# +--------+------------+--------+-----------+-----------+------------+-------------+
# | header | request_id | reason | n_tokens  | ttft_us   | gen_ms     | tok_s_milli |
# +--------+------------+--------+-----------+-----------+------------+-------------+
_END_OF_STREAM: Final = struct.Struct(">BHBIIII")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfStream:
    """A request's stream is complete (docs/protocol.md §7)."""

    message_type: ClassVar[MessageType] = MessageType.END_OF_STREAM

    request_id: int
    finish_reason: FinishReason
    #: Ids the stream carried in all (TokenChunk indices 0..token_count-1).
    token_count: int
    #: Onboard time from dequeuing the request to the first token, microseconds (saturates).
    time_to_first_token_us: int
    #: Onboard time from dequeuing to the last token, milliseconds (saturates).
    generation_time_ms: int
    #: Generation rate in thousandths of a token per second.
    tokens_per_s_milli: int

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not isinstance(self.finish_reason, FinishReason):
            raise LocalProtocolError(f"finish_reason {self.finish_reason!r} is not a FinishReason")
        _check_range("token_count", self.token_count, 0, _U32_MAX)
        _check_range("time_to_first_token_us", self.time_to_first_token_us, 0, _U32_MAX)
        _check_range("generation_time_ms", self.generation_time_ms, 0, _U32_MAX)
        _check_range("tokens_per_s_milli", self.tokens_per_s_milli, 0, _U32_MAX)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_s_milli / MILLI

    def to_bytes(self) -> bytes:
        return _END_OF_STREAM.pack(
            _header_octet(self.message_type),
            self.request_id,
            self.finish_reason,
            self.token_count,
            self.time_to_first_token_us,
            self.generation_time_ms,
            self.tokens_per_s_milli,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EndOfStream:
        _check_header(data, cls.message_type, _END_OF_STREAM.size, 7)
        _check_total(data, _END_OF_STREAM.size, 7)
        _, request_id, reason, count, ttft, gen_ms, rate = _END_OF_STREAM.unpack_from(data)
        if reason not in _FINISH_REASONS:
            _fail("bad-enum", 7, f"finish reason {reason}")
        return _build(
            7,
            lambda: cls(
                request_id=request_id,
                finish_reason=FinishReason(reason),
                token_count=count,
                time_to_first_token_us=ttft,
                generation_time_ms=gen_ms,
                tokens_per_s_milli=rate,
            ),
        )


# octet 0       1         2-3          4         5            6...
# +--------+---------+------------+--------+------------+-----------------------+
# | header | flags   | request_id | reason | detail_len | detail, ASCII 20..7E  |
# +--------+---------+------------+--------+------------+-----------------------+
# flags: bit 0 (most significant) = request_id present; bits 1-7 reserved, zero.
_ERROR_REPORT: Final = struct.Struct(">BBHBB")
_HAS_REQUEST_ID: Final = 0x80


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReport:
    """The spacecraft refused or failed something (docs/protocol.md §8)."""

    message_type: ClassVar[MessageType] = MessageType.ERROR_REPORT

    #: The request concerned, or None when the error is not about one.
    request_id: int | None
    reason: ErrorReason
    #: Short printable-ASCII text, at most MAX_DETAIL_OCTETS.
    detail: str = ""

    def __post_init__(self) -> None:
        if self.request_id is not None:
            _check_request_id(self.request_id)
        if not isinstance(self.reason, ErrorReason):
            raise LocalProtocolError(f"reason {self.reason!r} is not an ErrorReason")
        _check_ascii("detail", self.detail, MAX_DETAIL_OCTETS)

    def to_bytes(self) -> bytes:
        flags = 0 if self.request_id is None else _HAS_REQUEST_ID
        head = _ERROR_REPORT.pack(
            _header_octet(self.message_type),
            flags,
            self.request_id or 0,
            self.reason,
            len(self.detail),
        )
        return head + self.detail.encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> ErrorReport:
        _check_header(data, cls.message_type, _ERROR_REPORT.size, 8)
        _, flags, request_id, reason, n_detail = _ERROR_REPORT.unpack_from(data)
        if flags & ~_HAS_REQUEST_ID:
            _fail("reserved-bits", 8, f"flags 0x{flags:02X}")
        if not flags & _HAS_REQUEST_ID and request_id != 0:
            _fail("reserved-bits", 8, f"request_id {request_id} with the present flag clear")
        if reason not in _ERROR_REASONS:
            _fail("bad-enum", 8, f"error reason {reason}")
        if n_detail > MAX_DETAIL_OCTETS:
            _fail("too-long", 8, f"detail of {n_detail} octets exceeds {MAX_DETAIL_OCTETS}")
        _check_total(data, _ERROR_REPORT.size + n_detail, 8)
        detail = _decode_ascii("detail", data[_ERROR_REPORT.size :], 8)
        return _build(
            8,
            lambda: cls(
                request_id=request_id if flags & _HAS_REQUEST_ID else None,
                reason=ErrorReason(reason),
                detail=detail,
            ),
        )


# octet 0       1-2          3-6           7-14           15-18       19          20...
# +--------+-------------+-------------+---------------+-----------+------------+--------+
# | header | queue_depth | tok_s_milli | memory_octets | uptime_s  | device_len | device |
# +--------+-------------+-------------+---------------+-----------+------------+--------+
_HOUSEKEEPING: Final = struct.Struct(">BHIQIB")


@dataclass(frozen=True, slots=True, kw_only=True)
class Housekeeping:
    """Periodic state of the onboard inference service (docs/protocol.md §9)."""

    message_type: ClassVar[MessageType] = MessageType.HOUSEKEEPING

    #: Requests waiting or running.
    queue_depth: int
    #: Recent generation rate in thousandths of a token per second.
    tokens_per_s_milli: int
    #: Memory the model and its caches hold, octets.
    memory_used_octets: int
    #: Seconds since the service started (saturates).
    uptime_s: int
    #: Device name, printable ASCII, e.g. "cuda:0 NVIDIA H100" or "cpu".
    device: str

    def __post_init__(self) -> None:
        _check_range("queue_depth", self.queue_depth, 0, _U16_MAX)
        _check_range("tokens_per_s_milli", self.tokens_per_s_milli, 0, _U32_MAX)
        _check_range("memory_used_octets", self.memory_used_octets, 0, _U64_MAX)
        _check_range("uptime_s", self.uptime_s, 0, _U32_MAX)
        _check_ascii("device", self.device, MAX_DEVICE_OCTETS)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_s_milli / MILLI

    def to_bytes(self) -> bytes:
        head = _HOUSEKEEPING.pack(
            _header_octet(self.message_type),
            self.queue_depth,
            self.tokens_per_s_milli,
            self.memory_used_octets,
            self.uptime_s,
            len(self.device),
        )
        return head + self.device.encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Housekeeping:
        _check_header(data, cls.message_type, _HOUSEKEEPING.size, 9)
        _, depth, rate, memory, uptime, n_device = _HOUSEKEEPING.unpack_from(data)
        if n_device > MAX_DEVICE_OCTETS:
            _fail("too-long", 9, f"device of {n_device} octets exceeds {MAX_DEVICE_OCTETS}")
        _check_total(data, _HOUSEKEEPING.size + n_device, 9)
        device = _decode_ascii("device", data[_HOUSEKEEPING.size :], 9)
        return _build(
            9,
            lambda: cls(
                queue_depth=depth,
                tokens_per_s_milli=rate,
                memory_used_octets=memory,
                uptime_s=uptime,
                device=device,
            ),
        )


#: Every inference message, uplink and downlink.
Message = (
    PromptRequest
    | Cancel
    | ResendRequest
    | EndAck
    | TokenChunk
    | EndOfStream
    | ErrorReport
    | Housekeeping
)
