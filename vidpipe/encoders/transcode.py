"""The ladder's ffmpeg command: one decode, a cascaded split-and-scale, every output.

One ffmpeg process reads the source once and writes every video rung and the
audio rendition through ONE HLS muxer (``-var_stream_map``), so that
``-shortest`` ends them together: the audio is padded with silence when it is
shorter than the video and trimmed when it is longer. The same decode writes
the storyboard tiles, the poster candidates, the frames the vision stages
sample (1 fps plus scene changes, named by their time in ms) and 16 kHz mono
audio for speech recognition. Each rung is scaled from the rung above it (a
cascade), which costs less than scaling every rung from the source.

Reading is capped (``-t``) a little past the duration limit, so a header that
lies about the length cannot make ffmpeg encode for hours. Builders are pure
and return argv lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vidpipe.encoders.ladder import LadderPlan, Rung
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
ASR_SAMPLE_RATE_HZ = 16000
# HDR (PQ or HLG) to SDR BT.709: linearise, tone-map (Hable), back to limited-range 709.
_TONEMAP = (
    "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,"
    "zscale=t=bt709:m=bt709:r=tv"
)
# Deinterlace only frames flagged interlaced; a progressive frame passes untouched.
_DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=interlaced"
_UNKNOWN_DURATION_POSTER_INTERVAL_SECONDS = 10.0
# Demuxers whose timestamps are read as they are (-copyts): ffmpeg's discontinuity
# correction, meant for MPEG-TS clock jumps, misreads an Ogg Vorbis stream that starts
# before zero and shifts the video by minutes. Every stream is rebased in the graph anyway.
_RAW_TIMESTAMPS = frozenset({"ogg"})


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
    plan: LadderPlan
    encode: EncodeSettings
    thumbnails: ThumbnailSettings
    frames: FrameSettings
    layout: OutputLayout
    video_stream: int | None = None  # stream index in the file (cover art is skipped)
    audio_stream: int | None = None
    duration_hint_seconds: float = 0.0  # the header's claim: spaces samples, never trusted
    audio_lead_seconds: float = 0.0  # how long the audio runs before the first video frame
    audio_rate_hz: int = 48000  # the source audio's sample rate
    max_read_seconds: float = 0.0  # stop reading here (a little past the limit); 0: no cap
    interlaced: bool = False
    hdr: bool = False
    byproducts: bool = True  # tiles, poster candidates, vision frames, ASR audio
    live: bool = True  # EVENT playlists that grow; False writes VOD playlists directly


def gop_frames(fps: str, segment_seconds: int) -> int:
    num, den = (int(x) for x in fps.split("/"))
    return max(1, math.ceil(num * segment_seconds / den))


def tile_size(plan: LadderPlan, tile_width: int) -> tuple[int, int]:
    """Storyboard tile size, pixels: ``tile_width`` wide (even), keeping the aspect."""
    lowest = plan.video[-1]
    width = min(tile_width, lowest.width) // 2 * 2
    height = max(2, round(width * lowest.height / lowest.width / 2) * 2)
    return width, height


def _video_input(job: TranscodeJob) -> str:
    return f"[0:{job.video_stream}]" if job.video_stream is not None else "[0:v:0]"


def _audio_input(job: TranscodeJob) -> str:
    return f"[0:{job.audio_stream}]" if job.audio_stream is not None else "[0:a:0]"


def build_filtergraph(job: TranscodeJob) -> tuple[str, list[str]]:
    """The -filter_complex graph and the labels of its outputs, in output order.

    Labels: ``v0..vN`` video rungs (top first), ``tiles``, ``poster``,
    ``frames``, then ``a`` (the audio rendition) and ``asr``.
    """
    plan = job.plan
    chains: list[str] = []
    labels: list[str] = []
    rungs = plan.video
    prev = _video_input(job)
    for i, rung in enumerate(rungs):
        branches = [f"[v{i}]"]
        if i < len(rungs) - 1:
            branches.append(f"[next{i}]")  # the rung below is scaled from this one
        elif job.byproducts:
            branches.append("[tilesrc]")  # storyboard tiles from the smallest rung
        if i == 0 and job.byproducts:
            branches.append("[postersrc]")  # poster candidates at full rung size
            branches.append("[framesrc]")  # frames for the vision stages
        head = _head_filters(job, rung) if i == 0 else ""
        split = f"split={len(branches)}" if len(branches) > 1 else "null"
        chains.append(
            f"{prev}{head}scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,"
            f"format=pix_fmts=yuv420p:color_ranges=tv,{split}{''.join(branches)}"
        )
        labels.append(f"v{i}")
        prev = f"[next{i}]"
    if rungs and job.byproducts:
        t = job.thumbnails
        tile_w, tile_h = tile_size(plan, t.storyboard_tile_width)
        chains.append(
            f"[tilesrc]fps=1/{t.storyboard_interval_seconds:g}:start_time=0:eof_action=pass,"
            f"scale={tile_w}:{tile_h}[tiles]"
        )
        chains.append(f"[postersrc]{_every(poster_interval_seconds(job))},settb=1/1000[poster]")
        chains.append(f"[framesrc]{frame_sampler(job)}[frames]")
        labels += ["tiles", "poster", "frames"]
    if plan.audio is not None:
        # The video sets the clock: the audio is cut (or padded with silence) to start with
        # the first video frame, and holes in it are filled with silence.
        sync = "asetpts=PTS-STARTPTS,aresample=async=1"
        if rungs:
            sync += f":first_pts={round(job.audio_lead_seconds * job.audio_rate_hz)}"
            sync += ",asetpts=PTS-STARTPTS"
        if rungs:
            asr = ",asplit=2[asrc][asr]" if job.byproducts else "[asrc]"
            chains.append(f"{_audio_input(job)}{sync}{asr}")
            chains.append("[asrc]apad[a]")  # -shortest trims the padding at the video's end
        else:
            asr = ",asplit=2[a][asr]" if job.byproducts else "[a]"
            chains.append(f"{_audio_input(job)}{sync}{asr}")
        labels.append("a")
        if job.byproducts:
            labels.append("asr")
    return ";".join(chains), labels


def _head_filters(job: TranscodeJob, top: Rung) -> str:
    """The first decodable frame becomes time 0; deinterlace and tone-map once, at the
    source; then the constant output rate."""
    head = ""
    if job.interlaced:
        head += _DEINTERLACE + ","
    if job.hdr:
        head += _TONEMAP + ","
    return "setpts=PTS-STARTPTS," + head + f"fps={top.fps},"


def _every(interval_seconds: float) -> str:
    """Keep the first frame and then one per ``interval_seconds``: never zero frames."""
    return f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{interval_seconds:.6f})'"


def poster_interval_seconds(job: TranscodeJob) -> float:
    if job.duration_hint_seconds > 0:
        return job.duration_hint_seconds / job.thumbnails.poster_candidates
    return _UNKNOWN_DURATION_POSTER_INTERVAL_SECONDS


def frame_interval_seconds(duration_seconds: float, frames: FrameSettings) -> float:
    """Seconds between regular samples: ``1/fps``, stretched so a long video stays under the cap."""
    return max(1.0 / frames.fps, duration_seconds / frames.max_frames)


def frame_sampler(job: TranscodeJob) -> str:
    """Scale to fit ``width`` and keep one frame per interval, plus scene changes.

    Scene-change picks need 0.25 s since the last pick, so a strobe cannot
    flood the sample; timestamps are rebased to milliseconds for file names.
    """
    f = job.frames
    interval = frame_interval_seconds(job.duration_hint_seconds, f)
    pick = f"isnan(prev_selected_t)+gte(t-prev_selected_t\\,{interval:.6f})"
    if f.scene_threshold > 0:
        pick += f"+gt(scene\\,{f.scene_threshold:g})*gte(t-prev_selected_t\\,0.25)"
    return (
        f"scale={f.width}:{f.width}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
        f"select='{pick}',settb=1/1000"
    )


def _video_codec_args(job: TranscodeJob) -> list[str]:
    """Options every rung shares: codec, preset, closed GOP of one segment, forced keyframes."""
    enc = job.encode
    gop = gop_frames(job.plan.video[0].fps, enc.segment_seconds)
    common = [
        "-g", str(gop), "-keyint_min", str(gop), "-flags", "+cgop",
        "-force_key_frames", f"expr:gte(t,n_forced*{enc.segment_seconds})",
        "-pix_fmt", "yuv420p", "-color_range", "tv",
    ]  # fmt: skip
    if enc.encoder == "nvenc":
        codec = [
            "-c:v", "h264_nvenc", "-preset", _NVENC_PRESETS.get(enc.preset, enc.preset),
            "-tune", "hq", "-rc", "vbr", "-profile:v", "high", "-forced-idr", "1",
            "-strict_gop", "1", "-no-scenecut", "1",
        ]  # fmt: skip
    else:
        codec = ["-c:v", "libx264", "-preset", enc.preset, "-profile:v", "high"]
        codec += ["-sc_threshold", "0"]
        if enc.threads:
            # x264 threads per rung. 1 keeps x264 bit-exact from run to run, so a re-encode
            # publishes the bytes an uninterrupted run would have: its threaded rate control
            # (VBV) is not, with frame threads or sliced ones (EncodeSettings.threads).
            codec += ["-threads", str(enc.threads)]
    return codec + common


def _rung_rate_args(job: TranscodeJob, i: int, rung: Rung) -> list[str]:
    enc = job.encode
    kbps = rung.video_bitrate_kbps
    return [
        f"-b:v:{i}", f"{kbps}k",
        f"-maxrate:v:{i}", f"{round(kbps * enc.maxrate_factor)}k",
        f"-bufsize:v:{i}", f"{round(kbps * enc.bufsize_factor)}k",
    ]  # fmt: skip


def _hls_output(job: TranscodeJob, labels: list[str]) -> list[str]:
    """One HLS muxer for every rendition, so that ``-shortest`` ends them together."""
    plan = job.plan
    args: list[str] = []
    streams: list[str] = []
    for i, rung in enumerate(plan.video):
        args += ["-map", f"[{labels[i]}]"]
        streams.append(f"v:{i},name:{rung.name}")
    if plan.video:
        args += _video_codec_args(job)
        for i, rung in enumerate(plan.video):
            args += _rung_rate_args(job, i, rung)
    if plan.audio is not None:
        a = plan.audio
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", f"{a.bitrate_kbps}k"]
        args += ["-ac", str(a.channels), "-ar", str(a.sample_rate_hz)]
        streams.append(f"a:0,name:{a.name}")
    if plan.video and plan.audio is not None:
        args.append("-shortest")
    fmp4 = job.encode.segment_format == "fmp4"
    root = job.layout.root / "hls"
    args += [
        "-f", "hls",
        "-hls_time", str(job.encode.segment_seconds),
        "-hls_playlist_type", "event" if job.live else "vod",
        "-hls_flags", "independent_segments+temp_file",
        "-hls_segment_type", "fmp4" if fmp4 else "mpegts",
        "-hls_segment_filename", str(root / "%v" / ("seg_%05d.m4s" if fmp4 else "seg_%05d.ts")),
    ]  # fmt: skip
    if fmp4:
        args += ["-hls_fmp4_init_filename", "init.mp4", "-video_track_timescale", "90000"]
    return [*args, "-var_stream_map", " ".join(streams), str(root / "%v" / "index.m3u8")]


def _image_output(label: str, pattern: Path, quality: int, *extra: str) -> list[str]:
    return [
        "-map", f"[{label}]", "-an", "-c:v", "mjpeg", "-q:v", str(quality),
        "-fps_mode", "passthrough", *extra, "-f", "image2", str(pattern),
    ]  # fmt: skip


def build_transcode_argv(ffmpeg: str, job: TranscodeJob) -> list[str]:
    """The whole command: input, filter graph, the HLS output and one output per by-product."""
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "warning", "-nostats",
        "-progress", "pipe:1", "-protocol_whitelist", "file,pipe", "-f", job.container,
    ]  # fmt: skip
    if job.max_read_seconds > 0:
        argv += ["-t", f"{job.max_read_seconds:g}"]
    if job.container in _RAW_TIMESTAMPS:
        argv.append("-copyts")
    argv += ["-i", str(job.source), "-map_metadata", "-1", "-map_chapters", "-1"]
    graph, labels = build_filtergraph(job)
    argv += ["-filter_complex", graph]
    argv += _hls_output(job, labels)
    if job.plan.video and job.byproducts:
        t = job.thumbnails
        argv += _image_output("tiles", job.layout.tiles_dir / "tile_%05d.jpg", 5)
        argv += _image_output(
            "poster", job.layout.candidates_dir / "cand_%03d.jpg", 2,
            "-frames:v", str(t.poster_candidates),
        )  # fmt: skip
        cap = str(round(job.frames.max_frames * 1.5))  # regular picks plus scene changes
        argv += _image_output(
            "frames", job.layout.frames_dir / "%010d.jpg", 3,
            "-enc_time_base", "1/1000", "-frame_pts", "1", "-frames:v", cap,
        )  # fmt: skip
    if job.plan.audio is not None and job.byproducts:
        argv += [
            "-map", "[asr]", "-ac", "1", "-ar", str(ASR_SAMPLE_RATE_HZ), "-c:a", "flac",
            "-sample_fmt", "s16", "-f", "flac", str(job.layout.asr_audio),
        ]  # fmt: skip
    return argv


def prepare_dirs(job: TranscodeJob) -> None:
    """ffmpeg's hls and image2 muxers do not create directories."""
    for name in job.plan.names:
        job.layout.rendition_dir(name).mkdir(parents=True, exist_ok=True)
    if job.plan.video and job.byproducts:
        job.layout.tiles_dir.mkdir(parents=True, exist_ok=True)
        job.layout.candidates_dir.mkdir(parents=True, exist_ok=True)
        job.layout.frames_dir.mkdir(parents=True, exist_ok=True)
    if job.plan.audio and job.byproducts:
        job.layout.asr_audio.parent.mkdir(parents=True, exist_ok=True)
