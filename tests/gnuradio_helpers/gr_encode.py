"""Encode a bit stream with GNU Radio's own CCSDS convolutional encoder; write soft symbols.

Run with the system Python that holds GNU Radio 3.10::

    /usr/bin/python3 gr_encode.py BITS.u8 OUT.f32 --framebits F [--nrzm]

``BITS.u8``: one bit per octet (0 or 1), in transmission order; their count must be a
multiple of F.  The flowgraph, GNU Radio blocks only::

    vector_source_b(bits, one per item)
      [-> digital.diff_encoder_bb(2)]                    NRZ-L -> NRZ-M, --nrzm
      -> fec.extended_encoder(fec.cc_encoder_make(F, 7, 2, [79, -109], 0,
                                                  fec.CC_STREAMING, False), puncpat="11")
      -> digital.chunks_to_symbols_bf([-1, 1])            bit 0 -> -1.0, bit 1 -> +1.0
      -> vector_sink_f

``[79, -109]`` is the CCSDS rate-1/2 code as GNU Radio writes it (bit i taps delay i;
negative = inverted output: G1 = 171 octal, then G2 = 133 octal inverted), the same
polynomials gr-satellites' ``ccsds_viterbi`` decodes.  ``CC_STREAMING`` carries the
register across the F-bit frames (no tail, start state 0).  NRZ-M at the encoder input
is where CCSDS 131.0-B-5 3.3.3 puts it.  OUT: little-endian float32, one per symbol.
"""

from __future__ import annotations

import argparse

import _gr_setup  # noqa: F401  - log level
import numpy as np
from gnuradio import blocks, digital, fec, gr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bits")
    parser.add_argument("out")
    parser.add_argument("--framebits", type=int, required=True)
    parser.add_argument("--nrzm", action="store_true")
    args = parser.parse_args()

    bits = np.fromfile(args.bits, dtype=np.uint8)
    if bits.size and bits.max() > 1:
        raise SystemExit(f"{args.bits}: expected one bit (0/1) per octet")
    if bits.size % args.framebits:
        raise SystemExit(f"{bits.size} bits are not a multiple of --framebits {args.framebits}")

    tb = gr.top_block("gr_encode")
    source = blocks.vector_source_b(bits.tolist(), False)
    encoder = fec.extended_encoder(
        encoder_obj_list=fec.cc_encoder_make(
            args.framebits, 7, 2, [79, -109], 0, fec.CC_STREAMING, False
        ),
        threading=None,
        puncpat="11",
    )
    mapper = digital.chunks_to_symbols_bf([-1.0, 1.0])
    sink = blocks.vector_sink_f()
    chain = [source]
    if args.nrzm:
        chain.append(digital.diff_encoder_bb(2))
    chain += [encoder, mapper, sink]
    tb.connect(*chain)
    tb.run()
    symbols = np.asarray(sink.data(), dtype="<f4")
    if symbols.size != 2 * bits.size:
        raise SystemExit(f"encoder gave {symbols.size} symbols for {bits.size} bits")
    symbols.tofile(args.out)


if __name__ == "__main__":
    main()
