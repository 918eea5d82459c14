"""The catalog handle's plumbing: a DSN, idle connections shared across threads,
transactions, and the per-video advisory lock.

``Handle`` is the base of every part of ``Catalog`` (``store``): each part reads
through ``_conn`` (autocommit statements) and writes through ``_tx`` (one
transaction, rolled back on any exception).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Self

import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types import TypeInfo

from vidpipe.infra.catalog.connection import (
    SET_SEARCH_PATH,
    connect_defaults,
    lock_key,
    parse_dsn,
    where,
)
from vidpipe.infra.catalog.errors import connect_error, mapped_errors


class Handle:
    """A DSN and a few idle connections, safe across threads."""

    def __init__(self, dsn: str, *, max_idle: int = 4) -> None:
        self.dsn = dsn
        self._params = parse_dsn(dsn)
        self._idle: list[psycopg.Connection[DictRow]] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, row_factory=dict_row, **connect_defaults(self._params)
            )
        except psycopg.Error as exc:
            raise connect_error(exc, where(self._params)) from exc
        try:
            with mapped_errors():
                conn.execute(SET_SEARCH_PATH)
                # Vectors travel as pgvector's binary format, not as 384 decimal strings.
                register_vector_info(conn, TypeInfo.fetch(conn, "vector"))
            # A filtered ANN query keeps walking the graph until LIMIT rows pass
            # (pgvector >= 0.8; older servers just filter the first ef_search rows).
            with suppress(pgerrors.UndefinedObject, pgerrors.InvalidParameterValue):
                conn.execute("SET hnsw.iterative_scan = strict_order")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            with mapped_errors():
                yield conn
        finally:
            healthy = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
            with self._lock:
                keep = healthy and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction; rolled back on any exception."""
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def video_lock(self, video_id: str, timeout_seconds: float | None = None) -> Iterator[None]:
        """Hold the video's advisory lock: runs for the same video serialise here.

        Session-level, on a connection of its own, released when the block
        exits or the process dies. ``CatalogUnavailable`` after ``timeout_seconds``.
        """
        conn = self._connect()
        try:
            with mapped_errors():
                if timeout_seconds is not None:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, int(timeout_seconds * 1000))}ms",),
                    )
                conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"video:{video_id}"),))
            yield
        finally:
            conn.close()  # ends the session, which releases the lock
