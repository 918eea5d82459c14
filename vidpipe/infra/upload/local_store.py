"""Unfinished uploads on local disk: one file per upload, under one directory.

A PATCH that must be all-or-nothing (it carries a checksum, or has no
Content-Length) first writes a ``.pending`` marker holding the offset it
started from; the offset is the marker's while it exists, and the bytes after
it are cut off when the PATCH is refused or the next writer finds a stale
marker.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from vidpipe.infra.storage import LocalStorage, Storage
from vidpipe.infra.upload.db import UPLOAD_ID, Upload
from vidpipe.infra.upload.stores import (
    BLOCK_BYTES,
    Staged,
    UploadStore,
    Writer,
    check_upload_id,
)


class LocalWriter(Writer):
    def __init__(self, path: Path, marker: Path, offset: int, atomic: bool) -> None:
        self.path, self.marker, self.offset, self.atomic = path, marker, offset, atomic
        self._fh: BinaryIO = path.open("r+b")
        self._fh.truncate(offset)  # bytes past the durable offset belong to no one
        self._fh.seek(offset)
        if atomic:
            _write_durably(marker, str(offset).encode())
        else:
            marker.unlink(missing_ok=True)  # a stale one, from a PATCH that died

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self.written += len(data)

    def commit(self, final: bool) -> int:
        self._fh.flush()
        os.fdatasync(self._fh.fileno())
        self._fh.close()
        if self.atomic:
            self.marker.unlink(missing_ok=True)
        return self.offset + self.written

    def discard(self) -> None:
        self._fh.truncate(self.offset)
        self._fh.close()
        self.marker.unlink(missing_ok=True)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class LocalUploadStore(UploadStore):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, upload_id: str) -> Path:
        return self.root / check_upload_id(upload_id)

    def _marker(self, upload_id: str) -> Path:
        return self._path(upload_id).with_suffix(".pending")

    def create(self, upload_id: str) -> None:
        path = self._path(upload_id)
        path.touch(exist_ok=True)
        path.chmod(0o644)

    def offset(self, upload: Upload) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._marker(upload.id).read_text())
        try:
            return self._path(upload.id).stat().st_size
        except FileNotFoundError:
            return 0

    def open_writer(self, upload: Upload, atomic: bool) -> Writer:
        path = self._path(upload.id)
        if not path.exists():
            self.create(upload.id)
        return LocalWriter(path, self._marker(upload.id), self.offset(upload), atomic)

    def assemble(self, upload: Upload) -> None:
        self._marker(upload.id).unlink(missing_ok=True)

    def read_blocks(self, upload: Upload) -> Iterator[bytes]:
        with self._path(upload.id).open("rb") as fh:
            while block := fh.read(BLOCK_BYTES):
                yield block

    def promote(self, upload: Upload, key: str, storage: Storage) -> None:
        src = self._path(upload.id)
        if storage.size(key) == src.stat().st_size:  # the same bytes came before
            return
        if isinstance(storage, LocalStorage):
            dest = Path(storage.url(key))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".tmp-{upload.id}")
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)  # same file system: no copy at all
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
            else:
                tmp.chmod(0o644)
                os.replace(tmp, dest)
                return
        storage.put_file(key, src)

    def delete(self, upload: Upload) -> None:
        self._path(upload.id).unlink(missing_ok=True)
        self._marker(upload.id).unlink(missing_ok=True)

    def list_staged(self) -> list[Staged]:
        found = []
        for path in self.root.iterdir():
            upload_id = path.name.split(".", 1)[0]
            with contextlib.suppress(FileNotFoundError):
                if UPLOAD_ID.match(upload_id):
                    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    found.append(Staged(upload_id, str(path), mtime))
        return found

    def remove_staged(self, items: list[Staged]) -> int:
        for item in items:
            Path(item.name).unlink(missing_ok=True)
        return len(items)
