"""A Prefect lock manager on ``flock(2)``: a killed holder releases its locks.

Prefect's ``FileSystemLockManager`` writes lock files that outlive a process
killed with SIGKILL (OOM killer, preempted node), so the next run of the same
video waits forever. An ``flock`` belongs to an open file; the kernel drops
it when the holder dies, so a killed worker costs one retry, not a stuck key.
It serialises runs on one host (or a filesystem with working ``flock``); for
workers on several hosts, configure a network lock manager (prefect-redis).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

_POLL_SECONDS = 0.1

Handle = TypeVar("Handle")  # what holds one lock: an open file, a connection


class _Locks(Generic[Handle]):
    """``prefect.locking.protocol.LockManager`` over a lock the system drops with its holder.

    A subclass says how to take one lock without waiting (``_take``), give it
    back (``_give``) and look whether anyone holds it (``_taken``); waiting,
    timeouts and who holds what are the same for every kind.
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[Handle, str]] = {}  # key -> (handle, holder)
        self._mutex = threading.Lock()

    def _take(self, key: str) -> Handle | None:
        raise NotImplementedError

    def _give(self, handle: Handle) -> None:
        raise NotImplementedError

    def _taken(self, key: str) -> bool:
        raise NotImplementedError

    def _try_lock(self, key: str, holder: str) -> bool:
        with self._mutex:
            held = self._held.get(key)
            if held is not None:
                return held[1] == holder
        handle = self._take(key)
        if handle is None:
            return False
        with self._mutex:
            self._held[key] = (handle, holder)
        return True

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        # hold_timeout is not needed: the system releases the lock with its holder.
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try_lock(key, holder):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not await asyncio.to_thread(self._try_lock, key, holder):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        with self._mutex:
            held = self._held.get(key)
            if held is None or held[1] != holder:
                raise ValueError(f"{holder} does not hold the lock on {key}")
            del self._held[key]
        self._give(held[0])

    def is_locked(self, key: str) -> bool:
        with self._mutex:
            if key in self._held:
                return True
        return self._taken(key)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._mutex:
            held = self._held.get(key)
            return held is not None and held[1] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while await asyncio.to_thread(self.is_locked, key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True


class FlockLockManager(_Locks[int]):
    """An ``flock`` on ``{directory}/{key}.lock``; the handle is the open file."""

    def __init__(self, lock_files_directory: Path) -> None:
        super().__init__()
        self.directory = lock_files_directory

    def _path(self, key: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{key}.lock"

    def _take(self, key: str) -> int | None:
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _give(self, handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)

    def _taken(self, key: str) -> bool:
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock


class PostgresLockManager(_Locks[Any]):
    """PostgreSQL advisory locks, for workers on several hosts that share the catalog.

    Each held lock is a session-level ``pg_advisory_lock`` on a connection of
    its own (the handle), so the server releases it the moment its holder dies.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn

    def _key(self, key: str) -> int:
        from vidpipe.infra.catalog.connection import lock_key

        return lock_key(f"stage-cache:{key}")

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, application_name="vidpipe-lock")

    def _take(self, key: str) -> Any | None:
        conn = self._connect()
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key(key),)).fetchone()
        if not (row and row[0]):
            conn.close()
            return None
        return conn

    def _give(self, handle: Any) -> None:
        handle.close()  # ends the session, which releases the advisory lock

    def _taken(self, key: str) -> bool:
        with self._connect() as conn:  # probe: take it and give it straight back
            k = self._key(key)
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (k,)).fetchone()
            if row and row[0]:
                conn.execute("SELECT pg_advisory_unlock(%s)", (k,))
                return False
        return True
