"""tus 1.0.0 at /files/, as an ASGI app (Starlette).

Core protocol plus creation, creation-with-upload, creation-defer-length,
expiration, checksum (sha1, sha256, md5), termination and concatenation.
Every header is checked before a byte of the body is read, so a refused
request writes nothing. Bodies are streamed: at most ``FLUSH_BYTES`` of a
request are in memory at once, on their way to the store in a worker thread.

A PATCH without a checksum and with a Content-Length keeps what arrived
before a disconnect. A PATCH with a checksum (or without a Content-Length)
is all or nothing: on a mismatch, an unknown algorithm, a body past the
upload's length or a disconnect, the offset stays where it was.

Beyond tus: ``GET /files/{id}`` answers JSON (status, sha256, the error of a
failed upload); HEAD adds ``Vidpipe-Upload-Status`` and, for a failed
upload, ``Vidpipe-Upload-Error``; ``POST /hooks/s3`` takes bucket event
notifications (``vidpipe.infra.upload.hooks``); ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpipe.infra.errors import VidpipeError
from vidpipe.infra.storage import S3Storage, Storage
from vidpipe.infra.upload.complete import Completer, OnComplete
from vidpipe.infra.upload.db import Upload, UploadDB
from vidpipe.infra.upload.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    Gone,
    Locked,
    NotFound,
    PreconditionFailed,
    Refused,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    UploadFailed,
)
from vidpipe.infra.upload.hooks import (
    MAX_NOTIFICATION_BYTES,
    BucketHook,
    authenticated,
    parse_notification,
)
from vidpipe.infra.upload.janitor import Janitor
from vidpipe.infra.upload.locks import Lease, UploadLocks
from vidpipe.infra.upload.metadata import parse_metadata
from vidpipe.infra.upload.stores import UploadStore, Writer, part_size_for

log = logging.getLogger("vidpipe.upload")

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
FLUSH_BYTES = 1 << 20
DRAIN_BYTES = 64 << 20  # a refused body up to this size is read (and dropped) before answering
FILES = "/files/"
EXPOSED_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires",
    "Upload-Concat", "Upload-Defer-Length", "Tus-Resumable", "Tus-Version", "Tus-Extension",
    "Tus-Max-Size", "Tus-Checksum-Algorithm", "Vidpipe-Upload-Status", "Vidpipe-Upload-Error",
)  # fmt: skip
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Checksum", "Tus-Resumable",
    "X-HTTP-Method-Override", "X-Requested-With",
)  # fmt: skip
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_UPLOAD_URL = re.compile(r"/files/([0-9a-f]{32})/?$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class UploadConfig:
    """What the protocol needs from ``Settings.upload``, in bytes and seconds."""

    max_size: int
    expiry: timedelta
    retention: timedelta
    part_size: int
    token: str | None
    hook_secret: str | None
    hook_prefix: str
    base_url: str | None
    cors_origins: tuple[str, ...]
    max_metadata_bytes: int
    janitor_interval_seconds: float


@dataclass
class Service:
    """Everything a request handler uses; built once per server in the lifespan."""

    cfg: UploadConfig
    db: UploadDB
    locks: UploadLocks
    store: UploadStore
    storage: Storage
    completer: Completer
    hook: BucketHook | None
    janitor: Janitor


# ---------------------------------------------------------------- small helpers


def _http_date(dt: datetime) -> str:
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _DIGITS.match(value.strip()):
        raise BadRequest(f"{name} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def _content_length(request: Request) -> int | None:
    """The body's declared size; None when it is chunked (unknown)."""
    if "transfer-encoding" in request.headers:
        return None
    return _int_header(request, "content-length") or 0


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or (
        request.headers.get("content-length", "0").strip() not in ("", "0")
    )


def _checksum(request: Request) -> tuple[str, bytes] | None:
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


def _is_offset_stream(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == OFFSET_STREAM


def _write(writer: Writer, hasher: Any, data: bytes) -> None:
    if hasher is not None:
        hasher.update(data)
    writer.write(data)


async def _pump(request: Request, writer: Writer, room: int, hasher: Any) -> int:
    """Stream the body into ``writer``; ``TooLarge`` as soon as it passes ``room``.

    One block is written (in a thread) while the next one arrives; blocks reach the
    writer in order, and at most two are in memory.
    """
    total = 0
    pending: list[bytes] = []
    size = 0
    writing: asyncio.Future[None] | None = None

    async def hand_on(data: bytes) -> None:
        nonlocal writing
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(to_thread.run_sync(_write, writer, hasher, data))

    request.state.body = "started"
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > room:
                raise TooLarge("the body goes past the upload's length")
            pending.append(chunk)
            size += len(chunk)
            if size >= FLUSH_BYTES:
                data, pending, size = b"".join(pending), [], 0
                await hand_on(data)
    finally:
        # On a disconnect too: what arrived is handed on (kept unless the PATCH is atomic).
        if pending and total <= room:
            await hand_on(b"".join(pending))
        if writing is not None:
            await asyncio.shield(writing)
    request.state.body = "read"
    return total


async def _drain(request: Request) -> bool:
    """Read and drop a body nobody looked at (up to ``DRAIN_BYTES``), so that the client,
    still sending, reads the answer instead of a reset; True if all of it was read."""
    declared = _content_length(request)
    if declared is not None and declared > DRAIN_BYTES:
        return False
    seen = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return False
        seen += len(message.get("body", b""))
        if seen > DRAIN_BYTES:
            return False
        if not message.get("more_body", False):
            return True


# ---------------------------------------------------------------- the protocol


class Tus:
    def __init__(self, service: Service) -> None:
        self.s = service

    @property
    def cfg(self) -> UploadConfig:
        return self.s.cfg

    def location(self, request: Request, upload_id: str) -> str:
        base = self.cfg.base_url or str(request.base_url)
        return f"{base.rstrip('/')}{FILES}{upload_id}"

    def authorize(self, request: Request) -> None:
        if self.cfg.token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.cfg.token.encode()
        ):
            raise Unauthorized(
                "this server needs Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="vidpipe"'},
            )

    @staticmethod
    def check_version(request: Request) -> None:
        if request.headers.get("tus-resumable") != TUS_VERSION:
            raise PreconditionFailed(
                "Tus-Resumable must be 1.0.0", {"Tus-Version": TUS_VERSION}
            )

    def options(self) -> Response:
        return Response(
            status_code=204,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(EXTENSIONS),
                "Tus-Max-Size": str(self.cfg.max_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            },
        )

    async def live(self, upload_id: str) -> Upload:
        """The upload, or 404 / 410 (expired, failed)."""
        upload = await self.s.db.get(upload_id) if _UPLOAD_ID.match(upload_id) else None
        if upload is None:
            raise NotFound(f"no upload {upload_id[:40]}")
        if upload.is_expired():
            raise Gone(f"upload {upload_id} expired")
        if upload.status == "failed":
            raise Gone(
                f"upload {upload_id} failed: {upload.error}",
                {"Vidpipe-Upload-Status": "failed", "Vidpipe-Upload-Error": _ascii(upload.error)},
            )
        return upload

    def _expiry_headers(self, upload: Upload) -> dict[str, str]:
        if upload.status == "uploading" or upload.concat == "partial":
            return {"Upload-Expires": _http_date(upload.expires_at)}
        return {}

    # -- POST

    async def create(self, request: Request) -> Response:
        concat = request.headers.get("upload-concat")
        if concat is not None and concat.startswith("final;"):
            return await self.create_final(request, concat)
        if concat not in (None, "partial"):
            raise BadRequest("Upload-Concat must be 'partial' or 'final;URL URL...'")
        length = _int_header(request, "upload-length")
        defer = request.headers.get("upload-defer-length")
        if (length is None) == (defer is None):
            raise BadRequest("send either Upload-Length or Upload-Defer-Length: 1")
        if defer is not None and defer.strip() != "1":
            raise BadRequest("Upload-Defer-Length must be 1")
        if length is not None and length > self.cfg.max_size:
            raise TooLarge(f"{length} bytes is over the maximum of {self.cfg.max_size}")
        meta = parse_metadata(request.headers.get("upload-metadata"), self.cfg.max_metadata_bytes)
        with_body = _is_offset_stream(request) and _has_body(request)
        checksum = _checksum(request) if with_body else None
        body_length = _content_length(request) if with_body else 0
        if length is not None and body_length is not None and body_length > length:
            raise TooLarge("the body is longer than Upload-Length")
        upload_id = secrets.token_hex(16)
        part_size = part_size_for(length or self.cfg.max_size, self.cfg.part_size)
        headers = {"Location": self.location(request, upload_id)}
        # Locked from before its row exists: the janitor never finishes it under our feet.
        async with self.s.locks.hold(upload_id) as lease:
            upload = await self.s.db.create(
                upload_id, length=length, metadata_raw=meta.raw, metadata=meta.values,
                concat="partial" if concat else "none", partials=(), part_size=part_size,
                multipart_id=None, expires_at=datetime.now(UTC) + self.cfg.expiry,
            )  # fmt: skip
            upload = await self._stage(upload)
            if with_body or length == 0:
                upload, offset = await self.append(request, upload, 0, checksum, lease)
                headers["Upload-Offset"] = str(offset)
        headers |= self._expiry_headers(upload)
        log.info("upload %s created (%s bytes)", upload_id, length if length is not None else "?")
        return Response(status_code=201, headers=headers)

    async def create_final(self, request: Request, concat: str) -> Response:
        if "upload-length" in request.headers or "upload-defer-length" in request.headers:
            raise BadRequest("a final upload takes its length from its partial uploads")
        ids = []
        for url in concat[len("final;") :].split():
            match = _UPLOAD_URL.search(url.split("?", 1)[0].split("#", 1)[0])
            if not match:
                raise BadRequest(f"{url[:80]!r} is not an upload of this server")
            ids.append(match.group(1))
        if not ids or len(set(ids)) != len(ids):
            raise BadRequest("Upload-Concat final needs distinct partial uploads")
        meta = parse_metadata(request.headers.get("upload-metadata"), self.cfg.max_metadata_bytes)
        found = await self.s.db.get_many(tuple(ids))
        partials = []
        for upload_id in ids:
            p = found.get(upload_id)
            if p is None:
                raise NotFound(f"no partial upload {upload_id}")
            if p.is_expired():
                raise Gone(f"partial upload {upload_id} expired")
            if p.concat != "partial":
                raise BadRequest(f"upload {upload_id} is not a partial upload")
            if p.status != "completed":
                raise BadRequest(
                    f"partial upload {upload_id} is not finished (this server does not offer "
                    "concatenation-unfinished)"
                )
            partials.append(p)
        length = sum(p.length or 0 for p in partials)
        if length > self.cfg.max_size:
            raise TooLarge(f"{length} bytes is over the maximum of {self.cfg.max_size}")
        upload_id = secrets.token_hex(16)
        async with contextlib.AsyncExitStack() as held:
            for p in partials:  # none of them may go away while they are copied
                await held.enter_async_context(self.s.locks.hold(p.id))
            await held.enter_async_context(self.s.locks.hold(upload_id))
            upload = await self.s.db.create(
                upload_id, length=length, metadata_raw=meta.raw, metadata=meta.values,
                concat="final", partials=tuple(ids),
                part_size=part_size_for(length, self.cfg.part_size), multipart_id=None,
                expires_at=datetime.now(UTC) + self.cfg.expiry,
            )  # fmt: skip
            upload = await self._stage(upload)
            await self.s.completer.concatenate(upload, partials)
        log.info("upload %s concatenated from %d partial uploads", upload_id, len(ids))
        return Response(
            status_code=201,
            headers={"Location": self.location(request, upload_id), "Upload-Offset": str(length)},
        )

    async def _stage(self, upload: Upload) -> Upload:
        # The row exists before anything is staged, so the janitor never takes staged
        # bytes for an orphan.
        try:
            multipart = await to_thread.run_sync(self.s.store.create, upload.id)
        except BaseException:
            await self.s.db.delete(upload.id)
            raise
        if multipart is None:
            return upload
        await self.s.db.set_multipart(upload.id, multipart)
        return replace(upload, multipart_id=multipart)

    # -- HEAD, GET

    async def head(self, upload_id: str) -> Response:
        upload = await self.live(upload_id)
        if upload.status == "completed":
            offset = upload.length or 0
        else:
            offset = await to_thread.run_sync(self.s.store.offset, upload)
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
            headers["Upload-Concat"] = "final;" + " ".join(f"{FILES}{p}" for p in upload.partials)
        headers |= self._expiry_headers(upload)
        return Response(status_code=200, headers=headers)

    async def status(self, upload_id: str) -> Response:
        upload = await self.s.db.get(upload_id) if _UPLOAD_ID.match(upload_id) else None
        if upload is None:
            raise NotFound(f"no upload {upload_id[:40]}")
        status = "expired" if upload.is_expired() else upload.status
        return JSONResponse(
            {
                "id": upload.id,
                "status": status,
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

    # -- PATCH

    async def patch(self, request: Request, upload_id: str) -> Response:
        if not _is_offset_stream(request):
            raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_STREAM}")
        client_offset = _int_header(request, "upload-offset")
        if client_offset is None:
            raise BadRequest("PATCH needs Upload-Offset")
        checksum = _checksum(request)
        new_length = _int_header(request, "upload-length")
        upload = await self.live(upload_id)
        if upload.concat == "final":
            raise Forbidden("a final upload is made by concatenation; it takes no PATCH")
        length = upload.length if upload.length is not None else new_length
        if new_length is not None and upload.length not in (None, new_length):
            raise BadRequest(f"Upload-Length is already {upload.length}")
        limit = length if length is not None else self.cfg.max_size
        if length is not None and length > self.cfg.max_size:
            raise TooLarge(f"{length} bytes is over the maximum of {self.cfg.max_size}")
        body = _content_length(request)
        if body is not None and client_offset + body > limit:
            raise TooLarge(f"{client_offset} + {body} bytes goes past the length of {limit}")
        async with self.s.locks.hold(upload_id) as lease:
            upload = await self.live(upload_id)  # as it is now that we hold it
            if upload.status == "completed":
                if client_offset != upload.length:
                    raise Conflict(f"the upload is complete at offset {upload.length}")
                if body != 0:
                    raise TooLarge("the upload is already complete")
                return Response(status_code=204, headers={"Upload-Offset": str(client_offset)})
            if new_length is not None and upload.length is None:
                if new_length < client_offset:
                    raise BadRequest("Upload-Length is below the offset")
                upload = await self.s.db.set_length(upload_id, new_length)
            upload, offset = await self.append(request, upload, client_offset, checksum, lease)
        return Response(
            status_code=204,
            headers={"Upload-Offset": str(offset)} | self._expiry_headers(upload),
        )

    async def append(
        self,
        request: Request,
        upload: Upload,
        client_offset: int,
        checksum: tuple[str, bytes] | None,
        lease: Lease,
    ) -> tuple[Upload, int]:
        """Write the request body at ``client_offset``; complete the upload if it is whole."""
        body = _content_length(request) if _has_body(request) else 0
        atomic = checksum is not None or body is None
        writer = await to_thread.run_sync(self.s.store.open_writer, upload, atomic)
        if writer.offset != client_offset:
            await to_thread.run_sync(writer.discard)
            raise Conflict(
                f"Upload-Offset is {client_offset} but the server has {writer.offset} bytes",
                {"Upload-Offset": str(writer.offset)},
            )
        hasher = CHECKSUMS[checksum[0]]() if checksum else None
        limit = upload.length if upload.length is not None else self.cfg.max_size
        try:
            room = limit - writer.offset
            received = await _pump(request, writer, room, hasher) if body != 0 else 0
        except ClientDisconnect:
            if atomic:
                await to_thread.run_sync(writer.discard)
            else:  # keep what arrived
                upload, offset = await self.commit(upload, writer, writer.written, lease)
                await self._finish_if_whole(upload, offset)
            raise
        except BaseException:
            await to_thread.run_sync(writer.discard)
            raise
        if checksum and hasher is not None and hasher.digest() != checksum[1]:
            await to_thread.run_sync(writer.discard)
            raise ChecksumMismatch(f"the body does not match its {checksum[0]} checksum")
        upload, offset = await self.commit(upload, writer, received, lease)
        await self._finish_if_whole(upload, offset)
        return upload, offset

    async def _finish_if_whole(self, upload: Upload, offset: int) -> None:
        if upload.length is None or offset != upload.length:
            return
        try:
            await self.s.completer.finish(upload)
        except UploadFailed:
            raise  # the client's file is not the one it declared: it must hear that
        except Exception:
            # The bytes are safe; the janitor completes the upload later.
            log.exception("completing upload %s failed; the janitor retries", upload.id)

    async def commit(
        self, upload: Upload, writer: Writer, received: int, lease: Lease
    ) -> tuple[Upload, int]:
        offset = writer.offset + received
        final = upload.length is not None and offset == upload.length
        try:
            await self.s.locks.verify(lease)
        except BaseException:
            await to_thread.run_sync(writer.discard)
            raise
        offset = await to_thread.run_sync(writer.commit, final)
        upload = await self.s.db.progressed(upload.id, offset, datetime.now(UTC) + self.cfg.expiry)
        return upload, offset

    # -- DELETE

    async def delete(self, upload_id: str) -> Response:
        upload = await self.s.db.get(upload_id) if _UPLOAD_ID.match(upload_id) else None
        if upload is None:
            raise NotFound(f"no upload {upload_id[:40]}")
        async with self.s.locks.hold(upload_id):
            upload = await self.s.db.get(upload_id) or upload  # as it is now that we hold it
            if upload.status != "completed" or upload.concat == "partial":
                await to_thread.run_sync(self.s.store.delete, upload)
            await self.s.db.delete(upload_id)
        log.info("upload %s terminated", upload_id)
        return Response(status_code=204)

    # -- the bucket hook

    async def s3_hook(self, request: Request) -> Response:
        if self.s.hook is None or self.cfg.hook_secret is None:
            raise NotFound("the S3 hook is off: set upload.hook_secret (and storage.kind s3)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_NOTIFICATION_BYTES:
                raise TooLarge("the notification is too large")
        if not authenticated(self.cfg.hook_secret, request.headers, bytes(body)):
            raise Unauthorized("the notification is not signed with upload.hook_secret")
        counts = await self.s.hook.take(parse_notification(bytes(body)))
        return JSONResponse(counts)


def _ascii(text: str | None) -> str:
    return (text or "").encode("ascii", "replace").decode()[:500]


# ---------------------------------------------------------------- HTTP plumbing


class _TusResumable:
    """Adds Tus-Resumable to every /files/ response except OPTIONS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not (
            scope["path"] == "/files" or scope["path"].startswith(FILES)
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"tus-resumable"]
                message = {**message, "headers": [*headers, (b"tus-resumable", b"1.0.0")]}
            await send(message)

        await self.app(scope, receive, send_with_version)


async def _error(
    request: Request, status: int, message: str, headers: dict[str, str]
) -> Response:
    out = dict(headers)
    if _has_body(request):
        state = getattr(request.state, "body", None)
        # Not for a stranger (401): their body is not worth reading.
        drain = state is None and status != 401
        read = state == "read" or (drain and await _drain(request))
        if not read:  # the rest of the body is still on the wire: this connection is done
            out["Connection"] = "close"
    if status == 503:
        out.setdefault("Retry-After", "5")
    return PlainTextResponse(message + "\n", status_code=status, headers=out)


Handler = Callable[[Tus, Request], Awaitable[Response]]


def _endpoint(
    handler: Handler, tus_request: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        tus: Tus = request.app.state.tus
        try:
            if tus_request and request.method != "OPTIONS":
                tus.authorize(request)
            return await handler(tus, request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        except (Refused, Locked, Unavailable) as exc:
            return await _error(request, exc.status, str(exc), getattr(exc, "headers", {}))
        except VidpipeError as exc:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            status = 503 if exc.retryable else 500
            return await _error(request, status, str(exc), {})
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return await _error(request, 500, "internal error", {})

    return endpoint


def _method(request: Request) -> str:
    override = request.headers.get("x-http-method-override")
    if request.method == "POST" and override:
        return override.strip().upper()
    return request.method


async def _collection(tus: Tus, request: Request) -> Response:
    method = _method(request)
    if method == "OPTIONS":
        return tus.options()
    tus.check_version(request)
    if method == "POST":
        return await tus.create(request)
    return await _error(request, 405, f"{method} is not allowed here", {"Allow": "OPTIONS, POST"})


async def _resource(tus: Tus, request: Request) -> Response:
    upload_id = request.path_params["upload_id"]
    method = _method(request)
    if method == "OPTIONS":
        return tus.options()
    if method == "GET":
        return await tus.status(upload_id)
    tus.check_version(request)
    if method == "HEAD":
        return await tus.head(upload_id)
    if method == "PATCH":
        return await tus.patch(request, upload_id)
    if method == "DELETE":
        return await tus.delete(upload_id)
    return await _error(
        request, 405, f"{method} is not allowed here", {"Allow": "OPTIONS, HEAD, PATCH, DELETE"}
    )


async def _hook(tus: Tus, request: Request) -> Response:
    return await tus.s3_hook(request)


async def _health(tus: Tus, request: Request) -> Response:
    return PlainTextResponse("ok\n")


ServiceFactory = Callable[[], Awaitable[Service]]


def build_app(make_service: ServiceFactory, cors_origins: tuple[str, ...]) -> Starlette:
    """The ASGI app. ``make_service`` runs at startup; its janitor runs until shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = await make_service()
        app.state.tus = Tus(service)
        janitor = asyncio.create_task(service.janitor.run_forever())
        try:
            yield
        finally:
            janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await janitor
            await service.locks.close()
            await service.db.close()

    methods = ["OPTIONS", "POST", "HEAD", "PATCH", "DELETE", "GET"]
    routes = [
        Route("/files", _endpoint(_collection), methods=methods),
        Route(FILES, _endpoint(_collection), methods=methods),
        Route(FILES + "{upload_id}", _endpoint(_resource), methods=methods),
        Route(FILES + "{upload_id}/", _endpoint(_resource), methods=methods),
        Route("/hooks/s3", _endpoint(_hook, tus_request=False), methods=["POST"]),
        Route("/healthz", _endpoint(_health, tus_request=False), methods=["GET"]),
    ]
    middleware = [Middleware(_TusResumable)]
    if cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=methods,
                allow_headers=list(ALLOWED_HEADERS),
                expose_headers=list(EXPOSED_HEADERS),
                max_age=86400,
            ),
        )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def make_hook(
    db: UploadDB, storage: Storage, on_complete: OnComplete, cfg: UploadConfig
) -> BucketHook | None:
    if cfg.hook_secret is None or not isinstance(storage, S3Storage):
        return None
    return BucketHook(db, storage, on_complete, cfg.hook_prefix, cfg.max_size)
