"""Replay of a recorded session through the ground side: ``groundstation replay``.

A linkstack capture (pcapng, :mod:`linkstack.capture`) holds everything a replay needs:
the link configuration, the tokenizer's model spec and the request timeout in its
metadata, the uplink (CLTUs and, unless the session was protected, the decoded Space
Packets) and the downlink CADUs as received, each with its time.  :func:`replay_capture`

1. takes the PromptRequests (request id, parameters, prompt ids) from the recorded
   uplink Space Packets, or, when the capture holds none (a protected session), by
   decoding the recorded CLTUs with the spacecraft's own decoders
   (:class:`~linkstack.endpoints.SpacecraftEndpoint`);
2. runs a fresh :class:`~groundstation.station.GroundStation` - the same endpoint,
   FOP-1, token assembly and request bookkeeping as the live run - on an event loop
   whose clock is the recording's (:class:`VirtualClockLoop`): each request is
   submitted at its recorded time, each CADU fed at its recorded time, timers (the
   request timeout, FOP-1 T1) fire at the virtual times they fall due.  Nothing waits;
3. returns each request's :class:`~groundstation.station.Answer` and its ``--json``
   record as ``groundstation ask`` prints it, plus what the replayed ground sent up
   compared with the recorded CLTUs (``replay.uplink``).

Deterministic: the same file gives the same output, every time, on every machine.

The recorded times are the session's: seconds since its start when the capture names
a wall-clock start (its ``time_reference``), else the recorder's clock as it was.  A
recording cut short (a crash, ``kill -9``) replays what it holds up to its last whole
block; :attr:`ReplayResult.truncated` and each record's ``replay.truncated`` say what
was cut, and :attr:`ReplayResult.warnings` gives the line to show on stderr.

What a replay reproduces of the live ground run, and what it cannot: see
:data:`REPRODUCED_FIELDS` and :data:`TIMING_FIELDS`.  Fields of ``linkstack demo``'s
record beyond the ground's (``generated_ids``, ``match``, ``spacecraft_counters``,
``channels``, ``frames_sent``) are about the spacecraft and the simulated channel,
which a ground-side capture does not see.

:func:`replay_cadu_stream` replays a plain file of concatenated CADUs (as SDR tools
write them): no times, no metadata, no requests, so it decodes with the default link
configuration and reports the token streams it finds per request id.

:func:`replay_recording` replays a pass recorded as IQ samples (SigMF, as ``linkstack
radio tx`` writes it): :class:`RecordingCadus` runs the samples through a
:class:`~linkstack.radio.receiver.IqReceiver` with the settings of the recording's
``linkstack:`` fields (:func:`iq_settings`; options win over them) and hands each CADU
*as received* (``output="cadus"``: aligned, Viterbi-decoded, still randomized, not
R-S corrected) to :func:`replay_cadu_stream`, which reports it as it reports a plain
CADU file, with a ``radio`` entry for what the receiver did.  The ground's own
synchronizer derandomizes and R-S decodes those CADUs, so the corrections the channel
needed are in the ground's counters (``rs_corrected_symbols``, ``rs_uncorrectable``),
as for any other link.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import selectors
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from groundstation.assembler import TokenAssembler
from groundstation.records import answer_record
from groundstation.records import finish_name as _finish_name
from groundstation.recovery import RecoveryCounters
from groundstation.station import Answer, GroundStation
from linkstack.capture import (
    Capture,
    CaptureError,
    Direction,
    TruncatedTail,
    UnitKind,
    read_cadu_file,
    read_capture,
)
from linkstack.coding.convolutional import CODE_RATES, CodeRate
from linkstack.coding.soft import NrzmMode
from linkstack.coding.tm import Basis, TmCodingConfig
from linkstack.endpoints import (
    GroundCounters,
    GroundEndpoint,
    LinkConfig,
    MessageReceived,
    SpacecraftEndpoint,
)
from linkstack.errors import LinkError, RemoteProtocolError
from linkstack.inference.protocol import (
    EndOfStream,
    ErrorReport,
    PromptRequest,
    TokenChunk,
    decode_message,
)
from linkstack.inference.tokenizer import Tokenizer
from linkstack.packets.space_packet import SpacePacket
from linkstack.radio.modem import MODULATIONS, Modulation
from linkstack.radio.receiver import CaduReceived, IqReceiver
from linkstack.radio.recording import RecordingError
from linkstack.radio.sigmf_files import Recording, read_recording
from linkstack.sdls import LinkSecurity
from linkstack.sdls.keystore import RoleSecurity, link_security, security_record

__all__ = [
    "REPRODUCED_FIELDS",
    "TIMING_FIELDS",
    "IqSettings",
    "RecordedRequest",
    "RecordingCadus",
    "ReplayError",
    "ReplayResult",
    "VirtualClockLoop",
    "comparable",
    "iq_settings",
    "is_sigmf_path",
    "recorded_requests",
    "replay_cadu_stream",
    "replay_capture",
    "replay_file",
    "replay_recording",
]

#: Fields of the ``groundstation ask --json`` record a replay reproduces exactly.
REPRODUCED_FIELDS: Final = (
    "link",
    "model",
    "params",
    "request_id",
    "prompt_ids",
    "received_ids",
    "text",
    "finish_reason",
    "error",
    "complete",
    "onboard",
    "missing",
    "reassembly",
    "counters",
    "drops",
)
#: Fields computed from times: the replay takes them from the recorded times, which
#: are the live ones to the nanosecond (pcapng resolution) but for the few
#: microseconds between the live station reading its clock for the request and for
#: its timeout; equal within :data:`TIMING_TOLERANCE_S`.
TIMING_FIELDS: Final = ("time_to_first_token_s", "total_s")
TIMING_TOLERANCE_S: Final = 1e-3

#: Slack after the last recorded unit before a request without a recorded timeout
#: (a spacecraft-side capture) is given up.
_NO_TIMEOUT_SLACK_S: Final = 1.0


class ReplayError(LinkError):
    """The file holds nothing a replay can use (no request, no CADU...)."""


# -- the injected clock ----------------------------------------------------------------

#: What a selector watches: a file descriptor or an object with ``fileno()``.
_FileObject = Any


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector: real file descriptors (the loop's self-pipe) are polled
    without waiting; where the loop would sleep until its next timer, the virtual
    clock jumps there instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(
        self, fileobj: _FileObject, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: _FileObject) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: _FileObject, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            raise ReplayError(
                "virtual clock: nothing is scheduled and nothing can arrive (a deadlock)"
            )
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[_FileObject, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock: ``time()`` moves only when the loop has
    nothing to do but wait for a timer, and then jumps straight to it.

    Everything run on it must be driven by the loop itself (no threads doing work in
    real time): the replay, or a simulation whose work takes no virtual time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self._virtual_now += seconds

    def set_time(self, when: float) -> None:
        """Move the clock forward to ``when`` (never back)."""
        self._virtual_now = max(self._virtual_now, float(when))


async def _until(when: float) -> None:
    """Let the loop run every timer due before ``when``, then stand at ``when``."""
    loop = asyncio.get_running_loop()
    if when > loop.time():
        await asyncio.sleep(when - loop.time())
    if isinstance(loop, VirtualClockLoop):
        loop.set_time(when)


# -- the recorded requests ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A PromptRequest found in the capture and when it went up."""

    t: float
    request: PromptRequest
    #: "packet" (a recorded uplink Space Packet) or "cltu" (decoded from the CLTUs).
    source: str


def _request_from_packet(raw: bytes) -> PromptRequest | None:
    try:
        packet = SpacePacket.from_bytes(raw)
        message = decode_message(packet.apid, packet.data)
    except RemoteProtocolError:
        return None
    return message if isinstance(message, PromptRequest) else None


def recorded_requests(
    capture: Capture,
    config: LinkConfig,
    security: LinkSecurity | None = None,
    *,
    drops: dict[str, int] | None = None,
) -> list[RecordedRequest]:
    """The PromptRequests of the capture, in the order they went up; the CLTUs of a
    protected session decode only with ``security`` (the spacecraft's).  ``drops``
    receives what decoding the CLTUs dropped (``"layer/reason" -> count``)."""
    found = [
        RecordedRequest(unit.t, request, "packet")
        for unit in capture.units
        if unit.kind is UnitKind.PACKET and unit.direction is Direction.UPLINK
        if (request := _request_from_packet(unit.data)) is not None
    ]
    if found:
        return found
    # No plaintext packets recorded: decode the CLTUs as the spacecraft would.
    spacecraft = SpacecraftEndpoint(config, security)
    for unit in capture.units:
        if unit.kind is not UnitKind.CLTU:
            continue
        spacecraft.receive_bytes(unit.data, unit.t)
        spacecraft.end_of_stream(unit.t)  # each recorded CLTU is one carrier burst
        while (event := spacecraft.next_event()) is not None:
            if isinstance(event, MessageReceived) and isinstance(event.message, PromptRequest):
                found.append(RecordedRequest(unit.t, event.message, "cltu"))
    if drops is not None:
        drops.update(spacecraft.drops)
    first_cltu = next((u.t for u in capture.units if u.kind is UnitKind.CLTU), None)
    if found and first_cltu is not None:
        # The first request opened the session: the ground sent its Set V(R) (a CLTU
        # carrying no request) at once, the request's AD frame only after the CLCW.
        found[0] = dataclasses.replace(found[0], t=min(found[0].t, first_cltu))
    return found


# -- replay of a capture --------------------------------------------------------------


@dataclass(slots=True)
class ReplayResult:
    """What a replay gave: one answer per recorded request, and the uplink check."""

    answers: list[Answer]
    #: One ``groundstation ask --json`` record per answer, with a ``replay`` entry.
    records: list[dict[str, Any]]
    #: CLTUs the replayed ground sent, (time, octets), and the recorded ones.
    uplink_replayed: list[tuple[float, bytes]] = field(default_factory=list)
    uplink_recorded: list[tuple[float, bytes]] = field(default_factory=list)
    #: What a recording cut short lost after its last whole block (the capture's
    #: :attr:`~linkstack.capture.Capture.truncated`), None for a whole file.
    truncated: TruncatedTail | None = None
    #: The file's name, as the records give it.
    source: str | None = None

    @property
    def warnings(self) -> list[str]:
        """Lines to show on stderr besides the answers: a cut tail, named by its file."""
        if self.truncated is None:
            return []
        return [f"{self.source or 'capture'}: {self.truncated}"]

    @property
    def uplink_identical(self) -> bool:
        """The replayed ground sent the recorded CLTUs, octet for octet, in order."""
        return [d for _, d in self.uplink_replayed] == [d for _, d in self.uplink_recorded]


class _ReplayLink:
    """The ground's link during a replay: what it sends is kept, not sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def send(self, data: bytes) -> None:
        self.sent.append((asyncio.get_running_loop().time(), bytes(data)))

    def close(self) -> None:
        pass


def _metadata_float(metadata: Mapping[str, object], key: str) -> float | None:
    value = metadata.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


async def _replay(
    capture: Capture,
    tokenizer: Tokenizer,
    config: LinkConfig,
    requests: Sequence[RecordedRequest],
    security: LinkSecurity | None = None,
) -> tuple[list[Answer], list[tuple[float, bytes]], RecoveryCounters]:
    loop = asyncio.get_running_loop()
    station = GroundStation(
        tokenizer,
        config=config,
        # The recorded ids, in order: a live ground's allocator may have skipped some.
        id_source=iter([r.request.request_id for r in requests]).__next__,
        security=security,
    )
    link = _ReplayLink()
    station.attach(link)
    cadus = [u for u in capture.units if u.kind is UnitKind.CADU]
    last_t = max((u.t for u in capture.units), default=requests[-1].t)
    recorded_timeout = _metadata_float(capture.metadata, "timeout_s")
    # Requests before CADUs of the same time: a request is sent before what it causes.
    schedule: list[tuple[float, int, int]] = sorted(
        [(r.t, 0, i) for i, r in enumerate(requests)] + [(u.t, 1, i) for i, u in enumerate(cadus)]
    )
    answers: list[asyncio.Task[Answer]] = []
    for t, kind, index in schedule:
        await _until(t)
        if kind == 1:
            station.on_receive(cadus[index].data, t)
            continue
        request = requests[index].request
        handle = station.submit(request.prompt_ids, request.params)
        if handle.request_id != request.request_id:
            raise ReplayError(
                f"the recorded request ids are not in allocation order: request"
                f" {request.request_id} replayed as {handle.request_id}"
            )
        timeout = recorded_timeout or (max(last_t - t, 0.0) + _NO_TIMEOUT_SLACK_S)
        answers.append(loop.create_task(handle.answer(timeout)))
    return [await task for task in answers], link.sent, station.recovery_counters


def replay_capture(
    capture: Capture,
    tokenizer: Tokenizer,
    *,
    config: LinkConfig | None = None,
    source: str | None = None,
    keys: str | Path | None = None,
) -> ReplayResult:
    """Replay ``capture`` through a fresh ground station on the recorded times.

    ``config`` overrides the link configuration of the metadata (the defaults when
    the metadata has none); ``source`` names the file in the records.  A protected
    session (its metadata's ``security``) needs its key file, ``keys``: the ground
    and the spacecraft's decoder of the CLTUs then run SDLS from it, the sending
    counter from 1 as a fresh counter file has it, and nothing is written.
    """
    config = config or capture.link_config() or LinkConfig()
    protection = capture.metadata.get("security")
    if isinstance(protection, Mapping) and protection.get("protected") and keys is None:
        spis = f"TC SPI {protection.get('tc_spi')}, TM SPI {protection.get('tm_spi')}"
        raise ReplayError(
            f"the session was protected with SDLS ({spis}) and the capture holds"
            " ciphertext only: replay needs its key file, --keys PATH"
        )
    ground: RoleSecurity | None = None
    spacecraft: RoleSecurity | None = None
    if keys is not None:
        ground = link_security(keys, role="ground", persist=False)
        spacecraft = link_security(keys, role="spacecraft", persist=False)
    uplink_drops: dict[str, int] = {}
    requests = recorded_requests(
        capture, config, None if spacecraft is None else spacecraft.security, drops=uplink_drops
    )
    if not requests and uplink_drops.get("sdls/mac-mismatch"):
        raise ReplayError(
            f"{uplink_drops['sdls/mac-mismatch']} recorded uplink frames failed their MAC:"
            f" the key file {keys} is not the one this session was protected with"
        )
    if not requests:
        raise ReplayError(
            "the capture holds no PromptRequest (no uplink packet and no decodable CLTU):"
            " nothing to replay"
        )
    if not any(u.kind is UnitKind.CADU for u in capture.units):
        raise ReplayError("the capture holds no downlink CADU: nothing to replay")
    start = min(requests[0].t, *(u.t for u in capture.units))
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(start)) as runner:
        answers, sent, recovery = runner.run(
            _replay(
                capture,
                tokenizer,
                config,
                requests,
                None if ground is None else ground.security,
            )
        )
    metadata = capture.metadata
    recorded = [(u.t, u.data) for u in capture.units if u.kind is UnitKind.CLTU]
    result = ReplayResult(answers, [], sent, recorded, capture.truncated, source)
    truncated = None if capture.truncated is None else capture.truncated.to_json()
    link_url = metadata.get("link_url")
    for answer, request in zip(answers, requests, strict=True):
        record = answer_record(
            answer,
            request.request.params,
            link=str(link_url) if link_url is not None else f"capture:{source or '-'}",
            model=str(metadata.get("model", "embedded")),
            chat=bool(metadata.get("chat", True)),
            recovery=recovery,
        )
        record["replay"] = {
            "file": source,
            "side": metadata.get("side"),
            "request_from": request.source,
            "units": len(capture.units),
            "truncated": truncated,
            "uplink": {
                "recorded_cltus": len(recorded),
                "replayed_cltus": len(sent),
                # A spacecraft-side capture holds the CLTUs as received, not as sent.
                "identical": result.uplink_identical if metadata.get("side") == "ground" else None,
            },
        }
        record["security"] = security_record(ground is not None, answer.drops)
        result.records.append(record)
    return result


def comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a live ``--json`` record a replay must reproduce exactly.

    ``counters`` is compared on the fields of :class:`GroundCounters` and
    ``uplink_bits`` (docs/json.md): records of schema 1 also held the spacecraft's
    fields, always zero at the ground."""
    fields = {key: record.get(key) for key in REPRODUCED_FIELDS}
    counters = fields.get("counters")
    if isinstance(counters, Mapping):
        names = [*(f.name for f in dataclasses.fields(GroundCounters)), "uplink_bits"]
        fields["counters"] = {key: counters.get(key) for key in names}
    return fields


# -- replay of a plain CADU file -------------------------------------------------------


def replay_cadu_stream(
    chunks: Iterable[bytes],
    tokenizer: Tokenizer,
    *,
    config: LinkConfig | None = None,
    source: str | None = None,
    keys: str | Path | None = None,
) -> dict[str, Any]:
    """Decode a plain CADU stream as the ground would; one entry per request id seen.

    ``keys``: the SDLS key file of a protected stream (nothing is written).

    No times (every ``now`` is 0), no requests (each stream is taken as it comes:
    ``max_tokens`` unbounded until its EndOfStream).  Raises :class:`ReplayError`
    when not one CADU decodes.
    """
    config = config or LinkConfig()
    ground = None if keys is None else link_security(keys, role="ground", persist=False)
    endpoint = GroundEndpoint(config, None if ground is None else ground.security)
    assemblers: dict[int, TokenAssembler] = {}
    errors: list[dict[str, Any]] = []
    housekeeping = 0
    octets = 0

    def drain() -> None:
        nonlocal housekeeping
        while (event := endpoint.next_event()) is not None:
            if not isinstance(event, MessageReceived):
                continue
            message = event.message
            if isinstance(message, TokenChunk | EndOfStream):
                assembler = assemblers.get(message.request_id)
                if assembler is None:
                    assembler = TokenAssembler(message.request_id, max_tokens=None, started_at=0.0)
                    assemblers[message.request_id] = assembler
                if isinstance(message, TokenChunk):
                    assembler.receive_chunk(message, 0.0)
                else:
                    assembler.receive_end(message, 0.0)
                while assembler.next_event() is not None:
                    pass
            elif isinstance(message, ErrorReport):
                errors.append(
                    {
                        "request_id": message.request_id,
                        "reason": message.reason.name,
                        "detail": message.detail,
                    }
                )
            else:
                housekeeping += 1

    for chunk in chunks:
        octets += len(chunk)
        endpoint.receive_bytes(chunk, 0.0)
        drain()
    endpoint.end_of_stream(0.0)
    drain()
    counters = endpoint.counters
    if counters.frames_received == 0:
        raise ReplayError(
            f"no CADU found in {octets} octets: neither a linkstack capture nor a"
            f" CADU stream of the default link (ASM 1ACFFC1D, R-S I={config.tm_coding.interleave},"
            f" {config.tm_coding.cadu_length}-octet CADUs)"
        )
    streams = []
    for request_id, assembler in sorted(assemblers.items()):
        ids = assembler.delivered_ids
        finish = assembler.finish_reason
        streams.append(
            {
                "request_id": request_id,
                "received_ids": list(ids),
                "text": tokenizer.decode(ids, skip_special=True),
                "finish_reason": _finish_name(finish),
                "complete": assembler.complete and not assembler.missing_ranges(),
                "missing": [[r.first_index, r.count] for r in assembler.missing_ranges()],
                "reassembly": dataclasses.asdict(assembler.stats),
            }
        )
    return {
        "file": source,
        "format": "cadu-stream",
        "octets": octets,
        "streams": streams,
        "error_reports": errors,
        "housekeeping_received": housekeeping,
        "counters": dataclasses.asdict(counters),
        "drops": dict(sorted(endpoint.drops.items())),
    }


# -- replay of an IQ recording (SigMF) -------------------------------------------------

#: The ``linkstack:`` fields (``linkstack radio tx`` writes them) a recording must give,
#: or the options in their place: the rest have defaults, as ``linkstack radio rx`` has.
REQUIRED_IQ_FIELDS: Final = ("modulation", "sps", "conv_rate", "interleave")
#: Every field :func:`iq_settings` reads, with the type ``radio tx`` writes.
_IQ_FIELD_TYPES: Final[Mapping[str, type | tuple[type, ...]]] = {
    "modulation": str,
    "sps": int,
    "symbol_rate": (int, float),
    "rolloff": (int, float),
    "interleave": int,
    "frame_length": int,
    "conv_rate": str,
    "nrzm": (bool, str),
}
#: Relative tolerance of core:sample_rate against linkstack:symbol_rate * sps.
_RATE_TOLERANCE: Final = 1e-6
_DEFAULT_ROLLOFF: Final = 0.35


@dataclass(frozen=True, slots=True)
class IqSettings:
    """How a recording's downlink was modulated and coded: the receiver's settings."""

    coding: TmCodingConfig
    modulation: Modulation
    sps: int
    rolloff: float
    rate: CodeRate
    #: NRZ-M at the encoder input; "auto" tries NRZ-L and NRZ-M both.
    nrzm: NrzmMode

    def to_json(self) -> dict[str, Any]:
        return {
            "modulation": self.modulation,
            "sps": self.sps,
            "rolloff": self.rolloff,
            "conv_rate": self.rate,
            "nrzm": self.nrzm,
            "interleave": self.coding.interleave,
            "frame_length": self.coding.frame_octets,
        }


def iq_settings(recording: Recording, overrides: Mapping[str, object] | None = None) -> IqSettings:
    """The receiver's settings: ``overrides`` (``linkstack:`` field name -> value, None
    for not given), else the recording's ``linkstack:`` fields, else the defaults.

    Raises :class:`ReplayError` naming every required field neither gives, or a field
    of the wrong type or value."""
    where = recording.meta_path or recording.data_path
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, object] = {}
    for name, kind in _IQ_FIELD_TYPES.items():
        value = given.get(name, recording.meta.extensions.get(name))
        if value is None:
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ReplayError(
                f"{where}: linkstack:{name} is {value!r}, not a value as linkstack radio tx"
                " writes it"
            )
        values[name] = value
    missing = [name for name in REQUIRED_IQ_FIELDS if name not in values]
    if missing:
        fields = ", ".join(f"linkstack:{name}" for name in missing)
        options = " ".join(f"--{name.replace('_', '-')}" for name in missing)
        raise ReplayError(
            f"{where}: the recording does not say how its downlink was coded ({fields}"
            f" missing, as linkstack radio tx writes them): give {options}"
        )
    modulation = values["modulation"]
    if modulation not in MODULATIONS:
        raise ReplayError(
            f"{where}: linkstack:modulation {modulation!r} is not one of {', '.join(MODULATIONS)}"
        )
    rate = values["conv_rate"]
    if rate not in CODE_RATES:
        raise ReplayError(
            f"{where}: linkstack:conv_rate {rate!r} is not one of {', '.join(CODE_RATES)}"
        )
    sps = values["sps"]
    assert isinstance(sps, int)  # checked against _IQ_FIELD_TYPES above
    symbol_rate = values.get("symbol_rate")
    if isinstance(symbol_rate, int | float) and "sps" not in given:
        expected = float(symbol_rate) * sps
        rate_hz = recording.meta.sample_rate
        if abs(expected - rate_hz) > _RATE_TOLERANCE * rate_hz:
            raise ReplayError(
                f"{where}: contradicting metadata: core:sample_rate {rate_hz:g} Hz is not"
                f" linkstack:symbol_rate {float(symbol_rate):g} * linkstack:sps {sps}"
                f" = {expected:g} Hz"
            )
    nrzm = values.get("nrzm", False)
    if nrzm not in (True, False, "auto"):
        raise ReplayError(f"{where}: linkstack:nrzm {nrzm!r} is neither true, false nor auto")
    interleave, frame_length = values["interleave"], values.get("frame_length")
    assert isinstance(interleave, int)
    assert frame_length is None or isinstance(frame_length, int)
    try:
        coding = TmCodingConfig(interleave=interleave, frame_length=frame_length, basis=Basis.DUAL)
    except LinkError as exc:
        raise ReplayError(f"{where}: {exc}") from exc
    rolloff = values.get("rolloff", _DEFAULT_ROLLOFF)
    assert isinstance(rolloff, int | float)
    return IqSettings(
        coding=coding,
        modulation=modulation,
        sps=sps,
        rolloff=float(rolloff),
        rate=rate,
        nrzm=nrzm,
    )


class RecordingCadus:
    """The CADUs of a recording's downlink, as an iterable of octets.

    Iterating it streams the samples through an :class:`IqReceiver` with
    ``output="cadus"`` and gives each CADU as received (for the ground to R-S decode
    and count); what the receiver did is counted as it goes (:meth:`to_json`)."""

    def __init__(self, recording: Recording, settings: IqSettings) -> None:
        self.recording = recording
        self.settings = settings
        try:
            self.receiver = IqReceiver(
                settings.coding,
                sample_rate=recording.meta.sample_rate,
                rate=settings.rate,
                nrzm=settings.nrzm,
                modulation=settings.modulation,
                sps=settings.sps,
                rolloff=settings.rolloff,
                output="cadus",
            )
        except LinkError as exc:
            raise ReplayError(f"{recording.meta_path or recording.data_path}: {exc}") from exc
        #: CADUs handed on, and the ASM bit errors among them.
        self.cadus = 0
        self.asm_errors = 0
        #: CADUs the receiver found but could not hand on (cut by the end), by reason.
        self.dropped: dict[str, int] = {}
        self.last: CaduReceived | None = None

    def __iter__(self) -> Iterator[bytes]:
        receiver = self.receiver
        for chunk in self.recording.iter_samples():
            receiver.receive_samples(chunk)
            yield from self._drain()
        receiver.flush()
        yield from self._drain()

    def _drain(self) -> Iterator[bytes]:
        while (event := self.receiver.next_event()) is not None:
            if not isinstance(event, CaduReceived):
                continue
            self.last = event
            if event.cadu is None:
                self.dropped[event.status] = self.dropped.get(event.status, 0) + 1
                continue
            self.cadus += 1
            self.asm_errors += event.asm_errors
            yield event.cadu

    def describe(self) -> str:
        """The receiver's settings and what it read, in words."""
        stats = self.receiver.stats
        s = self.settings
        return (
            f"{stats.samples} samples ({stats.samples / self.recording.meta.sample_rate:.3f} s,"
            f" {s.modulation}, sps {s.sps}, rate {s.rate}, I={s.coding.interleave})"
        )

    def to_json(self) -> dict[str, Any]:
        """The ``radio`` entry of the report."""
        stats = self.receiver.stats
        last = self.last
        return {
            "sample_rate": self.recording.meta.sample_rate,
            "samples": stats.samples,
            "duration_s": round(stats.samples / self.recording.meta.sample_rate, 6),
            "settings": self.settings.to_json(),
            "cadus": self.cadus,
            "asm_errors": self.asm_errors,
            "dropped": dict(sorted(self.dropped.items())),
            "invalid_samples": stats.demodulator.invalid_samples,
            "frequency_offset_hz": _finite(None if last is None else last.frequency_offset_hz),
            "snr_db": _finite(None if last is None else last.snr_db),
        }


def _finite(value: float | None) -> float | None:
    return round(value, 3) if value is not None and math.isfinite(value) else None


def replay_recording(
    path: str | Path,
    tokenizer: Tokenizer,
    *,
    overrides: Mapping[str, object] | None = None,
    keys: str | Path | None = None,
) -> dict[str, Any]:
    """Demodulate and decode the SigMF recording at ``path`` (its ``.sigmf-meta``,
    ``.sigmf-data`` or base name) and replay its CADUs as :func:`replay_cadu_stream`
    does; the report says ``"format": "sigmf-iq"`` and adds a ``radio`` entry.

    ``overrides`` replace the recording's ``linkstack:`` fields (:func:`iq_settings`).
    Every problem raises :class:`ReplayError` with one line naming the file."""
    try:
        # strict: a data file cut short (a partial last sample) is refused, not replayed.
        recording = read_recording(path, strict=True)
    except RecordingError as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    settings = iq_settings(recording, overrides)
    cadus = RecordingCadus(recording, settings)
    source = str(path)
    try:
        report = replay_cadu_stream(
            cadus, tokenizer, config=LinkConfig(tm_coding=settings.coding), source=source, keys=keys
        )
    except RecordingError as exc:  # the data file shrank while being read
        raise ReplayError(f"{path}: {exc}") from exc
    except ReplayError as exc:
        if cadus.cadus:  # aligned, handed on, but the ground's R-S refused every one
            raise ReplayError(
                f"{path}: no CADU found in {cadus.describe()} that R-S decodes"
                f" ({cadus.cadus} aligned, all uncorrectable)"
            ) from exc
        report = None
    if report is None:
        if cadus.dropped:
            dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(cadus.dropped.items()))
            raise ReplayError(f"{path}: no CADU decoded in {cadus.describe()}: {dropped}")
        raise ReplayError(
            f"{path}: no CADU found in {cadus.describe()}: noise, or not this downlink"
        )
    report["format"] = "sigmf-iq"
    report["radio"] = cadus.to_json()
    return report


# -- files -----------------------------------------------------------------------------

#: pcapng Section Header Block type, libpcap magics (both byte orders, us and ns).
_PCAP_MAGICS: Final = frozenset(
    bytes.fromhex(m) for m in ("0a0d0d0a", "a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1")
)


#: File names :func:`replay_file` reads as SigMF recordings.
SIGMF_SUFFIXES: Final = (".sigmf-meta", ".sigmf-data")


def is_sigmf_path(path: str | Path) -> bool:
    """``path`` names a SigMF recording (its metadata or its data file)."""
    return str(path).endswith(SIGMF_SUFFIXES)


def replay_file(
    path: str,
    *,
    model: str | None,
    tokenizer_for: Callable[[str], Tokenizer],
    keys: str | Path | None = None,
    radio: Mapping[str, object] | None = None,
) -> tuple[str, ReplayResult | dict[str, Any]]:
    """Read ``path`` (a linkstack capture, a SigMF IQ recording named by its
    ``.sigmf-meta`` or ``.sigmf-data``, else a plain CADU stream) and replay it.

    Returns the tokenizer's model spec and the :class:`ReplayResult` of a capture or
    the report of :func:`replay_cadu_stream` (:func:`replay_recording` for IQ, whose
    ``radio`` settings replace the recording's ``linkstack:`` fields).  Every problem
    with the file raises :class:`ReplayError` with one clear line naming the file.
    """
    if is_sigmf_path(path):
        spec = model or "embedded"
        return spec, replay_recording(path, tokenizer_for(spec), overrides=radio, keys=keys)
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
            stream.seek(0)
            if head in _PCAP_MAGICS:
                capture = read_capture(stream)
                chunks: list[bytes] | None = None
            else:
                capture = None
                chunks = list(read_cadu_file(stream))
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except CaptureError as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    if capture is None:
        spec = model or "embedded"
        assert chunks is not None
        try:
            return spec, replay_cadu_stream(chunks, tokenizer_for(spec), source=path, keys=keys)
        except ReplayError as exc:
            raise ReplayError(f"{path}: {exc}") from exc
    recorded_model = capture.metadata.get("model")
    spec = model or (recorded_model if isinstance(recorded_model, str) else "embedded")
    cut = "" if capture.truncated is None else f" ({capture.truncated})"
    try:
        return spec, replay_capture(capture, tokenizer_for(spec), source=path, keys=keys)
    except CaptureError as exc:
        raise ReplayError(f"{path}: {exc}{cut}") from exc
    except ReplayError as exc:
        raise ReplayError(f"{path}: {exc}{cut}") from exc
