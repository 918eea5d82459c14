"""At most one pipeline start per source sha256, across processes and hosts.

Whoever inserts the ``upload_dispatches`` row for a sha256 starts the
pipeline; every later completion of the same bytes (a duplicate completion,
the same file uploaded twice, through tus or the bucket) finds the row and
does nothing. A claim whose start failed is released so a retry can take it.
Synchronous: the completion callback runs in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from vidpipe.infra.upload.errors import Unavailable


@dataclass(frozen=True)
class Claim:
    sha256: str
    video_id: str
    source_key: str
    origin: str
    mode: str


def _connect(dsn: str) -> psycopg.Connection[dict[str, object]]:
    try:
        return psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row, connect_timeout=10,
            application_name="vidpipe-intake",
        )  # fmt: skip
    except psycopg.Error as exc:
        raise Unavailable(f"the catalog database is unreachable: {exc}") from exc


def claim(dsn: str, c: Claim) -> bool:
    """True if this call is the one that starts the pipeline for ``c.sha256``."""
    with _connect(dsn) as conn:
        cur = conn.execute(
            "INSERT INTO vidpipe.upload_dispatches (sha256, video_id, source_key, origin, mode) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (c.sha256, c.video_id, c.source_key, c.origin, c.mode),
        )
        return cur.rowcount == 1


def release(dsn: str, sha256: str) -> None:
    """Give up a claim whose start failed (not one already dispatched)."""
    with _connect(dsn) as conn:
        conn.execute(
            "DELETE FROM vidpipe.upload_dispatches WHERE sha256 = %s AND dispatched_at IS NULL",
            (sha256,),
        )


def dispatched(dsn: str, sha256: str) -> None:
    with _connect(dsn) as conn:
        conn.execute(
            "UPDATE vidpipe.upload_dispatches SET dispatched_at = now() WHERE sha256 = %s",
            (sha256,),
        )


def pending(dsn: str, mode: str) -> list[Claim]:
    """Claims of ``mode`` never started (their process died first), oldest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(
            "SELECT sha256, video_id, source_key, origin, mode FROM vidpipe.upload_dispatches "
            "WHERE mode = %s AND dispatched_at IS NULL ORDER BY claimed_at",
            (mode,),
        ).fetchall()
    return [Claim(**r) for r in rows]  # type: ignore[arg-type]


def count(dsn: str, sha256: str) -> int:
    """How many starts were recorded for ``sha256`` (0 or 1); for tests and tools."""
    with _connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM vidpipe.upload_dispatches WHERE sha256 = %s "
            "AND dispatched_at IS NOT NULL",
            (sha256,),
        ).fetchone()
    return int(row["n"]) if row else 0  # type: ignore[call-overload]
