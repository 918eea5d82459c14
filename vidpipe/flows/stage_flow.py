"""run-stage: one stage of one video, as its own flow run on the GPU pool.

process-video calls it with ``run_deployment(as_subflow=True)`` for the stages
named in ``pipeline.stage_deployments``. It is handed references only (the
source's sha256, the video id, the parent's settings) and finds what the
stage reads the way the parent would: every upstream stage is a cache hit,
its result read from the shared result storage. The stage's own result lands
there too, and the parent picks it up the same way.

While its stage runs (not while it finds the upstream results), the child
holds one slot of the ``gpu-slots`` global concurrency limit
(``pipeline.gpu_slots``), leased: Prefect renews the lease while the run
lives, and a node that vanishes frees its slot when the lease runs out.
Without that limit on the server, the stage runs unbounded and says so.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from vidpipe.flows import report
from vidpipe.flows.stages import STAGES, StageRunner, refuse_endless_retries, stage_args, upstream
from vidpipe.infra.errors import ConfigError
from vidpipe.infra.ingest import stored_source
from vidpipe.infra.settings import load_settings
from vidpipe.infra.storage import open_storage


def _gpu_present() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@flow(
    name="run-stage", flow_run_name="{stage}-{video_id}", validate_parameters=False,
    persist_result=False,
)  # fmt: skip
def run_stage(
    stage: str,
    sha256: str,
    video_id: str,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    live: bool = False,
) -> str:
    """Run ``stage`` for the stored source ``sha256``; its result goes to the cache.

    ``live``: the ladder publishes an EVENT master as it encodes (the video's first run).
    """
    if stage not in STAGES:
        raise ConfigError(f"no stage {stage!r}; stages: {', '.join(STAGES)}")
    log = get_run_logger()
    settings = load_settings(**(overrides or {}))
    refuse_endless_retries(settings)
    if not _gpu_present():
        log.warning("no GPU on this worker: %s runs on the CPU", stage)
    src = stored_source(open_storage(settings), sha256, video_id)
    runner = StageRunner(settings, frozenset({stage}) if force else frozenset())
    done: dict[str, Any] = {}
    for name in upstream(stage):
        if STAGES[name].enabled(settings):
            done[name] = runner.run(name, *stage_args(name, src, settings, done))
    pipeline = settings.pipeline
    slot = concurrency(pipeline.gpu_slots, occupy=1, strict=False,
                       lease_duration=pipeline.gpu_slot_lease_seconds)  # fmt: skip
    progress = report.transcode_progress(video_id) if stage == "ladder" else nullcontext()
    with slot, progress:
        runner.run(stage, *stage_args(stage, src, settings, done, live))
    cached = runner.timings[stage].cached
    log.info("%s of %s: %s", stage, video_id, "cached" if cached else "done")
    return "cached" if cached else "done"
