"""Prefect shell: validate and publish an attempt (master playlist last)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from vidpipe.encoders.pipeline import PublishResult, StageOutput, TranscodeResult, publish
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT


@task(
    name="publish",
    task_run_name="publish-{source.video_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY_TRANSIENT,
)
def publish_attempt(
    source: SourceRef,
    info: VideoInfo,
    result: TranscodeResult,
    extras: list[StageOutput],
    stages: dict[str, dict[str, Any]],
    settings: Settings,
) -> PublishResult:
    return publish(source, info, result, stages, open_storage(settings), extras)
