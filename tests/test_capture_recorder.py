"""``--capture FILE``: the early path check, the recorder that creates the file only when
the session starts (and removes it if the start fails), real timestamps, and a recording
process killed with SIGKILL mid-session read back by every reader (and tshark)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.replay import ReplayResult, replay_capture, replay_file
from linkstack.capture import (
    PACKET_UDP_PORT,
    TIME_REFERENCE_KEY,
    Capture,
    TailReason,
    TimeReference,
    TruncatedTail,
    UnitKind,
    read_capture,
    session_metadata,
)
from linkstack.capture.recording import SessionRecorder
from linkstack.cli.main import Streams, main
from linkstack.console.recording import (
    CaptureExists,
    CapturePathError,
    check_capture_path,
    open_recorder,
)
from linkstack.endpoints import LinkConfig
from linkstack.errors import LocalProtocolError
from linkstack.inference.tokenizer import Tokenizer
from tests.test_capture import block_offsets
from tests.test_cli_capture import capture_command  # noqa: F401 - registers ``capture``

ROOT = Path(__file__).resolve().parent.parent
OLD = b"an earlier recording, to be kept\n"
CADU = b"\x1a\xcf\xfc\x1d" + bytes(20)


def metadata(side: str = "ground") -> dict[str, object]:
    return session_metadata(LinkConfig(), side=side, program="test")


class Boom(Exception):
    """The session failed to start."""


# -- check_capture_path ----------------------------------------------------------------------


def test_check_passes_no_capture_and_a_new_file(tmp_path: Path) -> None:
    check_capture_path(None, force=False)
    check_capture_path(str(tmp_path / "new.pcapng"), force=False)
    check_capture_path(str(tmp_path / "new.pcapng"), force=True)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_check_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "old.pcapng"
    path.write_bytes(OLD)
    with pytest.raises(CaptureExists) as info:
        check_capture_path(str(path), force=False)
    assert str(info.value) == f"--capture {path}: the file exists; pass --force to replace it"
    assert info.value.path == str(path)
    assert isinstance(info.value, LocalProtocolError)
    check_capture_path(str(path), force=True)
    assert path.read_bytes() == OLD


@pytest.mark.parametrize("force", [False, True])
def test_check_refuses_a_directory_in_the_way_or_missing(tmp_path: Path, force: bool) -> None:
    with pytest.raises(CapturePathError, match="is a directory"):
        check_capture_path(str(tmp_path), force=force)
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(CapturePathError) as info:
        check_capture_path(str(missing / "x.pcapng"), force=force)
    assert str(info.value) == (
        f"--capture {missing / 'x.pcapng'}: directory {missing} does not exist"
    )


def test_check_refuses_a_directory_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root writes anywhere, so the permission is refused through os.access.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(CapturePathError, match=f"directory {tmp_path} is not writable"):
        check_capture_path(str(tmp_path / "x.pcapng"), force=False)
    existing = tmp_path / "old.pcapng"
    existing.write_bytes(OLD)
    with pytest.raises(CapturePathError, match="the file exists and is not writable"):
        check_capture_path(str(existing), force=True)


# -- open_recorder ---------------------------------------------------------------------------


def test_no_path_no_recorder() -> None:
    with open_recorder(None, metadata(), side="ground", clock=lambda: 0.0) as recorder:
        assert recorder is None


def test_an_existing_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.pcapng"
    path.write_bytes(OLD)
    with (
        pytest.raises(CaptureExists, match="pass --force"),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0),
    ):
        pytest.fail("entered")  # pragma: no cover
    assert path.read_bytes() == OLD


def test_a_file_that_appears_after_the_check_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "race.pcapng"
    check_capture_path(str(path), force=False)
    path.write_bytes(OLD)  # someone else's recording, between the check and the start
    with (
        pytest.raises(CaptureExists),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0),
    ):
        pytest.fail("entered")  # pragma: no cover
    assert path.read_bytes() == OLD


def test_force_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "old.pcapng"
    path.write_bytes(OLD)
    with open_recorder(
        str(path), metadata(), side="ground", clock=lambda: 7.0, force=True
    ) as recorder:
        assert recorder is not None
        recorder.sent(b"\xeb\x90" + bytes(16), 7.5)
    with path.open("rb") as stream:
        capture = read_capture(stream)
    assert [(u.kind, u.t) for u in capture.units] == [(UnitKind.CLTU, 0.5)]


@pytest.mark.parametrize("force", [False, True])
def test_a_failed_start_leaves_no_stub(tmp_path: Path, force: bool) -> None:
    path = tmp_path / "session.pcapng"
    if force:
        path.write_bytes(OLD)
    with (
        pytest.raises(Boom),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0, force=force),
    ):
        assert path.stat().st_size > 0  # the header is written at the start
        raise Boom
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_start_leaves_no_stub(tmp_path: Path) -> None:
    path = tmp_path / "session.pcapng"
    with (
        pytest.raises(KeyboardInterrupt),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0),
    ):
        raise KeyboardInterrupt
    assert not path.exists()


def test_a_failure_after_a_unit_keeps_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "session.pcapng"
    with (
        pytest.raises(Boom),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0) as recorder,
    ):
        assert recorder is not None
        recorder.received(CADU, 0.25)
        raise Boom
    with path.open("rb") as stream:
        capture = read_capture(stream)
    assert [(u.kind, u.data, u.t) for u in capture.units] == [(UnitKind.CADU, CADU, 0.25)]


def test_a_session_that_records_nothing_keeps_its_file(tmp_path: Path) -> None:
    path = tmp_path / "quiet.pcapng"
    with open_recorder(str(path), metadata("spacecraft"), side="spacecraft", clock=lambda: 0.0):
        pass
    with path.open("rb") as stream:
        capture = read_capture(stream)
    assert capture.units == ()
    assert capture.metadata["side"] == "spacecraft"


def test_a_file_put_in_the_place_of_ours_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "session.pcapng"
    with (
        pytest.raises(Boom),
        open_recorder(str(path), metadata(), side="ground", clock=lambda: 0.0),
    ):
        path.unlink()
        path.write_bytes(OLD)
        raise Boom
    assert path.read_bytes() == OLD


def test_an_unwritable_path_is_a_path_error(tmp_path: Path) -> None:
    with (
        pytest.raises(CapturePathError, match="No such file or directory"),
        open_recorder(
            str(tmp_path / "missing" / "x.pcapng"), metadata(), side="ground", clock=lambda: 0.0
        ),
    ):
        pytest.fail("entered")  # pragma: no cover


def test_the_side_goes_into_the_metadata_and_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    with open_recorder(str(path), {"program": "test"}, side="spacecraft", clock=lambda: 0.0):
        pass
    with path.open("rb") as stream:
        assert read_capture(stream).metadata["side"] == "spacecraft"
    with (
        pytest.raises(LocalProtocolError, match="metadata side 'ground' is not the recorder's"),
        open_recorder(
            str(tmp_path / "y.pcapng"), metadata("ground"), side="spacecraft", clock=lambda: 0.0
        ),
    ):
        pytest.fail("entered")  # pragma: no cover
    assert not (tmp_path / "y.pcapng").exists()


def test_the_reference_is_read_once_at_the_start(tmp_path: Path) -> None:
    """Injected clocks: the timestamps are exactly wall start + (t - clock at start)."""
    path = tmp_path / "x.pcapng"
    readings = iter([100.0])
    with open_recorder(
        str(path),
        metadata(),
        side="ground",
        clock=lambda: next(readings),
        wall_clock_ns=lambda: 1_800_000_000_000_000_000,
    ) as recorder:
        assert recorder is not None
        recorder.received(CADU, 100.001)
        recorder.received(CADU, 160.0)
    with path.open("rb") as stream:
        capture = read_capture(stream)
    assert capture.time_reference == TimeReference(1_800_000_000_000_000_000, 100.0)
    assert [u.t for u in capture.units] == [0.001, 60.0]


def test_real_clocks_give_unix_times_in_order(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"

    async def session() -> list[float]:
        loop = asyncio.get_running_loop()
        stamps = []
        with open_recorder(str(path), metadata(), side="ground", clock=loop.time) as recorder:
            assert recorder is not None
            for _ in range(5):
                recorder.received(CADU, loop.time())
                recorder.sent(b"\xeb\x90" + bytes(16))  # at clock()
                stamps.append(loop.time())
                await asyncio.sleep(0.01)
        return stamps

    before = time.time()
    asyncio.run(session())
    after = time.time()
    with path.open("rb") as stream:
        capture = read_capture(stream)
    reference = capture.time_reference
    assert reference is not None
    assert before - 1 <= reference.unix_s <= before + 1
    assert capture.metadata[TIME_REFERENCE_KEY]["utc"].startswith(  # type: ignore[index]
        time.strftime("%Y-%m-%dT", time.gmtime(reference.unix_s))
    )
    unix = [reference.unix_s + u.t for u in capture.units]
    assert all(before - 1 <= t <= after + 1 for t in unix)
    times = [u.t for u in capture.units]
    assert times == sorted(times) and times[0] >= 0
    assert times[-1] - times[0] >= 0.04  # five 10 ms sleeps: the monotonic clock's spacing


# -- killed with SIGKILL mid-session -----------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from linkstack.capture import session_metadata
    from linkstack.console.recording import open_recorder
    from linkstack.endpoints import GroundEndpoint, LinkConfig, SpacecraftEndpoint
    from linkstack.inference.protocol import GenerationParams, PromptRequest, TokenChunk

    class Radio:  # the ground's link: what is sent goes nowhere
        def send(self, data): pass
        def close(self): pass

    async def main(path):
        loop = asyncio.get_running_loop()
        config = LinkConfig()
        metadata = session_metadata(
            config, side="ground", program="kill test", model="embedded", timeout_s=5.0
        )
        ground, spacecraft = GroundEndpoint(config), SpacecraftEndpoint(config)
        with open_recorder(path, metadata, side="ground", clock=loop.time) as recorder:
            ground.packet_tap = recorder.tap
            radio = recorder.link(Radio())
            request = PromptRequest(
                request_id=3, params=GenerationParams(max_new_tokens=5000), prompt_ids=(1, 2, 3)
            )
            ground.send(request, loop.time(), expedited=True)
            for cltu in ground.data_to_send():
                radio.send(cltu)
            index = 0
            while True:
                spacecraft.send(TokenChunk(request_id=3, first_index=index, ids=(100 + index,)))
                index += 1
                recorder.received(spacecraft.next_cadu(), loop.time())
                print(recorder.writer.units_written, flush=True)
                await asyncio.sleep(0.005)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, float]]:
    """A recording process killed with SIGKILL after it said it had written 40 units:
    the file, the units it said it had written, the wall clock before it started."""
    path = tmp_path_factory.mktemp("killed") / "session.pcapng"
    script = path.parent / "record.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = time.time()
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        said = 0
        deadline = time.monotonic() + 60
        while said < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            said = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:  # pragma: no cover - a child that outlived the kill
            child.kill()
            child.wait()
    assert said >= 40, child.stderr.read() if child.stderr else ""
    assert child.returncode == -signal.SIGKILL
    yield path, said, before


def _read(path: Path) -> Capture:
    with path.open("rb") as stream:
        return read_capture(stream)


def test_a_killed_recording_holds_every_unit_it_wrote(killed: tuple[Path, int, float]) -> None:
    path, said, before = killed
    capture = _read(path)
    assert len(capture.units) >= said  # each block flushed as it was written
    assert capture.truncated is None  # a kill lands between whole writes
    kinds = [u.kind for u in capture.units]
    assert kinds[:2] == [UnitKind.PACKET, UnitKind.CLTU]  # the request, then its CLTU
    assert kinds[2:] == [UnitKind.CADU] * (len(kinds) - 2)
    reference = capture.time_reference
    assert reference is not None and before - 1 <= reference.unix_s <= time.time()
    times = [u.t for u in capture.units]
    assert times == sorted(times)


def cut_copies(path: Path, directory: Path) -> dict[str, tuple[Path, TruncatedTail]]:
    """The killed file with its last block cut, and with zeros after the cut."""
    data = path.read_bytes()
    last = block_offsets(data)[-1]
    cut = directory / "cut.pcapng"
    cut.write_bytes(data[: last + 17])
    zeros = directory / "zeros.pcapng"
    zeros.write_bytes(data[: last + 8] + bytes(4096))
    return {
        "cut": (cut, TruncatedTail(last, 17, TailReason.CUT_BLOCK)),
        "zeros": (zeros, TruncatedTail(last, 8 + 4096, TailReason.ZERO_FILL)),
    }


@pytest.mark.parametrize("which", ["whole", "cut", "zeros"])
def test_capture_info_reads_a_killed_recording(
    killed: tuple[Path, int, float], tmp_path: Path, which: str
) -> None:
    path, said, _ = killed
    tail = None
    if which != "whole":
        path, tail = cut_copies(path, tmp_path)[which]
    out, err = io.BytesIO(), io.StringIO()
    code = main(["capture", "info", str(path)], Streams(io.BytesIO(), out, err))
    text = out.getvalue().decode()
    assert (code, err.getvalue()) == (0, ""), err.getvalue()
    assert "  started: 20" in text
    if tail is None:
        assert "tail cut" not in text
    else:
        assert f"  {tail}\n" in text
    out = io.BytesIO()
    assert main(["capture", "info", "--json", str(path)], Streams(io.BytesIO(), out, err)) == 0
    report = json.loads(out.getvalue())
    assert report["truncated"] == (None if tail is None else tail.to_json())
    assert report["started_utc"].startswith("20")
    assert report["directions"]["downlink"]["total_units"] >= said - 2 - (tail is not None)


@pytest.mark.parametrize("which", ["whole", "cut", "zeros"])
def test_the_replay_reads_a_killed_recording(
    killed: tuple[Path, int, float], tmp_path: Path, which: str, qwen3_tokenizer: Tokenizer
) -> None:
    path, _, _ = killed
    tail = None
    if which != "whole":
        path, tail = cut_copies(path, tmp_path)[which]
    _, result = replay_file(str(path), model=None, tokenizer_for=lambda _: qwen3_tokenizer)
    assert isinstance(result, ReplayResult)
    assert result.truncated == tail
    assert result.warnings == ([] if tail is None else [f"{path}: {tail}"])
    (answer,) = result.answers
    capture = _read(path)
    cadus = sum(1 for u in capture.units if u.kind is UnitKind.CADU)
    # One TokenChunk of id 100 + i per CADU: the replay got every one, in order.
    assert list(answer.received_ids) == [100 + i for i in range(cadus)]
    assert answer.error is not None  # cut off mid-stream: never completed
    assert replay_capture(capture, qwen3_tokenizer).records[0]["replay"]["truncated"] == (
        None if tail is None else tail.to_json()
    )


# -- tshark ---------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_a_killed_recording_with_its_real_date(
    killed: tuple[Path, int, float],
) -> None:
    path, _, _ = killed
    command = [
        "tshark", "-r", str(path), "-d", f"udp.port=={PACKET_UDP_PORT},ccsds",
        "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_name",
        "-e", "frame.interface_description",
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
    capture = _read(path)
    assert len(rows) == len(capture.units)
    epochs = [float(row[0]) for row in rows]
    assert time.gmtime(epochs[0]).tm_year >= 2025
    assert epochs == sorted(epochs)
    reference = capture.time_reference
    assert reference is not None
    for epoch, unit in zip(epochs, capture.units, strict=True):
        assert epoch == pytest.approx(reference.unix_s + unit.t, abs=1e-6)
    descriptions = {row[1]: row[2] for row in rows}
    assert "as received by the ground" in descriptions["linkstack-downlink"]
    assert "as sent by the ground" in descriptions["linkstack-uplink"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_a_recording_cut_mid_block(
    killed: tuple[Path, int, float], tmp_path: Path
) -> None:
    path, _ = cut_copies(killed[0], tmp_path)["cut"]
    done = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert len(done.stdout.split()) == len(_read(path).units)


def test_the_recorder_side_and_session_recorder_types(tmp_path: Path) -> None:
    with open_recorder(
        str(tmp_path / "x.pcapng"), metadata(), side="ground", clock=lambda: 0.0
    ) as recorder:
        assert isinstance(recorder, SessionRecorder)
        assert recorder.writer.time_reference is not None
