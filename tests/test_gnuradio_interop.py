"""Interoperability with GNU Radio 3.10 and gr-satellites 4.4, both directions.

* linkstack -> gr-satellites: CADUs that linkstack encoded (``encode_cadus``: R-S dual
  basis, interleaving I, CCSDS randomizer, ASM), convolutionally encoded by linkstack
  (``linkstack.coding.convolutional``, NRZ-M at the encoder input or not), turned into
  float32 soft symbols (bit 1 -> +1.0), are decoded by gr-satellites' own
  ``ccsds_concatenated_deframer`` (gr-satellites
  ``python/components/deframers/ccsds_concatenated_deframer.py``) in a small flowgraph,
  ``gnuradio_helpers/grsat_deframe.py``: it must give back exactly the frames.  Two
  controls pin the conventions: inverted symbols decode to nothing without NRZ-M
  (gr-satellites searches only the true ASM, issue #264) and to every frame with it.
* GNU Radio -> linkstack: the same kind of CADU stream is encoded by GNU Radio's own
  CCSDS convolutional encoder, ``fec.cc_encoder_make(F, 7, 2, [79, -109], 0,
  fec.CC_STREAMING, False)`` in ``fec.extended_encoder``, behind GNU Radio's
  ``digital.diff_encoder_bb(2)`` for NRZ-M, mapped by ``digital.chunks_to_symbols_bf``
  (``gnuradio_helpers/gr_encode.py``).  Its symbols equal linkstack's encoder output bit
  for bit; ``SoftCaduSynchronizer`` decodes them under every hypothesis (inverted, a
  one-symbol pair offset, CADUs off octet boundaries, NRZ-M or not, found by itself;
  and as QPSK at each quarter turn), and so do ``ViterbiDecoder`` + ``CaduSynchronizer``
  at the known alignment.

The GNU Radio parts run in a ``/usr/bin/python3`` subprocess (Debian's ``gnuradio``,
``gr-satellites`` and ``libfec0`` live in the system Python, not in the venv); every test
here skips when ``/usr/bin/python3 -c "import gnuradio, satellites"`` fails.  Data are
seeded.  Frames are compared as sets: a deframer's frame order and count prove nothing
(with the pseudo-random sequence itself an R-S codeword for I = 1 and 2, a false ASM hit
can even pass R-S), so each test asks for exactly the set of frames sent.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from linkstack.coding.convolutional import encode, unpack_bits
from linkstack.coding.soft import SoftCaduSynchronizer
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded, TmCodingConfig, encode_cadus
from linkstack.coding.viterbi import ViterbiDecoder, hard_to_soft

SYSTEM_PYTHON = Path("/usr/bin/python3")
HELPERS = Path(__file__).parent / "gnuradio_helpers"
FRAMES_PER_CASE = 12


@functools.cache
def gnuradio_missing() -> str | None:
    """Why the GNU Radio tests cannot run here, or None when they can."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (GNU Radio and gr-satellites live in it)"
    try:
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", "import gnuradio, satellites"],
            env=helper_env(None),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} could not import gnuradio/satellites: {exc}"
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"{SYSTEM_PYTHON} -c 'import gnuradio, satellites' failed ({last}); install the "
            "Debian packages gnuradio, gr-satellites and libfec0"
        )
    return None


def helper_env(home: Path | None) -> dict[str, str]:
    """The environment of a system-Python helper: none of the venv's Python variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    env["GR_SATELLITES_SUBMIT_TLM"] = "0"  # never submit telemetry to SatNOGS
    if home is not None:
        env["HOME"] = str(home)  # gr-satellites keeps its config.ini under HOME
    return env


pytestmark = pytest.mark.skipif(gnuradio_missing() is not None, reason=str(gnuradio_missing()))


def run_helper(script: str, *args: object, home: Path, timeout: float = 300) -> None:
    done = subprocess.run(
        [str(SYSTEM_PYTHON), str(HELPERS / script), *map(str, args)],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        pytest.fail(
            f"{script} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}"
            f"\nstderr:\n{done.stderr[-3000:]}"
        )


def seeded_frames(config: TmCodingConfig, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, config.frame_octets, dtype=np.uint8).tobytes() for _ in range(count)
    ]


def awgn(symbols: np.ndarray, ebn0_db: float, rng: np.random.Generator) -> np.ndarray:
    """+-1 rate-1/2 symbols through AWGN; Eb/N0 per bit into the convolutional encoder."""
    sigma = np.sqrt(1.0 / (2.0 * 0.5 * 10 ** (ebn0_db / 10)))
    noisy: np.ndarray = (symbols + sigma * rng.standard_normal(symbols.size)).astype(np.float32)
    return noisy


def noise_symbols(count: int, rng: np.random.Generator) -> np.ndarray:
    """Random +-1 symbols: channel symbols of no CADU (the receiver joins mid-stream)."""
    return hard_to_soft(rng.integers(0, 2, count, dtype=np.uint8))


# ============================================================ linkstack -> gr-satellites


@dataclass(frozen=True)
class ToGrSat:
    interleave: int
    nrzm: bool
    frame_length: int | None = None  # N; None = 223 I (no virtual fill)
    lead: int = 0  # noise symbols before the first CADU (1 = the other symbol pairing)
    ebn0_db: float | None = None  # None: noiseless soft symbols
    inverted: bool = False  # the 180-degree BPSK ambiguity, left unresolved


def grsat_decode(
    symbols: np.ndarray, case: ToGrSat, config: TmCodingConfig, home: Path
) -> set[bytes]:
    path = home / "symbols.f32"
    out = home / "frames.hex"
    symbols.astype("<f4").tofile(path)
    run_helper(
        "grsat_deframe.py",
        path,
        out,
        "--frame-size",
        config.frame_octets,
        "--interleave",
        case.interleave,
        "--precoding",
        "differential" if case.nrzm else "none",
        "--expect",
        FRAMES_PER_CASE,
        home=home,
    )
    return {bytes.fromhex(line) for line in out.read_text().split()}


def linkstack_symbols(case: ToGrSat, seed: int) -> tuple[TmCodingConfig, list[bytes], np.ndarray]:
    config = TmCodingConfig(interleave=case.interleave, frame_length=case.frame_length)
    frames = seeded_frames(config, FRAMES_PER_CASE, seed)
    rng = np.random.default_rng(seed + 1000)
    code_symbols = encode(unpack_bits(encode_cadus(frames, config)), "1/2", nrzm=case.nrzm)
    soft = hard_to_soft(code_symbols)
    if case.ebn0_db is not None:
        soft = awgn(soft, case.ebn0_db, rng)
    if case.inverted:
        soft = -soft
    soft = np.concatenate((noise_symbols(case.lead, rng), soft))
    return config, frames, soft


TO_GRSAT = {
    "I1": ToGrSat(1, nrzm=False),
    "I1-nrzm": ToGrSat(1, nrzm=True),
    "I5": ToGrSat(5, nrzm=False),
    "I5-nrzm": ToGrSat(5, nrzm=True),
    # gr-satellites' second Viterbi decoder (input delayed one symbol) takes this one
    "I1-odd-lead-4dB": ToGrSat(1, nrzm=False, lead=1001, ebn0_db=4.0),
    "I5-nrzm-odd-lead-4dB": ToGrSat(5, nrzm=True, lead=333, ebn0_db=4.0),
    # virtual fill, CCSDS 131.0-B-5 4.3.7: N = 1000 < 223 * 5, Q = 115 a multiple of I
    "I5-N1000": ToGrSat(5, nrzm=False, frame_length=1000, lead=7),
}


@pytest.mark.parametrize("name", list(TO_GRSAT))
def test_linkstack_cadus_decode_in_gr_satellites(name: str, tmp_path: Path) -> None:
    case = TO_GRSAT[name]
    config, frames, soft = linkstack_symbols(case, seed=len(name))
    assert grsat_decode(soft, case, config, tmp_path) == set(frames)


def test_gr_satellites_does_not_resolve_inversion_without_nrzm(tmp_path: Path) -> None:
    """Inverted symbols (BPSK locked at pi) give nothing: gr-satellites searches only the
    true ASM (gr-satellites issue #264); the sign convention positive = 1 matters."""
    case = ToGrSat(1, nrzm=False, inverted=True)
    config, _frames, soft = linkstack_symbols(case, seed=5)
    assert grsat_decode(soft, case, config, tmp_path) == set()


def test_gr_satellites_nrzm_survives_inversion(tmp_path: Path) -> None:
    """With NRZ-M at the encoder input (CCSDS 131.0-B-5 3.3.3) inverted symbols decode
    to inverted levels, which NRZ-M decoding ignores: every frame comes back."""
    case = ToGrSat(1, nrzm=True, inverted=True, lead=1)
    config, frames, soft = linkstack_symbols(case, seed=6)
    assert grsat_decode(soft, case, config, tmp_path) == set(frames)


# ============================================================ GNU Radio -> linkstack


@dataclass(frozen=True)
class GrStream:
    config: TmCodingConfig
    nrzm: bool
    bit_offset: int  # random bits GNU Radio encoded before the first CADU
    frames: list[bytes]
    bits: np.ndarray  # everything GNU Radio encoded, one bit per element
    symbols: np.ndarray  # GNU Radio's soft symbols, float32 +-1


class GrStreams(dict[tuple[int, bool, int], GrStream]):
    """GNU Radio-encoded CADU streams keyed by (I, NRZ-M, bit offset), made on first use."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home

    def __missing__(self, key: tuple[int, bool, int]) -> GrStream:
        interleave, nrzm, bit_offset = key
        config = TmCodingConfig(interleave=interleave)
        seed = 100 * interleave + 10 * nrzm + bit_offset
        frames = seeded_frames(config, FRAMES_PER_CASE, seed)
        rng = np.random.default_rng(seed + 1)
        framebits = 8 * config.cadu_length  # the fec.cc_encoder frame size
        cadus = unpack_bits(encode_cadus(frames, config))
        lead = rng.integers(0, 2, bit_offset, dtype=np.uint8)
        # random bits after the CADUs, up to a whole number of encoder frames
        tail = rng.integers(0, 2, -(bit_offset + cadus.size) % framebits, dtype=np.uint8)
        bits = np.concatenate((lead, cadus, tail))
        bits_path = self.home / f"bits-{interleave}-{int(nrzm)}-{bit_offset}.u8"
        out_path = bits_path.with_suffix(".f32")
        bits.tofile(bits_path)
        args: list[object] = [bits_path, out_path, "--framebits", framebits]
        if nrzm:
            args.append("--nrzm")
        run_helper("gr_encode.py", *args, home=self.home)
        stream = GrStream(
            config, nrzm, bit_offset, frames, bits, np.fromfile(out_path, dtype="<f4")
        )
        self[key] = stream
        return stream


@pytest.fixture(scope="module")
def gr_streams(tmp_path_factory: pytest.TempPathFactory) -> GrStreams:
    return GrStreams(tmp_path_factory.mktemp("gr-encode"))


@pytest.mark.parametrize("nrzm", [False, True], ids=["nrzl", "nrzm"])
@pytest.mark.parametrize("interleave", [1, 5])
def test_gnuradio_encoder_matches_linkstack_encoder(
    gr_streams: GrStreams, interleave: int, nrzm: bool
) -> None:
    """GNU Radio's cc_encoder [79, -109] (behind diff_encoder_bb(2) for NRZ-M) and
    linkstack's encoder give the same symbols, bit for bit (an independent vector)."""
    stream = gr_streams[interleave, nrzm, 0]
    ours = hard_to_soft(encode(stream.bits, "1/2", nrzm=nrzm))
    assert stream.symbols.size == 2 * stream.bits.size
    np.testing.assert_array_equal(stream.symbols, ours)


def feed_in_chunks(sync: SoftCaduSynchronizer, symbols: np.ndarray, seed: int) -> set[bytes]:
    """Symbols in seeded chunks of random size, then flush; the frames decoded."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < symbols.size:
        size = int(rng.integers(1, 20_000))
        sync.receive_symbols(symbols[start : start + size])
        start += size
    sync.flush()
    frames = set()
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            frames.add(event.frame)
    return frames


@pytest.mark.parametrize("bit_offset", [0, 3])
@pytest.mark.parametrize("lead", [0, 1], ids=["pair-aligned", "pair-offset"])
@pytest.mark.parametrize("inverted", [False, True], ids=["upright", "inverted"])
@pytest.mark.parametrize("nrzm", [False, True], ids=["nrzl", "nrzm"])
@pytest.mark.parametrize("interleave", [1, 5])
def test_gnuradio_symbols_decode_in_soft_synchronizer(
    gr_streams: GrStreams, interleave: int, nrzm: bool, inverted: bool, lead: int, bit_offset: int
) -> None:
    """Every hypothesis, found by SoftCaduSynchronizer itself (nrzm="auto"): symbols
    inverted, the C1/C2 pairing shifted by one symbol, CADUs off octet boundaries;
    AWGN at Eb/N0 5 dB."""
    stream = gr_streams[interleave, nrzm, bit_offset]
    rng = np.random.default_rng(1000 * interleave + 100 * nrzm + 10 * inverted + lead)
    soft = awgn(stream.symbols, 5.0, rng)
    if inverted:
        soft = -soft
    soft = np.concatenate((noise_symbols(lead, rng), soft))
    sync = SoftCaduSynchronizer(stream.config, nrzm="auto")
    assert feed_in_chunks(sync, soft, seed=bit_offset) == set(stream.frames)
    (locked,) = sync.stats.locks
    assert locked.symbol_offset == lead
    assert locked.nrzm is nrzm
    assert locked.inverted is (None if nrzm else inverted)


@pytest.mark.parametrize("turns", [0, 1, 2, 3], ids=["0deg", "90deg", "180deg", "270deg"])
@pytest.mark.parametrize("interleave", [1, 5])
def test_gnuradio_symbols_as_qpsk_decode_at_every_rotation(
    gr_streams: GrStreams, interleave: int, turns: int
) -> None:
    """GNU Radio's symbol pairs as Gray QPSK (I = C1, Q = C2), the carrier off by a
    multiple of 90 degrees: SoftCaduSynchronizer(modulation="qpsk") finds the turn."""
    stream = gr_streams[interleave, False, 3]
    rng = np.random.default_rng(50 + turns)
    soft = awgn(stream.symbols, 5.0, rng)
    qpsk = (soft[0::2] + 1j * soft[1::2]).astype(np.complex64) * np.complex64(1j**turns)
    sync = SoftCaduSynchronizer(stream.config, modulation="qpsk")
    assert feed_in_chunks(sync, qpsk, seed=turns) == set(stream.frames)
    (locked,) = sync.stats.locks
    assert locked.quarter_turn is (turns % 2 == 1)


@pytest.mark.parametrize("bit_offset", [0, 3])
@pytest.mark.parametrize("inverted", [False, True], ids=["upright", "inverted"])
@pytest.mark.parametrize("nrzm", [False, True], ids=["nrzl", "nrzm"])
@pytest.mark.parametrize("interleave", [1, 5])
def test_gnuradio_symbols_decode_in_viterbi_and_cadu_synchronizer(
    gr_streams: GrStreams, interleave: int, nrzm: bool, inverted: bool, bit_offset: int
) -> None:
    """The building blocks without the hypothesis search: ViterbiDecoder on the
    pair-aligned symbols (re-inverted where inverted), the known bit offset dropped,
    then the octet-aligned CaduSynchronizer."""
    stream = gr_streams[interleave, nrzm, bit_offset]
    rng = np.random.default_rng(2000 * interleave + 100 * nrzm + 10 * inverted)
    soft = awgn(stream.symbols, 5.0, rng)
    if inverted:
        soft = -soft
    decoder = ViterbiDecoder("1/2", nrzm=nrzm)
    bits = np.concatenate((decoder.decode(-soft if inverted else soft), decoder.flush()))
    bits = bits[bit_offset:]
    sync = CaduSynchronizer(stream.config)
    sync.receive_bytes(np.packbits(bits[: bits.size - bits.size % 8]).tobytes())
    sync.flush()
    frames = set()
    while (event := sync.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            frames.add(event.frame)
    assert frames == set(stream.frames)
