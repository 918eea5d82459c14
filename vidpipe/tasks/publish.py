"""Prefect shell: validate and publish a step of a video (master playlist last)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from vidpipe.encoders import hls
from vidpipe.encoders.encode import LadderResult
from vidpipe.encoders.publish import PublishResult, publish
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT


@task(
    name="publish", task_run_name="publish-{ladder.video_id}", cache_policy=NO_CACHE,
    persist_result=False, **RETRY_TRANSIENT,
)  # fmt: skip
def publish_step(
    manifest: dict[str, Any],
    ladder: LadderResult,
    subtitles: Sequence[hls.SubtitleTrack],
    settings: Settings,
) -> PublishResult:
    return publish(open_storage(settings), manifest, ladder, subtitles)
