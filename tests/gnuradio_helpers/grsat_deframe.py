"""Decode soft symbols with gr-satellites' CCSDS concatenated deframer; write the frames.

Run with the system Python that holds GNU Radio 3.10 and gr-satellites 4.4::

    /usr/bin/python3 grsat_deframe.py SYMBOLS.f32 OUT.hex --frame-size N --interleave I
        [--precoding differential] [--expect K] [--quiet-s 2] [--timeout-s 120] [--seed S]

``SYMBOLS.f32``: little-endian float32 soft symbols, one per code symbol, positive = bit 1
(GNU Radio's convention).  The flowgraph is::

    symbol source -> satellites.components.deframers.ccsds_concatenated_deframer -> collector

with the deframer as gr-satellites builds it for ``framing: CCSDS Concatenated``:
``convolutional="CCSDS"`` (GNU Radio ``fec.cc_decoder`` polynomials [79, -109]), dual-basis
R-S (E = 16) with interleaving I, CCSDS scrambler, ``frame_size`` = N.

Draining: a flowgraph whose source ends stops before its message half has delivered
everything that is queued, and a finite pad of noise is not always enough either:
measured here, 40000 noise symbols after the data lost up to 3 of 12 frames at I = 5
(about 30000 decoded bits, the size of one 32 KiB buffer of a char stream: the last
frames seem to wait in the buffers after the Viterbi decoders for more input to push
them out), in 2 to 5 runs of 8; 200000 lost none in 8.  So the source here never ends:
after the symbols it sends seeded noise symbols until the script stops the flowgraph,
once ``--expect`` frames have arrived (plus a short grace period), or once nothing has
arrived for ``--quiet-s`` seconds after the data, or at ``--timeout-s``.

OUT gets one decoded frame per line, in hex, in arrival order.
"""

from __future__ import annotations

import argparse
import threading
import time

import _gr_setup  # noqa: F401  - before satellites (blocks.byte_t alias, log level)
import numpy as np
import pmt
from gnuradio import gr
from satellites.components.deframers import ccsds_concatenated_deframer

NOISE_BLOCK = 65_537  # seeded noise symbols, cycled after the data (odd: no fixed pairing)


class SymbolSource(gr.sync_block):
    """Emits the symbols, then seeded noise symbols for as long as the flowgraph runs."""

    def __init__(self, symbols: np.ndarray, noise: np.ndarray) -> None:
        gr.sync_block.__init__(self, "symbol_source", [], [np.float32])
        self._symbols = symbols
        self._noise = noise
        self._sent = 0
        self.finished_at: float | None = None

    def work(self, input_items, output_items):
        out = output_items[0]
        left = self._symbols.size - self._sent
        if left > 0:
            n = min(left, len(out))
            out[:n] = self._symbols[self._sent : self._sent + n]
            self._sent += n
            return n
        if self.finished_at is None:
            self.finished_at = time.monotonic()
        n = min(self._noise.size, len(out))
        out[:n] = self._noise[:n]
        self._noise = np.roll(self._noise, -n)
        return n


class Collector(gr.basic_block):
    """Keeps the payload of every PDU that reaches its ``in`` port."""

    def __init__(self) -> None:
        gr.basic_block.__init__(self, "collector", [], [])
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)
        self.frames: list[bytes] = []
        self.last_at = time.monotonic()
        self._lock = threading.Lock()

    def _handle(self, msg) -> None:
        payload = bytes(pmt.u8vector_elements(pmt.cdr(msg)))
        with self._lock:
            self.frames.append(payload)
            self.last_at = time.monotonic()

    def snapshot(self) -> tuple[int, float]:
        with self._lock:
            return len(self.frames), self.last_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("symbols")
    parser.add_argument("out")
    parser.add_argument("--frame-size", type=int, required=True, help="N, octets")
    parser.add_argument("--interleave", type=int, required=True, help="R-S interleaving I")
    parser.add_argument("--precoding", choices=("none", "differential"), default="none")
    parser.add_argument("--expect", type=int, default=0, help="stop early at this many frames")
    parser.add_argument("--quiet-s", type=float, default=2.0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = np.fromfile(args.symbols, dtype="<f4")
    rng = np.random.default_rng(args.seed)
    noise = (2.0 * rng.integers(0, 2, NOISE_BLOCK) - 1.0).astype(np.float32)
    noise += (0.5 * rng.standard_normal(NOISE_BLOCK)).astype(np.float32)
    source = SymbolSource(data, noise)

    tb = gr.top_block("grsat_deframe")
    deframer = ccsds_concatenated_deframer(
        frame_size=args.frame_size,
        precoding=None if args.precoding == "none" else "differential",
        rs_en=True,
        rs_basis="dual",
        rs_interleaving=args.interleave,
        scrambler="CCSDS",
        convolutional="CCSDS",
    )
    collector = Collector()
    tb.connect(source, deframer)
    tb.msg_connect((deframer, "out"), (collector, "in"))

    start = time.monotonic()
    tb.start()
    while True:
        time.sleep(0.05)
        count, last_at = collector.snapshot()
        now = time.monotonic()
        if now - start > args.timeout_s:
            break
        if args.expect and count >= args.expect and now - last_at > 0.3:
            break
        finished = source.finished_at
        if finished is not None and now - max(finished, last_at) > args.quiet_s:
            break
    tb.stop()
    tb.wait()
    with open(args.out, "w", encoding="ascii") as out:
        out.writelines(frame.hex() + "\n" for frame in collector.frames)


if __name__ == "__main__":
    main()
