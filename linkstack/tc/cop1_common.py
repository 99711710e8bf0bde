"""What FOP-1 and FARM-1 (CCSDS 232.1-B-2) share, below both engines.

* the modulo-256 sequence-number arithmetic (5.2.1 note, 6.2.1 note) and the window
  limits of the managed parameters (5.1.12, 6.1.8.2);
* FOP-1's service interface (232.1-B-2 section 4): the Directives, the Responses and
  notifications that answer them, the Alert reason codes (table 4-4), and the FOP-1
  managed parameters (5.1, section 7).

This module imports neither :mod:`linkstack.tc.fop1` nor :mod:`linkstack.tc.farm1`;
both import from it, and :mod:`linkstack.tc.cop1` re-exports all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from linkstack.errors import LocalProtocolError
from linkstack.tc.frame import MAX_SEQUENCE_NUMBER, FrameType, TcVcConfig

BOOK: Final = "CCSDS 232.1-B-2"

#: Frame Sequence Numbers are 8 bits; all COP-1 arithmetic is modulo 256 (5.2.1, 6.2.1).
MODULUS: Final = MAX_SEQUENCE_NUMBER + 1
#: FOP_Sliding_Window_Width K: 1 <= K <= PW and K < 256 (5.1.12).
MAX_FOP_WINDOW: Final = MODULUS - 1
#: FARM_Sliding_Window_Width W: 2 <= W <= 254, always even (6.1.8.2).
MIN_FARM_WINDOW: Final = 2
MAX_FARM_WINDOW: Final = 254


def clause(number: str) -> str:
    """``number`` as a clause of the book, for error texts: "CCSDS 232.1-B-2 5.1.12"."""
    return f"{BOOK} {number}"


def mod(value: int) -> int:
    """``value`` modulo 256, the Frame Sequence Number arithmetic (5.2.1, 6.2.1)."""
    return value % MODULUS


def check_sequence_number(name: str, value: int, number: str) -> None:
    """Raise :class:`LocalProtocolError` unless ``value`` is a Frame Sequence Number."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MODULUS:
        raise LocalProtocolError(
            f"{name}={value!r} outside 0..{MAX_SEQUENCE_NUMBER} ({clause(number)})"
        )


# ======================================================================================
# FOP-1 service interface: alert codes, managed parameters, directives, responses
# ======================================================================================


class AlertCode(Enum):
    """Reasons for the 'Alert' notification, table 4-4."""

    LIMIT = "LIMIT"  # Transmission_Limit reached on a negative acknowledgement (TL = 1)
    T1 = "T1"  # Timer expired with Transmission_Count at the limit
    LOCKOUT = "LOCKOUT"  # CLCW reports Lockout
    SYNCH = "SYNCH"  # CLCW flags inconsistent with FOP-1's state
    NN_R = "NN_R"  # CLCW with invalid N(R)
    CLCW = "CLCW"  # CLCW with Wait = 1 and Retransmit = 0
    LLIF = "LLIF"  # Lower Layer Interface failure (a Reject Response)
    TERM = "TERM"  # Terminate AD Service Directive


class TimeoutType(IntEnum):
    """Timeout_Type TT (5.1.10): what a T1 expiry at the Transmission_Limit does."""

    ALERT = 0  # Alert [T1], go to S6
    SUSPEND = 1  # Suspend, go to S6 remembering the state in SS


@dataclass(frozen=True, slots=True, kw_only=True)
class FopConfig:
    """FOP-1 managed parameters for one TC Virtual Channel (232.1-B-2 5.1, 7)."""

    #: The Virtual Channel this FOP-1 sends on (SCID, VCID, frame limits).
    tc: TcVcConfig
    #: FOP_Sliding_Window_Width K (5.1.12): 1 <= K <= PW and K < 256.
    window_width: int = 10
    #: Timer_Initial_Value T1_Initial in seconds (5.1.9).
    t1_initial: float = 3.0
    #: Transmission_Limit (5.1.10): transmissions of the first frame on the Sent_Queue.
    transmission_limit: int = 3
    #: Timeout_Type TT (5.1.10).
    timeout_type: TimeoutType = TimeoutType.ALERT
    #: Model the Lower Procedures as accepting every frame at once (the lower layer
    #: model in :mod:`linkstack.tc.fop1`).
    auto_accept_lower_layer: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.window_width, bool) or not 1 <= self.window_width <= MAX_FOP_WINDOW:
            raise LocalProtocolError(
                f"FOP_Sliding_Window_Width K={self.window_width!r} outside"
                f" 1..{MAX_FOP_WINDOW} ({clause('5.1.12')})"
            )
        if not (
            isinstance(self.t1_initial, int | float)
            and math.isfinite(self.t1_initial)
            and self.t1_initial > 0
        ):
            raise LocalProtocolError(
                f"T1_Initial={self.t1_initial!r} s must be a finite number > 0 ({clause('5.1.9')})"
            )
        if isinstance(self.transmission_limit, bool) or self.transmission_limit < 1:
            raise LocalProtocolError(
                f"Transmission_Limit={self.transmission_limit!r} must be at least 1"
                f" ({clause('5.1.10')})"
            )
        if self.timeout_type not in (0, 1):
            raise LocalProtocolError(
                f"Timeout_Type={self.timeout_type!r} must be 0 or 1 ({clause('5.1.10')})"
            )
        object.__setattr__(self, "timeout_type", TimeoutType(self.timeout_type))


class Directive(Enum):
    """FOP-1 Directives (232.1-B-2 3.3.2 / table 4-2)."""

    INITIATE_AD_WITHOUT_CLCW = "Initiate AD Service (without CLCW check)"
    INITIATE_AD_WITH_CLCW = "Initiate AD Service (with CLCW check)"
    INITIATE_AD_WITH_UNLOCK = "Initiate AD Service (with Unlock)"
    INITIATE_AD_WITH_SET_VR = "Initiate AD Service (with Set V(R))"
    TERMINATE_AD = "Terminate AD Service"
    RESUME_AD = "Resume AD Service"
    SET_VS = "Set V(S)"
    SET_FOP_WINDOW = "Set FOP_Sliding_Window_Width"
    SET_T1_INITIAL = "Set T1_Initial"
    SET_TRANSMISSION_LIMIT = "Set Transmission_Limit"
    SET_TIMEOUT_TYPE = "Set Timeout_Type"


class Outcome(Enum):
    """Responses FOP-1 gives to Requests and Directives (5.2.11-5.2.13, 5.2.2)."""

    ACCEPT = "Accept"
    REJECT = "Reject"
    POSITIVE_CONFIRM = "Positive Confirm"
    NEGATIVE_CONFIRM = "Negative Confirm"


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectiveResponse:
    """A response to a Directive (Async_Notify / Directive response, 232.1-B-2 4.2)."""

    #: The id the directive method returned.
    request_id: int
    directive: Directive
    outcome: Outcome
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferResponse:
    """A response to a Request to Transfer FDU (Type-AD or Type-BD)."""

    #: The id :meth:`FopEngine.send_ad` / :meth:`FopEngine.send_bd` returned.
    request_id: int
    frame_type: FrameType
    outcome: Outcome
    #: N(S) of the Type-AD frame carrying the FDU, once one is assigned.
    sequence_number: int | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspended:
    """'Suspend' notification (5.2.16): the AD Service is suspended in state SS."""

    suspend_state: int
    at: float


__all__ = [
    "BOOK",
    "MAX_FARM_WINDOW",
    "MAX_FOP_WINDOW",
    "MIN_FARM_WINDOW",
    "MODULUS",
    "AlertCode",
    "Directive",
    "DirectiveResponse",
    "FopConfig",
    "Outcome",
    "Suspended",
    "TimeoutType",
    "TransferResponse",
    "check_sequence_number",
    "clause",
    "mod",
]
