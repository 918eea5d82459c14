"""The stage registry: every stage declared once, and the runner that runs them.

A declaration names the stage (which is also the name of what it writes, in
storage, the manifest, the catalog and the CLI), its version, the settings
its options are made of, the stages it reads and its task. From it come the
cache key, the version and options hash recorded per stage, the output
prefix ``videos/{id}/{stage}/{options hash}``, and ``reprocess`` planning.

Cache key: ``{stage}-v{version}-{source sha256}-{options hash}-{inputs hash}``,
where the inputs hash covers the storage location and every upstream result
the task is given. Runtime fields (device, threads, batch size, ``enabled``)
are not options: changing them re-runs nothing.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from prefect import Task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from pydantic import BaseModel

from vidpipe.flows import record
from vidpipe.infra.config import options_hash, output_options
from vidpipe.infra.errors import ConfigError, InternalError, TransientError
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage
from vidpipe.tasks import captions, deepfake, detections, embeddings, fingerprint, ladder, probe
from vidpipe.tasks import safety as safety_task
from vidpipe.tasks.common import bind, cost_of, results_here

Options = Callable[[Settings], tuple[BaseModel | dict[str, Any] | str, ...]]


@dataclass(frozen=True)
class Stage:
    name: str  # also what it writes: videos/{id}/{name}/..., the manifest key, the catalog row
    version: int  # bump when the code's output changes
    task: Task[..., Any]
    options: Options  # the settings that change its output (runtime fields are dropped)
    reads: tuple[str, ...] = ()  # upstream stages whose results it takes
    enabled: Callable[[Settings], bool] = lambda s: True
    gpu: bool = False  # may run on the GPU pool
    # Writes its result to the catalog: (catalog, storage, video_id, attempt, result).
    record: Callable[..., Any] | None = None

    def options_hash(self, settings: Settings) -> str:
        parts = [output_options(p) if isinstance(p, BaseModel) else p
                 for p in self.options(settings)]  # fmt: skip
        return options_hash(*parts)

    def out(self, settings: Settings) -> str:
        """Where its files go, relative to ``videos/{id}/``: deterministic per options."""
        return f"{self.name}/{self.options_hash(settings)}"

    def cache_policy(self, settings: Settings) -> CacheKeyFnPolicy:
        own = self.options_hash(settings)
        where = open_storage(settings).identity()

        def key(_: TaskRunContext, parameters: dict[str, Any]) -> str:
            source: SourceRef = parameters["source"]
            inputs = {k: identity(v) for k, v in parameters.items() if k not in _NOT_INPUTS}
            return f"{self.name}-v{self.version}-{source.sha256}-{own}-" + options_hash(
                inputs, where
            )

        return CacheKeyFnPolicy(cache_key_fn=key)


_NOT_INPUTS = frozenset({"source", "settings", "write_master"})


class StageChildFailed(TransientError):
    """The child run of a stage on the GPU pool did not complete; the parent retries it."""


def identity(value: Any) -> Any:
    """A stable JSON form of a task input: dataclasses by their fields, the rest as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str, sort_keys=True))
    if isinstance(value, tuple | list):
        return [identity(v) for v in value]
    return value if isinstance(value, str | int | float | bool | None) else str(value)


def _ladder_options(s: Settings) -> tuple[BaseModel | dict[str, Any] | str, ...]:
    return (load_ladder(s.encode.ladder), s.encode, s.thumbnails, s.frames, s.limits)


STAGES: Mapping[str, Stage] = {
    s.name: s
    for s in (
        Stage("probe", 2, probe.probe_source, lambda s: (s.limits,)),
        Stage("ladder", 2, ladder.ladder, _ladder_options, ("probe",), gpu=True),
        Stage("captions", 2, captions.captions, lambda s: (s.transcribe,), ("ladder",),
              lambda s: s.transcribe.enabled, gpu=True),
        Stage("detections", 2, detections.detections, lambda s: (s.detect,), ("ladder",),
              lambda s: s.detect.enabled, gpu=True, record=record.detections),
        Stage("safety", 2, safety_task.safety, lambda s: (s.safety,), ("ladder",),
              lambda s: s.safety.enabled, gpu=True, record=record.safety),
        Stage("deepfake", 2, deepfake.deepfake, lambda s: (s.deepfake,), ("ladder",),
              lambda s: s.deepfake.enabled, gpu=True, record=record.deepfake),
        Stage("fingerprint", 2, fingerprint.fingerprint, lambda s: (), ("ladder",),
              record=record.fingerprint),
        Stage("embeddings", 2, embeddings.embeddings, lambda s: (s.embed,),
              ("captions", "detections"), lambda s: s.embed.enabled, gpu=True,
              record=record.embeddings),
    )
}  # fmt: skip
ANALYSIS = ("captions", "detections", "safety", "deepfake", "fingerprint")


def stage_args(
    name: str, src: SourceRef, settings: Settings, done: Mapping[str, Any], live: bool = False
) -> tuple[Any, ...]:
    """The task arguments of stage ``name``, given the results of the stages it reads."""
    from vidpipe.encoders.ladder import plan_ladder

    out = STAGES[name].out(settings)
    if name == "probe":
        return (src, settings)
    if name == "ladder":
        info = done["probe"]
        plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)
        return (src, info, plan, settings, live)
    if name == "captions":
        return (src, done["ladder"], settings, out)
    if name == "embeddings":
        captions, detections = done.get("captions"), done.get("detections")
        transcript = captions.transcript if captions is not None else None
        labels = tuple(detections.result.labels) if detections is not None else ()
        return (src, transcript, labels, settings, out)
    return (src, done["ladder"].frames_index, settings, out)


def upstream(stage: str) -> list[str]:
    """Every stage ``stage`` reads, directly or through another, in running order."""
    seen: list[str] = []
    for up in STAGES[stage].reads:
        for name in [*upstream(up), up]:
            if name not in seen:
                seen.append(name)
    return seen


def downstream(stage: str) -> set[str]:
    """Every stage that reads ``stage``, directly or through another."""
    out: set[str] = set()
    for s in STAGES.values():
        if stage in s.reads:
            out |= {s.name} | downstream(s.name)
    return out


@dataclass(frozen=True)
class Timing:
    """What one stage cost in this run, for the manifest, the catalog and the CLI."""

    stage: str
    version: int
    options_hash: str
    cached: bool
    wall_seconds: float
    cpu_seconds: float
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "options_hash": self.options_hash, "cached": self.cached,
            "wall_seconds": round(self.wall_seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
            "started_at": self.started_at.isoformat(timespec="seconds"),
        }  # fmt: skip


def refuse_endless_retries(settings: Settings) -> None:
    """The supervisor of re-driven runs: after ``max_run_attempts`` crashes, stop trying."""
    from prefect.runtime import flow_run

    attempts = flow_run.run_count or 1
    if attempts > settings.pipeline.max_run_attempts:
        raise InternalError(
            f"this run was re-driven {attempts - 1} times after crashes; giving up "
            f"(pipeline.max_run_attempts {settings.pipeline.max_run_attempts})"
        )


class StageRunner:
    """Runs registry stages for one video: bound caches, forced refreshes, timings.

    A stage named in ``pipeline.stage_deployments`` runs, when this flow runs as a
    deployment, as a child run of the stage deployment on the GPU pool
    (``run_deployment(as_subflow=True)`` with an idempotency key, so a restarted
    parent reattaches to the same child); its result then comes back here
    through the shared cache.
    """

    def __init__(self, settings: Settings, force: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.force = force
        self.timings: dict[str, Timing] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.pipeline.max_parallel_stages + 1)

    def start(self, name: str, *args: Any) -> Future[Any]:
        """Run stage ``name`` on a thread of this flow run (here, or on the GPU pool)."""
        context = contextvars.copy_context()
        return self._pool.submit(context.run, self.run_anywhere, name, *args)

    def run_anywhere(self, name: str, *args: Any) -> Any:
        if self._remote(name):
            live = name == "ladder" and bool(args[4])  # an EVENT master while it encodes
            self._run_child(name, args[0], live)
        return self.run(name, *args)

    def _remote(self, name: str) -> bool:
        from prefect.runtime import deployment

        if name not in self.settings.pipeline.stage_deployments or deployment.id is None:
            return False
        if not STAGES[name].gpu:
            gpu = ", ".join(n for n, s in STAGES.items() if s.gpu)
            raise ConfigError(
                f"pipeline.stage_deployments names {name!r}, which does not run on the GPU "
                f"pool; GPU-capable stages: {gpu}"
            )
        return True

    def _run_child(self, name: str, src: SourceRef, live: bool) -> None:
        from prefect.deployments import run_deployment

        stage = STAGES[name]
        key = f"{name}:{src.sha256}:{stage.version}:{stage.options_hash(self.settings)}"
        child = run_deployment(
            self.settings.pipeline.stage_deployment,
            parameters={
                "stage": name, "sha256": src.sha256, "video_id": src.video_id,
                "overrides": self.settings.portable(),
                "force": name in self.force, "live": live,
            },
            idempotency_key=key, as_subflow=True, flow_run_name=f"{name}-{src.video_id}",
        )  # fmt: skip
        state = self._settled(child.id)  # type: ignore[union-attr]
        if state is None or not state.is_completed():
            raise StageChildFailed(
                f"stage {name} on {self.settings.pipeline.stage_deployment} ended "
                f"{state.name if state else 'without a state'}: {state.message if state else ''}"
            )

    def _settled(self, run_id: Any) -> State[Any] | None:
        """The child's final state, waiting out a crash: the service re-drives a crashed run
        (an automation sets it AwaitingRetry) onto a worker that is still there."""
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + self.settings.pipeline.child_redrive_seconds
        with get_client(sync_client=True) as client:
            while True:
                state = client.read_flow_run(run_id).state
                settled = state is not None and state.is_final() and not state.is_crashed()
                if settled or time.monotonic() > deadline:
                    return state
                time.sleep(2)

    def _bound(self, stage: Stage, refresh: bool) -> Task[..., Any]:
        task = bind(stage.task, self.settings, stage.cache_policy(self.settings))
        if refresh or stage.name in self.force:
            task = task.with_options(refresh_cache=True)
        return task

    def run(self, name: str, *args: Any, refresh: bool = False) -> Any:
        """Run stage ``name`` here and now; its exception is re-raised."""
        stage = STAGES[name]
        started, wall0 = datetime.now(UTC), time.monotonic()
        with results_here(self.settings):
            state = cast(State[Any], self._bound(stage, refresh)(*args, return_state=True))
        self._record(stage, state, started, time.monotonic() - wall0)
        return state.result()

    def run_task(self, name: str, task: Task[..., Any], *args: Any, like: str) -> Any:
        """Run a task that is not a registry stage (never cached), timed like stage ``like``."""
        started, wall0 = datetime.now(UTC), time.monotonic()
        with results_here(self.settings):
            state = cast(State[Any], task(*args, return_state=True))
        self._record(replace(STAGES[like], name=name), state, started, time.monotonic() - wall0)
        return state.result()

    def _record(
        self, stage: Stage, state: State[Any], started: datetime, wall: float,
        task_run_id: str | None = None,
    ) -> None:  # fmt: skip
        run_id = task_run_id or (str(state.state_details.task_run_id or ""))
        cost = cost_of(run_id) if run_id else None
        cached = state.name == "Cached"
        cpu = cost.cpu_seconds if cost else 0.0
        result = state.result(raise_on_failure=False) if state.is_completed() else None
        cpu += float(getattr(result, "encode_cpu_seconds", 0.0)) if not cached else 0.0
        timing = Timing(
            stage.name, stage.version, stage.options_hash(self.settings), cached,
            cost.wall_seconds if cost else wall, cpu, started,
        )  # fmt: skip
        with self._lock:
            self.timings[stage.name] = timing
