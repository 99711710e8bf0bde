"""Pictures of a simulation (matplotlib, imported only here): the round trip's CDF,
a contact timeline per station, ground tracks on a world outline."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from linkstack.sim.constellation.orbits import ecef_km
from linkstack.sim.constellation.simulation import TARGET_S, SimResult

#: A coarse hand-drawn outline of the continents, (longitude, latitude) degrees: a
#: backdrop for the ground tracks, a few hundred kilometres off in places, not a map.
WORLD: Final[tuple[tuple[tuple[float, float], ...], ...]] = (
    # North America
    (
        (-168, 66),
        (-156, 71),
        (-128, 70),
        (-95, 72),
        (-80, 68),
        (-62, 60),
        (-56, 52),
        (-66, 45),
        (-70, 42),
        (-76, 35),
        (-81, 31),
        (-80, 25),
        (-84, 30),
        (-90, 29),
        (-97, 26),
        (-97, 21),
        (-88, 21),
        (-87, 16),
        (-83, 10),
        (-78, 8),
        (-86, 12),
        (-92, 14),
        (-105, 20),
        (-112, 29),
        (-115, 32),
        (-120, 34),
        (-124, 40),
        (-124, 48),
        (-133, 56),
        (-146, 61),
        (-158, 57),
        (-165, 60),
        (-168, 66),
    ),
    # Greenland
    (
        (-55, 60),
        (-44, 60),
        (-20, 70),
        (-18, 78),
        (-30, 83),
        (-60, 82),
        (-72, 78),
        (-55, 68),
        (-55, 60),
    ),
    # South America
    (
        (-78, 8),
        (-72, 12),
        (-62, 11),
        (-52, 5),
        (-35, -5),
        (-39, -15),
        (-48, -26),
        (-58, -35),
        (-65, -42),
        (-68, -52),
        (-74, -52),
        (-73, -40),
        (-71, -18),
        (-81, -5),
        (-78, 8),
    ),
    # Europe and Asia
    (
        (-10, 36),
        (-9, 43),
        (-2, 44),
        (-5, 48),
        (2, 51),
        (8, 54),
        (10, 58),
        (5, 62),
        (15, 69),
        (28, 71),
        (40, 67),
        (60, 69),
        (80, 73),
        (105, 78),
        (140, 72),
        (170, 70),
        (180, 66),
        (163, 60),
        (156, 51),
        (142, 53),
        (135, 43),
        (128, 35),
        (121, 31),
        (120, 23),
        (108, 21),
        (106, 10),
        (100, 13),
        (103, 1),
        (98, 8),
        (97, 17),
        (92, 22),
        (80, 15),
        (77, 8),
        (73, 18),
        (67, 24),
        (57, 25),
        (56, 27),
        (48, 30),
        (52, 24),
        (59, 22),
        (52, 16),
        (43, 12),
        (39, 21),
        (33, 28),
        (35, 36),
        (27, 37),
        (26, 41),
        (24, 38),
        (19, 42),
        (15, 45),
        (18, 40),
        (12, 44),
        (9, 44),
        (3, 43),
        (-1, 38),
        (-6, 36),
        (-10, 36),
    ),
    # Africa
    (
        (-17, 21),
        (-10, 30),
        (-6, 36),
        (10, 37),
        (11, 33),
        (20, 31),
        (32, 31),
        (34, 28),
        (43, 12),
        (51, 12),
        (40, -3),
        (40, -15),
        (35, -25),
        (27, -34),
        (18, -35),
        (12, -17),
        (13, -5),
        (9, 4),
        (-8, 4),
        (-17, 14),
        (-17, 21),
    ),
    # Australia
    (
        (114, -22),
        (122, -18),
        (131, -12),
        (137, -12),
        (142, -11),
        (146, -19),
        (153, -26),
        (150, -37),
        (141, -38),
        (131, -31),
        (115, -34),
        (114, -22),
    ),
    # Antarctica (its coast)
    (
        (-180, -78),
        (-140, -75),
        (-100, -73),
        (-60, -64),
        (-30, -77),
        (0, -70),
        (60, -67),
        (120, -66),
        (170, -72),
        (180, -78),
    ),
)


def write_plots(result: SimResult, directory: str | Path, *, prefix: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    trips = np.sort([o.round_trip_s for o in result.outcomes if o.round_trip_s is not None])
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(trips):
        share = np.arange(1, len(trips) + 1) / len(result.outcomes)
        ax.step(trips, share, where="post")
    ax.axvline(TARGET_S, color="grey", linestyle="--", label="2 minutes")
    ax.set_xscale("log")
    ax.set_xlabel("round trip, s (query at the station to its last id on the ground)")
    ax.set_ylabel("share of queries")
    ax.set_title(
        f"{result.report['constellation']['satellites']} satellites, "
        f"{len(result.report['stations'])} stations: round trip CDF"
    )
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    written.append(out / f"{prefix}round_trip_cdf.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    stations = result.report["stations"]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(stations)))
    for j in range(len(stations)):
        spans = [
            (p.rise_s / 3600, p.duration_s / 3600)
            for p in result.plan.passes
            if p.station_index == j
        ]
        ax.broken_barh(spans, (j - 0.35, 0.7))
    ax.set_yticks(range(len(stations)), stations)
    ax.set_xlabel("hours from the window start")
    ax.set_title("contacts per station (any satellite)")
    ax.set_xlim(0, result.geometry.window.duration_s / 3600)
    written.append(out / f"{prefix}contact_timeline.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    for outline in WORLD:
        xs, ys = zip(*outline, strict=True)
        ax.plot(xs, ys, color="grey", linewidth=0.8)
    sats = result.geometry.sats[:: max(1, len(result.geometry.sats) // 24)]
    times = np.arange(0.0, 2 * 3600.0, 30.0)
    pos = ecef_km(sats, result.geometry.window, times)
    lon = np.degrees(np.arctan2(pos[..., 1], pos[..., 0]))
    lat = np.degrees(np.arcsin(pos[..., 2] / np.linalg.norm(pos, axis=-1)))
    for k in range(len(sats)):
        jumps = np.flatnonzero(np.abs(np.diff(lon[k])) > 180) + 1
        for a, b in zip(np.split(lon[k], jumps), np.split(lat[k], jumps), strict=True):
            ax.plot(a, b, linewidth=0.7)
    for s in result.geometry.stations:
        ax.plot(s.longitude_deg, s.latitude_deg, "k^", markersize=6)
        ax.annotate(
            s.name,
            (s.longitude_deg, s.latitude_deg),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xlabel("longitude, deg")
    ax.set_ylabel("latitude (geocentric), deg")
    ax.set_title(f"ground tracks, first 2 hours ({len(sats)} satellites shown)")
    written.append(out / f"{prefix}ground_tracks.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return written
