"""CFDP uploads over the S-band profile on the virtual clock: integrity, goodput, NAKs.

    .venv/bin/python bench/bench_cfdp.py                 # the three runs below, 20 MB
    .venv/bin/python bench/bench_cfdp.py --size-mb 2 --json

Runs (64 kbit/s up, 2 Mbit/s down, the profile's 1e-5 BER and 3 ms delay):

- ``lossy``: 10 % of CLTUs and of CADUs lost, and two outages (loss of signal both
  ways), file data Type-BD with CFDP Class 2 NAKs repairing the losses;
- ``clean-bd``: no loss, the same service;
- ``clean-ad``: no loss, file data Type-AD (COP-1 retransmits; 4-frame PDUs).

Goodput is file octets x 8 over the virtual time from the Put to the sender's
Transaction-Finished, as a fraction of the raw uplink rate (CLTU octets on the air);
``link-up`` leaves out the outages.  The file's SHA-256 is compared end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time

from linkstack.cfdp.entity import CfdpConfig
from linkstack.cfdp.wire import GROUND_ENTITY_ID, SPACECRAFT_ENTITY_ID
from linkstack.radio.channel import Outage, link_profile
from linkstack.sim.transfer import FileTransfer, TransferConfig, file_transfer_link, pdu_length_for


def run(name: str, size: int, *, loss: float, outages: tuple[Outage, ...], bd: bool, seed: int):
    profile = link_profile("s-band")
    link = file_transfer_link()
    frames = 1 if bd else 4
    config = TransferConfig(
        link=link,
        uplink=dataclasses.replace(profile.uplink, loss_probability=loss, outages=outages),
        downlink=dataclasses.replace(profile.downlink, loss_probability=loss, outages=outages),
        seed=seed,
        expedited_file_data=bd,
        idle_interval_s=2.0,
        cfdp=CfdpConfig(
            local_id=GROUND_ENTITY_ID,
            remote_id=SPACECRAFT_ENTITY_ID,
            max_pdu_length=pdu_length_for(link, frames),
            nak_timer_s=3.0,
            nak_limit=100,
            ack_timer_s=10.0,
            ack_limit=60,
        ),
    )
    data = random.Random(seed).randbytes(size)
    started = time.perf_counter()
    result = FileTransfer(config).upload(data, "payload.bin")
    wall = time.perf_counter() - started
    return {
        "run": name,
        "size_octets": size,
        "service": "Type-BD + CFDP NAK" if bd else "Type-AD (COP-1)",
        "loss": loss,
        "outages": [[o.start, o.duration] for o in outages],
        "ok": result.ok,
        "sha256_sent": result.sent_sha256,
        "sha256_received": result.received_sha256,
        "bit_exact": result.bit_exact,
        "virtual_s": round(result.elapsed_s, 1),
        "outage_s": round(result.outage_s, 1),
        "wall_s": round(wall, 1),
        "goodput_bps": round(result.goodput_bps),
        "goodput_ratio": round(result.goodput_ratio, 3),
        "goodput_ratio_link_up": round(result.goodput_ratio_link_up, 3),
        "naks": result.receiver.naks_sent,
        "segment_requests": result.receiver.segment_requests_sent,
        "file_data_pdus": result.sender.file_data_pdus_sent,
        "file_data_retransmitted": result.sender.file_data_retransmitted,
        "cop1_retransmissions": result.ground.tc_frames_retransmitted,
        "cltus_sent": result.ground.cltus_sent,
        "cltus_lost": result.uplink_channel.units_lost + result.uplink_channel.units_lost_outage,
        "cadus_lost": result.downlink_channel.units_lost
        + result.downlink_channel.units_lost_outage,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", default="lossy,clean-bd,clean-ad")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    size = int(args.size_mb * 1_000_000)
    # Two passes' worth of loss of signal, in proportion to the transfer's ~50 min.
    outages = (
        (Outage(500.0, 45.0), Outage(1500.0, 90.0))
        if size >= 10_000_000
        else (
            Outage(size / 40_000, 20.0),
            Outage(size / 15_000, 30.0),
        )
    )
    plans = {
        "lossy": {"loss": 0.10, "outages": outages, "bd": True},
        "clean-bd": {"loss": 0.0, "outages": (), "bd": True},
        "clean-ad": {"loss": 0.0, "outages": (), "bd": False},
    }
    rows = [
        run(name, size, seed=args.seed, **plans[name])  # type: ignore[arg-type]
        for name in args.runs.split(",")
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        for row in rows:
            print(
                f"{row['run']:9} {row['service']:19} {row['size_octets'] / 1e6:5.1f} MB"
                f" exact={row['bit_exact']} virtual={row['virtual_s']:7.1f} s"
                f" wall={row['wall_s']:5.1f} s goodput={row['goodput_ratio']:.3f}"
                f" (link up {row['goodput_ratio_link_up']:.3f}) NAKs={row['naks']}"
                f" resent PDUs={row['file_data_retransmitted']}"
                f" COP-1 resent={row['cop1_retransmissions']}"
            )
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
