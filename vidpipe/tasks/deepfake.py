"""Prefect shell: the deepfake stage over the frames the ladder sampled."""

from __future__ import annotations

from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.models import analysis
from vidpipe.models.deepfake import DeepfakeResult
from vidpipe.tasks.common import stage_task


@stage_task("deepfake", "gpu", "vision")
def deepfake(
    source: SourceRef, frames_index: str, settings: Settings, out: str
) -> Report[DeepfakeResult]:
    return analysis.deepfake_stage(source, frames_index, settings, open_storage(settings), out)
