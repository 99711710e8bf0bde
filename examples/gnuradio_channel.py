#!/usr/bin/python3
"""A GNU Radio channel between the two ends of a ``zmq://`` link (no GUI).

The spacecraft's IQ samples (``linkstack.aio.zmq_link``: raw complex64 on a ZeroMQ
PUSH socket) come in through ``zeromq.pull_source``, go through
``channels.channel_model`` (white Gaussian noise for the Eb/N0 asked, a carrier
frequency offset, a sample timing offset) and leave through ``zeromq.push_sink``,
bound for the ground's PULL socket.  It runs until killed (Ctrl-C, SIGTERM).

Run it with Debian's GNU Radio 3.10 (``gnuradio``, with gr-zeromq), e.g. in three
terminals, the uplink as UDP on port 6000 and the downlink's IQ through the channel::

    onboard serve --link 'zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6001&sps=4'
    /usr/bin/python3 examples/gnuradio_channel.py \\
        --iq-in tcp://127.0.0.1:6001 --iq-out tcp://127.0.0.1:6002 \\
        --ebn0 6 --freq-offset 0.0005 --timing-ppm 20
    groundstation ask 'Hello' --link 'zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6002&sps=4'

(the spacecraft binds its IQ endpoint 6001, which this flowgraph connects to; this
flowgraph binds 6002, which the ground connects to; ``sps`` must agree at both ends).

Noise: linkstack's modulator sends unit energy per channel symbol, so with ``sps``
samples per symbol and a rate-1/2 code on BPSK, Eb = Es / (1 * 1/2) = 2 and N0 =
Eb / (Eb/N0); ``channel_model``'s complex noise has total power noise_voltage^2 per
sample, so noise_voltage = sqrt(N0).  ``--freq-offset`` is in cycles per sample
(normalized to the sample rate), ``--timing-ppm`` the receiver's clock error.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys

from gnuradio import channels, gr, zeromq


def noise_voltage(ebn0_db: float, *, bits_per_symbol: int = 1, code_rate: float = 0.5) -> float:
    """channel_model's noise voltage for this Eb/N0 on unit-energy symbols."""
    eb = 1.0 / (bits_per_symbol * code_rate)
    return math.sqrt(eb / 10 ** (ebn0_db / 10))


class ChannelFlowgraph(gr.top_block):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("linkstack IQ channel")
        item = gr.sizeof_gr_complex
        self.source = zeromq.pull_source(item, 1, args.iq_in, 100, False, -1)
        self.channel = channels.channel_model(
            noise_voltage=0.0 if args.ebn0 is None else noise_voltage(args.ebn0),
            frequency_offset=args.freq_offset,
            epsilon=1.0 + args.timing_ppm * 1e-6,
            taps=[1.0 + 0j],
            noise_seed=args.seed,
            block_tags=False,
        )
        self.sink = zeromq.push_sink(item, 1, args.iq_out, 100, False, -1)
        self.connect(self.source, self.channel, self.sink)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iq-in", default="tcp://127.0.0.1:6001", help="spacecraft's PUSH")
    parser.add_argument("--iq-out", default="tcp://127.0.0.1:6002", help="bound for the ground")
    parser.add_argument("--ebn0", type=float, default=None, help="dB; none: no noise")
    parser.add_argument("--freq-offset", type=float, default=0.0, help="cycles per sample")
    parser.add_argument("--timing-ppm", type=float, default=0.0, help="sample clock error")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    args = parser.parse_args(argv)
    flowgraph = ChannelFlowgraph(args)

    def stop(signum: int, frame: object) -> None:
        flowgraph.stop()
        flowgraph.wait()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    flowgraph.start()
    print(
        f"channel: {args.iq_in} -> {args.iq_out}, Eb/N0 {args.ebn0} dB,"
        f" offset {args.freq_offset} cycles/sample, {args.timing_ppm} ppm",
        flush=True,
    )
    flowgraph.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
