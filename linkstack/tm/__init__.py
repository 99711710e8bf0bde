"""TM Space Data Link Protocol (CCSDS 132.0-B-3): frames, virtual-channel packetizer,
master-channel multiplexer, depacketizer."""
