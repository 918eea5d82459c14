"""Prefect shell: the one-decode ladder encode, thumbnails and upload of an attempt."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from vidpipe.encoders.ladder import LadderPlan
from vidpipe.encoders.pipeline import TranscodeResult, transcode_to_storage
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra import progress
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings, load_ladder, options_hash
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT, stage_cache

TRANSCODE_VERSION = 1


def _options(p: dict[str, Any]) -> str:
    s: Settings = p["settings"]
    return options_hash(
        load_ladder(s.encode.ladder),
        s.encode,
        s.thumbnails,
        s.limits,
        open_storage(s).identity(),
        p["source"].video_id,
    )


@task(
    name="transcode",
    task_run_name="transcode-{source.video_id}",
    cache_policy=stage_cache("transcode", TRANSCODE_VERSION, _options),
    persist_result=True,
    **RETRY_TRANSIENT,
    tags=["transcode"],
)
def transcode(
    source: SourceRef, info: VideoInfo, plan: LadderPlan, settings: Settings
) -> TranscodeResult:
    return transcode_to_storage(
        source,
        info,
        plan,
        settings,
        open_storage(settings),
        on_progress=progress.reporter("transcode", info.duration_seconds),
    )


@task(
    name="transcode-rungs",
    task_run_name="transcode-rungs-{source.video_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY_TRANSIENT,
    tags=["transcode"],
)
def transcode_rungs(
    source: SourceRef, info: VideoInfo, plan: LadderPlan, settings: Settings
) -> TranscodeResult:
    """Re-encode only ``plan``'s rungs into a fresh attempt (no audio, no by-products)."""
    return transcode_to_storage(
        source, info, plan, settings, open_storage(settings),
        on_progress=progress.reporter("transcode", info.duration_seconds), byproducts=False,
    )  # fmt: skip
