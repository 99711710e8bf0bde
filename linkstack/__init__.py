"""linkstack: a sans-I/O CCSDS space-link stack.

Protocol packages (one per sublayer, named after its book) take bytes and ``now`` in
and give events and bytes out; they open no socket, read no clock and print nothing.
What touches the outside world is the asyncio adapter (``linkstack.aio``), the
programs' shared foundation (``linkstack.console``), the composition on top
(``linkstack.cli``, ``linkstack.sim``) and the few modules that own files; the layers
are drawn in docs/architecture.md and checked by ``lint-imports``.
"""

__version__ = "0.2.0"
