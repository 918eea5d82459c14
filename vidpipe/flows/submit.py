"""Hand work to the running service instead of running it here.

``vidpipe process FILE --submit`` stores the original where the workers read
(``sources/{sha256}``) and asks the ``process-video/vidpipe`` deployment for a
run with the same idempotency key an upload event gets (``upload:{sha256}``):
the file that was uploaded and the file that was submitted start one run
between them. ``vidpipe reprocess --submit`` asks for one run per video,
queued behind the deployment's concurrency limit.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from vidpipe.flows.dispatch import PROCESS_VIDEO, upload_key
from vidpipe.infra.errors import ConfigError, InternalError, PermanentError
from vidpipe.infra.ingest import ingest_file, video_id_for
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import open_storage


@dataclass(frozen=True)
class Submitted:
    video_id: str
    flow_run_id: str
    flow_run_name: str
    url: str  # the run in the Prefect UI


def require_api(
    missing: str = "--submit needs the service: set PREFECT_API_URL (vidpipe up prints it), "
    "or drop --submit to process here",
) -> str:
    """The Prefect API to talk to; ``missing`` (what to do) when PREFECT_API_URL is unset."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(missing)
    return url


def run_url(flow_run_id: str) -> str:
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url or require_api().removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def submit_file(path: Path, settings: Settings, parameters: dict[str, Any]) -> Submitted:
    """Store ``path`` as an upload and start (or find) its process-video run.

    ``parameters`` are process-video's own (``out``, ``ladder``, ``overrides``);
    they must describe the storage ``settings`` name, where the original goes.
    Options other than the defaults get a key of their own, so a run with
    other options is not mistaken for the upload's.
    """
    require_api()
    if not path.is_file():
        raise PermanentError(f"{path} does not exist or is not a file; check the path")
    src = ingest_file(path, open_storage(settings), parameters.get("video_id"))
    key = upload_key(src.sha256)
    if any(v for k, v in parameters.items() if k != "video_id"):
        key += ":" + _digest(parameters)
    return _start(
        {**parameters, "source": open_storage(settings).url(src.key), "sha256": src.sha256},
        key,
        src.video_id,
    )


def submit_reprocess(
    video_id: str, sha256: str, source_uri: str, parameters: dict[str, Any], batch: str
) -> Submitted:
    """One video of a reprocess batch; ``batch`` keeps a repeated command from doubling it."""
    params = {**parameters, "source": source_uri, "sha256": sha256, "video_id": video_id}
    return _start(params, f"reprocess:{batch}:{video_id}", video_id)


def _start(parameters: dict[str, Any], key: str, video_id: str | None) -> Submitted:
    from prefect.deployments import run_deployment

    vid = video_id or video_id_for(parameters["sha256"])
    try:
        run = run_deployment(
            PROCESS_VIDEO,
            parameters=parameters,
            idempotency_key=key,
            flow_run_name=f"process-{vid}",
            timeout=0,
            as_subflow=False,
        )
    except Exception as exc:
        if "404" in str(exc) or "not found" in str(exc).lower():
            raise ConfigError(
                f"the Prefect API has no deployment {PROCESS_VIDEO}; run vidpipe deploy "
                "(vidpipe up applies it)"
            ) from None
        raise InternalError(f"could not submit to the Prefect API: {exc}") from exc
    return Submitted(vid, str(run.id), str(run.name), run_url(str(run.id)))  # type: ignore[union-attr]


def wait(submitted: Submitted, timeout_seconds: float) -> tuple[str, str]:
    """Wait for a submitted run's end: its state's name and, when it failed, why.

    ``Crashed`` is not the end here: the service re-drives a crashed run. A
    run still going after ``timeout_seconds`` is left running, its state said
    as it stands.
    """
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_seconds
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(UUID(submitted.flow_run_id)).state
            name = (state.name if state else None) or "Unknown"
            if state is not None and state.is_final() and not state.is_crashed():
                return name, state.message or ""
            if time.monotonic() > deadline:
                return name, f"still {name} after {timeout_seconds:g} s: {submitted.url}"
            time.sleep(1)


def _digest(parameters: dict[str, Any]) -> str:
    blob = json.dumps(parameters, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
