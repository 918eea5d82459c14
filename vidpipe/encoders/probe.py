"""Probe and validate an untrusted upload with PyAV, before ffmpeg touches it.

The probe opens the file with demuxer and protocol allow-lists, so a playlist
or concat script disguised as ``.mp4`` never gets to open other files, then
decodes the first frames of the streams the transcode will read, to prove
they are readable. It never seeks: each pass opens the file afresh, so a file
whose index is broken (a seek that fails) is read the way players read it,
front to back.

It judges a file by its streams, not its header: a decoder that stumbles at
the start (a first access unit with no picture, a leading broken GOP) is
skipped past, as players do, and the skip is reported. How long the streams
really run is measured by the transcode's own decode, which is capped at the
duration limit; the header's duration only refuses early what is plainly
over it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidpipe.infra.errors import InvalidMedia, LimitExceeded, UnsupportedCodec
from vidpipe.infra.settings import LimitSettings

# Text formats that make a demuxer open *other* files: refuse on sight.
_REFERENCE_MAGIC = (b"#EXTM3U", b"ffconcat", b"#EXT-X-", b"[playlist]", b"<?xml", b"<smil")
_VFR_TOLERANCE = 0.02  # relative spread of frame intervals tolerated as "constant"
# How far into a stream the probe looks for a first decodable frame.
_MAX_LEADING_PACKETS = 600
_MAX_LEADING_SECONDS = 30.0
# Transfer characteristics of HDR video (PQ, HLG), as FFmpeg numbers them.
_HDR_TRANSFERS = {16: "pq", 18: "hlg"}
# Less than one AAC frame of media cannot become a stream.
MIN_DURATION_SECONDS = 0.025


@dataclass(frozen=True)
class VideoStreamInfo:
    index: int  # the stream's index in the file: what the transcode maps
    codec: str
    width: int  # coded width, pixels
    height: int
    display_width: int  # upright, square-pixel width
    display_height: int
    rotation: int  # degrees the display matrix turns the picture
    fps: float  # average frame rate
    is_vfr: bool
    interlaced: bool  # the first decoded frame is interlaced: deinterlace
    hdr: str | None  # "pq" | "hlg" when the transfer is HDR: tone-map to SDR
    pix_fmt: str | None
    sar: str  # sample aspect ratio "num:den"
    duration_seconds: float  # declared by the stream (or container); 0 when unknown
    skipped_packets: int  # leading packets that failed to decode
    first_frame_seconds: float  # presentation time of the first decodable frame
    leading_gap_seconds: float = 0.0  # how far it comes after the stream's first packet


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    channels: int
    sample_rate_hz: int
    layout: str
    duration_seconds: float  # declared; 0 when unknown
    skipped_packets: int
    first_frame_seconds: float = 0.0  # presentation time of its first decoded samples


@dataclass(frozen=True)
class VideoInfo:
    """What the probe found; small, frozen, safe to pass between tasks."""

    container: str  # the ffmpeg demuxer short name, used to force -f later
    container_long: str
    duration_seconds: float  # declared by the header; 0 when unknown. Not trusted.
    size_bytes: int
    bit_rate_kbps: float
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    @property
    def kind(self) -> str:
        if self.video and self.audio:
            return "audio+video"
        return "video-only" if self.video else "audio-only"

    @property
    def notes(self) -> tuple[str, ...]:
        """What the probe worked around, for the manifest."""
        out = []
        v = self.video
        if v and (v.skipped_packets or v.leading_gap_seconds > 2.0 / max(v.fps, 1.0)):
            out.append(
                f"the first {v.leading_gap_seconds:.3f} s of video did not decode "
                f"({v.skipped_packets} undecodable packets); the ladder starts at the first "
                "decodable frame"
            )
        if self.audio and self.audio.skipped_packets:
            out.append(f"skipped {self.audio.skipped_packets} undecodable audio packets")
        if self.video and self.video.interlaced:
            out.append("interlaced source: deinterlaced")
        if self.video and self.video.hdr:
            out.append(f"HDR ({self.video.hdr}) source: tone-mapped to SDR")
        if self.video and self.video.is_vfr:
            out.append("variable frame rate: every rung is constant frame rate")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind, "notes": list(self.notes)}


def _refuse_reference_formats(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(64)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(stripped.startswith(magic) for magic in _REFERENCE_MAGIC):
        raise InvalidMedia(
            "the upload is a playlist or script that points at other files, not a media file; "
            "upload the video itself (mp4, mov, mkv, webm, ...)"
        )


def probe(path: Path, limits: LimitSettings) -> VideoInfo:
    """Probe ``path`` and enforce ``limits``; raise an ``UploadRejected`` naming the problem."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidMedia("the upload is empty (0 bytes); upload the file again")
    if size > limits.max_file_mb * 1024 * 1024:
        raise LimitExceeded(
            f"the upload is {size / 2**20:.0f} MiB, over the {limits.max_file_mb:.0f} MiB limit"
        )
    _refuse_reference_formats(path)
    with _open(path, limits) as container:
        demuxer = container.format.name.split(",")[0]
        vstreams = _ranked(container, "video", [s for s in container.streams.video
                                                 if not _is_attached_picture(s)])  # fmt: skip
        astreams = _ranked(container, "audio", [s for s in container.streams.audio
                                                 if s.codec_context.channels])  # fmt: skip
        if not vstreams and not astreams:
            raise InvalidMedia("the file has no video or audio stream; upload a video")
        declared = _declared_seconds(container)
        if 0 < declared < MIN_DURATION_SECONDS:
            raise InvalidMedia(
                f"the upload lasts {declared * 1000:.1f} ms, too short to play; "
                "upload a longer video or audio file"
            )
        if declared > limits.max_duration_seconds:
            raise LimitExceeded(
                f"the video lasts {declared:.0f} s, over the "
                f"{limits.max_duration_seconds:.0f} s limit"
            )
        vindex = vstreams[0].index if vstreams else None
        aindexes = [s.index for s in astreams]
        bit_rate = container.bit_rate or (size * 8 / declared if declared else 0)
        long_name = container.format.long_name
    video = _video_info(path, limits, vindex, declared) if vindex is not None else None
    audio = _audio_info(path, limits, aindexes, declared, required=video is None)
    return VideoInfo(
        container=demuxer,
        container_long=long_name,
        duration_seconds=round(declared, 6),
        size_bytes=size,
        bit_rate_kbps=round(bit_rate / 1000, 1),
        video=video,
        audio=audio,
    )


@contextmanager
def _open(path: Path, limits: LimitSettings) -> Iterator[av.container.InputContainer]:
    """The file opened with the allow-lists; a fresh demuxer each time, never seeked."""
    options = {
        "protocol_whitelist": "file",
        "format_whitelist": ",".join(limits.allowed_containers),
    }
    try:
        container = av.open(str(path), options=options)
    except av.FFmpegError as exc:
        raise InvalidMedia(
            f"cannot be read as a video or audio file ({exc.strerror or exc}): it is truncated, "
            "corrupt, or not a format vidpipe accepts (video containers such as MP4, MOV, MKV, "
            "WebM, AVI, MPEG-PS/TS, FLV, 3GP, Ogg, WMV; audio such as WAV, FLAC, MP3, AAC, Opus, "
            "AMR); re-export it as MP4"
        ) from None
    try:
        demuxer = container.format.name.split(",")[0]
        if demuxer not in limits.allowed_containers:
            raise InvalidMedia(f"container {demuxer!r} is not accepted")
        yield container
    finally:
        container.close()


def _ranked(container: av.container.InputContainer, kind: str, streams: list[Any]) -> list[Any]:
    """``streams`` with the one FFmpeg would pick first (``av_find_best_stream``: the
    default one, with the most frames probed), so a cover picture stored as a one-frame
    video track ahead of the real video is not taken for the video."""
    try:
        best = container.streams.best(kind)  # type: ignore[arg-type]
    except (av.FFmpegError, ValueError):
        best = None
    if best is None or best not in streams:
        return streams
    return [best, *(s for s in streams if s is not best)]


def _is_attached_picture(stream: av.VideoStream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _declared_seconds(container: av.container.InputContainer) -> float:
    if container.duration and container.duration > 0:
        return float(container.duration / av.time_base)
    durations = [
        float(s.duration * s.time_base)
        for s in container.streams
        if s.duration and s.time_base is not None
    ]
    return max(durations, default=0.0)


def _stream_seconds(stream: Any) -> float:
    if stream.duration and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 6)
    return 0.0


@dataclass(frozen=True)
class _FirstFrame:
    frame: Any
    skipped_packets: int  # packets before it that failed to decode, or decoded to nothing
    seconds: float  # its presentation time
    lead_seconds: float  # how far after the stream's first packet it comes


def _first_frame(container: av.container.InputContainer, stream: Any) -> _FirstFrame | None:
    """The first frame that decodes, skipping packets that do not, as players do.

    None when nothing decodes within the first packets or seconds of the stream.
    A decoder's own delay (B-frames, AAC priming) is not counted as skipped:
    only packets that fail, or that come before a later first frame's packet.
    """
    failed = 0
    seen = 0
    start: float | None = None
    try:
        for packet in container.demux(stream):
            t = None
            if packet.pts is not None and packet.time_base is not None:
                t = float(packet.pts * packet.time_base)
                start = t if start is None else min(start, t)
                if t - start > _MAX_LEADING_SECONDS:
                    return None
            try:
                frames = packet.decode()
            except av.FFmpegError:
                failed += 1
                frames = []
            seen += 1
            for frame in frames:
                return _first(frame, failed, seen, start)
            if failed > _MAX_LEADING_PACKETS or seen > 4 * _MAX_LEADING_PACKETS:
                return None
        for frame in stream.codec_context.decode(None):  # flush: frames held back
            return _first(frame, failed, seen, start)
    except av.FFmpegError as exc:
        raise InvalidMedia(
            f"the upload is corrupt: its {stream.type} stream cannot be read ({exc}); re-export it"
        ) from None
    return None


def _first(frame: Any, failed: int, seen: int, start: float | None) -> _FirstFrame:
    t = float(frame.time) if frame.time is not None else 0.0
    lead = max(0.0, t - start) if start is not None else 0.0
    return _FirstFrame(frame, failed, t, lead)


def _is_vfr(container: av.container.InputContainer, stream: Any) -> bool:
    """Demux (no decode) up to 240 packets and compare frame intervals."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                pts.append(packet.pts)
            if len(pts) >= 240:
                break
    except av.FFmpegError:
        pass  # judged on what was read; the decode check reports real damage
    pts.sort()
    deltas = [b - a for a, b in itertools.pairwise(pts) if b > a]
    if len(deltas) < 4:
        return False
    deltas.sort()
    p10, median, p90 = (deltas[int(len(deltas) * q)] for q in (0.1, 0.5, 0.9))
    return (p90 - p10) / median > _VFR_TOLERANCE


def _video_info(path: Path, limits: LimitSettings, index: int, declared: float) -> VideoStreamInfo:
    with _open(path, limits) as container:
        stream: Any = container.streams[index]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise InvalidMedia("the video stream has no picture size; the file is damaged")
        if ctx.width * ctx.height > limits.max_pixels:
            raise LimitExceeded(
                f"the picture is {ctx.width}x{ctx.height}, over the {limits.max_pixels} pixel limit"
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if fps > limits.max_fps:
            raise LimitExceeded(
                f"the frame rate is {fps:.1f} fps, over the {limits.max_fps:g} limit"
            )
        is_vfr = _is_vfr(container, stream)
        codec, pix_fmt = ctx.name, ctx.format.name if ctx.format else None
        sar = ctx.sample_aspect_ratio or Fraction(1)
        width, height, stream_seconds = ctx.width, ctx.height, _stream_seconds(stream)
        transfer = _HDR_TRANSFERS.get(int(getattr(ctx, "color_trc", 0) or 0))
    with _open(path, limits) as container:
        stream = container.streams[index]
        stream.thread_type = "AUTO"
        first = _first_frame(container, stream)
        if first is None:
            raise UnsupportedCodec(
                f"the {codec} video stream holds no decodable picture in its first "
                f"{_MAX_LEADING_SECONDS:.0f} s; the file is damaged, or re-export it as H.264"
            )
        if fps <= 0:
            fps = float(stream.average_rate or stream.guessed_rate or 0)
        interlaced = bool(getattr(first.frame, "interlaced_frame", False))
        rotation = int(getattr(first.frame, "rotation", 0) or 0) % 360
        transfer = transfer or _HDR_TRANSFERS.get(int(getattr(first.frame, "color_trc", 0) or 0))
    if fps <= 0:
        raise InvalidMedia("the video stream has no frame rate; re-export it")
    if sar <= 0:
        sar = Fraction(1)
    disp_w, disp_h = width * float(sar), float(height)
    if rotation in (90, 270):
        disp_w, disp_h = disp_h, disp_w
    return VideoStreamInfo(
        index=index,
        codec=codec,
        width=width,
        height=height,
        display_width=round(disp_w),
        display_height=round(disp_h),
        rotation=rotation,
        fps=round(fps, 4),
        is_vfr=is_vfr,
        interlaced=interlaced,
        hdr=transfer,
        pix_fmt=pix_fmt,
        sar=f"{sar.numerator}:{sar.denominator}",
        duration_seconds=stream_seconds or declared,
        skipped_packets=first.skipped_packets,
        first_frame_seconds=round(first.seconds, 6),
        leading_gap_seconds=round(first.lead_seconds, 6),
    )


def _audio_info(
    path: Path, limits: LimitSettings, indexes: list[int], declared: float, required: bool
) -> AudioStreamInfo | None:
    """The first audio stream that decodes. Undecodable audio beside a good video is left out."""
    for index in indexes:
        with _open(path, limits) as container:
            stream: Any = container.streams[index]
            first = _first_frame(container, stream)
            if first is None:
                continue
            ctx = stream.codec_context
            return AudioStreamInfo(
                index=index,
                codec=ctx.name,
                channels=ctx.channels,
                sample_rate_hz=ctx.sample_rate or 48000,
                layout=ctx.layout.name if ctx.layout else f"{ctx.channels}ch",
                duration_seconds=_stream_seconds(stream) or declared,
                skipped_packets=first.skipped_packets,
                first_frame_seconds=round(first.seconds, 6),
            )
    if required:
        raise InvalidMedia("the audio stream holds no decodable audio; re-export it")
    return None
