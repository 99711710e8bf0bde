#!/usr/bin/python3
"""A GNU Radio channel between the two ends of a ``zmq://`` link (no GUI).

Two paths, each ``zeromq.pull_source`` -> ``channels.channel_model`` (white Gaussian
noise for the Eb/N0 asked, a carrier frequency offset, a sample timing offset) ->
:class:`DopplerRamp` (a pass's Doppler, when asked) -> ``zeromq.push_sink``, on raw
complex64 samples (``linkstack.aio.zmq_link``):

* the **downlink**: the spacecraft's IQ (coded BPSK CADUs) from ``--downlink-in``
  to ``--downlink-out``, bound for the ground;
* the **uplink** (when ``--uplink-in`` and ``--uplink-out`` are given): the ground's
  IQ (BPSK CLTUs) from ``--uplink-in`` to ``--uplink-out``, bound for the spacecraft,
  with its own channel model (``--uplink-ebn0``, ``--uplink-freq-offset``,
  ``--uplink-timing-ppm``, ``--uplink-doppler-hz``...).

Each pull_source connects to the endpoint a sender binds; each push_sink binds the
endpoint a receiver connects to.  It runs until killed (Ctrl-C, SIGTERM), and prints
one line, ``channel: ...``, once both paths run.  A ``push_sink`` that finds no
receiver gives up that call and tries again only when new samples reach it: samples
that went through before the receiver connected can wait there for the next ones (the
ends of a link keep sending, idle frames down and idle sequences up; a test that sends
a fixed block sends more until its output is in).

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

Doppler (``--doppler-hz PEAK --doppler-rate-hz-s RATE``, the uplink's
``--uplink-doppler-...``): the carrier offset of a pass, the S-curve

    f(t) = -PEAK * tanh(RATE * (t - T0) / PEAK)     (Hz)

from about +PEAK while the satellite rises (approaching) through 0 at the culmination
T0, where it changes fastest (-RATE Hz/s), to -PEAK as it sets.  It is a shape with a
pass's peak offset and culmination rate, not the orbit's geometry
(``linkstack.radio.channel.LeoPass`` has that; this script runs without linkstack): a
2.2 GHz carrier from 400 km peaks at about 53 kHz and changes by 1.02 kHz/s at
culmination.  T0 is ``--doppler-culmination`` seconds (default 3 PEAK / RATE, where the
curve starts at +0.995 PEAK).  Time is the path's own sample clock, t = n / fs for the
n-th sample out, fs = ``--samp-rate`` (38400 by default: 9600 baud at 4 samples per
symbol, the ``zmq://`` link's defaults): ZeroMQ carries samples as fast as the ends
make them, so a path's time runs with the samples it has carried, not the wall clock.
The carrier turns by 2 pi times the integral of f, in closed form,
-PEAK^2 / RATE * (ln cosh(RATE (t - T0) / PEAK) - ln cosh(RATE T0 / PEAK)) cycles, so
no phase error accumulates over a long pass.  It is applied after ``channel_model``,
on the receiver's time axis; the noise is turned with the signal, which leaves white
circular Gaussian noise as it was.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from dataclasses import dataclass

import numpy as np
from gnuradio import channels, gr, zeromq

#: Information bits per channel symbol: BPSK (1 bit) after each direction's code.
DOWNLINK_CODE_RATE = 0.5  # CCSDS 131.0-B-5 3.3: convolutional, rate 1/2
UPLINK_CODE_RATE = 56 / 64  # CCSDS 231.0-B-4 3.2: 56 information bits per 64-bit codeblock
#: The zmq:// link's defaults: 9600 baud at 4 samples per symbol.
DEFAULT_SAMP_RATE = 9600.0 * 4
#: The default culmination, in units of PEAK / RATE: tanh(3) = 0.995.
DEFAULT_CULMINATION_SPANS = 3.0


def noise_voltage(ebn0_db: float | None, *, code_rate: float, bits_per_symbol: int = 1) -> float:
    """channel_model's noise voltage for this Eb/N0 on unit-energy symbols (0: none)."""
    if ebn0_db is None:
        return 0.0
    eb = 1.0 / (bits_per_symbol * code_rate)
    return math.sqrt(eb / 10 ** (ebn0_db / 10))


def _log_cosh(x: np.ndarray) -> np.ndarray:
    """ln cosh(x) without overflow: |x| + ln(1 + e^(-2|x|)) - ln 2."""
    a = np.abs(x)
    return a + np.log1p(np.exp(-2.0 * a)) - math.log(2.0)


@dataclass(frozen=True)
class DopplerPass:
    """A pass's Doppler S-curve: f(t) = -peak_hz * tanh(rate_hz_s * (t - culmination_s) /
    peak_hz), positive while the satellite approaches."""

    peak_hz: float
    rate_hz_s: float
    culmination_s: float

    def __post_init__(self) -> None:
        for name in ("peak_hz", "rate_hz_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Doppler {name} {value!r} is not a positive number")
        if not math.isfinite(self.culmination_s):
            raise ValueError(f"Doppler culmination {self.culmination_s!r} s is not finite")

    def phase_cycles(self, t: np.ndarray) -> np.ndarray:
        """The integral of f from 0 to t, cycles (float64)."""
        scale = self.peak_hz / self.rate_hz_s
        start = _log_cosh(np.float64(-self.culmination_s / scale))
        return -self.peak_hz * scale * (_log_cosh((t - self.culmination_s) / scale) - start)


class DopplerRamp(gr.sync_block):  # type: ignore[misc]
    """Turns the n-th sample through by 2 pi ``doppler.phase_cycles(n / samp_rate)``."""

    def __init__(self, doppler: DopplerPass, samp_rate: float) -> None:
        gr.sync_block.__init__(
            self, name="doppler_ramp", in_sig=[np.complex64], out_sig=[np.complex64]
        )
        self.doppler = doppler
        self.samp_rate = samp_rate

    def work(self, input_items: list[np.ndarray], output_items: list[np.ndarray]) -> int:
        samples, out = input_items[0], output_items[0]
        first = self.nitems_written(0)
        t = (first + np.arange(samples.size, dtype=np.float64)) / self.samp_rate
        # The fractional cycle in float64 (the integral grows to millions of cycles).
        turn = np.exp(2j * np.pi * np.mod(self.doppler.phase_cycles(t), 1.0))
        out[:] = samples * turn.astype(np.complex64)
        return samples.size


def doppler_pass(
    peak_hz: float | None,
    rate_hz_s: float | None,
    culmination_s: float | None,
    *,
    option: str = "--doppler",
) -> DopplerPass | None:
    """The pass from the options ``OPTION-hz``, ``OPTION-rate-hz-s`` and
    ``OPTION-culmination`` (None: no Doppler); ValueError naming the option."""
    if peak_hz is None and rate_hz_s is None:
        if culmination_s is not None:
            raise ValueError(f"{option}-culmination needs {option}-hz and {option}-rate-hz-s")
        return None
    if peak_hz is None or rate_hz_s is None:
        raise ValueError(f"{option}-hz and {option}-rate-hz-s go together")
    if not (math.isfinite(peak_hz) and peak_hz > 0):
        raise ValueError(f"{option}-hz {peak_hz} is not a positive number of Hz")
    if not (math.isfinite(rate_hz_s) and rate_hz_s > 0):
        raise ValueError(f"{option}-rate-hz-s {rate_hz_s} is not a positive number of Hz/s")
    if culmination_s is None:
        culmination_s = DEFAULT_CULMINATION_SPANS * peak_hz / rate_hz_s
    elif not math.isfinite(culmination_s):
        raise ValueError(f"{option}-culmination {culmination_s} is not a number of seconds")
    return DopplerPass(peak_hz, rate_hz_s, culmination_s)


@dataclass(frozen=True)
class PathModel:
    """One direction's channel: noise voltage, offset (cycles per sample), clock error
    (ppm), noise seed, and the Doppler (None: none)."""

    noise: float
    offset: float
    ppm: float
    seed: int
    doppler: DopplerPass | None


class ChannelFlowgraph(gr.top_block):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace, down: PathModel, up: PathModel | None) -> None:
        super().__init__("linkstack IQ channel")
        self.samp_rate = args.samp_rate
        self.downlink = self._path(args.iq_in, args.iq_out, down)
        self.uplink = None
        if up is not None:
            self.uplink = self._path(args.uplink_in, args.uplink_out, up)

    def _path(self, source: str, sink: str, model: PathModel) -> tuple[object, ...]:
        item = gr.sizeof_gr_complex
        pull = zeromq.pull_source(item, 1, source, 100, False, -1)
        channel = channels.channel_model(
            noise_voltage=model.noise,
            frequency_offset=model.offset,
            epsilon=1.0 + model.ppm * 1e-6,
            taps=[1.0 + 0j],
            noise_seed=model.seed,
            block_tags=False,
        )
        push = zeromq.push_sink(item, 1, sink, 100, False, -1)
        if model.doppler is None:
            self.connect(pull, channel, push)
            return pull, channel, push
        ramp = DopplerRamp(model.doppler, self.samp_rate)
        self.connect(pull, channel, ramp, push)
        return pull, channel, ramp, push


def describe(model: PathModel, ebn0: float | None, samp_rate: float) -> str:
    """The ready line's account of one path."""
    text = f"Eb/N0 {ebn0} dB, offset {model.offset} cycles/sample, {model.ppm} ppm"
    d = model.doppler
    if d is not None:
        text += (
            f", Doppler +-{d.peak_hz:g} Hz at {d.rate_hz_s:g} Hz/s, culmination at"
            f" {d.culmination_s:g} s of {samp_rate:g} samples/s"
        )
    return text


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
    add("--doppler-hz", type=float, default=None, metavar="PEAK",
        help="downlink Doppler: the pass's peak offset, Hz (with --doppler-rate-hz-s)")  # fmt: skip
    add("--doppler-rate-hz-s", type=float, default=None, metavar="RATE",
        help="downlink Doppler: its rate at culmination, Hz/s")  # fmt: skip
    add("--doppler-culmination", type=float, default=None, metavar="S",
        help="downlink Doppler: culmination, s of samples (default 3 PEAK / RATE)")  # fmt: skip
    add("--uplink-in", default=None, help="the ground's tx endpoint (its PUSH)")
    add("--uplink-out", default=None, help="bound here, the spacecraft's rx endpoint")
    add("--uplink-ebn0", type=float, default=None, help="uplink Eb/N0, dB; none: no noise")
    add("--uplink-freq-offset", type=float, default=0.0, help="uplink, cycles per sample")
    add("--uplink-timing-ppm", type=float, default=0.0, help="uplink sample clock error")
    add("--uplink-doppler-hz", type=float, default=None, metavar="PEAK",
        help="uplink Doppler: peak offset, Hz")  # fmt: skip
    add("--uplink-doppler-rate-hz-s", type=float, default=None, metavar="RATE",
        help="uplink Doppler: rate at culmination, Hz/s")  # fmt: skip
    add("--uplink-doppler-culmination", type=float, default=None, metavar="S",
        help="uplink Doppler: culmination, s of samples (default 3 PEAK / RATE)")  # fmt: skip
    add("--samp-rate", type=float, default=DEFAULT_SAMP_RATE,
        help="samples per second, for the Doppler's Hz and s (default 38400)")  # fmt: skip
    add("--seed", type=int, default=0, help="noise seed (the uplink's: seed + 1)")
    args = parser.parse_args(argv)
    if (args.uplink_in is None) != (args.uplink_out is None):
        parser.error("--uplink-in and --uplink-out go together")
    if not (math.isfinite(args.samp_rate) and args.samp_rate > 0):
        parser.error(f"--samp-rate {args.samp_rate} is not a positive number of samples/s")
    down = _path_model(parser, args, "", noise_voltage(args.ebn0, code_rate=DOWNLINK_CODE_RATE))
    up = None
    if args.uplink_in is not None:
        noise = noise_voltage(args.uplink_ebn0, code_rate=UPLINK_CODE_RATE)
        up = _path_model(parser, args, "uplink_", noise)
    elif any(
        getattr(args, f"uplink_{name}") is not None
        for name in ("doppler_hz", "doppler_rate_hz_s", "doppler_culmination")
    ):
        parser.error("--uplink-doppler-... needs the uplink (--uplink-in, --uplink-out)")
    flowgraph = ChannelFlowgraph(args, down, up)

    def stop(signum: int, frame: object) -> None:
        flowgraph.stop()
        flowgraph.wait()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    flowgraph.start()
    uplink = "no uplink"
    if up is not None:
        uplink = f"uplink {args.uplink_in} -> {args.uplink_out}, "
        uplink += describe(up, args.uplink_ebn0, args.samp_rate)
    print(
        f"channel: downlink {args.iq_in} -> {args.iq_out},"
        f" {describe(down, args.ebn0, args.samp_rate)}; {uplink}",
        flush=True,
    )
    flowgraph.wait()
    return 0


def _path_model(
    parser: argparse.ArgumentParser, args: argparse.Namespace, prefix: str, noise: float
) -> PathModel:
    """One direction's options (``prefix`` "" or "uplink_"), checked: a usage error
    (exit 2) names the option."""
    option = "--" + prefix.replace("_", "-")
    offset = getattr(args, f"{prefix}freq_offset")
    try:
        doppler = doppler_pass(
            getattr(args, f"{prefix}doppler_hz"),
            getattr(args, f"{prefix}doppler_rate_hz_s"),
            getattr(args, f"{prefix}doppler_culmination"),
            option=f"{option}doppler",
        )
    except ValueError as exc:
        parser.error(str(exc))
    highest = abs(offset) * args.samp_rate + (0.0 if doppler is None else doppler.peak_hz)
    if highest >= args.samp_rate / 2:
        parser.error(
            f"{option}freq-offset {offset} cycles/sample and {option}doppler-hz reach"
            f" {highest:g} Hz, not below half the sample rate ({args.samp_rate / 2:g} Hz)"
        )
    ppm = getattr(args, f"{prefix}timing_ppm")
    seed = args.seed + (1 if prefix else 0)
    return PathModel(noise=noise, offset=offset, ppm=ppm, seed=seed, doppler=doppler)


if __name__ == "__main__":
    sys.exit(main())
