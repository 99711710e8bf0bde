"""CFDP (CCSDS 727.0-B-5) over linkstack, with the ``cfdp-py`` library's handlers.

``linkstack.cfdp.wire`` (the APID and entity ids the link gives CFDP) is light and
imported by the endpoints; ``linkstack.cfdp.entity`` (the sans-I/O adapter around
cfdp-py's source and destination handlers), ``linkstack.cfdp.clock`` (the virtual
clock cfdp-py's timers run on) and ``linkstack.cfdp.memstore`` (an in-memory
filestore) import cfdp-py; import them by name.  See docs/cfdp.md.
"""

from linkstack.cfdp.wire import CFDP_APID, GROUND_ENTITY_ID, SPACECRAFT_ENTITY_ID

__all__ = ["CFDP_APID", "GROUND_ENTITY_ID", "SPACECRAFT_ENTITY_ID"]
