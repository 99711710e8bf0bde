"""``linkstack keys generate PATH``: write a new SDLS key file (CCSDS 355.0-B-2).

The file holds a master key (id 0, for OTAR) and two session keys: 128 protects TC
VC 0 under SPI 1, 129 protects TM VCs 0-7 under SPI 2 (AES-256-GCM, 96-bit counter
IV, 128-bit MAC).  It is written atomically with mode 0600; an existing file is kept
unless ``--force`` is given.  Key material is never printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from linkstack.cli.main import EXIT_OK, CliError, Streams
from linkstack.sdls.keystore import KeyFileExists, generate_key_file


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
    generate.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace, io: Streams) -> int:
    path: Path = args.path
    if path.is_dir():
        raise CliError(f"{path} is a directory; give a file name")
    try:
        key_file = generate_key_file(path, overwrite=args.force)
    except KeyFileExists:
        raise CliError(
            f"{path} exists; use --force to replace it (its keys will be lost)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    lines = [f"wrote {path} (mode 0600)"]
    for key_id in key_file.keys.ids():
        users = [
            f"{sa.link.name} SPI {sa.spi} VC {','.join(map(str, sorted(sa.vcids)))}"
            for sa in key_file.sas
            if sa.key_id == key_id
        ]
        role = "; ".join(users) if users else "master key (OTAR)"
        lines.append(f"  key {key_id}: {key_file.keys.state(key_id).name}, {role}")
    io.stdout.write(("\n".join(lines) + "\n").encode())
    return EXIT_OK
