"""Probe: facts from real files, and clear refusals of hostile or broken ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from tests.conftest import BUNNY, Media, ffmpeg
from vidpipe.encoders.probe import probe
from vidpipe.infra.errors import (
    InvalidMedia,
    LimitExceeded,
    PermanentError,
    StorageError,
    UploadRejected,
    is_retryable,
)
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.settings import LimitSettings

LIMITS = LimitSettings()


def test_bunny_facts() -> None:
    info = probe(BUNNY, LIMITS)
    assert info.container == "mov" and info.kind == "audio+video"
    assert info.duration_seconds == pytest.approx(5.312, abs=0.01)
    assert info.video is not None and info.audio is not None
    assert (info.video.width, info.video.height, info.video.fps) == (1280, 720, 25.0)
    assert info.audio.channels == 6 and not info.video.is_vfr


def test_rotation_and_vfr(media: Media) -> None:
    rotated = probe(media.rotated, LIMITS)
    assert rotated.video is not None and rotated.video.rotation in (90, 270)
    assert (rotated.video.display_width, rotated.video.display_height) == (360, 640)
    vfr = probe(media.vfr, LIMITS)
    assert vfr.video is not None and vfr.video.is_vfr


@pytest.mark.parametrize(
    ("clip", "error", "message"),
    [
        ("empty", InvalidMedia, "empty"),
        ("hls_as_mp4", InvalidMedia, "playlist"),
        ("concat_as_mp4", InvalidMedia, "playlist"),
        ("truncated", InvalidMedia, "truncated"),
        ("corrupt", InvalidMedia, "corrupt"),
    ],
)
def test_refusals(media: Media, clip: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        probe(getattr(media, clip), LIMITS)


def test_hls_playlist_is_refused_even_without_magic_at_offset_zero(tmp_path: Path) -> None:
    # A BOM and blank lines before #EXTM3U still read as a playlist to ffmpeg.
    path = tmp_path / "x.mp4"
    path.write_bytes(b"\xef\xbb\xbf\n\n#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    with pytest.raises(InvalidMedia, match="playlist"):
        probe(path, LIMITS)


def test_images_and_image_sequences_are_refused(tmp_path: Path) -> None:
    png = tmp_path / "still.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-frames:v", "1", "-f", "image2", str(png))
    with pytest.raises(InvalidMedia, match="not a format vidpipe accepts"):
        probe(png, LIMITS)


@pytest.mark.parametrize(
    ("fmt", "suffix", "codecs", "demuxer"),
    [
        ("vob", "mpg", ("mpeg2video", "mp2"), "mpeg"),  # a DVD/VCD rip: MPEG program stream
        ("mpegts", "m2ts", ("mpeg2video", "ac3"), "mpegts"),
        ("avi", "avi", ("mpeg4", "ac3"), "avi"),  # the DivX era
        ("flv", "flv", ("flv", "mp3"), "flv"),
        ("3gp", "3gp", ("h263", "aac"), "mov"),
        ("asf", "wmv", ("wmv2", "wmav2"), "asf"),
        ("ogg", "ogv", ("libtheora", "libvorbis"), "ogg"),
        ("webm", "webm", ("libvpx-vp9", "libopus"), "matroska"),
        ("gif", "gif", ("gif", None), "gif"),
    ],
)
def test_containers_people_have_are_accepted(
    tmp_path: Path, fmt: str, suffix: str, codecs: tuple[str, str | None], demuxer: str
) -> None:
    path = tmp_path / f"clip.{suffix}"
    size = "176x144" if fmt == "3gp" else "320x240"
    args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=1"]
    if codecs[1]:
        args += ["-f", "lavfi", "-i", "sine=d=1:sample_rate=48000", "-c:a", codecs[1]]
        args += ["-ar", "8000", "-ac", "1"] if fmt == "3gp" else []
    args += ["-c:v", codecs[0], "-f", fmt, str(path)]
    if fmt == "3gp":
        args[args.index("-c:a") + 1] = "aac"
    ffmpeg(*args)
    info = probe(path, LIMITS)
    assert info.container == demuxer and info.video is not None
    assert (info.audio is not None) == bool(codecs[1])


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_cover_art_is_not_the_video(tmp_path: Path, media: Media, suffix: str) -> None:
    # Matroska keeps the picture as an ordinary one-frame video track ahead of the video;
    # MP4 flags it as attached_pic and lists it last.
    cover = tmp_path / "cover.jpg"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x64", "-frames:v", "1", str(cover))
    path = tmp_path / f"with-cover.{suffix}"
    ffmpeg(
        "-i", str(cover), "-i", str(media.portrait), "-map", "0", "-map", "1:v", "-map", "1:a",
        "-c", "copy", "-disposition:v:0", "attached_pic", str(path),
    )  # fmt: skip
    info = probe(path, LIMITS)
    assert info.video is not None and info.video.index == (1 if suffix == "mkv" else 0)
    assert (info.video.width, info.video.height) == (720, 1280)


def test_leading_packets_that_do_not_decode_are_skipped(tmp_path: Path, media: Media) -> None:
    # An H.264 stream cut just after its first keyframe: players skip to the next one.
    ts = tmp_path / "whole.ts"
    ffmpeg("-i", str(media.clip_1080p), "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
           "-an", "-f", "mpegts", str(ts))  # fmt: skip
    data = ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[188 * 400 :])
    info = probe(cut, LIMITS)
    assert info.video is not None and info.video.leading_gap_seconds > 0.1
    assert any("did not decode" in n for n in info.notes)


def test_a_media_error_is_never_retried_even_as_an_oserror(tmp_path: Path) -> None:
    # A seek that fails with EPERM (a Matroska file without cues): PyAV raises
    # av.error.PermissionError, an OSError; retrying reads the same bytes again.
    mkv = tmp_path / "nocues.mkv"
    with mkv.open("wb") as fh:
        subprocess.run(
            [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=d=2",
             "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", "-"],
            stdout=fh, check=True,
        )  # fmt: skip
    with av.open(str(mkv)) as container, pytest.raises(OSError) as failed:
        container.seek(10**9, backward=False)
    assert isinstance(failed.value, av.FFmpegError)
    assert not is_retryable(failed.value)
    assert is_retryable(StorageError("S3 timed out")) and is_retryable(ConnectionResetError())
    assert probe(mkv, LIMITS).video is not None  # the probe never seeks: the file is fine


def test_no_streams(tmp_path: Path) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    mkv = tmp_path / "subs-only.mkv"
    ffmpeg("-i", str(srt), "-c:s", "srt", str(mkv))
    with pytest.raises(InvalidMedia, match="no video or audio stream"):
        probe(mkv, LIMITS)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (LimitSettings(max_duration_seconds=2), "over the 2 s limit"),
        (LimitSettings(max_pixels=640 * 360), "pixel limit"),
        (LimitSettings(max_fps=24), "fps, over the 24 limit"),
        (LimitSettings(max_file_mb=0.5), "MiB limit"),
    ],
)
def test_limits(limits: LimitSettings, message: str) -> None:
    with pytest.raises(LimitExceeded, match=message):
        probe(BUNNY, limits)


def test_every_refusal_is_permanent(media: Media) -> None:
    with pytest.raises(UploadRejected) as refused:
        probe(media.empty, LIMITS)
    assert isinstance(refused.value, PermanentError) and not is_retryable(refused.value)
    assert issubclass(InvalidMedia, ValueError)  # callers may catch the builtin too
