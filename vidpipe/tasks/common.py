"""What every stage's task shares: the retry rule, the cache binding, the stage's cost.

A task is declared with ``stage_task``; the flow binds its cache policy (from
the stage registry) to a data dir with ``bind``: cache keys and results
persist there, and concurrent runs of one key are serialised by a kill-safe
lock, so a duplicate run waits and then finds the first one's result.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.transactions import IsolationLevel

from vidpipe.infra.errors import is_retryable
from vidpipe.infra.settings import Settings

RETRY_DELAYS_SECONDS: list[float] = [2, 10, 30]
P = ParamSpec("P")
R = TypeVar("R")


def only_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry what can succeed on retry (storage hiccups, a killed ffmpeg); never bad input."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_retryable(exc)


# Every stage's retry rule: transient failures only, backoff with jitter.
RETRY_TRANSIENT: dict[str, Any] = {
    "retries": len(RETRY_DELAYS_SECONDS),
    "retry_delay_seconds": RETRY_DELAYS_SECONDS,
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": only_transient,
}


@dataclass(frozen=True)
class Cost:
    """What running a stage's body cost: wall and CPU seconds of this process."""

    wall_seconds: float
    cpu_seconds: float


_costs: dict[str, Cost] = {}
_costs_lock = threading.Lock()


def stage_task(name: str, *tags: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A stage's Prefect task: named runs, persisted results, the retry rule, its cost.

    The cache policy comes from the stage registry when the flow binds it.
    """

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        @functools.wraps(fn)
        def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            wall0, cpu0 = time.monotonic(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                ctx = TaskRunContext.get()
                if ctx is not None:
                    cost = Cost(time.monotonic() - wall0, time.process_time() - cpu0)
                    with _costs_lock:
                        _costs[str(ctx.task_run.id)] = cost

        return task(
            name=name,
            task_run_name=f"{name}-{{source.video_id}}",
            cache_policy=NO_CACHE,
            persist_result=True,
            tags=[name, *tags],
            **RETRY_TRANSIENT,
        )(measured)

    return wrap


def cost_of(task_run_id: str) -> Cost | None:
    """The cost this process measured for a task run; None when its body did not run here."""
    with _costs_lock:
        return _costs.pop(task_run_id, None)


def bind(task: Task[Any, Any], settings: Settings, policy: CachePolicy) -> Task[Any, Any]:
    """``task`` with ``policy``; its results, keys and locks where every worker finds them."""
    from vidpipe.tasks.results import lock_manager, result_storage, shared

    bound = task.with_options(
        cache_policy=policy.configure(
            key_storage=result_storage(settings, "cache"),
            lock_manager=lock_manager(settings),
            isolation_level=IsolationLevel.SERIALIZABLE,
        )
    )
    if shared(settings):
        bound = bound.with_options(result_storage=result_storage(settings, "results"))
    return bound


def results_here(settings: Settings) -> AbstractContextManager[Any]:
    """Persist task results under this data dir for the duration of the block."""
    return temporary_settings(
        updates={PREFECT_LOCAL_STORAGE_PATH: settings.state_dir.resolve() / "results"}
    )
