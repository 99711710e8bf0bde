"""Coding gain of the CCSDS TM codes in linkstack: BER and frame error rate against Eb/N0.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_coding_gain.py [--quick] [--seed N]``
(``matplotlib`` needed for the figure).  Writes ``docs/coding_gain.md`` (the tables) and
``docs/coding_gain.png`` (the curves); ``--quick`` is a smoke run with small budgets that
writes nowhere unless ``--out`` is given.

Seeded AWGN, BPSK (bit 1 -> +1), Eb/N0 per *information* bit from 0 to 7 dB in 0.5 dB
steps.  Curves:

* uncoded BPSK, simulated, beside the theory ``Q(sqrt(2 Eb/N0))``;
* the rate-1/2 convolutional code of CCSDS 131.0-B-5 3.3 alone, decoded by linkstack's
  ``ViterbiDecoder`` on the soft symbols and on hard decisions (their signs, mapped to
  +-1), and by libfec's ``viterbi27`` (Debian ``libfec0``, through ctypes as in
  ``bench/bench_viterbi.py``) on the same soft symbols, quantized to offset-binary octets
  ``128 + 48 x`` as GNU Radio's ``fec.extended_decoder`` feeds its libfec-derived
  ``cc_decoder`` (gnuradio ``gr-fec/python/fec/extended_decoder.py``);
* the concatenated code (131.0-B-5 4: R-S (255,223) E = 16, dual basis, interleaving I =
  1 and 5, randomized, ASM, then the convolutional code, continuous across CADUs):
  frame error rate of the 223 I-octet transfer frames, decoded by ``ViterbiDecoder`` and
  ``reed_solomon.decode_blocks`` at the known CADU alignment (frame synchronization is
  not part of the measurement).  A frame is in error when R-S refuses it or gives back
  other octets than were sent.

Eb/N0 bookkeeping: the noise per channel symbol is ``sigma^2 = 1 / (2 R Eb/N0)`` with R the
information bits per channel symbol: 1 uncoded, 1/2 for the convolutional code alone
(whose 6-bit tails, one per 14272 information bits so that libfec can decode terminated
blocks, are not charged: 0.002 dB), and ``8 N / (2 * 8 (4 + N + 2EI))`` for the
concatenated code, ASM and R-S checks charged (0.4305 for I = 1, 0.4359 for I = 5).

Statistics (``Budget``): each point runs until its curve has at least 100 bit errors
(and 20 frame errors), or 100 frame errors for the R-S curves, or until the budget of the
point is spent: 1e8 information bits (so any BER above 1e-6 gets its 100 errors), 50000
(I = 1) or 10000 (I = 5) frames.  A BER point is plotted only with at least 100 errors;
the first point that lacks them ends its curve (the table says "stop").  FER points are
plotted from 20 frame errors up (the table gives every count).  libfec and linkstack see
the same symbols; their gap at BER 1e-4, interpolated linearly in log10(BER) between the
two points around it, must stay within 0.2 dB (the script exits 1 otherwise).  The work
runs in two processes (``--jobs``): the convolutional curves in one, the others in the
other.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linkstack.coding import reed_solomon, viterbi
from linkstack.coding.convolutional import encode, unpack_bits
from linkstack.coding.tm import TmCodingConfig, encode_cadus, pseudo_random_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_viterbi import Libfec  # the sibling bench's ctypes wrapper

EBN0_DB = tuple(x / 2 for x in range(15))  # 0, 0.5, ... 7 dB
FRAME_OCTETS = 223  # frames of the uncoded / convolutional-only FER: 1784 bits
FRAME_BITS = 8 * FRAME_OCTETS
BLOCK_FRAMES = 8  # frames per terminated block (libfec decodes one block per call)
BLOCK_BITS = BLOCK_FRAMES * FRAME_BITS  # 14272
TAIL_BITS = 6  # zeros that bring the encoder back to state 0 (K - 1)
CHUNK_BLOCKS = 16  # blocks per simulation chunk (228352 information bits)
LIBFEC_SCALE = 48.0  # GNU Radio extended_decoder: multiply_const_ff(48), add 128
LIBFEC_GAP_LIMIT_DB = 0.2
RS_CHUNK_FRAMES = {1: 256, 5: 64}
RS_OVERLAP_BITS = 128  # random bits after each chunk's last CADU, decoded and discarded
DOCS = Path(__file__).resolve().parent.parent / "docs"


def q_function(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def theory_ber(ebn0_db: float) -> float:
    """Uncoded BPSK in AWGN: Q(sqrt(2 Eb/N0))."""
    return q_function(math.sqrt(2.0 * 10 ** (ebn0_db / 10)))


def sigma_for(ebn0_db: float, rate: float) -> float:
    """Noise standard deviation per +-1 channel symbol for Eb/N0 per information bit."""
    return math.sqrt(1.0 / (2.0 * rate * 10 ** (ebn0_db / 10)))


# --------------------------------------------------------------------------- tallies


@dataclass(frozen=True)
class Budget:
    """How hard each point tries."""

    min_bit_errors: int = 100  # a plotted BER rests on at least this many errors
    max_bits: int = 100_000_000  # information bits per point (uncoded, convolutional)
    min_frame_errors: int = 100  # the R-S curves run to this many frame errors ...
    rs_frames: tuple[int, int] = (50_000, 10_000)  # ... or these frames (I = 1, I = 5)
    plot_frame_errors: int = 20  # fewest frame errors behind a plotted FER point

    def rs_budget(self, interleave: int) -> int:
        return self.rs_frames[0 if interleave == 1 else 1]


FULL = Budget()
QUICK = Budget(min_bit_errors=30, max_bits=1_000_000, min_frame_errors=30, rs_frames=(2000, 400))


@dataclass
class Tally:
    """Errors counted at one Eb/N0 for one curve."""

    bits: int = 0
    bit_errors: int = 0
    frames: int = 0
    frame_errors: int = 0

    @property
    def ber(self) -> float:
        return self.bit_errors / self.bits if self.bits else math.nan

    @property
    def fer(self) -> float:
        return self.frame_errors / self.frames if self.frames else math.nan

    def add(self, truth: np.ndarray, decoded: np.ndarray) -> None:
        """``truth``/``decoded``: (frames, bits per frame) arrays of 0/1."""
        wrong = truth != decoded
        self.bits += truth.size
        self.bit_errors += int(wrong.sum())
        self.frames += truth.shape[0]
        self.frame_errors += int(wrong.any(axis=1).sum())


@dataclass
class Curve:
    """One curve: a tally per Eb/N0 until it stops."""

    key: str
    label: str
    budget: Budget
    fer_only: bool = False
    points: dict[float, Tally] = field(default_factory=dict)
    stopped_at: float | None = None  # first Eb/N0 whose point lacked the errors

    @property
    def active(self) -> bool:
        return self.stopped_at is None

    def ber_resolved(self, ebn0: float) -> bool:
        tally = self.points.get(ebn0)
        return tally is not None and tally.bit_errors >= self.budget.min_bit_errors

    def fer_resolved(self, ebn0: float) -> bool:
        tally = self.points.get(ebn0)
        return tally is not None and tally.frame_errors >= self.budget.plot_frame_errors

    def ber_series(self) -> tuple[list[float], list[float]]:
        xs = [x for x in self.points if self.ber_resolved(x)]
        return xs, [self.points[x].ber for x in xs]

    def fer_series(self) -> tuple[list[float], list[float]]:
        xs = [x for x in self.points if self.fer_resolved(x)]
        return xs, [self.points[x].fer for x in xs]

    def ber_unresolved(self) -> tuple[list[float], list[float]]:
        """The stop point, drawn open: its rate, or the 95 % bound 3/bits at 0 errors."""
        xs = [x for x, t in self.points.items() if t.bits and not self.ber_resolved(x)]
        return xs, [upper_or_rate(self.points[x].bit_errors, self.points[x].bits) for x in xs]

    def fer_unresolved(self) -> tuple[list[float], list[float]]:
        xs = [x for x, t in self.points.items() if t.frames and not self.fer_resolved(x)]
        return xs, [upper_or_rate(self.points[x].frame_errors, self.points[x].frames) for x in xs]


def upper_or_rate(errors: int, trials: int) -> float:
    """errors/trials, or with no error the one-sided 95 % upper bound 3/trials."""
    return errors / trials if errors else 3.0 / trials


# --------------------------------------------------------------------------- simulations


def run_uncoded(curve: Curve, rng_for: Callable[[str, float], np.random.Generator]) -> None:
    for ebn0 in EBN0_DB:
        rng = rng_for(curve.key, ebn0)
        sigma = sigma_for(ebn0, 1.0)
        tally = curve.points.setdefault(ebn0, Tally())
        budget = curve.budget
        while tally.bits < budget.max_bits and tally.bit_errors < budget.min_bit_errors:
            bits = rng.integers(0, 2, (CHUNK_BLOCKS * BLOCK_FRAMES, FRAME_BITS), dtype=np.uint8)
            noise = rng.standard_normal(bits.shape, dtype=np.float32)
            received = (bits.astype(np.float32) * 2 - 1 + np.float32(sigma) * noise) > 0
            tally.add(bits, received.astype(np.uint8))
        if not curve.ber_resolved(ebn0):
            curve.stopped_at = ebn0
            return


def run_convolutional(
    curves: Sequence[Curve],
    rng_for: Callable[[str, float], np.random.Generator],
    libfec: Libfec | None,
) -> None:
    """Soft (linkstack), hard (linkstack) and libfec on the same symbols, chunk by chunk."""
    soft_c, hard_c, fec_c = curves
    for ebn0 in EBN0_DB:
        live = [c for c in curves if c.active and (c is not fec_c or libfec is not None)]
        if not live:
            return
        rng = rng_for("convolutional", ebn0)
        sigma = np.float32(sigma_for(ebn0, 0.5))
        tallies = {c.key: c.points.setdefault(ebn0, Tally()) for c in live}

        def wants(c: Curve, tallies: dict[str, Tally] = tallies) -> bool:
            t, b = tallies.get(c.key), c.budget
            return (
                t is not None
                and t.bits < b.max_bits
                and (t.bit_errors < b.min_bit_errors or t.frame_errors < b.plot_frame_errors)
            )

        while any(wants(c) for c in live):
            truth = rng.integers(0, 2, (CHUNK_BLOCKS, BLOCK_BITS), dtype=np.uint8)
            stream = np.concatenate((truth, np.zeros((CHUNK_BLOCKS, TAIL_BITS), np.uint8)), 1)
            symbols = encode(stream.reshape(-1)).astype(np.float32) * 2 - 1
            symbols += sigma * rng.standard_normal(symbols.size, dtype=np.float32)
            frames = truth.reshape(-1, FRAME_BITS)

            def frames_of(decoded: np.ndarray) -> np.ndarray:
                return decoded.reshape(CHUNK_BLOCKS, -1)[:, :BLOCK_BITS].reshape(-1, FRAME_BITS)

            if wants(soft_c):
                tallies[soft_c.key].add(frames, frames_of(viterbi.decode(symbols)))
            if wants(hard_c):
                hard = viterbi.hard_to_soft((symbols > 0).astype(np.uint8))
                tallies[hard_c.key].add(frames, frames_of(viterbi.decode(hard)))
            if wants(fec_c) and libfec is not None:
                octets = np.clip(np.rint(128 + LIBFEC_SCALE * symbols), 0, 255).astype(np.uint8)
                decoded = libfec.decode_frames(octets.reshape(CHUNK_BLOCKS, -1))
                tallies[fec_c.key].add(frames, decoded.reshape(-1, FRAME_BITS))
        for c in live:
            if not c.ber_resolved(ebn0):
                c.stopped_at = ebn0


def run_concatenated(
    curve: Curve, interleave: int, rng_for: Callable[[str, float], np.random.Generator]
) -> None:
    config = TmCodingConfig(interleave=interleave)
    n_frame, cadu = config.frame_octets, config.cadu_length
    rate = n_frame / (2 * cadu)
    pn = np.frombuffer(pseudo_random_sequence(config.codeblock_length), np.uint8)
    chunk = RS_CHUNK_FRAMES[interleave]
    for ebn0 in EBN0_DB:
        rng = rng_for(curve.key, ebn0)
        sigma = np.float32(sigma_for(ebn0, rate))
        tally = curve.points.setdefault(ebn0, Tally())
        budget = curve.budget
        while (
            tally.frames < budget.rs_budget(interleave)
            and tally.frame_errors < budget.min_frame_errors
        ):
            frames = rng.integers(0, 256, (chunk, n_frame), dtype=np.uint8)
            bits = unpack_bits(encode_cadus(frames.tobytes(), config))
            overlap = rng.integers(0, 2, RS_OVERLAP_BITS, dtype=np.uint8)
            symbols = encode(np.concatenate((bits, overlap))).astype(np.float32) * 2 - 1
            symbols += sigma * rng.standard_normal(symbols.size, dtype=np.float32)
            decoded = viterbi.decode(symbols)[: bits.size]
            octets = np.packbits(decoded).reshape(chunk, cadu)
            blocks = octets[:, cadu - config.codeblock_length :] ^ pn
            result = reed_solomon.decode_blocks(blocks, config.layout, basis=config.basis)
            wrong = ~result.ok | np.any(result.frames != frames, axis=1)
            tally.frames += chunk
            tally.frame_errors += int(wrong.sum())
        if not curve.fer_resolved(ebn0):
            curve.stopped_at = ebn0
            return


# --------------------------------------------------------------------------- reporting


def crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> float | None:
    """Eb/N0 where a falling curve crosses ``target``, linear in log10(y); None if never."""
    points = list(zip(xs, ys, strict=True))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if y0 >= target > y1 > 0:
            t = (math.log10(y0) - math.log10(target)) / (math.log10(y0) - math.log10(y1))
            return x0 + t * (x1 - x0)
    return None


def theory_crossing(target: float) -> float:
    low, high = 0.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if theory_ber(mid) > target else (low, mid)
    return (low + high) / 2


def fmt_count(n: int) -> str:
    return f"{n:.1e}".replace("e+0", "e") if n >= 100_000 else str(n)


def ber_cell(curve: Curve, ebn0: float) -> str:
    tally = curve.points.get(ebn0)
    if tally is None or not tally.bits:
        return "—"
    if curve.ber_resolved(ebn0):
        return f"{tally.ber:.2e} ({tally.bit_errors}/{fmt_count(tally.bits)})"
    return f"{tally.ber:.1e} ({tally.bit_errors}/{fmt_count(tally.bits)}), stop, open"


def fer_cell(curve: Curve, ebn0: float) -> str:
    tally = curve.points.get(ebn0)
    if tally is None or not tally.frames:
        return "—"
    text = f"{tally.fer:.2e} ({tally.frame_errors}/{fmt_count(tally.frames)})"
    if not curve.fer_resolved(ebn0):
        text = f"{text}, {'stop, ' if curve.fer_only else ''}open"
    return text


def markdown(
    curves: dict[str, Curve],
    budget: Budget,
    seconds: float,
    gap: float | None,
    seed: int,
    libfec_ok: bool,
    jobs: int,
) -> str:
    ber_keys = ["uncoded", "soft", "libfec", "hard"]
    fer_keys = ["uncoded", "soft", "libfec", "hard", "rs1", "rs5"]
    lines = [
        "# Coding gain of the CCSDS TM codes (linkstack)",
        "",
        "Written by `bench/bench_coding_gain.py` (`PYTHONPATH=. .venv/bin/python "
        f"bench/bench_coding_gain.py --seed {seed}`); the figure is "
        "[coding_gain.png](coding_gain.png).  Seeded AWGN, BPSK, Eb/N0 per information bit.",
        "",
        "![BER and FER against Eb/N0](coding_gain.png)",
        "",
        "- *uncoded*: BPSK, hard decision; *theory* is Q(sqrt(2 Eb/N0)).",
        "- *conv soft / hard*: the rate-1/2 K=7 code of CCSDS 131.0-B-5 3.3 alone, linkstack's "
        "`ViterbiDecoder` on soft symbols / on their signs; *libfec*: Debian libfec0 "
        "`viterbi27` on the same soft symbols quantized to 128 + 48 x (GNU Radio's "
        "`fec.extended_decoder` scaling), one terminated 14272-bit block per call.",
        "- *conv + R-S I=1 / I=5*: the concatenated code of 131.0-B-5 (R-S (255,223) E=16, "
        "dual basis, randomizer, ASM, convolutional code continuous across CADUs), decoded at "
        "the known CADU alignment (frame sync not measured); FER of the 223 I-octet frames "
        "(R-S refused or wrong octets).  Eb/N0 charges the ASM and R-S checks: R = "
        "223/518 (I=1), 1115/2558 (I=5) information bits per channel symbol.",
        "- Uncoded and convolutional-only FER: 223-octet (1784-bit) frames of the same bits.",
        f"- A BER point needs {budget.min_bit_errors} bit errors (budget "
        f"{budget.max_bits:.0e} information bits per point, so any BER above "
        f"{budget.min_bit_errors / budget.max_bits:.0e} gets them); the first point that does not "
        'get them ends its curve ("stop": too few errors to plot; drawn as an open marker at '
        "its rate, or at the 95 % upper bound 3/trials when it saw no error).  FER points "
        f'are plotted from {budget.plot_frame_errors} frame errors ("open" below that); '
        "the R-S curves run to "
        f"{budget.min_frame_errors} frame errors or {budget.rs_frames[0]} (I=1) / "
        f"{budget.rs_frames[1]} (I=5) frames per point.  Cells: rate (errors/trials).",
        "",
        "## Bit error rate",
        "",
        "| Eb/N0 (dB) | theory | " + " | ".join(curves[k].label for k in ber_keys) + " |",
        "|---:|---:|" + "---:|" * len(ber_keys),
    ]
    for x in EBN0_DB:
        cells = [f"{theory_ber(x):.2e}", *(ber_cell(curves[k], x) for k in ber_keys)]
        lines.append(f"| {x:.1f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Frame error rate",
        "",
        "| Eb/N0 (dB) | theory uncoded | " + " | ".join(curves[k].label for k in fer_keys) + " |",
        "|---:|---:|" + "---:|" * len(fer_keys),
    ]
    for x in EBN0_DB:
        theory = 1 - (1 - theory_ber(x)) ** FRAME_BITS
        cells = [f"{theory:.2e}", *(fer_cell(curves[k], x) for k in fer_keys)]
        lines.append(f"| {x:.1f} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Where the curves cross (interpolated linearly in log10 of the rate)",
        "",
        "| curve | BER 1e-4 | BER 1e-5 | gain at 1e-5 | FER 1e-2 | FER 1e-3 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    uncoded_1e5 = theory_crossing(1e-5)

    def at(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} dB"

    lines.append(
        f"| uncoded (theory) | {theory_crossing(1e-4):.2f} dB | {uncoded_1e5:.2f} dB | 0 | "
        f"{theory_crossing(1 - (1 - 1e-2) ** (1 / FRAME_BITS)):.2f} dB | "
        f"{theory_crossing(1 - (1 - 1e-3) ** (1 / FRAME_BITS)):.2f} dB |"
    )
    for key in ["soft", "libfec", "hard", "rs1", "rs5"]:  # simulated uncoded: see theory
        c = curves[key]
        bx, by = c.ber_series()
        fx, fy = c.fer_series()
        b4 = None if c.fer_only else crossing(bx, by, 1e-4)
        b5 = None if c.fer_only else crossing(bx, by, 1e-5)
        gain = "—" if b5 is None else f"{uncoded_1e5 - b5:.2f} dB"
        lines.append(
            f"| {c.label} | {at(b4)} | {at(b5)} | {gain} | "
            f"{at(crossing(fx, fy, 1e-2))} | {at(crossing(fx, fy, 1e-3))} |"
        )
    lines += ["", "## libfec viterbi27 beside linkstack's soft Viterbi", ""]
    if not libfec_ok:
        lines.append("libfec (Debian libfec0) was not available: no comparison.")
    elif gap is None:
        lines.append("One of the two curves does not cross BER 1e-4: no comparison.")
    else:
        verdict = "within" if abs(gap) <= LIBFEC_GAP_LIMIT_DB else "OUTSIDE"
        lines.append(
            f"At BER 1e-4 linkstack needs {gap:+.3f} dB of Eb/N0 relative to libfec "
            f"(positive = linkstack needs more): {verdict} the {LIBFEC_GAP_LIMIT_DB} dB "
            "limit.  Same symbols; libfec sees them quantized to 8 bits, linkstack as "
            "float32, and libfec decodes terminated blocks (start and end state known), "
            "linkstack the continuous stream."
        )
    lines += [
        "",
        f"Run time: {seconds:.0f} s on {os.cpu_count()} CPUs ({jobs} worker processes; "
        "numba kernel "
        f"{'compiled' if viterbi.NUMBA_AVAILABLE else 'NOT available: numpy fallback'}).",
        "",
    ]
    return "\n".join(lines)


def plot(curves: dict[str, Curve], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ber, ax_fer) = plt.subplots(1, 2, figsize=(13, 7))
    dense = np.linspace(0, 7, 141)
    ax_ber.semilogy(dense, [theory_ber(x) for x in dense], "k--", label="uncoded, theory")
    ax_fer.semilogy(
        dense,
        [1 - (1 - theory_ber(x)) ** FRAME_BITS for x in dense],
        "k--",
        label="uncoded, theory (1784-bit frames)",
    )
    style = {
        "uncoded": ("o", "C0"),
        "soft": ("s", "C1"),
        "libfec": ("x", "C2"),
        "hard": ("^", "C3"),
        "rs1": ("D", "C4"),
        "rs5": ("v", "C5"),
    }
    for key, curve in curves.items():
        marker, color = style[key]
        if not curve.fer_only:
            xs, ys = curve.ber_series()
            ax_ber.semilogy(xs, ys, marker=marker, color=color, label=curve.label)
            xs, ys = curve.ber_unresolved()
            ax_ber.semilogy(xs, ys, marker=marker, color=color, ls="none", mfc="none")
        xs, ys = curve.fer_series()
        ax_fer.semilogy(xs, ys, marker=marker, color=color, label=curve.label)
        xs, ys = curve.fer_unresolved()
        ax_fer.semilogy(xs, ys, marker=marker, color=color, ls="none", mfc="none")
    for ax, title in ((ax_ber, "Bit error rate"), (ax_fer, "Frame error rate")):
        ax.set_xlabel("Eb/N0 per information bit (dB)")
        ax.set_xlim(0, 7)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax_ber.set_ylim(1e-7, 0.5)
    ax_fer.set_ylim(1e-5, 1.5)
    ax_fer.set_ylabel("FER (223 I-octet frames; 1784-bit frames for the others)")
    ax_ber.set_ylabel("BER")
    fig.suptitle(
        "CCSDS TM coding in linkstack, BPSK in AWGN (seeded); open markers: too few errors"
        " to plot (rate, or 3/trials at 0 errors)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rng_for(seed: int, name: str, ebn0: float) -> np.random.Generator:
    """The seeded generator of one curve (or group of curves) at one Eb/N0."""
    return np.random.default_rng([seed, sum(map(ord, name)), int(ebn0 * 10)])


def new_curves(budget: Budget) -> dict[str, Curve]:
    return {
        "uncoded": Curve("uncoded", "uncoded", budget),
        "soft": Curve("soft", "conv soft (linkstack)", budget),
        "libfec": Curve("libfec", "conv soft (libfec viterbi27)", budget),
        "hard": Curve("hard", "conv hard (linkstack)", budget),
        "rs1": Curve("rs1", "conv + R-S I=1", budget, fer_only=True),
        "rs5": Curve("rs5", "conv + R-S I=5", budget, fer_only=True),
    }


def simulate(task: str, seed: int, budget: Budget) -> tuple[dict[str, Curve], list[str], bool]:
    """One share of the work (run in a worker process): its curves, timing lines, and
    whether libfec could be loaded."""
    viterbi.compile_kernels()
    curves = new_curves(budget)
    timings: list[str] = []

    def rng(name: str, ebn0: float) -> np.random.Generator:
        return rng_for(seed, name, ebn0)

    def timed(name: str, step: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        step()
        timings.append(f"{name}: {time.perf_counter() - t0:.1f} s")

    libfec_ok = True
    if task == "convolutional":
        try:
            libfec: Libfec | None = Libfec(BLOCK_BITS)
        except (OSError, AttributeError) as exc:
            timings.append(f"libfec viterbi27 not available (Debian libfec0): {exc}")
            libfec, libfec_ok = None, False
        timed(
            "convolutional (linkstack soft and hard, libfec soft)",
            lambda: run_convolutional(
                [curves["soft"], curves["hard"], curves["libfec"]], rng, libfec
            ),
        )
        if libfec is not None:
            libfec.close()
        keys = ["soft", "hard", "libfec"]
    else:
        timed("uncoded", lambda: run_uncoded(curves["uncoded"], rng))
        timed("conv + R-S I=1", lambda: run_concatenated(curves["rs1"], 1, rng))
        timed("conv + R-S I=5", lambda: run_concatenated(curves["rs5"], 5, rng))
        keys = ["uncoded", "rs1", "rs5"]
    return {k: curves[k] for k in keys}, timings, libfec_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small budgets, a smoke run")
    parser.add_argument("--out", type=Path, help="folder for coding_gain.md/.png (docs/)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (2)"
    )
    args = parser.parse_args()
    out: Path | None = args.out if args.out is not None else (None if args.quick else DOCS)
    budget = QUICK if args.quick else FULL

    start = time.perf_counter()
    viterbi.compile_kernels()  # once here, so that the workers load numba's cache
    tasks = ["convolutional", "uncoded and concatenated"]
    curves = new_curves(budget)
    libfec_ok = True
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(simulate, task, args.seed, budget) for task in tasks]
        for future in futures:
            done, timings, ok = future.result()
            curves.update(done)
            libfec_ok = libfec_ok and ok
            print("\n".join(timings))

    sx, sy = curves["soft"].ber_series()
    fx, fy = curves["libfec"].ber_series()
    ours, theirs = crossing(sx, sy, 1e-4), crossing(fx, fy, 1e-4)
    gap = None if ours is None or theirs is None else ours - theirs
    seconds = time.perf_counter() - start
    report = markdown(curves, budget, seconds, gap, args.seed, libfec_ok, args.jobs)
    print(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "coding_gain.md").write_text(report, encoding="utf-8")
        plot(curves, out / "coding_gain.png")
        print(f"wrote {out / 'coding_gain.md'} and {out / 'coding_gain.png'}")
    print(f"total run time {seconds:.1f} s")
    if gap is not None:
        print(f"linkstack - libfec at BER 1e-4: {gap:+.3f} dB (limit {LIBFEC_GAP_LIMIT_DB} dB)")
        if abs(gap) > LIBFEC_GAP_LIMIT_DB:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
