"""SDLS protect + unprotect throughput on 1115-octet TM frames (AES-256-GCM baseline).

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_sdls.py [frames]``.  Measures the bare
protect_tm/unprotect_tm pair (frame codec object to object), then the same with
to_bytes/from_bytes in between.  Reports frames/s and Mbit/s of 1115-octet frames.

Then the spacecraft's side of the uplink: unprotect_tc of 1024-octet TC frames with the
receive window kept in memory, and with it written to the counter file on every frame
that moves it (``SaTable.on_window_advance`` = ``CounterStore.save_window``: flock,
re-read, write, fsync, rename, as ``onboard serve --keys`` does), so that a restart
accepts no replay.  The second figure depends on the disk's fsync latency.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from linkstack.sdls import (
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    SaTable,
    SecurityAssociation,
    TxCounter,
    protect_tc,
    protect_tm,
    tm_data_capacity,
    unprotect_tc,
    unprotect_tm,
)
from linkstack.sdls.keystore import CounterStore
from linkstack.tc.frame import BypassFlag, SegmentHeader, SequenceFlags, TcFrame, TcVcConfig
from linkstack.tm.frame import TmChannelConfig, TmFrame


def main(n: int = 20000) -> None:
    config = TmChannelConfig(scid=0x2A, frame_length=1115)
    sa = SecurityAssociation(spi=2, link=Link.TM, vcids=frozenset({0}), key_id=129)
    keys = KeyRing([(129, KeyMaterial(os.urandom(32)), KeyState.ACTIVE)])
    capacity = tm_data_capacity(config, sa)
    frame = TmFrame(
        scid=0x2A,
        vcid=0,
        mc_count=0,
        vc_count=0,
        first_header_pointer=0,
        data=os.urandom(capacity),
        ocf=0,
    )
    for label, with_codec in (("protect+unprotect", False), ("with to/from_bytes", True)):
        counter = TxCounter.for_sa(sa)
        counter.confirm_reservation(counter.plan_reservation(n))
        table = SaTable([sa], keys)
        start = time.perf_counter()
        for _ in range(n):
            protected = protect_tm(frame, sa=sa, keys=keys, counter=counter, config=config)
            if with_codec:
                protected = TmFrame.from_bytes(protected.to_bytes(), config=config)
            unprotect_tm(protected, table)
        elapsed = time.perf_counter() - start
        mbit = n * config.frame_length * 8 / elapsed / 1e6
        print(
            f"{label:20s} {n} frames of {config.frame_length} octets"
            f" ({capacity} data, {sa.overhead} SDLS overhead): {elapsed:.2f} s,"
            f" {n / elapsed:,.0f} frames/s, {mbit:.0f} Mbit/s"
        )


def window_saves(n: int) -> None:
    """TC frames per second on board, without and with the per-frame window save."""
    config = TcVcConfig(scid=0x2A, vcid=0, segment_header=True, max_frame_length=1024)
    sa = SecurityAssociation(
        spi=1, link=Link.TC, vcids=frozenset({0}), key_id=128, arsn_window=1, max_arsn_jump=5
    )
    keys = KeyRing([(128, KeyMaterial(os.urandom(32)), KeyState.ACTIVE)])
    counter = TxCounter.for_sa(sa)
    counter.confirm_reservation(counter.plan_reservation(n))
    data = os.urandom(1024 - 5 - 1 - 2 - sa.overhead)  # header, segment header, FECF
    frames = [
        protect_tc(
            TcFrame.data_frame(
                config,
                data,
                bypass=BypassFlag.TYPE_A,
                sequence_number=i % 256,
                segment_header=SegmentHeader(SequenceFlags.UNSEGMENTED, 0),
            ),
            sa=sa,
            keys=keys,
            counter=counter,
            config=config,
        )
        for i in range(n)
    ]
    rates = []
    with tempfile.TemporaryDirectory() as directory:
        store = CounterStore(Path(directory) / "keys.json.spacecraft.counters")
        for label, save in (("window in memory", None), ("window saved/frame", store.save_window)):
            table = SaTable([sa], keys, on_window_advance=save)
            start = time.perf_counter()
            for frame in frames:
                unprotect_tc(frame, table)
            elapsed = time.perf_counter() - start
            rates.append(n / elapsed)
            print(
                f"{label:20s} {n} TC frames of 1024 octets: {elapsed:.3f} s,"
                f" {n / elapsed:,.0f} frames/s, {elapsed / n * 1e6:,.0f} us/frame"
            )
        assert store.record.rx[sa.spi] == n  # every frame's window was saved
    print(
        f"per-frame window save: {1e6 / rates[1] - 1e6 / rates[0]:,.0f} us/frame more,"
        f" x{rates[0] / rates[1]:,.1f} slower"
    )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    main(count)
    window_saves(min(count, 500))
