"""Benchmark the full pipeline against the bare ladder command, side by side in one run.

(a) ``vidpipe process`` with every stage on (ladder, thumbnails, captions,
    detections, safety, deepfake, fingerprint, embeddings), model loading
    included, as a fresh process per run;
(b) the bare single-decode ladder command (``bench/ladder.py``'s (b)): one
    ffmpeg, ``split``, scale, x264, same binary, ladder and preset.

The input is a 1080p30 clip with speech (``testsrc2`` under espeak-ng reading
``bench/speech.txt``, three minutes that never repeat). A Prefect server runs
on loopback for the whole bench, as in a deployment; the data dir is warm (a
first run on a 1-second clip starts the embedded PostgreSQL and unpacks the
Whisper weights). Also measured:

- start-up: the fixed cost of one ``vidpipe process`` (1-second clip, media
  only), against the run's total for the long clip;
- peak RSS of the ``vidpipe process`` tree (sampled every 0.2 s);
- where the time goes: each stage's wall seconds from the manifest.

Targets: a/b wall <= 1.3, start-up <= 3 s, peak RSS < 2 GB.

    .venv/bin/python bench/pipeline.py               # 60 s clip, 2 rounds
    .venv/bin/python bench/pipeline.py --smoke       # 4 s clip, 1 round: CI

The last line is always ``RESULT a/b wall=.. | startup=.. s | peak_rss=.. MB``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
from common import Sample, bare_ffmpeg, busy_warning, make_clip, speech, timed
from ladder import baselines

from vidpipe.encoders.encode import transcode_job
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.probe import probe
from vidpipe.flows.server import prefect_server
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
TARGET_WALL, TARGET_STARTUP_SECONDS, TARGET_RSS_MB = 1.3, 3.0, 2048
MEDIA_ONLY = {
    f"VIDPIPE_{s}__ENABLED": "false"
    for s in ("TRANSCRIBE", "DETECT", "SAFETY", "DEEPFAKE", "EMBED")
}


class PeakRss:
    """The highest summed RSS of a process and its children, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def vidpipe_process(
    clip: Path, data_dir: Path, env: dict[str, str]
) -> tuple[dict[str, dict[str, float]], int]:
    """One ``vidpipe process`` run; the manifest's stage timings and the tree's peak RSS."""
    cmd = [sys.executable, "-m", "vidpipe.flows.cli", "process", str(clip), "--data-dir",
           str(data_dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=os.environ | env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    rss = PeakRss(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"vidpipe process failed ({proc.returncode}):\n{out.decode()[-3000:]}")
    manifests = sorted((data_dir / "videos").glob("*/manifest.json"), key=os.path.getmtime)
    stages = json.loads(manifests[-1].read_text())["stages"]
    return stages, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--smoke", action="store_true", help="4 s clip, 1 round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.preset = 4.0, 1, "ultrafast"
    env = {"VIDPIPE_ENCODE__PRESET": args.preset}
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-pipeline-") as tmp, prefect_server(
        Path(tmp) / "prefect"
    ) as api:  # fmt: skip
        root = Path(tmp)
        voice = speech(root / "speech.wav")
        env["PREFECT_API_URL"] = api
        data = root / "data"
        short = make_clip(root / "short.mp4", 1.0, speech=voice)
        vidpipe_process(short, data, env)  # warm: PostgreSQL, weights, model caches on disk
        settings = load_settings(data_dir=str(data), encode={"preset": args.preset})
        samples: dict[str, list[Sample]] = {"a": [], "b": []}
        stages: list[dict[str, dict[str, float]]] = []
        peaks: list[int] = []
        for rnd in range(args.repeats):
            # New bytes each round, so no stage is a cache hit.
            clip = make_clip(root / f"clip{rnd}.mp4", args.seconds + rnd * 0.04, speech=voice)
            info = probe(clip, settings.limits)
            plan = plan_ladder(info, load_ladder("default"), settings.encode.fps_cap)
            job = transcode_job(clip, info, plan, settings, root / f"job{rnd}")
            (b_cmd,) = baselines(job, ffmpeg_exe(), root / f"bare{rnd}")["b"]
            for name in ("b", "a") if rnd % 2 else ("a", "b"):
                if name == "b":
                    samples["b"].append(timed(lambda cmd=b_cmd: bare_ffmpeg(cmd)))
                else:
                    s = timed(lambda c=clip: vidpipe_process(c, data, env))
                    samples["a"].append(s)
                    stages.append(s.value[0])
                    peaks.append(s.value[1])
            a_s, b_s = samples["a"][-1].wall, samples["b"][-1].wall
            print(f"  round {rnd + 1}: a {a_s:.1f} s  b {b_s:.1f} s", flush=True)
        starts = []
        for i in range(2 if not args.smoke else 1):
            one = make_clip(root / f"one{i}.mp4", 1.0 + i * 0.04)
            starts.append(timed(lambda o=one: vidpipe_process(o, data, env | MEDIA_ONLY)))
    wall_a = statistics.median(s.wall for s in samples["a"])
    wall_b = statistics.median(s.wall for s in samples["b"])
    startup = min(s.wall for s in starts)
    peak_mb = max(peaks) / 2**20
    print(f"{'run':<44} {'wall s':>8} {'cpu s':>8}")
    print(f"{'(a) vidpipe process, every stage on':<44} {wall_a:8.2f} "
          f"{statistics.median(s.cpu for s in samples['a']):8.2f}")  # fmt: skip
    print(f"{'(b) bare single-decode ladder':<44} {wall_b:8.2f} "
          f"{statistics.median(s.cpu for s in samples['b']):8.2f}")  # fmt: skip
    print(f"{'start-up: 1 s clip, media only':<44} {startup:8.2f}")
    print("where (a)'s time goes (median wall s per stage; analysis stages overlap):")
    for name in stages[0]:
        walls = [st[name]["wall_seconds"] for st in stages if name in st]
        print(f"  {name:<14} {statistics.median(walls):7.2f}")
    busy_warning([*samples["a"], *samples["b"]])
    ab = wall_a / wall_b
    print(f"a/b wall {ab:.2f} (target <= {TARGET_WALL}); start-up {startup:.2f} s "
          f"(target <= {TARGET_STARTUP_SECONDS:g} s, {startup / wall_a:.0%} of (a)); "
          f"peak RSS {peak_mb:.0f} MB (target < {TARGET_RSS_MB})")  # fmt: skip
    print(f"RESULT a/b wall={ab:.2f} | startup={startup:.2f} s | peak_rss={peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
