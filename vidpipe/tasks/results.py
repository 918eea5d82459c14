"""Where task results, cache keys and cache locks live, so any worker can find them.

With local storage (one host), results and keys live under the data dir's
``.state`` and locks are ``flock``s. With S3 storage, workers share nothing but
the bucket and the database: results and cache keys go to the bucket under
``{prefix}/.state/`` (``ObjectStorage``, a Prefect file system block over
vidpipe's own storage layer) and cache locks are PostgreSQL advisory locks on
the catalog's database, which the server drops when their holder dies.
"""

from __future__ import annotations

import asyncio
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from prefect.filesystems import WritableFileSystem
from pydantic import PrivateAttr

from vidpipe.infra.settings import Settings, StorageSettings
from vidpipe.infra.storage import S3Storage
from vidpipe.tasks.locking import FlockLockManager, PostgresLockManager


class ObjectStorage(WritableFileSystem):
    """Prefect result and key storage in vidpipe's S3 bucket, under ``{prefix}/.state/``."""

    _block_type_name = "vidpipe object storage"
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    folder: str = ".state"
    _storage: Any = PrivateAttr(default=None)

    def _s3(self) -> S3Storage:
        if self._storage is None:
            self._storage = S3Storage(
                StorageSettings(kind="s3", s3_bucket=self.bucket, s3_prefix=self.prefix,
                                s3_endpoint_url=self.endpoint_url, s3_region=self.region)
            )  # fmt: skip
        return self._storage

    def _key(self, path: str) -> str:
        return f"{self.folder}/{path.lstrip('/')}"

    def read_path(self, path: str, _sync: bool = True) -> bytes:  # type: ignore[override]
        data = self._s3().get_bytes(self._key(path))
        if data is None:
            raise ValueError(f"no object at {self._key(path)}")
        return data

    def write_path(self, path: str, content: bytes, _sync: bool = True) -> str:  # type: ignore[override]
        self._s3().put_bytes(self._key(path), content)
        return self._key(path)

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self.write_path, path, content)


def shared(settings: Settings) -> bool:
    """Whether results must be found by workers on other hosts (object storage)."""
    return settings.storage.kind == "s3"


def result_storage(settings: Settings, what: str) -> ObjectStorage | Path:
    """``what`` ("results" or "cache") in the bucket, or under the local data dir."""
    s = settings.storage
    if shared(settings):
        assert s.s3_bucket
        return _saved(s.s3_bucket, s.s3_prefix, s.s3_endpoint_url, s.s3_region, f".state/{what}")
    return settings.state_dir.resolve() / what


@cache
def _saved(
    bucket: str, prefix: str, endpoint_url: str | None, region: str, folder: str
) -> ObjectStorage:
    """The block, saved on the Prefect server (Prefect records results by block document)."""
    block = ObjectStorage(
        bucket=bucket, prefix=prefix, endpoint_url=endpoint_url, region=region, folder=folder
    )
    digest = hashlib.sha256(f"{bucket}/{prefix}@{endpoint_url}/{folder}".encode()).hexdigest()
    block.save(f"vidpipe-{folder.rsplit('/', 1)[-1]}-{digest[:12]}", overwrite=True, _sync=True)  # type: ignore[call-arg]
    return block


def lock_manager(settings: Settings) -> FlockLockManager | PostgresLockManager:
    if shared(settings):
        from vidpipe.infra.catalog import ready_dsn

        return _postgres_locks(ready_dsn(settings.database_url, settings.data_dir))
    return _flock_locks(settings.state_dir.resolve() / "locks")


@cache
def _flock_locks(directory: Path) -> FlockLockManager:
    # One per directory and process: locks are held by open files in this object.
    return FlockLockManager(directory)


@cache
def _postgres_locks(dsn: str) -> PostgresLockManager:
    return PostgresLockManager(dsn)
