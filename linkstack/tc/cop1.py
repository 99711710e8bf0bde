"""Communications Operation Procedure-1 (CCSDS 232.1-B-2): FOP-1 and FARM-1.

The procedure lives in four modules; this one re-exports the public names of all of
them, so ``from linkstack.tc.cop1 import FopEngine, FarmEngine`` is the one import
callers need:

* :mod:`linkstack.tc.cop1_common`: what both ends share and imports neither engine:
  the modulo-256 arithmetic and window limits, and FOP-1's service interface (the
  Directives, Responses, Alert codes of table 4-4, the FOP-1 managed parameters).
* :mod:`linkstack.tc.fop1_table`: FOP-1's states, events and actions, State Table
  5-1, and the classification of a CLCW into its event.
* :mod:`linkstack.tc.fop1`: :class:`FopEngine` (ground, one per TC Virtual Channel),
  book section 5.  Sans-I/O: every entry point takes ``now``; the one timer (T1) is
  read with :meth:`FopEngine.get_timer` and fired with :meth:`FopEngine.handle_timer`.
* :mod:`linkstack.tc.farm1`: FARM-1's states, events, State Table 6-1 and
  :class:`FarmEngine` (spacecraft, one per TC Virtual Channel), book section 6;
  :meth:`FarmEngine.receive_frame` returns a :class:`FarmResult`, and
  :meth:`FarmEngine.clcw` reports (6.2.4 'REPORT').

Imports go one way: ``cop1_common`` <- ``fop1_table`` <- ``fop1``, ``cop1_common`` <-
``farm1``, and this module on top; none of them imports this one.
"""

from __future__ import annotations

from linkstack.tc.cop1_common import (
    MAX_FARM_WINDOW,
    MAX_FOP_WINDOW,
    MIN_FARM_WINDOW,
    MODULUS,
    AlertCode,
    Directive,
    DirectiveResponse,
    FopConfig,
    Outcome,
    Suspended,
    TimeoutType,
    TransferResponse,
)
from linkstack.tc.farm1 import (
    FARM_TABLE,
    DiscardReason,
    FarmAction,
    FarmConfig,
    FarmEngine,
    FarmEvent,
    FarmResult,
    FarmState,
    FarmStats,
    FarmTransition,
)
from linkstack.tc.fop1 import (
    CALLER_EVENTS,
    FOP_TABLE,
    Alert,
    FopAction,
    FopEngine,
    FopEvent,
    FopNotification,
    FopState,
    FopStats,
    FopStep,
    FopTransition,
    classify_clcw,
)

__all__ = [
    "CALLER_EVENTS",
    "FARM_TABLE",
    "FOP_TABLE",
    "MAX_FARM_WINDOW",
    "MAX_FOP_WINDOW",
    "MIN_FARM_WINDOW",
    "MODULUS",
    "Alert",
    "AlertCode",
    "Directive",
    "DirectiveResponse",
    "DiscardReason",
    "FarmAction",
    "FarmConfig",
    "FarmEngine",
    "FarmEvent",
    "FarmResult",
    "FarmState",
    "FarmStats",
    "FarmTransition",
    "FopAction",
    "FopConfig",
    "FopEngine",
    "FopEvent",
    "FopNotification",
    "FopState",
    "FopStats",
    "FopStep",
    "FopTransition",
    "Outcome",
    "Suspended",
    "TimeoutType",
    "TransferResponse",
    "classify_clcw",
]
