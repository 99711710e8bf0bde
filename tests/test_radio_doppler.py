"""A simulated satellite pass: the whole Doppler ramp through ``IqReceiver``, no frame lost.

``IqTransmitter`` (BPSK, rate 1/2, I = 1, N = 223, sps 4) -> a carrier offset shaped
like a pass, ``f(t) = -fmax tanh((t - tc) / tau)`` (from +fmax through zero at
culmination ``tc``, where it changes fastest, ``fmax / tau``, to -fmax), applied as the
phase ``2 pi integral f`` -> complex white noise at Eb/N0 6 dB per information bit (the
R-S check symbols and the ASM charged: R = 1784 / 4144) -> ``IqReceiver``.  After the
receiver has locked, every frame must come out, in the order sent, none dropped, and
the frequency the demodulator reports must follow the ramp.

Scaling.  What the loops see is the offset in cycles per symbol and its rate in cycles
per symbol squared.  A 2.2 GHz S-band pass (about 7.5 km/s along the line of sight)
peaks at 55 kHz and changes by up to about 1 kHz/s at culmination; at 256 kbaud that
is 0.215 cycles/symbol, beyond the demodulator's carrier range (``LoopConfig
.max_frequency``: 0.05 by default, 0.125 at most; run through this chain at 9600 baud
with 0.215 cycles/symbol, only 5 frames of 60, near culmination, came out), so a
station pre-corrects such a downlink from the orbit prediction.  The test keeps the
pass's shape with ``FMAX_CYCLES_PER_SYMBOL`` = 0.04 (the 55 kHz of the raw pass at
1.375 Mbaud, or a 10 kHz residual after pre-correction at 256 kbaud): 384 Hz at the
test's 9600 baud.  Time is compressed: the pass lasts as long as ``FRAMES`` CADUs (43.5 s
of signal at 9600 baud, 1.67 M samples, ``tau`` a sixth of it), so the peak rate is
53 Hz/s, 5.7e-7 cycles/symbol^2: some 38 times the 1.5e-8 of a 1 kHz/s ramp at
256 kbaud, which makes the test harder than the pass it stands for, not easier.
"""

from __future__ import annotations

import numpy as np

from linkstack.coding.tm import TmCodingConfig
from linkstack.radio.modem import add_noise
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter, SyncChanged

BAUD = 9600.0
SPS = 4
SAMPLE_RATE = BAUD * SPS
FRAMES = 100
FMAX_CYCLES_PER_SYMBOL = 0.04
EBN0_DB = 6.0
CODE_RATE = 8 * 223 / (2 * 8 * (4 + 255))  # information bits per channel symbol


def pass_offset_hz(t: np.ndarray, *, fmax: float, tc: float, tau: float) -> np.ndarray:
    """The pass's Doppler offset: +fmax long before culmination, -fmax long after."""
    offset: np.ndarray = -fmax * np.tanh((t - tc) / tau)
    return offset


def test_pass_with_full_doppler_ramp_loses_no_frame() -> None:
    config = TmCodingConfig(interleave=1)
    rng = np.random.default_rng(2024)
    frames = [rng.integers(0, 256, 223, dtype=np.uint8).tobytes() for _ in range(FRAMES)]
    transmitter = IqTransmitter(config, sps=SPS, ramp_rng=np.random.default_rng(7))
    clean = np.concatenate((transmitter.transmit(frames).samples, transmitter.flush()))

    duration = clean.size / SAMPLE_RATE
    fmax = FMAX_CYCLES_PER_SYMBOL * BAUD
    tc, tau = duration / 2, duration / 6
    t = np.arange(clean.size) / SAMPLE_RATE
    offset = pass_offset_hz(t, fmax=fmax, tc=tc, tau=tau)
    assert offset[0] > 0.99 * fmax and offset[-1] < -0.99 * fmax  # the whole ramp
    assert fmax / tau / BAUD**2 > 1.5e-8  # faster, per symbol^2, than the S-band pass
    phase = 2 * np.pi * np.cumsum(offset) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    received = add_noise(
        clean * np.exp(1j * phase),
        ebn0_db=EBN0_DB,
        modulation="bpsk",
        sps=SPS,
        rng=rng,
        code_rate=CODE_RATE,
    )

    receiver = IqReceiver(config, sample_rate=SAMPLE_RATE, sps=SPS)
    for start in range(0, received.size, 1 << 16):  # streamed, as from a radio
        receiver.receive_samples(received[start : start + (1 << 16)])
    receiver.flush()
    cadus: list[CaduReceived] = []
    syncs: list[SyncChanged] = []
    while (event := receiver.next_event()) is not None:
        (cadus if isinstance(event, CaduReceived) else syncs).append(event)

    assert [s.event for s in syncs] == ["locked"], syncs
    assert [c.status for c in cadus] == ["decoded"] * len(cadus), [
        (c.status, c.detail) for c in cadus if c.status != "decoded"
    ]
    decoded = [c.frame for c in cadus]
    first = frames.index(decoded[0]) if decoded and decoded[0] in frames else None
    assert first is not None and first <= 1, "no lock within the first two CADUs"
    assert decoded == frames[first:], "a frame lost or out of order after acquisition"
    # the carrier loop tracked the ramp: its estimate near each CADU against the truth
    errors = [
        abs(c.frequency_offset_hz - pass_offset_hz(c.time_s, fmax=fmax, tc=tc, tau=tau))
        for c in cadus
    ]
    assert max(errors) < 0.1 * fmax, max(errors)
