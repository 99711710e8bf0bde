"""The spacecraft side of linkstack: Qwen-3 loaded offline, generating token ids.

``onboard.model`` loads the model (an embedded tiny Qwen-3 with seeded weights,
the Qwen3-0.6B shape, or a local checkpoint), ``onboard.generation`` streams ids
deterministically, ``onboard.core`` is the application (queue, streams, resends)
sans-I/O, ``onboard.service`` runs it on asyncio over a link, ``onboard.cli`` is the
``onboard`` command.  Importing this package imports neither torch nor transformers.
"""
