"""linkstack: a sans-I/O CCSDS space-link stack.

Protocol modules (one per CCSDS book) take bytes and ``now`` in and give events
and bytes out; they open no socket, read no clock and print nothing.  The only
modules that touch the outside world are the asyncio adapter (``linkstack.aio``)
and the command-line entry points (``linkstack.cli``).
"""

__version__ = "0.1.0"
