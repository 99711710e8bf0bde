"""Synchronization and channel coding: TC (CCSDS 231.0-B-4: randomizer, BCH, CLTU) and
TM (131.0-B-5: ASM, pseudo-randomizer, Reed-Solomon, CADU synchronizer in ``tm``; the
convolutional code in ``convolutional``, its Viterbi decoder in ``viterbi``, and in
``soft`` the soft-symbol front end of the concatenated code: a synchronizer that finds
symbol alignment, phase (BPSK 180 degrees, QPSK quarter turns) and NRZ-M by itself)."""
