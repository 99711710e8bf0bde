"""A contact's Doppler handed to the radio layer: ``contacts.sampled_pass`` gives the
channel (``PassChannel``) a pass's slant range and range rate from SGP4, and IQ made
through it decodes.

Provenance of the reference: skyfield 1.53, ``(satellite - station).at(t)``, whose
position and velocity (GCRS, the station turning with the Earth) give the range rate
``r . v / |r|`` independently of our TEME-to-Earth-fixed conversion.  Measured: the
sampled pass's Doppler within 0.095 Hz of ``-f_c rr / c`` at 2.2 GHz (peak 48.4 kHz),
its range within 1.2 cm; the test allows 0.5 Hz and 1 m.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84

from linkstack.cli.main import Streams, main
from linkstack.coding.tm import TmCodingConfig
from linkstack.errors import LocalProtocolError
from linkstack.radio.channel import SPEED_OF_LIGHT_M_S, SampledPass
from linkstack.radio.modem import Impairments, PassChannel
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter, SyncChanged
from linkstack.sim.constellation.contacts import Geometry, Pass, find_passes, sampled_pass
from linkstack.sim.constellation.orbits import Window, load_tle, shipped_epoch
from linkstack.sim.constellation.stations import load_stations
from tests.test_modem import through_pass

TLE_TEXT = (
    Path(__file__).parent.parent
    / "linkstack"
    / "sim"
    / "constellation"
    / "data"
    / "constellation12.tle"
).read_text()
CARRIER_HZ = 2.2e9


@pytest.fixture(scope="module")
def contact() -> tuple[Geometry, Pass]:
    start = shipped_epoch()
    geo = Geometry(
        load_tle(None, window_start=start), load_stations(), Window.at(start, 6 * 3600.0)
    )
    # the highest pass of the first six hours: LINKSTACK-11 over Hartebeesthoek, 88 deg
    return geo, max(find_passes(geo), key=lambda p: p.max_elevation_deg)


def test_doppler_matches_skyfield_range_rate(contact: tuple[Geometry, Pass]) -> None:
    geo, p = contact
    profile = sampled_pass(geo, p, carrier_hz=CARRIER_HZ)
    lines = [line for line in TLE_TEXT.splitlines() if line[:2] in ("1 ", "2 ")]
    ts = load.timescale(builtin=True)
    sat = EarthSatellite(lines[2 * p.sat_index], lines[2 * p.sat_index + 1], ts=ts)
    station = geo.stations[p.station_index]
    place = wgs84.latlon(
        station.latitude_deg, station.longitude_deg, elevation_m=station.altitude_m
    )
    # between the samples (0.37 s off the 1 s grid), rise to set
    times = np.linspace(p.rise_s + 0.37, p.set_s - 0.37, 41)
    at = (sat - place).at(
        ts.from_datetimes([geo.window.start + timedelta(seconds=float(t)) for t in times])
    )
    r, v = at.position.m, at.velocity.m_per_s
    rate = np.sum(r * v, axis=0) / np.linalg.norm(r, axis=0)
    reference = -CARRIER_HZ * rate / SPEED_OF_LIGHT_M_S
    ours = np.array([profile.doppler_hz(float(t)) for t in times])
    np.testing.assert_allclose(ours, reference, atol=0.5)
    ranges = np.array([profile.range_m(float(t)) for t in times])
    np.testing.assert_allclose(ranges, np.linalg.norm(r, axis=0), atol=1.0)
    assert reference[0] > 45e3 and reference[-1] < -45e3  # approaching, then receding


@pytest.mark.parametrize(
    ("modulation", "offset_s"),
    [("bpsk", 10.0), ("bpsk", None)],  # 10 s after rise (+48 kHz), culmination (through 0)
)
def test_iq_through_the_contact_decodes(
    contact: tuple[Geometry, Pass], modulation: str, offset_s: float | None
) -> None:
    # 1.5 s of the pass at 256 kbaud, 2 samples per symbol, Eb/N0 6 dB: every frame.
    geo, p = contact
    start = p.culmination_s - 0.75 if offset_s is None else p.rise_s + offset_s
    profile = sampled_pass(geo, p, carrier_hz=CARRIER_HZ, start_s=start - 1.0, end_s=start + 3.0)
    config = TmCodingConfig(interleave=1)
    baud, sps = 256e3, 2
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, 223, np.uint8).tobytes() for _ in range(int(1.5 * baud / 8288))]
    transmitter = IqTransmitter(config, modulation=modulation, sps=sps)  # type: ignore[arg-type]
    channel = PassChannel(
        Impairments(clock_ppm=20.0, phase=None, ebn0_db=6.0, code_rate=1784 / 4144),
        sample_rate=baud * sps,
        modulation=modulation,  # type: ignore[arg-type]
        sps=sps,
        rng=rng,
        geometry=profile,
        start_s=start,
    )
    receiver = IqReceiver(config, sample_rate=baud * sps, modulation=modulation, sps=sps)  # type: ignore[arg-type]
    events = through_pass(transmitter, channel, receiver, frames)
    assert [e.event for e in events if isinstance(e, SyncChanged)] == ["locked"]
    cadus = [e for e in events if isinstance(e, CaduReceived)]
    assert [c.frame for c in cadus] == frames
    errors = np.array([c.frequency_offset_hz - profile.doppler_hz(start + c.time_s) for c in cadus])
    assert abs(np.mean(errors)) < 15.0  # the demodulator follows the contact's Doppler


def test_sampled_pass_bad_input(contact: tuple[Geometry, Pass]) -> None:
    geo, p = contact
    with pytest.raises(LocalProtocolError, match="outside the pass of LINKSTACK-11"):
        sampled_pass(geo, p, carrier_hz=CARRIER_HZ, start_s=p.rise_s - 5.0)
    with pytest.raises(LocalProtocolError, match="is not an interval"):
        sampled_pass(geo, p, carrier_hz=CARRIER_HZ, start_s=p.set_s - 1, end_s=p.set_s - 2)
    with pytest.raises(LocalProtocolError, match="step 0 s must be positive"):
        sampled_pass(geo, p, carrier_hz=CARRIER_HZ, step_s=0)
    with pytest.raises(LocalProtocolError, match="times must increase"):
        SampledPass(carrier_hz=1e9, times_s=(0.0, 0.0), ranges_m=(1e6, 1e6), range_rates_m_s=(0, 0))
    with pytest.raises(LocalProtocolError, match="need at least two samples"):
        SampledPass(carrier_hz=1e9, times_s=(0.0,), ranges_m=(1e6,), range_rates_m_s=(0,))
    with pytest.raises(LocalProtocolError, match="not a positive frequency"):
        SampledPass(carrier_hz=0, times_s=(0.0, 1.0), ranges_m=(1e6, 1e6), range_rates_m_s=(0, 0))


def test_sampled_pass_interpolates_exactly_a_cubic() -> None:
    # range t^3 + 1e6 m: Hermite with exact rates reproduces it, and its derivative
    t = (0.0, 2.0, 5.0)
    profile = SampledPass(
        carrier_hz=1e9,
        times_s=t,
        ranges_m=tuple(x**3 + 1e6 for x in t),
        range_rates_m_s=tuple(3 * x**2 for x in t),
    )
    assert profile.range_m(3.5) == pytest.approx(3.5**3 + 1e6, abs=1e-6)
    assert profile.range_rate_m_s(3.5) == pytest.approx(3 * 3.5**2, abs=1e-9)
    assert profile.doppler_hz(1.0) == pytest.approx(-1e9 * 3.0 / SPEED_OF_LIGHT_M_S)
    assert profile.range_m(6.0) == pytest.approx(125 + 1e6 + 75.0)  # on along the end's rate


def test_cli_passes_doppler(contact: tuple[Geometry, Pass]) -> None:
    geo, p = contact
    out, err = io.BytesIO(), io.StringIO()
    argv = [
        "constellation",
        "passes",
        "--hours",
        "6",
        "--doppler",
        "--doppler-step",
        "30",
        "--json",
    ]
    assert main(argv, Streams(io.BytesIO(), out, err)) == 0, err.getvalue()
    rows = json.loads(out.getvalue())["passes"]
    row = next(
        r
        for r in rows
        if r["satellite"] == p.satellite
        and r["station"] == p.station
        and abs(r["rise_s"] - p.rise_s) < 1e-2
    )
    profile = row["profile"]
    assert profile["t_s"][0] == round(p.rise_s, 3) and profile["t_s"][-1] == round(p.set_s, 3)
    reference = sampled_pass(geo, p, carrier_hz=CARRIER_HZ)
    assert profile["doppler_hz"][0] == pytest.approx(reference.doppler_hz(p.rise_s), abs=0.01)
    assert profile["doppler_hz"][0] > 45e3 and profile["doppler_hz"][-1] < -45e3
    assert min(profile["delay_ms"]) > 1.6  # 550 km at most overhead: 1.8 ms
