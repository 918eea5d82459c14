"""The bucket path: S3 event notifications POSTed to /hooks/s3.

S3 (through a relay), MinIO and Ceph send the same JSON: ``{"Records": [...]}``
with ``eventName`` ``[s3:]ObjectCreated:*``, ``s3.bucket.name`` and
``s3.object.key`` (URL-encoded), ``size``, ``eTag`` and ``sequencer``. Each
new object under ``upload.hook_prefix`` of the storage bucket is streamed
once for its sha256, copied server-side to ``sources/{sha256}`` and handed
to the same ``on_complete`` as a tus upload.

A notification counts only when it is authenticated: ``Authorization:
Bearer SECRET`` (MinIO's ``auth_token``) or ``X-Vidpipe-Signature:
sha256=HEX`` (an HMAC-SHA256 of the body, for relays that sign). Each
record is taken once: its identity (bucket, key, version, sequencer or ETag)
is stored, and a replay finds it and does nothing. A record whose intake
fails is forgotten again, so that the sender's retry is taken.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from anyio import to_thread

from vidpipe.infra.storage import S3Storage
from vidpipe.infra.upload.complete import CompletedUpload, OnComplete, source_key_for
from vidpipe.infra.upload.db import UploadDB
from vidpipe.infra.upload.errors import BadRequest, Unavailable
from vidpipe.infra.upload.metadata import clean_filename

log = logging.getLogger("vidpipe.upload")
MAX_NOTIFICATION_BYTES = 1 << 20


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int | None
    etag: str | None
    sequencer: str | None
    version_id: str | None
    event_time: str | None

    @property
    def event_key(self) -> str:
        """What makes this notification this one, and a replay the same."""
        ident = self.sequencer or self.etag or self.event_time or ""
        blob = "\0".join((self.bucket, self.key, self.version_id or "", ident))
        return hashlib.sha256(blob.encode()).hexdigest()


def authenticated(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the notification carries the shared secret (bearer) or its HMAC."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), secret.encode()):
        return True
    signature = headers.get("x-vidpipe-signature", "")
    if signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature[len("sha256=") :].strip().lower(), expected)
    return False


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_notification(body: bytes) -> list[ObjectCreated]:
    """The object-created records of an S3/MinIO/Ceph notification; others are skipped."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the notification is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the notification is not a JSON object")
    records = doc.get("Records") or []
    if not isinstance(records, list):
        raise BadRequest("Records is not a list")
    found = []
    for rec in records:
        if not isinstance(rec, dict):
            continue
        name = str(rec.get("eventName", "")).removeprefix("s3:")
        s3 = rec.get("s3")
        if not name.startswith("ObjectCreated:") or not isinstance(s3, dict):
            continue
        bucket, obj = s3.get("bucket") or {}, s3.get("object") or {}
        if not isinstance(bucket, dict) or not isinstance(obj, dict) or not obj.get("key"):
            continue
        size = obj.get("size")
        found.append(
            ObjectCreated(
                bucket=str(bucket.get("name", "")),
                key=unquote_plus(str(obj["key"])),
                size=int(size) if isinstance(size, int | float | str) and str(size).isdigit()
                else None,
                etag=(_str(obj.get("eTag")) or "").strip('"') or None,
                sequencer=_str(obj.get("sequencer")),
                version_id=_str(obj.get("versionId")),
                event_time=_str(rec.get("eventTime")),
            )
        )  # fmt: skip
    return found


class BucketHook:
    def __init__(
        self,
        db: UploadDB,
        storage: S3Storage,
        on_complete: OnComplete,
        prefix: str,
        max_size: int,
    ) -> None:
        self.db, self.storage, self.on_complete = db, storage, on_complete
        self.prefix, self.max_size = prefix, max_size

    async def take(self, records: list[ObjectCreated]) -> dict[str, int]:
        """Take in what is new; counts of accepted, replayed and ignored records."""
        counts = {"accepted": 0, "replayed": 0, "ignored": 0}
        for rec in records:
            if rec.bucket != self.storage.bucket or not rec.key.startswith(self.prefix):
                counts["ignored"] += 1
                continue
            if not await self.db.claim_hook_event(rec.event_key, rec.bucket, rec.key):
                counts["replayed"] += 1
                continue
            try:
                done = await to_thread.run_sync(self._ingest, rec)
                if done is not None:
                    await to_thread.run_sync(self.on_complete, done)
            except Exception as exc:
                await self.db.release_hook_event(rec.event_key)
                log.exception("taking in s3://%s/%s failed", rec.bucket, rec.key)
                raise Unavailable(f"taking in {rec.key!r} failed, retry: {exc}") from exc
            counts["accepted" if done is not None else "ignored"] += 1
        return counts

    def _ingest(self, rec: ObjectCreated) -> CompletedUpload | None:
        from botocore.exceptions import ClientError

        client, bucket = self.storage.client, self.storage.bucket
        try:
            head = client.head_object(Bucket=bucket, Key=rec.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                log.info("s3://%s/%s is gone; notification ignored", bucket, rec.key)
                return None
            raise
        etag = str(head.get("ETag", "")).strip('"')
        if rec.etag and etag != rec.etag:
            log.info("s3://%s/%s changed since this notification; ignored", bucket, rec.key)
            return None
        size = int(head["ContentLength"])
        if size > self.max_size:
            log.warning("s3://%s/%s is %d bytes, over upload.max_size_mb; ignored",
                        bucket, rec.key, size)  # fmt: skip
            return None
        digest = hashlib.sha256()
        body = client.get_object(Bucket=bucket, Key=rec.key, IfMatch=head["ETag"])["Body"]
        try:
            for block in body.iter_chunks(1 << 20):
                digest.update(block)
        finally:
            body.close()
        sha256 = digest.hexdigest()
        key = source_key_for(sha256)
        if self.storage.size(key) != size:
            from boto3.s3.transfer import TransferConfig

            dest = f"{self.storage.prefix}/{key}" if self.storage.prefix else key
            client.copy(
                {"Bucket": bucket, "Key": rec.key}, bucket, dest,
                ExtraArgs={"CopySourceIfMatch": head["ETag"]},  # the bytes that were hashed
                Config=TransferConfig(multipart_threshold=1 << 30, multipart_chunksize=1 << 29),
            )  # fmt: skip
        meta = {"filename": clean_filename(rec.key)}
        if head.get("ContentType"):
            meta["filetype"] = str(head["ContentType"])[:255]
        return CompletedUpload(
            origin=f"s3:{bucket}/{rec.key}", sha256=sha256, size_bytes=size, source_key=key,
            metadata=meta,
        )  # fmt: skip
