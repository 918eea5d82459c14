"""Upload records in PostgreSQL (the catalog's database, ``vidpipe`` schema), async.

The tables come from migration 0002. Every process and host serving uploads
shares them, so any server can answer for any upload. How many bytes arrived
is never taken from here: the store says (``offset_hint`` only guides the
janitor). Statements are fixed text with bound parameters.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from vidpipe.infra.upload.errors import Unavailable

Concat = Literal["none", "partial", "final"]
Status = Literal["uploading", "completed", "failed", "expired"]
CONNECT_TIMEOUT_SECONDS = 10
# Unfinished uploads expire, and so do partial uploads no final one has used in time.
_EXPIRABLE = "(status = 'uploading' OR (status = 'completed' AND concat = 'partial'))"

# An upload's id: 32 lower-case hex digits, as the table's CHECK has it.
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")

_COLS = (
    "id, length, offset_hint, metadata_raw, metadata, concat, partials, part_size, "
    "multipart_id, status, error, sha256, source_key, handed_off_at, created_at, "
    "updated_at, expires_at"
)


@dataclass(frozen=True)
class Upload:
    """One tus upload as the database knows it."""

    id: str
    length: int | None  # None while deferred
    offset_hint: int
    metadata_raw: str | None
    metadata: Mapping[str, str]
    concat: Concat
    partials: tuple[str, ...]
    part_size: int
    multipart_id: str | None
    status: Status
    error: str | None
    sha256: str | None
    source_key: str | None
    handed_off_at: datetime | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    def is_expired(self, now: datetime | None = None) -> bool:
        if self.status == "expired":
            return True
        expirable = self.status == "uploading" or (
            self.status == "completed" and self.concat == "partial"
        )
        return expirable and self.expires_at <= (now or datetime.now(UTC))


def new_upload_id() -> str:
    return secrets.token_hex(16)


def _upload(row: Mapping[str, Any]) -> Upload:
    return Upload(**{**row, "partials": tuple(row["partials"]), "metadata": dict(row["metadata"])})


def _unavailable(exc: psycopg.Error) -> Unavailable:
    return Unavailable(f"the upload database failed, retry: {str(exc).strip()}")


class UploadDB:
    """A few pooled async connections to the catalog's database."""

    def __init__(self, dsn: str, max_connections: int = 8) -> None:
        self.dsn = dsn
        self._idle: list[psycopg.AsyncConnection[DictRow]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with suppress(Exception):
                await conn.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(
                        self.dsn,
                        autocommit=True,
                        row_factory=dict_row,
                        connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        application_name="vidpipe-upload",
                    )
                yield conn
            except psycopg.Error as exc:
                raise _unavailable(exc) from exc
            finally:
                if conn is not None:
                    healthy = (
                        not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
                    )
                    if healthy:
                        self._idle.append(conn)
                    else:
                        with suppress(Exception):
                            await conn.close()

    async def _one(self, query: str, params: Mapping[str, Any] | tuple[Any, ...]) -> Upload | None:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        return _upload(row) if row else None

    async def _many(self, query: str, params: Mapping[str, Any] | tuple[Any, ...]) -> list[Upload]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [_upload(r) for r in rows]

    # -- one upload

    async def create(
        self,
        upload_id: str,
        *,
        length: int | None,
        metadata_raw: str | None,
        metadata: Mapping[str, str],
        concat: Concat,
        partials: tuple[str, ...],
        part_size: int,
        multipart_id: str | None,
        expires_at: datetime,
    ) -> Upload:
        row = await self._one(
            "INSERT INTO vidpipe.uploads (id, length, metadata_raw, metadata, concat, partials, "
            "part_size, multipart_id, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {_COLS}",
            (upload_id, length, metadata_raw, Jsonb(dict(metadata)), concat, list(partials),
             part_size, multipart_id, expires_at),
        )  # fmt: skip
        assert row is not None
        return row

    async def get(self, upload_id: str) -> Upload | None:
        return await self._one(f"SELECT {_COLS} FROM vidpipe.uploads WHERE id = %s", (upload_id,))

    async def get_many(self, ids: tuple[str, ...]) -> dict[str, Upload]:
        rows = await self._many(
            f"SELECT {_COLS} FROM vidpipe.uploads WHERE id = ANY(%s)", (list(ids),)
        )
        return {u.id: u for u in rows}

    async def progressed(self, upload_id: str, offset: int, expires_at: datetime) -> Upload:
        """After a PATCH: what the store now holds, and the new expiry."""
        row = await self._one(
            "UPDATE vidpipe.uploads SET offset_hint = %s, expires_at = %s WHERE id = %s "
            f"RETURNING {_COLS}",
            (offset, expires_at, upload_id),
        )
        if row is None:
            raise Unavailable(f"upload {upload_id} vanished while it was written")
        return row

    async def set_length(self, upload_id: str, length: int) -> Upload:
        row = await self._one(
            f"UPDATE vidpipe.uploads SET length = %s WHERE id = %s RETURNING {_COLS}",
            (length, upload_id),
        )
        if row is None:
            raise Unavailable(f"upload {upload_id} vanished while it was written")
        return row

    async def set_multipart(self, upload_id: str, multipart_id: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE vidpipe.uploads SET multipart_id = %s WHERE id = %s",
                (multipart_id, upload_id),
            )

    async def completed(self, upload_id: str, sha256: str | None, source_key: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE vidpipe.uploads SET status = 'completed', sha256 = %s, source_key = %s, "
                "offset_hint = coalesce(length, offset_hint), error = NULL WHERE id = %s",
                (sha256, source_key, upload_id),
            )

    async def handed_off(self, upload_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE vidpipe.uploads SET handed_off_at = now() WHERE id = %s", (upload_id,)
            )

    async def failed(self, upload_id: str, error: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE vidpipe.uploads SET status = 'failed', error = %s WHERE id = %s",
                (error[:2000], upload_id),
            )

    async def expired(self, upload_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                f"UPDATE vidpipe.uploads SET status = 'expired' WHERE id = %s AND {_EXPIRABLE}",
                (upload_id,),
            )

    async def delete(self, upload_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute("DELETE FROM vidpipe.uploads WHERE id = %s", (upload_id,))

    # -- the janitor's questions

    async def past_expiry(self, limit: int = 200) -> list[Upload]:
        return await self._many(
            f"SELECT {_COLS} FROM vidpipe.uploads WHERE {_EXPIRABLE} "
            "AND expires_at <= now() ORDER BY expires_at LIMIT %s",
            (limit,),
        )

    async def interrupted(self, quiet_seconds: float, limit: int = 200) -> list[Upload]:
        """Uploads whose bytes all arrived (or finals not yet assembled), or completed
        ones not yet handed off, untouched for ``quiet_seconds``."""
        return await self._many(
            f"SELECT {_COLS} FROM vidpipe.uploads WHERE updated_at <= now() - %s AND ("
            " (status = 'uploading' AND expires_at > now() AND (concat = 'final' OR "
            "  (length IS NOT NULL AND offset_hint = length)))"
            " OR (status = 'completed' AND concat <> 'partial' AND handed_off_at IS NULL)"
            ") ORDER BY updated_at LIMIT %s",
            (timedelta(seconds=quiet_seconds), limit),
        )

    async def live_ids(self) -> set[str]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT id FROM vidpipe.uploads WHERE status = 'uploading' "
                "OR (status = 'completed' AND concat = 'partial')"
            )
            return {r["id"] for r in await cur.fetchall()}

    async def purge(self, retention: timedelta) -> int:
        """Drop records of finished, failed and expired uploads older than ``retention``."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "DELETE FROM vidpipe.uploads WHERE status <> 'uploading' AND updated_at <= "
                "now() - %s AND (status <> 'completed' OR concat = 'partial' OR "
                "handed_off_at IS NOT NULL)",
                (retention,),
            )
            return cur.rowcount

    # -- the bucket hook

    async def claim_hook_event(self, event_key: str, bucket: str, key: str) -> bool:
        """True the first time this notification is seen; False for a replay."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "INSERT INTO vidpipe.upload_hook_events (event_key, bucket, key) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (event_key, bucket, key),
            )
            return cur.rowcount == 1

    async def release_hook_event(self, event_key: str) -> None:
        """Forget a notification whose intake failed, so that its redelivery is taken."""
        async with self._conn() as conn:
            await conn.execute(
                "DELETE FROM vidpipe.upload_hook_events WHERE event_key = %s", (event_key,)
            )
