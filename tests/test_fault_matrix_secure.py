"""The fault matrix again with SDLS on both directions: still every id, once, in order.

Same rows, seed and stand-in generator as ``tests/test_fault_matrix.py``; the frames
are now AES-256-GCM protected (30 octets per frame), so the counters differ and are
not pinned here.  What must hold is the invariants, and that SDLS refused only what
the link damaged or repeated: MAC failures on corrupted frames, and replays no more
than the units the channel duplicated; never an unknown SPI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linkstack.sdls import LinkSecurity
from linkstack.sdls.keystore import CounterStore, generate_key_file, load_key_file
from linkstack.sim.mission import simulate
from tests.test_fault_matrix import (
    PARAMS,
    PROMPT,
    ROWS,
    check_invariants,
    commands_lost,
    fake_generate,
)


def link_security(tmp_path: Path) -> tuple[LinkSecurity, LinkSecurity]:
    generate_key_file(tmp_path / "keys.json")
    key_file = load_key_file(tmp_path / "keys.json")
    sides = []
    for name, spi in (("ground", 1), ("spacecraft", 2)):
        table = key_file.sa_table()
        store = CounterStore(tmp_path / f"{name}.counters")
        sides.append(
            LinkSecurity(
                table=table, send_spi=spi, counter=store.counter(table[spi]), reserve=store.ensure
            )
        )
    return sides[0], sides[1]


@pytest.mark.parametrize("name", list(ROWS))
def test_row_with_sdls(name: str, tmp_path: Path) -> None:
    security = link_security(tmp_path)
    result = simulate(PROMPT, PARAMS, fake_generate, ROWS[name].config(), security=security)
    check_invariants(result)
    assert commands_lost(result) == 0
    sdls = {key: n for key, n in result.drops.items() if key.startswith("sdls/")}
    assert set(sdls) <= {"sdls/mac-mismatch", "sdls/replay"}, sdls
    duplicated = result.uplink_channel.units_duplicated + result.downlink_channel.units_duplicated
    assert sdls.get("sdls/replay", 0) <= duplicated
    if name in ("clean", "loss-1", "loss-10", "loss-30", "dup-reorder"):
        # Loss, duplication and reordering corrupt nothing: no MAC ever fails.
        assert "sdls/mac-mismatch" not in sdls
    if name == "dup-reorder":
        # Every duplicated frame that decodes is refused by anti-replay, after its MAC
        # verified (355.0-B-2 2.3.2.3): the assembler never even sees it.
        assert sdls["sdls/replay"] > 0
        assert result.assembly.duplicate_ids == 0
