"""Prefect shell: hash the upload and keep the original (never cached: hashing is the key)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from vidpipe.infra.ingest import SourceRef, ingest_file
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT


@task(name="ingest", cache_policy=NO_CACHE, persist_result=False, **RETRY_TRANSIENT)
def ingest(path: str, settings: Settings, video_id: str | None = None) -> SourceRef:
    return ingest_file(Path(path), open_storage(settings), video_id)
