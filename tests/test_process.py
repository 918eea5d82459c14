"""`vidpipe process` end to end on real media, to a local directory."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from fractions import Fraction
from pathlib import Path

import av
import m3u8
import pytest
from PIL import Image

from tests.conftest import (
    BUNNY,
    MEDIA_ONLY,
    Media,
    Published,
    media_hashes,
    process_to,
    run_cli,
)
from vidpipe.encoders import hls
from vidpipe.encoders.thumbnails import score_frame

pytestmark = pytest.mark.slow


def check_published(pub: Published) -> m3u8.M3U8:
    """Every house rule a published video must meet; returns the parsed master."""
    master_path = pub.video_dir / "master.m3u8"
    master = m3u8.load(str(master_path))
    manifest = pub.manifest
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in master_path.read_text()
    report = hls.ValidationReport()
    counts = set()
    fps = None
    for variant in master.playlists:
        info = variant.stream_info
        assert info.bandwidth > 0 and info.average_bandwidth > 0
        assert info.bandwidth >= info.average_bandwidth
        hls.validate_media_playlist(pub.video_dir, variant.uri, report, check_keyframes=True)
        media = m3u8.load(str(pub.video_dir / variant.uri))
        assert media.is_endlist and media.playlist_type == "vod"
        counts.add(len(media.segments))
        if info.resolution:
            fps = info.frame_rate
    for rendition in master.media:
        hls.validate_media_playlist(pub.video_dir, rendition.uri, report, check_keyframes=False)
    report.raise_if_failed()
    assert len(counts) == 1, f"rungs disagree on segment count: {counts}"
    # Every file the manifest lists exists with its size and sha256.
    for f in manifest["files"]:
        data = (pub.video_dir / f["key"]).read_bytes()
        assert len(data) == f["bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
    if fps is not None:
        assert fps > 0
    return master


def decoded_stream(path: Path) -> tuple[int, int, float, list[float]]:
    """Width, height, fps and frame times of the first video stream in an HLS rung."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = [float(f.time) for f in c.decode(s) if f.time is not None]
        return s.codec_context.width, s.codec_context.height, float(s.average_rate or 0), times


def rung_file(pub: Published, playlist_uri: str) -> Path:
    """Concatenate init + segments of a rung into one file PyAV can decode."""
    media = m3u8.load(str(pub.video_dir / playlist_uri))
    base = (pub.video_dir / playlist_uri).parent
    out = pub.data_dir / (playlist_uri.replace("/", "_") + ".mp4")
    with out.open("wb") as fh:
        if media.segment_map:
            fh.write((base / media.segment_map[0].uri).read_bytes())
        for seg in media.segments:
            fh.write((base / seg.uri).read_bytes())
    return out


def test_bunny_publishes_full_ladder(published_bunny: Published) -> None:
    master = check_published(published_bunny)
    sizes = sorted((p.stream_info.resolution for p in master.playlists), reverse=True)
    assert sizes == [(1280, 720), (854, 480), (640, 360), (426, 240)]  # 720p source: no 1080p
    for p in master.playlists:
        assert p.stream_info.codecs.startswith("avc1.64")  # High profile, read from the stream
        assert p.stream_info.codecs.endswith(",mp4a.40.2")
        assert p.stream_info.audio == "aud"
        assert p.stream_info.frame_rate == 25.0
    assert [m.type for m in master.media] == ["AUDIO"]
    manifest = published_bunny.manifest
    assert manifest["source"]["audio"]["channels"] == 6
    audio = manifest["ladder"]["audio"]
    assert audio["name"] == "aac_128k_2ch"
    # Limited-range 4:2:0, as every player expects: the JPEG by-products of the same
    # decode must not drag the rungs to full range.
    for r in manifest["ladder"]["video"]:
        with av.open(str(rung_file(published_bunny, r["playlist"]))) as c:
            frame = next(c.decode(video=0))
            assert frame.format.name == "yuv420p", r["name"]  # not yuvj420p
            assert frame.color_range != 2, r["name"]  # 2 is JPEG/full range
    # The 5.1 source is downmixed to stereo.
    with av.open(str(rung_file(published_bunny, audio["playlist"]))) as c:
        assert c.streams.audio[0].codec_context.channels == 2
    # Measured bitrates land near their targets (x264 ABR on a 5 s clip).
    for r in manifest["ladder"]["video"]:
        assert 0.5 * r["target_kbps"] < r["average_kbps"] < 1.3 * r["target_kbps"], r
    assert set(manifest["stages"]) >= {"probe", "ladder"}
    assert manifest["source"]["sha256"] == hashlib.sha256(BUNNY.read_bytes()).hexdigest()


def test_frames_and_asr_audio_from_the_one_decode(published_bunny: Published) -> None:
    attempt = published_bunny.video_dir / published_bunny.manifest["ladder"]["attempt"]
    index = json.loads((attempt / "frames" / "index.json").read_text())
    assert [f["t"] for f in index] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # 1 fps over 5.3 s
    with Image.open(attempt / "frames" / index[2]["file"]) as img:
        assert img.size == (640, 360)
    with av.open(str(attempt / "asr" / "audio.flac")) as c:
        a = c.streams.audio[0]
        assert (a.codec_context.sample_rate, a.codec_context.channels) == (16000, 1)
        assert float(c.duration / av.time_base) == pytest.approx(5.3, abs=0.1)
    assert oct((attempt / "frames" / "index.json").stat().st_mode)[-3:] == "644"


def test_keyframes_aligned_across_rungs(published_bunny: Published) -> None:
    manifest = published_bunny.manifest
    per_rung = []
    for r in manifest["ladder"]["video"]:
        media = m3u8.load(str(published_bunny.video_dir / r["playlist"]))
        per_rung.append([round(float(s.duration), 3) for s in media.segments])
    assert all(d == per_rung[0] for d in per_rung), per_rung
    assert per_rung[0][0] == 4.0  # segment_seconds default, one closed GOP each


def test_thumbnails(published_bunny: Published) -> None:
    manifest = published_bunny.manifest
    thumbs = manifest["ladder"]["thumbnails"]
    poster = published_bunny.video_dir / thumbs["poster"]
    score = score_frame(poster)
    assert not score.blank and not thumbs["poster_is_blank"]
    with Image.open(poster) as img:
        assert img.size == (1280, 720)
    board = thumbs["storyboard"]
    import webvtt

    vtt_path = published_bunny.video_dir / board["vtt"]
    cues = webvtt.read(str(vtt_path)).captions
    assert len(cues) == board["tiles"] == 3  # 5.3 s every 2 s
    sprite_dir = vtt_path.parent
    for cue in cues:
        name, _, frag = cue.text.partition("#xywh=")
        x, y, w, h = (int(v) for v in frag.split(","))
        with Image.open(sprite_dir / name) as sheet:
            assert x + w <= sheet.width and y + h <= sheet.height
        assert (w, h) == (board["tile_width"], board["tile_height"])
        assert cue.start < cue.end
    assert cues[0].start == "00:00:00.000"
    # The last cue runs to the end of the video as decoded (132 frames at 25 fps), not to
    # the 5.312 s the header claims.
    assert (
        cues[-1].end == "00:00:05.280"
        and published_bunny.manifest["ladder"]["duration_seconds"] == 5.28
    )


def stored(data_dir: Path) -> list[Path]:
    """Every file in storage: published videos and kept originals (not the catalog's own)."""
    return [p for top in ("videos", "sources") for p in (data_dir / top).rglob("*") if p.is_file()]


def test_rerun_is_idempotent(media: Media, data_dir: Path) -> None:
    first = process_to(data_dir, media.video_only)
    files = {p: p.stat().st_mtime_ns for p in stored(data_dir)}
    run = run_cli("process", str(media.video_only), "--data-dir", str(data_dir))
    assert run.returncode == 0, run.stderr
    assert "nothing new" in run.stdout
    after = {p: p.stat().st_mtime_ns for p in stored(data_dir)}
    assert after == files  # not one file written, not one touched
    check_published(first)


def test_1080p_gets_five_rungs(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.clip_1080p, env=MEDIA_ONLY)
    master = check_published(pub)
    heights = sorted(p.stream_info.resolution[1] for p in master.playlists)
    assert heights == [240, 360, 480, 720, 1080]
    bandwidths = {p.stream_info.resolution[1]: p.stream_info.bandwidth for p in master.playlists}
    assert bandwidths[1080] > bandwidths[720] > bandwidths[480] > bandwidths[240]


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        ("portrait", [(720, 1280), (480, 854), (360, 640), (240, 426)]),
        ("rotated", [(360, 640), (240, 426)]),
        ("odd", [(852, 360), (568, 240)]),  # 641x361 at 4:3 SAR shows as 855x361
    ],
)
def test_geometry_upright_even_square(
    media: Media, data_dir: Path, clip: str, expected: list[tuple[int, int]]
) -> None:
    pub = process_to(data_dir, getattr(media, clip), env=MEDIA_ONLY)
    master = check_published(pub)
    got = sorted((p.stream_info.resolution for p in master.playlists), reverse=True)
    assert got == expected
    for variant in master.playlists:
        w, h, _, _ = decoded_stream(rung_file(pub, variant.uri))
        assert (w, h) == variant.stream_info.resolution  # the pixels, not just the label
        assert w % 2 == 0 and h % 2 == 0
        with av.open(str(rung_file(pub, variant.uri))) as c:
            sar = c.streams.video[0].codec_context.sample_aspect_ratio
            assert sar in (None, Fraction(1, 1), Fraction(0, 1))
    if clip == "rotated":
        # Upright: the top of the testsrc2 pattern is at the top. The rendition carries
        # no rotation, so a player shows the pixels as they are.
        assert pub.manifest["source"]["video"]["rotation"] in (90, 270)
        with av.open(str(rung_file(pub, master.playlists[0].uri))) as c:
            frame = next(c.decode(video=0))
            assert (getattr(frame, "rotation", 0) or 0) == 0


def test_vfr_becomes_cfr(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.vfr, env=MEDIA_ONLY)
    assert pub.manifest["source"]["video"]["is_vfr"] is True
    master = check_published(pub)
    _, _, _, times = decoded_stream(rung_file(pub, master.playlists[0].uri))
    deltas = {round(b - a, 4) for a, b in itertools.pairwise(times)}
    assert len(deltas) == 1, f"frame intervals vary: {sorted(deltas)[:5]}"


def test_audio_only(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.audio_only, env=MEDIA_ONLY)
    master = check_published(pub)
    manifest = pub.manifest
    assert manifest["kind"] == "audio-only"
    assert manifest["ladder"]["video"] == [] and manifest["ladder"]["thumbnails"] is None
    assert len(master.playlists) == 1 and master.playlists[0].stream_info.codecs == "mp4a.40.2"
    assert not list(pub.video_dir.rglob("*.jpg"))
    attempt = pub.video_dir / manifest["ladder"]["attempt"]
    assert (attempt / "asr" / "audio.flac").stat().st_size > 0  # still transcribable


def test_video_only(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.video_only, env=MEDIA_ONLY)
    master = check_published(pub)
    assert pub.manifest["kind"] == "video-only"
    assert master.media == [] or len(master.media) == 0
    for p in master.playlists:
        assert "mp4a" not in p.stream_info.codecs and p.stream_info.audio is None


def test_poster_skips_black_frames(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.black, env=MEDIA_ONLY)
    poster = pub.video_dir / pub.manifest["ladder"]["thumbnails"]["poster"]
    assert not score_frame(poster).blank


def test_ts_segments(media: Media, data_dir: Path) -> None:
    pub = process_to(data_dir, media.video_only, "--segment-format", "ts", env=MEDIA_ONLY)
    master = check_published(pub)
    media_pl = m3u8.load(str(pub.video_dir / master.playlists[0].uri))
    assert media_pl.segment_map in (None, []) or not media_pl.segment_map
    assert all(s.uri.endswith(".ts") for s in media_pl.segments)


@pytest.mark.parametrize(
    ("clip", "reason"),
    [
        ("empty", "empty"),
        ("hls_as_mp4", "playlist"),
        ("concat_as_mp4", "playlist"),
        ("truncated", "truncated"),
        ("corrupt", "corrupt"),
    ],
)
def test_bad_input_exit_2_one_line(media: Media, data_dir: Path, clip: str, reason: str) -> None:
    run = run_cli("process", str(getattr(media, clip)), "--data-dir", str(data_dir))
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
    assert reason in run.stderr.lower()
    assert not (data_dir / "videos").exists()  # nothing published, nothing half-written


def test_limits_from_environment(media: Media, data_dir: Path) -> None:
    run = run_cli(
        "process",
        str(media.clip_1080p),
        "--data-dir",
        str(data_dir),
        env={"VIDPIPE_LIMITS__MAX_DURATION_SECONDS": "1"},
    )
    assert run.returncode == 2
    assert "limit" in run.stderr and "3 s" in run.stderr


def test_bad_config_names_closest_key(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("encode:\n  segment_secs: 6\n")
    run = run_cli("process", str(BUNNY), "--config", str(cfg), "--data-dir", str(data_dir))
    assert run.returncode == 2
    assert "did you mean 'segment_seconds'" in run.stderr


def test_missing_file_exit_2(data_dir: Path) -> None:
    run = run_cli("process", str(data_dir / "nope.mp4"), "--data-dir", str(data_dir))
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_killed_run_leaves_published_video_intact(media: Media, data_dir: Path) -> None:
    """A run killed mid-encode never touches what is live; the next run completes."""
    import signal
    import subprocess
    import sys
    import time

    pub = process_to(data_dir, media.clip_1080p, env=MEDIA_ONLY)
    first_attempt = pub.manifest["ladder"]["attempt"]
    before = (pub.video_dir / "master.m3u8").read_bytes()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidpipe.flows.cli",
            "process",
            str(media.clip_1080p),
            "--data-dir",
            str(data_dir),
            "--preset",
            "medium",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ | MEDIA_ONLY,
    )
    # Wait until the new attempt's ffmpeg is writing segments, then kill everything.
    work = data_dir / ".work" / pub.video_id
    deadline = time.monotonic() + 120
    while not list(work.rglob("*.m4s")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(work.rglob("*.m4s")), "the second run never started encoding"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (pub.video_dir / "master.m3u8").read_bytes() == before
    check_published(pub)
    # The retry encodes a fresh attempt and publishes it whole.
    again = process_to(data_dir, media.clip_1080p, "--preset", "medium", env=MEDIA_ONLY)
    assert again.manifest["ladder"]["attempt"] != first_attempt
    assert not any(work.iterdir()), "the killed run's scratch was not swept"
    assert (again.video_dir / "master.m3u8").read_bytes() != before
    check_published(again)


def _pg_running(data_dir: Path) -> bool:
    import psutil

    pgdata = str((data_dir / "pg").resolve())
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and pgdata in cmd:
            return True
    return False


@pytest.mark.parametrize("step", ["while-encoding", "before-captions"])
def test_killed_at_each_publish_step(media: Media, tmp_path: Path, step: str) -> None:
    """SIGKILL at a publish step: what is live still validates; the re-run completes with the
    content of an uninterrupted run; nothing of the dead run keeps running."""
    import signal
    import subprocess
    import sys
    import time

    env = MEDIA_ONLY | {"VIDPIPE_TRANSCRIBE__ENABLED": "true", "VIDPIPE_ENCODE__PRESET": "fast"}
    reference = process_to(tmp_path / "reference", media.jfk, env=env)
    data = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidpipe.flows.cli", "process", str(media.jfk), "--data-dir",
         str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=os.environ | env,
    )  # fmt: skip
    video = data / "videos" / reference.video_id
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        master = video / "master.m3u8"
        manifest = video / "manifest.json"
        if step == "while-encoding" and master.exists() and not manifest.exists():
            break
        if (
            step == "before-captions"
            and manifest.exists()
            and "captions" not in manifest.read_text()
        ):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run finished before the {step} step could be caught"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    report = hls.ValidationReport()  # what is published right now is whole
    text = (video / "master.m3u8").read_text()
    live = m3u8.loads(text)
    for uri in [p.uri for p in live.playlists] + [m.uri for m in live.media if m.uri]:
        ended = "#EXT-X-ENDLIST" in (video / uri).read_text()
        hls.validate_media_playlist(video, uri, report, check_keyframes=True, ended=ended)
    report.raise_if_failed()
    ended = {"#EXT-X-ENDLIST" in (video / p.uri).read_text() for p in live.playlists}
    assert ended == ({False} if step == "while-encoding" else {True})  # EVENT, then VOD
    assert "SUBTITLES" not in text

    deadline = time.monotonic() + 30  # the dead run's embedded PostgreSQL stops with it
    while _pg_running(data) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _pg_running(data), "the killed run left its PostgreSQL running"

    again = process_to(data, media.jfk, env=env)
    check_published(again)
    assert media_hashes(again) == media_hashes(reference)
    assert "SUBTITLES" in (again.video_dir / "master.m3u8").read_text()
