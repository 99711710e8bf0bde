"""Synchronization and channel coding: TC (CCSDS 231.0-B-4: randomizer, BCH, CLTU) and
TM (131.0-B-5: ASM, pseudo-randomizer, Reed-Solomon, CADU synchronizer)."""
