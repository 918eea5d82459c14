"""What every stage's task shares: the cache key, the retry rule, result storage.

A stage's cache key is (stage name, stage version, source sha256, hash of the
options that change its output). Results persist under the data dir's state
folder, and concurrent runs of one key are serialised by a file lock, so a
duplicate run waits and then finds the first one's result.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import CacheKeyFnPolicy, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.transactions import IsolationLevel

from vidpipe.infra.errors import VidpipeError
from vidpipe.infra.settings import Settings
from vidpipe.tasks.locking import FlockLockManager

RETRY_DELAYS_SECONDS: list[float] = [2, 10, 30]


def stage_cache(stage: str, version: int, options: Callable[[dict[str, Any]], str]) -> CachePolicy:
    """A cache policy keyed on (stage, version, source sha256, ``options(parameters)``)."""

    def key(_: TaskRunContext, parameters: dict[str, Any]) -> str:
        return f"{stage}-v{version}-{parameters['source'].sha256}-{options(parameters)}"

    return CacheKeyFnPolicy(cache_key_fn=key)


def only_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry transient failures (storage hiccups, killed ffmpeg); fail fast on bad input."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, VidpipeError):
        return exc.retryable
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


# Every stage's retry rule: transient failures only, backoff with jitter.
RETRY_TRANSIENT: dict[str, Any] = {
    "retries": len(RETRY_DELAYS_SECONDS),
    "retry_delay_seconds": RETRY_DELAYS_SECONDS,
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": only_transient,
}


def bind(task: Task[Any, Any], settings: Settings) -> Task[Any, Any]:
    """Point a task's cache keys and locks at this data dir (see ``results_here``)."""
    policy = getattr(task, "cache_policy", None)
    if not isinstance(policy, CachePolicy):
        return task
    state = settings.state_dir.resolve()
    return task.with_options(
        cache_policy=policy.configure(
            key_storage=state / "cache",
            lock_manager=_lock_manager(state / "locks"),
            isolation_level=IsolationLevel.SERIALIZABLE,
        )
    )


@cache
def _lock_manager(directory: Path) -> FlockLockManager:
    # One per directory and process: locks are held by open files in this object.
    return FlockLockManager(directory)


def results_here(settings: Settings) -> AbstractContextManager[Any]:
    """Persist task results under this data dir for the duration of the block."""
    return temporary_settings(
        updates={PREFECT_LOCAL_STORAGE_PATH: settings.state_dir.resolve() / "results"}
    )
