"""Ladder planning, table-driven: never upscale, short side rules, even sizes."""

from __future__ import annotations

import pytest

from vidpipe.encoders.ladder import output_fps, plan_ladder
from vidpipe.encoders.probe import AudioStreamInfo, VideoInfo, VideoStreamInfo
from vidpipe.infra.ladders import load_ladder

LADDER = load_ladder("default")
STEREO = AudioStreamInfo(1, "aac", 2, 48000, "stereo", 10.0, skipped_packets=0)


def info(w: int, h: int, rotation: int = 0, fps: float = 30.0, sar: float = 1.0) -> VideoInfo:
    dw, dh = (w * sar, h) if rotation % 180 == 0 else (h, w * sar)
    video = VideoStreamInfo(
        index=0, codec="h264", width=w, height=h, display_width=round(dw),
        display_height=round(dh), rotation=rotation, fps=fps, is_vfr=False, interlaced=False,
        hdr=None, pix_fmt="yuv420p", sar="1:1", duration_seconds=10.0, skipped_packets=0,
        first_frame_seconds=0.0,
    )  # fmt: skip
    return VideoInfo("mov", "QuickTime / MOV", 10.0, 1000, 800.0, video, STEREO)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (info(3840, 2160), ["1920x1080", "1280x720", "854x480", "640x360", "426x240"]),
        (info(1920, 1080), ["1920x1080", "1280x720", "854x480", "640x360", "426x240"]),
        (info(1280, 720), ["1280x720", "854x480", "640x360", "426x240"]),
        (info(1366, 768), ["1280x720", "854x480", "640x360", "426x240"]),
        (info(1080, 1920), ["1080x1920", "720x1280", "480x854", "360x640", "240x426"]),
        (info(1920, 1080, rotation=90), ["1080x1920", "720x1280", "480x854", "360x640", "240x426"]),
        (info(640, 465), ["496x360", "330x240"]),
        (info(84, 33), ["84x32"]),  # below the lowest rung: one rung at its own even size
        (info(720, 576, fps=25, sar=16 / 15), ["640x480", "480x360", "320x240"]),
    ],
    ids=["4k", "1080p", "720p", "1366x768", "portrait", "rotated", "640x465", "84x33", "pal-sar"],
)
def test_plan_sizes(source: VideoInfo, expected: list[str]) -> None:
    plan = plan_ladder(source, LADDER, fps_cap=60)
    assert [f"{r.width}x{r.height}" for r in plan.video] == expected
    assert source.video is not None
    for r in plan.video:
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.width <= source.video.display_width and r.height <= source.video.display_height


def test_names_say_what_they_are() -> None:
    plan = plan_ladder(info(1280, 720), LADDER, fps_cap=60)
    assert [r.name for r in plan.video] == [
        "avc_720p30_5000k",
        "avc_480p30_2500k",
        "avc_360p30_1000k",
        "avc_240p30_500k",
    ]
    assert plan.audio is not None and plan.audio.name == "aac_128k_2ch"


def test_tiny_source_bitrate_scaled_down() -> None:
    plan = plan_ladder(info(84, 33), LADDER, fps_cap=60)
    assert 64 <= plan.video[0].video_bitrate_kbps < 500


def test_audio_only_plans_no_video() -> None:
    audio_only = VideoInfo("mov", "", 5.0, 100, 128.0, None, STEREO)
    plan = plan_ladder(audio_only, LADDER, fps_cap=60)
    assert plan.video == () and plan.audio is not None


def test_video_only_plans_no_audio() -> None:
    source = info(640, 360)
    plan = plan_ladder(
        VideoInfo(source.container, "", 5.0, 1, 1.0, source.video, None), LADDER, fps_cap=60
    )
    assert plan.audio is None and len(plan.video) == 2


def test_mono_stays_mono() -> None:
    mono = AudioStreamInfo(1, "aac", 1, 44100, "mono", 5.0, skipped_packets=0)
    plan = plan_ladder(VideoInfo("mov", "", 5.0, 1, 1.0, None, mono), LADDER, fps_cap=60)
    assert plan.audio is not None and plan.audio.channels == 1


@pytest.mark.parametrize(
    ("source_fps", "cap", "expected"),
    [
        (30.0, 60, "30"),
        (29.97, 60, "30000/1001"),
        (23.976, 60, "24000/1001"),
        (25, 60, "25"),
        (59.94, 60, "60000/1001"),
        (120, 60, "60"),
        (50, 30, "30"),
        (29.0304, 60, "29"),
    ],
)
def test_output_fps(source_fps: float, cap: float, expected: str) -> None:
    assert str(output_fps(source_fps, cap)) == expected


def test_fps_cap_applies_to_names() -> None:
    plan = plan_ladder(info(1920, 1080, fps=120), LADDER, fps_cap=60)
    assert all(r.fps == "60/1" and "p60_" in r.name for r in plan.video)


def test_other_ladders_load() -> None:
    mobile = load_ladder("mobile")
    assert mobile.video[0].height == 720
