"""Real-player end to end: play a published HLS ladder with hls.js in headless Chromium.

A ThreadingHTTPServer serves the data dir on 127.0.0.1; ``tests/player/play.mjs``
(playwright-core driving Debian's /usr/bin/chromium) opens a harness page on that
same origin, plays the master playlist with hls.js from node_modules, forces a
switch to the top rung and prints one JSON line of measured facts, which are
asserted here. See tests/player/README.md.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

PLAYER_DIR = Path(__file__).resolve().parent / "player"
CHROMIUM = Path("/usr/bin/chromium")
PLAY_TIMEOUT_MS = 45_000

pytestmark = [pytest.mark.player, pytest.mark.slow]


@pytest.fixture
def player_ready() -> str:
    """Path to node; skips (or fails on CI) when the browser or node_modules are missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    for pkg in ("hls.js", "playwright-core"):
        if not (PLAYER_DIR / "node_modules" / pkg / "package.json").exists():
            missing.append(f"tests/player/node_modules/{pkg} missing (cd tests/player && npm ci)")
    if missing:
        reason = "player prerequisites missing: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: this must not be skipped)")
        pytest.skip(reason)
    assert node is not None
    return node


class _MediaHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - stdlib declares it as a plain class attribute
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".m3u8": "application/vnd.apple.mpegurl",
        ".m4s": "video/iso.segment",
        ".mp4": "video/mp4",
        ".m4a": "audio/mp4",
        ".vtt": "text/vtt",
        ".json": "application/json",
    }
    requests: ClassVar[list[tuple[str, int]]]  # set per server by media_server()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requests.append((self.path, int(code) if isinstance(code, int) else 0))


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # hls.js aborts in-flight requests on an immediate level switch: not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@pytest.fixture
def media_server(published_bunny: Any) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Serve published_bunny.data_dir on 127.0.0.1:<free port>; yields (base_url, request log)."""
    with _serve(Path(published_bunny.data_dir)) as served:
        yield served


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (_MediaHandler,), {"requests": requests})
    server = _QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="media-http", daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"http://127.0.0.1:{port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _master_variants(master: str) -> list[dict[str, Any]]:
    """The #EXT-X-STREAM-INF entries of a master playlist (bandwidth, width, height, uri)."""
    lines = [ln.strip() for ln in master.splitlines() if ln.strip()]
    variants = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            bw = re.search(r"(?:^|[:,])BANDWIDTH=(\d+)", line)
            res = re.search(r"RESOLUTION=(\d+)x(\d+)", line)
            assert bw and res, f"variant without BANDWIDTH/RESOLUTION: {line}"
            variants.append(
                {
                    "bandwidth": int(bw.group(1)),
                    "width": int(res.group(1)),
                    "height": int(res.group(2)),
                    "uri": lines[i + 1],
                }
            )
    return variants


def test_hlsjs_plays_ladder_and_switches_to_top(
    player_ready: str, published_bunny: Any, media_server: tuple[str, list[tuple[str, int]]]
) -> None:
    base_url, requests = media_server
    master_path = Path(published_bunny.data_dir) / published_bunny.master_key
    variants = _master_variants(master_path.read_text())
    assert variants, "master playlist has no variants"
    top_variant = max(variants, key=lambda v: (v["bandwidth"], v["width"]))

    proc = subprocess.run(
        [
            player_ready,
            "play.mjs",
            f"{base_url}/{published_bunny.master_key}",
            "--timeout-ms",
            str(PLAY_TIMEOUT_MS),
        ],
        cwd=PLAYER_DIR,
        capture_output=True,
        text=True,
        timeout=PLAY_TIMEOUT_MS / 1000 + 30,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"play.mjs printed nothing (rc={proc.returncode})\nstderr:\n{proc.stderr}"
    report = json.loads(lines[-1])
    failed = [r for r in requests if r[1] >= 400]
    context = (
        f"rc={proc.returncode} failed requests={failed}\nstderr:\n{proc.stderr[-4000:]}\n"
        f"report:\n{json.dumps(report, indent=1)[:12000]}"
    )

    assert report.get("fatalErrors") == [], context
    assert proc.returncode == 0 and report.get("ok") is True, context

    # Every variant of the master became an hls.js level (none dropped as unsupported).
    levels = report["levels"]
    assert len(levels) == len(variants), context
    assert sorted((lv["width"], lv["height"]) for lv in levels) == sorted(
        (v["width"], v["height"]) for v in variants
    ), context

    # Playback really progressed.
    playback = report["playback"]
    assert playback["end"] - playback["start"] >= 1.0, context

    # The decoder produced frames of the level hls.js says was playing.
    level = playback["level"]
    assert 0 <= level < len(levels), context
    assert playback["videoWidth"] == levels[level]["width"], context
    assert playback["videoHeight"] == levels[level]["height"], context

    # Forced switch to the top level: it happened and the decoded size followed.
    switch = report["switch"]
    top = max(range(len(levels)), key=lambda i: (levels[i]["bitrate"], levels[i]["width"]))
    assert switch["targetLevel"] == top, context
    assert switch["fromLevel"] != top, context  # started low, so the switch is a real change
    assert switch["happened"] is True and switch["level"] == top, context
    assert levels[top]["width"] == top_variant["width"], context  # 1280 for the bunny sample
    assert switch["videoWidth"] == levels[top]["width"], context
    assert switch["videoHeight"] == levels[top]["height"], context

    # Captions are not produced yet; the field is reported for the captions feature.
    assert report["subtitleTrackCount"] == len(report["subtitleTracks"]), context


def test_hlsjs_shows_whisper_captions(player_ready: str, published_jfk: Any) -> None:
    """The subtitle track from the master loads and a cue becomes active during playback."""
    with _serve(Path(published_jfk.data_dir)) as (base_url, requests):
        proc = subprocess.run(
            [player_ready, "play.mjs", f"{base_url}/{published_jfk.master_key}",
             "--timeout-ms", str(PLAY_TIMEOUT_MS)],
            cwd=PLAYER_DIR, capture_output=True, text=True, timeout=PLAY_TIMEOUT_MS / 1000 + 30,
        )  # fmt: skip
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    context = f"rc={proc.returncode} requests={requests[-5:]}\n{json.dumps(report)[:3000]}"
    assert report.get("fatalErrors") == [], context
    assert report["manifestSubtitleTrackCount"] == 1, context
    captions = report.get("captions") or {}
    active = captions.get("active")
    assert active is not None, context
    assert "country" in active["text"].lower(), context
    assert any(r[0].endswith(".vtt") and r[1] == 200 for r in requests), context


def _play(
    node: str, url: str, *args: str, timeout_ms: int = PLAY_TIMEOUT_MS
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [node, "play.mjs", url, "--timeout-ms", str(timeout_ms), *args],
        cwd=PLAYER_DIR, capture_output=True, text=True, timeout=timeout_ms / 1000 + 30,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert lines, f"play.mjs printed nothing (rc={proc.returncode})\nstderr:\n{proc.stderr}"
    return proc, json.loads(lines[-1])


CORPUS_PLAYED = ["android-vfr-1080p.mp4", "sintel-hls-segment.ts", "dvd-mpeg2-mp2.vob"]


@pytest.mark.parametrize(
    "name", CORPUS_PLAYED, ids=["vfr-phone", "audio-shorter-trailer", "mpeg-ps-rip"]
)
def test_hlsjs_plays_real_world_uploads(player_ready: str, data_dir: Path, name: str) -> None:
    """Files nobody here made: a VFR phone clip, a trailer whose audio is shorter, a DVD rip."""
    from tests.conftest import MEDIA_ONLY, process_to

    source = Path(__file__).resolve().parent / "corpus" / "files" / name
    pub = process_to(data_dir, source, env=MEDIA_ONLY | {"VIDPIPE_ENCODE__PRESET": "ultrafast"})
    with _serve(data_dir) as (base_url, requests):
        proc, report = _play(player_ready, f"{base_url}/{pub.master_key}", "--min-advance-s", "1")
    context = f"rc={proc.returncode} requests={requests[-5:]}\n{json.dumps(report)[:4000]}"
    assert report.get("fatalErrors") == [] and proc.returncode == 0, context
    assert report["playback"]["advancedS"] >= 1.0 or report["playback"]["ended"], context
    level = report["levels"][report["playback"]["level"]]
    assert report["playback"]["videoWidth"] == level["width"], context
    assert report["switch"]["happened"] or report["switch"]["ended"], context


def test_hlsjs_plays_while_the_ladder_is_still_encoding(player_ready: str, tmp_path: Path) -> None:
    """Playback starts on the EVENT ladder, plays past what was encoded when it started,
    and ends on the VOD playlist; the captions appear once the master is re-published."""
    from tests.conftest import JFK_WAV, ffmpeg

    clip = tmp_path / "speech-40s.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30:d=40", "-stream_loop", "-1", "-i",
           str(JFK_WAV), "-t", "40", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))  # fmt: skip
    data = tmp_path / "data"
    env = os.environ | {
        "VIDPIPE_DETECT__ENABLED": "false", "VIDPIPE_SAFETY__ENABLED": "false",
        "VIDPIPE_DEEPFAKE__ENABLED": "false", "VIDPIPE_EMBED__ENABLED": "false",
        "VIDPIPE_ENCODE__PRESET": "ultrafast",
    }  # fmt: skip
    run = subprocess.Popen(
        [sys.executable, "-m", "vidpipe.flows.cli", "process", str(clip), "--data-dir", str(data)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        master: Path | None = None
        while master is None and time.monotonic() < deadline and run.poll() is None:
            found = (
                list((data / "videos").glob("*/master.m3u8")) if (data / "videos").exists() else []
            )
            master = found[0] if found else None
            time.sleep(0.1)
        assert master is not None, f"no EVENT master appeared; vidpipe: {run.communicate()[1]}"
        assert not (master.parent / "manifest.json").exists()  # still encoding: no VOD yet
        key = master.relative_to(data).as_posix()
        with _serve(data) as (base_url, _requests):
            # Stalls are allowed (on a busy 2-core box the encode may fall behind real time).
            proc, report = _play(player_ready, f"{base_url}/{key}", "--live", timeout_ms=180_000)
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
            _, later = _play(player_ready, f"{base_url}/{key}")
    finally:
        if run.poll() is None:
            run.kill()
    context = f"rc={proc.returncode}\n{json.dumps(report)[:4000]}"
    assert report.get("fatalErrors") == [] and proc.returncode == 0, context
    live = report["live"]
    assert live["atStart"]["live"] is True, context  # an EVENT playlist, still growing
    assert live["atEnd"]["live"] is False, context  # then the VOD one, with ENDLIST
    assert live["atEnd"]["fragments"] > live["atStart"]["fragments"], context
    assert live["playedPast"] > live["atStart"]["seconds"], context
    assert later["manifestSubtitleTrackCount"] == 1, json.dumps(later)[:3000]
    assert "country" in ((later.get("captions") or {}).get("active") or {}).get("text", "").lower()
