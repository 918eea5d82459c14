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

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from prefect import Task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture
from pydantic import BaseModel

from vidpipe.flows import record
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.settings import Settings, load_ladder, options_hash, output_options
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


class StageRunner:
    """Runs registry stages for one video: bound caches, forced refreshes, timings."""

    def __init__(self, settings: Settings, force: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.force = force
        self.timings: dict[str, Timing] = {}
        self._lock = threading.Lock()

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

    def submit(self, name: str, *args: Any) -> PrefectFuture[Any]:
        """Start stage ``name`` on the flow's task runner."""
        stage = STAGES[name]
        with results_here(self.settings):
            return self._bound(stage, False).submit(*args)

    def collect(self, name: str, future: PrefectFuture[Any]) -> Any:
        """Wait for a submitted stage, record its cost, return its result (or raise)."""
        future.wait()
        run = _task_run(future)
        started = run.start_time if run is not None and run.start_time else datetime.now(UTC)
        wall = run.total_run_time.total_seconds() if run is not None and run.total_run_time else 0.0
        self._record(STAGES[name], future.state, started, wall, str(future.task_run_id))
        return future.result()

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


def _task_run(future: PrefectFuture[Any]) -> Any:
    try:
        with get_client(sync_client=True) as client:
            return client.read_task_run(future.task_run_id)
    except Exception:  # timings are advice; never fail a video over them
        return None
