"""The ladder's ffmpeg command: one decode, a cascaded split-and-scale, every output.

One ffmpeg process reads the source once and writes every video rung, the
audio rendition, the storyboard tiles, the poster candidates, the frames the
vision stages sample (1 fps plus scene changes, named by their time in ms)
and 16 kHz mono audio for speech recognition. Each rung is
scaled from the rung above it (a cascade), which costs less than scaling every
rung from the full-size source. Builders are pure and return argv lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vidpipe.encoders.ladder import LadderPlan, Rendition
from vidpipe.infra.settings import EncodeSettings, FrameSettings, ThumbnailSettings

# NVENC has no x264 presets; map them onto its p1 (fastest) .. p7 (slowest).
_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
    "veryslow": "p7",
    "placebo": "p7",
}


@dataclass(frozen=True)
class OutputLayout:
    """Where one attempt's ffmpeg outputs go, relative to the attempt directory."""

    root: Path

    def rendition_dir(self, name: str) -> Path:
        return self.root / "hls" / name

    def playlist(self, name: str) -> Path:
        return self.rendition_dir(name) / "index.m3u8"

    @property
    def tiles_dir(self) -> Path:
        return self.root / "work" / "tiles"

    @property
    def candidates_dir(self) -> Path:
        return self.root / "work" / "poster"

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    @property
    def asr_audio(self) -> Path:
        return self.root / "asr" / "audio.flac"


@dataclass(frozen=True)
class TranscodeJob:
    source: Path
    container: str  # demuxer the probe found; forced with -f
    duration_seconds: float
    plan: LadderPlan
    encode: EncodeSettings
    thumbnails: ThumbnailSettings
    layout: OutputLayout
    frames: FrameSettings
    byproducts: bool = True  # tiles, poster candidates, vision frames, ASR audio


ASR_SAMPLE_RATE_HZ = 16000


def gop_frames(fps: str, segment_seconds: int) -> int:
    num, den = (int(x) for x in fps.split("/"))
    return max(1, math.ceil(num * segment_seconds / den))


def tile_size(plan: LadderPlan, tile_width: int) -> tuple[int, int]:
    """Storyboard tile size, pixels: ``tile_width`` wide (even), keeping the aspect."""
    lowest = plan.video[-1]
    width = min(tile_width, lowest.width) // 2 * 2
    height = max(2, round(width * lowest.height / lowest.width / 2) * 2)
    return width, height


def _hls_muxer(job: TranscodeJob, name: str) -> list[str]:
    out = job.layout.rendition_dir(name)
    fmp4 = job.encode.segment_format == "fmp4"
    seg = out / ("seg_%05d.m4s" if fmp4 else "seg_%05d.ts")
    args = [
        "-f",
        "hls",
        "-hls_time",
        str(job.encode.segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments",
        "-hls_segment_type",
        "fmp4" if fmp4 else "mpegts",
        "-hls_segment_filename",
        str(seg),
    ]
    if fmp4:
        args += ["-hls_fmp4_init_filename", "init.mp4"]
    return [*args, str(job.layout.playlist(name))]


def _video_codec_args(job: TranscodeJob, rung: Rendition) -> list[str]:
    enc = job.encode
    kbps = rung.video_bitrate_kbps
    gop = gop_frames(rung.fps, enc.segment_seconds)
    common = [
        "-b:v",
        f"{kbps}k",
        "-maxrate",
        f"{round(kbps * enc.maxrate_factor)}k",
        "-bufsize",
        f"{round(kbps * enc.bufsize_factor)}k",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-flags",
        "+cgop",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{enc.segment_seconds})",
        "-pix_fmt",
        "yuv420p",
        "-color_range",
        "tv",
    ]
    if enc.encoder == "nvenc":
        codec = [
            "-c:v",
            "h264_nvenc",
            "-preset",
            _NVENC_PRESETS.get(enc.preset, enc.preset),
            "-tune",
            "hq",
            "-rc",
            "vbr",
            "-profile:v",
            "high",
            "-forced-idr",
            "1",
            "-strict_gop",
            "1",
            "-no-scenecut",
            "1",
        ]
    else:
        codec = [
            "-c:v",
            "libx264",
            "-preset",
            enc.preset,
            "-profile:v",
            "high",
            "-sc_threshold",
            "0",
        ]
    if enc.threads:
        codec += ["-threads", str(enc.threads)]
    return codec + common


def build_filtergraph(job: TranscodeJob) -> tuple[str, list[str]]:
    """The -filter_complex graph and the labels of its outputs, in output order.

    Labels: ``v0..vN`` video rungs (top first), ``tiles``, ``poster``.
    """
    plan = job.plan
    rungs = plan.video
    fps = rungs[0].fps
    thumbs = job.thumbnails
    chains = []
    labels = []
    prev = "[0:v:0]"
    for i, rung in enumerate(rungs):
        branches = [f"[v{i}]"]
        if i < len(rungs) - 1:
            branches.append(f"[next{i}]")  # the rung below is scaled from this one
        elif job.byproducts:
            branches.append("[tilesrc]")  # storyboard tiles from the smallest rung
        if i == 0 and job.byproducts:
            branches.append("[postersrc]")  # poster candidates at full rung size
            branches.append("[framesrc]")  # frames for the vision stages
        head = f"fps={fps}," if i == 0 else ""
        chains.append(
            f"{prev}{head}scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,"
            f"format=pix_fmts=yuv420p:color_ranges=tv,split={len(branches)}{''.join(branches)}"
        )
        labels.append(f"v{i}")
        prev = f"[next{i}]"
    if not job.byproducts:
        return ";".join(c.replace("split=1", "null") for c in chains), labels
    tile_w, tile_h = tile_size(plan, thumbs.storyboard_tile_width)
    chains.append(
        f"[tilesrc]fps=1/{thumbs.storyboard_interval_seconds:g},scale={tile_w}:{tile_h}[tiles]"
    )
    poster_rate = thumbs.poster_candidates / max(job.duration_seconds, 1e-3)
    chains.append(f"[postersrc]fps={poster_rate:.6f}[poster]")
    chains.append(f"[framesrc]{frame_sampler(job)}[frames]")
    return ";".join(chains), [*labels, "tiles", "poster", "frames"]


def frame_interval_seconds(duration_seconds: float, frames: FrameSettings) -> float:
    """Seconds between regular samples: ``1/fps``, stretched so a long video stays under the cap."""
    return max(1.0 / frames.fps, duration_seconds / frames.max_frames)


def frame_sampler(job: TranscodeJob) -> str:
    """Scale to fit ``width`` and keep one frame per interval, plus scene changes.

    Scene-change picks need 0.25 s since the last pick, so a strobe cannot
    flood the sample; timestamps are rebased to milliseconds for file names.
    """
    f = job.frames
    interval = frame_interval_seconds(job.duration_seconds, f)
    pick = f"isnan(prev_selected_t)+gte(t-prev_selected_t\\,{interval:.6f})"
    if f.scene_threshold > 0:
        pick += f"+gt(scene\\,{f.scene_threshold:g})*gte(t-prev_selected_t\\,0.25)"
    return (
        f"scale={f.width}:{f.width}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
        f"select='{pick}',settb=1/1000"
    )


def _image_output(label: str, pattern: Path, quality: int, *extra: str) -> list[str]:
    return [
        "-map", f"[{label}]", "-an", "-c:v", "mjpeg", "-q:v", str(quality),
        "-fps_mode", "passthrough", *extra, "-f", "image2", str(pattern),
    ]  # fmt: skip


def build_transcode_argv(ffmpeg: str, job: TranscodeJob) -> list[str]:
    """The whole command: input, filter graph, one output per rung and one per by-product."""
    argv = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "warning",
        "-nostats",
        "-progress",
        "pipe:1",
        "-protocol_whitelist",
        "file,pipe",
        "-f",
        job.container,
        "-i",
        str(job.source),
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
    ]
    if job.plan.video:
        graph, labels = build_filtergraph(job)
        argv += ["-filter_complex", graph]
        for i, rung in enumerate(job.plan.video):
            argv += ["-map", f"[{labels[i]}]", "-an", "-sn", "-dn"]
            argv += _video_codec_args(job, rung)
            argv += ["-video_track_timescale", "90000", *_hls_muxer(job, rung.name)]
    if job.plan.video and job.byproducts:
        argv += _image_output("tiles", job.layout.tiles_dir / "tile_%05d.jpg", 5)
        argv += _image_output("poster", job.layout.candidates_dir / "cand_%03d.jpg", 2)
        cap = str(round(job.frames.max_frames * 1.5))  # regular picks plus scene changes
        argv += _image_output(
            "frames", job.layout.frames_dir / "%010d.jpg", 3,
            "-enc_time_base", "1/1000", "-frame_pts", "1", "-frames:v", cap,
        )  # fmt: skip
    if job.plan.audio is not None:
        a = job.plan.audio
        argv += [
            "-map",
            "0:a:0",
            "-vn",
            "-sn",
            "-dn",
            "-c:a",
            "aac",
            "-b:a",
            f"{a.bitrate_kbps}k",
            "-ac",
            str(a.channels),
            "-ar",
            str(a.sample_rate_hz),
            *_hls_muxer(job, a.name),
        ]
    if job.plan.audio is not None and job.byproducts:
        argv += [
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(ASR_SAMPLE_RATE_HZ),
            "-c:a", "flac", "-f", "flac", str(job.layout.asr_audio),
        ]  # fmt: skip
    return argv


def prepare_dirs(job: TranscodeJob) -> None:
    """ffmpeg's hls and image2 muxers do not create directories."""
    names = [r.name for r in job.plan.video]
    if job.plan.audio:
        names.append(job.plan.audio.name)
    for name in names:
        job.layout.rendition_dir(name).mkdir(parents=True, exist_ok=True)
    if job.plan.video and job.byproducts:
        job.layout.tiles_dir.mkdir(parents=True, exist_ok=True)
        job.layout.candidates_dir.mkdir(parents=True, exist_ok=True)
        job.layout.frames_dir.mkdir(parents=True, exist_ok=True)
    if job.plan.audio and job.byproducts:
        job.layout.asr_audio.parent.mkdir(parents=True, exist_ok=True)
