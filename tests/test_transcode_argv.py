"""The ffmpeg command is built by pure functions: check it without running ffmpeg."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_ladder import LADDER, info
from vidpipe.encoders.encode import transcode_job
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.transcode import (
    TranscodeJob,
    build_filtergraph,
    build_transcode_argv,
    frame_interval_seconds,
    gop_frames,
)
from vidpipe.infra.settings import load_settings


def job(segment_format: str = "fmp4", encoder: str = "x264", **changes: object) -> TranscodeJob:
    s = load_settings(encode={"segment_format": segment_format, "encoder": encoder})
    source = info(1920, 1080)
    plan = plan_ladder(source, LADDER, fps_cap=60)
    return replace(transcode_job(Path("/in/src"), source, plan, s, Path("/out")), **changes)


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_one_input_one_decode() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv.count("-i") == 1 and argv.count("-filter_complex") == 1
    graph = value(argv, "-filter_complex")
    assert graph.count("[0:0]") == 1  # the source's video stream, read once
    assert graph.count("[0:1]") == 1  # and its audio stream
    assert graph.count(",split=") == 5  # one per rung (and one asplit for the ASR audio)


def test_hostile_input_guards() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert value(argv, "-protocol_whitelist") == "file,pipe"
    assert value(argv, "-f") == "mov"  # demuxer forced to what the probe found
    assert argv.index("-f") < argv.index("-i")
    assert "-nostdin" in argv
    assert value(argv, "-map_metadata") == "-1"


def test_reading_stops_a_little_past_the_duration_limit() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv.index("-t") < argv.index("-i")  # an input option: ffmpeg stops reading
    assert value(argv, "-t") == "14404"  # limits.max_duration_seconds + one segment


def test_cascade_scales_each_rung_from_the_one_above() -> None:
    graph, labels = build_filtergraph(job())
    chains = graph.split(";")
    assert chains[0].startswith("[0:0]setpts=PTS-STARTPTS,fps=30/1,scale=1920:1080")
    assert chains[1].startswith("[next0]scale=1280:720")
    assert chains[4].startswith("[next3]scale=426:240")
    assert labels == ["v0", "v1", "v2", "v3", "v4", "tiles", "poster", "frames", "a", "asr"]


def test_the_first_decodable_frame_is_time_zero_for_every_rendition() -> None:
    # The video's first frame comes 0.5 s after the audio's (the audio began earlier, or
    # broken video packets came first): the audio is cut to start with it; both start at 0.
    graph, _ = build_filtergraph(job(audio_lead_seconds=0.5, audio_rate_hz=48000))
    assert graph.startswith("[0:0]setpts=PTS-STARTPTS,fps=30/1,")
    assert "asetpts=PTS-STARTPTS,aresample=async=1:first_pts=24000,asetpts=PTS-STARTPTS" in graph


def test_interlaced_and_hdr_sources_are_fixed_once_at_the_top() -> None:
    graph, _ = build_filtergraph(job(interlaced=True, hdr=True))
    head = graph.split(";")[0]
    assert (
        head.index("setpts")
        < head.index("bwdif=")
        < head.index("tonemap=tonemap=")
        < head.index("fps=")
    )
    assert graph.count("bwdif=") == 1 and graph.count("tonemap=tonemap=") == 1


def test_gop_is_one_closed_segment() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert value(argv, "-g") == "120"  # 30 fps * 4 s
    assert value(argv, "-keyint_min") == "120"
    assert "+cgop" in argv and "-sc_threshold" in argv
    assert value(argv, "-threads") == "1"  # x264 bit-exact from run to run (no threaded VBV)
    assert value(argv, "-force_key_frames") == "expr:gte(t,n_forced*4)"
    assert value(argv, "-hls_time") == "4"
    assert gop_frames("30000/1001", 4) == 120
    assert gop_frames("25/1", 6) == 150


def test_one_hls_muxer_ends_every_rendition_together() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    assert argv.count("-f") == argv.count("hls") + 5  # mov in, hls once, image2 x3, flac
    assert value(argv, "-var_stream_map") == (
        "v:0,name:avc_1080p30_8000k v:1,name:avc_720p30_5000k v:2,name:avc_480p30_2500k "
        "v:3,name:avc_360p30_1000k v:4,name:avc_240p30_500k a:0,name:aac_128k_2ch"
    )
    assert "-shortest" in argv  # audio padded (apad) or trimmed to the video's end
    assert "[asrc]apad[a]" in value(argv, "-filter_complex")
    graph = value(argv, "-filter_complex")
    assert "[0:1]asetpts=PTS-STARTPTS,aresample=async=1:first_pts=0,asetpts=PTS-STARTPTS" in graph
    assert any(a.endswith("hls/%v/index.m3u8") for a in argv)
    assert value(argv, "-hls_playlist_type") == "event"  # grows while it encodes
    assert value(argv, "-hls_flags") == "independent_segments+temp_file"
    assert value(argv, "-ac") == "2"
    assert value(argv, "-b:v:0") == "8000k" and value(argv, "-maxrate:v:0") == "8560k"
    assert value(argv, "-b:v:4") == "500k"


def test_ts_segments_option() -> None:
    argv = build_transcode_argv("ffmpeg", job(segment_format="ts"))
    assert "mpegts" in argv and "-hls_fmp4_init_filename" not in argv
    assert any(a.endswith("seg_%05d.ts") for a in argv)


@pytest.mark.parametrize(("preset", "expected"), [("veryfast", "p2"), ("medium", "p5")])
def test_nvenc_argv(preset: str, expected: str) -> None:
    s = load_settings(encode={"encoder": "nvenc", "preset": preset})
    source = info(1280, 720)
    j = transcode_job(Path("/in/src"), source, plan_ladder(source, LADDER, 60), s, Path("/out"))
    argv = build_transcode_argv("ffmpeg", j)
    assert argv.count("h264_nvenc") == 1 and "libx264" not in argv  # one codec for all rungs
    assert value(argv, "-preset") == expected
    assert "-forced-idr" in argv and "-strict_gop" in argv


def test_audio_only_has_no_video_outputs() -> None:
    s = load_settings()
    source = replace(info(10, 10), video=None)
    j = transcode_job(Path("/in/src"), source, plan_ladder(source, LADDER, 60), s, Path("/out"))
    argv = build_transcode_argv("ffmpeg", j)
    assert "-shortest" not in argv
    assert "[0:1]asetpts=PTS-STARTPTS,aresample=async=1," in value(argv, "-filter_complex")
    assert value(argv, "-var_stream_map") == "a:0,name:aac_128k_2ch"
    assert not any("frames" in a or "tile_" in a for a in argv)


def test_frames_and_asr_audio_come_off_the_same_decode() -> None:
    argv = build_transcode_argv("ffmpeg", job())
    graph = value(argv, "-filter_complex")
    assert "[framesrc]scale=640:640:force_original_aspect_ratio=decrease" in graph
    assert "select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,1.000000)" in graph
    assert "gt(scene\\,0.3)" in graph
    assert argv.count("-i") == 1
    i = argv.index("/out/frames/%010d.jpg")
    assert value(argv, "-enc_time_base") == "1/1000" and "-frame_pts" in argv[:i]
    assert argv[-1] == "/out/asr/audio.flac" and "16000" in argv[argv.index("[asr]") :]


def test_poster_candidates_never_come_out_empty() -> None:
    # select keeps the first frame always: a clip shorter than its header claims still has one.
    graph, _ = build_filtergraph(job(duration_hint_seconds=600.0))
    poster = next(c for c in graph.split(";") if c.startswith("[postersrc]"))
    assert "isnan(prev_selected_t)" in poster and "gte(t-prev_selected_t\\,50.000000)" in poster


def test_frame_interval_stretches_for_long_videos() -> None:
    s = load_settings()
    assert frame_interval_seconds(60, s.frames) == 1.0
    assert frame_interval_seconds(3600, s.frames) == 6.0  # 600 frames at most
