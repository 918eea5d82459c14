"""The ladder stage: encode one attempt into storage while it plays.

``encode_ladder`` runs the one-decode ffmpeg command into a scratch
directory. While it runs, ``LiveLadder`` uploads every closed segment and
keeps EVENT playlists (and, for a video with no master yet, an EVENT master)
in storage. When ffmpeg is done it measures every rendition, validates the
whole ladder against what the decoder delivered, uploads the VOD playlists
over the EVENT ones, the thumbnails, the sampled frames and the ASR audio,
all under the attempt's own prefix ``videos/{id}/{attempt}/``. The VOD master
is the publish step's job.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from vidpipe.encoders import hls, thumbnails
from vidpipe.encoders.ladder import LadderPlan
from vidpipe.encoders.live import LiveLadder, Poller
from vidpipe.encoders.probe import VideoInfo
from vidpipe.encoders.runner import run_ffmpeg
from vidpipe.encoders.transcode import (
    OutputLayout,
    TranscodeJob,
    build_transcode_argv,
    prepare_dirs,
)
from vidpipe.infra.errors import EncodeError, InvalidMedia
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import StoredFile, upload_tree
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import Storage


@dataclass(frozen=True)
class LadderResult:
    """A reference to one uploaded, validated attempt; published by the publish step."""

    video_id: str
    attempt: str
    segment_format: str
    video: tuple[hls.Rendition, ...]  # top first
    audio: hls.Rendition | None
    duration_seconds: float  # what the decoder delivered
    poster: str | None  # keys relative to videos/{id}/
    poster_is_blank: bool
    storyboard: thumbnails.Storyboard | None
    frames_index: str | None  # frames/index.json: sampled frames for vision stages
    frame_count: int
    asr_audio: str | None  # 16 kHz mono FLAC for speech recognition
    files: tuple[StoredFile, ...]
    encode_wall_seconds: float
    encode_cpu_seconds: float
    notes: tuple[str, ...] = ()  # what the probe and the encode worked around

    @property
    def renditions(self) -> tuple[hls.Rendition, ...]:
        return (*self.video, *((self.audio,) if self.audio else ()))

    @property
    def mpegts_offset_90k(self) -> int | None:
        """Where cue time 0 sits in MPEG-TS time, for captions' X-TIMESTAMP-MAP; None for fMP4.

        MPEG-TS segments start at ffmpeg's 1.4 s muxing offset; fMP4 at zero.
        """
        first = self.audio or (self.video[0] if self.video else None)
        if self.segment_format != "ts" or first is None or first.start_pts_90k == 0:
            return None
        return first.start_pts_90k


def new_attempt_id() -> str:
    """Sortable and unique: ``20261125T110000Z-1a2b3c``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def transcode_job(
    source: Path, info: VideoInfo, plan: LadderPlan, settings: Settings, out: Path,
    *, byproducts: bool = True,
) -> TranscodeJob:  # fmt: skip
    """The ffmpeg job for ``plan``: the probed streams, the read cap, the source's quirks."""
    v, a = info.video, info.audio
    return TranscodeJob(
        source=source,
        container=info.container,
        plan=plan,
        encode=settings.encode,
        thumbnails=settings.thumbnails,
        frames=settings.frames,
        layout=OutputLayout(out),
        video_stream=v.index if v else None,
        audio_stream=info.audio.index if info.audio else None,
        duration_hint_seconds=info.duration_seconds,
        audio_lead_seconds=(v.first_frame_seconds - a.first_frame_seconds) if v and a else 0.0,
        audio_rate_hz=a.sample_rate_hz if a else 48000,
        max_read_seconds=settings.limits.max_duration_seconds + settings.encode.segment_seconds,
        interlaced=bool(v and v.interlaced),
        hdr=bool(v and v.hdr),
        byproducts=byproducts,
    )


def encode_ladder(
    source: SourceRef,
    info: VideoInfo,
    plan: LadderPlan,
    settings: Settings,
    storage: Storage,
    *,
    write_master: bool = False,
    byproducts: bool = True,
    on_progress: Callable[[float], None] | None = None,
) -> LadderResult:
    """Encode ``plan`` into a fresh attempt in storage. Safe to re-run: every run
    writes a fresh attempt prefix and never touches a published one.

    ``write_master`` publishes an EVENT master as soon as every rendition has
    its first segment in storage (for a video that has no master yet).
    ``byproducts=False`` encodes only the plan's rungs (a rung-level re-encode).
    """
    attempt = new_attempt_id()
    base = f"videos/{source.video_id}"
    with scratch_dir(settings.work_dir / source.video_id, attempt) as scratch:
        out = scratch / "out"
        job = transcode_job(
            source.local_file(storage, scratch), info, plan, settings, out, byproducts=byproducts
        )
        prepare_dirs(job)
        e = settings.encode
        live = LiveLadder(storage, base, attempt, job.layout, plan, e.segment_seconds,
                          e.maxrate_factor, write_master)  # fmt: skip
        with Poller(live.poll, settings.pipeline.live_poll_seconds):
            try:
                run = run_ffmpeg(
                    build_transcode_argv(ffmpeg_exe(), job),
                    timeout_seconds=settings.limits.ffmpeg_timeout_seconds,
                    on_progress=on_progress,
                    expect=[job.layout.playlist(n) for n in plan.names],
                )
            except EncodeError as exc:
                raise _blame(exc) from exc
        live.poll()  # what ffmpeg closed last
        video, audio, decoded = _finish_ladder(out, plan, attempt, e.segment_seconds, settings)
        extras = bool(video) and byproducts
        poster, blank, storyboard = (
            _thumbnails(out, settings, decoded) if extras else (None, False, None)
        )
        frame_count = write_frame_index(job.layout.frames_dir) if extras else 0
        has_asr = job.layout.asr_audio.is_file()
        uploaded = live.uploaded
        files = (
            *uploaded,
            *upload_tree(storage, out, base, attempt, skip=[f.key for f in uploaded]),
        )
    return LadderResult(
        video_id=source.video_id,
        attempt=attempt,
        segment_format=e.segment_format,
        video=tuple(video),
        audio=audio,
        duration_seconds=round(decoded, 3),
        poster=f"{attempt}/{poster}" if poster else None,
        poster_is_blank=blank,
        storyboard=storyboard.under(attempt) if storyboard else None,
        frames_index=f"{attempt}/frames/index.json" if frame_count else None,
        frame_count=frame_count,
        asr_audio=f"{attempt}/asr/audio.flac" if has_asr else None,
        files=files,
        encode_wall_seconds=round(run.wall_seconds, 3),
        encode_cpu_seconds=round(run.cpu_seconds, 3),
        notes=info.notes,
    )  # fmt: skip


def _finish_ladder(
    out: Path, plan: LadderPlan, attempt: str, segment_seconds: int, settings: Settings
) -> tuple[list[hls.Rendition], hls.Rendition | None, float]:
    """Measure every rendition, validate the ladder, and turn the playlists into VOD."""
    layout = OutputLayout(out)
    played = {n: hls.read_playlist(layout.playlist(n)) for n in plan.names}

    def key(name: str) -> str:
        return f"{attempt}/hls/{name}/index.m3u8"

    video = [
        hls.measure(layout.rendition_dir(r.name), played[r.name], name=r.name, kind="video",
                    key=key(r.name), target_kbps=r.video_bitrate_kbps, fps=r.fps_float)
        for r in plan.video
    ]  # fmt: skip
    audio = None
    if plan.audio:
        a = plan.audio
        audio = hls.measure(layout.rendition_dir(a.name), played[a.name], name=a.name,
                            kind="audio", key=key(a.name), target_kbps=a.bitrate_kbps)  # fmt: skip
    for name, playlist in played.items():
        layout.playlist(name).write_text(hls.media_playlist(playlist, segment_seconds, ended=True))
    decoded = hls.validate_ladder(
        out, video, audio, limit_seconds=settings.limits.max_duration_seconds,
        root_prefix=f"{attempt}/",
    )  # fmt: skip
    return video, audio, decoded


# What ffmpeg says when the upload itself cannot be decoded (not a fault of our command).
_DAMAGED_INPUT = {
    "exceeds maximum": "most of it does not decode (ffmpeg stopped after too many damaged frames)",
    "Invalid data found when processing input": "its data cannot be decoded",
}


def _blame(exc: EncodeError) -> Exception:
    """An ffmpeg failure caused by the upload's damage is the upload's; any other is ours."""
    for needle, what in _DAMAGED_INPUT.items():
        if needle in exc.stderr_tail and not exc.retryable:
            return InvalidMedia(f"the upload is damaged: {what}; re-export it")
    return exc


def write_frame_index(frames_dir: Path) -> int:
    """Write ``index.json`` (``[{"t": seconds, "file": name}]``) for the sampled frames.

    The transcode names each frame by its presentation time in milliseconds.
    """
    frames = sorted(frames_dir.glob("*.jpg"), key=lambda p: int(p.stem))
    index = [{"t": int(p.stem) / 1000, "file": p.name} for p in frames]
    (frames_dir / "index.json").write_text(json.dumps(index))
    return len(index)


def merge_rungs(base: LadderResult, partial: LadderResult) -> LadderResult:
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
    out: Path, settings: Settings, duration_seconds: float
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
        duration_seconds=duration_seconds,
    )
    shutil.rmtree(out / "work")
    return "thumbs/poster.jpg", not good, board.under("thumbs")
