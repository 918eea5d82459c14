"""The upload janitor: expires stale uploads and finishes interrupted ones.

Every ``upload.janitor_interval_seconds``, on every server (they share the
work through the upload locks):

- an unfinished upload past its expiry loses its staged bytes (an S3
  multipart upload is aborted, its tail deleted) and answers 410 from then on;
- staged data that no live upload owns (an S3 multipart upload whose creating
  request died before its row was written) is removed once it is older than
  the expiry;
- an upload whose bytes all arrived but whose completion was cut short (a
  crash, a storage hiccup) is completed, and a completed one whose hand-off
  failed is handed off again;
- records of finished, failed and expired uploads older than the retention
  are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from anyio import to_thread

from vidpipe.infra.upload.complete import Completer
from vidpipe.infra.upload.db import Upload, UploadDB
from vidpipe.infra.upload.errors import Locked, UploadFailed
from vidpipe.infra.upload.locks import UploadLocks
from vidpipe.infra.upload.stores import UploadStore

log = logging.getLogger("vidpipe.upload")


@dataclass(frozen=True)
class JanitorPass:
    expired: int = 0
    finished: int = 0
    swept: int = 0
    purged: int = 0


class Janitor:
    def __init__(
        self,
        db: UploadDB,
        locks: UploadLocks,
        store: UploadStore,
        completer: Completer,
        expiry: timedelta,
        retention: timedelta,
        interval_seconds: float,
    ) -> None:
        self.db, self.locks, self.store, self.completer = db, locks, store, completer
        self.expiry, self.retention, self.interval = expiry, retention, interval_seconds

    async def run_forever(self) -> None:
        while True:
            try:
                done = await self.run_once()
                if done != JanitorPass():
                    log.info("janitor: %s", done)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("janitor pass failed; next one in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> JanitorPass:
        expired = 0
        for upload in await self.db.past_expiry():
            expired += await self._locked(upload, self._expire)
        finished = 0
        for upload in await self.db.interrupted(quiet_seconds=min(30.0, self.interval)):
            finished += await self._locked(upload, self._finish)
        swept = await self._sweep()
        purged = await self.db.purge(self.retention)
        return JanitorPass(expired, finished, swept, purged)

    async def _sweep(self) -> int:
        staged = await to_thread.run_sync(self.store.list_staged)
        live = await self.db.live_ids()  # after the listing: see UploadStore.list_staged
        cutoff = datetime.now(UTC) - self.expiry
        orphans = [s for s in staged if s.upload_id not in live and s.created < cutoff]
        return await to_thread.run_sync(self.store.remove_staged, orphans) if orphans else 0

    async def _locked(self, upload: Upload, step: Callable[[Upload], Awaitable[bool]]) -> int:
        try:
            async with self.locks.hold(upload.id):
                fresh = await self.db.get(upload.id)  # as it is now that we hold it
                if fresh is None:
                    return 0
                return int(await step(fresh))
        except Locked:
            return 0  # someone is working on it right now

    async def _expire(self, upload: Upload) -> bool:
        if not upload.is_expired():
            return False
        await to_thread.run_sync(self.store.delete, upload)
        await self.db.expired(upload.id)
        return True

    async def _finish(self, upload: Upload) -> bool:
        if upload.status == "completed":
            return await self.completer.hand_off(upload)
        if upload.status != "uploading" or upload.is_expired():
            return False
        if upload.concat == "final":
            partials = await self.db.get_many(upload.partials)
            await self.completer.concatenate(upload, [partials[p] for p in upload.partials])
            return True
        if upload.length is None or await to_thread.run_sync(self.store.offset, upload) != (
            upload.length
        ):
            return False
        with contextlib.suppress(UploadFailed):  # recorded on the upload
            await self.completer.finish(upload)
        return True
