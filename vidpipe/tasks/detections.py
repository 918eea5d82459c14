"""Prefect shell: the detections stage over the frames the ladder sampled."""

from __future__ import annotations

from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.models import analysis
from vidpipe.models.detect import Detections
from vidpipe.tasks.common import stage_task


@stage_task("detections", "gpu", "vision")
def detections(
    source: SourceRef, frames_index: str, settings: Settings, out: str
) -> Report[Detections]:
    return analysis.detections_stage(source, frames_index, settings, open_storage(settings), out)
