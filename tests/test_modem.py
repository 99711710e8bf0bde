"""The modem below the channel coding (linkstack.radio.modem): SRRC pulse, modulator,
impairment helpers and the streaming demodulator, end to end through the soft-symbol
frame synchronizer (linkstack.coding.soft)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from linkstack.coding.soft import SoftCaduSynchronizer, cadus_to_symbols
from linkstack.coding.tm import FrameDecoded, TmCodingConfig, encode_cadus
from linkstack.errors import LocalProtocolError
from linkstack.radio import modem
from linkstack.radio.channel import LeoPass, slant_range_m
from linkstack.radio.modem import (
    Demodulator,
    Impairments,
    LoopConfig,
    Modulation,
    Modulator,
    PassChannel,
    add_noise,
    coarse_frequency,
    detection_threshold,
    gardner_gain,
    impair,
    map_symbols,
    modulate,
    mth_power_spectrum,
    raised_cosine,
    resample,
    rrc_taps,
    shift_frequency,
)
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter, SyncChanged

CONFIG = TmCodingConfig(interleave=1)  # 259-octet CADUs: 4144 BPSK / 2072 QPSK symbols
SPS = 4
SYMBOL_RATE = 1.0  # Hz: frequencies below are fractions of the symbol rate
SAMPLE_RATE = SPS * SYMBOL_RATE
RAMP = 2048  # idle symbols before the coded stream: the loops acquire within them
LEAD_OCTETS = 16  # coded octets before the first CADU
GNURADIO_PYTHON = Path("/usr/bin/python3")


# ----------------------------------------------------------------------- helpers
@dataclass
class Link:
    frames: list[bytes]
    samples: np.ndarray


def make_link(
    modulation: Modulation,
    count: int,
    seed: int,
    impairments: Impairments,
    *,
    ramp: int = RAMP,
    random_ramp: bool = False,
) -> Link:
    """``count`` random frames -> CADUs -> convolutional code -> symbols -> modulator
    (its alternating ramp, or a random one) -> impairments, all from one seed.

    The coded stream starts with ``LEAD_OCTETS`` random octets, as a downlink's
    encoder runs before the first CADU: the Viterbi decoder needs a few constraint
    lengths of code to settle after the ramp, which is no code sequence (or, for the
    alternating ramp, that of an all-ones input, which ends in another state)."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, CONFIG.frame_octets, np.uint8).tobytes() for _ in range(count)]
    lead = rng.integers(0, 256, LEAD_OCTETS, np.uint8).tobytes()
    symbols = cadus_to_symbols(lead + encode_cadus(frames, CONFIG), modulation=modulation)
    tx = modulate(
        symbols, modulation, SPS, ramp_symbols=ramp, ramp_rng=rng if random_ramp else None
    )
    rx = impair(tx, impairments, modulation=modulation, sps=SPS, sample_rate=SAMPLE_RATE, rng=rng)
    return Link(frames, rx)


def frames_from(modulation: Modulation, soft: np.ndarray) -> list[bytes]:
    sync = SoftCaduSynchronizer(CONFIG, modulation=modulation)
    sync.receive_symbols(soft)
    sync.flush()
    frames = []
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            frames.append(event.frame)
    return frames


def through_pass(
    transmitter: IqTransmitter, channel: PassChannel, receiver: IqReceiver, frames: list[bytes]
) -> list[object]:
    """The frames through the transmitter, 32 at a time, then the channel and the
    receiver, everything flushed: the receiver's events."""
    for first in range(0, len(frames), 32):
        receiver.receive_samples(
            channel.process(transmitter.transmit(frames[first : first + 32]).samples)
        )
    receiver.receive_samples(channel.process(transmitter.flush()))
    receiver.receive_samples(channel.flush())
    receiver.flush()
    events = []
    while (event := receiver.next_event()) is not None:
        events.append(event)
    return events


def random_chunks(total: int, seed: int) -> Iterator[slice]:
    rng = np.random.default_rng(seed)
    start = 0
    while start < total:
        size = int(rng.choice([0, 1, 2, 3, 5, 64, 333, 1000, 4097, 20000]))
        yield slice(start, start + size)
        start += size


def demodulate_chunked(demodulator: Demodulator, samples: np.ndarray, seed: int) -> np.ndarray:
    return np.concatenate(
        [demodulator.process(samples[part]) for part in random_chunks(samples.size, seed)]
    )


# The acceptance impairments: Eb/N0 6 dB per information bit at rate 1/2, a carrier
# offset of 1 % of the symbol rate, a symbol clock 100 ppm fast, a random phase.
HARSH = Impairments(
    clock_ppm=100.0, offset_hz=0.01 * SYMBOL_RATE, phase=None, ebn0_db=6.0, code_rate=0.5
)


# ----------------------------------------------------------------------- pulse shape
@pytest.mark.parametrize(("sps", "rolloff", "span"), [(4, 0.35, 8), (8, 0.5, 12), (2, 0.25, 16)])
def test_rrc_taps_match_the_spectrum(sps: int, rolloff: float, span: int) -> None:
    # Provenance: independent construction, the inverse FFT of the square root of the
    # raised-cosine spectrum (flat to (1 - a)/2T, cosine roll-off to (1 + a)/2T),
    # sampled finely enough that the aliased tail is negligible.
    taps = rrc_taps(sps, rolloff, span)
    assert taps.size == span * sps + 1
    assert np.sum(taps * taps) == pytest.approx(1.0)
    assert np.allclose(taps, taps[::-1])
    n = 1 << 16
    f = np.fft.fftfreq(n, d=1.0 / sps)  # cycles per symbol
    af = np.abs(f)
    lo, hi = (1 - rolloff) / 2, (1 + rolloff) / 2
    spectrum = np.where(af <= lo, 1.0, 0.0)
    band = (af > lo) & (af < hi)
    spectrum[band] = 0.5 * (1 + np.cos(np.pi / rolloff * (af[band] - lo)))
    pulse = np.fft.fftshift(np.real(np.fft.ifft(np.sqrt(spectrum))))
    middle = n // 2
    ideal = pulse[middle - span * sps // 2 : middle + span * sps // 2 + 1]
    assert np.allclose(taps / taps[span * sps // 2], ideal / ideal[span * sps // 2], atol=1e-9)


@pytest.mark.skipif(not GNURADIO_PYTHON.exists(), reason="no system Python for GNU Radio")
def test_rrc_taps_match_gnuradio() -> None:
    # Provenance: GNU Radio 3.10 firdes.root_raised_cosine (Debian package gnuradio), in
    # the system Python; it scales to unit DC gain, so both are compared at unit energy.
    cases = [(4, 0.35, 8), (8, 0.5, 10), (2, 0.25, 16), (5, 1.0, 8)]
    script = (
        "from gnuradio.filter import firdes\n"
        f"for sps, a, span in {cases!r}:\n"
        "    print(' '.join(repr(t) for t in firdes.root_raised_cosine(1.0, sps, 1.0, a,"
        " span * sps + 1)))\n"
    )
    result = subprocess.run(
        [str(GNURADIO_PYTHON), "-c", script], capture_output=True, timeout=120, check=False
    )
    if result.returncode != 0 and b"No module named 'gnuradio'" in result.stderr:
        pytest.skip("GNU Radio is not installed (Debian package gnuradio)")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    lines = result.stdout.decode().splitlines()
    for (sps, rolloff, span), line in zip(cases, lines, strict=True):
        theirs = np.array([float(t) for t in line.split()])
        theirs /= np.sqrt(np.sum(theirs * theirs))
        assert np.allclose(rrc_taps(sps, rolloff, span), theirs, atol=1e-7)  # float32 taps


def test_rrc_through_its_matched_filter_is_nyquist() -> None:
    taps = rrc_taps(SPS, 0.35, 8)
    pulse = np.convolve(taps, taps)
    middle = pulse.size // 2
    assert pulse[middle] == pytest.approx(1.0)
    others = np.delete(pulse[middle % SPS :: SPS], middle // SPS)
    assert np.max(np.abs(others)) < 0.011  # truncation to 8 symbols: ISI below -39 dB
    t = (np.arange(pulse.size) - middle) / SPS
    assert np.allclose(pulse, raised_cosine(t, 0.35), atol=0.012)
    assert raised_cosine(np.array([0.0, 1.0, -2.0]), 0.35) == pytest.approx([1.0, 0.0, 0.0])
    # the removable singularity at t = 1/(2a)
    assert raised_cosine(np.array([1 / 0.7]), 0.35)[0] == pytest.approx(
        raised_cosine(np.array([1 / 0.7 + 1e-7]), 0.35)[0], abs=1e-6
    )


def test_gardner_gain_matches_a_measured_s_curve() -> None:
    # Provenance: the detector's mean output measured on modulator output through the
    # matched filter at known timing offsets (a simulation, independent of the sum over
    # raised-cosine pulses that gardner_gain evaluates).
    sps = 16
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 40_000, np.uint8)
    y = np.convolve(modulate(bits, "bpsk", sps, ramp_symbols=0), rrc_taps(sps, 0.35, 8)).real
    first = 8 * sps  # symbol 0's peak: half a span in each filter

    def measured(offset: int) -> float:
        on = y[first + offset :: sps][:30_000]
        mid = y[first + offset - sps // 2 :: sps][:30_000]
        return float(np.mean(-mid[1:] * (on[:-1] - on[1:])))  # positive when late

    def expected(tau: float) -> float:
        j = np.arange(-64, 65, dtype=np.float64)
        mid, previous, current = (raised_cosine(j + d + tau, 0.35) for d in (-0.5, -1.0, 0.0))
        return float(-np.sum(mid * (previous - current)))

    slope = (measured(1) - measured(-1)) / (2 / sps)
    assert slope == pytest.approx((expected(1 / sps) - expected(-1 / sps)) / (2 / sps), rel=0.02)
    assert slope == pytest.approx(gardner_gain(0.35), rel=0.05)  # a secant, not the tangent
    for offset in (-4, -2, 2, 4):  # the S-curve, out to a quarter symbol
        assert measured(offset) == pytest.approx(expected(offset / sps), rel=0.03)
    assert gardner_gain(1.0) > gardner_gain(0.5) > gardner_gain(0.35) > 0


# ----------------------------------------------------------------------- modulator
def test_modulator_maps_bits_as_gnuradio_and_qpsk_map() -> None:
    # BPSK bit 1 -> +1 (constellation_bpsk); QPSK I = first bit, Q = second, 1 -> +1.
    assert map_symbols(np.array([0, 1], np.uint8), "bpsk").tolist() == [-1, 1]
    qpsk = map_symbols(np.array([1, 0, 0, 1], np.uint8), "qpsk") * np.sqrt(2)
    assert np.allclose(qpsk, [1 - 1j, -1 + 1j])
    from_points = map_symbols(cadus_to_symbols(b"\x1a\xcf", modulation="qpsk"), "qpsk")
    from_bits = map_symbols(cadus_to_symbols(b"\x1a\xcf"), "qpsk")
    assert np.allclose(from_points, from_bits)
    # through the matched filter, sampled at the symbol instants: the symbols again
    for modulation in ("bpsk", "qpsk"):
        bits = np.random.default_rng(2).integers(0, 2, 2000, np.uint8)
        samples = modulate(bits, modulation, SPS, ramp_symbols=0)
        assert samples.dtype == np.complex64
        assert np.mean(np.abs(samples) ** 2) == pytest.approx(1 / SPS, rel=0.05)
        y = np.convolve(samples, rrc_taps(SPS, 0.35, 8))
        delay = 8 * SPS  # half a span in each filter
        expected = map_symbols(bits, modulation)
        got = y[delay::SPS][: expected.size]
        assert np.max(np.abs(got - expected)) < 0.05  # ISI of the truncated pulses
        assert np.sqrt(np.mean(np.abs(got - expected) ** 2)) < 0.02


def test_modulator_streaming_equals_whole_buffer() -> None:
    rng = np.random.default_rng(3)
    for modulation in ("bpsk", "qpsk"):
        bits = rng.integers(0, 2, 5000, np.uint8)
        whole = modulate(bits, modulation, SPS, ramp_symbols=100, ramp_rng=np.random.default_rng(4))
        streamer = Modulator(modulation, SPS, ramp_symbols=100, ramp_rng=np.random.default_rng(4))
        parts = []
        step = 2 if modulation == "qpsk" else 1
        start = 0
        for symbols in (0, 1, 7, 64, 999, 2):
            parts.append(streamer.process(bits[start : start + symbols * step]))
            start += symbols * step
        parts.append(streamer.process(bits[start:]))
        parts.append(streamer.flush())
        streamed = np.concatenate(parts)
        assert streamed.size == (100 + bits.size // step + 8) * SPS
        assert np.array_equal(streamed, whole)


def test_modulator_ramp() -> None:
    # alternating idle symbols by default; the ramp comes once, before the first symbol
    samples = Modulator("bpsk", SPS, ramp_symbols=64).process(np.zeros(0, np.uint8))
    y = np.convolve(samples, rrc_taps(SPS, 0.35, 8))[8 * SPS :: SPS][16:48]
    assert np.allclose(np.sign(y.real), np.where(np.arange(16, 48) % 2 == 0, 1, -1))
    modulator = Modulator("qpsk", SPS, ramp_symbols=10)
    assert modulator.process(np.zeros(2, np.uint8)).size == 11 * SPS
    assert modulator.process(np.zeros(2, np.uint8)).size == SPS
    assert modulate(np.zeros(0, np.uint8), ramp_symbols=0).size == 8 * SPS  # the tail


def test_modulator_spectrum_and_rolloff() -> None:
    # Averaged periodogram of random BPSK: flat passband, -3 dB at half the symbol rate
    # (the SRRC's power response there is 1/2), nothing beyond (1 + a)/2.
    bits = np.random.default_rng(5).integers(0, 2, 400_000, np.uint8)
    x = modulate(bits, "bpsk", SPS, ramp_symbols=0)
    nfft = 512
    segments = x[: x.size // nfft * nfft].reshape(-1, nfft) * np.hanning(nfft)
    psd = np.fft.fftshift(np.mean(np.abs(np.fft.fft(segments, axis=1)) ** 2, axis=0))
    f = np.fft.fftshift(np.fft.fftfreq(nfft, d=1.0 / SPS))  # cycles per symbol
    db = 10 * np.log10(psd / np.mean(psd[np.abs(f) < 0.2]))
    assert np.all(np.abs(db[np.abs(f) < 0.3]) < 0.5)
    edge = np.argmin(np.abs(f - 0.5))
    assert db[edge] == pytest.approx(-3.0, abs=0.5)
    assert np.all(db[np.abs(f) > 0.5 * 1.35 * 1.1] < -30)
    assert np.all(db[np.abs(f) > 1.0] < -40)


def test_map_symbols_refuses_what_it_cannot_map() -> None:
    with pytest.raises(LocalProtocolError, match="whole QPSK symbols"):
        map_symbols(np.array([1, 0, 1], np.uint8), "qpsk")
    with pytest.raises(LocalProtocolError, match="0 and 1"):
        map_symbols(np.array([2], np.uint8), "bpsk")
    with pytest.raises(LocalProtocolError, match="BPSK symbols of dtype complex"):
        map_symbols(np.array([1j]), "bpsk")
    with pytest.raises(LocalProtocolError, match="QPSK symbols of dtype float"):
        map_symbols(np.array([1.0]), "qpsk")
    with pytest.raises(LocalProtocolError, match="1-D"):
        map_symbols(np.zeros((2, 2), np.uint8), "bpsk")
    with pytest.raises(LocalProtocolError, match="modulation"):
        Modulator("8psk")  # type: ignore[arg-type]
    for bad in (dict(sps=1), dict(sps=2.5), dict(rolloff=0.0), dict(rolloff=1.5), dict(span=7)):
        with pytest.raises(LocalProtocolError):
            Modulator(**bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="ramp_symbols"):
        Modulator(ramp_symbols=-1)


# ----------------------------------------------------------------------- impairments
def test_add_noise_is_n0_per_complex_sample() -> None:
    rng = np.random.default_rng(6)
    zeros = np.zeros(400_000, np.complex64)
    # Eb/N0 3 dB per information bit, QPSK (2 bits per symbol), rate 1/2: Eb = Es = 1
    noise = add_noise(zeros, ebn0_db=3.0, modulation="qpsk", sps=SPS, rng=rng, code_rate=0.5)
    assert noise.dtype == np.complex64
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(10**-0.3, rel=0.01)
    assert np.var(noise.real) == pytest.approx(np.var(noise.imag), rel=0.02)
    uncoded = add_noise(zeros, ebn0_db=0.0, modulation="bpsk", sps=SPS, rng=rng)
    assert np.mean(np.abs(uncoded) ** 2) == pytest.approx(1.0, rel=0.01)
    with pytest.raises(LocalProtocolError, match="code_rate"):
        add_noise(zeros, ebn0_db=0.0, modulation="bpsk", sps=SPS, rng=rng, code_rate=0.0)


def test_shift_frequency_offset_and_ramp() -> None:
    ones = np.ones(10_000, np.complex64)
    shifted = shift_frequency(ones, sample_rate=1000.0, offset_hz=10.0, rate_hz_s=20.0, phase=1.0)
    assert np.angle(shifted[0]) == pytest.approx(1.0, abs=1e-6)
    inst = np.angle(shifted[1:] * np.conj(shifted[:-1])) * 1000.0 / (2 * np.pi)
    t = (np.arange(inst.size) + 0.5) / 1000.0
    assert np.allclose(inst, 10.0 + 20.0 * t, atol=1e-3)
    with pytest.raises(LocalProtocolError, match="sample_rate"):
        shift_frequency(ones, sample_rate=0.0)


def test_resample_scales_time() -> None:
    # A tone at 0.05 cycles/sample, resampled for a clock 1000 ppm fast, comes out at
    # 0.05 * 1.001 cycles/sample, with the length shrunk by the same ratio.
    n = np.arange(100_000)
    tone = np.exp(2j * np.pi * 0.05 * n)
    out = resample(tone, ppm=1000.0)
    assert out.size == int(np.floor((tone.size - 1) / 1.001)) + 1
    middle = out[1000:-1000]
    freq = np.angle(np.sum(middle[1:] * np.conj(middle[:-1]))) / (2 * np.pi)
    assert freq == pytest.approx(0.05 * 1.001, rel=1e-6)
    assert np.max(np.abs(np.abs(middle) - 1.0)) < 1e-3  # the interpolator's accuracy
    assert np.allclose(resample(tone[:1000], ppm=0.0)[20:-20], tone[20:980], atol=1e-3)
    assert resample(np.zeros(0), ppm=5.0).size == 0


# ----------------------------------------------------------------------- end to end
@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
def test_every_frame_through_the_harsh_link(modulation: Modulation) -> None:
    # 1 % carrier offset, 100 ppm clock, random phase, Eb/N0 6 dB: after the ramp, every
    # frame decodes and nothing else does; the loops' estimates are the channel's.
    link = make_link(modulation, 12, seed=10, impairments=HARSH)
    demodulator = Demodulator(modulation, SPS, sample_rate=SAMPLE_RATE)
    soft = demodulator.process(link.samples)
    assert soft.dtype == (np.complex64 if modulation == "qpsk" else np.float32)
    frames = frames_from(modulation, soft)
    assert set(frames) == set(link.frames)
    stats = demodulator.stats
    assert stats.locked
    assert stats.frequency_offset_symbol == pytest.approx(0.01, abs=5e-4)
    assert stats.frequency_offset_hz == pytest.approx(0.01 * SYMBOL_RATE, rel=0.05)
    assert stats.frequency_offset == pytest.approx(0.01 / SPS, rel=0.05)  # cycles/sample
    assert stats.clock_offset_ppm == pytest.approx(100.0, abs=40.0)
    es_n0_db = 6.0 + 10 * np.log10(0.5 * (2 if modulation == "qpsk" else 1))
    assert stats.es_n0_db == pytest.approx(es_n0_db, abs=1.0)
    assert abs(stats.timing_error) < 0.05
    # soft symbols scaled to ~1 per dimension
    tail = soft[-5000:]
    assert np.mean(np.abs(tail.real)) == pytest.approx(1.0, abs=0.25)
    assert stats.samples == link.samples.size
    assert stats.symbols == soft.size


@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
def test_doppler_ramp_over_a_long_pass(modulation: Modulation) -> None:
    # A LEO pass at S-band sweeps about 55 kHz of offset at up to about 1 kHz/s.  Scaled
    # so that the peak offset is 1 % of the symbol rate, the sweep here goes from +1 %
    # to -1 % over the whole stream (a full pass compressed into a few seconds at
    # 256 kbaud: hundreds of times the scaled rate), on top of the clock offset and
    # noise: no frame is lost.
    count = 150 if modulation == "bpsk" else 300
    per_cadu = 8 * CONFIG.cadu_length * 2 // (2 if modulation == "qpsk" else 1)
    duration_s = (RAMP + count * per_cadu) / SYMBOL_RATE  # to within the lead octets
    impairments = Impairments(
        clock_ppm=100.0,
        offset_hz=0.01 * SYMBOL_RATE,
        rate_hz_s=-0.02 * SYMBOL_RATE / duration_s,
        phase=None,
        ebn0_db=6.0,
        code_rate=0.5,
    )
    link = make_link(modulation, count, seed=11, impairments=impairments)
    demodulator = Demodulator(modulation, SPS)
    soft = demodulator.process(link.samples)
    assert set(frames_from(modulation, soft)) == set(link.frames)
    assert demodulator.stats.frequency_offset_symbol == pytest.approx(-0.01, abs=5e-4)
    assert demodulator.stats.locked


@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
def test_chunked_equals_whole_buffer(modulation: Modulation) -> None:
    link = make_link(modulation, 4, seed=12, impairments=HARSH, random_ramp=True)
    whole = Demodulator(modulation, SPS).process(link.samples)
    chunked = demodulate_chunked(Demodulator(modulation, SPS), link.samples, seed=13)
    assert np.array_equal(whole, chunked)  # bit-identical, not merely close
    assert set(frames_from(modulation, chunked)) == set(link.frames)


@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
def test_python_fallback_matches_numba(modulation: Modulation) -> None:
    # The same kernel run by the interpreter: equal to float rounding (libm's and
    # LLVM's cos/sin may differ in the last bit), the same frames.
    link = make_link(modulation, 1, seed=14, impairments=HARSH, ramp=256)
    fast = Demodulator(modulation, SPS).process(link.samples)
    slow = Demodulator(modulation, SPS, backend="python").process(link.samples)
    assert fast.size == slow.size
    assert np.allclose(fast, slow, atol=1e-3)
    if modem.NUMBA_AVAILABLE:
        assert Demodulator(modulation, SPS, backend="numba").process(link.samples).size
    with pytest.raises(LocalProtocolError, match="backend"):
        Demodulator(modulation, SPS, backend="cuda")  # type: ignore[arg-type]


def test_input_level_does_not_matter() -> None:
    # The AGC: the same link at +60 dB and -60 dB.
    link = make_link("bpsk", 3, seed=15, impairments=HARSH)
    for scale in (1e3, 1e-3):
        soft = Demodulator("bpsk", SPS).process(link.samples * scale)
        assert set(frames_from("bpsk", soft)) == set(link.frames)
        assert np.mean(np.abs(soft[-2000:])) == pytest.approx(1.0, abs=0.25)


# ----------------------------------------------------------------------- bad input
def test_nan_block_is_counted_and_the_loops_recover() -> None:
    # A burst of NaN (a dropped USB transfer, say) and an impulse of 1e30 in the middle
    # of a 10-CADU stream: nothing raises, the bad samples are counted, and only the
    # CADUs they touch are lost.
    link = make_link("bpsk", 10, seed=16, impairments=HARSH)
    samples = link.samples.copy()
    cadu_samples = 8 * CONFIG.cadu_length * 2 * SPS
    lead_samples = 8 * LEAD_OCTETS * 2 * SPS
    hole = (RAMP * SPS + lead_samples) + 4 * cadu_samples + cadu_samples // 2  # in CADU 4
    samples[hole : hole + 3000] = np.nan
    samples[hole + 3000] = np.inf
    samples[hole + 3001] = 1e30
    demodulator = Demodulator("bpsk", SPS)
    soft = demodulate_chunked(demodulator, samples, seed=17)
    assert np.all(np.isfinite(soft))
    assert demodulator.stats.invalid_samples == 3001
    frames = set(frames_from("bpsk", soft))
    assert frames <= set(link.frames)
    touched = {3, 4, 5}  # the hole, and a neighbour either side while the loops settle
    assert {f for i, f in enumerate(link.frames) if i not in touched} <= frames


def test_empty_input() -> None:
    for modulation, dtype in (("bpsk", np.float32), ("qpsk", np.complex64)):
        demodulator = Demodulator(modulation, SPS)  # type: ignore[arg-type]
        out = demodulator.process(np.zeros(0, np.complex64))
        assert out.dtype == dtype and out.size == 0
        assert demodulator.process([]).size == 0
        assert demodulator.stats.samples == 0 and demodulator.stats.symbols == 0
        assert not demodulator.stats.locked


def test_pure_noise_gives_no_frames() -> None:
    rng = np.random.default_rng(18)
    for modulation in ("bpsk", "qpsk"):
        noise = (rng.standard_normal(400_000) + 1j * rng.standard_normal(400_000)).astype(
            np.complex64
        )
        demodulator = Demodulator(modulation, SPS)  # type: ignore[arg-type]
        soft = demodulate_chunked(demodulator, noise, seed=19)
        assert np.all(np.isfinite(soft))
        assert soft.size == pytest.approx(noise.size / SPS, rel=0.01)
        assert frames_from(modulation, soft) == []  # type: ignore[arg-type]
        assert not demodulator.stats.locked
        assert abs(demodulator.stats.frequency_offset_symbol) <= LoopConfig().max_frequency
        assert demodulator.stats.retunes == 0  # no coarse "carrier" found in noise
    # all zeros: nothing to normalize, nothing divided by zero
    silent = Demodulator("bpsk", SPS).process(np.zeros(10_000, np.complex64))
    assert np.all(silent == 0)


def test_bad_arguments() -> None:
    demodulator = Demodulator("qpsk", SPS)
    with pytest.raises(LocalProtocolError, match="1-D"):
        demodulator.process(np.zeros((4, 4), np.complex64))
    with pytest.raises(LocalProtocolError, match="not numbers"):
        demodulator.process(np.array(["a"]))
    with pytest.raises(LocalProtocolError, match="sample_rate"):
        Demodulator(sample_rate=-1.0)
    with pytest.raises(LocalProtocolError, match="carrier_bandwidth"):
        LoopConfig(carrier_bandwidth=0.5)
    with pytest.raises(LocalProtocolError, match="damping"):
        LoopConfig(damping=0.0)
    with pytest.raises(LocalProtocolError, match="agc_symbols"):
        LoopConfig(agc_symbols=0)
    with pytest.raises(LocalProtocolError, match="max_frequency"):
        LoopConfig(max_frequency=0.2)
    with pytest.raises(LocalProtocolError, match="carrier_lock_threshold"):
        LoopConfig(carrier_lock_threshold=1.5)
    with pytest.raises(LocalProtocolError, match="max_clock_offset"):
        LoopConfig(max_clock_offset=0.0)
    with pytest.raises(LocalProtocolError, match="ppm"):
        resample(np.zeros(4), ppm=-6e5)
    with pytest.raises(LocalProtocolError, match="coarse_symbols 100 "):
        LoopConfig(coarse_symbols=100)
    with pytest.raises(LocalProtocolError, match="coarse_blocks 0 "):
        LoopConfig(coarse_blocks=0)
    with pytest.raises(LocalProtocolError, match=r"coarse_range -0\.1 "):
        LoopConfig(coarse_range=-0.1)
    with pytest.raises(LocalProtocolError, match=r"retune_threshold 0\.6 "):
        LoopConfig(retune_threshold=0.6)
    with pytest.raises(LocalProtocolError, match=r"coarse_false_alarm 0\.0 "):
        LoopConfig(coarse_false_alarm=0.0)
    # the fourth power at 2 samples per symbol is unambiguous to 0.25 cycles/symbol only
    with pytest.raises(LocalProtocolError, match=r"coarse_range 0\.3 .* 0\.225 .* sps 2"):
        Demodulator("qpsk", 2, loops=LoopConfig(coarse_range=0.3))
    assert Demodulator("qpsk", 2).coarse_range == pytest.approx(0.225)
    assert Demodulator("bpsk", 2).coarse_range == 0.25


@pytest.mark.parametrize("sps", [2, 3, 8])
def test_other_samples_per_symbol(sps: int) -> None:
    # At two samples per symbol and a fast clock, two interpolants sometimes fall
    # between the same two samples; flush() lets the last symbols out.
    rng = np.random.default_rng(20 + sps)
    frames = [rng.integers(0, 256, CONFIG.frame_octets, np.uint8).tobytes() for _ in range(4)]
    lead = rng.integers(0, 256, LEAD_OCTETS, np.uint8).tobytes()
    symbols = cadus_to_symbols(lead + encode_cadus(frames, CONFIG))
    tx = modulate(symbols, "bpsk", sps, ramp_symbols=RAMP)
    rx = impair(tx, HARSH, modulation="bpsk", sps=sps, sample_rate=sps * SYMBOL_RATE, rng=rng)
    demodulator = Demodulator("bpsk", sps)
    soft = np.concatenate((demodulator.process(rx), demodulator.flush()))
    assert set(frames_from("bpsk", soft)) == set(frames)
    assert demodulator.stats.samples == rx.size
    assert demodulator.stats.clock_offset_ppm == pytest.approx(100.0, abs=40.0)


# ----------------------------------------------------------------------- coarse carrier
@pytest.mark.parametrize(
    ("modulation", "sps"), [("bpsk", 4), ("bpsk", 2), ("qpsk", 4), ("qpsk", 2)]
)
def test_coarse_estimator_finds_a_fifth_of_the_symbol_rate(
    modulation: Modulation, sps: int
) -> None:
    # 0.21 cycles/symbol (55 kHz at 256 kbaud), Eb/N0 6 dB at rate 1/2, one block of
    # 2048 symbols: the peak of the M-th power's spectrum stands far above the
    # detection threshold and gives the offset to a thousandth of the symbol rate
    # (what the FLL then pulls in from); noise alone stays below the threshold.
    rng = np.random.default_rng(40 + sps)
    order = 4 if modulation == "qpsk" else 2
    bits = rng.integers(0, 2, 3000 * (order // 2), np.uint8)
    tx = modulate(bits, modulation, sps, ramp_symbols=0)
    offset = 0.21 / sps  # cycles per sample
    rx = impair(
        tx,
        Impairments(offset_hz=offset, phase=None, ebn0_db=6.0, code_rate=0.5),
        modulation=modulation,
        sps=sps,
        sample_rate=1.0,
        rng=rng,
    )
    block = rx[500 : 500 + 2048 * sps]
    span = min(0.25, 0.9 * sps / (2 * order)) / sps  # the Demodulator's default range
    band = span + 0.675 / sps
    estimate = coarse_frequency(
        mth_power_spectrum(block, order=order, band=band), order=order, span=span
    )
    assert estimate.detected
    assert abs(estimate.frequency - offset) * sps < 1e-3
    noise = add_noise(np.zeros(block.size), ebn0_db=6.0, modulation=modulation, sps=sps, rng=rng)
    quiet = coarse_frequency(
        mth_power_spectrum(noise, order=order, band=band), order=order, span=span
    )
    assert not quiet.detected


def test_detection_threshold_is_the_union_bound() -> None:
    # one block: each bin's ratio is exponential, so bins * exp(-t) = p_fa exactly
    assert detection_threshold(1, 4096, 1e-6) == pytest.approx(np.log(4096 / 1e-6), rel=1e-9)
    # averaging blocks narrows the noise: lower thresholds, towards 1
    thresholds = [detection_threshold(b, 4096, 1e-6) for b in (1, 2, 4, 8, 64)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert 1.0 < thresholds[-1] < 3.0
    with pytest.raises(LocalProtocolError, match="blocks 0"):
        detection_threshold(0, 10, 1e-6)


def test_coarse_estimator_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError, match="order 3"):
        mth_power_spectrum(np.ones(64), order=3, band=0.2)
    with pytest.raises(LocalProtocolError, match=r"band 0\.7"):
        mth_power_spectrum(np.ones(64), order=2, band=0.7)
    with pytest.raises(LocalProtocolError, match="1-D block"):
        mth_power_spectrum(np.ones((8, 8)), order=2, band=0.2)
    with pytest.raises(LocalProtocolError, match="alias"):
        coarse_frequency(np.ones(64), order=4, span=0.2)
    with pytest.raises(LocalProtocolError, match="fewer than 3"):
        coarse_frequency(np.ones(64), order=2, span=0.001)


# ----------------------------------------------------------------------- the S-band pass
def test_leo_pass_geometry() -> None:
    # 400 km, 2.2 GHz: the figures LeoPass's docstring states, and its derivatives
    # against finite differences of its own range.
    geometry = LeoPass()
    assert geometry.half_pass_s == pytest.approx(304.853, abs=1e-3)
    assert geometry.range_m(0.0) == pytest.approx(400e3)
    assert geometry.range_m(geometry.half_pass_s) == pytest.approx(slant_range_m(400e3, 0.0))
    assert geometry.elevation_deg(0.0) == pytest.approx(90.0)
    assert geometry.elevation_deg(-geometry.half_pass_s) == pytest.approx(0.0, abs=1e-9)
    assert geometry.doppler_hz(-geometry.half_pass_s) == pytest.approx(52978.45, abs=0.01)
    assert geometry.doppler_hz(0.0) == 0.0
    assert geometry.doppler_rate_hz_s(0.0) == pytest.approx(-1016.206, abs=1e-3)
    h = 1e-3
    for t in (-250.0, -40.0, 0.0, 120.0):
        rate = (geometry.range_m(t + h) - geometry.range_m(t - h)) / (2 * h)
        assert geometry.range_rate_m_s(t) == pytest.approx(rate, rel=1e-6, abs=1e-6)
        change = (geometry.doppler_hz(t + h) - geometry.doppler_hz(t - h)) / (2 * h)
        assert geometry.doppler_rate_hz_s(t) == pytest.approx(change, rel=1e-5)
    with pytest.raises(LocalProtocolError, match=r"altitude 50000\.0 m"):
        LeoPass(altitude_m=50e3)
    with pytest.raises(LocalProtocolError, match="carrier -1"):
        LeoPass(carrier_hz=-1.0)


def test_pass_channel_without_a_pass_is_impair() -> None:
    # No geometry: the same clock, offset and phase as impair() (independent code:
    # whole-buffer numpy), chunked arbitrarily, and chunking changes nothing.
    rng = np.random.default_rng(30)
    tx = modulate(rng.integers(0, 2, 6000, np.uint8), "bpsk", SPS)
    impairments = Impairments(clock_ppm=150.0, offset_hz=0.003, phase=0.7)
    reference = impair(tx, impairments, modulation="bpsk", sps=SPS, sample_rate=1.0, rng=rng)

    def through(chunks: Iterator[slice]) -> np.ndarray:
        channel = PassChannel(impairments, sample_rate=1.0, modulation="bpsk", sps=SPS, rng=rng)
        parts = [channel.process(tx[part]) for part in chunks]
        return np.concatenate([*parts, channel.flush()])

    whole = through(iter([slice(0, tx.size)]))
    assert whole.size == reference.size
    # 8 taps here, 12 in resample(): equal to the interpolators' difference
    assert np.max(np.abs(whole - reference)) < 2e-3
    assert np.array_equal(through(random_chunks(tx.size, seed=31)), whole)


def test_pass_channel_follows_the_pass() -> None:
    # A constant envelope through the pass near culmination: the phase of the output
    # turns at the pass's Doppler, and the positions read run fast by the clock and
    # the range rate.
    geometry = LeoPass()
    rate = 1e6
    channel = PassChannel(
        Impairments(clock_ppm=100.0),
        sample_rate=rate,
        modulation="bpsk",
        sps=SPS,
        rng=np.random.default_rng(0),
        geometry=geometry,
        start_s=-20.0,
    )
    out = np.concatenate([channel.process(np.ones(1 << 16, np.complex64)) for _ in range(16)])
    steps = np.angle(out[1:].astype(np.complex128) * np.conj(out[:-1]))  # rad per sample
    for at in (1000, out.size // 2, out.size - 3001):
        measured = np.sum(steps[at : at + 2000]) / (2 * np.pi * 2000 / rate)
        expected = geometry.doppler_hz(-20.0 + (at + 1000) / rate)
        assert measured == pytest.approx(expected, abs=0.1)
    position, _ = channel.position(1e6)
    drift = 1e6 * (1 + 100e-6) * (geometry.range_m(-20.0) - geometry.range_m(-19.0)) / 299_792_458.0
    assert position - 1e6 * (1 + 100e-6) == pytest.approx(drift, abs=1e-6)
    assert channel.received_index(position) == pytest.approx(1e6, abs=1e-6)
    with pytest.raises(LocalProtocolError, match="flushed"):
        channel.flush()
        channel.process(np.ones(4))
    with pytest.raises(LocalProtocolError, match="sample_rate"):
        PassChannel(
            Impairments(), sample_rate=0.0, modulation="bpsk", sps=4, rng=np.random.default_rng()
        )
    with pytest.raises(LocalProtocolError, match="half_taps 0"):
        PassChannel(
            Impairments(),
            sample_rate=1.0,
            modulation="bpsk",
            sps=4,
            rng=np.random.default_rng(),
            half_taps=0,
        )


@pytest.mark.parametrize(
    ("modulation", "sps", "start_s", "retunes"),
    [
        ("bpsk", 2, -300.0, 1),  # the horizon: +53 kHz, 0.207 of the symbol rate
        ("qpsk", 4, 298.5, 1),  # setting: -53 kHz
        ("bpsk", 4, -0.75, 0),  # culmination: through zero at 1.02 kHz/s
        ("qpsk", 2, -0.75, 0),
    ],
)
def test_windows_of_the_full_scale_pass(
    modulation: Modulation, sps: int, start_s: float, retunes: int
) -> None:
    # 1.5 s of the 10-minute S-band pass of tests/test_radio_doppler.py (256 kbaud,
    # 100 ppm, Eb/N0 6 dB per information bit), at full scale: acquired blind within
    # the ramp, every frame exact, the demodulator on the pass's Doppler.
    config = TmCodingConfig(interleave=1)
    baud = 256e3
    rng = np.random.default_rng(50 + sps)
    frames = [
        rng.integers(0, 256, 223, np.uint8).tobytes()
        for _ in range(int(1.5 * baud / 8288 * (2 if modulation == "qpsk" else 1)))
    ]
    geometry = LeoPass()
    transmitter = IqTransmitter(config, modulation=modulation, sps=sps)
    channel = PassChannel(
        Impairments(clock_ppm=100.0, phase=None, ebn0_db=6.0, code_rate=1784 / 4144),
        sample_rate=baud * sps,
        modulation=modulation,
        sps=sps,
        rng=rng,
        geometry=geometry,
        start_s=start_s,
    )
    receiver = IqReceiver(config, sample_rate=baud * sps, modulation=modulation, sps=sps)
    events = through_pass(transmitter, channel, receiver, frames)
    assert [e.event for e in events if isinstance(e, SyncChanged)] == ["locked"]
    cadus = [e for e in events if isinstance(e, CaduReceived)]
    # Both acquire within the transmitter's 1024 idle symbols and its lead (1024 bits
    # per bit of a symbol: as many symbols for QPSK as for BPSK): every frame arrives,
    # the first one included.
    assert [c.frame for c in cadus] == frames
    assert receiver.stats.demodulator.retunes == retunes
    # the loops' frequency near each CADU: unbiased, its jitter (about 30 Hz rms at
    # Es/N0 2.3 dB) well within the carrier loop's reach
    errors = np.array(
        [c.frequency_offset_hz - geometry.doppler_hz(start_s + c.time_s) for c in cadus]
    )
    assert abs(np.mean(errors)) < 15.0
    assert np.max(np.abs(errors)) < 150.0
