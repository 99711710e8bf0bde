"""TC Space Data Link Protocol (CCSDS 232.0-B-4) and COP-1 (232.1-B-2): frames,
segmentation, the CLCW, FOP-1 and FARM-1."""
