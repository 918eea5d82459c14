"""The ffmpeg command is built by pure functions: check it without running ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_ladder import LADDER, info
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.transcode import (
    OutputLayout,
    TranscodeJob,
    build_filtergraph,
    build_transcode_argv,
    frame_interval_seconds,
    gop_frames,
)
from vidpipe.infra.settings import load_settings


def job(segment_format: str = "fmp4", encoder: str = "x264") -> TranscodeJob:
    s = load_settings(encode={"segment_format": segment_format, "encoder": encoder})
    plan = plan_ladder(info(1920, 1080), LADDER, fps_cap=60)
    return TranscodeJob(
        Path("/in/src"),
        "mov",
        10.0,
        plan,
        s.encode,
        s.thumbnails,
        OutputLayout(Path("/out")),
        s.frames,
    )


def test_one_input_one_decode() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv.count("-i") == 1 and argv.count("-filter_complex") == 1
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.count("[0:v:0]") == 1  # the source is read once
    assert graph.count("split=") == 5


def test_hostile_input_guards() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv[argv.index("-protocol_whitelist") + 1] == "file,pipe"
    assert argv[argv.index("-f") + 1] == "mov"  # demuxer forced to what the probe found
    assert argv.index("-f") < argv.index("-i")
    assert "-nostdin" in argv
    assert argv[argv.index("-map_metadata") + 1] == "-1"


def test_cascade_scales_each_rung_from_the_one_above() -> None:
    graph, labels = build_filtergraph(job())
    chains = graph.split(";")
    assert chains[0].startswith("[0:v:0]fps=30/1,scale=1920:1080")
    assert chains[1].startswith("[next0]scale=1280:720")
    assert chains[4].startswith("[next3]scale=426:240")
    assert labels == ["v0", "v1", "v2", "v3", "v4", "tiles", "poster", "frames"]


def test_gop_is_one_closed_segment() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv[argv.index("-g") + 1] == "120"  # 30 fps * 4 s
    assert argv[argv.index("-keyint_min") + 1] == "120"
    assert "+cgop" in argv and "-sc_threshold" in argv
    assert argv[argv.index("-force_key_frames") + 1] == "expr:gte(t,n_forced*4)"
    assert argv[argv.index("-hls_time") + 1] == "4"
    assert gop_frames("30000/1001", 4) == 120
    assert gop_frames("25/1", 6) == 150


def test_every_rung_and_the_audio_get_an_hls_output() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    playlists = [a for a in argv if a.endswith("index.m3u8")]
    assert playlists == [
        "/out/hls/avc_1080p30_8000k/index.m3u8",
        "/out/hls/avc_720p30_5000k/index.m3u8",
        "/out/hls/avc_480p30_2500k/index.m3u8",
        "/out/hls/avc_360p30_1000k/index.m3u8",
        "/out/hls/avc_240p30_500k/index.m3u8",
        "/out/hls/aac_128k_2ch/index.m3u8",
    ]
    assert argv[argv.index("-ac") + 1] == "2"
    assert argv.count("-hls_playlist_type") == 6 and "vod" in argv
    assert argv[argv.index("-maxrate") + 1] == "8560k"  # 8000k * 1.07


def test_ts_segments_option() -> None:
    argv = build_transcode_argv("ffmpeg", job(segment_format="ts"))
    assert "mpegts" in argv and "-hls_fmp4_init_filename" not in argv
    assert any(a.endswith("seg_%05d.ts") for a in argv)


@pytest.mark.parametrize(("preset", "expected"), [("veryfast", "p2"), ("medium", "p5")])
def test_nvenc_argv(preset: str, expected: str) -> None:
    s = load_settings(encode={"encoder": "nvenc", "preset": preset})
    j = TranscodeJob(
        Path("/in/src"),
        "mov",
        10.0,
        plan_ladder(info(1280, 720), LADDER, 60),
        s.encode,
        s.thumbnails,
        OutputLayout(Path("/out")),
        s.frames,
    )
    argv = build_transcode_argv("ffmpeg", j)
    assert argv.count("h264_nvenc") == 4 and "libx264" not in argv
    assert argv[argv.index("-preset") + 1] == expected
    assert "-forced-idr" in argv and "-strict_gop" in argv


def test_audio_only_argv_has_no_filtergraph() -> None:
    s = load_settings()
    audio_only = plan_ladder(
        info(10, 10).__class__("mov", "", 5.0, 1, 1.0, None, info(10, 10).audio), LADDER, 60
    )
    j = TranscodeJob(
        Path("/in/src"),
        "mov",
        5.0,
        audio_only,
        s.encode,
        s.thumbnails,
        OutputLayout(Path("/out")),
        s.frames,
    )
    argv = build_transcode_argv("ffmpeg", j)
    assert "-filter_complex" not in argv and "0:a:0" in argv


def test_frames_and_asr_audio_come_off_the_same_decode() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    graph = argv[argv.index("-filter_complex") + 1]
    assert "[framesrc]scale=640:640:force_original_aspect_ratio=decrease" in graph
    assert "select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,1.000000)" in graph
    assert "gt(scene\\,0.3)" in graph
    assert argv.count("-i") == 1
    i = argv.index("/out/frames/%010d.jpg")
    assert argv[argv.index("-enc_time_base") + 1] == "1/1000" and "-frame_pts" in argv[:i]
    assert argv[-1] == "/out/asr/audio.flac" and argv[argv.index("flac") - 4 : -1].count("16000")


def test_frame_interval_stretches_for_long_videos() -> None:
    s = load_settings()
    assert frame_interval_seconds(60, s.frames) == 1.0
    assert frame_interval_seconds(3600, s.frames) == 6.0  # 600 frames at most
