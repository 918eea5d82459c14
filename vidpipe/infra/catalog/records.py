"""The catalog's records: what a row of each table holds, and the video's life cycle.

A video's status follows ``TRANSITIONS`` (checked in code and by a trigger in
the database): uploaded → processing → playable (an EVENT ladder plays while
it encodes) → published (the whole VOD ladder), or failed (our fault, or a
resource) or rejected (the upload's fault). A configuration error sends it
back to the status it had. ``published_attempt`` is what viewers get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2

VideoStatus = Literal["uploaded", "processing", "playable", "published", "failed", "rejected"]
VIDEO_STATUSES: tuple[str, ...] = get_args(VideoStatus)
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "uploaded": frozenset({"processing"}),
    # A configuration error leaves the upload where it was: back to uploaded.
    "processing": frozenset({"playable", "published", "failed", "rejected", "uploaded"}),
    "playable": frozenset({"processing", "published", "failed", "rejected", "uploaded"}),
    # Retry, or reprocess with new options; the old attempt stays live meanwhile.
    "failed": frozenset({"processing"}),
    "rejected": frozenset({"processing"}),
    "published": frozenset({"processing"}),
}
StageStatus = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True)
class NewVideo:
    """An ingested source, before anything else is known."""

    video_id: str
    source_sha256: str
    size_bytes: int
    source_key: str | None = None  # storage key of the original: sources/{sha256}


@dataclass(frozen=True)
class Video:
    id: str
    source_sha256: str
    size_bytes: int
    source_key: str | None
    kind: str | None  # "audio+video" | "video-only" | "audio-only"; None until probed
    duration_seconds: float | None
    probe: dict[str, Any] | None  # VideoInfo.to_dict()
    status: str
    error: str | None
    published_attempt: str | None  # what viewers get; None until the first publish
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RenditionRow:
    """A published rendition as the catalog keeps it."""

    name: str  # avc_720p30_5000k
    kind: str  # "video" | "audio"
    playlist: str  # key relative to videos/{id}/
    codecs: str
    width: int
    height: int
    fps: float
    target_kbps: int
    average_kbps: float
    peak_kbps: float
    segments: int
    duration_seconds: float
    bytes: int


@dataclass(frozen=True)
class Asset:
    key: str  # relative to videos/{id}/, e.g. "{attempt}/thumbs/poster.jpg"
    kind: str  # see asset_kind()
    sha256: str
    bytes: int


def asset_kind(key: str) -> str:
    """A coarse kind from a storage key: playlist, segment, init, poster, storyboard,
    frame, captions, audio, manifest or other."""
    name = key.rsplit("/", 1)[-1]
    parts = key.split("/")
    if name == "manifest.json":
        return "manifest"
    if name.endswith(".m3u8"):
        return "playlist"
    if name.startswith("init") and name.endswith(".mp4"):
        return "init"
    if name.endswith((".m4s", ".ts")):
        return "segment"
    if "frames" in parts:
        return "frame"
    if name.startswith("poster"):
        return "poster"
    if "thumbs" in parts:
        return "storyboard"
    if name.endswith((".vtt", ".srt")):
        return "captions"
    if name.endswith((".flac", ".wav", ".m4a")):
        return "audio"
    return "other"


@dataclass(frozen=True)
class StageRun:
    """One stage of one video under one cache key (stage, version, options)."""

    video_id: str
    stage: str
    stage_version: str
    options_hash: str
    status: StageStatus
    attempt: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    cached: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TranscriptSegment:
    idx: int
    start_seconds: float
    end_seconds: float
    text: str
    language: str | None = None
    embedding: Sequence[float] | None = None  # EMBEDDING_DIM floats, ideally unit length


@dataclass(frozen=True)
class DetectionSummary:
    label: str
    frames: int  # sampled frames showing the label
    seconds_present: float
    max_confidence: float  # 0..1
    first_seen_seconds: float
    last_seen_seconds: float


@dataclass(frozen=True)
class SeenLabel:
    """A detection summary of a published video, as search reads it."""

    video_id: str
    label: str
    seconds_present: float
    max_confidence: float
    first_seen_seconds: float


@dataclass(frozen=True)
class SafetyVerdict:
    check_name: str  # "safety", "deepfake"
    status: Literal["ok", "unavailable", "error"]  # did the check run (models.vision.Status)
    verdict: str | None  # the check's own word: "ok", "flagged", "no_faces"; None if it did not run
    score: float | None = None  # 0..1
    details: Mapping[str, Any] = field(default_factory=dict)  # the check's to_dict()


@dataclass(frozen=True)
class StoredFingerprint:
    hashes: tuple[int, ...]  # unsigned 64-bit, as encoders.fingerprint computes them
    frame_times: tuple[float, ...]  # seconds


@dataclass(frozen=True)
class PublishOutcome:
    video_id: str
    attempt: str
    previous_attempt: str | None
    changed: bool  # False when this attempt was already the published one


@dataclass(frozen=True)
class SearchHit:
    video_id: str
    start_seconds: float
    end_seconds: float
    text: str  # the segment's text, cut to snippet_chars
    score: float  # 1 - cosine distance: 1 is identical, 0 unrelated


@dataclass(frozen=True)
class NearDuplicate:
    video_id: str
    matched_frames: int  # query frames matched along the best time offset
    overlap: float  # matched_frames / frames of the shorter fingerprint
    offset_seconds: float  # candidate time - query time at the best alignment


@dataclass(frozen=True)
class VideoDetails:
    """Everything ``vidpipe show`` prints."""

    video: Video
    renditions: tuple[RenditionRow, ...]  # of the published attempt
    assets: int  # files in the published attempt
    stages: tuple[StageRun, ...]
    safety: tuple[SafetyVerdict, ...]
    labels: tuple[DetectionSummary, ...]  # most present first
