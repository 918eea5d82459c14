"""reconcile: the catalog is the truth; re-drive what is stuck, remove what nobody points at.

A scheduled flow (every 5 minutes, ``configs/service.yaml``), whatever
Prefect says about the runs:

- a video the catalog shows ``processing`` or ``playable`` longer than
  ``stuck_after_minutes`` has lost its run (a node vanished, an automation
  never fired): process-video is started again for it; finished stages come
  back cached;
- an attempt in storage that neither the live master nor the live manifest
  names, older than ``orphan_after_hours``, is the leftover of a run killed
  between upload and publish: its files are removed. A published attempt,
  and one the EVENT master of a video still encoding points at, never is.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from vidpipe.encoders.publish import manifest_key, master_key
from vidpipe.infra.catalog import Video, open_catalog
from vidpipe.infra.settings import Settings, load_settings
from vidpipe.infra.storage import Storage, open_storage

ATTEMPT = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{6}$")
STUCK = ("processing", "playable")


@dataclass
class Reconciled:
    redriven: dict[str, str] = field(default_factory=dict)  # video id -> the run started
    removed: list[str] = field(default_factory=list)  # videos/{id}/{attempt}


def live_attempts(storage: Storage, video_id: str) -> set[str]:
    """Attempts the live master or manifest names: never to be removed."""
    names: set[str] = set()
    for key in (master_key(video_id), manifest_key(video_id)):
        data = storage.get_bytes(key)
        if data:
            names |= {m.group(0) for m in re.finditer(r"\d{8}T\d{6}Z-[0-9a-f]{6}", data.decode())}
    return names


def orphans(storage: Storage, video_id: str, older_than: datetime) -> dict[str, list[str]]:
    """Attempt name -> its keys, for attempts nothing points at, started before ``older_than``."""
    keep = live_attempts(storage, video_id)
    found: dict[str, list[str]] = {}
    for key in storage.sizes(f"videos/{video_id}"):
        parts = key.split("/")
        if len(parts) < 4 or not (m := ATTEMPT.match(parts[2])) or parts[2] in keep:
            continue
        started = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if started < older_than:
            found.setdefault(parts[2], []).append(key)
    return found


def _redrive(video: Video, settings: Settings) -> str:
    """Start process-video for ``video`` again; returns the run (a flow run id, or "here")."""
    from prefect.deployments import run_deployment
    from prefect.runtime import deployment

    sha = video.source_sha256
    if deployment.id is not None:  # the service: a fresh process-video run on the pool
        key = f"reconcile:{video.id}:{video.updated_at.isoformat()}"
        params = {"source": video.source_key, "sha256": sha, "video_id": video.id}
        run = run_deployment("process-video/vidpipe", parameters=params, idempotency_key=key,
                             flow_run_name=f"process-{video.id}", timeout=0,
                             as_subflow=False)  # fmt: skip
        return str(run.id)  # type: ignore[union-attr]
    else:  # run here, as `vidpipe process` would
        from vidpipe.flows.process_video import process_video

        process_video(
            video.source_key, sha256=sha, video_id=video.id,
            overrides={"data_dir": str(settings.data_dir)},
        )  # fmt: skip
        return "here"


@flow(name="reconcile", persist_result=False)
def reconcile(
    stuck_after_minutes: float = 60,
    orphan_after_hours: float = 24,
    dry_run: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-drive stuck videos and remove orphaned attempts; returns what it did."""
    log = get_run_logger()
    settings = load_settings(**(overrides or {}))
    storage = open_storage(settings)
    now = datetime.now(UTC)
    done = Reconciled()
    with open_catalog(settings.database_url, settings.data_dir) as catalog:
        videos = catalog.list_videos(limit=100_000)
    for video in videos:
        stuck_since = now - timedelta(minutes=stuck_after_minutes)
        if video.status in STUCK and video.updated_at < stuck_since and video.source_key:
            log.warning("%s is %s since %s: re-driving it", video.id, video.status,
                        video.updated_at.isoformat(timespec="seconds"))  # fmt: skip
            done.redriven[video.id] = _redrive(video, settings) if not dry_run else "dry run"
        for attempt, keys in orphans(
            storage, video.id, now - timedelta(hours=orphan_after_hours)
        ).items():
            done.removed.append(f"videos/{video.id}/{attempt}")
            log.info("removing orphaned attempt %s/%s (%d files)", video.id, attempt, len(keys))
            if not dry_run:
                for key in keys:
                    storage.delete(key)
    _report(done, dry_run)
    return {"redriven": done.redriven, "removed": done.removed, "dry_run": dry_run}


def _report(done: Reconciled, dry_run: bool) -> None:
    """What this pass did, as a table artifact (key ``reconcile``) in the Prefect UI."""
    from prefect.artifacts import create_table_artifact

    rows = [{"what": "re-driven", "video": v, "detail": f"flow run {run}"}
            for v, run in done.redriven.items()]  # fmt: skip
    rows += [{"what": "orphan removed", "video": a.split("/")[1], "detail": a}
             for a in done.removed]  # fmt: skip
    with contextlib.suppress(Exception):  # a view; the pass does not depend on it
        create_table_artifact(
            rows or [{"what": "nothing to do", "video": "", "detail": ""}], key="reconcile",
            description="dry run: nothing changed" if dry_run else "",
        )  # fmt: skip
