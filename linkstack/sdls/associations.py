"""Security associations of one SDLS end (CCSDS 355.0-B-2 4.2.2, 4.2.4).

* :class:`ServiceType` (4.2.2.4) and :class:`Link`;
* the Authentication Bit Masks over the frame header (4.2.2.6):
  :func:`standard_abm_tc`, :func:`standard_abm_tm`, :func:`full_abm`;
* :class:`SecurityAssociation`: the frozen managed parameters of one SA: SPI (4.1.1.2),
  the VCs it applies to (4.2.2.2; one per TC SA, 3.4.2.2.1), the lengths of the IV,
  Sequence Number, Pad Length (4.1.1.3 to 4.1.1.5) and MAC (4.1.2) fields, the
  anti-replay window, the ABM;
* :class:`SaTable`: the SAs of one end with their receive windows and the retired SAs,
  and the SA lookup of ProcessSecurity (4.2.4: SPI known, SA applies to the link and
  VC, not retired, key ACTIVE).

Rekey without loss: every SA names its key and its SPI; a new key comes as an OTAR PDU
(installed PRE-ACTIVE), is made ACTIVE by an activation PDU, and is used by a second SA
whose ``replaces`` names the old SPI.  The receiver picks the SA by the SPI of each
frame, so it accepts frames under both SAs while both keys are ACTIVE, in any
interleaving; the first frame that verifies under the new SA retires the old one on
that receiver (frames on the old SPI are then refused as ``sa-retired``).  A link
delivers frames in order, so every old-key frame sent before the switch has arrived by
then.  Deactivating the old key afterwards is an explicit PDU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from linkstack.errors import LocalProtocolError
from linkstack.sdls.cipher import GCM_IV_LENGTH, GCM_MAC_LENGTH
from linkstack.sdls.errors import EP_BOOK, SaNotOperational, UnknownSpi, clause
from linkstack.sdls.keys import (
    MASTER_KEY_ID_LIMIT,
    KeyRing,
    KeyState,
    check_key_id,
    is_master_key_id,
)
from linkstack.sdls.replay import ReplayWindow
from linkstack.tc.frame import PRIMARY_HEADER_LENGTH as TC_PRIMARY_HEADER_LENGTH
from linkstack.tm.frame import PRIMARY_HEADER_LENGTH as TM_PRIMARY_HEADER_LENGTH

logger = logging.getLogger(__name__)

SPI_LENGTH: Final = 2  # 16-bit Security Parameter Index, CCSDS 355.0-B-2 4.1.1.2
MAX_SPI: Final = 0xFFFF  # CCSDS 355.0-B-2 4.1.1.2
MAX_SN_LENGTH: Final = 8  # our bound; CryptoLib allows more (SN_SIZE 16)
MAX_PAD_LENGTH_LENGTH: Final = 2  # Pad Length field is at most 2 octets, CCSDS 355.0-B-2 4.1.1.5
MAX_ARSN_WINDOW: Final = 1 << 16  # our bound on the bitmap kept per SA


class ServiceType(IntEnum):
    """SA service type, 355.0-B-2 4.2.2.4 (CryptoLib ``SA_PLAINTEXT``.. names)."""

    SA_PLAINTEXT = 0
    SA_AUTHENTICATION = 1
    SA_ENCRYPTION = 2  # encryption only: no MAC, no integrity (355.0-B-2 2.3.3 warns)
    SA_AUTHENTICATED_ENCRYPTION = 3


class Link(IntEnum):
    """Which Space Data Link Protocol an SA protects."""

    TC = 0  # CCSDS 232.0-B-4
    TM = 2  # CCSDS 132.0-B-3 (CryptoLib TYPE_TM = 2)


def standard_abm_tc(*, segment_header: bool) -> bytes:
    """Default ABM over the TC frame header octets (Yamcs ``StandardAuthMask.TC``).

    Authenticates the VCID (6 bits of octet 2) and the whole Segment Header; SCID,
    flags, Frame Length and N(S) are left out, as Yamcs does.
    """
    return bytes([0x00, 0x00, 0xFC, 0x00, 0x00]) + (b"\xff" if segment_header else b"")


def standard_abm_tm(*, secondary_header_octets: int) -> bytes:
    """Default ABM over the TM frame header octets (Yamcs ``StandardAuthMask.TM``).

    Authenticates the VCID (3 bits of octet 1) only: the Master Channel Frame Count is
    set by the master channel after the VC (355.0-B-2 4.2.2.6.2 as quoted by
    ravisuhag/astro), and the secondary header is left out as Yamcs does.
    """
    return bytes([0x00, 0x0E, 0x00, 0x00, 0x00, 0x00]) + bytes(secondary_header_octets)


def full_abm(header_octets: int) -> bytes:
    """ABM authenticating every header bit (stricter than the baseline)."""
    return b"\xff" * header_octets


class ArsnSource(IntEnum):
    """Which Security Header field the anti-replay check reads (355.0-B-2 4.1.1.4).

    CryptoLib ``Crypto_Check_Anti_Replay``: the Sequence Number field when the SA has
    one, otherwise the IV (4.1.1.4.2 as quoted: the IV may serve as the ARSN).
    """

    IV = 0
    SN = 1


#: AES-GCM MAC (tag) lengths in octets, NIST SP 800-38D 5.2.1.2 (CryptoLib
#: ``stmacf_len``); 0 only for encryption without authentication.
GCM_MAC_LENGTHS: Final = frozenset({4, 8, 12, 13, 14, 15, 16})
#: IV lengths this suite takes: SP 800-38D allows any; 8 to 16 octets as CryptoLib
#: (``IV_SIZE`` 16) and the ``cryptography`` GCM mode (at least 8) do.
MIN_IV_LENGTH: Final = 8
MAX_IV_LENGTH: Final = 16
#: Default IV reservation step of a sending SA without a window limit (the counter
#: file is written once per this many frames; a restart skips at most this many IVs).
DEFAULT_RESERVATION_STEP: Final = 1024


def _ranges(values: frozenset[int] | set[int]) -> str:
    """``5 or 6`` / ``6 or 8..70``: a set of lengths for a message."""
    ordered = sorted(values)
    runs: list[list[int]] = []
    for v in ordered:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts = [f"{r[0]}..{r[-1]}" if len(r) > 2 else " or ".join(str(v) for v in r) for r in runs]
    return " or ".join(parts)


def _sa_error(spi: int, field_name: str, problem: str) -> LocalProtocolError:
    """The one-line error for a bad SA parameter: names the SA and the field."""
    return LocalProtocolError(f"SA {spi}: {field_name}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityAssociation:
    """Managed parameters of one SA (355.0-B-2 4.2.2; CryptoLib ``SecurityAssociation_t``).

    Defaults: the baseline suite, AES-256-GCM, 96-bit counter IV carried whole,
    128-bit MAC, no Sequence Number, no padding, the IV as ARSN, no window limit.
    Every parameter maps to a CryptoLib SA column (``docs/interop.md``).
    """

    #: Security Parameter Index carried in every frame (4.1.1.2).
    spi: int
    link: Link
    #: Virtual Channels the SA applies to; exactly one for TC (355.0-B-2 3.4.2.2.1 NOTE).
    vcids: frozenset[int]
    service_type: ServiceType = ServiceType.SA_AUTHENTICATED_ENCRYPTION
    #: Session key (id >= 128); None only for SA_PLAINTEXT.
    key_id: int | None = None
    #: Octets of the IV field (4.1.1.3): 8 to 16 for GCM (12 the baseline), 0 for
    #: plaintext.  (CryptoLib ``shivf_len``; the whole IV is carried.)
    iv_length: int = GCM_IV_LENGTH
    #: Octets of the Sequence Number field (4.1.1.4; CryptoLib ``shsnf_len``).
    sn_length: int = 0
    #: Octets of the Pad Length field (4.1.1.5; CryptoLib ``shplf_len``); GCM never
    #: pads, so the field is sent as 0.
    pad_length_length: int = 0
    #: Octets of the MAC (4.1.2; CryptoLib ``stmacf_len``): 16 for the baseline, one of
    #: :data:`GCM_MAC_LENGTHS`, 0 for SA_ENCRYPTION.
    mac_length: int = GCM_MAC_LENGTH
    #: Which field is the anti-replay sequence number; None: the Sequence Number when
    #: ``sn_length`` > 0, else the IV (CryptoLib's rule).
    arsn_source: ArsnSource | None = None
    #: Anti-replay window behind the highest accepted ARSN: how far back a frame that
    #: was not yet seen may be (1 accepts nothing behind, as CryptoLib).
    arsn_window: int = 64
    #: How far ahead of the highest accepted ARSN a frame may be (CryptoLib ``arsnw``:
    #: it accepts last+1 .. last+arsnw); None: no limit.  A sender's restart moves it
    #: at most ``reservation_step`` ahead, so ``reservation_step`` <= this.
    max_arsn_jump: int | None = None
    #: IVs the sender reserves per counter-file write; None: the smaller of
    #: :data:`DEFAULT_RESERVATION_STEP` and ``max_arsn_jump``.
    reservation_step: int | None = None
    #: Authentication Bit Mask (4.2.2.6), one bit per header bit: either over the whole
    #: AAD (frame header, segment/secondary header, then the Security Header) or over
    #: the frame header only (the Security Header part then authenticates SPI, Sequence
    #: Number and Pad Length and masks the IV).  None: the Yamcs standard mask.
    abm: bytes | None = None
    #: TC only: the MAP ID (Segment Header, 232.0-B-4 4.1.3.2) the SA is limited to
    #: (355.0-B-2 3.4.2.2.1: a TC SA serves a GVCID or a GMAP ID); None: every MAP.
    map_id: int | None = None
    #: This TC SA carries the SA management procedures of 355.1-B-1 (Set ARSN, Read
    #: ARSN): on a VC (or MAP) of its own, with no window limit, so that it is never
    #: locked out like the SAs it repairs.
    management: bool = False
    #: SPI of the SA this one takes over from (rekey); see the module docstring.
    replaces: int | None = None

    def __post_init__(self) -> None:
        spi = self.spi
        if not 0 <= spi <= MAX_SPI:
            raise LocalProtocolError(f"SPI {spi} outside 0..{MAX_SPI} ({clause('4.1.1.2')})")
        object.__setattr__(self, "vcids", frozenset(self.vcids))
        object.__setattr__(self, "link", Link(self.link))
        object.__setattr__(self, "service_type", ServiceType(self.service_type))
        if self.arsn_source is not None:
            object.__setattr__(self, "arsn_source", ArsnSource(self.arsn_source))
        limit = 0x3F if self.link == Link.TC else 7
        if not self.vcids or any(not 0 <= v <= limit for v in self.vcids):
            raise LocalProtocolError(
                f"SA {spi}: VCIDs {sorted(self.vcids)} empty or outside 0..{limit}"
            )
        if self.link == Link.TC and len(self.vcids) != 1:
            raise LocalProtocolError(
                f"SA {spi}: a TC SA applies to exactly one VC, got {sorted(self.vcids)}"
                f" ({clause('3.4.2.2.1')})"
            )
        if self.map_id is not None and (self.link != Link.TC or not 0 <= self.map_id <= 0x3F):
            raise _sa_error(
                spi,
                "map_id",
                f"{self.map_id}: only a TC SA names a MAP, 0..63 (232.0-B-4 4.1.3.2.2.3)",
            )
        if not 0 <= self.pad_length_length <= MAX_PAD_LENGTH_LENGTH:
            raise _sa_error(
                spi,
                "pad_length_length",
                f"{self.pad_length_length} outside 0..{MAX_PAD_LENGTH_LENGTH}"
                f" ({clause('4.1.1.5')})",
            )
        if not 0 <= self.sn_length <= MAX_SN_LENGTH:
            raise _sa_error(spi, "sn_length", f"{self.sn_length} outside 0..{MAX_SN_LENGTH}")
        if self.service_type == ServiceType.SA_PLAINTEXT:
            if self.key_id is not None or self.iv_length or self.sn_length or self.mac_length:
                raise LocalProtocolError(
                    f"SA {spi}: SA_PLAINTEXT takes no key, IV, SN or MAC (key_id="
                    f"{self.key_id}, iv_length={self.iv_length}, sn_length={self.sn_length},"
                    f" mac_length={self.mac_length}) ({clause('4.1.1.4.4')})"
                )
            if self.management:
                raise _sa_error(spi, "management", "an SA_PLAINTEXT SA cannot carry management")
        else:
            self._check_cipher_parameters()
        if self.abm is not None:
            object.__setattr__(self, "abm", bytes(self.abm))
            headers = self.frame_header_lengths()
            whole = frozenset(n + self.header_length for n in headers)
            if len(self.abm) not in headers | whole:
                raise _sa_error(
                    spi,
                    "abm",
                    f"{len(self.abm)} octets; a {self.link.name} mask covers the frame header"
                    f" ({_ranges(headers)} octets) or the frame header and the"
                    f" {self.header_length}-octet Security Header"
                    f" ({_ranges(whole)}) ({clause('4.2.2.6')})",
                )
        if self.replaces == spi:
            raise LocalProtocolError(f"SA {spi} cannot replace itself")

    def frame_header_lengths(self) -> frozenset[int]:
        """Octets the frame header before the Security Header may have on this link."""
        if self.link == Link.TC:  # primary header, Segment Header or not (232.0-B-4 4.1.3.2)
            return frozenset({TC_PRIMARY_HEADER_LENGTH, TC_PRIMARY_HEADER_LENGTH + 1})
        # primary header, then no secondary header or one of 2..64 octets (132.0-B-3 4.1.3)
        return frozenset(
            {TM_PRIMARY_HEADER_LENGTH}
            | set(range(TM_PRIMARY_HEADER_LENGTH + 2, TM_PRIMARY_HEADER_LENGTH + 65))
        )

    def _check_cipher_parameters(self) -> None:
        spi = self.spi
        if self.key_id is None:
            raise _sa_error(spi, "key_id", f"{self.service_type.name} needs a key")
        check_key_id(self.key_id)
        if is_master_key_id(self.key_id):
            raise LocalProtocolError(
                f"SA {spi}: key {self.key_id} is a master key (< {MASTER_KEY_ID_LIMIT});"
                " frames use session keys"
            )
        if not MIN_IV_LENGTH <= self.iv_length <= MAX_IV_LENGTH:
            raise _sa_error(
                spi,
                "iv_length",
                f"{self.iv_length}, AES-GCM here takes {MIN_IV_LENGTH}..{MAX_IV_LENGTH} octets"
                f" ({clause('4.1.1.3')})",
            )
        if self.service_type == ServiceType.SA_ENCRYPTION:
            if self.mac_length:
                raise _sa_error(
                    spi, "mac_length", f"{self.mac_length}: SA_ENCRYPTION carries no MAC, give 0"
                )
            if self.management:
                raise _sa_error(spi, "management", "the management SA must authenticate")
        elif self.mac_length not in GCM_MAC_LENGTHS:
            raise _sa_error(
                spi,
                "mac_length",
                f"{self.mac_length} for {self.service_type.name}: AES-GCM MACs are"
                f" {sorted(GCM_MAC_LENGTHS)} octets (NIST SP 800-38D 5.2.1.2)",
            )
        source = self.effective_arsn_source
        if source == ArsnSource.SN and not self.sn_length:
            raise _sa_error(spi, "arsn_source", "SN needs a Sequence Number field (sn_length > 0)")
        if not 1 <= self.arsn_window <= MAX_ARSN_WINDOW:
            raise _sa_error(spi, "arsn_window", f"{self.arsn_window} outside 1..{MAX_ARSN_WINDOW}")
        if self.max_arsn_jump is not None and self.max_arsn_jump < 1:
            raise _sa_error(spi, "max_arsn_jump", f"{self.max_arsn_jump} < 1")
        if self.reservation_step is not None:
            if self.reservation_step < 1:
                raise _sa_error(spi, "reservation_step", f"{self.reservation_step} < 1")
            if self.max_arsn_jump is not None and self.reservation_step > self.max_arsn_jump:
                raise _sa_error(
                    spi,
                    "reservation_step",
                    f"{self.reservation_step} > max_arsn_jump {self.max_arsn_jump}: a sender"
                    " restart would jump past the receiver's window and be refused for good",
                )
        if self.management:
            if self.link != Link.TC:
                raise _sa_error(spi, "management", "the management SA is a TC SA")
            if self.max_arsn_jump is not None:
                raise _sa_error(
                    spi,
                    "management",
                    f"max_arsn_jump {self.max_arsn_jump}: the management SA must take any ARSN"
                    " ahead (null), or it could be locked out like the SAs it repairs",
                )

    @property
    def effective_arsn_source(self) -> ArsnSource:
        """The field the anti-replay check reads (CryptoLib's rule when not set)."""
        if self.arsn_source is not None:
            return self.arsn_source
        return ArsnSource.SN if self.sn_length else ArsnSource.IV

    @property
    def arsn_length(self) -> int:
        """Octets of the ARSN (the Sequence Number or the IV field)."""
        return self.sn_length if self.effective_arsn_source == ArsnSource.SN else self.iv_length

    @property
    def effective_reservation_step(self) -> int:
        """IVs reserved per counter-file write (see :attr:`reservation_step`)."""
        if self.reservation_step is not None:
            return self.reservation_step
        if self.max_arsn_jump is not None:
            return min(DEFAULT_RESERVATION_STEP, self.max_arsn_jump)
        return DEFAULT_RESERVATION_STEP

    @property
    def header_length(self) -> int:
        """Octets of the Security Header."""
        return SPI_LENGTH + self.iv_length + self.sn_length + self.pad_length_length

    @property
    def trailer_length(self) -> int:
        """Octets of the Security Trailer (the MAC)."""
        return self.mac_length

    @property
    def overhead(self) -> int:
        return self.header_length + self.trailer_length

    @property
    def counter_limit(self) -> int:
        """Largest counter value the IV (and Sequence Number) field can carry."""
        bits = [8 * n for n in (self.iv_length, self.sn_length) if n]
        return (1 << min(bits)) - 1 if bits else 0

    def header_mask(self, link_header: int, *, segment_header: bool = False) -> bytes:
        """The mask over frame header + Security Header for ``link_header`` octets.

        An ABM of ``link_header`` octets covers the frame header and gets the fixed
        Security Header part; one of ``link_header`` + :attr:`header_length` octets is
        the whole mask; any other length is refused, naming both.
        """
        if self.abm is not None and len(self.abm) == link_header + self.header_length:
            return self.abm
        if self.abm is not None:
            frame_mask = self.abm
        elif self.link == Link.TC:
            frame_mask = standard_abm_tc(segment_header=segment_header)
        else:
            frame_mask = standard_abm_tm(
                secondary_header_octets=link_header - TM_PRIMARY_HEADER_LENGTH
            )
        if len(frame_mask) != link_header:
            raise LocalProtocolError(
                f"SA {self.spi}: ABM of {len(frame_mask)} octets for a {link_header}-octet"
                f" frame header: give {link_header} octets (frame header) or"
                f" {link_header + self.header_length} (frame header and Security Header)"
                f" ({clause('4.2.2.6')})"
            )
        return (
            frame_mask
            + b"\xff" * SPI_LENGTH
            + bytes(self.iv_length)  # IV never in the AAD, 4.2.2.6.2 h (as quoted)
            + b"\xff" * (self.sn_length + self.pad_length_length)
        )


class SaTable:
    """The SAs one end knows, with their receive windows, and the key ring they use.

    One table serves both directions: SAs carry their :class:`Link` and VCIDs.  No two
    SAs may share a key (each key has one IV counter, on one sending side).
    ``plaintext_control_frames`` lets COP-1 Type-BC frames (Unlock, Set V(R)) pass in
    the clear, as Yamcs does (yamcs PR#1054).
    """

    def __init__(
        self,
        sas: Iterable[SecurityAssociation],
        keys: KeyRing,
        *,
        plaintext_control_frames: bool = True,
        replay_state: Mapping[int, int] | None = None,
        on_window_advance: Callable[[int, int], None] | None = None,
    ) -> None:
        self.keys = keys
        self.plaintext_control_frames = plaintext_control_frames
        #: Called with (SPI, highest ARSN) each time a receive window moves, before the
        #: frame is delivered: the spacecraft persists it there, so that a restart
        #: accepts no replay (``keystore.CounterStore.save_window``).
        self.on_window_advance = on_window_advance
        self._sas: dict[int, SecurityAssociation] = {}
        by_key: dict[int, int] = {}
        for sa in sas:
            if sa.spi in self._sas:
                raise LocalProtocolError(f"SPI {sa.spi} defined twice")
            if sa.key_id is not None:
                if sa.key_id in by_key:
                    raise LocalProtocolError(
                        f"SAs {by_key[sa.key_id]} and {sa.spi} share key {sa.key_id}: each key"
                        " needs its own IV counter"
                    )
                by_key[sa.key_id] = sa.spi
            self._sas[sa.spi] = sa
        for sa in self._sas.values():
            if sa.replaces is not None and sa.replaces not in self._sas:
                raise LocalProtocolError(f"SA {sa.spi} replaces unknown SPI {sa.replaces}")
        self._windows = {
            sa.spi: ReplayWindow(
                sa.arsn_window,
                highest=(replay_state or {}).get(sa.spi),
                max_jump=sa.max_arsn_jump,
            )
            for sa in self._sas.values()
        }
        self._retired: set[int] = set()

    def __getitem__(self, spi: int) -> SecurityAssociation:
        try:
            return self._sas[spi]
        except KeyError:
            raise LocalProtocolError(f"no SA with SPI {spi}") from None

    def __iter__(self) -> Iterator[SecurityAssociation]:
        return iter(list(self._sas.values()))

    def __contains__(self, spi: object) -> bool:
        return spi in self._sas

    @property
    def retired(self) -> frozenset[int]:
        return frozenset(self._retired)

    def replay_state(self) -> dict[int, int]:
        """Highest ARSN accepted per SPI, for the counter file."""
        return {spi: w.highest for spi, w in self._windows.items() if w.highest is not None}

    def highest_arsn(self, spi: int) -> int | None:
        """The highest ARSN SA ``spi`` accepted (Read ARSN, 355.1-B-1), None before any."""
        self[spi]
        return self._windows[spi].highest

    def set_arsn(self, spi: int, value: int) -> bool:
        """Set ARSN (355.1-B-1 SA management): move SA ``spi``'s window up to ``value``.

        The receiver only ever moves forward (a lower value would accept replays):
        ``value`` below the highest accepted changes nothing and returns False.
        """
        sa = self[spi]
        if sa.service_type == ServiceType.SA_PLAINTEXT:
            raise LocalProtocolError(f"SA {spi} is SA_PLAINTEXT and has no ARSN")
        top = (1 << (8 * sa.arsn_length)) - 1
        if not 0 <= value <= top:
            raise LocalProtocolError(f"SA {spi}: ARSN {value} outside 0..{top}")
        window = self._windows[spi]
        if window.highest is not None and value <= window.highest:
            return False
        window.jump_to(value)
        self._advanced(spi, value)
        logger.info("< SPI %d: ARSN set to %d", spi, value)
        return True

    def _advanced(self, spi: int, highest: int) -> None:
        if self.on_window_advance is not None:
            self.on_window_advance(spi, highest)

    def _lookup(
        self, spi: int, link: Link, vcid: int, map_id: int | None = None
    ) -> SecurityAssociation:
        sa = self._sas.get(spi)
        if sa is None:
            raise UnknownSpi("unknown-spi", clause("4.2.4"), f"SPI {spi} on {link.name} VC {vcid}")
        if sa.link != link:
            raise SaNotOperational(
                "sa-wrong-link", clause("4.2.4"), f"SPI {spi} is a {sa.link.name} SA"
            )
        if vcid not in sa.vcids:
            raise SaNotOperational(
                "sa-wrong-vc", clause("4.2.2.2"), f"SPI {spi} does not apply to VC {vcid}"
            )
        if sa.map_id is not None and map_id != sa.map_id:
            raise SaNotOperational(
                "sa-wrong-map",
                clause("3.4.2.2.1"),
                f"SPI {spi} applies to MAP {sa.map_id}, frame is on MAP {map_id}",
            )
        if spi in self._retired:
            raise SaNotOperational(
                "sa-retired", clause("4.2.4"), f"SPI {spi} was replaced by a newer SA"
            )
        if sa.key_id is not None and (
            sa.key_id not in self.keys or self.keys.state(sa.key_id) != KeyState.ACTIVE
        ):
            state = self.keys.state(sa.key_id).name if sa.key_id in self.keys else "absent"
            raise SaNotOperational(
                "key-not-active", EP_BOOK, f"SPI {spi}: key {sa.key_id} is {state}"
            )
        return sa

    def _accept(self, sa: SecurityAssociation, arsn: int | None) -> None:
        if arsn is not None:
            window = self._windows[sa.spi]
            before = window.highest
            window.commit(arsn)
            if window.highest != before and window.highest is not None:
                self._advanced(sa.spi, window.highest)
        if sa.replaces is not None and sa.replaces not in self._retired:
            self._retired.add(sa.replaces)
            logger.info("< SPI %d seen: SPI %d retired", sa.spi, sa.replaces)

    def __repr__(self) -> str:
        return f"SaTable(spis={sorted(self._sas)}, retired={sorted(self._retired)}, {self.keys!r})"
