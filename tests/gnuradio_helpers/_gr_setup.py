"""Shared set-up of the GNU Radio helper scripts (run with the system ``/usr/bin/python3``).

Imported first by every helper: quiets GNU Radio's logger (3.10 logs a debug line per
sync-word hit, which can fill a pipe and stall a flowgraph), and aliases the stream
item types that gr-satellites 4.4 still looks up on ``gnuradio.blocks`` (``blocks.byte_t``
...) but that GNU Radio 3.10 moved to ``gr.types``; without the alias building
``satellites.hier.sync_to_pdu`` fails with ``module 'gnuradio.blocks' has no attribute
'byte_t'``.
"""

from __future__ import annotations

import os

from gnuradio import blocks, gr

# The deframer blocks used here never read ~/.gr_satellites/config.ini (only the
# gr_satellites program does, and its default submits telemetry to SatNOGS); the tests
# still run these scripts with HOME in a temporary folder and submission off.
os.environ.setdefault("GR_SATELLITES_SUBMIT_TLM", "0")

gr.logging().set_default_level(gr.log_levels.warn)

for _name in ("byte_t", "short_t", "int_t", "float_t", "complex_t"):
    if not hasattr(blocks, _name):
        setattr(blocks, _name, getattr(gr.types, _name))
