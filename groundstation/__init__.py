"""The ground station of linkstack: prompts up, token streams down, never torch.

* :mod:`groundstation.assembler` - sans-I/O reassembly of one request's TokenChunks;
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
    TokensReady,
)
from groundstation.station import (
    Answer,
    GroundStation,
    RequestError,
    RequestHandle,
    RequestTimeoutError,
    SpacecraftError,
    StationCounters,
    Update,
)

__all__ = [
    "Answer",
    "AssemblerStats",
    "GapDetected",
    "GroundStation",
    "RequestError",
    "RequestHandle",
    "RequestTimeoutError",
    "SpacecraftError",
    "StationCounters",
    "StreamComplete",
    "TokenAssembler",
    "TokensReady",
    "Update",
]
