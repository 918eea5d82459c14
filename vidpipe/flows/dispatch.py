"""dispatch-upload: the deployment trigger's flow, one process-video per source, ever.

``vidpipe.upload.completed`` (resource ``vidpipe.video.{sha256}``) starts this
flow through the trigger in ``configs/service.yaml``. It asks for a
process-video run with the idempotency key ``upload:{sha256}``: the API keeps
that key with the run, so the same upload announced again, with another
event id, an hour later, gets the run that already exists. Prefect's own
event de-duplication forgets ids after 30 minutes; this does not.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from vidpipe.infra.ingest import video_id_for

PROCESS_VIDEO = "process-video/vidpipe"


def upload_key(sha256: str) -> str:
    return f"upload:{sha256}"


# persist_result=False: a flow's return value is for its caller here; what other hosts need
# (stage results) goes to the shared result storage, never to this host's ~/.prefect.
@flow(name="dispatch-upload", flow_run_name="dispatch-{sha256}", persist_result=False)
def dispatch_upload(source_uri: str, sha256: str) -> str:
    """Start (or find) the process-video run of this upload; returns its flow run id."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync in a sync flow
        PROCESS_VIDEO,
        parameters={"source": source_uri, "sha256": sha256},
        idempotency_key=upload_key(sha256),
        flow_run_name=f"process-{video_id_for(sha256)}",
        timeout=0,  # started, not awaited: the dispatcher is done in a second
        as_subflow=False,
    )
    get_run_logger().info("process-video for %s is flow run %s (%s)", sha256, run.id, run.name)
    return str(run.id)
