"""Space Data Link Security (CCSDS 355.0-B-2) for TC and TM frames, sans-I/O.

What lives here, top to bottom:

* errors: :class:`SecurityError` and its subclasses (received bytes refused, layer
  ``sdls``), :class:`CounterExhausted` / :class:`CounterNotReserved` (caller misuse);
* keys: :class:`KeyMaterial` (32 octets that never print), :class:`KeyState` and the
  key life-cycle table of 355.1-B-1, :class:`KeyRing`;
* :class:`SecurityAssociation`: the frozen managed parameters of one SA;
* counters: :class:`TxCounter` (IV / ARSN of a sending SA, reserved in blocks the
  application persists before use) and :class:`ReplayWindow` (receiving side);
* :class:`SaTable`: the SAs of one end, the receive windows and retired SAs;
* frame functions: :func:`protect_tc` / :func:`unprotect_tc`, :func:`protect_tm` /
  :func:`unprotect_tm`, :func:`tc_data_capacity`, :func:`tm_data_capacity`,
  :func:`is_plaintext_control`;
* key management over the link, in the spirit of 355.1-B-1: :class:`OtarPdu`,
  :class:`KeyActivationPdu`, :class:`KeyDeactivationPdu`, :func:`build_otar`,
  :func:`decode_ep_pdu` and the receiving engine :class:`KeyManager`.

Frame layout (355.0-B-2 4.1; Yamcs ``SecurityAssociationAes256Gcm128``)::

    TC: primary header | segment header? | Security Header | data | Security Trailer | FECF?
    TM: primary header | secondary header? | Security Header | data | Security Trailer
        | OCF? | FECF?

    Security Header = SPI (2) | IV (iv_length) | Sequence Number (sn_length)
                      | Pad Length (pad_length_length)
    Security Trailer = MAC (mac_length)

Only the data field is encrypted.  The MAC covers the frame header octets (primary
header plus segment/secondary header) and the Security Header, both ANDed with the
Authentication Bit Mask, then the data field (355.0-B-2 4.2.2.6, 4.2.3).  OCF and FECF
stay outside, so COP-1's CLCW and the CRC are never protected.  The IV octets are
always masked to zero in the authenticated data (355.0-B-2 4.2.2.6.2 h as quoted by
ravisuhag/astro; Yamcs ``StandardAuthMask`` does the same): GCM authenticates the IV
through the keystream anyway.

Counter-based IVs (AES-GCM needs a unique 96-bit IV per key, NIST SP 800-38D 8.2.1):
each sending SA owns one key and one :class:`TxCounter`; the counter value is the IV
and, when the SA has no Sequence Number field, also the anti-replay sequence number
(355.0-B-2 4.1.1.4.2 as quoted: the IV may serve as the ARSN).  With a Sequence Number
field the same counter value is carried there too, so both stay monotonic together.

Receiving, in this order (355.0-B-2 4.2.4): length, SPI known, SA applies to the VC and
is not retired, key active, MAC verified, Pad Length, anti-replay; only when every
check passed is the window advanced and the plaintext returned.  The anti-replay check
runs after the MAC (nasa/CryptoLib PR#78), so a forged frame never moves the window.

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

import hmac
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from linkstack.errors import (
    DecodeError,
    InvalidState,
    Layer,
    LocalProtocolError,
    RemoteProtocolError,
)
from linkstack.tc.frame import (
    PRIMARY_HEADER_LENGTH as TC_PRIMARY_HEADER_LENGTH,
)
from linkstack.tc.frame import (
    SEGMENT_HEADER_LENGTH,
    ControlCommandFlag,
    TcFrame,
    TcVcConfig,
)
from linkstack.tm.frame import (
    FHP_IDLE_ONLY,
    FHP_NO_PACKET_START,
    TmChannelConfig,
    TmFrame,
)
from linkstack.tm.frame import (
    PRIMARY_HEADER_LENGTH as TM_PRIMARY_HEADER_LENGTH,
)

logger = logging.getLogger(__name__)

_BOOK: Final = "CCSDS 355.0-B-2"
_EP_BOOK: Final = "CCSDS 355.1-B-1"

SPI_LENGTH: Final = 2  # 16-bit Security Parameter Index, CCSDS 355.0-B-2 4.1.1.2
MAX_SPI: Final = 0xFFFF  # CCSDS 355.0-B-2 4.1.1.2
GCM_IV_LENGTH: Final = 12  # 96-bit IV, AES-GCM baseline (Yamcs GCM_IV_LEN_BYTES; SP 800-38D)
GCM_MAC_LENGTH: Final = 16  # 128-bit MAC, AES-GCM baseline (Yamcs GCM_TAG_LEN_BITS)
KEY_LENGTH: Final = 32  # AES-256 (CryptoLib AES256_GCM_KEYLEN)
MAX_SN_LENGTH: Final = 8  # our bound; CryptoLib allows more (SN_SIZE 16)
MAX_PAD_LENGTH_LENGTH: Final = 2  # Pad Length field is at most 2 octets, CCSDS 355.0-B-2 4.1.1.5
MAX_KEY_ID: Final = 0xFFFF  # 2-octet key IDs (CryptoLib SDLS_KEYID_LEN)
MASTER_KEY_ID_LIMIT: Final = 128  # ids below are master keys (CryptoLib MKID_MAX)
MAX_ARSN_WINDOW: Final = 1 << 16  # our bound on the bitmap kept per SA


def _clause(number: str) -> str:
    return f"{_BOOK} {number}"


# -- errors ------------------------------------------------------------------------------


class SecurityError(RemoteProtocolError):
    """A received frame or PDU failed an SDLS check; nothing of it may be delivered.

    ``reason`` is one of the stable keys listed on each subclass.  Messages never hold
    key material or plaintext.
    """

    def __init__(self, reason: str, clause: str, detail: str = "") -> None:
        super().__init__(Layer.SDLS, reason, clause, detail)


class TruncatedFrame(SecurityError):
    """``truncated``: too short for the SA's Security Header, data and Trailer."""


class UnknownSpi(SecurityError):
    """``unknown-spi``: no SA with this SPI on this end (355.0-B-2 4.2.4)."""


class SaNotOperational(SecurityError):
    """``sa-wrong-link``, ``sa-wrong-vc``, ``sa-retired`` or ``key-not-active``."""


class MacMismatch(SecurityError):
    """``mac-mismatch``: the MAC does not verify (forged, corrupted or wrong key)."""


class ReplayRejected(SecurityError):
    """``replay`` (seen before), ``outside-window`` (too old) or ``too-far-ahead``."""


class BadPadLength(SecurityError):
    """``bad-pad-length``: a non-zero Pad Length under a cipher that never pads."""


class KeyManagementError(SecurityError):
    """A 355.1-B-1 PDU was refused: ``bad-pdu``, ``unknown-master-key``,
    ``key-not-active``, ``mac-mismatch``, ``replay``, ``key-id-in-use``,
    ``illegal-key-transition``, ``unknown-key``."""


class CounterNotReserved(InvalidState):
    """The sending counter has no reserved value left: persist a new block first."""


class CounterExhausted(InvalidState):
    """The counter would wrap: nothing is sent; rekey (new key, new SA)."""


class InvalidKeyTransition(InvalidState):
    """A key state change the 355.1-B-1 life cycle does not allow."""


# -- keys --------------------------------------------------------------------------------


class KeyMaterial:
    """An AES-256 key; its octets never appear in ``repr``, ``str`` or messages."""

    __slots__ = ("_octets",)

    def __init__(self, octets: bytes) -> None:
        if not isinstance(octets, bytes | bytearray) or len(octets) != KEY_LENGTH:
            size = len(octets) if isinstance(octets, bytes | bytearray) else type(octets)
            raise LocalProtocolError(f"key of {size} octets, AES-256 needs {KEY_LENGTH}")
        self._octets = bytes(octets)

    def secret_octets(self) -> bytes:
        """The key itself: only for the cipher and the key file writer."""
        return self._octets

    def __repr__(self) -> str:
        return f"KeyMaterial(<{KEY_LENGTH} octets, masked>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyMaterial):
            return NotImplemented
        return hmac.compare_digest(self._octets, other._octets)

    __hash__ = None  # type: ignore[assignment]


class KeyState(IntEnum):
    """Key states, 355.1-B-1 key management (CryptoLib ``KEY_PREACTIVE``..)."""

    PREACTIVE = 0
    ACTIVE = 1
    DEACTIVATED = 2
    DESTROYED = 3
    CORRUPTED = 4


#: Everything that changes a key's state lives here: (from) -> allowed (to).
#: 355.1-B-1 key life cycle: OTAR installs PRE-ACTIVE, activation makes ACTIVE,
#: deactivation DEACTIVATED, destruction DESTROYED (from PRE-ACTIVE or DEACTIVATED);
#: a CORRUPTED key can only be destroyed.  (Inferred from CryptoLib's states; the
#: 355.1-B-1 state diagram itself was not read.)
KEY_TRANSITIONS: Final[Mapping[KeyState, frozenset[KeyState]]] = {
    KeyState.PREACTIVE: frozenset({KeyState.ACTIVE, KeyState.DESTROYED, KeyState.CORRUPTED}),
    KeyState.ACTIVE: frozenset({KeyState.DEACTIVATED, KeyState.CORRUPTED}),
    KeyState.DEACTIVATED: frozenset({KeyState.DESTROYED, KeyState.CORRUPTED}),
    KeyState.DESTROYED: frozenset(),
    KeyState.CORRUPTED: frozenset({KeyState.DESTROYED}),
}


def is_master_key_id(key_id: int) -> bool:
    """Master (key-encrypting) keys have ids below 128 (CryptoLib ``MKID_MAX``)."""
    return key_id < MASTER_KEY_ID_LIMIT


def _check_key_id(key_id: int) -> None:
    if not 0 <= key_id <= MAX_KEY_ID:
        raise LocalProtocolError(f"key id {key_id} outside 0..{MAX_KEY_ID}")


class KeyRing:
    """The keys of one end and their states; material stays private.

    A destroyed key's material is dropped.  ``repr`` lists ids and states only.
    """

    def __init__(self, keys: Iterable[tuple[int, KeyMaterial, KeyState]] = ()) -> None:
        self._material: dict[int, KeyMaterial | None] = {}
        self._state: dict[int, KeyState] = {}
        self._aead: dict[int, AESGCM] = {}
        for key_id, material, state in keys:
            self.add(key_id, material, state)

    def add(self, key_id: int, material: KeyMaterial, state: KeyState = KeyState.PREACTIVE) -> None:
        """Install a key (OTAR or key file)."""
        _check_key_id(key_id)
        if key_id in self._state:
            raise LocalProtocolError(
                f"key id {key_id} already installed ({self._state[key_id].name})"
            )
        if not isinstance(material, KeyMaterial):
            raise LocalProtocolError(f"key {key_id}: wrap the octets in KeyMaterial")
        self._material[key_id] = None if state == KeyState.DESTROYED else material
        self._state[key_id] = KeyState(state)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._state

    def ids(self) -> list[int]:
        return sorted(self._state)

    def state(self, key_id: int) -> KeyState:
        try:
            return self._state[key_id]
        except KeyError:
            raise LocalProtocolError(f"no key with id {key_id}") from None

    def transition(self, key_id: int, new_state: KeyState) -> None:
        """Move a key along :data:`KEY_TRANSITIONS`; :class:`InvalidKeyTransition` otherwise."""
        old = self.state(key_id)
        if new_state not in KEY_TRANSITIONS[old]:
            raise InvalidKeyTransition(
                f"key {key_id}: {old.name} -> {KeyState(new_state).name} is not a legal"
                f" transition ({_EP_BOOK} key management)"
            )
        self._state[key_id] = KeyState(new_state)
        if new_state in (KeyState.DESTROYED, KeyState.CORRUPTED):
            self._material[key_id] = None
            self._aead.pop(key_id, None)
        logger.info("key %d: %s -> %s", key_id, old.name, KeyState(new_state).name)

    def material(self, key_id: int) -> KeyMaterial | None:
        """The key (for the key file writer); None once destroyed."""
        self.state(key_id)
        return self._material[key_id]

    def _cipher(self, key_id: int) -> AESGCM:
        aead = self._aead.get(key_id)
        if aead is None:
            material = self._material.get(key_id)
            if material is None:
                raise LocalProtocolError(f"key {key_id} has no material")
            aead = self._aead[key_id] = AESGCM(material.secret_octets())
        return aead

    def __repr__(self) -> str:
        items = ", ".join(f"{k}:{s.name}" for k, s in sorted(self._state.items()))
        return f"KeyRing({items})"


# -- security association ----------------------------------------------------------------


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
            raise LocalProtocolError(f"SPI {self.spi} outside 0..{MAX_SPI} ({_clause('4.1.1.2')})")
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
                f" ({_clause('3.4.2.2.1')})"
            )
        if self.service_type == ServiceType.SA_ENCRYPTION:
            raise LocalProtocolError(
                f"SA {self.spi}: encryption without authentication is not offered"
                f" ({_clause('2.3.3')}); use SA_AUTHENTICATED_ENCRYPTION"
            )
        if self.service_type == ServiceType.SA_PLAINTEXT:
            if self.key_id is not None or self.iv_length or self.sn_length or self.mac_length:
                raise LocalProtocolError(
                    f"SA {self.spi}: SA_PLAINTEXT takes no key, IV, SN or MAC (key_id="
                    f"{self.key_id}, iv_length={self.iv_length}, sn_length={self.sn_length},"
                    f" mac_length={self.mac_length}) ({_clause('4.1.1.4.4')})"
                )
        else:
            if self.key_id is None:
                raise LocalProtocolError(f"SA {self.spi}: {self.service_type.name} needs a key_id")
            _check_key_id(self.key_id)
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
                f" 0..{MAX_PAD_LENGTH_LENGTH} ({_clause('4.1.1.5')})"
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
                f" frame header ({_clause('4.2.2.6')})"
            )
        return (
            frame_mask
            + b"\xff" * SPI_LENGTH
            + bytes(self.iv_length)  # IV never in the AAD, 4.2.2.6.2 h (as quoted)
            + b"\xff" * (self.sn_length + self.pad_length_length)
        )


# -- counters ----------------------------------------------------------------------------


class TxCounter:
    """IV / ARSN counter of a sending SA (or of a master key for OTAR).

    Values are handed out only inside a *reserved* range whose upper end the
    application has persisted first (``keystore.reserve``): plan, write durably, then
    confirm.  After a restart the counter resumes at the persisted mark, skipping what
    was left of the block, so no value is ever used twice under one key.
    """

    __slots__ = ("_next", "_reserved_until", "label", "limit")

    def __init__(self, label: str, *, limit: int, next_value: int = 1) -> None:
        if limit < 1:
            raise LocalProtocolError(f"counter {label}: limit {limit} < 1")
        if not 0 <= next_value <= limit + 1:
            raise LocalProtocolError(
                f"counter {label}: next value {next_value} outside 0..{limit + 1}"
            )
        self.label = label
        self.limit = limit
        self._next = next_value
        self._reserved_until = next_value  # exclusive; nothing reserved yet

    @classmethod
    def for_sa(cls, sa: SecurityAssociation, *, next_value: int = 1) -> TxCounter:
        if sa.service_type == ServiceType.SA_PLAINTEXT:
            raise LocalProtocolError(f"SA {sa.spi} is SA_PLAINTEXT and has no counter")
        return cls(counter_label(sa.spi), limit=sa.counter_limit, next_value=next_value)

    @property
    def next_value(self) -> int:
        return self._next

    @property
    def reserved_until(self) -> int:
        """First value not covered by the persisted reservation."""
        return self._reserved_until

    @property
    def remaining_reserved(self) -> int:
        return self._reserved_until - self._next

    def plan_reservation(self, block: int) -> int:
        """The mark to persist before the next ``block`` values may be used."""
        if block < 1:
            raise LocalProtocolError(f"counter {self.label}: block {block} < 1")
        if self._next > self.limit:
            raise CounterExhausted(
                f"counter {self.label} reached its limit {self.limit}: rekey, nothing sent"
            )
        return min(self._next + block, self.limit + 1)

    def advance_to(self, value: int) -> None:
        """Skip every value below ``value``: another holder of the same key (a second
        process on the same counter file) may have reserved them.

        Values inside this counter's own confirmed reservation stay its own (they were
        persisted before anyone else could reserve past them), so ``value`` at or below
        :attr:`reserved_until` changes nothing.  Above it, the counter restarts at
        ``value`` with nothing reserved; a value of ``limit + 1`` exhausts it.
        """
        if not 0 <= value <= self.limit + 1:
            raise LocalProtocolError(
                f"counter {self.label}: cannot advance to {value}, outside 0..{self.limit + 1}"
            )
        if value > self._reserved_until:
            self._next = self._reserved_until = value

    def confirm_reservation(self, mark: int) -> None:
        """Call once ``mark`` is durably stored."""
        if not self._reserved_until <= mark <= self.limit + 1:
            raise LocalProtocolError(
                f"counter {self.label}: mark {mark} outside"
                f" {self._reserved_until}..{self.limit + 1}"
            )
        self._reserved_until = mark

    def take(self) -> int:
        """The next value; raises before a wrap or outside the persisted reservation."""
        if self._next > self.limit:
            raise CounterExhausted(
                f"counter {self.label} reached its limit {self.limit}: rekey, nothing sent"
            )
        if self._next >= self._reserved_until:
            raise CounterNotReserved(
                f"counter {self.label}: value {self._next} not reserved (reserved until"
                f" {self._reserved_until}); persist a new block first"
            )
        value = self._next
        self._next += 1
        return value

    def __repr__(self) -> str:
        return (
            f"TxCounter({self.label!r}, next={self._next}, reserved_until={self._reserved_until})"
        )


def counter_label(spi: int) -> str:
    """Name of an SA's sending counter in the counter file."""
    return f"spi-{spi}"


def master_counter_label(key_id: int) -> str:
    """Name of a master key's OTAR IV counter in the counter file."""
    return f"mkid-{key_id}"


class ReplayWindow:
    """Anti-replay state of one receiving SA: highest ARSN accepted and a bitmap.

    A value is accepted when it is above the highest seen (up to ``max_jump`` ahead
    when set), or not yet seen and less than ``window`` behind it.  Check first, commit
    only once the whole frame passed.
    """

    __slots__ = ("_seen", "highest", "max_jump", "window")

    def __init__(
        self, window: int, *, highest: int | None = None, max_jump: int | None = None
    ) -> None:
        self.window = window
        self.max_jump = max_jump
        self.highest = highest
        self._seen = 1 if highest is not None else 0  # bit i: highest - i seen

    def check(self, value: int, clause: str) -> None:
        if self.highest is None:
            return
        if value > self.highest:
            if self.max_jump is not None and value - self.highest > self.max_jump:
                raise ReplayRejected(
                    "too-far-ahead",
                    clause,
                    f"ARSN {value} is {value - self.highest} ahead of {self.highest},"
                    f" limit {self.max_jump}",
                )
            return
        behind = self.highest - value
        if behind >= self.window:
            raise ReplayRejected(
                "outside-window",
                clause,
                f"ARSN {value} is {behind} behind {self.highest}, window {self.window}",
            )
        if self._seen >> behind & 1:
            raise ReplayRejected("replay", clause, f"ARSN {value} already accepted")

    def commit(self, value: int) -> None:
        if self.highest is None:
            self.highest, self._seen = value, 1
        elif value > self.highest:
            shift = value - self.highest
            self._seen = ((self._seen << shift) | 1) & ((1 << self.window) - 1)
            self.highest = value
        else:
            self._seen |= 1 << (self.highest - value)

    def __repr__(self) -> str:
        return f"ReplayWindow(highest={self.highest}, window={self.window})"


# -- SA table ----------------------------------------------------------------------------


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
            raise UnknownSpi("unknown-spi", _clause("4.2.4"), f"SPI {spi} on {link.name} VC {vcid}")
        if sa.link != link:
            raise SaNotOperational(
                "sa-wrong-link", _clause("4.2.4"), f"SPI {spi} is a {sa.link.name} SA"
            )
        if vcid not in sa.vcids:
            raise SaNotOperational(
                "sa-wrong-vc", _clause("4.2.2.2"), f"SPI {spi} does not apply to VC {vcid}"
            )
        if spi in self._retired:
            raise SaNotOperational(
                "sa-retired", _clause("4.2.4"), f"SPI {spi} was replaced by a newer SA"
            )
        if sa.key_id is not None and (
            sa.key_id not in self.keys or self.keys.state(sa.key_id) != KeyState.ACTIVE
        ):
            state = self.keys.state(sa.key_id).name if sa.key_id in self.keys else "absent"
            raise SaNotOperational(
                "key-not-active", _EP_BOOK, f"SPI {spi}: key {sa.key_id} is {state}"
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


# -- cipher suite (AES-256-GCM baseline) ------------------------------------------------------


def _seal(aead: AESGCM, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    sealed = aead.encrypt(iv, plaintext, aad)
    return sealed[:-GCM_MAC_LENGTH], sealed[-GCM_MAC_LENGTH:]


def _open(aead: AESGCM, iv: bytes, ciphertext: bytes, mac: bytes, aad: bytes) -> bytes:
    """Plaintext, or :class:`cryptography.exceptions.InvalidTag`."""
    return aead.decrypt(iv, ciphertext + mac, aad)


def aead_seal(key: KeyMaterial, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """The baseline suite as protect uses it: (ciphertext, 16-octet MAC).

    Authentication only (GMAC) is ``aead_seal(key, iv, b"", aad + data)``.
    """
    if len(iv) != GCM_IV_LENGTH:
        raise LocalProtocolError(f"IV of {len(iv)} octets, AES-GCM here takes {GCM_IV_LENGTH}")
    return _seal(AESGCM(key.secret_octets()), iv, plaintext, aad)


def aead_open(key: KeyMaterial, iv: bytes, ciphertext: bytes, mac: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`aead_seal`; :class:`MacMismatch` when the MAC does not verify."""
    if len(iv) != GCM_IV_LENGTH or len(mac) != GCM_MAC_LENGTH:
        raise LocalProtocolError(f"IV of {len(iv)} octets or MAC of {len(mac)} octets")
    try:
        return _open(AESGCM(key.secret_octets()), iv, ciphertext, mac, aad)
    except InvalidTag:
        raise MacMismatch("mac-mismatch", _clause("4.2.4"), "AES-GCM tag") from None


# -- apply / process security --------------------------------------------------------------


def _security_header(sa: SecurityAssociation, value: int) -> bytes:
    parts = [sa.spi.to_bytes(SPI_LENGTH, "big")]
    if sa.iv_length:
        parts.append(value.to_bytes(sa.iv_length, "big"))
    if sa.sn_length:
        parts.append((value & ((1 << (8 * sa.sn_length)) - 1)).to_bytes(sa.sn_length, "big"))
    parts.append(bytes(sa.pad_length_length))  # GCM never pads: Pad Length 0
    return b"".join(parts)


def _mask(octets: bytes, mask: bytes) -> bytes:
    n = len(octets)
    return (int.from_bytes(octets, "big") & int.from_bytes(mask, "big")).to_bytes(n, "big")


def _apply_security(
    sa: SecurityAssociation,
    keys: KeyRing,
    counter: TxCounter | None,
    header: bytes,
    plaintext: bytes,
    *,
    segment_header: bool = False,
) -> bytes:
    """ApplySecurity (355.0-B-2 4.2.3): Security Header | data | Trailer for one frame."""
    if sa.service_type == ServiceType.SA_PLAINTEXT:
        return _security_header(sa, 0) + plaintext
    if sa.key_id is None:  # unreachable: SecurityAssociation checks it
        raise LocalProtocolError(f"SA {sa.spi} has no key")
    if keys.state(sa.key_id) != KeyState.ACTIVE:
        raise InvalidState(
            f"SA {sa.spi}: key {sa.key_id} is {keys.state(sa.key_id).name}, only an ACTIVE key"
            f" protects frames ({_EP_BOOK})"
        )
    if counter is None or counter.label != counter_label(sa.spi):
        raise LocalProtocolError(
            f"SA {sa.spi} needs its own counter {counter_label(sa.spi)!r}, got {counter!r}"
        )
    mask = sa.header_mask(len(header), segment_header=segment_header)
    aead = keys._cipher(sa.key_id)
    value = counter.take()
    sec_header = _security_header(sa, value)
    iv = value.to_bytes(sa.iv_length, "big")
    aad = _mask(header + sec_header, mask)
    if sa.service_type == ServiceType.SA_AUTHENTICATED_ENCRYPTION:
        ciphertext, mac = _seal(aead, iv, plaintext, aad)
        return sec_header + ciphertext + mac
    # Authentication only: GMAC over the masked headers and the clear data (4.2.3.2.2.2).
    _, mac = _seal(aead, iv, b"", aad + plaintext)
    return sec_header + plaintext + mac


def _process_security(
    table: SaTable,
    link: Link,
    vcid: int,
    header: bytes,
    protected: bytes,
    *,
    segment_header: bool = False,
) -> tuple[SecurityAssociation, bytes, int | None]:
    """ProcessSecurity (355.0-B-2 4.2.4) up to, not including, the commit."""
    if len(protected) < SPI_LENGTH:
        raise TruncatedFrame(
            "truncated", _clause("4.1.1.2"), f"{len(protected)} octets, the SPI needs {SPI_LENGTH}"
        )
    spi = int.from_bytes(protected[:SPI_LENGTH], "big")
    sa = table._lookup(spi, link, vcid)
    n_header = sa.header_length
    if len(protected) < n_header + sa.trailer_length + 1:
        raise TruncatedFrame(
            "truncated",
            _clause("4.1"),
            f"{len(protected)} octets < {n_header}-octet Security Header + 1 data octet +"
            f" {sa.trailer_length}-octet MAC (SPI {spi})",
        )
    sec_header = protected[:n_header]
    pad_at = SPI_LENGTH + sa.iv_length + sa.sn_length
    if sa.service_type == ServiceType.SA_PLAINTEXT:
        data = protected[n_header:]
        arsn = None
    else:
        if sa.key_id is None:  # unreachable: SecurityAssociation checks it
            raise LocalProtocolError(f"SA {sa.spi} has no key")
        iv = bytes(sec_header[SPI_LENGTH : SPI_LENGTH + sa.iv_length])
        aad = _mask(header + sec_header, sa.header_mask(len(header), segment_header=segment_header))
        body = bytes(protected[n_header : -sa.mac_length])
        mac = bytes(protected[-sa.mac_length :])
        aead = table.keys._cipher(sa.key_id)
        try:
            if sa.service_type == ServiceType.SA_AUTHENTICATED_ENCRYPTION:
                data = _open(aead, iv, body, mac, aad)
            else:
                data = body
                _open(aead, iv, b"", mac, aad + data)
        except InvalidTag:
            raise MacMismatch(
                "mac-mismatch", _clause("4.2.4"), f"SPI {spi}, {len(protected)}-octet field"
            ) from None
        if sa.sn_length:
            arsn = int.from_bytes(sec_header[SPI_LENGTH + sa.iv_length : pad_at], "big")
        else:
            arsn = int.from_bytes(iv, "big")
        table._windows[spi].check(arsn, _clause("4.2.4"))
    pad = int.from_bytes(sec_header[pad_at:n_header], "big") if sa.pad_length_length else 0
    if pad:
        raise BadPadLength(
            "bad-pad-length", _clause("4.1.1.5"), f"Pad Length {pad} under AES-GCM (SPI {spi})"
        )
    return sa, bytes(data), arsn


# -- TC ----------------------------------------------------------------------------------


def is_plaintext_control(frame: TcFrame) -> bool:
    """True for a COP-1 Type-BC frame (Unlock, Set V(R)), which may travel in the clear."""
    return frame.control_command == ControlCommandFlag.TYPE_C


def tc_data_capacity(config: TcVcConfig, sa: SecurityAssociation) -> int:
    """User-data octets one protected TC frame carries on ``config``'s VC."""
    return config.max_user_data_length - sa.overhead


def _tc_header(frame: TcFrame, data_length: int) -> bytes:
    """The header octets as transmitted, for a data field of ``data_length`` octets."""
    n = TC_PRIMARY_HEADER_LENGTH + (SEGMENT_HEADER_LENGTH if frame.segment_header else 0)
    draft = frame if len(frame.data) == data_length else replace(frame, data=bytes(data_length))
    return draft.to_bytes()[:n]


def protect_tc(
    frame: TcFrame,
    *,
    sa: SecurityAssociation,
    keys: KeyRing,
    counter: TxCounter | None,
    config: TcVcConfig | None = None,
) -> TcFrame:
    """The frame with its data field replaced by Security Header | data | MAC.

    Protect every transmission, retransmissions included (see the report): a FOP-1
    retransmission re-sent with an old ARSN would be refused as a replay.
    """
    if is_plaintext_control(frame):
        raise LocalProtocolError(
            f"Type-BC frame on VC {frame.vcid}: COP-1 control frames stay in the clear"
            " (check is_plaintext_control first)"
        )
    if sa.link != Link.TC or frame.vcid not in sa.vcids:
        raise LocalProtocolError(
            f"SA {sa.spi} ({sa.link.name} VCs {sorted(sa.vcids)}) does not apply to TC VC"
            f" {frame.vcid} ({_clause('4.2.2.2')})"
        )
    protected_length = len(frame.data) + sa.overhead
    if config is not None and protected_length > config.max_user_data_length:
        raise LocalProtocolError(
            f"{len(frame.data)} octets + {sa.overhead} SDLS overhead exceed the"
            f" {config.max_user_data_length} octets of VC {frame.vcid}; fill at most"
            f" {tc_data_capacity(config, sa)}"
        )
    header = _tc_header(frame, protected_length)
    field_ = _apply_security(
        sa, keys, counter, header, frame.data, segment_header=frame.segment_header is not None
    )
    out = replace(frame, data=field_)
    logger.debug("> TC VC %d SPI %d: %d octets protected", frame.vcid, sa.spi, len(frame.data))
    return out


def unprotect_tc(frame: TcFrame, table: SaTable) -> TcFrame:
    """The plaintext frame, or a :class:`SecurityError`; nothing partial ever returned."""
    if is_plaintext_control(frame):
        if table.plaintext_control_frames:
            return frame
        raise SaNotOperational(
            "plaintext-refused", _clause("4.2.4"), f"Type-BC frame on VC {frame.vcid}"
        )
    header = _tc_header(frame, len(frame.data))
    sa, data, arsn = _process_security(
        table,
        Link.TC,
        frame.vcid,
        header,
        frame.data,
        segment_header=frame.segment_header is not None,
    )
    out = replace(frame, data=data)
    table._accept(sa, arsn)
    logger.debug("< TC VC %d SPI %d: %d octets verified", frame.vcid, sa.spi, len(data))
    return out


# -- TM ----------------------------------------------------------------------------------


def tm_data_capacity(config: TmChannelConfig, sa: SecurityAssociation) -> int:
    """Octets of plaintext data field one protected TM frame carries (fill exactly this)."""
    return config.data_field_length - sa.overhead


def _tm_header_length(frame: TmFrame) -> int:
    return TM_PRIMARY_HEADER_LENGTH + (
        len(frame.secondary_header) + 1 if frame.secondary_header else 0
    )


def protect_tm(
    frame: TmFrame,
    *,
    sa: SecurityAssociation,
    keys: KeyRing,
    counter: TxCounter | None,
    config: TmChannelConfig,
) -> TmFrame:
    """The frame whose data field (``tm_data_capacity`` octets) is now protected."""
    if sa.link != Link.TM or frame.vcid not in sa.vcids:
        raise LocalProtocolError(
            f"SA {sa.spi} ({sa.link.name} VCs {sorted(sa.vcids)}) does not apply to TM VC"
            f" {frame.vcid} ({_clause('4.2.2.2')})"
        )
    capacity = tm_data_capacity(config, sa)
    if len(frame.data) != capacity:
        raise LocalProtocolError(
            f"TM data field of {len(frame.data)} octets, SA {sa.spi} on a"
            f" {config.frame_length}-octet frame needs exactly {capacity}"
        )
    header = frame.to_bytes()[: _tm_header_length(frame)]
    field_ = _apply_security(sa, keys, counter, header, frame.data)
    return replace(frame, data=field_)


def unprotect_tm(frame: TmFrame, table: SaTable) -> TmFrame:
    """The plaintext frame, or a :class:`SecurityError` / :class:`DecodeError`."""
    header = frame.to_bytes()[: _tm_header_length(frame)]
    sa, data, arsn = _process_security(table, Link.TM, frame.vcid, header, frame.data)
    fhp = frame.first_header_pointer
    if not frame.sync_flag and fhp not in (FHP_NO_PACKET_START, FHP_IDLE_ONLY) and fhp >= len(data):
        raise DecodeError(
            Layer.TM_FRAME,
            "bad-first-header-pointer",
            "CCSDS 132.0-B-3 4.1.2.7.6.3",
            f"FHP {fhp} beyond the {len(data)}-octet plaintext data field",
        )
    out = replace(frame, data=data)
    table._accept(sa, arsn)
    return out


# -- one end of a protected link -----------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class LinkSecurity:
    """SDLS at one end of a link: the SA it sends under and the SAs it accepts.

    ``reserve`` is called with the sending counter before every protect; the
    application persists a block of IVs there (``keystore.CounterStore.ensure``) so
    that a restart never reuses one.  The endpoints call :meth:`protect_tc` /
    :meth:`protect_tm` on every transmission (FOP-1 retransmissions included) and
    :meth:`unprotect_tc` / :meth:`unprotect_tm` on every received frame.
    """

    table: SaTable
    send_spi: int
    counter: TxCounter
    reserve: Callable[[TxCounter], None] | None = None

    def __post_init__(self) -> None:
        if self.send_spi not in self.table:
            raise LocalProtocolError(f"send SPI {self.send_spi} is not in the SA table")

    @property
    def send_sa(self) -> SecurityAssociation:
        return self.table[self.send_spi]

    @property
    def overhead(self) -> int:
        """Octets the send SA adds to each frame (security header and trailer)."""
        return self.send_sa.overhead

    def switch_send(self, spi: int, counter: TxCounter) -> None:
        """Send under SA ``spi`` from now on, with its own IV ``counter`` (a rekey).

        The new SA must serve the same link and have the same overhead, so the frame
        layout the endpoints sized their channels for does not change; its key must be
        ACTIVE.  Frames protected before the switch keep their old SPI.
        """
        new, old = self.table[spi], self.send_sa
        if new.link != old.link or new.overhead != old.overhead:
            raise LocalProtocolError(
                f"SA {spi} ({new.link.name}, {new.overhead} octets) cannot replace send SA"
                f" {old.spi} ({old.link.name}, {old.overhead} octets)"
            )
        if new.key_id is not None and (
            new.key_id not in self.table.keys
            or self.table.keys.state(new.key_id) != KeyState.ACTIVE
        ):
            raise InvalidState(f"SA {spi}: key {new.key_id} is not ACTIVE")
        if counter.label != counter_label(spi):
            raise LocalProtocolError(
                f"SA {spi} needs counter {counter_label(spi)!r}, got {counter.label!r}"
            )
        logger.info("> send SA %d -> %d", old.spi, spi)
        self.send_spi, self.counter = spi, counter

    def _reserve(self) -> None:
        if self.reserve is not None:
            self.reserve(self.counter)

    def protect_tc(self, frame: TcFrame, config: TcVcConfig) -> TcFrame:
        """``frame`` protected, or itself when it is a COP-1 control frame."""
        if is_plaintext_control(frame):
            return frame
        self._reserve()
        return protect_tc(
            frame, sa=self.send_sa, keys=self.table.keys, counter=self.counter, config=config
        )

    def protect_tm(self, frame: TmFrame, config: TmChannelConfig) -> TmFrame:
        self._reserve()
        return protect_tm(
            frame, sa=self.send_sa, keys=self.table.keys, counter=self.counter, config=config
        )

    def unprotect_tc(self, frame: TcFrame) -> TcFrame:
        return unprotect_tc(frame, self.table)

    def unprotect_tm(self, frame: TmFrame) -> TmFrame:
        return unprotect_tm(frame, self.table)


# -- key management PDUs (355.1-B-1, in spirit) -----------------------------------------------
#
# Every PDU is a TLV (355.1-B-1 5.3; layout as CryptoLib SDLS_TLV_Hdr_t):
#
#   bit 0      1       2-3            4-7             16 bits
#  +------+-------+---------------+--------------+----------------------+--------
#  | type | user  | service group | procedure id | length of Value (bits)| Value
#  |  0=cmd| flag |  00 = key mgmt|  1 OTAR 2 act 3 deact                 |
#  +------+-------+---------------+--------------+----------------------+--------
#
# OTAR Value: Master Key ID (2) | IV (12) | encrypted [Key ID (2) | Key (32)]... | MAC (16)
#   (CryptoLib SDLS_OTAR_t).  AES-256-GCM under the master key; AAD = TLV header + MKID.
# Activation / Deactivation Value: Key ID (2) ...

_TLV_HEADER: Final = struct.Struct(">BH")
PDU_TYPE_COMMAND: Final = 0  # CryptoLib PDU_TYPE_COMMAND
SG_KEY_MGMT: Final = 0b00  # CryptoLib SG_KEY_MGMT
PID_OTAR: Final = 0x1  # CryptoLib PID_OTAR
PID_KEY_ACTIVATION: Final = 0x2  # CryptoLib PID_KEY_ACTIVATION
PID_KEY_DEACTIVATION: Final = 0x3  # CryptoLib PID_KEY_DEACTIVATION
_KEY_ID: Final = struct.Struct(">H")
_KEY_BLOCK_LENGTH: Final = _KEY_ID.size + KEY_LENGTH


def _tag(pid: int) -> int:
    return PDU_TYPE_COMMAND << 7 | 0 << 6 | SG_KEY_MGMT << 4 | pid


def _tlv(pid: int, value: bytes) -> bytes:
    return _TLV_HEADER.pack(_tag(pid), 8 * len(value)) + value


@dataclass(frozen=True, slots=True)
class OtarPdu:
    """Over-The-Air Rekeying command: new keys encrypted under a master key."""

    master_key_id: int
    iv: bytes
    #: Ciphertext of the concatenated key blocks (Key ID + Key each).
    encrypted_keys: bytes
    mac: bytes = field(repr=False)

    def _prefix(self) -> bytes:
        n = _KEY_ID.size + GCM_IV_LENGTH + len(self.encrypted_keys) + GCM_MAC_LENGTH
        return _TLV_HEADER.pack(_tag(PID_OTAR), 8 * n) + _KEY_ID.pack(self.master_key_id)

    def to_bytes(self) -> bytes:
        return self._prefix() + self.iv + self.encrypted_keys + self.mac

    @property
    def key_count(self) -> int:
        return len(self.encrypted_keys) // _KEY_BLOCK_LENGTH


@dataclass(frozen=True, slots=True)
class KeyActivationPdu:
    key_ids: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return _tlv(PID_KEY_ACTIVATION, b"".join(_KEY_ID.pack(k) for k in self.key_ids))


@dataclass(frozen=True, slots=True)
class KeyDeactivationPdu:
    key_ids: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return _tlv(PID_KEY_DEACTIVATION, b"".join(_KEY_ID.pack(k) for k in self.key_ids))


EpPdu = OtarPdu | KeyActivationPdu | KeyDeactivationPdu


def _ep_error(reason: str, detail: str) -> KeyManagementError:
    return KeyManagementError(reason, f"{_EP_BOOK} key management", detail)


def build_otar(
    keys: KeyRing,
    *,
    master_key_id: int,
    counter: TxCounter,
    new_keys: Sequence[tuple[int, KeyMaterial]],
) -> OtarPdu:
    """An OTAR PDU carrying ``new_keys`` under ``master_key_id`` (sending side)."""
    if not is_master_key_id(master_key_id):
        raise LocalProtocolError(
            f"key {master_key_id} is not a master key (< {MASTER_KEY_ID_LIMIT})"
        )
    if keys.state(master_key_id) != KeyState.ACTIVE:
        raise InvalidState(f"master key {master_key_id} is {keys.state(master_key_id).name}")
    if counter.label != master_counter_label(master_key_id):
        raise LocalProtocolError(
            f"OTAR under key {master_key_id} needs counter {master_counter_label(master_key_id)!r},"
            f" got {counter.label!r}"
        )
    if not new_keys:
        raise LocalProtocolError("OTAR with no keys")
    blocks = []
    for key_id, material in new_keys:
        _check_key_id(key_id)
        if is_master_key_id(key_id):
            raise LocalProtocolError(f"OTAR cannot carry master key id {key_id}")
        blocks.append(_KEY_ID.pack(key_id) + material.secret_octets())
    if (
        8 * (_KEY_ID.size + GCM_IV_LENGTH + len(blocks) * _KEY_BLOCK_LENGTH + GCM_MAC_LENGTH)
        > 0xFFFF
    ):
        raise LocalProtocolError(f"{len(blocks)} keys do not fit one OTAR PDU")
    iv = counter.take().to_bytes(GCM_IV_LENGTH, "big")
    draft = OtarPdu(
        master_key_id, iv, bytes(len(blocks) * _KEY_BLOCK_LENGTH), bytes(GCM_MAC_LENGTH)
    )
    sealed = keys._cipher(master_key_id).encrypt(iv, b"".join(blocks), draft._prefix())
    return OtarPdu(master_key_id, iv, sealed[:-GCM_MAC_LENGTH], sealed[-GCM_MAC_LENGTH:])


def decode_ep_pdu(data: bytes) -> EpPdu:
    """Decode one key-management PDU; :class:`KeyManagementError` ``bad-pdu`` otherwise."""
    if len(data) < _TLV_HEADER.size:
        raise _ep_error("bad-pdu", f"{len(data)} octets, the TLV header needs {_TLV_HEADER.size}")
    tag, bits = _TLV_HEADER.unpack_from(data)
    value = bytes(data[_TLV_HEADER.size :])
    if bits % 8 or bits // 8 != len(value):
        raise _ep_error("bad-pdu", f"length field {bits} bits, {len(value)} octets of value")
    if tag >> 7 != PDU_TYPE_COMMAND or tag >> 4 & 0b11 != SG_KEY_MGMT:
        raise _ep_error("bad-pdu", f"tag 0x{tag:02X} is not a key management command")
    pid = tag & 0x0F
    if pid == PID_OTAR:
        fixed = _KEY_ID.size + GCM_IV_LENGTH + GCM_MAC_LENGTH
        blocks = len(value) - fixed
        if blocks <= 0 or blocks % _KEY_BLOCK_LENGTH:
            raise _ep_error("bad-pdu", f"OTAR value of {len(value)} octets")
        (mkid,) = _KEY_ID.unpack_from(value)
        iv = value[_KEY_ID.size : _KEY_ID.size + GCM_IV_LENGTH]
        return OtarPdu(
            mkid, iv, value[_KEY_ID.size + GCM_IV_LENGTH : -GCM_MAC_LENGTH], value[-GCM_MAC_LENGTH:]
        )
    if pid in (PID_KEY_ACTIVATION, PID_KEY_DEACTIVATION):
        if not value or len(value) % _KEY_ID.size:
            raise _ep_error("bad-pdu", f"key list of {len(value)} octets")
        ids = tuple(k for (k,) in _KEY_ID.iter_unpack(value))
        return KeyActivationPdu(ids) if pid == PID_KEY_ACTIVATION else KeyDeactivationPdu(ids)
    raise _ep_error("bad-pdu", f"procedure id {pid} not supported")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysChanged:
    """Outcome of one applied PDU."""

    procedure: str
    key_ids: tuple[int, ...]
    new_state: KeyState


class KeyManager:
    """Receiving side of key management: applies OTAR, activation, deactivation.

    Sans-I/O: the caller passes the PDU octets that arrived (over an SDLS-protected
    channel: activation and deactivation carry no MAC of their own) and persists the
    key ring afterwards.  A PDU applies whole or not at all.
    """

    def __init__(self, keys: KeyRing, *, otar_highest: Mapping[int, int] | None = None) -> None:
        self.keys = keys
        self._otar = {
            mkid: ReplayWindow(1, highest=value) for mkid, value in (otar_highest or {}).items()
        }

    def otar_state(self) -> dict[int, int]:
        """Highest OTAR IV accepted per master key, for the counter file."""
        return {k: w.highest for k, w in self._otar.items() if w.highest is not None}

    def handle_pdu(self, data: bytes) -> KeysChanged:
        pdu = decode_ep_pdu(data)
        if isinstance(pdu, OtarPdu):
            return self._otar_pdu(pdu)
        new = KeyState.ACTIVE if isinstance(pdu, KeyActivationPdu) else KeyState.DEACTIVATED
        for key_id in pdu.key_ids:
            if key_id not in self.keys:
                raise _ep_error("unknown-key", f"key {key_id}")
            old = self.keys.state(key_id)
            if new not in KEY_TRANSITIONS[old]:
                raise _ep_error("illegal-key-transition", f"key {key_id}: {old.name} -> {new.name}")
        if len(set(pdu.key_ids)) != len(pdu.key_ids):
            raise _ep_error("bad-pdu", f"key ids {pdu.key_ids} repeated")
        for key_id in pdu.key_ids:
            self.keys.transition(key_id, new)
        name = "activation" if new == KeyState.ACTIVE else "deactivation"
        return KeysChanged(procedure=name, key_ids=pdu.key_ids, new_state=new)

    def _otar_pdu(self, pdu: OtarPdu) -> KeysChanged:
        mkid = pdu.master_key_id
        if not is_master_key_id(mkid) or mkid not in self.keys:
            raise _ep_error("unknown-master-key", f"master key id {mkid}")
        if self.keys.state(mkid) != KeyState.ACTIVE:
            raise _ep_error("key-not-active", f"master key {mkid} is {self.keys.state(mkid).name}")
        try:
            blocks = self.keys._cipher(mkid).decrypt(
                pdu.iv, pdu.encrypted_keys + pdu.mac, pdu._prefix()
            )
        except InvalidTag:
            raise _ep_error("mac-mismatch", f"OTAR under master key {mkid}") from None
        window = self._otar.setdefault(mkid, ReplayWindow(1))
        iv_value = int.from_bytes(pdu.iv, "big")
        try:
            window.check(iv_value, f"{_EP_BOOK} OTAR")
        except ReplayRejected as exc:
            raise _ep_error("replay", exc.detail) from None
        new: list[tuple[int, KeyMaterial]] = []
        for offset in range(0, len(blocks), _KEY_BLOCK_LENGTH):
            (key_id,) = _KEY_ID.unpack_from(blocks, offset)
            if key_id in self.keys or is_master_key_id(key_id) or key_id in dict(new):
                raise _ep_error("key-id-in-use", f"key id {key_id} cannot be installed")
            start = offset + _KEY_ID.size
            new.append((key_id, KeyMaterial(blocks[start : start + KEY_LENGTH])))
        for key_id, material in new:
            self.keys.add(key_id, material, KeyState.PREACTIVE)
        window.commit(iv_value)
        ids = tuple(k for k, _ in new)
        logger.info("< OTAR under master key %d installed keys %s", mkid, ids)
        return KeysChanged(procedure="otar", key_ids=ids, new_state=KeyState.PREACTIVE)
