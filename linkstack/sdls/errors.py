"""The errors of SDLS (CCSDS 355.0-B-2, 355.1-B-1), one tree.

* :class:`SecurityError` and its subclasses: received bytes that fail a check of
  ProcessSecurity (355.0-B-2 4.2.4: frame length 4.1, SPI 4.1.1.2, SA applicability
  4.2.2.2, MAC 4.1.2, Pad Length 4.1.1.5, anti-replay) or of key management
  (355.1-B-1); layer ``sdls``, nothing of the frame or PDU may be delivered;
* :class:`CounterNotReserved`, :class:`CounterExhausted`, :class:`InvalidKeyTransition`:
  the caller asked for what the IV counter or the 355.1-B-1 key life cycle forbids.

``BOOK``, ``EP_BOOK`` and :func:`clause` name the books in every ``clause`` attribute.
"""

from __future__ import annotations

from typing import Final

from linkstack.errors import InvalidState, Layer, RemoteProtocolError

BOOK: Final = "CCSDS 355.0-B-2"
EP_BOOK: Final = "CCSDS 355.1-B-1"


def clause(number: str) -> str:
    """``number`` as a clause of 355.0-B-2, for an error's ``clause``."""
    return f"{BOOK} {number}"


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
    """``sa-wrong-link``, ``sa-wrong-vc``, ``sa-retired``, ``key-not-active`` or
    ``plaintext-refused`` (a Type-BC frame where the SA table takes none in the clear)."""


class MacMismatch(SecurityError):
    """``mac-mismatch``: the MAC does not verify (forged, corrupted or wrong key)."""


class ReplayRejected(SecurityError):
    """``replay`` (seen before), ``outside-window`` (too old) or ``too-far-ahead``."""


class BadPadLength(SecurityError):
    """``bad-pad-length``: a non-zero Pad Length under a cipher that never pads."""


class KeyManagementError(SecurityError):
    """A 355.1-B-1 PDU was refused: ``bad-pdu``, ``unknown-master-key``,
    ``key-not-active``, ``mac-mismatch``, ``replay``, ``key-id-in-use``,
    ``illegal-key-transition``, ``unknown-key``; SA management: ``sa-management-off``,
    ``not-management-sa`` (Set / Read ARSN under a data SA), ``unknown-spi``."""


class CounterNotReserved(InvalidState):
    """The sending counter has no reserved value left: persist a new block first."""


class CounterExhausted(InvalidState):
    """The counter would wrap: nothing is sent; rekey (new key, new SA)."""


class InvalidKeyTransition(InvalidState):
    """A key state change the 355.1-B-1 life cycle does not allow."""
