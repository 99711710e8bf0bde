"""An in-memory CFDP filestore (cfdp-py's ``VirtualFilestore``), for the simulation
and tests: files are ``bytearray`` objects keyed by path, nothing touches a disk."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import fastcrc
from cfdppy.exceptions import ChecksumNotImplemented
from cfdppy.filestore import VirtualFilestore
from spacepackets.cfdp.defs import NULL_CHECKSUM_U32, ChecksumType
from spacepackets.cfdp.tlv import FilestoreResponseStatusCode


class MemoryFilestore(VirtualFilestore):
    """Files and directories in memory; ``files`` maps each path to its content."""

    def __init__(self) -> None:
        self.files: dict[Path, bytearray] = {}
        self.directories: set[Path] = {Path("/"), Path(".")}

    def read_data(self, file: Path, offset: int | None, read_len: int | None = None) -> bytes:
        data = self.files.get(Path(file))
        if data is None:
            raise FileNotFoundError(file)
        start = offset or 0
        end = len(data) if read_len is None else start + read_len
        return bytes(data[start:end])

    def read_from_opened_file(self, bytes_io: BinaryIO, offset: int, read_len: int) -> bytes:
        bytes_io.seek(offset)
        return bytes_io.read(read_len)

    def is_directory(self, path: Path) -> bool:
        return Path(path) in self.directories

    def filename_from_full_path(self, path: Path) -> str | None:
        return Path(path).name

    def file_exists(self, path: Path) -> bool:
        return Path(path) in self.files

    def truncate_file(self, file: Path) -> None:
        if Path(file) not in self.files:
            raise FileNotFoundError(file)
        self.files[Path(file)] = bytearray()

    def file_size(self, file: Path) -> int:
        data = self.files.get(Path(file))
        if data is None:
            raise FileNotFoundError(file)
        return len(data)

    def write_data(self, file: Path, data: bytes, offset: int | None) -> None:
        content = self.files.get(Path(file))
        if content is None:
            raise FileNotFoundError(file)
        start = len(content) if offset is None else offset
        if start > len(content):
            content.extend(bytes(start - len(content)))
        content[start : start + len(data)] = data

    def create_file(self, file: Path) -> FilestoreResponseStatusCode:
        if Path(file) in self.files:
            return FilestoreResponseStatusCode.CREATE_NOT_ALLOWED
        self.files[Path(file)] = bytearray()
        return FilestoreResponseStatusCode.CREATE_SUCCESS

    def delete_file(self, file: Path) -> FilestoreResponseStatusCode:
        if self.files.pop(Path(file), None) is None:
            return FilestoreResponseStatusCode.DELETE_FILE_DOES_NOT_EXIST
        return FilestoreResponseStatusCode.DELETE_SUCCESS

    def rename_file(self, old_file: Path, new_file: Path) -> FilestoreResponseStatusCode:
        if Path(old_file) not in self.files:
            return FilestoreResponseStatusCode.RENAME_OLD_FILE_DOES_NOT_EXIST
        if Path(new_file) in self.files:
            return FilestoreResponseStatusCode.RENAME_NEW_FILE_DOES_EXIST
        self.files[Path(new_file)] = self.files.pop(Path(old_file))
        return FilestoreResponseStatusCode.RENAME_SUCCESS

    def replace_file(self, replaced_file: Path, source_file: Path) -> FilestoreResponseStatusCode:
        if Path(source_file) not in self.files:
            return FilestoreResponseStatusCode.REPLACE_FILE_NAME_ONE_TO_BE_REPLACED_DOES_NOT_EXIST
        self.files[Path(replaced_file)] = bytearray(self.files[Path(source_file)])
        return FilestoreResponseStatusCode.REPLACE_SUCCESS

    def create_directory(self, dir_name: Path) -> FilestoreResponseStatusCode:
        self.directories.add(Path(dir_name))
        return FilestoreResponseStatusCode.CREATE_DIR_SUCCESS

    def remove_directory(
        self, dir_name: Path, recursive: bool = False
    ) -> FilestoreResponseStatusCode:
        self.directories.discard(Path(dir_name))
        return FilestoreResponseStatusCode.REMOVE_DIR_SUCCESS

    def list_directory(
        self, dir_name: Path, file_name: Path, recursive: bool = False
    ) -> FilestoreResponseStatusCode:
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def calculate_checksum(
        self,
        checksum_type: ChecksumType,
        file_path: Path,
        size_to_verify: int,
        segment_len: int = 4096,
    ) -> bytes:
        """The file checksum of CCSDS 727.0-B-5 4.2.2 (CRC-32 of SANA's checksum registry)."""
        if checksum_type == ChecksumType.NULL_CHECKSUM:
            return bytes(NULL_CHECKSUM_U32)
        data = self.files.get(Path(file_path))
        if data is None:
            raise FileNotFoundError(file_path)
        view = bytes(data[:size_to_verify])
        if checksum_type == ChecksumType.CRC_32:
            return struct.pack("!I", fastcrc.crc32.iso_hdlc(view))
        if checksum_type == ChecksumType.CRC_32C:
            return struct.pack("!I", fastcrc.crc32.iscsi(view))
        raise ChecksumNotImplemented(checksum_type)


__all__ = ["MemoryFilestore"]
