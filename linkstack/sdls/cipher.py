"""The cryptographic suite of SDLS: the AES-256-GCM baseline, 96-bit IV, 128-bit MAC.

The algorithm that ApplySecurity and ProcessSecurity (CCSDS 355.0-B-2 4.2.3, 4.2.4)
run, for authenticated encryption and, with empty plaintext, for authentication only
(GMAC, 4.2.3.2.2.2); also the cipher of OTAR PDUs (355.1-B-1).  AES-GCM needs a unique
IV per key (NIST SP 800-38D 8.2.1): the counters that provide it are in
:mod:`linkstack.sdls.counters`.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from linkstack.errors import LocalProtocolError
from linkstack.sdls.errors import MacMismatch, clause
from linkstack.sdls.keys import KeyMaterial

GCM_IV_LENGTH: Final = 12  # 96-bit IV, AES-GCM baseline (Yamcs GCM_IV_LEN_BYTES; SP 800-38D)
GCM_MAC_LENGTH: Final = 16  # 128-bit MAC, AES-GCM baseline (Yamcs GCM_TAG_LEN_BITS)


def gcm_seal(aead: AESGCM, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, MAC) under the key ``aead`` was made with."""
    sealed = aead.encrypt(iv, plaintext, aad)
    return sealed[:-GCM_MAC_LENGTH], sealed[-GCM_MAC_LENGTH:]


def gcm_open(aead: AESGCM, iv: bytes, ciphertext: bytes, mac: bytes, aad: bytes) -> bytes:
    """Plaintext, or :class:`cryptography.exceptions.InvalidTag`."""
    return aead.decrypt(iv, ciphertext + mac, aad)


def gcm_seal_frame(
    aead: AESGCM, iv: bytes, plaintext: bytes, aad: bytes, mac_length: int
) -> tuple[bytes, bytes]:
    """(ciphertext, MAC truncated to ``mac_length`` octets, SP 800-38D 7.1 step 6).

    ``mac_length`` 0 is encryption only: GCM's counter-mode keystream, no MAC.
    """
    ciphertext, mac = gcm_seal(aead, iv, plaintext, aad)
    return ciphertext, mac[:mac_length]


def gcm_open_frame(
    key: bytes, aead: AESGCM, iv: bytes, ciphertext: bytes, *, mac: bytes, aad: bytes
) -> bytes:
    """Inverse of :func:`gcm_seal_frame`; :class:`InvalidTag` when the MAC fails.

    A 16-octet MAC takes the fast path; a truncated one is checked by the GCM mode
    with ``min_tag_length`` (SP 800-38D 7.2); no MAC decrypts only.
    """
    if len(mac) == GCM_MAC_LENGTH:
        return gcm_open(aead, iv, ciphertext, mac, aad)
    if not mac:
        decryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).decryptor()
        return decryptor.update(ciphertext)  # never finalized: there is no tag
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, mac, min_tag_length=len(mac))).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(ciphertext) + decryptor.finalize()


def aead_seal(key: KeyMaterial, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """The baseline suite as protect uses it: (ciphertext, 16-octet MAC).

    Authentication only (GMAC) is ``aead_seal(key, iv, b"", aad + data)``.
    """
    if len(iv) != GCM_IV_LENGTH:
        raise LocalProtocolError(f"IV of {len(iv)} octets, AES-GCM here takes {GCM_IV_LENGTH}")
    return gcm_seal(AESGCM(key.secret_octets()), iv, plaintext, aad)


def aead_open(key: KeyMaterial, iv: bytes, ciphertext: bytes, mac: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`aead_seal`; :class:`MacMismatch` when the MAC does not verify."""
    if len(iv) != GCM_IV_LENGTH or len(mac) != GCM_MAC_LENGTH:
        raise LocalProtocolError(f"IV of {len(iv)} octets or MAC of {len(mac)} octets")
    try:
        return gcm_open(AESGCM(key.secret_octets()), iv, ciphertext, mac, aad)
    except InvalidTag:
        raise MacMismatch("mac-mismatch", clause("4.2.4"), "AES-GCM tag") from None
