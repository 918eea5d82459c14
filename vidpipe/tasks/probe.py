"""Prefect shell: probe and validate the upload."""

from __future__ import annotations

import uuid

from prefect import task

from vidpipe.encoders.probe import VideoInfo, probe
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings, options_hash
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT, stage_cache

PROBE_VERSION = 1


@task(
    name="probe",
    task_run_name="probe-{source.video_id}",
    cache_policy=stage_cache("probe", PROBE_VERSION, lambda p: options_hash(p["settings"].limits)),
    persist_result=True,
    **RETRY_TRANSIENT,
)
def probe_source(source: SourceRef, settings: Settings) -> VideoInfo:
    with scratch_dir(settings.work_dir / source.video_id, f"probe-{uuid.uuid4().hex[:8]}") as tmp:
        return probe(source.local_file(open_storage(settings), tmp), settings.limits)
