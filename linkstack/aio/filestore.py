"""A CFDP filestore on disk, rooted: the I/O adapter of ``linkstack.cfdp``.

cfdp-py's ``NativeFilestore`` reads and writes any path it is given.  Here a relative
path (what the peer names in a Metadata PDU) resolves under ``root``, an absolute one
(a local file this end was asked to send) is used as given; whether a peer's name may
be written at all is the admission check's business (``CfdpEntity(admit=...)``), which
runs before the filestore sees the name.
"""

from __future__ import annotations

from pathlib import Path

from cfdppy.filestore import NativeFilestore
from spacepackets.cfdp.defs import ChecksumType
from spacepackets.cfdp.tlv import FilestoreResponseStatusCode


class RootedFilestore(NativeFilestore):
    """``NativeFilestore`` with relative paths under ``root`` (created on demand)."""

    def __init__(self, root: Path | str) -> None:
        super().__init__()
        self.root = Path(root)

    def resolve(self, path: Path | str) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    def read_data(self, file: Path, offset: int | None, read_len: int | None = None) -> bytes:
        return bytes(super().read_data(self.resolve(file), offset, read_len))

    def is_directory(self, path: Path) -> bool:
        return bool(super().is_directory(self.resolve(path)))

    def file_exists(self, path: Path) -> bool:
        return bool(super().file_exists(self.resolve(path)))

    def truncate_file(self, file: Path) -> None:
        super().truncate_file(self.resolve(file))

    def file_size(self, file: Path) -> int:
        return int(super().file_size(self.resolve(file)))

    def write_data(self, file: Path, data: bytes, offset: int | None) -> None:
        super().write_data(self.resolve(file), data, offset)

    def create_file(self, file: Path) -> FilestoreResponseStatusCode:
        target = self.resolve(file)
        target.parent.mkdir(parents=True, exist_ok=True)
        return super().create_file(target)

    def delete_file(self, file: Path) -> FilestoreResponseStatusCode:
        return super().delete_file(self.resolve(file))

    def rename_file(self, old_file: Path, new_file: Path) -> FilestoreResponseStatusCode:
        return super().rename_file(self.resolve(old_file), self.resolve(new_file))

    def calculate_checksum(
        self,
        checksum_type: ChecksumType,
        file_path: Path,
        size_to_verify: int,
        segment_len: int = 4096,
    ) -> bytes:
        return bytes(
            super().calculate_checksum(
                checksum_type, self.resolve(file_path), size_to_verify, segment_len
            )
        )


__all__ = ["RootedFilestore"]
