"""Key files (mode 0600, atomic) and IV-counter persistence across restarts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from linkstack.sdls import (
    KeyManager,
    KeyState,
    SaTable,
    TxCounter,
    protect_tm,
    tm_data_capacity,
    unprotect_tm,
)
from linkstack.sdls.keystore import (
    CounterStore,
    InsecureKeyFile,
    KeyFileError,
    KeyFileExists,
    generate_key_file,
    load_key_file,
    save_keys,
)
from linkstack.tm.frame import TmChannelConfig, TmFrame

CONFIG = TmChannelConfig(scid=7, frame_length=128)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_mode_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    made = generate_key_file(path)
    assert mode(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.sas == made.sas
    assert loaded.keys.ids() == [0, 128, 129]
    for key_id in loaded.keys.ids():
        assert loaded.keys.material(key_id) == made.keys.material(key_id)
        assert loaded.keys.state(key_id) == KeyState.ACTIVE
    document = json.loads(path.read_text())
    assert document["format"] == "linkstack-sdls-keys"
    assert [sa["spi"] for sa in document["security_associations"]] == [1, 2]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = generate_key_file(path)
    with pytest.raises(KeyFileExists, match=str(path)):
        generate_key_file(path)
    assert load_key_file(path).keys.material(128) == first.keys.material(128)
    second = generate_key_file(path, overwrite=True)
    assert load_key_file(path).keys.material(128) == second.keys.material(128)
    assert second.keys.material(128) != first.keys.material(128)


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_group_or_world_access(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "keys.json"
    made = generate_key_file(path)
    os.chmod(path, bad_mode)
    with pytest.raises(InsecureKeyFile) as info:
        load_key_file(path)
    message = str(info.value)
    assert str(path) in message and f"{bad_mode:04o}" in message
    for key_id in made.keys.ids():
        material = made.keys.material(key_id)
        assert material is not None and material.secret_octets().hex() not in message


def test_malformed_key_files_never_echo_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    generate_key_file(path)
    document = json.loads(path.read_text())
    secret = document["keys"][1]["key"]
    document["keys"][1]["key"] = secret[:-1]  # 63 hex digits
    cases = [json.dumps(document), path.read_text()[:-40] + secret]
    for text in cases:
        path.write_text(text)
        os.chmod(path, 0o600)
        with pytest.raises(KeyFileError) as info:
            load_key_file(path)
        assert secret not in str(info.value) and secret[:-1] not in str(info.value)
        assert str(path) in str(info.value)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_key_file(tmp_path / "missing.json")


def _frames(key_path: Path, counters: Path, n: int, store_block: int) -> list[bytes]:
    key_file = load_key_file(key_path)
    sa = key_file.sas[1]
    store = CounterStore(counters, block=store_block)
    c = store.counter(sa)
    out = []
    for i in range(n):
        store.ensure(c)
        frame = TmFrame(
            scid=7,
            vcid=0,
            mc_count=i % 256,
            vc_count=i % 256,
            first_header_pointer=0,
            data=bytes(tm_data_capacity(CONFIG, sa)),
            ocf=0,
        )
        out.append(
            protect_tm(frame, sa=sa, keys=key_file.keys, counter=c, config=CONFIG).to_bytes()
        )
    return out


def test_iv_unique_across_restart_and_receiver_follows(tmp_path: Path) -> None:
    keys, counters = tmp_path / "keys.json", tmp_path / "counters.json"
    generate_key_file(keys)
    first = _frames(keys, counters, 20, store_block=8)  # marks 9, 17, 25 written
    assert json.loads(counters.read_text())["tx"] == {"spi-2": 25}
    assert mode(counters) == 0o600
    second = _frames(keys, counters, 20, store_block=8)  # a "restart": resumes at 25
    ivs = [wire[8:20] for wire in first + second]
    assert len(set(ivs)) == 40
    assert int.from_bytes(ivs[20], "big") == 25
    # The receiver (default: no forward limit) takes the jump over the lost block.
    key_file = load_key_file(keys)
    receiver_counters = CounterStore(tmp_path / "rx.json")
    table = SaTable(key_file.sas, key_file.keys)
    for wire in first + second:
        unprotect_tm(TmFrame.from_bytes(wire, config=CONFIG), table)
    receiver_counters.save_receive_state(table, KeyManager(key_file.keys))
    # After the receiver restarts, an old frame is a replay.
    restored = CounterStore(tmp_path / "rx.json")
    assert restored.record.rx == {2: 44}
    table2 = SaTable(key_file.sas, key_file.keys, replay_state=restored.record.rx)
    with pytest.raises(Exception) as info:
        unprotect_tm(TmFrame.from_bytes(second[-1], config=CONFIG), table2)
    assert getattr(info.value, "reason", None) == "replay"


def test_crash_between_reservations_never_reuses(tmp_path: Path) -> None:
    """A value is used only once its block is on disk: a crash right after writing skips it."""
    store = CounterStore(tmp_path / "c.json", block=4)
    c = TxCounter("spi-9", limit=1000)
    store.ensure(c)
    used = [c.take(), c.take()]
    # crash: in-memory counter lost; reload
    again = CounterStore(tmp_path / "c.json", block=4)
    resumed = TxCounter("spi-9", limit=1000, next_value=again.record.tx["spi-9"])
    again.ensure(resumed)
    assert resumed.take() == 5 and 5 not in used


def test_save_keys_after_key_management(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key_file = generate_key_file(path)
    key_file.keys.transition(129, KeyState.DEACTIVATED)
    save_keys(path, key_file)
    assert load_key_file(path).keys.state(129) == KeyState.DEACTIVATED
    assert mode(path) == 0o600
