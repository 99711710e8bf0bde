"""TM synchronization and channel coding, CCSDS 131.0-B-5: CADUs and their synchronizer.

A CADU is ``ASM || randomize(frame || R-S check symbols)``: the 32-bit Attached Sync
Marker, then the Reed-Solomon codeblock XORed with the TM pseudo-random sequence,
which restarts at every ASM and never covers it.

``CaduSynchronizer`` is the receiving engine (sans-I/O): ``receive_bytes`` takes a
byte stream in chunks of any size and alignment, ``next_event`` yields
``FrameDecoded`` / ``Dropped`` / ``SyncAcquired`` / ``SyncLost``.  Its frame
synchronizer is the classic SEARCH -> CHECK -> LOCK machine with a flywheel (as in
ground-station frame synchronizers, e.g. the Safran Cortex CRT manual 3.3.8.1:
programmable sync threshold, check-to-lock count, flywheel), on octet boundaries
(the input is octets; bit slips are out of scope).

What confirms lock here: an ASM within ``asm_search_errors`` bit errors, followed by
``check_count`` further ASMs (same threshold) at exactly one CADU length apart.  The
R-S decoder is NOT used as a lock criterion: for I = 1 and 2 the pseudo-random
sequence is itself a codeword (so a run of zero octets after a false marker
"decodes"), and the codes are quasi-cyclic (131.0-B-5 4.2.1 note): R-S success
proves little about alignment.  Only at end of stream
(``flush``), where no following ASM can confirm a candidate, is an unconfirmed
candidate accepted, and then only if every codeword of its block decodes.

``decode_codeblocks`` and ``codeblock_event`` are the one path from an aligned
codeblock to a ``FrameDecoded`` or ``CodeblockDropped``; the soft-symbol front end
(``linkstack.coding.soft``, convolutional code and bit-level sync) uses it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from linkstack.coding import reed_solomon
from linkstack.coding.reed_solomon import Basis, CodeblockLayout
from linkstack.errors import DropCounter, Dropped, Layer, LocalProtocolError

if TYPE_CHECKING:
    from linkstack.coding.soft import Hypothesis

logger = logging.getLogger(__name__)

__all__ = [
    "ASM",
    "Basis",
    "CaduSynchronizer",
    "CodeblockDropped",
    "FrameDecoded",
    "SyncAcquired",
    "SyncLost",
    "SyncState",
    "SyncStats",
    "TmCodingConfig",
    "TmCodingEvent",
    "codeblock_event",
    "decode_codeblocks",
    "encode_cadu",
    "encode_cadus",
    "pseudo_random_sequence",
    "randomize",
]

ASM: Final = bytes.fromhex("1ACFFC1D")  # Attached Sync Marker, CCSDS 131.0-B-5 9.3.1
_ASM_INT: Final = int.from_bytes(ASM, "big")
ASM_BITS: Final = 32
MAX_CODEBLOCK: Final = 255 * 8  # n*I for I = 8, CCSDS 131.0-B-5 4.3.6

CLAUSE_RS: Final = "CCSDS 131.0-B-5 4.3"
CLAUSE_SYNC: Final = "CCSDS 131.0-B-5 9.4"  # the ASM immediately precedes each codeblock

# Limits on the synchronizer's managed parameters (implementation choices).
MAX_SEARCH_ERRORS: Final = 7  # Cortex CRT: sync threshold 0..7
MAX_LOCK_ERRORS: Final = 15  # 16 of 32 bits is what random data averages
MAX_CHECK_COUNT: Final = 7  # Cortex CRT: check-to-lock 0..7


def pseudo_random_sequence(length: int) -> bytes:
    """The TM pseudo-random sequence, CCSDS 131.0-B-5 10.4.

    h(x) = x^8+x^7+x^5+x^3+1, all-ones start, period 255 bits; as a recurrence,
    s[n+8] = s[n+7] ^ s[n+5] ^ s[n+3] ^ s[n].  First octets FF 48 0E C0 9A 0D 70 BC.
    """
    bits = [1] * 8
    while len(bits) < 8 * length:
        n = len(bits) - 8
        bits.append(bits[n + 7] ^ bits[n + 5] ^ bits[n + 3] ^ bits[n])
    packed = np.packbits(np.array(bits[: 8 * length], dtype=np.uint8))
    return packed.tobytes()


_PN: Final = pseudo_random_sequence(MAX_CODEBLOCK)
_PN_NP: Final = np.frombuffer(_PN, dtype=np.uint8)


def randomize(block: bytes) -> bytes:
    """XOR with the pseudo-random sequence from its start (its own inverse), 10.4."""
    if len(block) > MAX_CODEBLOCK:
        raise LocalProtocolError(
            f"block of {len(block)} octets: longer than the {MAX_CODEBLOCK}-octet codeblock"
            " the randomizer covers (CCSDS 131.0-B-5 4.3.6)"
        )
    data = np.frombuffer(block, dtype=np.uint8)
    return (data ^ _PN_NP[: len(block)]).tobytes()


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True, kw_only=True)
class TmCodingConfig:
    """Managed parameters of one TM physical channel's coding and synchronizer."""

    interleave: int = 5  # I, CCSDS 131.0-B-5 4.3.5
    error_correction: int = 16  # E, CCSDS 131.0-B-5 4.3.1
    #: Transfer frame octets N; None means k*I (no virtual fill), 4.3.7.
    frame_length: int | None = None
    basis: Basis = Basis.DUAL  # CCSDS 131.0-B-5 4.3.9
    randomize: bool = True  # CCSDS 131.0-B-5 10.1: presence is managed, not signalled
    #: ASM bit errors tolerated while searching and checking (gr-satellites'
    #: CCSDS deframers default to 4; two aligned markers are required to lock).
    asm_search_errors: int = 2
    #: ASM bit errors tolerated at the expected position once locked.
    asm_lock_errors: int = 4
    #: Further markers, one CADU apart, required before lock is declared.
    check_count: int = 1
    #: Consecutive missed markers that lose lock (the earlier ones are flywheeled).
    flywheel: int = 3
    layout: CodeblockLayout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.error_correction not in reed_solomon.ERROR_CORRECTION_VALUES:
            raise LocalProtocolError(
                f"error_correction E={self.error_correction} is not one of"
                f" {reed_solomon.ERROR_CORRECTION_VALUES} (CCSDS 131.0-B-5 4.3.1)"
            )
        if not isinstance(self.basis, Basis):
            raise LocalProtocolError(f"basis {self.basis!r} is not a Basis")
        k = reed_solomon.N - 2 * self.error_correction
        n_frame = k * self.interleave if self.frame_length is None else self.frame_length
        layout = CodeblockLayout(self.interleave, self.error_correction, n_frame)
        if not 0 <= self.asm_search_errors <= MAX_SEARCH_ERRORS:
            raise LocalProtocolError(
                f"asm_search_errors={self.asm_search_errors} outside 0..{MAX_SEARCH_ERRORS}"
            )
        if not self.asm_search_errors <= self.asm_lock_errors <= MAX_LOCK_ERRORS:
            raise LocalProtocolError(
                f"asm_lock_errors={self.asm_lock_errors} outside"
                f" asm_search_errors={self.asm_search_errors}..{MAX_LOCK_ERRORS}"
            )
        if not 0 <= self.check_count <= MAX_CHECK_COUNT:
            raise LocalProtocolError(f"check_count={self.check_count} outside 0..{MAX_CHECK_COUNT}")
        if self.flywheel < 1:
            raise LocalProtocolError(f"flywheel={self.flywheel} must be at least 1")
        object.__setattr__(self, "frame_length", n_frame)
        object.__setattr__(self, "layout", layout)

    @property
    def frame_octets(self) -> int:
        """N, the transfer frame length (``frame_length`` resolved)."""
        return self.layout.frame_length

    @property
    def codeblock_length(self) -> int:
        """N + 2EI octets."""
        return self.layout.codeblock_length

    @property
    def cadu_length(self) -> int:
        """4 + N + 2EI octets on the wire."""
        return len(ASM) + self.layout.codeblock_length


# --------------------------------------------------------------------------- encoding


def encode_cadu(frame: bytes, config: TmCodingConfig) -> bytes:
    """ASM || randomized codeblock of one transfer frame."""
    block = reed_solomon.encode(bytes(frame), config.layout, basis=config.basis)
    return ASM + (randomize(block) if config.randomize else block)


def encode_cadus(
    frames: bytes | bytearray | memoryview | Iterable[bytes], config: TmCodingConfig
) -> bytes:
    """Many CADUs at once; ``frames`` is a bytes-like of concatenated frames or an
    iterable of frames, each exactly N octets."""
    n_frame = config.frame_octets
    if isinstance(frames, bytes | bytearray | memoryview):
        data = bytes(frames)
    else:
        parts = [bytes(f) for f in frames]
        bad = [(i, len(p)) for i, p in enumerate(parts) if len(p) != n_frame]
        if bad:
            raise LocalProtocolError(
                f"frames (index, length) {bad[:5]} are not N={n_frame} octets long"
            )
        data = b"".join(parts)
    if len(data) % n_frame:
        raise LocalProtocolError(
            f"{len(data)} octets of frames is not a whole number of N={n_frame}-octet frames"
        )
    if not data:
        return b""
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, n_frame)
    blocks = reed_solomon.encode_blocks(arr, config.layout, basis=config.basis)
    if config.randomize:
        blocks ^= _PN_NP[: blocks.shape[1]]
    asm = np.broadcast_to(np.frombuffer(ASM, dtype=np.uint8), (len(blocks), len(ASM)))
    return np.concatenate([asm, blocks], axis=1).tobytes()


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class FrameDecoded:
    """A codeblock decoded; ``frame`` is the corrected transfer frame."""

    frame: bytes
    #: Symbols corrected in each of the I codewords.
    corrected: tuple[int, ...]
    #: Stream offset of the block's ASM: octets for ``CaduSynchronizer``, coded
    #: symbols for ``linkstack.coding.soft.SoftCaduSynchronizer``.
    offset: int
    #: Bit errors seen in its ASM (above asm_lock_errors: kept by the flywheel).
    asm_errors: int = 0
    #: The soft front end's hypothesis (symbol alignment, phase, NRZ-M) that decoded
    #: it; None from ``CaduSynchronizer``.
    hypothesis: Hypothesis | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeblockDropped(Dropped):
    """A ``Dropped`` that also says where the codeblock was in the stream."""

    #: Stream offset of the block's ASM (octets, or coded symbols: see ``FrameDecoded``).
    offset: int = 0
    #: Per codeword: symbols corrected, or -1 where it was uncorrectable.
    corrected: tuple[int, ...] = ()
    #: Bit errors seen in its ASM.
    asm_errors: int = 0
    #: The soft front end's hypothesis that produced it; None from ``CaduSynchronizer``.
    hypothesis: Hypothesis | None = None


@dataclass(frozen=True, slots=True)
class SyncAcquired:
    """Lock declared; ``offset`` is the stream offset of the first locked ASM."""

    offset: int


@dataclass(frozen=True, slots=True)
class SyncLost:
    """Lock lost; ``offset`` is where the missing ASM was expected."""

    offset: int
    #: The soft front end's hypothesis that lost lock; None from ``CaduSynchronizer``.
    hypothesis: Hypothesis | None = None


TmCodingEvent = FrameDecoded | Dropped | SyncAcquired | SyncLost


class SyncState(Enum):
    """Frame synchronizer states."""

    SEARCH = "search"
    CHECK = "check"
    LOCK = "lock"


@dataclass(slots=True)
class SyncStats:
    """Counters of a ``CaduSynchronizer``."""

    cadus: int = 0  # codeblocks handed to the R-S decoder
    frames: int = 0  # frames delivered
    corrected_symbols: int = 0
    uncorrectable: int = 0  # codeblocks dropped as uncorrectable
    flywheeled: int = 0  # blocks decoded although their ASM was missed
    sync_losses: int = 0
    skipped_octets: int = 0  # octets passed over while searching


# --------------------------------------------------------------------------- R-S path
# Shared by CaduSynchronizer and the soft front end (linkstack.coding.soft): one way
# from an aligned codeblock to a frame or a drop.


def decode_codeblocks(
    blocks: npt.NDArray[np.uint8], config: TmCodingConfig
) -> reed_solomon.BlockDecodeResult:
    """Derandomize received codeblocks (rows of N + 2EI octets, XORed in place) and
    R-S decode them: CCSDS 131.0-B-5 10.4, then 4.3."""
    if config.randomize:
        blocks ^= _PN_NP[: blocks.shape[1]]
    return reed_solomon.decode_blocks(blocks, config.layout, basis=config.basis)


def codeblock_event(
    config: TmCodingConfig,
    frame: npt.NDArray[np.uint8],
    corrected: tuple[int, ...],
    *,
    offset: int,
    asm_errors: int,
    hypothesis: Hypothesis | None = None,
) -> FrameDecoded | CodeblockDropped:
    """The event for one row of ``decode_codeblocks``: the frame, or an uncorrectable drop
    (not yet counted in a ``DropCounter``)."""
    if min(corrected, default=0) >= 0:
        return FrameDecoded(frame.tobytes(), corrected, offset, asm_errors, hypothesis)
    failed = [j for j, c in enumerate(corrected) if c < 0]
    detail = (
        f"codeblock at offset {offset}: codeword(s) {failed} of"
        f" {config.interleave} exceed E={config.error_correction}"
    )
    logger.debug("< dropped %s", detail)
    return CodeblockDropped(
        layer=Layer.TM_CODING,
        reason="uncorrectable",
        clause=CLAUSE_RS,
        octets=config.cadu_length,
        detail=detail,
        offset=offset,
        corrected=corrected,
        asm_errors=asm_errors,
        hypothesis=hypothesis,
    )


# --------------------------------------------------------------------------- engine

_SEARCH_WINDOW: Final = 1 << 20  # octets scanned per numpy pass
_BATCH: Final = 512  # codeblocks per decode call


class CaduSynchronizer:
    """Finds CADUs in a byte stream, derandomizes and R-S decodes them in batches."""

    def __init__(self, config: TmCodingConfig) -> None:
        self.config = config
        self.stats = SyncStats()
        self.drops = DropCounter()
        self._events: deque[TmCodingEvent] = deque()
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._pos = 0  # index into _buf where processing resumes
        self._state = SyncState.SEARCH
        self._held: list[tuple[int, int]] = []  # CHECK: (index, asm errors) awaiting lock
        self._misses = 0

    @property
    def state(self) -> SyncState:
        return self._state

    def receive_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Add received octets; decodes every complete CADU it can."""
        self._buf += data
        self._process()

    def next_event(self) -> TmCodingEvent | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def flush(self) -> None:
        """End of stream: settle a candidate still awaiting confirmation and report a
        truncated final CADU; then start over in SEARCH."""
        self._process()
        cadu = self.config.cadu_length
        if self._state is SyncState.CHECK:
            complete = [h for h in self._held if h[0] + cadu <= len(self._buf)]
            delivered = self._decode(complete, require_ok=True)
            self.stats.skipped_octets += len(self._buf) - self._held[0][0] - delivered * cadu
        elif self._state is SyncState.LOCK:
            rest = len(self._buf) - self._pos
            if rest >= len(ASM) and self._asm_errors(self._pos) <= self.config.asm_lock_errors:
                self._drop(
                    "truncated",
                    CLAUSE_SYNC,
                    f"stream ended {rest} octets into a {cadu}-octet CADU",
                    octets=rest,
                    offset=self._base + self._pos,
                )
            else:
                self.stats.skipped_octets += rest
        else:
            self.stats.skipped_octets += len(self._buf) - self._pos
        self._base += len(self._buf)
        self._buf.clear()
        self._pos = 0
        self._held = []
        self._misses = 0
        self._state = SyncState.SEARCH

    # ------------------------------------------------------------------ internals

    def _asm_errors(self, index: int) -> int:
        word = int.from_bytes(self._buf[index : index + len(ASM)], "big")
        return (word ^ _ASM_INT).bit_count()

    def _find_asm(self, start: int) -> tuple[int, int] | None:
        """First index >= start whose 4 octets are within asm_search_errors of the ASM."""
        threshold = self.config.asm_search_errors
        if threshold == 0:
            found = self._buf.find(ASM, start)
            return None if found < 0 else (found, 0)
        while start + len(ASM) <= len(self._buf):
            stop = min(len(self._buf), start + _SEARCH_WINDOW + len(ASM) - 1)
            window = np.frombuffer(bytes(self._buf[start:stop]), dtype=np.uint8).astype(np.uint32)
            words = (window[:-3] << 24) | (window[1:-2] << 16) | (window[2:-1] << 8) | window[3:]
            distance = np.bitwise_count(words ^ np.uint32(_ASM_INT))
            hits = np.flatnonzero(distance <= threshold)
            if len(hits):
                return start + int(hits[0]), int(distance[hits[0]])
            start = stop - len(ASM) + 1
        return None

    def _process(self) -> None:
        cfg = self.config
        cadu = cfg.cadu_length
        pending: list[tuple[int, int]] = []
        while True:
            if self._state is SyncState.SEARCH:
                found = self._find_asm(self._pos)
                if found is None:
                    keep = max(self._pos, len(self._buf) - (len(ASM) - 1))
                    self.stats.skipped_octets += keep - self._pos
                    self._pos = keep
                    break
                index, errors = found
                self.stats.skipped_octets += index - self._pos
                self._pos = index
                self._held = [(index, errors)]
                self._state = SyncState.CHECK
                if cfg.check_count == 0:
                    self._lock(pending)
            elif self._state is SyncState.CHECK:
                following = self._held[-1][0] + cadu
                if following + len(ASM) > len(self._buf):
                    break
                errors = self._asm_errors(following)
                if errors <= cfg.asm_search_errors:
                    self._held.append((following, errors))
                    if len(self._held) > cfg.check_count:
                        self._lock(pending)
                else:  # not confirmed: resume the search just after the candidate
                    logger.debug("candidate ASM at %d not confirmed", self._base + self._pos)
                    self._held = []
                    self._pos += 1
                    self.stats.skipped_octets += 1
                    self._state = SyncState.SEARCH
            else:  # LOCK
                if self._pos + cadu > len(self._buf):
                    break
                errors = self._asm_errors(self._pos)
                if errors <= cfg.asm_lock_errors:
                    self._misses = 0
                else:
                    self._misses += 1
                    if self._misses >= cfg.flywheel:
                        self._decode(pending)
                        pending = []
                        self._events.append(SyncLost(self._base + self._pos))
                        logger.info("< sync lost at %d", self._base + self._pos)
                        self.stats.sync_losses += 1
                        self._misses = 0
                        self._state = SyncState.SEARCH
                        continue
                    self.stats.flywheeled += 1
                pending.append((self._pos, errors))
                self._pos += cadu
        self._decode(pending)
        # Keep only what is still needed: from the held candidate, or from _pos.
        trim = self._held[0][0] if self._state is SyncState.CHECK else self._pos
        if trim:
            del self._buf[:trim]
            self._base += trim
            self._pos -= trim
            self._held = [(i - trim, e) for i, e in self._held]

    def _lock(self, pending: list[tuple[int, int]]) -> None:
        """CHECK -> LOCK: the held blocks before the last marker are decoded."""
        self._events.append(SyncAcquired(self._base + self._held[0][0]))
        logger.info("< sync acquired at %d", self._base + self._held[0][0])
        pending.extend(self._held[:-1])
        self._pos = self._held[-1][0]
        self._held = []
        self._misses = 0
        self._state = SyncState.LOCK

    def _decode(self, blocks: list[tuple[int, int]], *, require_ok: bool = False) -> int:
        """Derandomize and R-S decode blocks (buffer index of ASM, ASM errors), in order.

        ``require_ok``: unconfirmed candidates at end of stream; a block that does not
        decode is skipped, not dropped, and lock is announced before the first that does.
        Returns the number of blocks decoded or dropped.
        """
        handled = 0
        cfg = self.config
        n_block = cfg.codeblock_length
        for start in range(0, len(blocks), _BATCH):
            batch = blocks[start : start + _BATCH]
            first = np.array([index for index, _ in batch], dtype=np.intp) + len(ASM)
            view = np.frombuffer(self._buf, dtype=np.uint8)
            data = view[first[:, None] + np.arange(n_block)[None, :]]
            del view  # the bytearray cannot be resized while a view exists
            result = decode_codeblocks(data, cfg)
            corrected = result.corrected.tolist()
            for row, ((index, errors), ok) in enumerate(
                zip(batch, result.ok.tolist(), strict=True)
            ):
                offset = self._base + index
                if require_ok:
                    if not ok:
                        continue
                    self._events.append(SyncAcquired(offset))
                    require_ok = False
                handled += 1
                self.stats.cadus += 1
                event = codeblock_event(
                    cfg, result.frames[row], tuple(corrected[row]), offset=offset, asm_errors=errors
                )
                if isinstance(event, FrameDecoded):
                    self.stats.frames += 1
                    self.stats.corrected_symbols += sum(event.corrected)
                    self._events.append(event)
                else:
                    self.stats.uncorrectable += 1
                    self._events.append(self.drops.count(event))
        return handled

    def _drop(
        self,
        reason: str,
        clause: str,
        detail: str,
        *,
        octets: int,
        offset: int,
        corrected: tuple[int, ...] = (),
    ) -> None:
        event = CodeblockDropped(
            layer=Layer.TM_CODING,
            reason=reason,
            clause=clause,
            octets=octets,
            detail=detail,
            offset=offset,
            corrected=corrected,
        )
        logger.debug("< dropped %s", detail)
        self._events.append(self.drops.count(event))
