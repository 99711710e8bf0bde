"""SDLS (CCSDS 355.0-B-2, 355.1-B-1) for TC and TM frames, sans-I/O, one concern a
module, each importing only those above it:

* :mod:`~linkstack.sdls.errors`: :class:`SecurityError` and its subclasses (received
  bytes refused, layer ``sdls``), the counter and key-transition misuse errors;
* :mod:`~linkstack.sdls.keys`: :class:`KeyMaterial`, :class:`KeyState` and the key life
  cycle of 355.1-B-1, :class:`KeyRing`;
* :mod:`~linkstack.sdls.cipher`: the AES-256-GCM baseline, :func:`aead_seal`,
  :func:`aead_open`;
* :mod:`~linkstack.sdls.replay`: :class:`ReplayWindow`, the anti-replay window;
* :mod:`~linkstack.sdls.associations`: :class:`SecurityAssociation`, the ABMs,
  :class:`SaTable`, and how a rekey retires an SA;
* :mod:`~linkstack.sdls.counters`: :class:`TxCounter`, the IV / ARSN of a sending SA or
  of a master key, and the counter labels;
* :mod:`~linkstack.sdls.frames`: :func:`protect_tc` / :func:`unprotect_tc`,
  :func:`protect_tm` / :func:`unprotect_tm` and :class:`LinkSecurity`, one end of a
  protected link;
* :mod:`~linkstack.sdls.otar`: the key management PDUs (OTAR, activation,
  deactivation), the SA management PDUs Set ARSN and Read ARSN, and their receiving
  engine :class:`KeyManager`.

``linkstack.sdls.keystore`` is the one module that touches files (key files, counter
files).  :data:`logger` is the parent of every SDLS module's logger.
"""

import logging

from linkstack.sdls.associations import (
    DEFAULT_RESERVATION_STEP,
    GCM_MAC_LENGTHS,
    MAX_ARSN_WINDOW,
    MAX_PAD_LENGTH_LENGTH,
    MAX_SN_LENGTH,
    MAX_SPI,
    SPI_LENGTH,
    ArsnSource,
    Link,
    SaTable,
    SecurityAssociation,
    ServiceType,
    full_abm,
    standard_abm_tc,
    standard_abm_tm,
)
from linkstack.sdls.cipher import GCM_IV_LENGTH, GCM_MAC_LENGTH, aead_open, aead_seal
from linkstack.sdls.counters import TxCounter, counter_label, master_counter_label
from linkstack.sdls.errors import (
    BadPadLength,
    CounterExhausted,
    CounterNotReserved,
    InvalidKeyTransition,
    KeyManagementError,
    MacMismatch,
    ReplayRejected,
    SaNotOperational,
    SecurityError,
    TruncatedFrame,
    UnknownSpi,
)
from linkstack.sdls.frames import (
    LinkSecurity,
    is_plaintext_control,
    protect_tc,
    protect_tm,
    tc_data_capacity,
    tm_data_capacity,
    unprotect_tc,
    unprotect_tm,
)
from linkstack.sdls.keys import (
    KEY_LENGTH,
    KEY_TRANSITIONS,
    MASTER_KEY_ID_LIMIT,
    MAX_KEY_ID,
    KeyMaterial,
    KeyRing,
    KeyState,
    is_master_key_id,
)
from linkstack.sdls.otar import (
    PDU_TYPE_COMMAND,
    PDU_TYPE_REPLY,
    PID_KEY_ACTIVATION,
    PID_KEY_DEACTIVATION,
    PID_OTAR,
    PID_READ_ARSN,
    PID_SET_ARSN,
    SG_KEY_MGMT,
    SG_SA_MGMT,
    ArsnRead,
    ArsnReplyPdu,
    ArsnReported,
    ArsnSet,
    EpPdu,
    KeyActivationPdu,
    KeyDeactivationPdu,
    KeyManager,
    KeysChanged,
    OtarPdu,
    ReadArsnPdu,
    SetArsnPdu,
    build_otar,
    decode_ep_pdu,
)
from linkstack.sdls.replay import ReplayWindow

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RESERVATION_STEP",
    "GCM_IV_LENGTH",
    "GCM_MAC_LENGTH",
    "GCM_MAC_LENGTHS",
    "KEY_LENGTH",
    "KEY_TRANSITIONS",
    "MASTER_KEY_ID_LIMIT",
    "MAX_ARSN_WINDOW",
    "MAX_KEY_ID",
    "MAX_PAD_LENGTH_LENGTH",
    "MAX_SN_LENGTH",
    "MAX_SPI",
    "PDU_TYPE_COMMAND",
    "PDU_TYPE_REPLY",
    "PID_KEY_ACTIVATION",
    "PID_KEY_DEACTIVATION",
    "PID_OTAR",
    "PID_READ_ARSN",
    "PID_SET_ARSN",
    "SG_KEY_MGMT",
    "SG_SA_MGMT",
    "SPI_LENGTH",
    "ArsnRead",
    "ArsnReplyPdu",
    "ArsnReported",
    "ArsnSet",
    "ArsnSource",
    "BadPadLength",
    "CounterExhausted",
    "CounterNotReserved",
    "EpPdu",
    "InvalidKeyTransition",
    "KeyActivationPdu",
    "KeyDeactivationPdu",
    "KeyManagementError",
    "KeyManager",
    "KeyMaterial",
    "KeyRing",
    "KeyState",
    "KeysChanged",
    "Link",
    "LinkSecurity",
    "MacMismatch",
    "OtarPdu",
    "ReadArsnPdu",
    "ReplayRejected",
    "ReplayWindow",
    "SaNotOperational",
    "SaTable",
    "SecurityAssociation",
    "SecurityError",
    "ServiceType",
    "SetArsnPdu",
    "TruncatedFrame",
    "TxCounter",
    "UnknownSpi",
    "aead_open",
    "aead_seal",
    "build_otar",
    "counter_label",
    "decode_ep_pdu",
    "full_abm",
    "is_master_key_id",
    "is_plaintext_control",
    "logger",
    "master_counter_label",
    "protect_tc",
    "protect_tm",
    "standard_abm_tc",
    "standard_abm_tm",
    "tc_data_capacity",
    "tm_data_capacity",
    "unprotect_tc",
    "unprotect_tm",
]
