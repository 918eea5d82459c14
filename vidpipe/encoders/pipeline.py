"""The ladder stage and the publish stage, as plain functions.

``transcode_to_storage`` runs the one-decode ffmpeg command into a scratch
directory, assembles thumbnails, measures and validates the HLS output, then
uploads it under a fresh attempt prefix ``videos/{id}/{attempt}/``. Nothing
points at that prefix yet. ``publish`` checks every file of the attempt is in
storage, writes ``manifest.json`` and finally ``master.m3u8``: the moment the
master lands, the new attempt is live, whole.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidpipe import __version__
from vidpipe.encoders import hls, thumbnails
from vidpipe.encoders.ladder import LadderPlan
from vidpipe.encoders.probe import VideoInfo
from vidpipe.encoders.runner import run_ffmpeg
from vidpipe.encoders.transcode import (
    OutputLayout,
    TranscodeJob,
    build_transcode_argv,
    prepare_dirs,
)
from vidpipe.infra.errors import PlaylistInvalid
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.ingest import SourceRef, sha256_file
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import Storage


@dataclass(frozen=True)
class RenditionResult:
    name: str
    kind: str  # "video" | "audio"
    playlist: str  # key relative to videos/{id}/
    codecs: str
    width: int
    height: int
    fps: float
    target_kbps: int
    average_kbps: float
    peak_kbps: float
    average_bps: int
    peak_bps: int
    start_pts_90k: int
    segments: int
    duration_seconds: float
    bytes: int


@dataclass(frozen=True)
class StoredFile:
    key: str  # relative to videos/{id}/
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TranscodeResult:
    """A reference to one uploaded, validated, not yet published attempt."""

    video_id: str
    attempt: str
    segment_format: str
    video: tuple[RenditionResult, ...]
    audio: RenditionResult | None
    poster: str | None
    poster_is_blank: bool
    storyboard: thumbnails.Storyboard | None
    files: tuple[StoredFile, ...]
    encode_wall_seconds: float
    encode_cpu_seconds: float
    frames_index: str | None = None  # frames/index.json: sampled frames for vision stages
    frame_count: int = 0
    asr_audio: str | None = None  # 16 kHz mono FLAC for speech recognition


def new_attempt_id() -> str:
    """Sortable and unique: ``20261125T110000Z-1a2b3c``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _rendition(mp: hls.MediaPlaylist, prefix: str, target_kbps: int) -> RenditionResult:
    return RenditionResult(
        name=mp.name,
        kind=mp.kind,
        playlist=f"{prefix}/{mp.playlist}",
        codecs=mp.codecs,
        width=mp.width,
        height=mp.height,
        fps=round(mp.fps, 3),
        target_kbps=target_kbps,
        average_kbps=round(mp.average_bps / 1000, 1),
        peak_kbps=round(mp.peak_bps / 1000, 1),
        average_bps=mp.average_bps,
        peak_bps=mp.peak_bps,
        start_pts_90k=mp.start_pts_90k,
        segments=len(mp.segments),
        duration_seconds=round(mp.duration_seconds, 3),
        bytes=mp.total_bytes,
    )


def encode_attempt(
    source: Path,
    info: VideoInfo,
    plan: LadderPlan,
    settings: Settings,
    attempt_dir: Path,
    on_progress: Callable[[float], None] | None = None,
    byproducts: bool = True,
) -> tuple[list[hls.MediaPlaylist], hls.MediaPlaylist | None, float, float]:
    """Run ffmpeg once into ``attempt_dir``, then measure and validate the HLS it wrote.

    Returns the measured video rungs, the audio rendition, and ffmpeg's wall
    and CPU seconds.
    """
    layout = OutputLayout(attempt_dir)
    job = TranscodeJob(
        source=source,
        container=info.container,
        duration_seconds=info.duration_seconds,
        plan=plan,
        encode=settings.encode,
        thumbnails=settings.thumbnails,
        layout=layout,
        frames=settings.frames,
        byproducts=byproducts,
    )
    prepare_dirs(job)
    expect = [layout.playlist(r.name) for r in plan.video]
    if plan.audio:
        expect.append(layout.playlist(plan.audio.name))
    run = run_ffmpeg(
        build_transcode_argv(ffmpeg_exe(), job),
        timeout_seconds=settings.limits.ffmpeg_timeout_seconds,
        on_progress=on_progress,
        expect=expect,
    )
    video = [hls.measure(attempt_dir, r.name, "video") for r in plan.video]
    audio = hls.measure(attempt_dir, plan.audio.name, "audio") if plan.audio else None
    if info.video is not None and video:
        expected = info.video.duration_seconds or info.duration_seconds
        frame = 1.0 / video[0].fps if video[0].fps else 0.05
    else:
        expected, frame = (info.audio.duration_seconds if info.audio else 0.0), 0.05
    hls.validate_attempt(attempt_dir, video, audio, expected or info.duration_seconds, frame)
    return video, audio, run.wall_seconds, run.cpu_seconds


def transcode_to_storage(
    source: SourceRef,
    info: VideoInfo,
    plan: LadderPlan,
    settings: Settings,
    storage: Storage,
    on_progress: Callable[[float], None] | None = None,
    byproducts: bool = True,
) -> TranscodeResult:
    """Encode, assemble thumbnails, validate, and upload one attempt. Safe to re-run:
    every run writes a fresh attempt prefix and never touches a published one.

    ``byproducts=False`` encodes only the plan's rungs (a rung-level re-encode).
    """
    attempt = new_attempt_id()
    with scratch_dir(settings.work_dir / source.video_id, attempt) as scratch:
        local = source.local_file(storage, scratch)
        out = scratch / "out"
        video, audio, wall, cpu = encode_attempt(
            local, info, plan, settings, out, on_progress, byproducts
        )
        extras = video and byproducts
        poster, blank, storyboard = (
            _thumbnails(out, info, settings) if extras else (None, False, None)
        )
        frame_count = write_frame_index(OutputLayout(out).frames_dir) if extras else 0
        asr = OutputLayout(out).asr_audio
        prefix = attempt
        files = upload_tree(storage, out, f"videos/{source.video_id}", prefix)
        targets = {r.name: r.video_bitrate_kbps for r in plan.video}
        return TranscodeResult(
            video_id=source.video_id,
            attempt=attempt,
            segment_format=settings.encode.segment_format,
            video=tuple(_rendition(v, prefix, targets[v.name]) for v in video),
            audio=_rendition(audio, prefix, plan.audio.bitrate_kbps)
            if audio and plan.audio
            else None,
            poster=f"{prefix}/{poster}" if poster else None,
            poster_is_blank=blank,
            storyboard=storyboard.under(prefix) if storyboard else None,
            files=files,
            encode_wall_seconds=round(wall, 3),
            encode_cpu_seconds=round(cpu, 3),
            frames_index=f"{prefix}/frames/index.json" if frame_count else None,
            frame_count=frame_count,
            asr_audio=f"{prefix}/{asr.relative_to(out).as_posix()}" if asr.is_file() else None,
        )


def write_frame_index(frames_dir: Path) -> int:
    """Write ``index.json`` (``[{"t": seconds, "file": name}]``) for the sampled frames.

    The transcode names each frame by its presentation time in milliseconds.
    """
    frames = sorted(frames_dir.glob("*.jpg"), key=lambda p: int(p.stem))
    index = [{"t": int(p.stem) / 1000, "file": p.name} for p in frames]
    (frames_dir / "index.json").write_text(json.dumps(index))
    return len(index)


def merge_rungs(base: TranscodeResult, partial: TranscodeResult) -> TranscodeResult:
    """``base`` with the rungs of ``partial`` (a rung-level re-encode) swapped in.

    The merged result is named after the new attempt; its master points at the
    new attempt for the swapped rungs and at ``base``'s attempt for the rest.
    Both encodes share segment length and keyframe times, so rungs stay aligned.
    """
    swapped = {r.name: r for r in partial.video}
    return replace(
        base,
        attempt=partial.attempt,
        video=tuple(swapped.get(r.name, r) for r in base.video),
        files=(*base.files, *partial.files),
        encode_wall_seconds=partial.encode_wall_seconds,
        encode_cpu_seconds=partial.encode_cpu_seconds,
    )


def _thumbnails(
    out: Path, info: VideoInfo, settings: Settings
) -> tuple[str, bool, thumbnails.Storyboard]:
    layout = OutputLayout(out)
    t = settings.thumbnails
    candidates = sorted(layout.candidates_dir.glob("*.jpg"))
    tiles = sorted(layout.tiles_dir.glob("*.jpg"))
    choice, good = thumbnails.pick_poster(candidates)
    thumbnails.save_poster(choice, out / "thumbs" / "poster.jpg")
    board = thumbnails.build_storyboard(
        tiles,
        out / "thumbs",
        columns=t.storyboard_columns,
        rows=t.storyboard_rows,
        interval_seconds=t.storyboard_interval_seconds,
        duration_seconds=info.duration_seconds,
    )
    shutil.rmtree(out / "work")
    return "thumbs/poster.jpg", not good, board.under("thumbs")


def upload_tree(storage: Storage, root: Path, base: str, prefix: str) -> tuple[StoredFile, ...]:
    """Upload every file under ``root`` to ``{base}/{prefix}/...``; playlists last."""
    files = sorted(
        (p for p in root.rglob("*") if p.is_file()), key=lambda p: (p.suffix == ".m3u8", str(p))
    )
    stored = []
    for path in files:
        rel = f"{prefix}/{path.relative_to(root).as_posix()}"
        storage.put_file(f"{base}/{rel}", path)
        stored.append(StoredFile(rel, path.stat().st_size, sha256_file(path)))
    return tuple(stored)


@dataclass(frozen=True)
class PublishResult:
    video_id: str
    attempt: str
    master_url: str
    manifest_url: str
    changed: bool  # False when this exact attempt was already published


@dataclass(frozen=True)
class StageOutput:
    """What a stage after the transcode adds to a publish.

    ``summary`` goes into the manifest under ``name``; ``files`` (keys relative
    to ``videos/{id}/``) must exist in storage before the master is written;
    ``subtitles`` become a SUBTITLES group in the master.
    """

    name: str
    summary: dict[str, Any]
    files: tuple[StoredFile, ...] = ()
    subtitles: tuple[hls.SubtitleTrack, ...] = ()


def build_manifest(
    source: SourceRef,
    info: VideoInfo,
    result: TranscodeResult,
    stages: dict[str, dict[str, Any]],
    extras: Sequence[StageOutput] = (),
) -> dict[str, Any]:
    """The manifest: source facts, renditions, thumbnails, every file, stage results and timings.

    ``content_sha256`` covers everything but timings, so publishing the same
    content twice can be recognised and skipped.
    """
    src = info.to_dict() | {
        "sha256": source.sha256,
        "size_bytes": source.size_bytes,
        "key": source.key,
    }
    thumbs: dict[str, Any] | None = None
    if result.poster:
        thumbs = {
            "poster": result.poster,
            "poster_is_blank": result.poster_is_blank,
            "storyboard": asdict(result.storyboard) if result.storyboard else None,
        }
    files = [*result.files, *(f for extra in extras for f in extra.files)]
    body = {
        "video_id": result.video_id,
        "attempt": result.attempt,
        "kind": info.kind,
        "source": src,
        "hls": {
            "master": "master.m3u8",
            "segment_format": result.segment_format,
            "video": [asdict(r) for r in result.video],
            "audio": asdict(result.audio) if result.audio else None,
            "subtitles": [asdict(t) for extra in extras for t in extra.subtitles],
        },
        "thumbnails": thumbs,
        "frames": {"index": result.frames_index, "count": result.frame_count},
        **{extra.name: extra.summary for extra in extras},
        "files": [asdict(f) for f in files],
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {
        "schema": "vidpipe.manifest/1",
        "vidpipe_version": __version__,
        "content_sha256": digest,
        **body,
        "stages": stages,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _missing(storage: Storage, base: str, files: Sequence[StoredFile]) -> list[str]:
    """Keys of ``files`` that are absent from storage or have the wrong size."""
    listed: dict[str, int] = {}
    for top in sorted({f.key.split("/", 1)[0] for f in files}):
        listed |= storage.sizes(f"{base}/{top}")
    return [f.key for f in files if listed.get(f"{base}/{f.key}") != f.bytes]


def publish(
    source: SourceRef,
    info: VideoInfo,
    result: TranscodeResult,
    stages: dict[str, dict[str, Any]],
    storage: Storage,
    extras: Sequence[StageOutput] = (),
) -> PublishResult:
    """Verify every file is in storage, then write manifest.json, and master.m3u8 last.

    Publishing content that is already live writes nothing.
    """
    base = f"videos/{result.video_id}"
    master_key, manifest_key = f"{base}/master.m3u8", f"{base}/manifest.json"

    def outcome(changed: bool) -> PublishResult:
        return PublishResult(
            result.video_id, result.attempt, storage.url(master_key),
            storage.url(manifest_key), changed=changed,
        )  # fmt: skip

    manifest = build_manifest(source, info, result, stages, extras)
    current = storage.get_bytes(manifest_key)
    live = json.loads(current).get("content_sha256") if current is not None else None
    if live == manifest["content_sha256"] and storage.exists(master_key):
        return outcome(changed=False)

    files = [*result.files, *(f for extra in extras for f in extra.files)]
    missing = _missing(storage, base, files)
    if missing:
        raise PlaylistInvalid(
            f"attempt {result.attempt} is incomplete in storage ({len(missing)} files missing, "
            f"e.g. {missing[0]}); re-run to encode a fresh attempt"
        )
    subtitles = [t for extra in extras for t in extra.subtitles]
    master = hls.master_playlist(result.video, result.audio, subtitles=subtitles)
    hls.validate_master(master, {f.key: f.bytes for f in files})
    storage.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode())
    storage.put_bytes(master_key, master.encode())
    return outcome(changed=True)


def stage_timing(wall_seconds: float, cpu_seconds: float, cached: bool) -> dict[str, Any]:
    return {
        "wall_seconds": round(wall_seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "cached": cached,
    }
