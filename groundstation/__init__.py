"""The ground station of linkstack: prompts up, token streams down, never torch.

* :mod:`groundstation.assembler` - sans-I/O reassembly of one request's TokenChunks;
* :mod:`groundstation.recovery` - sans-I/O recovery policy of one request
  (ResendRequest, EndAck, lost ranges; docs/protocol.md §10);
* :mod:`groundstation.station` - :class:`GroundStation`, the asyncio application
  over a :class:`~linkstack.endpoints.GroundEndpoint` and a link;
* :mod:`groundstation.cli` - ``groundstation ask``.
"""

from __future__ import annotations

from groundstation.assembler import (
    AssemblerStats,
    GapDetected,
    StreamComplete,
    TokenAssembler,
    TokensLost,
    TokensReady,
)
from groundstation.recovery import (
    RecoveryConfig,
    RecoveryCounters,
    RecoveryFailed,
    StreamRecovery,
)
from groundstation.station import (
    Answer,
    GroundStation,
    RequestError,
    RequestHandle,
    RequestTimeoutError,
    SpacecraftError,
    StationCounters,
    TokensLostError,
    Update,
)

__all__ = [
    "Answer",
    "AssemblerStats",
    "GapDetected",
    "GroundStation",
    "RecoveryConfig",
    "RecoveryCounters",
    "RecoveryFailed",
    "RequestError",
    "RequestHandle",
    "RequestTimeoutError",
    "SpacecraftError",
    "StationCounters",
    "StreamComplete",
    "StreamRecovery",
    "TokenAssembler",
    "TokensLost",
    "TokensLostError",
    "TokensReady",
    "Update",
]
