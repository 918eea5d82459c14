"""HLS after ffmpeg: measure what was written, write media and master playlists, validate.

Every playlist a viewer reads is vidpipe's, written with the ``m3u8`` library:
an EVENT media playlist that grows while the ladder encodes (RFC 8216
4.3.3.5), the VOD one when it is done, and the master. BANDWIDTH is the peak
segment bitrate of the video plus the peak of its audio group (RFC 8216
4.3.4.2), AVERAGE-BANDWIDTH the mean, and CODECS come from the bitstream.

The validator compares renditions with what the decoder delivered (the top
rung's length), never with a header it has no reason to trust; a failure is
vidpipe's own bug (``OutputInvalid``), not the upload's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import av
import m3u8
from m3u8 import model

from vidpipe.infra.errors import LimitExceeded, OutputInvalid

AUDIO_GROUP = "aud"
SUBTITLE_GROUP = "subs"
AAC_FRAME_SECONDS = 1024 / 48000  # one AAC-LC frame at the ladder's 48 kHz


@dataclass(frozen=True)
class Segment:
    uri: str  # relative to its playlist
    duration_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class Playlist:
    """A media playlist as ffmpeg wrote it: its init section and closed segments."""

    init: str | None  # fMP4 init segment URI; None for MPEG-TS
    segments: tuple[Segment, ...]

    @property
    def duration_seconds(self) -> float:
        return sum(s.duration_seconds for s in self.segments)


@dataclass(frozen=True)
class Rendition:
    """One rendition of the ladder (a video rung or the audio group), as published.

    ``peak_bps`` and ``average_bps`` are measured once the rendition is whole,
    and the rung's targets while it is still encoding (``live``).
    """

    name: str  # avc_720p30_5000k, aac_128k_2ch
    kind: str  # "video" | "audio"
    playlist: str  # key relative to videos/{id}/
    codecs: str  # RFC 6381, from the bitstream
    width: int
    height: int
    fps: float
    target_kbps: int
    peak_bps: int
    average_bps: int
    segments: int
    duration_seconds: float
    bytes: int
    start_pts_90k: int  # first packet's presentation time, 90 kHz ticks
    live: bool = False

    @property
    def average_kbps(self) -> float:
        return round(self.average_bps / 1000, 1)

    @property
    def peak_kbps(self) -> float:
        return round(self.peak_bps / 1000, 1)


@dataclass(frozen=True)
class SubtitleTrack:
    playlist: str  # URI of the WebVTT media playlist, relative to the master
    language: str  # BCP 47, e.g. "en"
    name: str  # shown in the player's menu, e.g. "English (auto)"
    default: bool = True


# ---------------------------------------------------------------- reading


def read_playlist(path: Path) -> Playlist:
    """What ffmpeg's playlist at ``path`` lists, with each segment's size on disk."""
    parsed = m3u8.loads(path.read_text(), uri=str(path))
    segments = tuple(
        Segment(s.uri, float(s.duration), (path.parent / s.uri).stat().st_size)
        for s in parsed.segments
    )
    init = parsed.segment_map[0].uri if parsed.segment_map else None
    return Playlist(init, segments)


@dataclass(frozen=True)
class _FirstPacket:
    config: bytes  # codec config (avcC / AudioSpecificConfig), else the packet's bytes
    is_keyframe: bool
    width: int
    height: int
    pts_90k: int


def _first_packet(data: bytes, fmt: str) -> _FirstPacket:
    """Demux (no decode) the first packet of in-memory media."""
    with av.open(io.BytesIO(data), format=fmt, mode="r") as container:
        stream = container.streams[0]
        ctx = stream.codec_context
        extradata = bytes(ctx.extradata or b"")
        for packet in container.demux(stream):
            if packet.size:
                return _FirstPacket(
                    extradata or bytes(packet),
                    bool(packet.is_keyframe),
                    int(getattr(ctx, "width", 0) or 0),
                    int(getattr(ctx, "height", 0) or 0),
                    round(float(packet.pts * packet.time_base) * 90000)
                    if packet.pts is not None and packet.time_base is not None
                    else 0,
                )
    raise OutputInvalid("a segment holds no packets")


def _segment_bytes(directory: Path, playlist: Playlist, uri: str) -> bytes:
    data = (directory / uri).read_bytes()
    if playlist.init:
        data = (directory / playlist.init).read_bytes() + data
    return data


def first_packet(directory: Path, playlist: Playlist) -> _FirstPacket:
    """The first packet of the playlist's first segment."""
    fmt = "mp4" if playlist.init else "mpegts"
    return _first_packet(_segment_bytes(directory, playlist, playlist.segments[0].uri), fmt)


def avc_codec_string(config: bytes) -> str:
    """``avc1.PPCCLL`` from an avcC record or an Annex B stream holding an SPS."""
    if config[:1] == b"\x01" and len(config) >= 4:
        profile, compat, level = config[1], config[2], config[3]
    else:
        i = config.find(b"\x00\x00\x01")
        while i != -1 and (config[i + 3] & 0x1F) != 7:
            i = config.find(b"\x00\x00\x01", i + 3)
        if i == -1 or len(config) < i + 7:
            raise OutputInvalid("no H.264 SPS found; cannot derive CODECS")
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


def _peak_bps(segments: Sequence[Segment]) -> int:
    rates = (round(s.size_bytes * 8 / s.duration_seconds) for s in segments if s.duration_seconds)
    return max(rates, default=0)


def _average_bps(segments: Sequence[Segment]) -> int:
    duration = sum(s.duration_seconds for s in segments)
    return round(sum(s.size_bytes for s in segments) * 8 / duration) if duration else 0


def measure(
    directory: Path,
    playlist: Playlist,
    *,
    name: str,
    kind: str,
    key: str,
    target_kbps: int,
    fps: float = 0.0,
) -> Rendition:
    """The published facts of one whole rendition whose files are in ``directory``.

    ``key`` is where its playlist lives, relative to ``videos/{id}/``.
    """
    if not playlist.segments:
        raise OutputInvalid(f"{key} lists no segments")
    first = first_packet(directory, playlist)
    video = kind == "video"
    init_bytes = (directory / playlist.init).stat().st_size if playlist.init else 0
    return Rendition(
        name=name,
        kind=kind,
        playlist=key,
        codecs=avc_codec_string(first.config) if video else aac_codec_string(first.config),
        width=first.width if video else 0,
        height=first.height if video else 0,
        fps=round(fps, 3) if video else 0.0,
        target_kbps=target_kbps,
        peak_bps=_peak_bps(playlist.segments),
        average_bps=_average_bps(playlist.segments),
        segments=len(playlist.segments),
        duration_seconds=round(playlist.duration_seconds, 3),
        bytes=init_bytes + sum(s.size_bytes for s in playlist.segments),
        start_pts_90k=first.pts_90k,
    )


def planned(rendition: Rendition, peak_bps: int, average_bps: int) -> Rendition:
    """``rendition`` while it is still encoding: the rung's targets stand for measurements."""
    return replace(rendition, peak_bps=peak_bps, average_bps=average_bps, live=True)


# ---------------------------------------------------------------- writing


def media_playlist(playlist: Playlist, segment_seconds: int, *, ended: bool) -> str:
    """A media playlist naming ``playlist``'s segments: EVENT while it grows, VOD once ended."""
    out = m3u8.M3U8()
    out.version = 7 if playlist.init else 3
    out.target_duration = max(
        [segment_seconds, *(math.ceil(round(s.duration_seconds, 3)) for s in playlist.segments)]
    )
    out.media_sequence = 0
    out.playlist_type = "vod" if ended else "event"
    out.is_independent_segments = True
    out.is_endlist = ended
    init = {"uri": playlist.init} if playlist.init else None
    for s in playlist.segments:
        out.add_segment(
            model.Segment(uri=s.uri, duration=round(s.duration_seconds, 6), init_section=init)
        )
    return out.dumps()


def _attr(value: str) -> str:
    if '"' in value or "\n" in value or "\r" in value:
        raise ValueError(f"attribute value {value!r} cannot be quoted in a playlist")
    return value


def master_playlist(
    video: Sequence[Rendition],
    audio: Rendition | None,
    uri_prefix: str = "",
    subtitles: Sequence[SubtitleTrack] = (),
) -> str:
    """The master playlist text; ``uri_prefix`` leads from the master to the renditions."""
    prefix = uri_prefix.rstrip("/") + "/" if uri_prefix else ""
    master = m3u8.M3U8()
    master.version = 6
    master.is_independent_segments = True
    groups: dict[str, str] = {}
    if audio is not None and video:
        master.add_media(
            model.Media(
                uri=prefix + audio.playlist, type="AUDIO", group_id=AUDIO_GROUP, name="Audio",
                language="und", default="YES", autoselect="YES",
            )
        )  # fmt: skip
        groups["audio"] = AUDIO_GROUP
    for track in subtitles:
        master.add_media(
            model.Media(
                uri=prefix + track.playlist, type="SUBTITLES", group_id=SUBTITLE_GROUP,
                name=_attr(track.name), language=_attr(track.language),
                default="YES" if track.default else "NO", autoselect="YES",
            )
        )  # fmt: skip
    if subtitles:
        groups["subtitles"] = SUBTITLE_GROUP
    extra = audio if (audio is not None and video) else None
    variants = sorted(video, key=lambda r: r.peak_bps, reverse=True) or ([audio] if audio else [])
    for rung in variants:
        info: dict[str, Any] = {
            "bandwidth": rung.peak_bps + (extra.peak_bps if extra else 0),
            "average_bandwidth": rung.average_bps + (extra.average_bps if extra else 0),
            "codecs": _attr(rung.codecs + (f",{extra.codecs}" if extra else "")),
            **groups,
        }
        if rung.kind == "video":
            info |= {"resolution": f"{rung.width}x{rung.height}", "frame_rate": round(rung.fps, 3)}
        master.add_playlist(
            model.Playlist(
                uri=_attr(prefix + rung.playlist),
                stream_info=info,
                media=master.media,
                base_uri=None,
            )
        )
    return master.dumps()


# ---------------------------------------------------------------- validation


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_if_failed(self) -> None:
        if self.problems:
            raise OutputInvalid("HLS output failed validation: " + "; ".join(self.problems))


def validate_media_playlist(
    root: Path, rel: str, report: ValidationReport, check_keyframes: bool, *, ended: bool = True
) -> float:
    """Check one media playlist under ``root``; returns its summed EXTINF, seconds."""
    path = root / rel
    try:
        playlist = m3u8.loads(path.read_text(), uri=str(path))
    except (OSError, ValueError) as exc:
        report.check(False, f"{rel} does not parse: {exc}")
        return 0.0
    if ended:
        report.check(playlist.is_endlist, f"{rel} has no EXT-X-ENDLIST")
        report.check(playlist.playlist_type == "vod", f"{rel} is not PLAYLIST-TYPE:VOD")
    else:
        report.check(playlist.playlist_type == "event", f"{rel} is not PLAYLIST-TYPE:EVENT")
    report.check(bool(playlist.segments), f"{rel} lists no segments")
    target = playlist.target_duration or 0
    uris = [s.uri for s in playlist.segments]
    if playlist.segment_map:
        uris.append(playlist.segment_map[0].uri)
    for uri in uris:
        report.check(_is_relative(uri), f"{rel}: URI {uri!r} is not relative")
        file = path.parent / uri
        report.check(file.is_file() and file.stat().st_size > 0, f"{rel}: {uri} missing or empty")
    init = playlist.segment_map[0].uri if playlist.segment_map else None
    for seg in playlist.segments:
        report.check(
            round(seg.duration) <= target,
            f"{rel}: {seg.uri} lasts {seg.duration:.3f} s, over TARGETDURATION {target}",
        )
        if check_keyframes and (path.parent / seg.uri).is_file():
            parsed = Playlist(init, (Segment(seg.uri, float(seg.duration), 0),))
            first = first_packet(path.parent, parsed)
            report.check(first.is_keyframe, f"{rel}: {seg.uri} does not start on a keyframe")
    return float(sum(s.duration for s in playlist.segments))


def _is_relative(uri: str) -> bool:
    p = PurePosixPath(uri)
    return "://" not in uri and not p.is_absolute() and ".." not in p.parts


def audio_tolerance_seconds(video_fps: float) -> float:
    """How far the audio may end from the video: two AAC frames and one video frame."""
    return 2 * AAC_FRAME_SECONDS + (1.0 / video_fps if video_fps else 0.0)


def validate_ladder(
    root: Path,
    video: Sequence[Rendition],
    audio: Rendition | None,
    *,
    limit_seconds: float,
    root_prefix: str = "",
) -> float:
    """Validate every media playlist of a whole ladder; returns the decoded length, seconds.

    The decoded length is what the decoder delivered: the top rung's (the
    audio's for audio-only input). Every rung must match it within one frame,
    the audio within ``audio_tolerance_seconds``. ``OutputInvalid`` lists the
    problems; ``LimitExceeded`` when the streams ran past ``limit_seconds``
    although the header promised less. Playlist keys are relative to
    ``root``, less ``root_prefix``.
    """
    report = ValidationReport()

    def rel(r: Rendition) -> str:
        return r.playlist.removeprefix(root_prefix)

    totals = {
        r.name: validate_media_playlist(root, rel(r), report, check_keyframes=True) for r in video
    }
    audio_total = (
        validate_media_playlist(root, rel(audio), report, check_keyframes=False) if audio else 0.0
    )
    decoded = totals[video[0].name] if video else audio_total
    if decoded > limit_seconds:
        raise LimitExceeded(
            f"the streams run past the {limit_seconds:.0f} s duration limit although the "
            "file's header says they are shorter; upload a shorter video"
        )
    for r in video[1:]:
        frame = 1.0 / r.fps if r.fps else 0.05
        report.check(
            abs(totals[r.name] - decoded) <= frame + 1e-3,
            f"{r.playlist} lasts {totals[r.name]:.3f} s, the top rung {decoded:.3f} s "
            f"(tolerance: one frame, {frame:.3f} s)",
        )
    counts = {r.segments for r in video}
    report.check(len(counts) <= 1, f"rungs disagree on segment count: {sorted(counts)}")
    if audio is not None and video:
        tolerance = audio_tolerance_seconds(video[0].fps)
        report.check(
            abs(audio_total - decoded) <= tolerance + 1e-3,
            f"{audio.playlist} lasts {audio_total:.3f} s, the video {decoded:.3f} s "
            f"(tolerance: two AAC frames and one video frame, {tolerance:.3f} s)",
        )
    report.check(decoded > 0, "the ladder holds no media")
    report.raise_if_failed()
    return decoded


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
