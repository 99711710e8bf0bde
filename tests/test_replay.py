"""Recording (``--capture``) and ``groundstation replay``: live equals replay, bad files."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from groundstation.cli import main as groundstation
from groundstation.replay import (
    TIMING_FIELDS,
    TIMING_TOLERANCE_S,
    ReplayResult,
    VirtualClockLoop,
    comparable,
    replay_file,
)
from linkstack.capture import (
    PACKET_UDP_PORT,
    CaptureWriter,
    Direction,
    TailReason,
    TruncatedTail,
    UnitKind,
    read_capture,
    session_metadata,
)
from linkstack.capture.recording import SessionRecorder
from linkstack.cli.main import Streams
from linkstack.cli.main import main as linkstack
from linkstack.coding.tc import TAIL_SEQUENCE, encode_cltu
from linkstack.endpoints import LinkConfig
from linkstack.inference.tokenizer import Tokenizer
from tests.test_capture import block_offsets

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
CLEAN = CAPTURES / "s-band-clean.pcapng"


def replay(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = groundstation(["replay", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def demo(*argv: str) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = linkstack(["demo", *argv], Streams(io.BytesIO(), out, err))
    return code, out.getvalue(), err.getvalue()


# -- live run against its replay ------------------------------------------------------


@pytest.fixture(scope="module")
def live_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A real-time ``linkstack demo`` with bit errors and loss, recorded."""
    path = tmp_path_factory.mktemp("capture") / "live.pcapng"
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
    try:
        code, out, err = demo(
            "--json", "--capture", str(path), "--profile", "s-band", "--ber", "1e-4",
            "--drop", "0.05", "--seed", "5", "--max-new-tokens", "12", "--device", "cpu", "Hi",
        )  # fmt: skip
    finally:
        mp.undo()
    assert code in (0, 1), err
    return path, json.loads(out)


def test_the_replay_reproduces_the_live_run(
    live_session: tuple[Path, dict[str, Any]], xdg_cache_home: object
) -> None:
    path, live = live_session
    code, out, err = replay(str(path), "--json")
    assert code == (0 if live["error"] is None else 1), err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert comparable(record) == comparable(live)
    assert record["received_ids"] == live["generated_ids"]
    for key in TIMING_FIELDS:
        assert record[key] == pytest.approx(live[key], abs=TIMING_TOLERANCE_S)
    assert record["replay"]["uplink"]["identical"] is True
    assert replay(str(path), "--json") == (code, out, err)  # deterministic


def test_the_capture_holds_every_unit_of_the_live_run(
    live_session: tuple[Path, dict[str, Any]],
) -> None:
    path, live = live_session
    with path.open("rb") as stream:
        capture = read_capture(stream)
    kinds = [(u.kind, u.direction) for u in capture.units]
    channels = live["channels"]
    assert kinds.count((UnitKind.CLTU, Direction.UPLINK)) == live["counters"]["cltus_sent"]
    # CADUs as the ground received them: every delivery of the downlink channel.
    assert (
        kinds.count((UnitKind.CADU, Direction.DOWNLINK)) == channels["downlink"]["units_delivered"]
    )
    # The PromptRequest first, then whatever the ground sent after it (resends, Cancel).
    uplink = [
        u for u in capture.units if u.kind is UnitKind.PACKET and u.direction is Direction.UPLINK
    ]
    assert uplink and uplink[0].data[1] == 0x40  # APID 0x040: PromptRequest
    assert (
        kinds.count((UnitKind.PACKET, Direction.DOWNLINK)) == live["counters"]["packets_received"]
    )
    metadata = capture.metadata
    assert metadata["side"] == "ground" and metadata["seed"] == 5
    assert metadata["profile"] == "s-band" and metadata["model"] == "embedded"
    assert capture.link_config() == LinkConfig()
    assert "key" not in json.dumps(metadata).lower()


def test_capture_info_summarises_a_recording(live_session: tuple[Path, dict[str, Any]]) -> None:
    path, _ = live_session
    out, err = io.BytesIO(), io.StringIO()
    assert linkstack(["capture", "info", str(path)], Streams(io.BytesIO(), out, err)) == 0
    assert b"profile: s-band" in out.getvalue()


def test_replay_prints_the_text_without_json(xdg_cache_home: object) -> None:
    live = json.loads((CAPTURES / "s-band-clean.live.json").read_text(encoding="utf-8"))
    code, out, err = replay(str(CLEAN))
    assert code == 0, err
    assert out == live["text"] + "\n"
    assert "max_tokens, 16 ids" in err


# -- tshark ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_dissects_the_space_packets() -> None:
    command = [
        "tshark", "-r", str(CLEAN), "-d", f"udp.port=={PACKET_UDP_PORT},ccsds", "-Y", "ccsds",
        "-T", "fields", "-e", "ccsds.apid", "-e", "ccsds.seqflag", "-e", "ccsds.seqnum",
        "-e", "ccsds.length",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    with CLEAN.open("rb") as stream:
        packets = [u.data for u in read_capture(stream).units if u.kind is UnitKind.PACKET]
    expected = [
        [
            str(((p[0] & 7) << 8) | p[1]),
            str(p[2] >> 6),
            str(((p[2] & 0x3F) << 8) | p[3]),
            str(int.from_bytes(p[4:6], "big")),
        ]
        for p in packets
    ]
    assert rows == expected
    assert len(rows) >= 3


# -- a plain CADU file ---------------------------------------------------------------------


def test_replay_of_a_plain_cadu_file(tmp_path: Path, xdg_cache_home: object) -> None:
    with CLEAN.open("rb") as stream:
        capture = read_capture(stream)
    cadus = tmp_path / "downlink.bin"
    cadus.write_bytes(b"".join(u.data for u in capture.units if u.kind is UnitKind.CADU))
    live = json.loads((CAPTURES / "s-band-clean.live.json").read_text(encoding="utf-8"))
    code, out, err = replay(str(cadus), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "cadu-stream"
    (stream_0,) = report["streams"]
    assert stream_0["received_ids"] == live["received_ids"]
    assert stream_0["text"] == live["text"]
    assert stream_0["finish_reason"] == live["finish_reason"]


# -- bad files -------------------------------------------------------------------------------


def _foreign_pcapng(path: Path) -> None:
    """A pcapng any tool could write: no linkstack metadata."""
    import pcapng  # type: ignore[import-untyped]
    from pcapng import blocks

    section = blocks.SectionHeader(options={"shb_userappl": "someone else"})
    section.new_member(blocks.InterfaceDescription, link_type=1, options={})
    with path.open("wb") as stream:
        pcapng.FileWriter(stream, section)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = CLEAN.read_bytes()
    files: dict[str, tuple[bytes | None, str]] = {
        "empty": (b"", "empty file"),
        "header-only": (data[:40], "truncated"),
        "corrupted": (data[:8] + b"\xff\xff\xff\x7f" + data[12:], "corrupted"),
        "random": (random.Random(7).randbytes(20000), "no CADU found"),
        "text": (b"hello, this is not a capture\n" * 50, "no CADU found"),
        "pcap": (bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"), "libpcap"),
        "foreign": (None, "another tool"),
    }
    out = {}
    for name, (content, message) in files.items():
        path = tmp_path / f"{name}.bin"
        if content is None:
            _foreign_pcapng(path)
        else:
            path.write_bytes(content)
        out[name] = (path, message)
    out["missing"] = (tmp_path / "nowhere.pcapng", "cannot read")
    return out


@pytest.mark.parametrize(
    "name",
    ["empty", "header-only", "corrupted", "random", "text", "pcap", "foreign", "missing"],
)  # fmt: skip
def test_a_bad_file_is_a_clear_error(name: str, tmp_path: Path, xdg_cache_home: object) -> None:
    path, message = _bad_files(tmp_path)[name]
    code, out, err = replay(str(path), "--json")
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("groundstation: ") and message in err, err
    assert str(path) in err
    assert len(err.splitlines()) == 1


def test_every_cut_of_a_capture_is_an_error_or_a_replay(
    tmp_path: Path, xdg_cache_home: object
) -> None:
    data = CLEAN.read_bytes()
    for cut in range(0, len(data), 397):
        path = tmp_path / "cut.pcapng"
        path.write_bytes(data[:cut])
        code, _, err = replay(str(path))
        assert code in (0, 1) and "Traceback" not in err


def test_a_capture_cut_short_replays_up_to_the_cut(
    tmp_path: Path, qwen3_tokenizer: Tokenizer
) -> None:
    """A recording whose last block is cut (a crash) replays what it holds; the result,
    its warning line and each record say what was cut."""
    data = CLEAN.read_bytes()
    with CLEAN.open("rb") as stream:
        whole = read_capture(stream)
    offsets = block_offsets(data)
    cadus = [i for i, u in enumerate(whole.units) if u.kind is UnitKind.CADU]
    last_cadu = offsets[4 + cadus[-1]]  # SHB and 3 IDBs, then one EPB per unit
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[: last_cadu + 50])
    _, result = replay_file(str(path), model=None, tokenizer_for=lambda _: qwen3_tokenizer)
    assert isinstance(result, ReplayResult)
    tail = TruncatedTail(last_cadu, 50, TailReason.CUT_BLOCK)
    assert result.truncated == tail
    assert result.warnings == [f"{path}: {tail}"]
    assert "tail cut: the last 50 octets" in result.warnings[0]
    (record,) = result.records
    assert record["replay"]["truncated"] == {
        "offset": last_cadu,
        "octets": 50,
        "reason": "cut-block",
    }
    assert record["replay"]["units"] == cadus[-1]
    live = json.loads((CAPTURES / "s-band-clean.live.json").read_text(encoding="utf-8"))
    ids = record["received_ids"]
    assert ids == live["received_ids"][: len(ids)]
    # The whole file: nothing cut, nothing to warn about.
    _, whole_result = replay_file(str(CLEAN), model=None, tokenizer_for=lambda _: qwen3_tokenizer)
    assert isinstance(whole_result, ReplayResult)
    assert (whole_result.truncated, whole_result.warnings) == (None, [])
    assert whole_result.records[0]["replay"]["truncated"] is None


# -- the recorder and the clock ---------------------------------------------------------------


def test_the_spacecraft_recorder_cuts_a_tcp_stream_into_cltus() -> None:
    stream = io.BytesIO()
    recorder = SessionRecorder(
        CaptureWriter(stream, session_metadata(LinkConfig())),
        side="spacecraft",
        clock=lambda: 1.0,
        split_cltus=True,
    )
    cltus = [encode_cltu(bytes(range(n)), randomize=True) for n in (10, 40, 7)]
    data = b"".join(cltus)
    for start in range(0, len(data), 13):
        recorder.received(data[start : start + 13], 2.0)
    recorder.sent(b"\x1a\xcf\xfc\x1d" + bytes(20))
    stream.seek(0)
    units = read_capture(stream).units
    assert [u.data for u in units if u.kind is UnitKind.CLTU] == cltus
    assert all(u.data.endswith(TAIL_SEQUENCE) for u in units if u.kind is UnitKind.CLTU)
    assert [(u.kind, u.t) for u in units if u.direction is Direction.DOWNLINK] == [
        (UnitKind.CADU, 1.0)
    ]


def test_the_virtual_clock_jumps_to_the_next_timer() -> None:
    import asyncio

    async def nap() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(10.0)) as runner:
        assert runner.run(nap()) == pytest.approx(3610.0)
