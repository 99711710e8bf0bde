"""Key management over the link, in the spirit of CCSDS 355.1-B-1 (PDUs as TLVs, 5.3).

* the PDUs: :class:`OtarPdu` (Over-The-Air Rekeying: new session keys encrypted under
  a master key), :class:`KeyActivationPdu`, :class:`KeyDeactivationPdu`; built with
  :func:`build_otar` and ``to_bytes()``, decoded with :func:`decode_ep_pdu`;
* the SA management PDUs :class:`SetArsnPdu`, :class:`ReadArsnPdu` and
  :class:`ArsnReplyPdu` (355.1-B-1 Set ARSN / Read ARSN): the way a sender that ran
  past the receiver's window (a long loss, COP-1 retransmissions) gets back in;
* :class:`KeyManager`: the receiving engine, which verifies an OTAR PDU (MAC, then its
  IV against a replay window per master key), installs the keys PRE-ACTIVE, and moves
  keys along the 355.1-B-1 life cycle (:data:`~linkstack.sdls.keys.KEY_TRANSITIONS`)
  on activation and deactivation.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag

from linkstack.errors import InvalidState, LocalProtocolError
from linkstack.sdls.associations import SaTable, ServiceType
from linkstack.sdls.cipher import GCM_IV_LENGTH, GCM_MAC_LENGTH
from linkstack.sdls.counters import TxCounter, master_counter_label
from linkstack.sdls.errors import EP_BOOK, KeyManagementError, ReplayRejected
from linkstack.sdls.keys import (
    KEY_LENGTH,
    KEY_TRANSITIONS,
    MASTER_KEY_ID_LIMIT,
    KeyMaterial,
    KeyRing,
    KeyState,
    check_key_id,
    is_master_key_id,
)
from linkstack.sdls.replay import ReplayWindow

logger = logging.getLogger(__name__)

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
PDU_TYPE_REPLY: Final = 1  # CryptoLib PDU_TYPE_REPLY
SG_SA_MGMT: Final = 0b01  # SA management service group, 355.1-B-1 (CryptoLib SG_SA_MGMT)
PID_SET_ARSN: Final = 0b1010  # Set ARSN, 355.1-B-1 (CryptoLib PID_SET_ARSN)
PID_READ_ARSN: Final = 0b0000  # Read ARSN, 355.1-B-1 (CryptoLib PID_READ_ARSN)
_SPI: Final = struct.Struct(">H")
_KEY_ID: Final = struct.Struct(">H")
_KEY_BLOCK_LENGTH: Final = _KEY_ID.size + KEY_LENGTH


def _tag(pid: int, *, group: int = SG_KEY_MGMT, pdu_type: int = PDU_TYPE_COMMAND) -> int:
    return pdu_type << 7 | 0 << 6 | group << 4 | pid


def _tlv(pid: int, value: bytes, *, group: int = SG_KEY_MGMT, pdu_type: int = 0) -> bytes:
    return _TLV_HEADER.pack(_tag(pid, group=group, pdu_type=pdu_type), 8 * len(value)) + value


# SA management Values (355.1-B-1; CryptoLib sa_setARSN / sa_readARSN):
#   Set ARSN:           SPI (2) | ARSN (1..16, the SA's ARSN field length)
#   Read ARSN:          SPI (2)
#   Read ARSN reply:    SPI (2) | ARSN (1..16)
_MAX_ARSN_OCTETS: Final = 16  # CryptoLib ARSN_SIZE / IV_SIZE


@dataclass(frozen=True, slots=True)
class SetArsnPdu:
    """Set ARSN: the receiver of SA ``spi`` takes ``arsn`` as the highest accepted."""

    spi: int
    arsn: int
    #: Octets of the ARSN field on the wire (the SA's :attr:`arsn_length`).
    arsn_length: int

    def __post_init__(self) -> None:
        if not 0 <= self.spi <= 0xFFFF or not 1 <= self.arsn_length <= _MAX_ARSN_OCTETS:
            raise LocalProtocolError(
                f"Set ARSN: SPI {self.spi} outside 0..65535 or ARSN length {self.arsn_length}"
                f" outside 1..{_MAX_ARSN_OCTETS}"
            )
        if not 0 <= self.arsn < 1 << (8 * self.arsn_length):
            raise LocalProtocolError(
                f"Set ARSN: ARSN {self.arsn} does not fit {self.arsn_length} octets"
            )

    def to_bytes(self) -> bytes:
        value = _SPI.pack(self.spi) + self.arsn.to_bytes(self.arsn_length, "big")
        return _tlv(PID_SET_ARSN, value, group=SG_SA_MGMT)


@dataclass(frozen=True, slots=True)
class ReadArsnPdu:
    """Read ARSN: asks for the highest ARSN the receiver of SA ``spi`` accepted."""

    spi: int

    def to_bytes(self) -> bytes:
        return _tlv(PID_READ_ARSN, _SPI.pack(self.spi), group=SG_SA_MGMT)


@dataclass(frozen=True, slots=True)
class ArsnReplyPdu:
    """Reply to Read ARSN: SA ``spi``'s highest accepted ARSN (0 before any)."""

    spi: int
    arsn: int
    arsn_length: int

    def to_bytes(self) -> bytes:
        value = _SPI.pack(self.spi) + self.arsn.to_bytes(self.arsn_length, "big")
        return _tlv(PID_READ_ARSN, value, group=SG_SA_MGMT, pdu_type=PDU_TYPE_REPLY)


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


EpPdu = OtarPdu | KeyActivationPdu | KeyDeactivationPdu | SetArsnPdu | ReadArsnPdu | ArsnReplyPdu


def _ep_error(reason: str, detail: str) -> KeyManagementError:
    return KeyManagementError(reason, f"{EP_BOOK} key management", detail)


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
        check_key_id(key_id)
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
    if tag >> 4 & 0b11 == SG_SA_MGMT:
        return _decode_sa_mgmt(tag, value)
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


def _decode_sa_mgmt(tag: int, value: bytes) -> EpPdu:
    """Set ARSN, Read ARSN and its reply (355.1-B-1 SA management)."""
    pid, reply = tag & 0x0F, tag >> 7
    if pid == PID_READ_ARSN and not reply:
        if len(value) != _SPI.size:
            raise _ep_error("bad-pdu", f"Read ARSN value of {len(value)} octets, needs 2")
        return ReadArsnPdu(_SPI.unpack(value)[0])
    if pid in (PID_SET_ARSN, PID_READ_ARSN):
        n = len(value) - _SPI.size
        if not 1 <= n <= _MAX_ARSN_OCTETS:
            raise _ep_error(
                "bad-pdu", f"ARSN of {n} octets (value of {len(value)}), 1..{_MAX_ARSN_OCTETS}"
            )
        (spi,) = _SPI.unpack_from(value)
        arsn = int.from_bytes(value[_SPI.size :], "big")
        if pid == PID_READ_ARSN:
            return ArsnReplyPdu(spi, arsn, n)
        if reply:
            raise _ep_error("bad-pdu", "Set ARSN has no reply")
        return SetArsnPdu(spi, arsn, n)
    raise _ep_error("bad-pdu", f"SA management procedure id {pid} not supported")


@dataclass(frozen=True, slots=True, kw_only=True)
class ArsnSet:
    """Outcome of Set ARSN: SA ``spi``'s window now starts above ``arsn`` (``moved``
    False: it already stood there or beyond, and the receiver never moves back)."""

    spi: int
    arsn: int
    moved: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ArsnRead:
    """Outcome of Read ARSN: the reply PDU to send back (``reply``, its octets)."""

    spi: int
    arsn: int
    reply: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ArsnReported:
    """A reply to Read ARSN came down: the receiver of SA ``spi`` (on board) had
    accepted ARSNs up to ``arsn`` (0: none yet) when it answered."""

    spi: int
    arsn: int


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

    def __init__(
        self,
        keys: KeyRing,
        *,
        otar_highest: Mapping[int, int] | None = None,
        table: SaTable | None = None,
    ) -> None:
        self.keys = keys
        #: The SA table Set ARSN and Read ARSN act on (None: SA management refused).
        self.table = table
        self._otar = {
            mkid: ReplayWindow(1, highest=value) for mkid, value in (otar_highest or {}).items()
        }

    def otar_state(self) -> dict[int, int]:
        """Highest OTAR IV accepted per master key, for the counter file."""
        return {k: w.highest for k, w in self._otar.items() if w.highest is not None}

    def handle_pdu(
        self, data: bytes, *, carried_by: Collection[int] = ()
    ) -> KeysChanged | ArsnSet | ArsnRead:
        """Apply one PDU.  ``carried_by``: the SPIs of the frames the PDU arrived in;
        Set ARSN and Read ARSN are applied only when every one is a ``management`` SA
        of :attr:`table` (else ``not-management-sa``): a data SA's key must not be able
        to move its own window, or anyone holding it could open the way to replays."""
        pdu = decode_ep_pdu(data)
        if isinstance(pdu, OtarPdu):
            return self._otar_pdu(pdu)
        if isinstance(pdu, SetArsnPdu | ReadArsnPdu):
            return self._sa_management(pdu, carried_by)
        if isinstance(pdu, ArsnReplyPdu):
            raise _ep_error("bad-pdu", f"a Read ARSN reply (SPI {pdu.spi}) is not a command")
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

    def _sa_management(
        self, pdu: SetArsnPdu | ReadArsnPdu, carried_by: Collection[int]
    ) -> ArsnSet | ArsnRead:
        """Set ARSN / Read ARSN on :attr:`table` (355.1-B-1 SA management), only under
        a management SA (see :meth:`handle_pdu`)."""
        if self.table is None:
            raise _ep_error("sa-management-off", "this end takes no SA management PDU")
        name = "Set ARSN" if isinstance(pdu, SetArsnPdu) else "Read ARSN"
        carriers = sorted(carried_by)
        if not carriers or not all(
            spi in self.table and self.table[spi].management for spi in carriers
        ):
            managers = sorted(sa.spi for sa in self.table if sa.management)
            raise _ep_error(
                "not-management-sa",
                f"{name} for SPI {pdu.spi} under SPIs {carriers}; only a management SA"
                f" carries SA management (here SPIs {managers})",
            )
        if pdu.spi not in self.table:
            raise _ep_error("unknown-spi", f"SPI {pdu.spi}")
        sa = self.table[pdu.spi]
        if sa.service_type == ServiceType.SA_PLAINTEXT:
            raise _ep_error("bad-pdu", f"SPI {pdu.spi} is SA_PLAINTEXT: no ARSN")
        if isinstance(pdu, ReadArsnPdu):
            arsn = self.table.highest_arsn(pdu.spi) or 0
            reply = ArsnReplyPdu(pdu.spi, arsn, sa.arsn_length).to_bytes()
            return ArsnRead(spi=pdu.spi, arsn=arsn, reply=reply)
        if pdu.arsn_length != sa.arsn_length:
            raise _ep_error(
                "bad-pdu",
                f"Set ARSN for SPI {pdu.spi}: {pdu.arsn_length}-octet ARSN, the SA's is"
                f" {sa.arsn_length}",
            )
        moved = self.table.set_arsn(pdu.spi, pdu.arsn)
        return ArsnSet(spi=pdu.spi, arsn=pdu.arsn, moved=moved)

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
            window.check(iv_value, f"{EP_BOOK} OTAR")
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
