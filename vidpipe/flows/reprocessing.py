"""Batch reprocessing: pick videos from the catalog, plan which stages must run, run them.

A stage re-runs when its code version or its options changed since the run
the catalog recorded, when a stage it reads from re-runs, or when forced.
Everything else is a cache hit inside process-video, so the plan is advice
for the operator; the caches decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidpipe.flows.stages import STAGES
from vidpipe.infra.catalog import Catalog, StageRun, Video
from vidpipe.infra.errors import ConfigError, PermanentError
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage


@dataclass(frozen=True)
class Step:
    stage: str
    recorded: str  # "v1 ab12cd34" or "-"
    current: str
    action: str  # "reuse" | "run: <why>" | "skip: disabled"


@dataclass(frozen=True)
class Plan:
    video_id: str
    source_sha256: str
    source_key: str
    size_bytes: int
    steps: tuple[Step, ...]
    force: tuple[str, ...]
    renditions: tuple[str, ...] = ()

    @property
    def runs(self) -> int:
        return int(any(s.action.startswith("run") for s in self.steps))


@dataclass(frozen=True)
class Outcome:
    video_id: str
    result: str  # "ok" | "failed"
    detail: str


def parse_stages(stages: str | None, force: bool) -> tuple[str, ...]:
    if stages is None:
        return tuple(STAGES) if force else ()
    names = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    if not force:
        raise ConfigError("--stages names what --force re-runs; add --force")
    return names


def select(
    catalog: Catalog, ids: list[str], *, all_videos: bool, status: str | None, since: str | None
) -> list[Video]:
    if not (ids or all_videos or status or since):
        raise ConfigError("name videos, or pass --all, --status S or --since DATE")
    if ids:
        videos = []
        for vid in ids:
            video = catalog.get_video(vid)
            if video is None:
                raise PermanentError(f"no video {vid!r} in the catalog; see vidpipe ls")
            videos.append(video)
        return videos
    videos = catalog.list_videos(status=status, limit=100_000)
    if since:
        try:
            cutoff = datetime.fromisoformat(since).replace(tzinfo=UTC)
        except ValueError:
            raise ConfigError(f"--since {since!r} is not a date like 2026-11-25") from None
        videos = [v for v in videos if v.updated_at >= cutoff]
    return videos


def _current(settings: Settings) -> dict[str, tuple[str, str]]:
    """(version, options hash) of each stage under today's code and settings."""
    return {name: (str(st.version), st.options_hash(settings)) for name, st in STAGES.items()}


def _when(run: StageRun) -> datetime:
    return run.finished_at or run.started_at or datetime.min.replace(tzinfo=UTC)


def plan(
    catalog: Catalog,
    settings: Settings,
    video: Video,
    force: tuple[str, ...],
    renditions: tuple[str, ...] = (),
) -> Plan:
    recorded: dict[str, StageRun] = {}
    for run in sorted(catalog.stage_runs(video.id), key=_when):
        if run.status == "succeeded" and run.stage in STAGES:
            recorded[run.stage] = run  # the latest succeeded run of each stage wins
    current = _current(settings)
    steps: list[Step] = []
    running: set[str] = set()
    for stage in STAGES:
        version, opts = current[stage]
        last = recorded.get(stage)
        was = f"v{last.stage_version} {last.options_hash[:12]}" if last else "-"
        now = f"v{version} {opts[:12]}"
        if not STAGES[stage].enabled(settings):
            action = "skip: disabled"
        elif stage in force:
            action = "run: forced"
        elif last is None:
            action = "run: never ran"
        elif last.stage_version != version:
            action = f"run: version v{last.stage_version} → v{version}"
        elif last.options_hash != opts:
            action = "run: options changed"
        elif any(u in running for u in STAGES[stage].reads):
            action = "run: upstream re-runs"
        else:
            action = "reuse"
        if action.startswith("run"):
            running.add(stage)
        steps.append(Step(stage, was, now, action))
    if renditions:
        steps.append(Step("ladder-rungs", "-", ", ".join(renditions), "run: re-encode rungs"))
    if not video.source_key:
        raise PermanentError(f"video {video.id} has no stored original to reprocess from")
    return Plan(
        video.id, video.source_sha256, video.source_key, video.size_bytes, tuple(steps), force,
        renditions,
    )  # fmt: skip


def _run_one(plan: Plan, settings: Settings, config_file: Path | None) -> Outcome:
    from vidpipe.flows.process_video import process_video
    from vidpipe.infra.scratch import scratch_dir

    storage = open_storage(settings)
    try:
        with scratch_dir(settings.work_dir / plan.video_id, "reprocess-source") as tmp:
            local = storage.fetch(plan.source_key, tmp / "source")
            result = process_video(
                str(local), config=str(config_file) if config_file else None,
                video_id=plan.video_id, overrides={"data_dir": str(settings.data_dir)},
                force=list(plan.force),
                renditions=list(plan.renditions) or None,
            )  # fmt: skip
    except Exception as exc:  # one video's failure must not stop the batch
        return Outcome(plan.video_id, "failed", str(exc).splitlines()[0][:200])
    ran = [name for name, s in result.stages.items() if not s["cached"]]
    if result.errors:
        failed = ", ".join(result.errors)
        return Outcome(plan.video_id, "failed", f"stages failed: {failed}")
    changed = "published" if result.published.changed else "unchanged"
    return Outcome(plan.video_id, "ok", f"{changed}; ran {', '.join(ran) or 'nothing'}")


def run_all(
    plans: list[Plan],
    settings: Settings,
    config_file: Path | None,
    concurrency: int,
    on_done: Callable[[], None],
) -> list[Outcome]:
    def one(p: Plan) -> Outcome:
        outcome = _run_one(p, settings, config_file)
        on_done()
        return outcome

    if concurrency == 1:
        return [one(p) for p in plans]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, plans))


def submit_all(
    plans: list[Plan], settings: Settings, overrides: dict[str, Any] | None
) -> list[Outcome]:
    """Ask the service for one process-video run per plan; the deployment's limit queues them.

    One batch id per call: the same command run twice asks twice (the second
    batch finds everything cached), while a retried submission of one batch
    gets the runs it already has.
    """
    from vidpipe.flows.submit import require_api, submit_reprocess

    require_api()
    storage = open_storage(settings)
    batch = uuid.uuid4().hex[:12]
    outcomes = []
    for p in plans:
        params: dict[str, Any] = {"force": list(p.force) or None,
                                  "renditions": list(p.renditions) or None,
                                  "overrides": overrides or None}  # fmt: skip
        run = submit_reprocess(
            p.video_id, p.source_sha256, storage.url(p.source_key),
            {k: v for k, v in params.items() if v}, batch,
        )  # fmt: skip
        outcomes.append(Outcome(p.video_id, "submitted", f"{run.flow_run_name} {run.url}"))
    return outcomes
