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
