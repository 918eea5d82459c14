"""Prefect shell: perceptual fingerprints of the frames the ladder sampled."""

from __future__ import annotations

from vidpipe.encoders.fingerprint import Fingerprint, fingerprint_stage
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import stage_task


@stage_task("fingerprint")
def fingerprint(
    source: SourceRef, frames_index: str, settings: Settings, out: str
) -> Report[Fingerprint]:
    return fingerprint_stage(source, frames_index, open_storage(settings), settings.work_dir, out)
