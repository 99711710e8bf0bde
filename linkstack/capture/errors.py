"""The errors of the capture package: a capture that cannot be read, and metadata that
would put key material into one.

:class:`CaptureError` is raised by every reader of a capture (the pcapng file format,
draft-ietf-opsawg-pcapng; the UDP/IPv4 datagrams around its Space Packets, RFC 791 and
RFC 768; the session metadata in its Section Header), with the file offset at fault.
:class:`SecretInMetadata` is raised by the writer before it writes anything.
"""

from __future__ import annotations

from linkstack.errors import LinkError, LocalProtocolError

__all__ = ["CaptureError", "SecretInMetadata"]


class CaptureError(LinkError):
    """A capture file cannot be read: truncated, corrupted, or not one of ours.

    ``offset`` is the file offset of the block (or octet) at fault, None when the
    problem is the file as a whole.
    """

    def __init__(self, problem: str, *, offset: int | None = None) -> None:
        self.problem = problem
        self.offset = offset
        super().__init__(problem if offset is None else f"{problem} (at file offset {offset})")


class SecretInMetadata(LocalProtocolError):
    """Session metadata holds a key that looks like key material; nothing was written."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"metadata key {path!r} looks like key material (key/secret/master):"
            " keys are never written to a capture"
        )
