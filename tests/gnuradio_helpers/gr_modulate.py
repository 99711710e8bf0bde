"""Make coded BPSK IQ with GNU Radio's own blocks, through its channel model.

Run with the system Python that holds GNU Radio 3.10::

    /usr/bin/python3 gr_modulate.py BITS.u8 OUT.cf32 --framebits F --sps 4
        [--noise V] [--freq F] [--epsilon E] [--phase RAD] [--seed S]

``BITS.u8``: one bit per octet (0 or 1), a multiple of F.  The flowgraph, GNU Radio
blocks only::

    vector_source_b(bits)
      -> fec.extended_encoder(fec.cc_encoder_make(F, 7, 2, [79, -109], 0,
                                                  fec.CC_STREAMING, False), puncpat="11")
      -> digital.chunks_to_symbols_bc([-1, 1])          bit 0 -> -1, bit 1 -> +1
      -> filter.interp_fir_filter_ccf(sps, firdes.root_raised_cosine(sps, sps, 1, 0.35, 11 sps))
      -> channels.channel_model(noise V, frequency offset F (cycles/sample),
                                epsilon E (timing), taps [exp(j phase)], seed)
      -> file_sink (complex64, little-endian)
"""

from __future__ import annotations

import argparse
import cmath

import _gr_setup  # noqa: F401  - log level
import numpy as np
from gnuradio import blocks, channels, digital, fec, filter, gr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bits")
    parser.add_argument("out")
    parser.add_argument("--framebits", type=int, required=True)
    parser.add_argument("--sps", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--freq", type=float, default=0.0)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--phase", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    bits = np.fromfile(args.bits, dtype=np.uint8)
    if bits.size % args.framebits:
        raise SystemExit(f"{bits.size} bits are not a multiple of --framebits {args.framebits}")
    tb = gr.top_block("gr_modulate")
    source = blocks.vector_source_b(bits.tolist(), False)
    encoder = fec.extended_encoder(
        encoder_obj_list=fec.cc_encoder_make(
            args.framebits, 7, 2, [79, -109], 0, fec.CC_STREAMING, False
        ),
        threading=None,
        puncpat="11",
    )
    mapper = digital.chunks_to_symbols_bc([-1.0 + 0j, 1.0 + 0j])
    taps = filter.firdes.root_raised_cosine(args.sps, args.sps, 1.0, 0.35, 11 * args.sps)
    shaping = filter.interp_fir_filter_ccf(args.sps, taps)
    channel = channels.channel_model(
        noise_voltage=args.noise,
        frequency_offset=args.freq,
        epsilon=args.epsilon,
        taps=[cmath.exp(1j * args.phase)],
        noise_seed=args.seed,
        block_tags=False,
    )
    sink = blocks.file_sink(gr.sizeof_gr_complex, args.out, False)
    sink.set_unbuffered(False)
    tb.connect(source, encoder, mapper, shaping, channel, sink)
    tb.run()
    sink.close()


if __name__ == "__main__":
    main()
