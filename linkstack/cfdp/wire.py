"""What the link assigns CFDP: its APID and the two entity ids (docs/cfdp.md §1).

CCSDS 727.0-B-5 leaves the underlying transport to the mission (4.1: "the
Unitdata Transfer service of the underlying communication system"); here each PDU is
the whole user data field of one Space Packet (CCSDS 133.0-B-2 4.1.4), on its own
APID in both directions.
"""

from __future__ import annotations

from typing import Final

#: APID of the CFDP PDUs, uplink (Packet Type 1) and downlink (Packet Type 0).  APIDs are
#: mission-assigned (CCSDS 133.0-B-2 4.1.3.3.4); 2045 (0x7FD) is the one Wireshark's
#: CFDP dissector is registered on (``ccsds.apid`` table, packet-cfdp.c), so that a
#: capture's CFDP PDUs dissect with no preference set (docs/cfdp.md §6).
CFDP_APID: Final = 0x7FD

#: CFDP entity ids (CCSDS 727.0-B-5 5.1, "Source/Destination entity ID"), one octet each.
GROUND_ENTITY_ID: Final = 1
SPACECRAFT_ENTITY_ID: Final = 2

#: Destination-name prefix of the ground's request files and of the spacecraft's replies
#: (``.ctl/ID.json``, ``.ctl/ID.reply.json``; docs/cfdp.md).
CONTROL_PREFIX: Final = ".ctl/"

__all__ = ["CFDP_APID", "CONTROL_PREFIX", "GROUND_ENTITY_ID", "SPACECRAFT_ENTITY_ID"]
