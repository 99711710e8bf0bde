#!/usr/bin/python3
"""A GNU Radio channel between the two ends of a ``zmq://`` link (no GUI).

Two paths, each ``zeromq.pull_source`` -> ``channels.channel_model`` (white Gaussian
noise for the Eb/N0 asked, a carrier frequency offset, a sample timing offset) ->
``zeromq.push_sink``, on raw complex64 samples (``linkstack.aio.zmq_link``):

* the **downlink**: the spacecraft's IQ (coded BPSK CADUs) from ``--downlink-in``
  to ``--downlink-out``, bound for the ground;
* the **uplink** (when ``--uplink-in`` and ``--uplink-out`` are given): the ground's
  IQ (BPSK CLTUs) from ``--uplink-in`` to ``--uplink-out``, bound for the spacecraft,
  with its own channel model (``--uplink-ebn0``, ``--uplink-freq-offset``,
  ``--uplink-timing-ppm``).

Each pull_source connects to the endpoint a sender binds; each push_sink binds the
endpoint a receiver connects to.  It runs until killed (Ctrl-C, SIGTERM), and prints
one line, ``channel: ...``, once both paths run.

Run it with Debian's GNU Radio 3.10 (``gnuradio``, with gr-zeromq), e.g. in three
terminals, both directions through the channel::

    onboard serve --link 'zmq://?tx=tcp://127.0.0.1:6001&rx=tcp://127.0.0.1:6004'
    /usr/bin/python3 examples/gnuradio_channel.py \\
        --downlink-in tcp://127.0.0.1:6001 --downlink-out tcp://127.0.0.1:6002 \\
        --uplink-in tcp://127.0.0.1:6003 --uplink-out tcp://127.0.0.1:6004 \\
        --ebn0 6 --freq-offset 0.0005 --timing-ppm 20 --uplink-ebn0 9
    groundstation ask 'Hello' --link 'zmq://?tx=tcp://127.0.0.1:6003&rx=tcp://127.0.0.1:6002'

or the downlink only, the uplink as UDP on port 6000::

    onboard serve --link 'zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6001'
    /usr/bin/python3 examples/gnuradio_channel.py --iq-in tcp://127.0.0.1:6001 \\
        --iq-out tcp://127.0.0.1:6002 --ebn0 6
    groundstation ask 'Hello' --link 'zmq://127.0.0.1:6000?iq=tcp://127.0.0.1:6002'

(``sps`` must agree at both ends; 4 by default.)

Noise: linkstack's modulators send unit energy per channel symbol, so with BPSK and a
code of rate R, Eb = Es / R and N0 = Eb / (Eb/N0), Eb/N0 per information bit into the
code: the rate-1/2 convolutional code on the downlink (R-S and the ASM not charged),
BCH(63,56) with its filler bit on the uplink (R = 56/64, the start and tail sequences
not charged).  ``channel_model``'s complex noise has total power noise_voltage^2 per
sample, so noise_voltage = sqrt(N0).  Offsets are in cycles per sample (normalized to
the sample rate); ``--timing-ppm`` is the receiver's clock error.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys

from gnuradio import channels, gr, zeromq

#: Information bits per channel symbol: BPSK (1 bit) after each direction's code.
DOWNLINK_CODE_RATE = 0.5  # CCSDS 131.0-B-5 3.3: convolutional, rate 1/2
UPLINK_CODE_RATE = 56 / 64  # CCSDS 231.0-B-4 3.2: 56 information bits per 64-bit codeblock


def noise_voltage(ebn0_db: float | None, *, code_rate: float, bits_per_symbol: int = 1) -> float:
    """channel_model's noise voltage for this Eb/N0 on unit-energy symbols (0: none)."""
    if ebn0_db is None:
        return 0.0
    eb = 1.0 / (bits_per_symbol * code_rate)
    return math.sqrt(eb / 10 ** (ebn0_db / 10))


class ChannelFlowgraph(gr.top_block):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("linkstack IQ channel")
        self.downlink = self._path(
            args.iq_in,
            args.iq_out,
            noise=noise_voltage(args.ebn0, code_rate=DOWNLINK_CODE_RATE),
            offset=args.freq_offset,
            ppm=args.timing_ppm,
            seed=args.seed,
        )
        self.uplink = None
        if args.uplink_in is not None:
            self.uplink = self._path(
                args.uplink_in,
                args.uplink_out,
                noise=noise_voltage(args.uplink_ebn0, code_rate=UPLINK_CODE_RATE),
                offset=args.uplink_freq_offset,
                ppm=args.uplink_timing_ppm,
                seed=args.seed + 1,
            )

    def _path(
        self, source: str, sink: str, *, noise: float, offset: float, ppm: float, seed: int
    ) -> tuple[object, object, object]:
        item = gr.sizeof_gr_complex
        pull = zeromq.pull_source(item, 1, source, 100, False, -1)
        channel = channels.channel_model(
            noise_voltage=noise,
            frequency_offset=offset,
            epsilon=1.0 + ppm * 1e-6,
            taps=[1.0 + 0j],
            noise_seed=seed,
            block_tags=False,
        )
        push = zeromq.push_sink(item, 1, sink, 100, False, -1)
        self.connect(pull, channel, push)
        return pull, channel, push


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--downlink-in", "--iq-in", dest="iq_in", default="tcp://127.0.0.1:6001",
        help="the spacecraft's tx endpoint (its PUSH)")  # fmt: skip
    add("--downlink-out", "--iq-out", dest="iq_out", default="tcp://127.0.0.1:6002",
        help="bound here, the ground's rx endpoint")  # fmt: skip
    add("--ebn0", type=float, default=None, help="downlink Eb/N0, dB; none: no noise")
    add("--freq-offset", type=float, default=0.0, help="downlink, cycles per sample")
    add("--timing-ppm", type=float, default=0.0, help="downlink sample clock error")
    add("--uplink-in", default=None, help="the ground's tx endpoint (its PUSH)")
    add("--uplink-out", default=None, help="bound here, the spacecraft's rx endpoint")
    add("--uplink-ebn0", type=float, default=None, help="uplink Eb/N0, dB; none: no noise")
    add("--uplink-freq-offset", type=float, default=0.0, help="uplink, cycles per sample")
    add("--uplink-timing-ppm", type=float, default=0.0, help="uplink sample clock error")
    add("--seed", type=int, default=0, help="noise seed (the uplink's: seed + 1)")
    args = parser.parse_args(argv)
    if (args.uplink_in is None) != (args.uplink_out is None):
        parser.error("--uplink-in and --uplink-out go together")
    flowgraph = ChannelFlowgraph(args)

    def stop(signum: int, frame: object) -> None:
        flowgraph.stop()
        flowgraph.wait()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    flowgraph.start()
    uplink = (
        "no uplink"
        if args.uplink_in is None
        else f"uplink {args.uplink_in} -> {args.uplink_out}, Eb/N0 {args.uplink_ebn0} dB,"
        f" offset {args.uplink_freq_offset} cycles/sample, {args.uplink_timing_ppm} ppm"
    )
    print(
        f"channel: downlink {args.iq_in} -> {args.iq_out}, Eb/N0 {args.ebn0} dB,"
        f" offset {args.freq_offset} cycles/sample, {args.timing_ppm} ppm; {uplink}",
        flush=True,
    )
    flowgraph.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
