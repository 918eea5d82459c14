"""process-video: one upload in, a published HLS ladder, thumbnails and manifest out.

    ingest ─► probe ─► plan (pure) ─► transcode ─► publish

Each stage is a cached, retried Prefect task that hands the next one only
references. A re-run with the same source and options hits every cache and
publishes nothing new; a run killed anywhere leaves the published video as it
was, because the master playlist is written last.
"""

from __future__ import annotations

import inspect
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from prefect import Task, flow, get_run_logger
from prefect.client.schemas.objects import State

from vidpipe.encoders.ladder import LadderPlan, plan_ladder
from vidpipe.encoders.pipeline import (
    PublishResult,
    StageOutput,
    TranscodeResult,
    merge_rungs,
    stage_timing,
)
from vidpipe.encoders.probe import VideoInfo
from vidpipe.flows import record
from vidpipe.infra.catalog import Catalog, open_catalog
from vidpipe.infra.errors import ConfigError, PermanentError, PlaylistInvalid
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings, load_ladder, load_settings, storage_overrides
from vidpipe.infra.storage import open_storage
from vidpipe.tasks import vision as vision_tasks
from vidpipe.tasks.common import bind, results_here
from vidpipe.tasks.ingest import ingest
from vidpipe.tasks.probe import probe_source
from vidpipe.tasks.publish import publish_attempt
from vidpipe.tasks.transcode import transcode, transcode_rungs
from vidpipe.tasks.transcribe import transcribe_audio


@dataclass(frozen=True)
class ProcessResult:
    source: SourceRef
    info: VideoInfo
    transcode: TranscodeResult
    published: PublishResult
    stages: dict[str, dict[str, Any]]
    extras: tuple[StageOutput, ...] = ()


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


_FORCE: ContextVar[frozenset[str]] = ContextVar("_FORCE", default=frozenset())


def _stage_key(task: Task[Any, Any], args: tuple[Any, ...]) -> tuple[str, str]:
    """(stage version, options hash) from the task's cache key; ("1", "-") if it has none."""
    policy = task.cache_policy
    fn = getattr(policy, "cache_key_fn", None)
    if fn is None:
        return "1", "-"
    params = inspect.signature(task.fn).bind(*args).arguments
    key = str(fn(None, params))  # "{stage}-v{version}-{sha256}-{options}"
    _, version, _, options = key.rsplit("-", 3)
    return version.removeprefix("v"), options


def _run(
    name: str,
    task: Task[Any, Any],
    settings: Settings,
    stages: dict[str, dict[str, Any]],
    *args: Any,
    refresh: bool = False,
) -> Any:
    wall0, cpu0 = time.monotonic(), time.process_time()
    started = datetime.now(UTC)
    bound = bind(task, settings)
    if refresh or name in _FORCE.get():
        bound = bound.with_options(refresh_cache=True)
    with results_here(settings):
        state = cast(State[Any], bound(*args, return_state=True))
    result = state.result()  # re-raises the task's own exception on failure
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    if isinstance(result, TranscodeResult) and state.name != "Cached":
        cpu += result.encode_cpu_seconds  # ffmpeg's own CPU time, not ours
    version, options = _stage_key(task, args)

    stages[name] = stage_timing(wall, cpu, cached=state.name == "Cached") | {
        "version": version,
        "options_hash": options,
        "started_at": started.isoformat(timespec="seconds"),
    }
    return result


@flow(name="process-video", flow_run_name="process-{source}", validate_parameters=False)
def process_video(
    source: str,
    out: str | None = None,
    ladder: str | None = None,
    config: str | None = None,
    video_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: list[str] | None = None,
    renditions: list[str] | None = None,
) -> ProcessResult:
    """Process one local file into a published HLS ladder under ``videos/{video_id}/``.

    ``force`` names stages to re-run even when their cached result is valid;
    ``renditions`` names rungs to re-encode on their own, reusing every other.
    """
    log = get_run_logger()
    settings = build_settings(config, out, ladder, overrides)
    stages: dict[str, dict[str, Any]] = {}
    _FORCE.set(frozenset(force or ()))

    src: SourceRef = _run("ingest", ingest, settings, stages, source, settings, video_id)
    with open_catalog(settings.database_url, settings.data_dir) as catalog:
        record.begin(catalog, src)
        # A second run of the same video waits here and then finds the first one's work.
        with catalog.video_lock(src.video_id):
            record.start_processing(catalog, src.video_id)
            try:
                result = _process(src, settings, stages, catalog, log, renditions or [])
            except PermanentError as exc:
                record.fail(catalog, src.video_id, "rejected", exc, stages)
                raise
            except Exception as exc:
                record.fail(catalog, src.video_id, "failed", exc, stages)
                raise
    return result


def _process(
    src: SourceRef,
    settings: Settings,
    stages: dict[str, dict[str, Any]],
    catalog: Catalog,
    log: Any,
    renditions: list[str],
) -> ProcessResult:
    info: VideoInfo = _run("probe", probe_source, settings, stages, src, settings)
    record.probed(catalog, src.video_id, info)
    log.info("probed %s: %s, %.2f s", src.video_id, info.kind, info.duration_seconds)
    plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)

    for fresh in (False, True):
        encoded: TranscodeResult = _run(
            "transcode", transcode, settings, stages, src, info, plan, settings, refresh=fresh
        )
        if renditions:
            partial = _run("transcode-rungs", transcode_rungs, settings, stages,
                           src, info, _only(plan, renditions), settings)  # fmt: skip
            encoded = merge_rungs(encoded, partial)
        extras = _analyse(src, encoded, settings, stages)
        publish_args = (src, info, encoded, extras, stages, settings)
        try:
            published: PublishResult = _run(
                "publish", publish_attempt, settings, stages, *publish_args
            )
            break
        except PlaylistInvalid as exc:
            if fresh:
                raise
            # A cached attempt whose files are gone from storage: encode a fresh one.
            log.warning("cached attempt unusable (%s); encoding a fresh attempt", exc)
    record.published(catalog, open_storage(settings), src.video_id, encoded, extras, stages)
    log.info(
        "published %s attempt %s (changed=%s)", src.video_id, encoded.attempt, published.changed
    )
    return ProcessResult(src, info, encoded, published, stages, tuple(extras))


def _only(plan: LadderPlan, names: list[str]) -> LadderPlan:
    """The plan's rungs named in ``names`` (no audio); an unknown name is a clear error."""
    known = [r.name for r in plan.video]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"no rendition {unknown[0]!r} in this video's ladder; renditions: {', '.join(known)}"
        )
    return LadderPlan(video=tuple(r for r in plan.video if r.name in names), audio=None)


def _analyse(
    src: SourceRef, encoded: TranscodeResult, settings: Settings, stages: dict[str, dict[str, Any]]
) -> list[StageOutput]:
    """The stages that read what the transcode sampled: captions, then vision."""
    extras: list[StageOutput] = []
    if settings.transcribe.enabled and encoded.asr_audio:
        extras.append(
            _run("transcribe", transcribe_audio, settings, stages, src, encoded, settings)
        )
    if encoded.frames_index:
        vision = [
            ("detect", settings.detect.enabled, vision_tasks.detect_objects),
            ("safety", settings.safety.enabled, vision_tasks.screen_safety),
            ("deepfake", settings.deepfake.enabled, vision_tasks.check_deepfake),
            ("fingerprint", True, vision_tasks.fingerprint_video),
        ]
        for name, enabled, task in vision:
            if enabled:
                extras.append(_run(name, task, settings, stages, src, encoded, settings))
    if settings.embed.enabled and extras:
        extras.append(
            _run("embed", vision_tasks.embed_for_search, settings, stages, src, list(extras),
                 settings)
        )  # fmt: skip
    return extras


if __name__ == "__main__":
    import sys

    print(process_video(sys.argv[1]))
