"""What process-video tells the catalog, step by step.

uploaded → processing → published | failed | rejected. A re-run of a video
that is already published with the same attempt changes no row's status; a
run that publishes a new attempt goes back through processing and flips the
published pointer in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from vidpipe.encoders.pipeline import StageOutput, TranscodeResult
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.catalog import (
    Asset,
    Catalog,
    DetectionSummary,
    NewVideo,
    Rendition,
    SafetyVerdict,
    StageRun,
    TranscriptSegment,
    Video,
)
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.storage import Storage

SAFETY_STAGES = ("safety", "deepfake")


def begin(catalog: Catalog, src: SourceRef) -> Video:
    return catalog.register_video(
        NewVideo(src.video_id, src.sha256, src.size_bytes, source_key=src.key)
    )


def start_processing(catalog: Catalog, video_id: str) -> None:
    """Mark the video processing unless it is already live (a re-run keeps it published)."""
    video = catalog.get_video(video_id)
    if video is not None and video.status != "published":
        catalog.set_status(video_id, "processing")


def probed(catalog: Catalog, video_id: str, info: VideoInfo) -> None:
    catalog.record_probe(video_id, info.to_dict(), info.kind, info.duration_seconds)


def _stage_runs(
    video_id: str, stages: dict[str, dict[str, Any]], attempt: str | None, error: str | None = None
) -> list[StageRun]:
    runs = []
    for name, s in stages.items():
        started = datetime.fromisoformat(s["started_at"]) if "started_at" in s else None
        finished = started + timedelta(seconds=s["wall_seconds"]) if started else None
        runs.append(
            StageRun(
                video_id=video_id, stage=name, stage_version=str(s.get("version", "1")),
                options_hash=str(s.get("options_hash", "-")),
                status="failed" if s.get("error") else "succeeded", attempt=attempt,
                started_at=started, finished_at=finished, wall_seconds=s["wall_seconds"],
                cpu_seconds=s["cpu_seconds"], gpu_seconds=s.get("gpu_seconds", 0.0),
                cached=bool(s["cached"]), error=s.get("error") or error,
            )
        )  # fmt: skip
    return runs


def fail(
    catalog: Catalog, video_id: str, status: str, exc: BaseException, stages: dict[str, Any]
) -> None:
    """Record why a run failed. A live video stays published; its last run's error is kept."""
    message = str(exc).splitlines()[0][:2000] if str(exc) else type(exc).__name__
    for run in _stage_runs(video_id, stages, None):
        catalog.record_stage(run)
    video = catalog.get_video(video_id)
    if video is not None and video.status != "published":
        catalog.set_status(video_id, "rejected" if status == "rejected" else "failed", message)


def _json(storage: Storage, key: str) -> Any:
    data = storage.get_bytes(key)
    return json.loads(data) if data is not None else None


def published(
    catalog: Catalog,
    storage: Storage,
    video_id: str,
    encoded: TranscodeResult,
    extras: list[StageOutput],
    stages: dict[str, dict[str, Any]],
) -> None:
    """Record stages and analysis, then flip the published pointer to this attempt."""
    base = f"videos/{video_id}"
    by_name = {e.name: e for e in extras}
    for run in _stage_runs(video_id, stages, encoded.attempt):
        catalog.record_stage(run)

    if (emb := by_name.get("embeddings")) and emb.summary.get("file"):
        rows = _json(storage, f"{base}/{emb.summary['file']}") or {}
        segments = [
            TranscriptSegment(
                idx=i, start_seconds=s["start"], end_seconds=s["end"], text=s["text"],
                language=rows.get("language"), embedding=s["embedding"],
            )
            for i, s in enumerate(rows.get("segments", []))
        ]  # fmt: skip
        catalog.put_segments(video_id, encoded.attempt, segments)
    if det := by_name.get("detections"):
        catalog.put_detections(
            video_id,
            [
                DetectionSummary(
                    label=s["label"], frames=s["frames"], seconds_present=s["seconds_present"],
                    max_confidence=s["max_confidence"], first_seen_seconds=s["first_seen"],
                    last_seen_seconds=s["last_seen"],
                )
                for s in det.summary.get("labels", [])
            ],
        )  # fmt: skip
    verdicts = [
        SafetyVerdict(
            check_name=name, status=out.summary.get("status", "ok"),
            verdict=out.summary.get("verdict"), score=out.summary.get("score"),
            details={k: v for k, v in out.summary.items() if k not in ("frames", "faces")},
        )
        for name in SAFETY_STAGES
        if (out := by_name.get(name)) is not None
    ]  # fmt: skip
    if verdicts:
        catalog.put_safety(video_id, verdicts)
    video = catalog.get_video(video_id)
    if video is None or (
        video.status == "published" and video.published_attempt == encoded.attempt
    ):
        return
    if video.status != "processing":
        catalog.set_status(video_id, "processing")
    renditions = [
        Rendition.of(r) for r in (*encoded.video, *([encoded.audio] if encoded.audio else []))
    ]
    files = [*encoded.files, *(f for e in extras for f in e.files)]
    catalog.publish(video_id, encoded.attempt, renditions, [Asset.of(f) for f in files])
