"""API keys and the per-key request rate.

The API key file (JSON, UTF-8, mode 0600, written atomically; refused when group or
others may read it, as the SDLS key file)::

    {"format": "linkstack-api-keys-1",
     "keys": [{"name": "alice", "sha256": "<hex of SHA-256 of the token>",
               "requests_per_minute": 60, "operator": false}]}

Only hashes are stored: a token is 32 random octets (``lsk-`` and URL-safe base64),
so one SHA-256 is enough (no password stretching is needed for a secret with 256 bits
of entropy).  ``groundstation api-key add FILE NAME`` makes a token, stores its hash
and prints the token once.  ``operator: true`` lets the key open the operator page,
which shows every user's prompts and answers.

The rate limit is a token bucket per key: ``requests_per_minute`` requests at once at
most, refilled at that rate; time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from linkstack.errors import LocalProtocolError
from linkstack.sdls.keystore import KeyFileError, read_private_json, write_private_file

API_KEYS_FORMAT: Final = "linkstack-api-keys-1"
TOKEN_PREFIX: Final = "lsk-"
_TOKEN_OCTETS: Final = 32
_MAX_FILE_OCTETS: Final = 1 << 20
#: Requests per minute of a key whose entry gives none.
DEFAULT_REQUESTS_PER_MINUTE: Final = 60


class ApiKeyFileError(LocalProtocolError):
    """The API key file cannot be used; the message names the path, never a token."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key of the file (its hash, never the token)."""

    name: str
    sha256: str
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    operator: bool = False


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as the file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_OCTETS)


class ApiKeys:
    """The keys a gateway accepts."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ApiKeyFileError(f"key names repeat: {sorted(names)}")
        self.keys = keys

    def authenticate(self, token: str) -> ApiKey | None:
        """The key whose hash ``token`` has, or None (compared in constant time)."""
        digest = hash_token(token)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    @classmethod
    def load(cls, path: Path | str) -> ApiKeys:
        """Read an API key file (refused unless only its owner may access it)."""
        data = _read_private(Path(path))
        return cls(_parse(data, Path(path)))


def _parse(data: object, path: Path) -> tuple[ApiKey, ...]:
    if not isinstance(data, dict) or data.get("format") != API_KEYS_FORMAT:
        raise ApiKeyFileError(f"{path} is not an API key file (format {API_KEYS_FORMAT!r})")
    entries = data.get("keys")
    if not isinstance(entries, list):
        raise ApiKeyFileError(f"{path}: 'keys' must be an array")
    keys = []
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise ApiKeyFileError(f"{where} must be an object")
        name, digest = entry.get("name"), entry.get("sha256")
        rate = entry.get("requests_per_minute", DEFAULT_REQUESTS_PER_MINUTE)
        operator = entry.get("operator", False)
        if not isinstance(name, str) or not name:
            raise ApiKeyFileError(f"{where}: 'name' must be a non-empty string")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ApiKeyFileError(f"{where}: 'sha256' must be 64 hex digits")
        try:
            bytes.fromhex(digest)
        except ValueError:
            raise ApiKeyFileError(f"{where}: 'sha256' must be 64 hex digits") from None
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ApiKeyFileError(f"{where}: 'requests_per_minute' must be a whole number >= 1")
        if not isinstance(operator, bool):
            raise ApiKeyFileError(f"{where}: 'operator' must be true or false")
        keys.append(ApiKey(name, digest.lower(), rate, operator))
    return tuple(keys)


def _read_private(path: Path) -> Any:
    try:
        return read_private_json(path, "API key file", max_octets=_MAX_FILE_OCTETS)
    except KeyFileError as exc:
        raise ApiKeyFileError(str(exc)) from None


def write_keys(path: Path | str, keys: tuple[ApiKey, ...]) -> None:
    """Write the key file atomically with mode 0600."""
    path = Path(path)
    record = {
        "format": API_KEYS_FORMAT,
        "keys": [
            {
                "name": k.name,
                "sha256": k.sha256,
                "requests_per_minute": k.requests_per_minute,
                "operator": k.operator,
            }
            for k in keys
        ],
    }
    write_private_file(path, json.dumps(record, indent=2) + "\n", overwrite=True)


def add_key(
    path: Path | str,
    name: str,
    *,
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE,
    operator: bool = False,
) -> str:
    """Add a key named ``name`` to the file (made if absent); returns its token."""
    path = Path(path)
    existing = ApiKeys.load(path).keys if path.exists() else ()
    if any(k.name == name for k in existing):
        raise ApiKeyFileError(f"{path} already has a key named {name!r}")
    if not name:
        raise ApiKeyFileError("a key needs a non-empty name")
    if requests_per_minute < 1:
        raise ApiKeyFileError(f"requests per minute {requests_per_minute} must be 1 or more")
    token = new_token()
    key = ApiKey(name, hash_token(token), requests_per_minute, operator)
    write_keys(path, (*existing, key))
    return token


class RateLimiter:
    """A token bucket per key: ``rate`` requests a minute, ``rate`` at once at most."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def acquire(self, name: str, per_minute: int, now: float) -> float | None:
        """Take one request from ``name``'s bucket: None when allowed, else the seconds
        until one is available."""
        capacity = float(per_minute)
        tokens, at = self._buckets.get(name, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return None
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) * 60.0 / per_minute


__all__ = [
    "API_KEYS_FORMAT",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "ApiKey",
    "ApiKeyFileError",
    "ApiKeys",
    "RateLimiter",
    "add_key",
    "hash_token",
    "new_token",
    "write_keys",
]
