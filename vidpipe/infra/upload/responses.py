"""What the server answers: tus headers of an upload, the JSON status, error replies.

Beyond tus: ``GET /files/{id}`` answers JSON (status, sha256, the error of a
failed upload); HEAD adds ``Vidpipe-Upload-Status`` and, for a failed
upload, ``Vidpipe-Upload-Error``. An error reply to a request whose body was
never read drains it first (up to ``bodies.DRAIN_BYTES``), or closes the
connection, so that the client hears the answer instead of a reset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from vidpipe.infra.upload.bodies import drain
from vidpipe.infra.upload.db import Upload
from vidpipe.infra.upload.protocol import (
    CHECKSUMS,
    EXTENSIONS,
    FILES,
    FINAL,
    TUS_VERSION,
    has_body,
)


def http_date(dt: datetime) -> str:
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def header_text(text: str | None) -> str:
    """``text`` fit for a header value: ASCII, at most 500 characters."""
    return (text or "").encode("ascii", "replace").decode()[:500]


def options_response(max_size: int) -> Response:
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        },
    )


def expiry_headers(upload: Upload) -> dict[str, str]:
    if upload.status == "uploading" or upload.concat == "partial":
        return {"Upload-Expires": http_date(upload.expires_at)}
    return {}


def head_response(upload: Upload, offset: int) -> Response:
    """HEAD: the upload's offset, length, metadata and concatenation, never cached."""
    headers = {
        "Upload-Offset": str(offset),
        "Cache-Control": "no-store",
        "Vidpipe-Upload-Status": upload.status,
    }
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata_raw is not None:
        headers["Upload-Metadata"] = upload.metadata_raw
    if upload.concat == "partial":
        headers["Upload-Concat"] = "partial"
    elif upload.concat == "final":
        headers["Upload-Concat"] = FINAL + " ".join(f"{FILES}{p}" for p in upload.partials)
    headers |= expiry_headers(upload)
    return Response(status_code=200, headers=headers)


def status_response(upload: Upload) -> Response:
    """GET: the upload as JSON, "expired" once it is past its expiry."""
    return JSONResponse(
        {
            "id": upload.id,
            "status": "expired" if upload.is_expired() else upload.status,
            "length": upload.length,
            "concat": upload.concat,
            "sha256": upload.sha256,
            "source_key": upload.source_key,
            "handed_off": upload.handed_off_at is not None,
            "error": upload.error,
            "metadata": dict(upload.metadata),
            "expires_at": upload.expires_at.isoformat(),
        },
        headers={"Cache-Control": "no-store"},
    )


async def error_response(
    request: Request, status: int, message: str, headers: dict[str, str]
) -> Response:
    out = dict(headers)
    if has_body(request):
        state = getattr(request.state, "body", None)
        # Not for a stranger (401): their body is not worth reading.
        should_drain = state is None and status != 401
        read = state == "read" or (should_drain and await drain(request))
        if not read:  # the rest of the body is still on the wire: this connection is done
            out["Connection"] = "close"
    if status == 503:
        out.setdefault("Retry-After", "5")
    return PlainTextResponse(message + "\n", status_code=status, headers=out)
