"""How soon an upload plays: from the start of ``vidpipe process`` to a playable master.

"Playable" means what a player needs to start: ``master.m3u8`` is in storage,
and every media playlist it names is a valid EVENT (or VOD) playlist whose
segments are whole in storage, the first segment of every rung included. The
clock starts when ``vidpipe process`` is launched (fresh bytes each time, so
nothing is cached) and the whole run's wall time is reported beside it.

Targets: <= 10 s on the 60 s clip and <= 0.1 x the duration on the 3-minute
clip. A Prefect server runs on loopback for the bench, as in a deployment.

    .venv/bin/python bench/first_playable.py            # 60 s and 180 s 1080p30 clips
    .venv/bin/python bench/first_playable.py --smoke    # one 8 s clip: CI

The last line is always ``RESULT first_playable=.. s (..x duration) | full=.. s``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import m3u8
from common import make_clip, speech

from vidpipe.encoders import hls
from vidpipe.flows.server import prefect_server

REPO = Path(__file__).resolve().parent.parent
TARGET_60S_SECONDS, TARGET_RATIO = 10.0, 0.1
ML_OFF = {f"VIDPIPE_{s}__ENABLED": "false" for s in ("DETECT", "SAFETY", "DEEPFAKE", "EMBED")}


def playable(video_dir: Path) -> bool:
    """Whether a player could start now: master and every playlist it names are whole."""
    master_path = video_dir / "master.m3u8"
    if not master_path.is_file():
        return False
    master = m3u8.loads(master_path.read_text())
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    report = hls.ValidationReport()
    for uri in uris:
        if not (video_dir / uri).is_file():
            return False
        text = (video_dir / uri).read_text()
        ended = "#EXT-X-ENDLIST" in text
        hls.validate_media_playlist(video_dir, uri, report, check_keyframes=False, ended=ended)
    return bool(uris) and not report.problems


def first_playable(clip: Path, data: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds to playable, and to the end of the run."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidpipe.flows.cli", "process", str(clip), "--data-dir", str(data)],
        env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: float | None = None
    videos = data / "videos"
    while proc.poll() is None:
        if seen is None and videos.is_dir():
            for d in videos.iterdir():
                if not (d / "manifest.json").exists() and playable(d):
                    seen = time.monotonic() - start
        time.sleep(0.1)
    total = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"vidpipe process failed:\n{proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
    if seen is None:
        raise SystemExit("the run finished without ever showing a playable EVENT master")
    return seen, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 180.0])
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--smoke", action="store_true", help="one 8 s clip")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.preset = [8.0], "ultrafast"
    env = {"VIDPIPE_ENCODE__PRESET": args.preset} | ML_OFF
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-playable-") as tmp, prefect_server(
        Path(tmp) / "prefect"
    ) as api:  # fmt: skip
        root = Path(tmp)
        voice = speech(root / "speech.wav")
        env["PREFECT_API_URL"] = api
        data = root / "data"
        first_playable(make_clip(root / "warm.mp4", 1.0, speech=voice), data, env)  # warm
        for seconds in args.seconds:
            clip = make_clip(root / f"clip-{seconds:g}.mp4", seconds, speech=voice)
            seen, total = first_playable(clip, data, env)
            rows.append((seconds, seen, total))
            print(
                f"{seconds:6.0f} s clip: playable after {seen:5.2f} s ({seen / seconds:.3f} x "
                f"duration), whole run {total:6.1f} s ({seen / total:.0%} of it)",
                flush=True,
            )
    for seconds, seen, _ in rows:
        if seconds == 60:
            print(f"60 s clip: {seen:.2f} s, target <= {TARGET_60S_SECONDS:g} s: "
                  f"{'PASS' if seen <= TARGET_60S_SECONDS else 'FAIL'}")  # fmt: skip
        if seconds >= 180:
            ok = seen / seconds <= TARGET_RATIO
            print(f"{seconds:g} s clip: {seen / seconds:.3f} x duration, target <= "
                  f"{TARGET_RATIO}: {'PASS' if ok else 'FAIL'}")  # fmt: skip
    seconds, seen, total = rows[0]
    print(
        f"RESULT first_playable={seen:.2f} s ({seen / seconds:.3f}x duration) | full={total:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
