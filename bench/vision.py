"""Benchmark the vision stages over the frames vidpipe's one ladder encode samples.

What it measures
----------------
A 1920x1080 30 fps H.264 + AAC clip is generated (default 20 s): ultralytics'
``zidane.jpg`` (two faces), then ``bus.jpg`` (four people), each panned
slowly for a quarter of the clip, then half a clip of ``testsrc2``. vidpipe
then runs its real ladder stage on it, as the pipeline does: ``ingest_file``
into local storage, probe, plan, and ``encode_ladder`` (one ffmpeg process
writing every rung, thumbnails, the sampled frames and the ASR audio, then
measuring, validating and uploading the attempt). The vision stages read the
sampled frames where the ladder result's ``frames_index`` says they are, as
``vidpipe.models.analysis`` does.

Decode passes are counted, not assumed: a ``sys.addaudithook`` sees every
subprocess this process starts and every file Python opens, and ``av.open``
is wrapped. A decode pass is an ffmpeg process whose argv reads the source;
probe opens (PyAV, a few frames) and Python opens (ingest hashes and stores
the original) are reported apart, by phase. The count covers the whole run,
vision stages included: they receive only the frames directory, and the
hook proves they never touch the source.

Each vision stage then runs twice over the sampled frames: ``cold`` includes
importing its libraries and loading its model (once per worker process),
``warm`` is the steady state of a worker that keeps its models. The real-time
factor (RTF) is warm stage seconds / video seconds: below 1 is faster than
real time. The deepfake stage here finds faces and has no classifier
configured (none ships; see README), so its RTF is face finding only.
``embed`` embeds the detection labels plus one synthetic transcript line per
4 s of video (the text the embeddings stage embeds); image embeddings need
open_clip weights and are reported unavailable.

The run fails (exit 1) when the ladder decoded the source more than once,
a vision stage opened the source, no frames were sampled, or a stage did
not do its job (detect or safety not ``ok``, no faces found in the
``zidane`` part, a hash or a vector missing). Speed has no pass mark here:
the RTFs are figures to compare.

Run (about 1 minute on 2 cores)::

    .venv/bin/python bench/vision.py
    .venv/bin/python bench/vision.py --seconds 60 --device cpu --json /tmp/vision.json
    .venv/bin/python bench/vision.py --smoke       # 8 s clip, ultrafast, one round: CI

The last line printed is always
``RESULT decode_passes=1 detect_rtf=… safety_rtf=… deepfake_rtf=… fingerprint_rtf=… embed_rtf=…``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Sample, bare_ffmpeg, busy_warning, timed

from vidpipe import __version__
from vidpipe.encoders import fingerprint as fp
from vidpipe.encoders.encode import encode_ladder
from vidpipe.encoders.ladder import plan_ladder
from vidpipe.encoders.probe import probe
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.ingest import ingest_file
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import load_settings
from vidpipe.infra.storage import LocalStorage, local_folder
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
        self.names = {str(source), str(source.absolute()), self.source}  # cheap to test
        self.ffmpeg_reads: list[list[str]] = []
        self.python_opens = 0
        self.av_opens = 0
        self.phase = "setup"
        self.by_phase: dict[str, int] = {}

    def _count(self) -> None:
        self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + 1

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen":
            argv = [os.fsdecode(a) for a in (args[1] or [])]
            reads = any(
                a == "-i" and Path(b).resolve() == Path(self.source)
                for a, b in itertools.pairwise(argv)
            )
            if reads:
                self.ffmpeg_reads.append(argv)
                self._count()
        elif (
            event == "open"
            and isinstance(args[0], (str, bytes, os.PathLike))
            and os.fsdecode(args[0]) in self.names
        ):
            self.python_opens += 1
            self._count()

    def install(self) -> None:
        sys.addaudithook(self._hook)  # cannot be removed: the watch lasts the process
        import av

        real_open = av.open

        def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and os.fsdecode(file) in self.names:
                self.av_opens += 1
                self._count()
            return real_open(file, *args, **kwargs)

        av.open = counting_open  # probe calls av.open through the module: it sees this


# --------------------------------------------------------------------------- input


def make_input(path: Path, seconds: float) -> None:
    """Faces, then people, then a test pattern, 1920x1080 30 fps, with a sine track."""
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
    bare_ffmpeg([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-loop", "1", "-framerate", "30", "-t", f"{q:g}", "-i", str(zidane),
        "-loop", "1", "-framerate", "30", "-t", f"{q:g}", "-i", str(bus),
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={2 * q:g}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}",
        "-filter_complex", graph, "-map", "[v]", "-map", "3:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-t", f"{seconds:g}", str(path),
    ])  # fmt: skip


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class StageTiming:
    name: str
    cold_seconds: float  # wall, first call in the process (imports + model load + work)
    warm_seconds: float  # wall, second call (work only)
    warm_cpu_seconds: float  # user + sys of this process during the warm call
    other_load: float  # share of all CPUs other processes used during the warm call
    rtf: float  # warm seconds / video seconds
    summary: str
    problem: str  # why the stage's result is not what it should be; "" when fine


def run_stages(
    frames_dir: Path, video_seconds: float, frame_count: int, device: str, threads: int = 0
) -> list[StageTiming]:
    dev: Any = device
    transcript = [
        f"segment {i}: the coach points at the pitch while a bus waits at the stop"
        for i in range(max(1, round(video_seconds / 4)))
    ]

    def embed_stage() -> Any:
        labels = [s.label for s in detections.labels] or ["nothing"]
        texts = [*labels, *transcript]
        vectors = embed_texts(texts, EmbedOptions(device=dev, cpu_threads=threads))
        images = embed_images(frames_dir)
        return len(texts), len(vectors), images.status.status

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
        cold = timed(fn)
        warm = timed(fn)
        if name == "detect":
            detections = warm.value
        out.append(
            StageTiming(
                name, cold.wall, warm.wall, warm.cpu, warm.others, warm.wall / video_seconds,
                _describe(name, warm.value), _problem(name, warm.value, frame_count),
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
    return f"{result[1]} texts embedded, images {result[2]}"


def _problem(name: str, result: Any, frame_count: int) -> str:
    """What is wrong with a stage's result on this input; "" when it did its job."""
    if name in ("detect", "safety") and not result.status.ok:
        return f"status {result.status.status}: {result.status.reason}"
    if name in ("detect", "safety", "deepfake") and result.frame_count != frame_count:
        return f"read {result.frame_count} of {frame_count} frames"
    if name == "deepfake" and result.faces_found == 0:
        return "no faces found (the clip opens on zidane.jpg's two faces)"
    if name == "fingerprint" and len(result.frames) != frame_count:
        return f"{len(result.frames)} hashes for {frame_count} frames"
    if name == "embed" and result[1] != result[0]:
        return f"{result[1]} vectors for {result[0]} texts"
    return ""


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="input length, seconds")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument(
        "--cpu-threads", type=int, default=0, help="CPU threads per stage; 0 = library defaults"
    )
    ap.add_argument("--preset", default="veryfast", help="x264 preset for the ladder")
    ap.add_argument("--smoke", action="store_true", help="8 s clip, ultrafast, one round")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seconds, args.preset = 8.0, "ultrafast"

    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-vision-") as tmp:
        root = Path(tmp)
        source = root / "input-1080p.mp4"
        make_input(source, args.seconds)
        watch = SourceWatch(source)
        watch.install()

        settings = load_settings(data_dir=str(root / "data"), encode={"preset": args.preset})
        storage = LocalStorage(root / "data")
        watch.phase = "ingest"
        src = ingest_file(source, storage)

        watch.phase = "probe"
        info = probe(source, settings.limits)
        plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)

        watch.phase = "ladder"
        t0 = time.perf_counter()
        ladder = encode_ladder(src, info, plan, settings, storage)
        ladder_seconds = time.perf_counter() - t0
        if ladder.frames_index is None:
            raise SystemExit("FAIL: the ladder sampled no frames (its frames_index is None)")
        folder = f"videos/{src.video_id}/{ladder.frames_index.rsplit('/', 1)[0]}"
        frames_dir = local_folder(storage, folder)

        watch.phase = "vision"
        stages = run_stages(
            frames_dir, info.duration_seconds, ladder.frame_count, args.device, args.cpu_threads
        )

    decode_passes = len(watch.ffmpeg_reads)
    vision_opens = watch.by_phase.get("vision", 0)
    print(f"vidpipe {__version__} · {platform.processor() or platform.machine()} · "
          f"{os.cpu_count()} cpus · python {platform.python_version()}")  # fmt: skip
    print(
        f"input {info.duration_seconds:.1f} s 1920x1080; ladder {[r.name for r in plan.video]}, "
        f"preset {args.preset}; encode_ladder {ladder_seconds:.1f} s (ffmpeg "
        f"{ladder.encode_wall_seconds:.1f} s); {ladder.frame_count} frames sampled"
    )
    print(
        f"source opens: ffmpeg decode passes {decode_passes}, PyAV probe opens "
        f"{watch.av_opens}, Python file opens {watch.python_opens}; by phase {watch.by_phase}"
    )
    head = ("stage", "cold s", "warm s", "cpu s", "others", "ms/frame", "RTF")
    print(f"{head[0]:<12}" + "".join(f"{h:>9}" for h in head[1:]) + "  result")
    for s in stages:
        per_frame = 1000 * s.warm_seconds / max(1, ladder.frame_count)
        print(
            f"{s.name:<12}{s.cold_seconds:>9.2f}{s.warm_seconds:>9.2f}{s.warm_cpu_seconds:>9.2f}"
            f"{s.other_load:>9.0%}{per_frame:>9.1f}{s.rtf:>9.4f}  {s.summary}"
        )
    busy_warning([Sample(s.warm_seconds, s.warm_cpu_seconds, s.other_load) for s in stages])
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "video_seconds": info.duration_seconds,
                    "frames": ladder.frame_count,
                    "decode_passes": decode_passes,
                    "probe_opens": watch.av_opens,
                    "vision_source_opens": vision_opens,
                    "ladder_seconds": ladder_seconds,
                    "stages": [s.__dict__ for s in stages],
                },
                indent=2,
            )
        )
    problems = [f"{s.name}: {s.problem}" for s in stages if s.problem]
    if decode_passes != 1:
        problems.append(f"the source was decoded {decode_passes} times, not once")
    if vision_opens:
        problems.append(f"vision stages opened the source {vision_opens} times")
    for p in problems:
        print(f"FAIL: {p}")
    rtf = " ".join(f"{s.name}_rtf={s.rtf:.4f}" for s in stages)
    print(f"RESULT decode_passes={decode_passes} {rtf}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
