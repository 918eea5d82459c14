"""Upload-Metadata: parsed strictly, kept verbatim for HEAD, sanitised for everything else.

The header is ``key base64(value)`` pairs joined by commas; a value may be
absent. What vidpipe keeps from it is plain text: control and format
characters removed, lengths capped, and a file name reduced to its last path
component. A file name is only ever metadata: keys and paths are generated
by vidpipe.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass

from vidpipe.infra.upload.errors import BadRequest

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_KEYS = 32
MAX_VALUE_CHARS = 1024
MAX_NAME_CHARS = 255
NAME_KEYS = frozenset({"filename", "name"})


@dataclass(frozen=True)
class Metadata:
    """``raw`` is the header as sent (None: not sent); ``values`` the sanitised pairs."""

    raw: str | None
    values: dict[str, str]

    @property
    def declared_sha256(self) -> str | None:
        """The sha256 the client says the whole file has, lower-case hex, if it said."""
        value = self.values.get("sha256")
        return value.lower() if value else None


def _clean(text: str, limit: int) -> str:
    kept = "".join(
        ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    return kept.strip()[:limit]


def clean_filename(name: str) -> str:
    """A display name: the last path component, no control characters, at most 255 chars."""
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    last = _clean(last, MAX_NAME_CHARS)
    return "" if last in (".", "..") else last


def parse_metadata(header: str | None, max_bytes: int) -> Metadata:
    """Parse ``Upload-Metadata``; ``BadRequest`` when it is malformed or too large."""
    if header is None:
        return Metadata(None, {})
    if len(header.encode("utf-8", "surrogateescape")) > max_bytes:
        raise BadRequest(f"Upload-Metadata is longer than {max_bytes} bytes")
    values: dict[str, str] = {}
    pairs = [p.strip() for p in header.split(",")] if header.strip() else []
    if len(pairs) > MAX_KEYS:
        raise BadRequest(f"Upload-Metadata has more than {MAX_KEYS} keys")
    for pair in pairs:
        key, _, encoded = pair.partition(" ")
        if not _KEY.match(key):
            raise BadRequest(
                f"Upload-Metadata key {key[:64]!r} is invalid: use letters, digits, '_', '.', '-'"
            )
        if key in values:
            raise BadRequest(f"Upload-Metadata repeats the key {key!r}")
        encoded = encoded.strip()
        if " " in encoded:
            raise BadRequest(f"Upload-Metadata value of {key!r} holds a space")
        try:
            decoded = base64.b64decode(encoded, validate=True) if encoded else b""
        except (binascii.Error, ValueError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64") from None
        text = decoded.decode("utf-8", errors="replace")
        values[key] = clean_filename(text) if key in NAME_KEYS else _clean(text, MAX_VALUE_CHARS)
    declared = values.get("sha256")
    if declared and not _SHA256.match(declared):
        raise BadRequest("Upload-Metadata sha256 must be 64 hexadecimal digits")
    return Metadata(header, values)
