"""process-video: one upload in, a published HLS ladder, thumbnails and manifest out.

    ingest ─► probe ─► plan (pure) ─► transcode ─► publish

Each stage is a cached, retried Prefect task that hands the next one only
references. A re-run with the same source and options hits every cache and
publishes nothing new; a run killed anywhere leaves the published video as it
was, because the master playlist is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from prefect import Task, flow, get_run_logger
from prefect.client.schemas.objects import State

from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.pipeline import PublishResult, TranscodeResult, stage_timing
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.errors import PlaylistInvalid
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings, load_ladder, load_settings, storage_overrides
from vidpipe.tasks.common import bind, results_here
from vidpipe.tasks.ingest import ingest
from vidpipe.tasks.probe import probe_source
from vidpipe.tasks.publish import publish_attempt
from vidpipe.tasks.transcode import transcode


@dataclass(frozen=True)
class ProcessResult:
    source: SourceRef
    info: VideoInfo
    transcode: TranscodeResult
    published: PublishResult
    stages: dict[str, dict[str, Any]]


def build_settings(
    config: str | None, out: str | None, ladder: str | None, overrides: dict[str, Any] | None
) -> Settings:
    """Settings for one run: defaults, ``config``, environment, then the CLI's flags."""
    merged: dict[str, Any] = dict(overrides or {})
    if out:
        merged["storage"] = {**merged.get("storage", {}), **storage_overrides(out)}
    if ladder:
        merged["encode"] = {**merged.get("encode", {}), "ladder": ladder}
    return load_settings(Path(config) if config else None, **merged)


def _run(
    name: str,
    task: Task[Any, Any],
    settings: Settings,
    stages: dict[str, dict[str, Any]],
    *args: Any,
    refresh: bool = False,
) -> Any:
    wall0, cpu0 = time.monotonic(), time.process_time()
    bound = bind(task, settings)
    if refresh:
        bound = bound.with_options(refresh_cache=True)
    with results_here(settings):
        state = cast(State[Any], bound(*args, return_state=True))
    result = state.result()  # re-raises the task's own exception on failure
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    if isinstance(result, TranscodeResult) and state.name != "Cached":
        cpu += result.encode_cpu_seconds  # ffmpeg's own CPU time, not ours
    stages[name] = stage_timing(wall, cpu, cached=state.name == "Cached")
    return result


@flow(name="process-video", flow_run_name="process-{source}", validate_parameters=False)
def process_video(
    source: str,
    out: str | None = None,
    ladder: str | None = None,
    config: str | None = None,
    video_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProcessResult:
    """Process one local file into a published HLS ladder under ``videos/{video_id}/``."""
    log = get_run_logger()
    settings = build_settings(config, out, ladder, overrides)
    stages: dict[str, dict[str, Any]] = {}

    src: SourceRef = _run("ingest", ingest, settings, stages, source, settings, video_id)
    info: VideoInfo = _run("probe", probe_source, settings, stages, src, settings)
    log.info("probed %s: %s, %.2f s", src.video_id, info.kind, info.duration_seconds)
    plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)

    encoded: TranscodeResult = _run(
        "transcode", transcode, settings, stages, src, info, plan, settings
    )
    try:
        published: PublishResult = _run(
            "publish", publish_attempt, settings, stages, src, info, encoded, stages, settings
        )
    except PlaylistInvalid as exc:
        # A cached attempt whose files are gone from storage: encode a fresh one.
        log.warning("cached attempt unusable (%s); encoding a fresh attempt", exc)
        encoded = _run(
            "transcode", transcode, settings, stages, src, info, plan, settings, refresh=True
        )
        published = _run(
            "publish", publish_attempt, settings, stages, src, info, encoded, stages, settings
        )
    log.info(
        "published %s attempt %s (changed=%s)", src.video_id, encoded.attempt, published.changed
    )
    return ProcessResult(src, info, encoded, published, stages)


if __name__ == "__main__":
    import sys

    print(process_video(sys.argv[1]))
