"""Space Packets (CCSDS 133.0-B-2) and the Frame Error Control Field the data link
frames share (132.0-B-3 4.1.6, 232.0-B-4 4.1.4)."""
