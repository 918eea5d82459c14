"""Prefect shells: the one-decode ladder encode of an attempt, and a rung-level re-encode."""

from __future__ import annotations

from vidpipe.encoders.encode import LadderResult, encode_ladder
from vidpipe.encoders.ladder import LadderPlan
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra import progress
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import stage_task


@stage_task("ladder", "gpu")
def ladder(
    source: SourceRef, info: VideoInfo, plan: LadderPlan, settings: Settings, write_master: bool
) -> LadderResult:
    return encode_ladder(
        source, info, plan, settings, open_storage(settings), write_master=write_master,
        on_progress=progress.reporter("ladder", info.duration_seconds),
    )  # fmt: skip


@stage_task("ladder-rungs", "gpu")
def ladder_rungs(
    source: SourceRef, info: VideoInfo, plan: LadderPlan, settings: Settings
) -> LadderResult:
    """Re-encode only ``plan``'s rungs into a fresh attempt (no audio, no by-products)."""
    return encode_ladder(
        source, info, plan, settings, open_storage(settings), byproducts=False,
        on_progress=progress.reporter("ladder", info.duration_seconds),
    )  # fmt: skip
