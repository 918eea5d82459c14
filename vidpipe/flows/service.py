"""The service as data: work pools, limits, deployments and automations, applied to an API.

``configs/service.yaml`` says what the service is; ``apply_service`` makes the
Prefect API at ``PREFECT_API_URL`` match it. Every object is found by name and
created or updated in place, so applying twice changes nothing, and the same
file serves ``vidpipe up`` (a local server) and ``vidpipe deploy`` (any server,
Prefect Cloud included).
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vidpipe.infra.config import CONFIG_DIR
from vidpipe.infra.errors import ConfigError

SERVICE_FILE = CONFIG_DIR / "service.yaml"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkPoolSpec(_Spec):
    name: str
    type: str = Field(
        "process", description="Worker type: process locally, kubernetes in production."
    )
    description: str = ""
    base_job_template: str | None = Field(None, description="JSON file, relative to configs/.")
    command: str | None = Field(
        None, description="What a worker runs a flow run with (the template's default if unset)."
    )


class LimitSpec(_Spec):
    name: str
    limit: int = Field(ge=1)
    slot_decay_per_second: float = Field(0.0, ge=0)


class TriggerSpec(_Spec):
    name: str
    expect: tuple[str, ...]
    match: dict[str, str | list[str]] = {}
    parameters: dict[str, Any] = {}


class DeploymentSpec(_Spec):
    flow: str = Field(description="module.path.function of the flow")
    name: str
    work_pool: str
    description: str = ""
    concurrency_limit: int | None = Field(None, ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"
    interval_seconds: float | None = Field(None, gt=0)
    triggers: tuple[TriggerSpec, ...] = ()
    parameters: dict[str, Any] = {}


class ActionSpec(_Spec):
    state: Literal["CRASHED", "SCHEDULED", "FAILED", "CANCELLED"]
    name: str | None = None
    message: str = ""


class AutomationSpec(_Spec):
    name: str
    posture: Literal["Reactive", "Proactive"]
    expect: tuple[str, ...]
    after: tuple[str, ...] = ()
    match: dict[str, str | list[str]] = {}
    match_related: dict[str, str | list[str]] = {}
    for_each: tuple[str, ...] = ()
    within_seconds: float = Field(0, ge=0)
    action: ActionSpec


class ServiceSpec(_Spec):
    work_pools: tuple[WorkPoolSpec, ...]
    concurrency_limits: tuple[LimitSpec, ...] = ()
    deployments: tuple[DeploymentSpec, ...]
    automations: tuple[AutomationSpec, ...] = ()
    worker_env: dict[str, str] = {}


def load_service(path: Path | None = None) -> ServiceSpec:
    path = path or SERVICE_FILE
    try:
        return ServiceSpec(**(yaml.safe_load(path.read_text()) or {}))
    except FileNotFoundError:
        raise ConfigError(f"service file {path} does not exist") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid service file {path}: {exc}") from None


def _flow(spec: DeploymentSpec) -> Any:
    module, _, name = spec.flow.rpartition(".")
    return getattr(importlib.import_module(module), name)


def deployment_name(spec: DeploymentSpec) -> str:
    """``flow-name/deployment-name``, as ``run_deployment`` takes it."""
    return f"{_flow(spec).name}/{spec.name}"


def apply_service(spec: ServiceSpec) -> list[str]:
    """Make the Prefect API match ``spec``; returns a line per object applied.

    A pool's job template carries ``worker_env`` only: where a host keeps its data
    and finds the catalog is that host's worker's own environment (``flows/worker.py``).
    """
    from prefect.client.orchestration import get_client

    done: list[str] = []
    with get_client(sync_client=True) as client:
        for pool in spec.work_pools:
            done.append(_apply_pool(client, pool, spec.worker_env))
        for limit in spec.concurrency_limits:
            client.upsert_global_concurrency_limit_by_name(
                limit.name, limit.limit, slot_decay_per_second=limit.slot_decay_per_second
            )
            done.append(f"concurrency limit {limit.name}: {limit.limit}")
    for deployment in spec.deployments:
        done.append(_apply_deployment(deployment))
    for automation in spec.automations:
        done.append(_apply_automation(automation))
    return done


def _apply_pool(client: Any, pool: WorkPoolSpec, env: dict[str, str]) -> str:
    import json

    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    if pool.base_job_template:
        template = json.loads((CONFIG_DIR / pool.base_job_template).read_text())
    else:
        template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["env"]["default"] = env
    if pool.command:
        template["variables"]["properties"]["command"]["default"] = pool.command
    try:
        client.read_work_pool(pool.name)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool.name,
                type=pool.type,
                description=pool.description,
                base_job_template=template,
            )
        )
        return f"work pool {pool.name}: created"
    client.update_work_pool(
        pool.name, WorkPoolUpdate(description=pool.description, base_job_template=template)
    )
    return f"work pool {pool.name}: up to date"


def _apply_deployment(spec: DeploymentSpec) -> str:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType, RunnerDeployment
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    triggers: list[Any] = [
        DeploymentEventTrigger(
            name=t.name, expect=set(t.expect), match=t.match, parameters=t.parameters
        )
        for t in spec.triggers
    ]
    limit = (
        ConcurrencyLimitConfig(
            limit=spec.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
        )
        if spec.concurrency_limit
        else None
    )
    deployment = RunnerDeployment.from_flow(
        _flow(spec), spec.name, description=spec.description, concurrency_limit=limit,
        triggers=triggers or None, parameters=spec.parameters or None,
        interval=timedelta(seconds=spec.interval_seconds) if spec.interval_seconds else None,
        work_pool_name=spec.work_pool, entrypoint_type=EntrypointType.MODULE_PATH,
    )  # fmt: skip
    deployment.apply(work_pool_name=spec.work_pool)
    return f"deployment {deployment_name(spec)} on {spec.work_pool}"


def _apply_automation(spec: AutomationSpec) -> str:
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    trigger = EventTrigger(
        posture=Posture(spec.posture), expect=set(spec.expect), after=set(spec.after),
        match=spec.match, match_related=spec.match_related, for_each=set(spec.for_each),
        threshold=1, within=timedelta(seconds=spec.within_seconds),
    )  # fmt: skip
    action = ChangeFlowRunState(
        state=StateType(spec.action.state), name=spec.action.name, message=spec.action.message
    )
    wanted = Automation(name=spec.name, trigger=trigger, actions=[action])
    existing: Any = Automation.read(name=spec.name) if _exists(spec.name) else None
    if existing is None:
        wanted.create()
        return f"automation {spec.name}: created"
    wanted.id = existing.id
    wanted.update()
    return f"automation {spec.name}: up to date"


def _exists(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_automations_by_name(name))
