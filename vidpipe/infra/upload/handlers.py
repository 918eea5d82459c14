"""The tus handlers, one per method: POST creates (or concatenates), HEAD and GET
tell, PATCH appends, DELETE terminates; and the bucket hook's POST.

A PATCH without a checksum and with a Content-Length keeps what arrived
before a disconnect. A PATCH with a checksum (or without a Content-Length)
is all or nothing: on a mismatch, an unknown algorithm, a body past the
upload's length or a disconnect, the offset stays where it was.

Every handler that changes an upload holds its lock (``locks``) while it does.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from vidpipe.infra.storage import S3Storage, Storage
from vidpipe.infra.upload.bodies import pump
from vidpipe.infra.upload.complete import Completer, OnComplete
from vidpipe.infra.upload.db import UPLOAD_ID, Upload, UploadDB, new_upload_id
from vidpipe.infra.upload.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    TooLarge,
    Unauthorized,
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
from vidpipe.infra.upload.protocol import (
    CHECKSUMS,
    FILES,
    FINAL,
    OFFSET_STREAM,
    checksum,
    content_length,
    final_partials,
    has_body,
    int_header,
    is_offset_stream,
)
from vidpipe.infra.upload.responses import (
    expiry_headers,
    head_response,
    header_text,
    status_response,
)
from vidpipe.infra.upload.stores import UploadStore, Writer, part_size_for

log = logging.getLogger("vidpipe.upload")


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


def make_hook(
    db: UploadDB, storage: Storage, on_complete: OnComplete, cfg: UploadConfig
) -> BucketHook | None:
    if cfg.hook_secret is None or not isinstance(storage, S3Storage):
        return None
    return BucketHook(db, storage, on_complete, cfg.hook_prefix, cfg.max_size)


class Tus:
    def __init__(self, service: Service) -> None:
        self.s = service

    @property
    def cfg(self) -> UploadConfig:
        return self.s.cfg

    def location(self, request: Request, upload_id: str) -> str:
        base = self.cfg.base_url or str(request.base_url)
        return f"{base.rstrip('/')}{FILES}{upload_id}"

    def check_size(self, length: int) -> None:
        if length > self.cfg.max_size:
            raise TooLarge(f"{length} bytes is over the maximum of {self.cfg.max_size}")

    def new_expiry(self) -> datetime:
        return datetime.now(UTC) + self.cfg.expiry

    async def known(self, upload_id: str) -> Upload:
        """The upload, or 404."""
        upload = await self.s.db.get(upload_id) if UPLOAD_ID.match(upload_id) else None
        if upload is None:
            raise NotFound(f"no upload {upload_id[:40]}")
        return upload

    async def live(self, upload_id: str) -> Upload:
        """The upload, or 404 / 410 (expired, failed)."""
        upload = await self.known(upload_id)
        if upload.is_expired():
            raise Gone(f"upload {upload_id} expired")
        if upload.status == "failed":
            raise Gone(
                f"upload {upload_id} failed: {upload.error}",
                {
                    "Vidpipe-Upload-Status": "failed",
                    "Vidpipe-Upload-Error": header_text(upload.error),
                },
            )
        return upload

    # -- POST

    async def create(self, request: Request) -> Response:
        concat = request.headers.get("upload-concat")
        if concat is not None and concat.startswith(FINAL):
            return await self.create_final(request, concat)
        if concat not in (None, "partial"):
            raise BadRequest("Upload-Concat must be 'partial' or 'final;URL URL...'")
        length = int_header(request, "upload-length")
        defer = request.headers.get("upload-defer-length")
        if (length is None) == (defer is None):
            raise BadRequest("send either Upload-Length or Upload-Defer-Length: 1")
        if defer is not None and defer.strip() != "1":
            raise BadRequest("Upload-Defer-Length must be 1")
        if length is not None:
            self.check_size(length)
        meta = parse_metadata(request.headers.get("upload-metadata"), self.cfg.max_metadata_bytes)
        with_body = is_offset_stream(request) and has_body(request)
        sent_checksum = checksum(request) if with_body else None
        body_length = content_length(request) if with_body else 0
        if length is not None and body_length is not None and body_length > length:
            raise TooLarge("the body is longer than Upload-Length")
        upload_id = new_upload_id()
        part_size = part_size_for(length or self.cfg.max_size, self.cfg.part_size)
        headers = {"Location": self.location(request, upload_id)}
        # Locked from before its row exists: the janitor never finishes it under our feet.
        async with self.s.locks.hold(upload_id) as lease:
            upload = await self.s.db.create(
                upload_id, length=length, metadata_raw=meta.raw, metadata=meta.values,
                concat="partial" if concat else "none", partials=(), part_size=part_size,
                multipart_id=None, expires_at=self.new_expiry(),
            )  # fmt: skip
            upload = await self._stage(upload)
            if with_body or length == 0:
                upload, offset = await self.append(request, upload, 0, sent_checksum, lease)
                headers["Upload-Offset"] = str(offset)
        headers |= expiry_headers(upload)
        log.info("upload %s created (%s bytes)", upload_id, length if length is not None else "?")
        return Response(status_code=201, headers=headers)

    async def create_final(self, request: Request, concat: str) -> Response:
        if "upload-length" in request.headers or "upload-defer-length" in request.headers:
            raise BadRequest("a final upload takes its length from its partial uploads")
        ids = final_partials(concat)
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
        self.check_size(length)
        upload_id = new_upload_id()
        async with contextlib.AsyncExitStack() as held:
            for p in partials:  # none of them may go away while they are copied
                await held.enter_async_context(self.s.locks.hold(p.id))
            await held.enter_async_context(self.s.locks.hold(upload_id))
            upload = await self.s.db.create(
                upload_id, length=length, metadata_raw=meta.raw, metadata=meta.values,
                concat="final", partials=tuple(ids),
                part_size=part_size_for(length, self.cfg.part_size), multipart_id=None,
                expires_at=self.new_expiry(),
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
        return head_response(upload, offset)

    async def status(self, upload_id: str) -> Response:
        return status_response(await self.known(upload_id))

    # -- PATCH

    async def patch(self, request: Request, upload_id: str) -> Response:
        if not is_offset_stream(request):
            raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_STREAM}")
        client_offset = int_header(request, "upload-offset")
        if client_offset is None:
            raise BadRequest("PATCH needs Upload-Offset")
        sent_checksum = checksum(request)
        new_length = int_header(request, "upload-length")
        upload = await self.live(upload_id)
        if upload.concat == "final":
            raise Forbidden("a final upload is made by concatenation; it takes no PATCH")
        length = upload.length if upload.length is not None else new_length
        if new_length is not None and upload.length not in (None, new_length):
            raise BadRequest(f"Upload-Length is already {upload.length}")
        limit = length if length is not None else self.cfg.max_size
        if length is not None:
            self.check_size(length)
        body = content_length(request)
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
            upload, offset = await self.append(request, upload, client_offset, sent_checksum, lease)
        return Response(
            status_code=204,
            headers={"Upload-Offset": str(offset)} | expiry_headers(upload),
        )

    async def append(
        self,
        request: Request,
        upload: Upload,
        client_offset: int,
        sent_checksum: tuple[str, bytes] | None,
        lease: Lease,
    ) -> tuple[Upload, int]:
        """Write the request body at ``client_offset``; complete the upload if it is whole."""
        body = content_length(request) if has_body(request) else 0
        atomic = sent_checksum is not None or body is None
        writer = await to_thread.run_sync(self.s.store.open_writer, upload, atomic)
        if writer.offset != client_offset:
            await to_thread.run_sync(writer.discard)
            raise Conflict(
                f"Upload-Offset is {client_offset} but the server has {writer.offset} bytes",
                {"Upload-Offset": str(writer.offset)},
            )
        hasher = CHECKSUMS[sent_checksum[0]]() if sent_checksum else None
        limit = upload.length if upload.length is not None else self.cfg.max_size
        try:
            room = limit - writer.offset
            received = await pump(request, writer, room, hasher) if body != 0 else 0
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
        if sent_checksum and hasher is not None and hasher.digest() != sent_checksum[1]:
            await to_thread.run_sync(writer.discard)
            raise ChecksumMismatch(f"the body does not match its {sent_checksum[0]} checksum")
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
        upload = await self.s.db.progressed(upload.id, offset, self.new_expiry())
        return upload, offset

    # -- DELETE

    async def delete(self, upload_id: str) -> Response:
        upload = await self.known(upload_id)
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
