"""Prefect shell: probe and validate the upload."""

from __future__ import annotations

from vidpipe.encoders.probe import VideoInfo, probe
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import stage_task


@stage_task("probe")
def probe_source(source: SourceRef, settings: Settings) -> VideoInfo:
    with scratch_dir(settings.work_dir / source.video_id, "probe") as tmp:
        return probe(source.local_file(open_storage(settings), tmp), settings.limits)
