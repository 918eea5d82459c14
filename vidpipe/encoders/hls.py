"""HLS after ffmpeg: measure what was written, validate it, write the master.

The master playlist is vidpipe's, not ffmpeg's: BANDWIDTH is the peak segment
bitrate of the video plus the peak of its audio group (RFC 8216 4.3.4.2),
AVERAGE-BANDWIDTH the mean, and CODECS come from the bitstream itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import av
import m3u8

from vidpipe.infra.errors import PlaylistInvalid

AUDIO_GROUP = "aud"
SUBTITLE_GROUP = "subs"


@dataclass(frozen=True)
class Segment:
    uri: str
    duration_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class MediaPlaylist:
    """One measured media playlist (a video rung or the audio rendition)."""

    name: str
    playlist: str  # path relative to the attempt directory
    kind: str  # "video" | "audio"
    codecs: str
    segments: tuple[Segment, ...]
    init_bytes: int
    width: int = 0
    height: int = 0
    fps: float = 0.0
    target_kbps: int = 0
    start_pts_90k: int = 0  # first packet's presentation time, 90 kHz ticks

    @property
    def duration_seconds(self) -> float:
        return sum(s.duration_seconds for s in self.segments)

    @property
    def total_bytes(self) -> int:
        return self.init_bytes + sum(s.size_bytes for s in self.segments)

    @property
    def peak_bps(self) -> int:
        return max(
            (
                round(s.size_bytes * 8 / s.duration_seconds)
                for s in self.segments
                if s.duration_seconds > 0
            ),
            default=0,
        )

    @property
    def average_bps(self) -> int:
        duration = self.duration_seconds
        return round(sum(s.size_bytes for s in self.segments) * 8 / duration) if duration else 0


@dataclass(frozen=True)
class _FirstPacket:
    config: bytes  # codec config (avcC / AudioSpecificConfig), else the packet's bytes
    is_keyframe: bool
    width: int
    height: int
    fps: float
    pts_90k: int


def _first_packet(data: bytes, fmt: str) -> _FirstPacket:
    """Demux (no decode) the first packet of in-memory media."""
    with av.open(io.BytesIO(data), format=fmt, mode="r") as container:
        stream = container.streams[0]
        ctx = stream.codec_context
        extradata = bytes(ctx.extradata or b"")
        for packet in container.demux(stream):
            if packet.size:
                rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", 0)
                return _FirstPacket(
                    extradata or bytes(packet),
                    bool(packet.is_keyframe),
                    int(getattr(ctx, "width", 0) or 0),
                    int(getattr(ctx, "height", 0) or 0),
                    float(rate or 0),
                    round(float(packet.pts * packet.time_base) * 90000)
                    if packet.pts is not None and packet.time_base is not None
                    else 0,
                )
    raise PlaylistInvalid("a segment holds no packets")


def avc_codec_string(config: bytes) -> str:
    """``avc1.PPCCLL`` from an avcC record or an Annex B stream holding an SPS."""
    if config[:1] == b"\x01" and len(config) >= 4:
        profile, compat, level = config[1], config[2], config[3]
    else:
        i = config.find(b"\x00\x00\x01")
        while i != -1 and (config[i + 3] & 0x1F) != 7:
            i = config.find(b"\x00\x00\x01", i + 3)
        if i == -1 or len(config) < i + 7:
            raise PlaylistInvalid("no H.264 SPS found; cannot derive CODECS")
        profile, compat, level = config[i + 4], config[i + 5], config[i + 6]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def aac_codec_string(config: bytes) -> str:
    """``mp4a.40.N`` from an AudioSpecificConfig (N is the audio object type)."""
    if not config:
        return "mp4a.40.2"  # ADTS in TS carries no config; ffmpeg's aac encoder writes LC
    aot = config[0] >> 3
    if aot == 31 and len(config) > 1:
        aot = 32 + (((config[0] & 0x07) << 3) | (config[1] >> 5))
    return f"mp4a.40.{aot}"


def _read_segment(rendition_dir: Path, playlist: m3u8.M3U8, uri: str) -> bytes:
    data = (rendition_dir / uri).read_bytes()
    if playlist.segment_map:
        data = (rendition_dir / playlist.segment_map[0].uri).read_bytes() + data
    return data


def measure(attempt_dir: Path, name: str, kind: str) -> MediaPlaylist:
    """Parse ``hls/{name}/index.m3u8`` under ``attempt_dir`` and measure its segments."""
    rel = PurePosixPath("hls") / name / "index.m3u8"
    path = attempt_dir / rel
    playlist = m3u8.load(str(path))
    rendition_dir = path.parent
    segments = tuple(
        Segment(s.uri, float(s.duration), (rendition_dir / s.uri).stat().st_size)
        for s in playlist.segments
    )
    if not segments:
        raise PlaylistInvalid(f"{rel} lists no segments")
    init_bytes = 0
    fmt = "mpegts"
    if playlist.segment_map:
        init_bytes = (rendition_dir / playlist.segment_map[0].uri).stat().st_size
        fmt = "mp4"
    first = _first_packet(_read_segment(rendition_dir, playlist, segments[0].uri), fmt)
    if kind == "video":
        return MediaPlaylist(
            name,
            str(rel),
            kind,
            avc_codec_string(first.config),
            segments,
            init_bytes,
            width=first.width,
            height=first.height,
            fps=first.fps,
            start_pts_90k=first.pts_90k,
        )
    return MediaPlaylist(
        name,
        str(rel),
        kind,
        aac_codec_string(first.config),
        segments,
        init_bytes,
        start_pts_90k=first.pts_90k,
    )


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_if_failed(self) -> None:
        if self.problems:
            raise PlaylistInvalid("HLS output failed validation: " + "; ".join(self.problems))


def validate_media_playlist(
    attempt_dir: Path, rel: str, report: ValidationReport, check_keyframes: bool
) -> float:
    """Check one media playlist; returns its summed EXTINF, seconds."""
    path = attempt_dir / rel
    try:
        playlist = m3u8.loads(path.read_text(), uri=str(path))
    except (OSError, ValueError) as exc:
        report.check(False, f"{rel} does not parse: {exc}")
        return 0.0
    report.check(playlist.is_endlist, f"{rel} has no EXT-X-ENDLIST")
    report.check(playlist.playlist_type == "vod", f"{rel} is not PLAYLIST-TYPE:VOD")
    target = playlist.target_duration or 0
    uris = [s.uri for s in playlist.segments]
    if playlist.segment_map:
        uris.append(playlist.segment_map[0].uri)
    for uri in uris:
        report.check(_is_relative(uri), f"{rel}: URI {uri!r} is not relative")
        file = path.parent / uri
        report.check(file.is_file() and file.stat().st_size > 0, f"{rel}: {uri} missing or empty")
    fmt = "mp4" if playlist.segment_map else "mpegts"
    for seg in playlist.segments:
        report.check(
            round(seg.duration) <= target,
            f"{rel}: {seg.uri} lasts {seg.duration:.3f} s, over TARGETDURATION {target}",
        )
        if check_keyframes and (path.parent / seg.uri).is_file():
            first = _first_packet(_read_segment(path.parent, playlist, seg.uri), fmt)
            report.check(first.is_keyframe, f"{rel}: {seg.uri} does not start on a keyframe")
    return float(sum(s.duration for s in playlist.segments))


def _is_relative(uri: str) -> bool:
    p = PurePosixPath(uri)
    return "://" not in uri and not p.is_absolute() and ".." not in p.parts


def validate_attempt(
    attempt_dir: Path,
    video: list[MediaPlaylist],
    audio: MediaPlaylist | None,
    expected_seconds: float,
    frame_seconds: float,
) -> None:
    """Validate every media playlist of an attempt; raise ``PlaylistInvalid`` listing problems.

    ``expected_seconds`` is the probed duration of the source's video (or audio)
    stream; each rung must sum to it within ``frame_seconds``.
    """
    report = ValidationReport()
    for rung in video:
        total = validate_media_playlist(attempt_dir, rung.playlist, report, check_keyframes=True)
        report.check(
            abs(total - expected_seconds) <= frame_seconds + 1e-3,
            f"{rung.playlist}: lasts {total:.3f} s, the source {expected_seconds:.3f} s "
            f"(more than one frame apart)",
        )
    counts = {len(r.segments) for r in video}
    report.check(len(counts) <= 1, f"rungs disagree on segment count: {sorted(counts)}")
    if audio is not None:
        total = validate_media_playlist(attempt_dir, audio.playlist, report, check_keyframes=False)
        report.check(
            abs(total - expected_seconds) <= max(frame_seconds, 0.1),
            f"{audio.playlist}: lasts {total:.3f} s, the source {expected_seconds:.3f} s",
        )
    report.raise_if_failed()


def _attr(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"attribute value {value!r} cannot be quoted in a playlist")
    return f'"{value}"'


class Variant(Protocol):
    """What the master needs of a measured rendition (MediaPlaylist or a stage result)."""

    @property
    def playlist(self) -> str: ...
    @property
    def codecs(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def fps(self) -> float: ...
    @property
    def peak_bps(self) -> int: ...
    @property
    def average_bps(self) -> int: ...


@dataclass(frozen=True)
class SubtitleTrack:
    playlist: str  # URI of the WebVTT media playlist, relative to the master
    language: str  # BCP 47, e.g. "en"
    name: str  # shown in the player's menu, e.g. "English (auto)"
    default: bool = True


def master_playlist(
    video: Sequence[Variant],
    audio: Variant | None,
    uri_prefix: str = "",
    subtitles: Sequence[SubtitleTrack] = (),
) -> str:
    """The master playlist text; ``uri_prefix`` leads from the master to the attempt."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    prefix = uri_prefix.rstrip("/") + "/" if uri_prefix else ""
    if audio is not None and video:
        lines.append(
            f"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID={_attr(AUDIO_GROUP)},NAME={_attr('Audio')},"
            f"LANGUAGE={_attr('und')},DEFAULT=YES,AUTOSELECT=YES,"
            f"URI={_attr(prefix + audio.playlist)}"
        )
    for track in subtitles:
        lines.append(
            f"#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID={_attr(SUBTITLE_GROUP)},"
            f"NAME={_attr(track.name)},LANGUAGE={_attr(track.language)},"
            f"DEFAULT={'YES' if track.default else 'NO'},AUTOSELECT=YES,"
            f"URI={_attr(prefix + track.playlist)}"
        )
    for rung in sorted(video, key=lambda r: r.peak_bps, reverse=True):
        codecs = rung.codecs + (f",{audio.codecs}" if audio else "")
        peak = rung.peak_bps + (audio.peak_bps if audio else 0)
        average = rung.average_bps + (audio.average_bps if audio else 0)
        attrs = [
            f"BANDWIDTH={peak}",
            f"AVERAGE-BANDWIDTH={average}",
            f"CODECS={_attr(codecs)}",
            f"RESOLUTION={rung.width}x{rung.height}",
            f"FRAME-RATE={rung.fps:.3f}",
        ]
        if audio is not None:
            attrs.append(f"AUDIO={_attr(AUDIO_GROUP)}")
        if subtitles:
            attrs.append(f"SUBTITLES={_attr(SUBTITLE_GROUP)}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), prefix + rung.playlist]
    if not video and audio is not None:
        attrs = [
            f"BANDWIDTH={audio.peak_bps}",
            f"AVERAGE-BANDWIDTH={audio.average_bps}",
            f"CODECS={_attr(audio.codecs)}",
        ]
        if subtitles:
            attrs.append(f"SUBTITLES={_attr(SUBTITLE_GROUP)}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), prefix + audio.playlist]
    return "\n".join(lines) + "\n"


def validate_master(text: str, exists: dict[str, int]) -> None:
    """Parse a master playlist and check every URI it names is relative and non-empty.

    ``exists`` maps URIs (relative to the master) to their sizes in bytes.
    """
    report = ValidationReport()
    master = m3u8.loads(text)
    report.check(master.is_variant, "master playlist has no variant streams")
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    for uri in uris:
        report.check(_is_relative(uri), f"master: URI {uri!r} is not relative")
        report.check(exists.get(uri, 0) > 0, f"master: {uri} missing or empty")
    for p in master.playlists:
        report.check(p.stream_info.bandwidth > 0, f"master: {p.uri} has no BANDWIDTH")
    report.raise_if_failed()
