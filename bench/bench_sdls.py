"""SDLS protect + unprotect throughput on 1115-octet TM frames (AES-256-GCM baseline).

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_sdls.py [frames]``.  Measures the bare
protect_tm/unprotect_tm pair (frame codec object to object), then the same with
to_bytes/from_bytes in between.  Reports frames/s and Mbit/s of 1115-octet frames.
"""

from __future__ import annotations

import os
import sys
import time

from linkstack.sdls import (
    KeyMaterial,
    KeyRing,
    KeyState,
    Link,
    SaTable,
    SecurityAssociation,
    TxCounter,
    protect_tm,
    tm_data_capacity,
    unprotect_tm,
)
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
