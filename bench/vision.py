"""Benchmark the vision stages over the frames vidpipe's one transcode samples.

What it measures
----------------
A 1920x1080 30 fps H.264 + AAC clip is generated (default 20 s): ultralytics'
``zidane.jpg`` (two faces), then ``bus.jpg`` (four people), each panned
slowly for a quarter of the clip, then half a clip of ``testsrc2``. vidpipe
then runs its real ladder stage on it, ``encode_attempt`` (probe, plan, one
ffmpeg process writing every rung, thumbnails and the sampled frames), and
``write_frame_index``.

Decode passes are counted, not assumed: a ``sys.addaudithook`` sees every
subprocess this process starts and every file Python opens, and ``av.open``
is wrapped. A decode pass is an ffmpeg process whose argv reads the source;
probe opens (PyAV, a few frames) are reported apart. The count covers the
whole run, vision stages included: they receive only the frames directory,
and the hook proves they never touch the source.

Each vision stage then runs twice over the sampled frames: ``cold`` includes
importing its libraries and loading its model (once per worker process),
``warm`` is the steady state of a worker that keeps its models. The real-time
factor (RTF) is warm stage seconds / video seconds: below 1 is faster than
real time. The deepfake stage here finds faces and has no classifier
configured (none ships; see README), so its RTF is face finding only.
``embed`` embeds the detection labels plus one synthetic transcript line per
4 s of video (the text the stage will embed); image embeddings need open_clip
weights and are reported unavailable.

Run (about 1 minute on 2 cores)::

    .venv/bin/python bench/vision.py
    .venv/bin/python bench/vision.py --seconds 60 --device cpu --json /tmp/vision.json

The last line printed is always
``RESULT decode_passes=1 detect_rtf=… safety_rtf=… deepfake_rtf=… fingerprint_rtf=… embed_rtf=…``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidpipe.encoders.pipeline import encode_attempt, write_frame_index

from vidpipe import __version__
from vidpipe.encoders import fingerprint as fp
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.probe import probe
from vidpipe.encoders.transcode import OutputLayout
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.settings import load_ladder, load_settings
from vidpipe.models import loader
from vidpipe.models.deepfake import DeepfakeOptions, check
from vidpipe.models.detect import DetectOptions, detect
from vidpipe.models.embed import EmbedOptions, embed_images, embed_texts
from vidpipe.models.safety import SafetyOptions, screen

# --------------------------------------------------------------------------- counting


class SourceWatch:
    """Counts what opens the source: ffmpeg processes, PyAV opens, Python file opens."""

    def __init__(self, source: Path) -> None:
        self.source = str(source.resolve())
        self.ffmpeg_reads: list[list[str]] = []
        self.python_opens = 0
        self.av_opens = 0
        self.phase = "setup"
        self.by_phase: dict[str, int] = {}

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen":
            argv = [os.fsdecode(a) for a in (args[1] or [])]
            reads = any(
                a == "-i" and Path(b).resolve() == Path(self.source)
                for a, b in itertools.pairwise(argv)
            )
            if reads:
                self.ffmpeg_reads.append(argv)
                self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + 1
        elif (
            event == "open"
            and isinstance(args[0], (str, bytes, os.PathLike))
            and os.fsdecode(args[0]) == self.source
        ):
            self.python_opens += 1
            self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + 1

    def install(self) -> None:
        sys.addaudithook(self._hook)  # cannot be removed: the watch lasts the process
        import av

        real_open = av.open

        def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and os.fsdecode(file) == self.source:
                self.av_opens += 1
                self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + 1
            return real_open(file, *args, **kwargs)

        av.open = counting_open  # probe calls av.open through the module: it sees this


# --------------------------------------------------------------------------- input


def make_input(path: Path, seconds: float) -> None:
    """Faces, then people, then a test pattern, 1920x1080 30 fps, with a sine track."""
    import subprocess

    q = seconds / 4
    zidane = loader.packaged_file("ultralytics", "assets", "zidane.jpg")
    bus = loader.packaged_file("ultralytics", "assets", "bus.jpg")
    graph = (
        f"[0:v]scale=2112:1188,crop=1920:1080:'(iw-1920)*t/{q}':'(ih-1080)/2',setsar=1,fps=30,"
        f"format=yuv420p[a];"
        f"[1:v]scale=-2:1080,pad=1920:1080:(ow-iw)/2:0,setsar=1,fps=30,format=yuv420p,"
        f"zoompan=z='1+0.1*on/({q}*30)':d=1:s=1920x1080:fps=30[b];"
        f"[2:v]format=yuv420p[c];[a][b][c]concat=n=3:v=1[v]"
    )
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-loop", "1", "-framerate", "30", "-t", f"{q:g}", "-i", str(zidane),
        "-loop", "1", "-framerate", "30", "-t", f"{q:g}", "-i", str(bus),
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={2 * q:g}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}",
        "-filter_complex", graph, "-map", "[v]", "-map", "3:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-t", f"{seconds:g}", str(path),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"making the input failed:\n{proc.stderr.decode()[-2000:]}")


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class StageTiming:
    name: str
    cold_seconds: float  # wall, first call in the process (imports + model load + work)
    warm_seconds: float  # wall, second call (work only)
    warm_cpu_seconds: float  # user + sys of this process during the warm call
    other_load: float | None  # share of all CPUs other processes used during the warm call
    rtf: float  # warm seconds / video seconds
    summary: str


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all processes); Linux only."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Run:
    wall: float
    cpu: float
    other: float | None
    result: Any


def _time(fn: Callable[[], Any]) -> _Run:
    busy0, cpu0, t0 = _machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
    out = fn()
    wall, cpu, busy1 = time.perf_counter() - t0, _cpu_seconds() - cpu0, _machine_busy_seconds()
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = min(1.0, max(0.0, (busy1 - busy0 - cpu) / (wall * (os.cpu_count() or 1))))
    return _Run(wall, cpu, other, out)


def run_stages(
    frames_dir: Path, video_seconds: float, device: str, threads: int = 0
) -> list[StageTiming]:
    dev: Any = device
    transcript = [
        f"segment {i}: the coach points at the pitch while a bus waits at the stop"
        for i in range(max(1, round(video_seconds / 4)))
    ]

    def embed_stage() -> Any:
        labels = [s.label for s in detections.labels] or ["nothing"]
        vectors = embed_texts([*labels, *transcript], EmbedOptions(device=dev, cpu_threads=threads))
        images = embed_images(frames_dir)
        return len(vectors), images.status.status

    stages: dict[str, Callable[[], Any]] = {
        "detect": lambda: detect(frames_dir, DetectOptions(device=dev, cpu_threads=threads)),
        "safety": lambda: screen(frames_dir, SafetyOptions(device=dev, cpu_threads=threads)),
        "deepfake": lambda: check(frames_dir, DeepfakeOptions(device=dev, cpu_threads=threads)),
        "fingerprint": lambda: fp.fingerprint(frames_dir),
        "embed": embed_stage,
    }
    out: list[StageTiming] = []
    detections: Any = None
    for name, fn in stages.items():
        cold = _time(fn)
        warm = _time(fn)
        if name == "detect":
            detections = warm.result
        out.append(
            StageTiming(
                name, cold.wall, warm.wall, warm.cpu, warm.other, warm.wall / video_seconds,
                _describe(name, warm.result),
            )
        )  # fmt: skip
    return out


def _describe(name: str, result: Any) -> str:
    if name == "detect":
        return ", ".join(f"{s.label} {s.seconds_present:.0f}s" for s in result.labels) or "none"
    if name == "safety":
        return f"{result.verdict}, max {result.max_score:.3f}"
    if name == "deepfake":
        return f"{result.status.status}: {result.faces_found} faces, {len(result.tracks)} tracks"
    if name == "fingerprint":
        return f"{len(result.frames)} hashes, {sum(f.flat for f in result.frames)} flat"
    return f"{result[0]} texts embedded, images {result[1]}"


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="input length, seconds")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument(
        "--cpu-threads", type=int, default=0, help="CPU threads per stage; 0 = library defaults"
    )
    ap.add_argument("--preset", default="veryfast", help="x264 preset for the ladder")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-vision-") as tmp:
        root = Path(tmp)
        source = root / "input-1080p.mp4"
        make_input(source, args.seconds)
        watch = SourceWatch(source)
        watch.install()

        watch.phase = "probe"
        settings = load_settings(data_dir=root / "data", encode={"preset": args.preset})
        info = probe(source, settings.limits)
        plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)

        watch.phase = "transcode"
        out = root / "attempt"
        t0 = time.perf_counter()
        encode_attempt(source, info, plan, settings, out)
        frames_dir = OutputLayout(out).frames_dir
        frame_count = write_frame_index(frames_dir)
        transcode_seconds = time.perf_counter() - t0

        watch.phase = "vision"
        stages = run_stages(frames_dir, info.duration_seconds, args.device, args.cpu_threads)

    decode_passes = len(watch.ffmpeg_reads)
    vision_opens = watch.by_phase.get("vision", 0)
    print(f"vidpipe {__version__} · {platform.processor() or platform.machine()} · "
          f"{os.cpu_count()} cpus · python {platform.python_version()}")  # fmt: skip
    print(
        f"input {info.duration_seconds:.1f} s 1920x1080; ladder {[r.name for r in plan.video]}; "
        f"transcode {transcode_seconds:.1f} s; {frame_count} frames sampled"
    )
    print(
        f"source opens: ffmpeg decode passes {decode_passes}, PyAV probe opens "
        f"{watch.av_opens}, Python file opens {watch.python_opens}; by phase {watch.by_phase}"
    )
    head = ("stage", "cold s", "warm s", "cpu s", "others", "ms/frame", "RTF")
    print(f"{head[0]:<12}" + "".join(f"{h:>9}" for h in head[1:]) + "  result")
    for s in stages:
        other = f"{s.other_load:.0%}" if s.other_load is not None else "n/a"
        per_frame = 1000 * s.warm_seconds / max(1, frame_count)
        print(
            f"{s.name:<12}{s.cold_seconds:>9.2f}{s.warm_seconds:>9.2f}{s.warm_cpu_seconds:>9.2f}"
            f"{other:>9}{per_frame:>9.1f}{s.rtf:>9.4f}  {s.summary}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "video_seconds": info.duration_seconds,
                    "frames": frame_count,
                    "decode_passes": decode_passes,
                    "probe_opens": watch.av_opens,
                    "vision_source_opens": vision_opens,
                    "transcode_seconds": transcode_seconds,
                    "stages": [s.__dict__ for s in stages],
                },
                indent=2,
            )
        )
    if vision_opens:
        print(f"FAIL: vision stages opened the source {vision_opens} times")
    rtf = " ".join(f"{s.name}_rtf={s.rtf:.4f}" for s in stages)
    print(f"RESULT decode_passes={decode_passes} {rtf}")


if __name__ == "__main__":
    main()
