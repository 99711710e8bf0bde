"""``groundstation replay REC.sigmf-meta``: a pass recorded as IQ, replayed as a capture."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from groundstation.cli import main as groundstation
from linkstack.coding.tm import CaduSynchronizer, FrameDecoded, TmCodingConfig
from linkstack.endpoints import LinkConfig, SpacecraftEndpoint
from linkstack.inference.messages import EndOfStream, FinishReason, TokenChunk
from linkstack.inference.tokenizer import Tokenizer
from linkstack.radio.modem import Impairments, impair
from linkstack.radio.receiver import CaduReceived, IqReceiver, IqTransmitter
from linkstack.radio.recording import Datatype, RecordingMeta
from linkstack.radio.sigmf_files import write_recording

CODING = TmCodingConfig(interleave=1)
SPS = 4
BAUD = 64_000.0
TEXT = {7: "Hello from orbit.", 8: "A second answer, in its own stream."}
RADIO_FIELDS = {
    "modulation": "bpsk",
    "sps": SPS,
    "symbol_rate": BAUD,
    "rolloff": 0.35,
    "interleave": CODING.interleave,
    "frame_length": CODING.frame_octets,
    "conv_rate": "1/2",
    "nrzm": False,
}


def replay(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = groundstation(["replay", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def downlink_frames(tokenizer: Tokenizer) -> tuple[list[bytes], dict[int, list[int]]]:
    """The transfer frames a spacecraft sends for two answers, and the ids of each."""
    spacecraft = SpacecraftEndpoint(LinkConfig(tm_coding=CODING))
    sent: dict[int, list[int]] = {}
    for request_id, text in TEXT.items():
        ids = tokenizer.encode(text)
        sent[request_id] = ids
        for first in range(0, len(ids), 3):
            spacecraft.send(TokenChunk(request_id, first, tuple(ids[first : first + 3])), 0.0)
        spacecraft.send(
            EndOfStream(
                request_id=request_id,
                finish_reason=FinishReason.MAX_TOKENS,
                token_count=len(ids),
                time_to_first_token_us=1000,
                generation_time_ms=20,
                tokens_per_s_milli=100_000,
            ),
            0.0,
        )
    cadus = []
    while spacecraft.pending_octets:
        cadus.append(spacecraft.next_cadu())
    cadus.append(spacecraft.next_cadu())  # an idle frame: the last data frame is not last
    # The IQ transmitter takes frames: the spacecraft's CADUs decoded back.
    synchronizer = CaduSynchronizer(CODING)
    synchronizer.receive_bytes(b"".join(cadus))
    synchronizer.flush()
    frames = []
    while (event := synchronizer.next_event()) is not None:
        if isinstance(event, FrameDecoded):
            frames.append(event.frame)
    assert len(frames) == len(cadus)
    return frames, sent


def iq_samples(frames: list[bytes], *, seed: int = 1, ebn0_db: float = 6.0) -> np.ndarray:
    """BPSK at Eb/N0 6 dB (by default), 1.5 kHz carrier offset (2.3 % of the symbol rate)."""
    transmitter = IqTransmitter(CODING, sps=SPS)
    block = transmitter.transmit(frames)
    samples = np.concatenate((block.samples, transmitter.flush()))
    impaired = impair(
        samples,
        Impairments(offset_hz=1500.0, phase=1.0, ebn0_db=ebn0_db, code_rate=0.5),
        modulation="bpsk",
        sps=SPS,
        sample_rate=BAUD * SPS,
        rng=np.random.default_rng(seed),
    )
    rms = float(np.sqrt(np.mean(np.abs(impaired) ** 2)))
    return (impaired * (0.25 / rms)).astype(np.complex64)


def write(path: Path, samples: np.ndarray, fields: dict[str, object] | None = None) -> Path:
    meta = RecordingMeta(
        sample_rate=BAUD * SPS,
        datatype=Datatype("cf32_le"),
        extensions=RADIO_FIELDS if fields is None else fields,  # type: ignore[arg-type]
    )
    written = write_recording(path, samples, meta)
    assert written.meta_path is not None
    return written.meta_path


@pytest.fixture(scope="module")
def tokenizer(xdg_cache_root: Path) -> Tokenizer:
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(xdg_cache_root))
    try:
        return Tokenizer.qwen3()
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def downlink(tokenizer: Tokenizer) -> tuple[np.ndarray, dict[int, list[int]]]:
    frames, sent = downlink_frames(tokenizer)
    return iq_samples(frames), sent


def test_a_recorded_pass_replays_its_token_streams(
    tmp_path: Path, downlink: tuple[np.ndarray, dict[int, list[int]]], xdg_cache_home: object
) -> None:
    samples, sent = downlink
    meta = write(tmp_path / "pass", samples)
    code, out, err = replay(str(meta), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "sigmf-iq"
    assert [s["request_id"] for s in report["streams"]] == sorted(TEXT)
    for stream in report["streams"]:
        assert stream["received_ids"] == sent[stream["request_id"]]
        assert stream["text"] == TEXT[stream["request_id"]]
        assert stream["finish_reason"] == "max_tokens"
        assert stream["complete"] is True
    assert report["radio"]["dropped"] == {}
    assert report["radio"]["settings"]["interleave"] == 1
    assert abs(report["radio"]["frequency_offset_hz"] - 1500.0) < 100.0


def test_the_ground_counts_the_rs_corrections(
    tmp_path: Path, tokenizer: Tokenizer, xdg_cache_home: object
) -> None:
    """The replay hands the ground the CADUs as received, so the ground's R-S decoder
    corrects and counts what the channel did: the same corrections an IqReceiver that
    R-S decodes itself (output="frames") finds in the same samples."""
    frames, _ = downlink_frames(tokenizer)
    samples = iq_samples(frames, seed=4, ebn0_db=3.0)
    meta = write(tmp_path / "weak", samples)
    code, out, err = replay(str(meta), "--json")
    assert code == 0, err
    report = json.loads(out)
    receiver = IqReceiver(CODING, sample_rate=BAUD * SPS, sps=SPS)
    receiver.receive_samples(samples)
    receiver.flush()
    events = [e for e in iter(receiver.next_event, None) if isinstance(e, CaduReceived)]
    decoded = [e for e in events if e.status == "decoded"]
    corrected = sum(c for e in decoded for c in e.corrected)
    assert corrected > 0  # Eb/N0 3 dB: the code has work to do
    assert report["counters"]["rs_corrected_symbols"] == corrected
    assert report["counters"]["frames_received"] == len(decoded)
    assert report["counters"]["rs_uncorrectable"] == len(events) - len(decoded)
    assert report["radio"]["cadus"] == len(events)


def test_without_json_the_text_of_each_stream(
    tmp_path: Path, downlink: tuple[np.ndarray, dict[int, list[int]]], xdg_cache_home: object
) -> None:
    samples, _ = downlink
    meta = write(tmp_path / "pass", samples)
    code, out, err = replay(str(meta))
    assert code == 0, err
    assert out.splitlines() == [f"request {i}: {text}" for i, text in sorted(TEXT.items())]


def test_options_stand_in_for_missing_fields(
    tmp_path: Path, downlink: tuple[np.ndarray, dict[int, list[int]]], xdg_cache_home: object
) -> None:
    samples, _ = downlink
    meta = write(tmp_path / "foreign", samples, {})
    code, out, err = replay(str(meta), "--json")
    assert code == 1 and out == ""
    assert err.startswith("groundstation: ") and len(err.splitlines()) == 1, err
    for name in ("linkstack:modulation", "linkstack:sps", "linkstack:conv_rate"):
        assert name in err
    assert "--interleave" in err and "Traceback" not in err
    code, out, err = replay(
        str(meta), "--json", "--modulation", "bpsk", "--sps", "4", "--conv-rate", "1/2",
        "--interleave", "1",
    )  # fmt: skip
    assert code == 0, err
    assert [s["text"] for s in json.loads(out)["streams"]] == [TEXT[7], TEXT[8]]


def _bad(tmp_path: Path, samples: np.ndarray, name: str) -> Path:
    meta = write(tmp_path / name, samples)
    data = meta.with_suffix(".sigmf-data")
    if name == "empty":
        data.write_bytes(b"")
    elif name == "truncated":
        raw = data.read_bytes()
        data.write_bytes(raw[: len(raw) // 2 + 3])
    return meta


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("noise", "no CADU found"),
        ("empty", "no samples"),
        ("truncated", "partial sample"),
        ("missing", "no such"),
    ],
)
def test_a_bad_recording_is_a_clear_error(
    name: str,
    message: str,
    tmp_path: Path,
    downlink: tuple[np.ndarray, dict[int, list[int]]],
    xdg_cache_home: object,
) -> None:
    samples, _ = downlink
    rng = np.random.default_rng(3)
    if name == "noise":
        noise = rng.normal(size=200_000) + 1j * rng.normal(size=200_000)
        meta = _bad(tmp_path, (0.25 * noise).astype(np.complex64), name)
    elif name == "missing":
        meta = tmp_path / "nowhere.sigmf-meta"
    else:
        meta = _bad(tmp_path, samples, name)
    code, out, err = replay(str(meta), "--json")
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("groundstation: ") and message in err, err
    assert len(err.splitlines()) == 1, err


def test_iq_options_are_for_sigmf_recordings_only(tmp_path: Path) -> None:
    code, _, err = replay(str(tmp_path / "cadus.bin"), "--sps", "4")
    assert code == 2
    assert "--sps" in err
