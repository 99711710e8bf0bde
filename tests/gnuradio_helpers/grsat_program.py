"""Run the real ``gr_satellites`` program on an IQ file, fed through a FIFO.

Run with the system Python that holds GNU Radio 3.10 and gr-satellites 4.4::

    /usr/bin/python3 grsat_program.py SAT.yml IQ.cf32 SAMP_RATE OUT.kiss

The program reads ``--rawfile FIFO --iq --samp_rate SAMP_RATE --f_offset 0`` and
writes the frames it decodes to ``--kiss_out OUT.kiss``.  Fed a plain file it stops at
end of file before its message half has drained and silently drops queued frames,
so a thread writes into the FIFO a second of low noise, the IQ file, then more noise
until OUT.kiss has not grown for ``QUIET_S`` seconds (at most ``MAX_S``), and only
then closes it.  ``_gr_setup`` quiets GNU Radio's per-ASM debug lines and aliases
``blocks.byte_t`` & co. before gr-satellites is imported.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import tempfile
import threading
import time

import _gr_setup  # noqa: F401  - log level, blocks.byte_t aliases
import numpy as np

QUIET_S = 4.0
MAX_S = 120.0
NOISE_RMS = 0.005


def feed(fifo: str, iq: bytes, samp_rate: float, kiss: str) -> None:
    rng = np.random.default_rng(0)

    def noise(count: int) -> bytes:
        values = NOISE_RMS * (rng.standard_normal(count) + 1j * rng.standard_normal(count))
        return values.astype("<c8").tobytes()

    with open(fifo, "wb") as stream:
        stream.write(noise(int(samp_rate)))
        stream.write(iq)
        start = last_change = time.monotonic()
        size = -1
        while time.monotonic() - start < MAX_S:
            stream.write(noise(int(samp_rate) // 10))
            stream.flush()
            now = os.path.getsize(kiss) if os.path.exists(kiss) else 0
            if now != size:
                size, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > QUIET_S:
                break
            time.sleep(0.05)


def main() -> None:
    sat, iq_path, samp_rate, kiss = sys.argv[1:5]
    with open(iq_path, "rb") as stream:
        iq = stream.read()
    folder = tempfile.mkdtemp()
    fifo = os.path.join(folder, "iq.fifo")
    os.mkfifo(fifo)
    writer = threading.Thread(target=feed, args=(fifo, iq, float(samp_rate), kiss), daemon=True)
    writer.start()
    program = shutil.which("gr_satellites")
    if program is None:
        raise SystemExit("gr_satellites is not on PATH")
    sys.argv = [
        program,
        sat,
        "--rawfile",
        fifo,
        "--iq",
        "--samp_rate",
        samp_rate,
        "--f_offset",
        "0",
        "--kiss_out",
        kiss,
    ]
    try:
        runpy.run_path(program, run_name="__main__")
    finally:
        writer.join(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
