"""Captures: linkstack sessions as pcapng files, and the recorder that sits at one end's
radio boundary (``linkstack.capture.recording``).

One concern a module, each importing only those above it in this list:

* ``errors``: :class:`CaptureError`, :class:`SecretInMetadata`;
* ``units``: what a capture records, :class:`UnitKind` and :class:`Direction`;
* ``datagrams``: the UDP/IPv4 datagrams around recorded Space Packets (RFC 791, 768);
* ``metadata``: the session metadata (:func:`session_metadata`) and the secret check;
* ``framing``: pcapng blocks cut whole, and a recording's cut tail (:class:`TruncatedTail`);
* ``pcapng``: the file format, :class:`CaptureWriter` and :func:`read_capture`;
* ``summary``: :func:`summarize`, what ``linkstack capture info`` reports.
"""

from linkstack.capture.datagrams import GROUND_ADDRESS, PACKET_UDP_PORT, SPACECRAFT_ADDRESS
from linkstack.capture.errors import CaptureError, SecretInMetadata
from linkstack.capture.framing import TailReason, TruncatedTail
from linkstack.capture.metadata import link_config_from_metadata, session_metadata
from linkstack.capture.pcapng import (
    FORMAT,
    FORMAT_VERSION,
    LINKTYPE_IPV4,
    LINKTYPE_USER0,
    LINKTYPE_USER1,
    TIME_REFERENCE_KEY,
    Capture,
    CaptureWriter,
    TimeReference,
    interface_descriptions,
    read_cadu_file,
    read_capture,
)
from linkstack.capture.summary import CaptureSummary, summarize
from linkstack.capture.units import Direction, Unit, UnitKind

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GROUND_ADDRESS",
    "LINKTYPE_IPV4",
    "LINKTYPE_USER0",
    "LINKTYPE_USER1",
    "PACKET_UDP_PORT",
    "SPACECRAFT_ADDRESS",
    "TIME_REFERENCE_KEY",
    "Capture",
    "CaptureError",
    "CaptureSummary",
    "CaptureWriter",
    "Direction",
    "SecretInMetadata",
    "TailReason",
    "TimeReference",
    "TruncatedTail",
    "Unit",
    "UnitKind",
    "interface_descriptions",
    "link_config_from_metadata",
    "read_cadu_file",
    "read_capture",
    "session_metadata",
    "summarize",
]
