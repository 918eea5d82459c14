"""tus 1.0.0 as this server speaks it: what it announces, and a request's headers
parsed and checked.

Core protocol plus creation, creation-with-upload, creation-defer-length,
expiration, checksum (sha1, sha256, md5), termination and concatenation.
Every header is checked before a byte of the body is read, so a refused
request writes nothing: the parsers here raise ``BadRequest`` (or
``PreconditionFailed``, ``Unauthorized``) and never touch the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from vidpipe.infra.upload.errors import BadRequest, PreconditionFailed, Unauthorized

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
OFFSET_STREAM = "application/offset+octet-stream"
FILES = "/files/"
FINAL = "final;"  # Upload-Concat of a final upload: "final;URL URL..."
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_UPLOAD_URL = re.compile(r"/files/([0-9a-f]{32})/?$")


def requested_method(request: Request) -> str:
    """The request's method, or the one ``X-HTTP-Method-Override`` names on a POST."""
    override = request.headers.get("x-http-method-override")
    if request.method == "POST" and override:
        return override.strip().upper()
    return request.method


def authorize(request: Request, token: str | None) -> None:
    """``Unauthorized`` unless the request bears ``token`` (when the server has one)."""
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise Unauthorized(
            "this server needs Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="vidpipe"'},
        )


def check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed("Tus-Resumable must be 1.0.0", {"Tus-Version": TUS_VERSION})


def int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _DIGITS.match(value.strip()):
        raise BadRequest(f"{name} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def content_length(request: Request) -> int | None:
    """The body's declared size; None when it is chunked (unknown)."""
    if "transfer-encoding" in request.headers:
        return None
    return int_header(request, "content-length") or 0


def has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or (
        request.headers.get("content-length", "0").strip() not in ("", "0")
    )


def is_offset_stream(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == OFFSET_STREAM


def checksum(request: Request) -> tuple[str, bytes] | None:
    """``Upload-Checksum`` as (algorithm, digest); None when the request has none."""
    header = request.headers.get("upload-checksum")
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise BadRequest(
            f"checksum algorithm {algorithm[:20]!r} is not supported; use one of "
            f"{', '.join(CHECKSUMS)}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Upload-Checksum is not base64") from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise BadRequest(f"Upload-Checksum is not a {algorithm} digest")
    return algorithm, digest


def final_partials(concat: str) -> list[str]:
    """The distinct upload ids that ``Upload-Concat: final;URL URL...`` names, in order."""
    ids = []
    for url in concat[len(FINAL) :].split():
        match = _UPLOAD_URL.search(url.split("?", 1)[0].split("#", 1)[0])
        if not match:
            raise BadRequest(f"{url[:80]!r} is not an upload of this server")
        ids.append(match.group(1))
    if not ids or len(set(ids)) != len(ids):
        raise BadRequest("Upload-Concat final needs distinct partial uploads")
    return ids
