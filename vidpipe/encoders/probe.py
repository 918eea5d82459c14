"""Probe and validate an untrusted upload with PyAV, before ffmpeg touches it.

The probe opens the file with demuxer and protocol allow-lists, so a playlist
or concat script disguised as ``.mp4`` never gets to open other files, then
decodes a few frames to prove the streams are readable.
"""

from __future__ import annotations

import itertools
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


@dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int  # coded width, pixels
    height: int
    display_width: int  # upright, square-pixel width
    display_height: int
    rotation: int  # degrees the display matrix turns the picture
    fps: float  # average frame rate
    is_vfr: bool
    pix_fmt: str | None
    sar: str  # sample aspect ratio "num:den"
    duration_seconds: float  # of this stream; the container's when the stream has none


@dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    channels: int
    sample_rate_hz: int
    layout: str
    duration_seconds: float


@dataclass(frozen=True)
class VideoInfo:
    """What the probe found; small, frozen, safe to pass between tasks."""

    container: str  # the ffmpeg demuxer short name, used to force -f later
    container_long: str
    duration_seconds: float
    size_bytes: int
    bit_rate_kbps: float
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    @property
    def kind(self) -> str:
        if self.video and self.audio:
            return "audio+video"
        return "video-only" if self.video else "audio-only"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind}


def _refuse_reference_formats(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(64)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(stripped.startswith(magic) for magic in _REFERENCE_MAGIC):
        raise InvalidMedia(
            "the upload is a playlist or script that points at other files, not a media file; "
            "upload the video itself (mp4, mov, mkv, webm, ...)"
        )


def _is_vfr(container: av.container.InputContainer, stream: av.VideoStream) -> bool:
    """Demux (no decode) up to 240 packets and compare frame intervals."""
    pts = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            pts.append(packet.pts)
        if len(pts) >= 240:
            break
    pts.sort()
    deltas = [b - a for a, b in itertools.pairwise(pts) if b > a]
    if len(deltas) < 4:
        return False
    deltas.sort()
    p10, median, p90 = (deltas[int(len(deltas) * q)] for q in (0.1, 0.5, 0.9))
    return (p90 - p10) / median > _VFR_TOLERANCE


def _first_frame(container: av.container.InputContainer, **streams: int) -> Any:
    try:
        for frame in container.decode(**streams):
            return frame
    except av.FFmpegError as exc:
        raise InvalidMedia(
            f"the upload is corrupt: decoding failed ({exc}); re-export it"
        ) from None
    return None


def probe(path: Path, limits: LimitSettings) -> VideoInfo:
    """Probe ``path`` and enforce ``limits``; raise a ``PermanentError`` naming the problem."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidMedia("the upload is empty (0 bytes); upload the file again")
    if size > limits.max_file_mb * 1024 * 1024:
        raise LimitExceeded(
            f"the upload is {size / 2**20:.0f} MiB, over the {limits.max_file_mb:.0f} MiB limit"
        )
    _refuse_reference_formats(path)

    options = {
        "protocol_whitelist": "file",
        "format_whitelist": ",".join(limits.allowed_containers),
    }
    try:
        container = av.open(str(path), options=options)
    except av.FFmpegError as exc:
        raise InvalidMedia(
            f"cannot be read as a video or audio file ({exc.strerror or exc}): it is truncated, "
            f"corrupt or in a container that is not accepted "
            f"({', '.join(limits.allowed_containers)}); re-export it as MP4"
        ) from None
    with container:
        demuxer = container.format.name.split(",")[0]
        if demuxer not in limits.allowed_containers:
            raise InvalidMedia(f"container {demuxer!r} is not accepted")
        vstreams = [s for s in container.streams.video if not _is_attached_picture(s)]
        astreams = list(container.streams.audio)
        if not vstreams and not astreams:
            raise InvalidMedia("the file has no video or audio stream; upload a video")

        duration = _duration_seconds(container, vstreams[:1] + astreams[:1])
        if duration <= 0:
            raise InvalidMedia("the file has no measurable duration; it may be truncated")
        if duration > limits.max_duration_seconds:
            raise LimitExceeded(
                f"the video lasts {duration:.0f} s, over the "
                f"{limits.max_duration_seconds:.0f} s limit"
            )

        video = _video_info(container, vstreams[0], limits, duration) if vstreams else None
        audio = None
        if astreams:
            a = astreams[0]
            container.seek(0)
            if _first_frame(container, audio=0) is None:
                raise InvalidMedia("the audio stream holds no decodable audio; re-export it")
            ctx = a.codec_context
            audio = AudioStreamInfo(
                codec=ctx.name,
                channels=ctx.channels,
                sample_rate_hz=ctx.sample_rate,
                layout=ctx.layout.name if ctx.layout else f"{ctx.channels}ch",
                duration_seconds=_stream_seconds(a) or duration,
            )
        bit_rate = (container.bit_rate or size * 8 / duration) / 1000
        return VideoInfo(
            container=demuxer,
            container_long=container.format.long_name,
            duration_seconds=round(duration, 6),
            size_bytes=size,
            bit_rate_kbps=round(bit_rate, 1),
            video=video,
            audio=audio,
        )


def _is_attached_picture(stream: av.VideoStream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _duration_seconds(container: av.container.InputContainer, streams: list[Any]) -> float:
    if container.duration:
        return float(container.duration / av.time_base)
    durations = [
        float(s.duration * s.time_base) for s in streams if s.duration and s.time_base is not None
    ]
    return max(durations, default=0.0)


def _stream_seconds(stream: Any) -> float:
    if stream.duration and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 6)
    return 0.0


def _video_info(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    limits: LimitSettings,
    container_seconds: float,
) -> VideoStreamInfo:
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
        raise LimitExceeded(f"the frame rate is {fps:.1f} fps, over the {limits.max_fps:g} limit")
    is_vfr = _is_vfr(container, stream)
    container.seek(0)
    frame = _first_frame(container, video=0)
    if frame is None:
        raise UnsupportedCodec(
            f"the {ctx.name} video stream holds no decodable picture; re-export it as H.264"
        )
    if fps <= 0:
        raise InvalidMedia("the video stream has no frame rate; re-export it")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    sar = ctx.sample_aspect_ratio or Fraction(1)
    if sar <= 0:
        sar = Fraction(1)
    disp_w, disp_h = ctx.width * float(sar), float(ctx.height)
    if rotation in (90, 270):
        disp_w, disp_h = disp_h, disp_w
    return VideoStreamInfo(
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        display_width=round(disp_w),
        display_height=round(disp_h),
        rotation=rotation,
        fps=round(fps, 4),
        is_vfr=is_vfr,
        pix_fmt=ctx.format.name if ctx.format else None,
        sar=f"{sar.numerator}:{sar.denominator}",
        duration_seconds=_stream_seconds(stream) or container_seconds,
    )
