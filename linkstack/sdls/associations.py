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
from collections.abc import Iterable, Iterator, Mapping
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
    SA_ENCRYPTION = 2  # not offered: encryption without authentication (355.0-B-2 2.3.3)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityAssociation:
    """Managed parameters of one SA (355.0-B-2 4.2.2; CryptoLib ``SecurityAssociation_t``).

    Baseline suite: AES-256-GCM, 96-bit counter IV, 128-bit MAC, no padding.
    """

    #: Security Parameter Index carried in every frame (4.1.1.2).
    spi: int
    link: Link
    #: Virtual Channels the SA applies to; exactly one for TC (355.0-B-2 3.4.2.2.1 NOTE).
    vcids: frozenset[int]
    service_type: ServiceType = ServiceType.SA_AUTHENTICATED_ENCRYPTION
    #: Session key (id >= 128); None only for SA_PLAINTEXT.
    key_id: int | None = None
    #: Octets of the IV field (4.1.1.3): 12 for GCM, 0 for plaintext.
    iv_length: int = GCM_IV_LENGTH
    #: Octets of the Sequence Number field (4.1.1.4); 0: the IV counter is the ARSN.
    sn_length: int = 0
    #: Octets of the Pad Length field (4.1.1.5); 0 for GCM, which never pads.
    pad_length_length: int = 0
    #: Octets of the MAC (4.1.2); 16 for the baseline.
    mac_length: int = GCM_MAC_LENGTH
    #: Anti-replay window ARSNW: how far behind the highest accepted ARSN a frame may be.
    arsn_window: int = 64
    #: Reject frames whose ARSN jumps more than this ahead (None: no limit).  Must be
    #: larger than the sender's IV reservation block, or a sender restart looks hostile.
    max_arsn_jump: int | None = None
    #: Mask over the frame header octets (primary + segment/secondary header); None for
    #: the Yamcs standard mask of the link.  The Security Header part is fixed: SPI,
    #: Sequence Number and Pad Length authenticated, IV octets zero.
    abm: bytes | None = None
    #: SPI of the SA this one takes over from (rekey); see the module docstring.
    replaces: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.spi <= MAX_SPI:
            raise LocalProtocolError(f"SPI {self.spi} outside 0..{MAX_SPI} ({clause('4.1.1.2')})")
        object.__setattr__(self, "vcids", frozenset(self.vcids))
        object.__setattr__(self, "link", Link(self.link))
        object.__setattr__(self, "service_type", ServiceType(self.service_type))
        limit = 0x3F if self.link == Link.TC else 7
        if not self.vcids or any(not 0 <= v <= limit for v in self.vcids):
            raise LocalProtocolError(
                f"SA {self.spi}: VCIDs {sorted(self.vcids)} empty or outside 0..{limit}"
            )
        if self.link == Link.TC and len(self.vcids) != 1:
            raise LocalProtocolError(
                f"SA {self.spi}: a TC SA applies to exactly one VC, got {sorted(self.vcids)}"
                f" ({clause('3.4.2.2.1')})"
            )
        if self.service_type == ServiceType.SA_ENCRYPTION:
            raise LocalProtocolError(
                f"SA {self.spi}: encryption without authentication is not offered"
                f" ({clause('2.3.3')}); use SA_AUTHENTICATED_ENCRYPTION"
            )
        if self.service_type == ServiceType.SA_PLAINTEXT:
            if self.key_id is not None or self.iv_length or self.sn_length or self.mac_length:
                raise LocalProtocolError(
                    f"SA {self.spi}: SA_PLAINTEXT takes no key, IV, SN or MAC (key_id="
                    f"{self.key_id}, iv_length={self.iv_length}, sn_length={self.sn_length},"
                    f" mac_length={self.mac_length}) ({clause('4.1.1.4.4')})"
                )
        else:
            if self.key_id is None:
                raise LocalProtocolError(f"SA {self.spi}: {self.service_type.name} needs a key_id")
            check_key_id(self.key_id)
            if is_master_key_id(self.key_id):
                raise LocalProtocolError(
                    f"SA {self.spi}: key {self.key_id} is a master key (< {MASTER_KEY_ID_LIMIT});"
                    " frames use session keys"
                )
            if self.iv_length != GCM_IV_LENGTH:
                raise LocalProtocolError(
                    f"SA {self.spi}: iv_length {self.iv_length}, AES-GCM needs {GCM_IV_LENGTH}"
                )
            if self.mac_length != GCM_MAC_LENGTH:
                raise LocalProtocolError(
                    f"SA {self.spi}: mac_length {self.mac_length}, the baseline is {GCM_MAC_LENGTH}"
                )
            if not 0 <= self.sn_length <= MAX_SN_LENGTH:
                raise LocalProtocolError(
                    f"SA {self.spi}: sn_length {self.sn_length} outside 0..{MAX_SN_LENGTH}"
                )
            if not 1 <= self.arsn_window <= MAX_ARSN_WINDOW:
                raise LocalProtocolError(
                    f"SA {self.spi}: arsn_window {self.arsn_window} outside 1..{MAX_ARSN_WINDOW}"
                )
            if self.max_arsn_jump is not None and self.max_arsn_jump < 1:
                raise LocalProtocolError(f"SA {self.spi}: max_arsn_jump {self.max_arsn_jump} < 1")
        if not 0 <= self.pad_length_length <= MAX_PAD_LENGTH_LENGTH:
            raise LocalProtocolError(
                f"SA {self.spi}: pad_length_length {self.pad_length_length} outside"
                f" 0..{MAX_PAD_LENGTH_LENGTH} ({clause('4.1.1.5')})"
            )
        if self.replaces == self.spi:
            raise LocalProtocolError(f"SA {self.spi} cannot replace itself")

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
        """The full mask over frame header + Security Header for ``link_header`` octets."""
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
                f" frame header ({clause('4.2.2.6')})"
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
    ) -> None:
        self.keys = keys
        self.plaintext_control_frames = plaintext_control_frames
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

    def _lookup(self, spi: int, link: Link, vcid: int) -> SecurityAssociation:
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
            self._windows[sa.spi].commit(arsn)
        if sa.replaces is not None and sa.replaces not in self._retired:
            self._retired.add(sa.replaces)
            logger.info("< SPI %d seen: SPI %d retired", sa.spi, sa.replaces)

    def __repr__(self) -> str:
        return f"SaTable(spis={sorted(self._sas)}, retired={sorted(self._retired)}, {self.keys!r})"
