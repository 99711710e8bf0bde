"""Keys of one SDLS end: the key management of CCSDS 355.1-B-1.

* :class:`KeyMaterial`: 32 octets of AES-256 that never print;
* :class:`KeyState` and :data:`KEY_TRANSITIONS`: the key life cycle of 355.1-B-1
  (PRE-ACTIVE, ACTIVE, DEACTIVATED, DESTROYED, CORRUPTED; inferred from CryptoLib's
  states, see :data:`KEY_TRANSITIONS`);
* :class:`KeyRing`: the keys of one end, their states and their ciphers;
* master keys (ids below :data:`MASTER_KEY_ID_LIMIT`) encrypt OTAR PDUs only, session
  keys protect frames.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from linkstack.errors import LocalProtocolError
from linkstack.sdls.errors import EP_BOOK, InvalidKeyTransition

logger = logging.getLogger(__name__)

KEY_LENGTH: Final = 32  # AES-256 (CryptoLib AES256_GCM_KEYLEN)
MAX_KEY_ID: Final = 0xFFFF  # 2-octet key IDs (CryptoLib SDLS_KEYID_LEN)
MASTER_KEY_ID_LIMIT: Final = 128  # ids below are master keys (CryptoLib MKID_MAX)


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


def check_key_id(key_id: int) -> None:
    """Key IDs are two octets (CryptoLib ``SDLS_KEYID_LEN``)."""
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
        check_key_id(key_id)
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
                f" transition ({EP_BOOK} key management)"
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
