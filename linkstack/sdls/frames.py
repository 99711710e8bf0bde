"""Protection of TC and TM frames (CCSDS 355.0-B-2 4.1, 4.2.3, 4.2.4), sans-I/O.

* ApplySecurity (4.2.3): :func:`protect_tc`, :func:`protect_tm`, sized by
  :func:`tc_data_capacity` and :func:`tm_data_capacity`;
* ProcessSecurity (4.2.4): :func:`unprotect_tc`, :func:`unprotect_tm`;
* :func:`is_plaintext_control`: COP-1 Type-BC frames, which may travel in the clear;
* :class:`LinkSecurity`: SDLS at one end of a link, the SA it sends under (with its
  IV counter and the rekey switch) and the SA table it accepts.

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
stay outside, so COP-1's CLCW and the CRC are never protected.  With the default
masks and an ABM over the frame header only, the IV octets are masked to zero in the
authenticated data (355.0-B-2 4.2.2.6.2 h as quoted by ravisuhag/astro; Yamcs
``StandardAuthMask`` does the same); an ABM over the whole AAD decides every bit itself,
as CryptoLib's does.  Authentication only (GMAC) authenticates the clear data after
the masked headers; encryption only (SA_ENCRYPTION) is GCM's keystream with no MAC; a
MAC shorter than 16 octets is the GCM tag truncated (NIST SP 800-38D 5.2.1.2).

Receiving, in this order (355.0-B-2 4.2.4): length, SPI known, SA applies to the VC and
is not retired, key active, MAC verified, Pad Length, anti-replay; only when every
check passed is the window advanced and the plaintext returned.  The anti-replay check
runs after the MAC (nasa/CryptoLib PR#78), so a forged frame never moves the window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag

from linkstack.errors import DecodeError, InvalidState, Layer, LocalProtocolError
from linkstack.sdls.associations import (
    SPI_LENGTH,
    ArsnSource,
    Link,
    SaTable,
    SecurityAssociation,
    ServiceType,
)
from linkstack.sdls.cipher import gcm_open_frame, gcm_seal_frame
from linkstack.sdls.counters import TxCounter, counter_label
from linkstack.sdls.errors import (
    EP_BOOK,
    BadPadLength,
    MacMismatch,
    SaNotOperational,
    TruncatedFrame,
    clause,
)
from linkstack.sdls.keys import KeyRing, KeyState
from linkstack.sdls.otar import SetArsnPdu
from linkstack.tc.frame import PRIMARY_HEADER_LENGTH as TC_PRIMARY_HEADER_LENGTH
from linkstack.tc.frame import SEGMENT_HEADER_LENGTH, ControlCommandFlag, TcFrame, TcVcConfig
from linkstack.tm.frame import FHP_IDLE_ONLY, FHP_NO_PACKET_START, TmChannelConfig, TmFrame
from linkstack.tm.frame import PRIMARY_HEADER_LENGTH as TM_PRIMARY_HEADER_LENGTH

logger = logging.getLogger(__name__)


# -- apply / process security --------------------------------------------------------------


def _security_header(sa: SecurityAssociation, value: int) -> bytes:
    """SPI | IV | Sequence Number | Pad Length for counter ``value`` (355.0-B-2 4.1.1)."""
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


def _seal(
    sa: SecurityAssociation, keys: KeyRing, iv: bytes, aad: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """(data field as sent, MAC) for the SA's service type (355.0-B-2 4.2.3.2)."""
    if sa.key_id is None:  # unreachable: SecurityAssociation checks it
        raise LocalProtocolError(f"SA {sa.spi} has no key")
    aead = keys._cipher(sa.key_id)
    if sa.service_type == ServiceType.SA_AUTHENTICATION:
        # Authentication only: GMAC over the masked headers and the clear data.
        _, mac = gcm_seal_frame(aead, iv, b"", aad + plaintext, sa.mac_length)
        return plaintext, mac
    if sa.service_type == ServiceType.SA_ENCRYPTION:
        ciphertext, _ = gcm_seal_frame(aead, iv, plaintext, b"", 0)
        return ciphertext, b""
    return gcm_seal_frame(aead, iv, plaintext, aad, sa.mac_length)


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
            f" protects frames ({EP_BOOK})"
        )
    if counter is None or counter.label != counter_label(sa.spi):
        raise LocalProtocolError(
            f"SA {sa.spi} needs its own counter {counter_label(sa.spi)!r}, got {counter!r}"
        )
    mask = sa.header_mask(len(header), segment_header=segment_header)
    value = counter.take()
    sec_header = _security_header(sa, value)
    iv = value.to_bytes(sa.iv_length, "big")
    body, mac = _seal(sa, keys, iv, _mask(header + sec_header, mask), plaintext)
    return sec_header + body + mac


def _process_security(
    table: SaTable,
    link: Link,
    vcid: int,
    header: bytes,
    protected: bytes,
    *,
    segment_header: bool = False,
    map_id: int | None = None,
) -> tuple[SecurityAssociation, bytes, int | None]:
    """ProcessSecurity (355.0-B-2 4.2.4) up to, not including, the commit."""
    if len(protected) < SPI_LENGTH:
        raise TruncatedFrame(
            "truncated", clause("4.1.1.2"), f"{len(protected)} octets, the SPI needs {SPI_LENGTH}"
        )
    spi = int.from_bytes(protected[:SPI_LENGTH], "big")
    sa = table._lookup(spi, link, vcid, map_id)
    n_header = sa.header_length
    if len(protected) < n_header + sa.trailer_length + 1:
        raise TruncatedFrame(
            "truncated",
            clause("4.1"),
            f"{len(protected)} octets < {n_header}-octet Security Header + 1 data octet +"
            f" {sa.trailer_length}-octet MAC (SPI {spi})",
        )
    sec_header = bytes(protected[:n_header])
    sn_at = SPI_LENGTH + sa.iv_length
    pad_at = sn_at + sa.sn_length
    if sa.service_type == ServiceType.SA_PLAINTEXT:
        data = protected[n_header:]
        arsn = None
    else:
        if sa.key_id is None:  # unreachable: SecurityAssociation checks it
            raise LocalProtocolError(f"SA {sa.spi} has no key")
        iv = sec_header[SPI_LENGTH:sn_at]
        aad = _mask(header + sec_header, sa.header_mask(len(header), segment_header=segment_header))
        end = len(protected) - sa.mac_length
        body = bytes(protected[n_header:end])
        mac = bytes(protected[end:])
        material = table.keys.material(sa.key_id)
        if material is None:  # unreachable: _lookup checked the key is ACTIVE
            raise LocalProtocolError(f"key {sa.key_id} has no material")
        aead = table.keys._cipher(sa.key_id)
        key = material.secret_octets()
        try:
            if sa.service_type == ServiceType.SA_AUTHENTICATION:
                data = body
                gcm_open_frame(key, aead, iv, b"", mac=mac, aad=aad + data)
            elif sa.service_type == ServiceType.SA_ENCRYPTION:
                data = gcm_open_frame(key, aead, iv, body, mac=b"", aad=b"")
            else:
                data = gcm_open_frame(key, aead, iv, body, mac=mac, aad=aad)
        except InvalidTag:
            raise MacMismatch(
                "mac-mismatch", clause("4.2.4"), f"SPI {spi}, {len(protected)}-octet field"
            ) from None
        if sa.effective_arsn_source == ArsnSource.SN:
            arsn = int.from_bytes(sec_header[sn_at:pad_at], "big")
        else:
            arsn = int.from_bytes(iv, "big")
        table._windows[spi].check(arsn, clause("4.2.4"))
    pad = int.from_bytes(sec_header[pad_at:n_header], "big") if sa.pad_length_length else 0
    if pad:
        raise BadPadLength(
            "bad-pad-length", clause("4.1.1.5"), f"Pad Length {pad} under AES-GCM (SPI {spi})"
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

    Protect every transmission, retransmissions included: a FOP-1 retransmission is a
    new transmission and takes a fresh IV (and ARSN) from the counter.  AES-GCM must
    never use an IV twice under one key (NIST SP 800-38D 8.2.1), and a frame re-sent
    with its old IV or Sequence Number would be refused by the receiver's anti-replay
    check as a replay (355.0-B-2 4.2.4).
    """
    if is_plaintext_control(frame):
        raise LocalProtocolError(
            f"Type-BC frame on VC {frame.vcid}: COP-1 control frames stay in the clear"
            " (check is_plaintext_control first)"
        )
    if sa.link != Link.TC or frame.vcid not in sa.vcids:
        raise LocalProtocolError(
            f"SA {sa.spi} ({sa.link.name} VCs {sorted(sa.vcids)}) does not apply to TC VC"
            f" {frame.vcid} ({clause('4.2.2.2')})"
        )
    frame_map = None if frame.segment_header is None else frame.segment_header.map_id
    if sa.map_id is not None and frame_map != sa.map_id:
        raise LocalProtocolError(
            f"SA {sa.spi} applies to MAP {sa.map_id}, the frame is on MAP {frame_map}"
            f" ({clause('3.4.2.2.1')})"
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
            "plaintext-refused", clause("4.2.4"), f"Type-BC frame on VC {frame.vcid}"
        )
    header = _tc_header(frame, len(frame.data))
    sa, data, arsn = _process_security(
        table,
        Link.TC,
        frame.vcid,
        header,
        frame.data,
        segment_header=frame.segment_header is not None,
        map_id=None if frame.segment_header is None else frame.segment_header.map_id,
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
            f" {frame.vcid} ({clause('4.2.2.2')})"
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

    @property
    def window_limited(self) -> bool:
        """The send SA's receiver accepts only a bounded jump ahead (``max_arsn_jump``):
        a long loss can push this sender out of its window, and only Set ARSN, sent
        under a management SA, brings it back (:meth:`set_arsn_pdu`)."""
        return self.send_sa.max_arsn_jump is not None

    def set_arsn_pdu(self) -> bytes:
        """Set ARSN (355.1-B-1) for the send SA: the receiver's highest becomes the last
        value this sender used, so the next frame is exactly one ahead.

        Send it under another SA (the key file's ``management`` SA) before the next
        frame of this one; it never moves the receiver back, so a stale or repeated
        one is harmless.
        """
        sa = self.send_sa
        value = max(self.counter.next_value - 1, 0) & ((1 << (8 * sa.arsn_length)) - 1)
        return SetArsnPdu(sa.spi, value, sa.arsn_length).to_bytes()

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
