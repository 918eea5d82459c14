"""Unfinished uploads as S3 multipart uploads (like tusd's s3store).

Parts of exactly ``part_size`` bytes, numbered from 1; what a PATCH leaves
over, below a part, is kept as its own object (``{key}.part``) until the next
PATCH downloads and continues it; the last part may be short. The offset is
the size of the listed parts plus that tail. Bytes are spooled through files
on local disk, never held in memory beyond one block. A tail is deleted
before its bytes go out inside a part, so a crash can only lose bytes (the
client resends them), never count them twice.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vidpipe.infra.errors import PermanentError
from vidpipe.infra.storage import S3Storage, Storage
from vidpipe.infra.upload.db import Upload
from vidpipe.infra.upload.errors import Unavailable
from vidpipe.infra.upload.stores import (
    BLOCK_BYTES,
    MAX_PARTS,
    Staged,
    UploadStore,
    Writer,
    check_upload_id,
)

_PERMANENT_S3_CODES = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


class _Spool:
    """Part-sized files on local disk; at most one of them is being filled."""

    def __init__(self, directory: Path, part_size: int) -> None:
        self.directory, self.part_size = directory, part_size
        directory.mkdir(parents=True, exist_ok=True)
        self.full: list[Path] = []
        self._fh: BinaryIO | None = None
        self._path: Path | None = None
        self.current_size = 0

    def _open(self) -> BinaryIO:
        if self._fh is None:
            fd, name = tempfile.mkstemp(dir=self.directory, prefix="part-")
            self._fh, self._path, self.current_size = os.fdopen(fd, "wb"), Path(name), 0
        return self._fh

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            fh = self._open()
            take = min(len(view), self.part_size - self.current_size)
            fh.write(view[:take])
            self.current_size += take
            view = view[take:]
            if self.current_size == self.part_size:
                self.full.append(self._seal())

    def _seal(self) -> Path:
        assert self._fh is not None and self._path is not None
        self._fh.close()
        path, self._fh, self._path = self._path, None, None
        return path

    def take_remainder(self) -> tuple[Path | None, int]:
        """The part being filled (closed), with its size; (None, 0) if there is none."""
        if self._fh is None:
            return None, 0
        size = self.current_size
        return self._seal(), size

    def close(self) -> None:
        remainder, _ = self.take_remainder()
        if remainder is not None:
            remainder.unlink(missing_ok=True)
        for path in self.full:
            path.unlink(missing_ok=True)
        self.full = []


class S3Writer(Writer):
    def __init__(self, store: S3UploadStore, upload: Upload, atomic: bool) -> None:
        self.store, self.upload, self.atomic = store, upload, atomic
        self.parts = store.list_parts(upload)
        self.tail_size = store.tail_size(upload)
        self.offset = sum(size for _, size, _ in self.parts) + self.tail_size
        self._spool = _Spool(store.spool_dir, upload.part_size)
        self._tail_loaded = False
        self._tail_deleted = False

    def _load_tail(self) -> None:
        # The tail's bytes start the next part; fetched only once a body arrives.
        if not self._tail_loaded:
            self._tail_loaded = True
            if self.tail_size:
                for block in self.store.read_object(self.store.tail_key(self.upload.id)):
                    self._spool.write(block)

    def write(self, data: bytes) -> None:
        self._load_tail()
        self._spool.write(data)
        self.written += len(data)
        if not self.atomic:
            self._send_full_parts()

    def _drop_tail(self) -> None:
        if self.tail_size and not self._tail_deleted:
            self.store.delete_object(self.store.tail_key(self.upload.id))
            self._tail_deleted = True

    def _send_full_parts(self) -> None:
        if not self._spool.full:
            return
        self._drop_tail()  # first: a crash now loses bytes rather than counting them twice
        while self._spool.full:
            path = self._spool.full.pop(0)
            self._send_part(path)

    def _send_part(self, path: Path) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise Unavailable(f"upload {self.upload.id} would need more than {MAX_PARTS} parts")
        size = path.stat().st_size
        etag = self.store.upload_part(self.upload, number, path, size)
        self.parts.append((number, size, etag))
        path.unlink()

    def commit(self, final: bool) -> int:
        self._load_tail()
        try:
            self._send_full_parts()
            remainder, _ = self._spool.take_remainder()
            if remainder is not None:
                if final:
                    self._drop_tail()
                    self._send_part(remainder)
                else:
                    # Overwrites the old tail in one PUT, so no moment counts it twice.
                    self.store.put_object(self.store.tail_key(self.upload.id), remainder)
                    remainder.unlink()
            elif final:
                self._drop_tail()
        finally:
            self._spool.close()
        return self.offset + self.written

    def discard(self) -> None:
        self._spool.close()


class S3UploadStore(UploadStore):
    kind = "s3"

    def __init__(self, storage: S3Storage, prefix: str, spool_dir: Path) -> None:
        self.client: Any = storage.client
        self.bucket = storage.bucket
        base = f"{storage.prefix}/" if storage.prefix else ""
        self.base = f"{base}{prefix.lstrip('/')}"
        self.spool_dir = spool_dir

    def key(self, upload_id: str) -> str:
        return f"{self.base}{check_upload_id(upload_id)}"

    def tail_key(self, upload_id: str) -> str:
        return f"{self.key(upload_id)}.part"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _PERMANENT_S3_CODES:
                raise PermanentError(
                    f"S3 {what} failed on bucket {self.bucket!r}: {code}; check "
                    "storage.s3_bucket and the credentials"
                ) from exc
            raise Unavailable(f"S3 {what} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"S3 {what} failed: {exc}") from exc

    @staticmethod
    def _code(exc: Exception) -> str:
        cause = exc.__cause__
        response = getattr(cause, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    # -- small object operations

    def read_object(self, key: str) -> Iterator[bytes]:
        obj = self._call(f"get of {key}", self.client.get_object, Bucket=self.bucket, Key=key)
        body = obj["Body"]
        try:
            yield from body.iter_chunks(BLOCK_BYTES)
        finally:
            body.close()

    def put_object(self, key: str, path: Path) -> None:
        with path.open("rb") as fh:
            self._call(f"put of {key}", self.client.put_object, Bucket=self.bucket, Key=key,
                       Body=fh, ContentLength=path.stat().st_size)  # fmt: skip

    def delete_object(self, key: str) -> None:
        self._call(f"delete of {key}", self.client.delete_object, Bucket=self.bucket, Key=key)

    def object_size(self, key: str) -> int | None:
        try:
            head = self._call(f"head of {key}", self.client.head_object, Bucket=self.bucket,
                              Key=key)  # fmt: skip
        except Exception as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    # -- multipart

    def create(self, upload_id: str) -> str:
        out = self._call(
            "create of a multipart upload", self.client.create_multipart_upload,
            Bucket=self.bucket, Key=self.key(upload_id), ContentType="application/octet-stream",
        )  # fmt: skip
        return str(out["UploadId"])

    def list_parts(self, upload: Upload) -> list[tuple[int, int, str]]:
        """(number, size, ETag) of the stored parts; [] once the upload is assembled."""
        parts: list[tuple[int, int, str]] = []
        marker = 0
        while True:
            try:
                page = self._call(
                    f"listing of parts of {upload.id}", self.client.list_parts,
                    Bucket=self.bucket, Key=self.key(upload.id), UploadId=upload.multipart_id,
                    PartNumberMarker=marker,
                )  # fmt: skip
            except Exception as exc:
                if self._code(exc) == "NoSuchUpload":
                    return []
                raise
            parts += [(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"]))
                      for p in page.get("Parts", [])]  # fmt: skip
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        parts.sort()
        if [n for n, _, _ in parts] != list(range(1, len(parts) + 1)):
            raise Unavailable(f"upload {upload.id} has a gap in its parts; retry")
        return parts

    def tail_size(self, upload: Upload) -> int:
        return self.object_size(self.tail_key(upload.id)) or 0

    def upload_part(self, upload: Upload, number: int, path: Path, size: int) -> str:
        with path.open("rb") as fh:
            out = self._call(
                f"part {number} of {upload.id}", self.client.upload_part,
                Bucket=self.bucket, Key=self.key(upload.id), UploadId=upload.multipart_id,
                PartNumber=number, Body=fh, ContentLength=size,
            )  # fmt: skip
        return str(out["ETag"])

    def offset(self, upload: Upload) -> int:
        parts = self.list_parts(upload)
        if not parts and upload.length:
            # Already assembled (a completion was interrupted after that step).
            assembled = self.object_size(self.key(upload.id))
            if assembled is not None:
                return assembled
        return sum(size for _, size, _ in parts) + self.tail_size(upload)

    def open_writer(self, upload: Upload, atomic: bool) -> Writer:
        return S3Writer(self, upload, atomic)

    def assemble(self, upload: Upload) -> None:
        key = self.key(upload.id)
        parts = self.list_parts(upload)
        if not parts:
            if self.object_size(key) == (upload.length or 0):
                return  # assembled before
            if upload.length == 0:
                self._abort(upload)
                self._call(f"put of {key}", self.client.put_object, Bucket=self.bucket, Key=key,
                           Body=b"")  # fmt: skip
                return
            raise Unavailable(f"upload {upload.id} has no parts to assemble")
        self._call(
            f"completion of {upload.id}", self.client.complete_multipart_upload,
            Bucket=self.bucket, Key=key, UploadId=upload.multipart_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, _, e in parts]},
        )  # fmt: skip

    def read_blocks(self, upload: Upload) -> Iterator[bytes]:
        return self.read_object(self.key(upload.id))

    def promote(self, upload: Upload, key: str, storage: Storage) -> None:
        if not isinstance(storage, S3Storage) or storage.bucket != self.bucket:
            raise Unavailable("upload.store s3 needs storage.kind s3 on the same bucket")
        staged = self.key(upload.id)
        dest = f"{storage.prefix}/{key}" if storage.prefix else key
        if self.object_size(dest) != upload.length:
            from boto3.s3.transfer import TransferConfig

            # The managed copy goes multipart (server side) above 1 GiB, so over 5 GB works.
            self._call(
                f"copy of {upload.id} to {key}", self.client.copy,
                CopySource={"Bucket": self.bucket, "Key": staged}, Bucket=self.bucket, Key=dest,
                Config=TransferConfig(multipart_threshold=1 << 30, multipart_chunksize=1 << 29),
            )  # fmt: skip

    def _abort(self, upload: Upload) -> None:
        if not upload.multipart_id:
            return
        try:
            self._abort_multipart(upload.id, self.key(upload.id), upload.multipart_id)
        except Exception as exc:
            if self._code(exc) != "NoSuchUpload":
                raise

    def _abort_multipart(self, upload_id: str, key: str, handle: str) -> None:
        self._call(f"abort of {upload_id}", self.client.abort_multipart_upload,
                   Bucket=self.bucket, Key=key, UploadId=handle)  # fmt: skip

    def delete(self, upload: Upload) -> None:
        self._abort(upload)
        self.delete_object(self.tail_key(upload.id))
        self.delete_object(self.key(upload.id))

    def list_staged(self) -> list[Staged]:
        found = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.base):
            for mp in page.get("Uploads", []):
                upload_id = mp["Key"][len(self.base) :]
                found.append(Staged(upload_id, mp["Key"], mp["Initiated"], mp["UploadId"]))
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.base
        ):
            for obj in page.get("Contents", []):
                upload_id = obj["Key"][len(self.base) :].split(".", 1)[0]
                found.append(Staged(upload_id, obj["Key"], obj["LastModified"]))
        return found

    def remove_staged(self, items: list[Staged]) -> int:
        for item in items:
            if item.handle is None:
                self.delete_object(item.name)
                continue
            with contextlib.suppress(Unavailable):  # already gone
                self._abort_multipart(item.upload_id, item.name, item.handle)
        return len(items)
