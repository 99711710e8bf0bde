"""Session metadata: what a capture records about its session besides the units.

The metadata is one JSON object, written into the Section Header Block's comment
(draft-ietf-opsawg-pcapng 4.1, ``opt_comment``) by the writer: the link configuration
(spacecraft and virtual channel identifiers of CCSDS 232.0-B-4 and 132.0-B-3, the TM
coding of CCSDS 131.0-B-5), the channel profile and the seed (:func:`session_metadata`),
and whatever else the recorder adds (``side``, security, ...).
:func:`link_config_from_metadata` reads the link configuration back.  The TC routes
(APID to TC VC and MAP), the VC of the Only Idle Data frames and the CFDP TM VC are
recorded only where they differ from the defaults, so the metadata of a default link
is what it always was; absent, they read back as the defaults.

Keys never enter a capture: :func:`check_no_secrets` refuses, with
:class:`~linkstack.capture.SecretInMetadata`, any metadata key that looks like key
material (``key``, ``secret``, ``master``), at any depth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Final

from linkstack.capture.errors import CaptureError, SecretInMetadata
from linkstack.coding.reed_solomon import Basis
from linkstack.coding.tm import TmCodingConfig
from linkstack.endpoints import LinkConfig, TcRoute
from linkstack.errors import LinkError
from linkstack.radio.channel import LinkProfile

__all__ = ["check_no_secrets", "link_config_from_metadata", "session_metadata"]

_SECRET_KEY: Final = re.compile(r"key|secret|master", re.IGNORECASE)
#: The defaults the optional ``link`` entries are compared with and read back as.
_DEFAULT: Final = LinkConfig()


def session_metadata(
    config: LinkConfig,
    *,
    profile: LinkProfile | None = None,
    seed: int | None = None,
    **extra: object,
) -> dict[str, object]:
    """The metadata a session records: link configuration, profile and channel, seed.

    ``extra`` entries (JSON values) are added as they are; the writer adds the
    linkstack and Python versions itself.
    """
    coding = config.tm_coding
    link: dict[str, object] = {
        "scid": config.scid,
        "tc_vcid": config.tc_vcid,
        "map_id": config.map_id,
        "tc_max_frame_length": config.tc_max_frame_length,
        "tc_randomize": config.tc_randomize,
        "tm_vcid": config.tm_vcid,
        "tm_coding": {
            "interleave": coding.interleave,
            "error_correction": coding.error_correction,
            "frame_length": coding.frame_octets,
            "basis": coding.basis.value,
            "randomize": coding.randomize,
        },
    }
    # A replay needs these to rebuild the link: the VC and MAP each APID is accepted
    # on (232.0-B-4 4.1.2.6, 4.1.3.2.2.3) and the TM VCs the ground demultiplexes.
    if config.tc_routes:
        link["tc_routes"] = [
            {"apid": r.apid, "vcid": r.vcid, "map_id": r.map_id} for r in config.tc_routes
        ]
    for name in ("tm_oid_vcid", "cfdp_tm_vcid"):
        if getattr(config, name) != getattr(_DEFAULT, name):
            link[name] = getattr(config, name)
    metadata: dict[str, object] = {"link": link}
    if profile is not None:
        metadata["profile"] = profile.name
        metadata["channel"] = {
            "uplink": asdict(profile.uplink),
            "downlink": asdict(profile.downlink),
        }
    if seed is not None:
        metadata["seed"] = seed
    metadata.update(extra)
    return metadata


def link_config_from_metadata(metadata: Mapping[str, object]) -> LinkConfig | None:
    """The :class:`LinkConfig` recorded by :func:`session_metadata`, None if absent.

    Raises :class:`CaptureError` when a ``link`` entry is there but does not parse.
    """
    link = metadata.get("link")
    if link is None:
        return None
    try:
        if not isinstance(link, Mapping):
            raise TypeError(f"'link' is a {type(link).__name__}, not an object")
        coding = link["tm_coding"]
        if not isinstance(coding, Mapping):
            raise TypeError(f"'tm_coding' is a {type(coding).__name__}, not an object")
        routes = link.get("tc_routes", [])
        if not isinstance(routes, list) or not all(isinstance(r, Mapping) for r in routes):
            raise TypeError(f"'tc_routes' is {routes!r}, not a list of objects")
        config = LinkConfig(
            scid=int(link["scid"]),
            tc_vcid=int(link["tc_vcid"]),
            map_id=int(link["map_id"]),
            tc_max_frame_length=int(link["tc_max_frame_length"]),
            tc_randomize=bool(link["tc_randomize"]),
            tm_vcid=int(link["tm_vcid"]),
            tc_routes=tuple(
                TcRoute(int(r["apid"]), int(r["vcid"]), int(r["map_id"])) for r in routes
            ),
            tm_oid_vcid=int(link.get("tm_oid_vcid", _DEFAULT.tm_oid_vcid)),
            cfdp_tm_vcid=int(link.get("cfdp_tm_vcid", _DEFAULT.cfdp_tm_vcid)),
            tm_coding=TmCodingConfig(
                interleave=int(coding["interleave"]),
                error_correction=int(coding["error_correction"]),
                frame_length=int(coding["frame_length"]),
                basis=Basis(coding["basis"]),
                randomize=bool(coding["randomize"]),
            ),
        )
        # The per-layer configurations are derived lazily: check them here, so that a
        # value no frame could carry is this error, not a later one from the decoders.
        config.tc, config.tm  # noqa: B018
        return config
    except (KeyError, TypeError, ValueError, LinkError) as exc:
        raise CaptureError(f"link configuration in the metadata does not parse: {exc}") from exc


def _check_no_secrets(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)):
                raise SecretInMetadata(where)
            _check_no_secrets(item, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_no_secrets(item, f"{path}[{index}]")


def check_no_secrets(metadata: Mapping[str, object]) -> None:
    """Raise :class:`~linkstack.capture.SecretInMetadata` if any key of ``metadata``, at
    any depth (objects in objects and in lists), looks like key material."""
    _check_no_secrets(metadata, "")
