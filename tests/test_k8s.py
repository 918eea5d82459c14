"""vidpipe/configs/k8s, checked offline: no cluster, no network, no Prefect API.

The base job templates are rendered the way the Kubernetes worker renders them
(prefect-kubernetes' ``from_template_and_values`` then ``prepare_for_flow_run`` for
hand-made FlowRun/Deployment/Flow objects) and the manifests are loaded into the
kubernetes client's models, with every field checked against those models. The Helm
values, the kustomization and the Karpenter NodePools are parsed and cross-checked
against the templates.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import kubernetes.client
import kubernetes.client.models
import prefect.cli.flow_run
import pytest
import yaml
from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.server.schemas.actions import validate_base_job_template
from prefect.settings import Settings
from prefect.utilities.schema_tools.validation import (
    ValidationError,
    is_valid_schema,
    validate,
)
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

K8S = Path(__file__).resolve().parent.parent / "vidpipe" / "configs" / "k8s"
POOLS = ("cpu", "gpu")
SPOT_NOTICE_SECONDS = 120

# prefect-kubernetes' manifest validator insists on these two under the pod spec (they are
# Job-spec fields); the API server's default field validation only warns about them.
PREFECT_KUBERNETES_POD_SPEC_EXTRAS = {
    "spec.template.spec.completions",
    "spec.template.spec.parallelism",
}


class NoAPI:
    """Stands in for the Prefect client: rendering must not need one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the job template called the Prefect API ({name})")


def template(pool: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((K8S / f"{pool}-job-template.json").read_text()))


def load_yaml(*parts: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S.joinpath(*parts)).read_text()) if d]


def render(pool: str, values: dict[str, Any]) -> tuple[dict[str, Any], FlowRun]:
    """The job manifest the vidpipe-{pool} worker would submit for ``values`` (job variables)."""
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            template(pool), values, client=cast(Any, NoAPI())
        )
    )
    flow = Flow(name="captions", labels={})
    deployment = DeploymentResponse(
        name="captions-gpu", flow_id=flow.id, job_variables=values, labels={}
    )
    flow_run = FlowRun(name="brisk-heron", flow_id=flow.id, deployment_id=deployment.id)
    work_pool = WorkPool(name=f"vidpipe-{pool}", type="kubernetes", default_queue_id=uuid4())
    config.prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name="worker-0")
    return config.job_manifest, flow_run


def to_model(manifest: dict[str, Any]) -> Any:
    """``manifest`` as the kubernetes client's models. A resource quantity may be a JSON
    number (``nvidia.com/gpu: 1``, which the API server's Quantity parser takes); the
    client's models want strings, so quantities are turned into strings first.

    Typed Any: every field of the models is Optional, and the asserts below say which are set.
    """
    data = copy.deepcopy(manifest)
    for c in data["spec"]["template"]["spec"]["containers"]:
        for kind in ("limits", "requests"):
            quantities = c.get("resources", {}).get(kind) or {}
            assert all(isinstance(v, str | int) for v in quantities.values()), quantities
            c["resources"][kind] = {k: str(v) for k, v in quantities.items()}
    with kubernetes.client.ApiClient() as api:
        job = api._ApiClient__deserialize(data, "V1Job")
    assert isinstance(job, kubernetes.client.V1Job)
    return job


def unknown_fields(data: Any, type_name: str, path: str = "") -> list[str]:
    """Keys in ``data`` that the kubernetes model ``type_name`` does not have (a strict
    field validation, offline): the client's deserializer silently drops them."""
    if data is None:
        return []
    if item := re.fullmatch(r"(?:List|list)\[(.+)\]", type_name):
        return [p for i, v in enumerate(data) for p in unknown_fields(v, item[1], f"{path}[{i}]")]
    klass = getattr(kubernetes.client.models, type_name, None)
    if klass is None:
        return []  # a primitive, or a map of them (labels, resources): Dict[str, str]
    by_json = {v: k for k, v in klass.attribute_map.items()}
    found: list[str] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in by_json:
            found.append(where)
        else:
            found += unknown_fields(value, klass.openapi_types[by_json[key]], where)
    return found


def nulls(data: Any, path: str = "") -> list[str]:
    if data is None:
        return [path]
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in nulls(v, f"{path}[{i}]")]
    return []


def env_of(job: Any) -> dict[str, str]:
    return {e.name: e.value for e in job.spec.template.spec.containers[0].env}


def seconds(duration: str) -> float:
    """A Go duration as Karpenter takes it (e.g. 2m, 90s, 1h30m)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    h, m, s = (int(x or 0) for x in parts.groups())
    return h * 3600 + m * 60 + s


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' toleration-matches-taint rule."""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("key") and toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("value", "") == taint.get("value", ""))


# ---------------------------------------------------------------- job templates


def test_the_field_checker_finds_misspelt_fields() -> None:
    job = {"spec": {"backofLimit": 0, "template": {"spec": {"containers": [
        {"name": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}, "imagePullPolicyy": "x"}
    ]}}}}  # fmt: skip
    assert unknown_fields(job, "V1Job") == [
        "spec.backofLimit", "spec.template.spec.containers[0].imagePullPolicyy"
    ]  # fmt: skip


@pytest.mark.parametrize("pool", POOLS)
def test_template_is_a_valid_extension_of_prefect_kubernetes_default(pool: str) -> None:
    ours, default = template(pool), KubernetesWorker.get_default_base_job_template()
    validate_base_job_template(ours)  # every {{ placeholder }} is a declared variable
    is_valid_schema(ours["variables"], preprocess=False)
    assert set(default["job_configuration"]) <= set(ours["job_configuration"])
    # every default variable is kept, but backoff_limit: the manifest pins backoffLimit to 0
    assert set(default["variables"]["properties"]) - set(ours["variables"]["properties"]) == {
        "backoff_limit"
    }
    # the defaults validate the way the server checks them on `work-pool create`
    defaults = {
        k: v["default"] for k, v in ours["variables"]["properties"].items() if "default" in v
    }
    validate(defaults, ours["variables"], raise_on_error=True, preprocess=True,
             ignore_required=True, allow_none_with_default=True)  # fmt: skip


@pytest.mark.parametrize("gpu_count", [1, 2])
def test_gpu_template_renders_to_a_kubernetes_job(gpu_count: int) -> None:
    values = {} if gpu_count == 1 else {"gpu_count": gpu_count}
    manifest, flow_run = render("gpu", values)
    assert nulls(manifest) == []
    assert set(unknown_fields(manifest, "V1Job")) == PREFECT_KUBERNETES_POD_SPEC_EXTRAS

    raw_limits = manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert raw_limits["nvidia.com/gpu"] == gpu_count  # an int, as the API receives it

    job = to_model(manifest)
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert job.spec.backoff_limit == 0
    assert pod.termination_grace_period_seconds == 110 < SPOT_NOTICE_SECONDS
    assert pod.restart_policy == "Never"
    assert int(container.resources.limits["nvidia.com/gpu"]) == gpu_count
    assert "nvidia.com/gpu" not in (container.resources.requests or {})
    assert container.args == ["prefect", "flow-run", "execute"]

    assert pod.node_selector == {"vidpipe.io/pool": "gpu"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]
    (preferred,) = pod.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
    (expr,) = preferred.preference.match_expressions
    assert (expr.key, expr.operator, expr.values) == ("karpenter.sh/capacity-type", "In", ["spot"])
    assert job.spec.template.metadata.annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert job.spec.template.metadata.labels["vidpipe.io/pool"] == "gpu"
    assert job.spec.template.metadata.labels["prefect.io/flow-run-id"] == str(flow_run.id)

    env = env_of(job)
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)  # prepare_for_flow_run ran
    assert env["YOLO_OFFLINE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")  # NVENC/NVDEC
    assert env["VIDPIPE_ENCODE__ENCODER"] == "nvenc"
    assert [s.secret_ref.name for s in container.env_from] == ["vidpipe-env"]
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts["/var/lib/vidpipe"] == "scratch" and env["VIDPIPE_DATA_DIR"] == "/var/lib/vidpipe"
    assert job.spec.ttl_seconds_after_finished == 600
    assert job.metadata.namespace == "vidpipe"


def test_deployment_env_merges_with_the_template_env() -> None:
    manifest, _ = render("gpu", {"env": {"VIDPIPE_TRANSCRIBE__MODEL": "tiny.en"}})
    env = env_of(to_model(manifest))
    assert env["VIDPIPE_TRANSCRIBE__MODEL"] == "tiny.en"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"


def test_job_variables_out_of_range_are_rejected() -> None:
    schema = template("gpu")["variables"]
    for bad in ({"gpu_count": 0}, {"gpu_count": "two"}):
        with pytest.raises(ValidationError):
            validate(bad, schema, raise_on_error=True, preprocess=True, ignore_required=True)


def test_cpu_template_has_no_gpu() -> None:
    assert "gpu_count" not in template("cpu")["variables"]["properties"]
    manifest, _ = render("cpu", {})
    assert nulls(manifest) == []
    assert set(unknown_fields(manifest, "V1Job")) == PREFECT_KUBERNETES_POD_SPEC_EXTRAS
    job = to_model(manifest)
    pod = job.spec.template.spec
    resources = pod.containers[0].resources
    assert not any("gpu" in k for k in {**resources.limits, **resources.requests})
    assert not pod.tolerations
    assert pod.node_selector == {"vidpipe.io/pool": "cpu"}
    assert job.spec.backoff_limit == 0
    assert pod.termination_grace_period_seconds == 110
    assert job.spec.template.metadata.annotations["karpenter.sh/do-not-disrupt"] == "true"
    env = env_of(job)
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env
    assert "VIDPIPE_ENCODE__ENCODER" not in env


def test_env_names_are_the_ones_prefect_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # the supervisor of `prefect flow-run execute` reads this name from the environment
    assert "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR" in inspect.getsource(prefect.cli.flow_run)
    assert '"reschedule"' in inspect.getsource(prefect.cli.flow_run)
    env = template("gpu")["variables"]["properties"]["env"]["default"]
    monkeypatch.setenv(
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    )
    assert Settings().flows.heartbeat_frequency == 30


# ---------------------------------------------------------------- Helm values, kustomization


@pytest.mark.parametrize("pool", POOLS)
def test_helm_values_name_the_pool_and_its_template(pool: str) -> None:
    (values,) = load_yaml("helm", f"worker-{pool}-values.yaml")
    chart_keys = {"nameOverride", "fullnameOverride", "namespaceOverride", "commonLabels",
                  "commonAnnotations", "worker", "serviceAccount", "role", "rolebinding",
                  "common", "global"}  # fmt: skip
    assert set(values) <= chart_keys
    assert values["fullnameOverride"] == f"prefect-worker-{pool}"
    worker = values["worker"]
    assert worker["config"]["type"] == "kubernetes"
    assert worker["config"]["workPool"] == f"vidpipe-{pool}"
    assert worker["apiConfig"] == "selfHostedServer"
    assert worker["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
    assert worker["selfHostedServerApiConfig"]["basicAuth"]["existingSecret"]
    namespace = template(pool)["variables"]["properties"]["namespace"]["default"]
    assert worker["config"]["jobNamespace"] == namespace

    config_map = worker["config"]["baseJobTemplate"]["existingConfigMapName"]
    (kustomization,) = load_yaml("kustomization.yaml")
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    assert kustomization["namespace"] == namespace
    generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
    assert generated[config_map] == [f"baseJobTemplate.json={pool}-job-template.json"]


def test_worker_releases_do_not_collide() -> None:
    names = {load_yaml("helm", f"worker-{p}-values.yaml")[0]["fullnameOverride"] for p in POOLS}
    assert len(names) == len(POOLS)


# ---------------------------------------------------------------- Karpenter


def nodepools(name: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    docs = load_yaml("karpenter", name)
    pools = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NodePool"}
    classes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "EC2NodeClass"}
    assert {d["apiVersion"] for d in docs if d["kind"] == "NodePool"} == {"karpenter.sh/v1"}
    assert {d["apiVersion"] for d in docs if d["kind"] == "EC2NodeClass"} == {
        "karpenter.k8s.aws/v1"
    }
    for pool in pools.values():
        ref = pool["spec"]["template"]["spec"]["nodeClassRef"]
        assert (ref["group"], ref["kind"]) == ("karpenter.k8s.aws", "EC2NodeClass")
        assert ref["name"] in classes
    return pools, classes


def requirement(pool: dict[str, Any], key: str) -> tuple[str, set[str]]:
    (req,) = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    return req["operator"], set(req["values"])


def test_gpu_nodepools_spot_first_with_an_on_demand_fallback() -> None:
    pools, _ = nodepools("gpu-nodepool.yaml")
    spot, on_demand = pools["vidpipe-gpu-spot"], pools["vidpipe-gpu-on-demand"]
    assert requirement(spot, "karpenter.sh/capacity-type") == ("In", {"spot"})
    assert requirement(on_demand, "karpenter.sh/capacity-type") == ("In", {"on-demand"})
    assert on_demand["spec"]["weight"] < spot["spec"]["weight"]

    gpu = template("gpu")["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    selector = template("gpu")["variables"]["properties"]["node_selector"]["default"]
    for pool in (spot, on_demand):
        assert requirement(pool, "karpenter.k8s.aws/instance-family") == (
            "In", {"g4dn", "g5", "g6"}  # NVENC: T4, A10G, L4
        )  # fmt: skip
        node = pool["spec"]["template"]
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in node["spec"][
            "taints"
        ]
        # the flow-run pods tolerate every taint these nodes get, and select their labels
        assert all(any(tolerates(t, taint) for t in gpu["tolerations"])
                   for taint in node["spec"]["taints"])  # fmt: skip
        assert selector.items() <= node["metadata"]["labels"].items()
        # a drain is bounded, and still gives the pod its full grace period inside the notice
        grace = seconds(node["spec"]["terminationGracePeriod"])
        assert gpu["terminationGracePeriodSeconds"] <= grace <= SPOT_NOTICE_SECONDS
        assert pool["spec"]["limits"]["nvidia.com/gpu"]
        assert pool["spec"]["disruption"]["consolidationPolicy"] in {
            "WhenEmpty", "WhenEmptyOrUnderutilized"
        }  # fmt: skip
    assert int(on_demand["spec"]["limits"]["nvidia.com/gpu"]) < int(
        spot["spec"]["limits"]["nvidia.com/gpu"]
    )


def test_cpu_nodepool_matches_the_cpu_template_and_the_workers() -> None:
    pools, _ = nodepools("cpu-nodepool.yaml")
    (pool,) = pools.values()
    labels = pool["spec"]["template"]["metadata"]["labels"]
    selector = template("cpu")["variables"]["properties"]["node_selector"]["default"]
    assert selector.items() <= labels.items()
    assert not pool["spec"]["template"]["spec"].get("taints")
    for p in POOLS:
        worker = load_yaml("helm", f"worker-{p}-values.yaml")[0]["worker"]
        assert worker["nodeSelector"].items() <= labels.items()
