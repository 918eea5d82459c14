"""What a finished upload starts: the upload service's ``on_complete``.

    upload whole and checked (vidpipe.infra.upload)
      └─ Intake(done)
           register the video in the catalog as "uploaded"
           claim the source's sha256 (one start per source, ever)
           event:  emit vidpipe.upload.completed to the Prefect API
                   (resource vidpipe.video.{sha256}; payload source_uri, sha256, video_id)
                   for a deployment trigger to start process-video
           inline: queue it for the background worker, which runs process-video
                   in this process, one video at a time
           none:   nothing more (something else watches the catalog)

``upload.dispatch: auto`` means event when a Prefect API URL is configured
(``PREFECT_API_URL``, or the active Prefect profile), inline otherwise.
A duplicate completion, the same bytes uploaded twice, or bytes the catalog
already holds in any other status than "uploaded", start nothing. If a start
fails, the claim is released and the exception goes back to the upload
service, whose janitor calls again later.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil
import threading
from pathlib import Path
from typing import Literal

from vidpipe.infra.catalog import NewVideo, open_catalog, resolve_dsn
from vidpipe.infra.errors import TransientError
from vidpipe.infra.ingest import video_id_for
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import Storage, open_storage
from vidpipe.infra.upload import CompletedUpload, dispatches
from vidpipe.infra.upload.dispatches import Claim

log = logging.getLogger("vidpipe.intake")

UPLOAD_COMPLETED = "vidpipe.upload.completed"
Mode = Literal["event", "inline", "none"]


def dispatch_mode(settings: Settings) -> Mode:
    """``upload.dispatch`` with ``auto`` resolved against Prefect's settings."""
    mode = settings.upload.dispatch
    if mode != "auto":
        return mode
    from prefect.settings import get_current_settings

    return "event" if get_current_settings().api.url else "inline"


def source_uri(storage: Storage, key: str) -> str:
    """``s3://bucket/key`` or ``file:///path`` of a stored original."""
    url = storage.url(key)
    return url if "://" in url else Path(url).resolve().as_uri()


def emit_completed(done: CompletedUpload, uri: str) -> None:
    """Send ``vidpipe.upload.completed`` and wait until the Prefect API has it.

    The same event ``prefect.events.emit_event`` would build, sent through an
    events client of our own: ``emit_event`` hands events to a background
    worker that logs and drops a failed delivery, and then no pipeline would
    ever start. Here a failure raises, and the janitor retries.
    """
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(
        event=UPLOAD_COMPLETED,
        resource={"prefect.resource.id": f"vidpipe.video.{done.sha256}"},
        payload={"source_uri": uri, "sha256": done.sha256, "video_id": video_id_for(done.sha256)},
    )

    async def send() -> None:
        # checkpoint_every=1: a ping after the event, so its pong confirms delivery.
        async with get_events_client(reconnection_attempts=3, checkpoint_every=1) as client:
            await client.emit(event)

    try:
        asyncio.run(send())
    except Exception as exc:
        raise TransientError(f"the Prefect API did not take {UPLOAD_COMPLETED}: {exc}") from exc
    log.info("emitted %s for %s (%s)", UPLOAD_COMPLETED, done.sha256, uri)


def run_pipeline(settings: Settings, config_file: Path | None, source_key: str) -> None:
    """Run process-video in this process on the stored original at ``source_key``.

    The one place the inline worker starts the pipeline. Today's flow takes a
    local file and ingests it itself (it finds the original already stored);
    a file in S3 is downloaded to scratch first.
    """
    from vidpipe.flows.process_video import process_video

    storage = open_storage(settings)
    scratch = settings.work_dir / "intake" / source_key.rsplit("/", 1)[-1]
    try:
        local = storage.fetch(source_key, scratch / "source")
        process_video(
            str(local),
            config=str(config_file) if config_file else None,
            overrides={"data_dir": str(settings.data_dir)},
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Intake:
    """``on_complete`` for the upload service; ``start`` before serving, ``close`` after."""

    def __init__(self, settings: Settings, config_file: Path | None = None) -> None:
        self.settings, self.config_file = settings, config_file
        self.mode: Mode = dispatch_mode(settings)
        self._storage = open_storage(settings)
        self._queue: queue.Queue[Claim | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    @property
    def dsn(self) -> str:
        return resolve_dsn(self.settings.database_url, self.settings.data_dir)

    def start(self) -> None:
        if self.mode != "inline":
            return
        with open_catalog(self.settings.database_url, self.settings.data_dir):
            pass  # migrated, so the claims table exists
        self._worker = threading.Thread(target=self._work, name="vidpipe-intake", daemon=True)
        self._worker.start()
        for claim in dispatches.pending(self.dsn, "inline"):
            log.info("re-queueing %s, claimed but never started", claim.video_id)
            self._queue.put(claim)

    def close(self, wait: bool = True) -> None:
        if self._worker is not None:
            self._queue.put(None)
            if wait:
                self._worker.join()
            self._worker = None

    def __call__(self, done: CompletedUpload) -> None:
        video_id = video_id_for(done.sha256)
        with open_catalog(self.settings.database_url, self.settings.data_dir) as catalog:
            known = catalog.find_by_sha256(done.sha256)
            if known is not None and known.status != "uploaded":
                log.info("%s is already %s as %s; nothing to start", done.origin,
                         known.status, known.id)  # fmt: skip
                return
            catalog.register_video(
                NewVideo(video_id, done.sha256, done.size_bytes, source_key=done.source_key)
            )
        if self.mode == "none":
            return
        claim = Claim(done.sha256, video_id, done.source_key, done.origin, self.mode)
        if not dispatches.claim(self.dsn, claim):
            log.info("%s: %s was started before; nothing to start", done.origin, video_id)
            return
        if self.mode == "inline":
            self._queue.put(claim)
            return
        try:
            emit_completed(done, source_uri(self._storage, done.source_key))
        except BaseException:
            dispatches.release(self.dsn, done.sha256)
            raise
        dispatches.dispatched(self.dsn, done.sha256)

    def _work(self) -> None:
        while (claim := self._queue.get()) is not None:
            try:
                dispatches.dispatched(self.dsn, claim.sha256)
                log.info("processing %s (%s)", claim.video_id, claim.origin)
                run_pipeline(self.settings, self.config_file, claim.source_key)
            except Exception:
                log.exception("processing %s failed; see the catalog", claim.video_id)
