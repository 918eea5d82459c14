"""Probe: facts from real files, and clear refusals of hostile or broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BUNNY, Media, ffmpeg
from vidpipe.encoders.probe import probe
from vidpipe.infra.errors import InvalidMedia, LimitExceeded, PermanentError
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


def test_container_not_on_allow_list(tmp_path: Path) -> None:
    gif = tmp_path / "anim.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:r=5:d=1", "-f", "gif", str(gif))
    with pytest.raises(InvalidMedia, match="accepted"):
        probe(gif, LIMITS)


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
    with pytest.raises(PermanentError):
        probe(media.empty, LIMITS)
    assert issubclass(InvalidMedia, ValueError)  # callers may catch the builtin too
