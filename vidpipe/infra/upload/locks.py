"""One lock per upload that holds across requests, processes and hosts.

A PostgreSQL session-level advisory lock (``pg_try_advisory_lock``), taken
without waiting: a busy upload answers 423 at once and the event loop never
waits on a lock. One connection per process holds every lock this process
has; a set in memory keeps two requests of this process apart (a session
re-entering its own advisory lock would succeed). When that connection
drops, the server lets go of every lock it had: each lease then counts as
lost, and a writer checks its lease before it commits.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import psycopg

from vidpipe.infra.upload.errors import Locked, Unavailable


def lock_key(upload_id: str) -> int:
    """The signed 64-bit advisory-lock key of an upload."""
    digest = hashlib.blake2b(f"vidpipe:upload:{upload_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class Lease:
    upload_id: str
    session: int  # which lock connection took it


class UploadLocks:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._held: dict[str, Lease] = {}
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._session = 0
        self._io = asyncio.Lock()  # one statement at a time on the shared connection

    async def close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._session += 1  # a new session holds none of the old one's locks
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=10, application_name="vidpipe-locks"
            )
        return self._conn

    async def _query(self, sql: str, key: int) -> tuple[bool, int]:
        async with self._io:
            try:
                conn = await self._connection()
                cur = await conn.execute(sql, (key,))
                row = await cur.fetchone()
                return bool(row and row[0]), self._session
            except psycopg.Error as exc:
                await self._drop()
                raise Unavailable(f"the upload lock database failed, retry: {exc}") from exc

    async def _drop(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
        self._conn = None

    def is_held_here(self, upload_id: str) -> bool:
        return upload_id in self._held

    async def acquire(self, upload_id: str) -> Lease:
        """The upload's lock, or ``Locked`` at once if anyone holds it."""
        if upload_id in self._held:
            raise Locked(f"upload {upload_id} is busy with another request; retry")
        # Reserved before the first await, so a second request of this process sees it.
        self._held[upload_id] = Lease(upload_id, -1)
        try:
            ok, session = await self._query("SELECT pg_try_advisory_lock(%s)", lock_key(upload_id))
        except BaseException:
            del self._held[upload_id]
            raise
        if not ok:
            del self._held[upload_id]
            raise Locked(f"upload {upload_id} is busy with another request; retry")
        lease = Lease(upload_id, session)
        self._held[upload_id] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        if self._held.get(lease.upload_id) == lease:
            del self._held[lease.upload_id]
        if lease.session == self._session and self._conn is not None:
            with suppress(Unavailable):
                await self._query("SELECT pg_advisory_unlock(%s)", lock_key(lease.upload_id))

    async def verify(self, lease: Lease) -> None:
        """``Unavailable`` if the lease was lost with its database session."""
        try:
            alive, session = await self._query("SELECT %s::bigint IS NOT NULL", 0)
        except Unavailable:
            alive, session = False, -2
        if not alive or session != lease.session:
            raise Unavailable(f"lost the lock of upload {lease.upload_id}; retry")

    @asynccontextmanager
    async def hold(self, upload_id: str) -> AsyncIterator[Lease]:
        lease = await self.acquire(upload_id)
        try:
            yield lease
        finally:
            await self.release(lease)
