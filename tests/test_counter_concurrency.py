"""No SDLS IV is used twice by processes sharing one counter file.

AES-GCM must never see an IV twice under one key (NIST SP 800-38D 8.2.1); two
processes of the same role on one key file send under the same key.  The tests run
real processes (this file, run as a script, is the child) that start together on a
line from the parent, never on a timer, and a child killed with SIGKILL at an
arbitrary point of its reservation loop.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from linkstack.errors import LocalProtocolError
from linkstack.sdls import (
    CounterExhausted,
    CounterNotReserved,
    KeyManager,
    SaTable,
    TxCounter,
    tm_data_capacity,
)
from linkstack.sdls.keystore import (
    LOCK_SUFFIX,
    CounterStore,
    InsecureKeyFile,
    counter_path,
    generate_key_file,
    link_security,
)
from linkstack.tm.frame import TmChannelConfig, TmFrame

CONFIG = TmChannelConfig(scid=7, frame_length=128)
REPO = Path(__file__).resolve().parents[1]
#: The IV of a protected TM frame without secondary header: after the primary header
#: (6 octets, CCSDS 132.0-B-3 4.1.2) and the SPI (2 octets, CCSDS 355.0-B-2 4.1.1.2),
#: iv_length = 12 octets (the default SAs).
IV_OCTETS = slice(8, 20)
#: The counter the "take" children share, and its limit (any label works the same way).
LABEL = "spi-9"
LIMIT = (1 << 96) - 1


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the child side ------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write of a few octets: atomic on a pipe
    sys.stdout.flush()


def _wait_for_parent() -> None:
    if sys.stdin.readline() != "go\n":
        raise SystemExit("parent went away")


def _child_protect(keys: str, n: int, block: int, hold: bool) -> None:
    """Send ``n`` TM frames as the spacecraft and report each frame's IV; with ``hold``,
    wait for the parent before saving the receive state on exit."""
    role = link_security(keys, role="spacecraft", block=block)
    security = role.security
    data = bytes(tm_data_capacity(CONFIG, security.send_sa))
    _say("ready")
    _wait_for_parent()
    for i in range(n):
        frame = TmFrame(
            scid=7,
            vcid=0,
            mc_count=i % 256,
            vc_count=i % 256,
            first_header_pointer=0,
            data=data,
            ocf=0,
        )
        wire = security.protect_tm(frame, CONFIG).to_bytes()
        _say(str(int.from_bytes(wire[IV_OCTETS], "big")))
    if hold:
        _say("held")
        _wait_for_parent()
    role.save_receive_state()
    _say("done")


def _child_take(counters: str, n: int, block: int) -> None:
    """Take ``n`` values (0: until killed) through CounterStore.ensure + TxCounter.take."""
    store = CounterStore(counters, block=block)
    counter = TxCounter(LABEL, limit=LIMIT, next_value=store.record.tx.get(LABEL, 1))
    _say("ready")
    _wait_for_parent()
    taken = 0
    while n == 0 or taken < n:
        store.ensure(counter)
        _say(str(counter.take()))
        taken += 1
    _say("done")


# -- the parent side -----------------------------------------------------------------------


Children = list[subprocess.Popen[str]]


@pytest.fixture
def children() -> Iterator[Children]:
    """The child processes a test started; any still running at teardown is killed."""
    started: Children = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _spawn(children: Children, *args: object) -> subprocess.Popen[str]:
    """This file as a child process; it says "ready" once it has read its files."""
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    proc = subprocess.Popen(
        [sys.executable, __file__, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )
    children.append(proc)
    assert _line(proc) == "ready"
    return proc


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.endswith("\n"), f"child {proc.pid} ended early (rc {proc.poll()}): {line!r}"
    return line[:-1]


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _values_until(proc: subprocess.Popen[str], end: str) -> list[int]:
    values = []
    while (line := _line(proc)) != end:
        values.append(int(line))
    return values


def _finish(proc: subprocess.Popen[str]) -> list[int]:
    """The values a child reports until "done", once it has exited cleanly."""
    values = _values_until(proc, "done")
    assert proc.wait() == 0
    return values


def _tx_mark(counters: Path, label: str) -> int:
    mark = json.loads(counters.read_text())["tx"][label]
    assert isinstance(mark, int)
    return mark


# -- (a) concurrent senders -----------------------------------------------------------------


def test_concurrent_senders_on_one_key_file_never_share_an_iv(
    tmp_path: Path, children: Children
) -> None:
    keys = tmp_path / "keys.json"
    generate_key_file(keys)
    # Every child has read the (empty) counter file before any of them sends: with
    # per-process memory alone they would all start at IV 1.
    senders = [_spawn(children, "protect", keys, 200, 4, 0) for _ in range(4)]
    for child in senders:
        _go(child)
    per_child = [_finish(child) for child in senders]
    ivs = [iv for values in per_child for iv in values]
    assert len(ivs) == 800
    assert len(set(ivs)) == len(ivs), "an IV was used twice under one key"
    for values in per_child:
        assert values == sorted(values) and len(set(values)) == len(values)
    counters = counter_path(keys, "spacecraft")
    assert _tx_mark(counters, "spi-2") > max(ivs)
    assert mode(counters) == 0o600
    assert mode(counters.with_name(counters.name + LOCK_SUFFIX)) == 0o600
    # A sender started afterwards continues above every IV the others used.
    later = link_security(keys, role="spacecraft", block=4)
    assert later.store is not None
    later.store.ensure(later.security.counter)
    assert later.security.counter.take() > max(ivs)


@pytest.mark.parametrize("block", [1, 4])
def test_concurrent_reservations_hand_out_each_value_once(
    tmp_path: Path, children: Children, block: int
) -> None:
    counters = tmp_path / "c.json"
    senders = [_spawn(children, "take", counters, 150, block) for _ in range(4)]
    for child in senders:
        _go(child)
    values = [value for child in senders for value in _finish(child)]
    assert len(values) == 600
    assert len(set(values)) == len(values), "a counter value was handed out twice"
    assert _tx_mark(counters, LABEL) > max(values)


# -- (b) a sender killed in its reservation loop -----------------------------------------------


@pytest.mark.parametrize("block", [1, 4])
def test_sigkill_mid_reservation_then_restart_never_reuses(
    tmp_path: Path, children: Children, block: int
) -> None:
    counters = tmp_path / "c.json"
    used: list[int] = []
    for kill_after in (1, 7, 25):  # three lives, each killed at a different point
        child = _spawn(children, "take", counters, 0, block)
        _go(child)
        for _ in range(kill_after):
            used.append(int(_line(child)))
        child.send_signal(signal.SIGKILL)
        assert child.stdout is not None
        rest = child.stdout.read()  # what it reported before dying
        used.extend(int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n"))
        assert child.wait() == -signal.SIGKILL
    assert len(set(used)) == len(used)
    # The restart: a new store on the same file (its lock free again) resumes above them.
    assert _tx_mark(counters, LABEL) > max(used)
    store = CounterStore(counters, block=block)
    counter = TxCounter(LABEL, limit=LIMIT, next_value=store.record.tx[LABEL])
    store.ensure(counter)
    assert counter.take() > max(used)


# -- (c) a stale process exits last ----------------------------------------------------------


def test_stale_process_exiting_last_never_rolls_the_mark_back(
    tmp_path: Path, children: Children
) -> None:
    keys = tmp_path / "keys.json"
    generate_key_file(keys)
    counters = counter_path(keys, "spacecraft")
    a = _spawn(children, "protect", keys, 1, 4, 1)
    _go(a)
    a_ivs = _values_until(a, "held")  # A reserved 1..4 (mark 5) and used IV 1
    assert a_ivs == [1] and _tx_mark(counters, "spi-2") == 5
    b = _spawn(children, "protect", keys, 10, 4, 0)
    _go(b)
    b_ivs = _finish(b)  # B started above A's block and exited, saving its state
    assert b_ivs == list(range(5, 15))
    mark = _tx_mark(counters, "spi-2")
    assert mark == 17
    _go(a)  # A, whose memory still says 5, saves its receive state and exits
    assert _finish(a) == []
    assert _tx_mark(counters, "spi-2") == mark
    restarted = link_security(keys, role="spacecraft", block=4)
    assert restarted.security.counter.next_value == mark


def test_receive_windows_and_otar_marks_merge_by_max(tmp_path: Path) -> None:
    """Two stores stand for two processes: the one that read the file first and saves
    last lowers no window, no OTAR mark and no sending mark."""
    key_file = generate_key_file(tmp_path / "keys.json")
    path = tmp_path / "c.json"
    stale, fresh = CounterStore(path, block=4), CounterStore(path, block=4)
    fresh.reserve(TxCounter(LABEL, limit=LIMIT))
    fresh.save_receive_state(
        SaTable(key_file.sas, key_file.keys, replay_state={2: 100}),
        KeyManager(key_file.keys, otar_highest={0: 30}),
    )
    stale.save_receive_state(
        SaTable(key_file.sas, key_file.keys, replay_state={1: 7, 2: 40}),
        KeyManager(key_file.keys, otar_highest={0: 3}),
    )
    stale.save()
    record = CounterStore(path).record
    assert record.rx == {1: 7, 2: 100}
    assert record.otar_rx == {0: 30}
    assert record.tx == {LABEL: 5}
    assert stale.record == record  # what it wrote is what the file holds


def test_stores_sharing_a_file_interleave_without_reuse(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    a, b = CounterStore(path, block=3), CounterStore(path, block=5)
    ca, cb = TxCounter(LABEL, limit=LIMIT), TxCounter(LABEL, limit=LIMIT)
    taken = []
    for i in range(60):
        store, counter = (a, ca) if i % 3 else (b, cb)
        store.ensure(counter)
        taken.append(counter.take())
    assert len(set(taken)) == 60
    assert _tx_mark(path, LABEL) > max(taken)


# -- the lock file, old files, the counter's jump ---------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o277])
def test_lock_file_is_created_mode_0600(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "c.json"
    lock = tmp_path / ("c.json" + LOCK_SUFFIX)
    store = CounterStore(path)
    assert not lock.exists()  # reading needs no lock
    old = os.umask(umask)
    try:
        store.reserve(TxCounter(LABEL, limit=LIMIT))
    finally:
        os.umask(old)
    assert mode(lock) == 0o600 and mode(path) == 0o600
    assert lock.read_bytes() == b""


def test_lock_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    store = CounterStore(path)
    store.reserve(TxCounter(LABEL, limit=LIMIT))
    before = path.read_bytes()
    lock = tmp_path / ("c.json" + LOCK_SUFFIX)
    os.chmod(lock, 0o644)
    counter = TxCounter(LABEL, limit=LIMIT, next_value=CounterStore(path).record.tx[LABEL])
    with pytest.raises(InsecureKeyFile) as info:
        store.reserve(counter)
    assert str(lock) in str(info.value) and "0644" in str(info.value)
    assert path.read_bytes() == before
    assert counter.remaining_reserved == 0  # nothing confirmed


def test_counter_file_without_lock_file_still_loads(tmp_path: Path) -> None:
    """A counter file written before the lock existed (same format) loads and resumes."""
    path = tmp_path / "c.json"
    old_document = {
        "format": "linkstack-sdls-counters",
        "version": 1,
        "tx": {"spi-2": 1025, "mkid-0": 17},
        "rx": {"1": 4711},
        "otar_rx": {"0": 16},
    }
    path.write_text(json.dumps(old_document, indent=2) + "\n")
    os.chmod(path, 0o600)
    key_file = generate_key_file(tmp_path / "keys.json")
    store = CounterStore(path, block=8)
    counter = store.counter(key_file.sas[1])
    assert counter.next_value == 1025
    assert store.master_counter(0).next_value == 17
    store.ensure(counter)
    assert counter.take() == 1025
    document = json.loads(path.read_text())
    assert document == {**old_document, "tx": {"mkid-0": 17, "spi-2": 1033}}


def test_reservation_refused_once_another_process_exhausted_the_counter(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    limit = 10
    other = CounterStore(path, block=limit)
    other.reserve(TxCounter(LABEL, limit=limit))  # mark 11 = limit + 1
    counter = TxCounter(LABEL, limit=limit)
    with pytest.raises(CounterExhausted):
        CounterStore(path).reserve(counter)
    assert counter.remaining_reserved == 0


def test_advance_to_skips_only_what_lies_beyond_its_own_reservation() -> None:
    counter = TxCounter(LABEL, limit=100)
    counter.confirm_reservation(counter.plan_reservation(4))  # 1..4 are its own
    assert counter.take() == 1
    for inside in (0, 3, 5):
        counter.advance_to(inside)
        assert (counter.next_value, counter.reserved_until) == (2, 5)
    counter.advance_to(9)  # someone else reserved 5..8
    assert (counter.next_value, counter.reserved_until) == (9, 9)
    with pytest.raises(CounterNotReserved):
        counter.take()
    for outside in (-1, 102):
        with pytest.raises(LocalProtocolError, match=f"{outside}, outside 0..101"):
            counter.advance_to(outside)
    counter.advance_to(101)
    with pytest.raises(CounterExhausted):
        counter.plan_reservation(1)


if __name__ == "__main__":
    _mode, *_args = sys.argv[1:]
    if _mode == "protect":
        _child_protect(_args[0], int(_args[1]), int(_args[2]), _args[3] == "1")
    elif _mode == "take":
        _child_take(_args[0], int(_args[1]), int(_args[2]))
    else:
        raise SystemExit(f"unknown child mode {_mode!r}")
