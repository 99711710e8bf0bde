"""``linkstack keys generate PATH``: write a new SDLS key file (CCSDS 355.0-B-2).

The file holds a master key (id 0, for OTAR) and two session keys: 128 protects TC
VC 0 under SPI 1, 129 protects TM VCs 0-7 under SPI 2 (AES-256-GCM, 96-bit counter
IV, 128-bit MAC).  ``--management-vc VC`` adds key 130 and the TC management SA
(SPI 3) on that VC, which carries Set ARSN and Read ARSN (CCSDS 355.1-B-1): the
programs then route key management there.  ``--profile cryptolib`` makes the TC SA
accept only ARSN last+1 .. last+5 as CryptoLib does (reserving 4 IVs per write) and
adds the management SA on VC 1, the way back in after a long loss.  The file is
written atomically with mode 0600; an existing file is kept unless ``--force`` is
given.  Key material is never printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from linkstack.cli.main import EXIT_OK, CliError, Streams
from linkstack.errors import LocalProtocolError
from linkstack.sdls.keystore import (
    CRYPTOLIB_MANAGEMENT_VCID,
    CRYPTOLIB_MAX_ARSN_JUMP,
    CRYPTOLIB_RESERVATION_STEP,
    KeyFileExists,
    generate_key_file,
)
from linkstack.tc.frame import MAX_VCID

PROFILES = ("default", "cryptolib")


def _management_vc(text: str) -> int:
    try:
        vcid = int(text)
    except ValueError:
        vcid = -1
    if not 1 <= vcid <= MAX_VCID:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TC VC 1..{MAX_VCID} (VC 0 carries the requests;"
            " CCSDS 232.0-B-4 4.1.2.6)"
        )
    return vcid


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command and its ``generate`` sub-command."""
    parser = subparsers.add_parser(
        "keys", help="SDLS key files (CCSDS 355.0-B-2)", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="write a new key file (mode 0600)")
    generate.add_argument("path", metavar="PATH", type=Path, help="key file to create")
    generate.add_argument(
        "--force", action="store_true", help="replace PATH if it exists (its keys are lost)"
    )
    generate.add_argument(
        "--management-vc",
        type=_management_vc,
        metavar="VC",
        help="add the TC management SA (SPI 3, key 130) on TC VC VC: Set/Read ARSN"
        f" (CCSDS 355.1-B-1) travel there (default: none; {CRYPTOLIB_MANAGEMENT_VCID}"
        " with --profile cryptolib)",
    )
    generate.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="default: the TC SA takes any jump ahead; cryptolib: ARSN last+1 .. last+"
        f"{CRYPTOLIB_MAX_ARSN_JUMP} only, nothing behind (CryptoLib's arsnw),"
        f" {CRYPTOLIB_RESERVATION_STEP} IVs reserved per write, and the management SA",
    )
    generate.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace, io: Streams) -> int:
    path: Path = args.path
    if path.is_dir():
        raise CliError(f"{path} is a directory; give a file name")
    management_vcid = args.management_vc
    strict = args.profile == "cryptolib"
    if strict and management_vcid is None:
        management_vcid = CRYPTOLIB_MANAGEMENT_VCID
    try:
        key_file = generate_key_file(
            path,
            overwrite=args.force,
            management_vcid=management_vcid,
            max_arsn_jump=CRYPTOLIB_MAX_ARSN_JUMP if strict else None,
            reservation_step=CRYPTOLIB_RESERVATION_STEP if strict else None,
        )
    except KeyFileExists:
        raise CliError(
            f"{path} exists; use --force to replace it (its keys will be lost)"
        ) from None
    except LocalProtocolError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    lines = [f"wrote {path} (mode 0600)"]
    for key_id in key_file.keys.ids():
        users = []
        for sa in key_file.sas:
            if sa.key_id != key_id:
                continue
            use = f"{sa.link.name} SPI {sa.spi} VC {','.join(map(str, sorted(sa.vcids)))}"
            if sa.management:
                use += " (management: Set/Read ARSN)"
            if sa.max_arsn_jump is not None:
                use += (
                    f" (ARSN window {sa.max_arsn_jump},"
                    f" {sa.effective_reservation_step} IVs per write)"
                )
            users.append(use)
        role = "; ".join(users) if users else "master key (OTAR)"
        lines.append(f"  key {key_id}: {key_file.keys.state(key_id).name}, {role}")
    io.stdout.write(("\n".join(lines) + "\n").encode())
    return EXIT_OK
