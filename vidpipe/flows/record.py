"""Every catalog write of process-video, in one place, step by step.

uploaded → processing → playable → published | failed | rejected. A re-run of
a video that is already published changes no row's status; a run that
publishes a new attempt flips the published pointer in one transaction. Each
stage's result is written by the writer its registry entry names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from vidpipe.encoders import fingerprint as fp
from vidpipe.encoders.encode import LadderResult
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.catalog import (
    Asset,
    Catalog,
    DetectionSummary,
    NearDuplicate,
    NewVideo,
    RenditionRow,
    SafetyVerdict,
    StageRun,
    TranscriptSegment,
    Video,
    asset_kind,
)
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report, StoredFile
from vidpipe.infra.storage import Storage
from vidpipe.models.analysis import Embeddings
from vidpipe.models.deepfake import DeepfakeResult
from vidpipe.models.detect import Detections
from vidpipe.models.safety import SafetyResult

if TYPE_CHECKING:
    from vidpipe.flows.stages import Timing


def begin(catalog: Catalog, src: SourceRef) -> Video:
    return catalog.register_video(
        NewVideo(src.video_id, src.sha256, src.size_bytes, source_key=src.key)
    )


def start_processing(catalog: Catalog, video_id: str) -> str:
    """Mark the video processing unless it is already live; returns the status it had."""
    video = catalog.get_video(video_id)
    before = video.status if video is not None else "uploaded"
    if before != "published":
        catalog.set_status(video_id, "processing")
    return before


def probed(catalog: Catalog, video_id: str, info: VideoInfo) -> None:
    catalog.record_probe(video_id, info.to_dict(), info.kind, info.duration_seconds)


def playable(catalog: Catalog, video_id: str) -> None:
    """The EVENT ladder is in storage: the video plays while it encodes."""
    video = catalog.get_video(video_id)
    if video is not None and video.status == "processing":
        catalog.set_status(video_id, "playable")


def stage_runs(
    catalog: Catalog, video_id: str, timings: Mapping[str, Timing], attempt: str | None,
    errors: Mapping[str, str] | None = None,
) -> None:  # fmt: skip
    for t in timings.values():
        error = (errors or {}).get(t.stage)
        catalog.record_stage(
            StageRun(
                video_id=video_id, stage=t.stage, stage_version=str(t.version),
                options_hash=t.options_hash, status="failed" if error else "succeeded",
                attempt=attempt, started_at=t.started_at,
                finished_at=t.started_at + timedelta(seconds=t.wall_seconds),
                wall_seconds=t.wall_seconds, cpu_seconds=t.cpu_seconds, gpu_seconds=0.0,
                cached=t.cached, error=error,
            )
        )  # fmt: skip


def _assets(files: tuple[StoredFile, ...]) -> list[Asset]:
    return [Asset(f.key, asset_kind(f.key), f.sha256, f.bytes) for f in files]


def _row(r: Any) -> RenditionRow:
    return RenditionRow(
        name=r.name, kind=r.kind, playlist=r.playlist, codecs=r.codecs, width=r.width,
        height=r.height, fps=r.fps, target_kbps=r.target_kbps, average_kbps=r.average_kbps,
        peak_kbps=r.peak_kbps, segments=r.segments, duration_seconds=r.duration_seconds,
        bytes=r.bytes,
    )  # fmt: skip


def published(catalog: Catalog, video_id: str, ladder: LadderResult) -> None:
    """Flip the published pointer to this attempt, with its renditions and files."""
    video = catalog.get_video(video_id)
    if video is None or (video.status == "published" and video.published_attempt == ladder.attempt):
        return
    if video.status not in ("processing", "playable"):
        catalog.set_status(video_id, "processing")  # a new attempt of a published video
    catalog.publish(
        video_id, ladder.attempt, [_row(r) for r in ladder.renditions], _assets(ladder.files)
    )


def fail(catalog: Catalog, video_id: str, status: str, exc: BaseException) -> None:
    """Record why a run failed. A live video stays published; its last run's error is kept."""
    message = str(exc).splitlines()[0][:2000] if str(exc) else type(exc).__name__
    video = catalog.get_video(video_id)
    if video is not None and video.status != "published":
        catalog.set_status(video_id, "rejected" if status == "rejected" else "failed", message)


def restore(catalog: Catalog, video_id: str, before: str, exc: BaseException) -> None:
    """A configuration error: the upload is not at fault, so the video gets back the status
    it had before this run, with the reason noted."""
    video = catalog.get_video(video_id)
    if video is None or video.status in ("published", before):
        return
    catalog.set_status(video_id, before, f"configuration error: {str(exc).splitlines()[0]}"[:2000])  # type: ignore[arg-type]


# ---------------------------------------------------------------- per-stage writers


def detections(
    catalog: Catalog, storage: Storage, video_id: str, attempt: str, report: Report[Detections]
) -> None:
    catalog.put_detections(
        video_id,
        [
            DetectionSummary(s.label, s.frames, s.seconds_present, s.max_confidence,
                             s.first_seen, s.last_seen)
            for s in report.result.labels
        ],
    )  # fmt: skip


def _verdict(name: str, result: SafetyResult | DeepfakeResult) -> SafetyVerdict:
    score = result.max_score if isinstance(result, SafetyResult) else result.score
    details = {k: v for k, v in result.to_dict().items() if k not in ("frames", "faces")}
    return SafetyVerdict(name, result.status.status, result.verdict, score, details)


def safety(
    catalog: Catalog, storage: Storage, video_id: str, attempt: str, report: Report[SafetyResult]
) -> None:
    catalog.put_safety(video_id, [_verdict("safety", report.result)])


def deepfake(
    catalog: Catalog, storage: Storage, video_id: str, attempt: str, report: Report[DeepfakeResult]
) -> None:
    catalog.put_safety(video_id, [_verdict("deepfake", report.result)])


def fingerprint(
    catalog: Catalog, storage: Storage, video_id: str, attempt: str, report: Report[fp.Fingerprint]
) -> list[NearDuplicate]:
    """Store the hashes, then find earlier videos that show the same pictures."""
    usable = [f for f in report.result.frames if not f.flat]
    if not usable:
        return []
    catalog.put_fingerprint(video_id, [f.hash for f in usable], [f.t for f in usable])
    found = []
    for other in catalog.near_duplicate_candidates(
        [f.hash for f in usable], exclude_video_id=video_id
    ):
        stored = catalog.get_fingerprint(other)
        if stored is None:
            continue
        pairs = zip(stored.frame_times, stored.hashes, strict=True)
        theirs = fp.Fingerprint(tuple(fp.FrameHash(t, h, False) for t, h in pairs))
        match = fp.match(report.result, theirs)
        if match.is_duplicate:
            found.append(NearDuplicate(other, match.matched, round(match.score, 4),
                                       round(match.offset_seconds, 3)))  # fmt: skip
    return sorted(found, key=lambda d: (-d.overlap, d.video_id))


def embeddings(
    catalog: Catalog, storage: Storage, video_id: str, attempt: str, report: Report[Embeddings]
) -> None:
    data = json.loads(storage.get_bytes(f"videos/{video_id}/{report.file.key}") or b"{}")
    segments = [
        TranscriptSegment(
            idx=i, start_seconds=s["start"], end_seconds=s["end"], text=s["text"],
            language=data.get("language"), embedding=s["embedding"],
        )
        for i, s in enumerate(data.get("segments", []))
    ]  # fmt: skip
    catalog.put_segments(video_id, attempt, segments)


def files(catalog: Catalog, video_id: str, attempt: str, stored: tuple[StoredFile, ...]) -> None:
    catalog.add_assets(video_id, attempt, _assets(stored))
