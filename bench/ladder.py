"""Benchmark vidpipe's ladder stage against two bare-ffmpeg baselines, in one run.

What it measures
----------------
One 1080p30 H.264 + AAC mp4 is generated once (lavfi ``testsrc2`` + ``sine``),
probed and planned with vidpipe, then three ways of producing the same HLS
ladder are timed with the same ffmpeg binary (``vidpipe.infra.ffmpeg.ffmpeg_exe``),
the same ladder and the same x264 preset:

(a) vidpipe: ``vidpipe.encoders.pipeline.encode_attempt``. One ffmpeg process
    decodes once, scales in a cascade (each rung from the rung above), encodes
    every rung plus the audio into HLS, and also writes storyboard tiles and
    poster candidates; then vidpipe measures and validates the HLS in Python.
    This is more work than (b) and (c) on purpose: it is what vidpipe runs.
(b) bare ffmpeg, one process: decode once, ``split``, scale every rung from the
    source (no cascade), encode every rung plus the same audio into HLS.
(c) bare ffmpeg, one process per rung, run one after another; every process
    decodes the source itself. The audio rides along with the first rung.

(b) and (c) write the same HLS (fMP4) as (a): their per-output arguments (codec,
bitrate, maxrate/bufsize, GOP, keyframe forcing, profile, preset, HLS muxer) and
their input arguments are cut verbatim out of vidpipe's own
``build_transcode_argv``, and their per-rung filter (``fps``, ``scale``,
``setsar``, ``format``) is checked to appear in vidpipe's filter graph, so the
baselines cannot drift from what vidpipe encodes.

Wall time is ``time.perf_counter`` around each variant. CPU time is user + sys
of this process and its waited-for children (``resource.getrusage`` deltas of
RUSAGE_SELF and RUSAGE_CHILDREN), so (a)'s in-process measuring and validation
counts too. Each round runs a, b and c once, the order rotated each round so
drift and first-run effects hit all three alike; the table reports medians.

Targets: a/b wall <= 1.10 (vidpipe costs at most 10 % more than the textbook
command despite its thumbnails and validation) and a/c wall <= 0.80.

Run (defaults: 20 s input, 3 rounds, preset veryfast; ~5 min on 2 cores)::

    .venv/bin/python bench/ladder.py
    .venv/bin/python bench/ladder.py --seconds 10 --repeats 1 --preset ultrafast
    .venv/bin/python bench/ladder.py --json /tmp/ladder.json

The last line printed is always ``RESULT a/b wall=.. cpu=.. | a/c wall=.. cpu=..``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidpipe import __version__
from vidpipe.encoders import hls
from vidpipe.encoders.ladder import LadderPlan, Rendition, plan_ladder
from vidpipe.encoders.pipeline import encode_attempt
from vidpipe.encoders.probe import VideoInfo, probe
from vidpipe.encoders.transcode import (
    OutputLayout,
    TranscodeJob,
    build_filtergraph,
    build_transcode_argv,
    prepare_dirs,
)
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.settings import Settings, load_ladder, load_settings

TARGET_AB_WALL = 1.10
TARGET_AC_WALL = 0.80

VARIANTS = ("a", "b", "c")
LABELS = {
    "a": "(a) vidpipe encode_attempt",
    "b": "(b) ffmpeg 1 process, split",
    "c": "(c) ffmpeg 1 process per rung",
}
AUDIO_MAP = "0:a:0"


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    """One timed run of one variant."""

    wall: float
    cpu: float
    ffmpeg_wall: float | None = None  # (a) only: what encode_attempt reports for ffmpeg
    ffmpeg_cpu: float | None = None


def _cpu_seconds() -> float:
    """User + sys of this process and of every child it has waited for, so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _timed(fn: Callable[[], tuple[float, float] | None]) -> Sample:
    """Run ``fn`` and time it; ``fn`` may return ffmpeg's own (wall, cpu)."""
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    inner = fn()
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    if inner is None:
        return Sample(wall, cpu)
    return Sample(wall, cpu, ffmpeg_wall=inner[0], ffmpeg_cpu=inner[1])


def _run(argv: Sequence[str]) -> None:
    """Run one ffmpeg command to completion; stdout (``-progress``) is discarded."""
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"ffmpeg failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


# --------------------------------------------------------------------------- input


def make_input(ffmpeg: str, path: Path, seconds: float) -> None:
    """A 1920x1080 30 fps testsrc2 + stereo sine, as H.264 (ultrafast, crf 18) + AAC mp4."""
    _run([
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds:g}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-ac", "2",
        "-movflags", "+faststart", str(path),
    ])


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Variant:
    """Where a variant writes, and (for b and c) the ffmpeg commands it runs."""

    name: str
    job: TranscodeJob
    commands: tuple[tuple[str, ...], ...] = ()

    @property
    def out_dir(self) -> Path:
        return self.job.layout.root


def _job(source: Path, info: VideoInfo, plan: LadderPlan, settings: Settings,
         out_dir: Path) -> TranscodeJob:
    """The same TranscodeJob encode_attempt builds, writing under ``out_dir``."""
    return TranscodeJob(
        source=source,
        container=info.container,
        duration_seconds=info.duration_seconds,
        plan=plan,
        encode=settings.encode,
        thumbnails=settings.thumbnails,
        layout=OutputLayout(out_dir),
    )


def split_vidpipe_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Cut vidpipe's command into its input part and its outputs, keyed by ``-map`` target.

    Input part: everything before ``-filter_complex`` (binary, global options,
    ``-f``/``-i``, metadata stripping). Outputs: each starts at its one ``-map``
    and ends with its path; keys are ``[v0]``..``[vN]``, ``[tiles]``,
    ``[poster]`` and ``0:a:0``.
    """
    fc = list(argv).index("-filter_complex")
    head, rest = list(argv[:fc]), list(argv[fc + 2:])
    starts = [i for i, arg in enumerate(rest) if arg == "-map"]
    outputs: dict[str, list[str]] = {}
    for start, end in zip(starts, [*starts[1:], len(rest)], strict=True):
        chunk = rest[start:end]
        outputs[chunk[1]] = chunk
    return head, outputs


def rung_filter(rung: Rendition) -> str:
    """What vidpipe applies to each rung, without its cascade: scale, square pixels, 4:2:0."""
    return f"scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p"


def baseline_commands(
    job: TranscodeJob, ffmpeg: str
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(b)'s one command and (c)'s per-rung commands, built from vidpipe's own argv."""
    head, outputs = split_vidpipe_argv(build_transcode_argv(ffmpeg, job))
    graph, _ = build_filtergraph(job)
    rungs = job.plan.video
    fps = rungs[0].fps
    for rung in rungs:  # the baselines must filter exactly as vidpipe does, minus the cascade
        if rung_filter(rung) not in graph or f"fps={fps}," not in graph:
            raise SystemExit(f"vidpipe's filter graph changed; update rung_filter(): {graph}")
    audio = outputs[AUDIO_MAP] if job.plan.audio is not None else []

    splits = "".join(f"[s{i}]" for i in range(len(rungs)))
    textbook = ";".join([
        f"[0:v:0]fps={fps},split={len(rungs)}{splits}",
        *(f"[s{i}]{rung_filter(r)}[v{i}]" for i, r in enumerate(rungs)),
    ])
    one = [*head, "-filter_complex", textbook]
    for i in range(len(rungs)):
        one += outputs[f"[v{i}]"]
    one += audio

    per_rung = []
    for i, rung in enumerate(rungs):
        argv = [*head, "-filter_complex", f"[0:v:0]fps={fps},{rung_filter(rung)}[v{i}]",
                *outputs[f"[v{i}]"]]
        if i == 0:
            argv += audio
        per_rung.append(tuple(argv))
    return tuple(one), tuple(per_rung)


# --------------------------------------------------------------------------- running


@dataclass
class Bench:
    source: Path
    info: VideoInfo
    plan: LadderPlan
    settings: Settings
    variants: dict[str, Variant]
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {v: [] for v in VARIANTS})

    def run_once(self, name: str) -> Sample:
        variant = self.variants[name]
        shutil.rmtree(variant.out_dir, ignore_errors=True)
        if name == "a":
            def body() -> tuple[float, float]:
                _, _, wall, cpu = encode_attempt(
                    self.source, self.info, self.plan, self.settings, variant.out_dir
                )
                return wall, cpu
            sample = _timed(body)
        else:
            prepare_dirs(variant.job)  # the hls muxer does not create directories

            def bare() -> None:
                for argv in variant.commands:
                    _run(argv)
            sample = _timed(bare)
        self.samples[name].append(sample)
        return sample


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _fmt_runs(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def check_outputs(bench: Bench) -> list[str]:
    """Measure every variant's last HLS output; lines comparing the rungs side by side."""
    names = [r.name for r in bench.plan.video]
    if bench.plan.audio is not None:
        names.append(bench.plan.audio.name)
    lines = [f"{'rendition':<22} {'size':>9} {'segs':>4}   "
             + "   ".join(f"{v + ': avg kbps / MB':>18}" for v in VARIANTS)]
    for name in names:
        kind = "video" if name.startswith("avc") else "audio"
        measured = {v: hls.measure(bench.variants[v].out_dir, name, kind) for v in VARIANTS}
        a = measured["a"]
        size = f"{a.width}x{a.height}" if kind == "video" else "-"
        cells = "   ".join(
            f"{v}: {m.average_bps / 1000:7.0f} / {m.total_bytes / 1e6:5.1f}"
            for v, m in measured.items()
        )
        lines.append(f"{name:<22} {size:>9} {len(a.segments):>4}   {cells}")
        if any((m.width, m.height, len(m.segments)) != (a.width, a.height, len(a.segments))
               for m in measured.values()):
            lines.append(f"  WARNING: {name} differs in size or segment count between variants")
    return lines


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="input length (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of a+b+c (default 3)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    parser.add_argument("--ladder", default="default", help="ladder name or YAML path")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)

    ffmpeg = ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-") as tmp:
        root = Path(tmp)
        source = root / "input.mp4"
        t0 = time.perf_counter()
        make_input(ffmpeg, source, args.seconds)
        gen_seconds = time.perf_counter() - t0

        settings = load_settings(data_dir=root / "data", encode={"preset": args.preset})
        info = probe(source, settings.limits)
        plan = plan_ladder(info, load_ladder(args.ladder), settings.encode.fps_cap)
        jobs = {v: _job(source, info, plan, settings, root / v) for v in VARIANTS}
        textbook, _ = baseline_commands(jobs["b"], ffmpeg)
        _, per_rung = baseline_commands(jobs["c"], ffmpeg)
        variants = {
            "a": Variant("a", jobs["a"]),
            "b": Variant("b", jobs["b"], (textbook,)),
            "c": Variant("c", jobs["c"], per_rung),
        }
        bench = Bench(source, info, plan, settings, variants)

        rungs = ", ".join(f"{r.width}x{r.height}@{r.video_bitrate_kbps}k" for r in plan.video)
        audio = plan.audio.name if plan.audio else "none"
        print(f"vidpipe {__version__} | ffmpeg {ffmpeg}")
        print(f"host: {platform.machine()}, {os.cpu_count()} CPUs | "
              f"python {platform.python_version()}")
        print(f"input: {args.seconds:g} s 1920x1080 30 fps testsrc2 + sine, "
              f"{source.stat().st_size / 1e6:.1f} MB (generated in {gen_seconds:.1f} s)")
        print(f"ladder {args.ladder!r}: {rungs} + {audio}; preset {settings.encode.preset}, "
              f"{settings.encode.segment_seconds} s {settings.encode.segment_format} segments")
        print(f"rounds: {args.repeats} (order rotates each round)")
        sys.stdout.flush()

        for rnd in range(args.repeats):
            order = VARIANTS[rnd % 3:] + VARIANTS[:rnd % 3]
            done = []
            for name in order:
                s = bench.run_once(name)
                done.append(f"{name} {s.wall:.1f}s/{s.cpu:.1f}cpu")
            print(f"  round {rnd + 1}: " + "  ".join(done), flush=True)

        check = check_outputs(bench)

    walls = {v: [s.wall for s in bench.samples[v]] for v in VARIANTS}
    cpus = {v: [s.cpu for s in bench.samples[v]] for v in VARIANTS}
    med_wall = {v: median(walls[v]) for v in VARIANTS}
    med_cpu = {v: median(cpus[v]) for v in VARIANTS}

    print()
    print("outputs of the last round (HLS, fMP4):")
    for line in check:
        print("  " + line)
    print()
    header = (f"{'variant':<32} {'wall s':>7} {'cpu s':>7} {'cpu/wall':>8} "
              f"{'x realtime':>10}   wall runs")
    print(header)
    print("-" * len(header))
    for v in VARIANTS:
        print(f"{LABELS[v]:<32} {med_wall[v]:7.2f} {med_cpu[v]:7.2f} "
              f"{ratio(med_cpu[v], med_wall[v]):8.2f} {ratio(args.seconds, med_wall[v]):10.2f}"
              f"   {_fmt_runs(walls[v])}")
    print(f"(medians of {args.repeats}; cpu = user+sys of this process and its ffmpeg children; "
          f"(c) runs {len(plan.video)} processes)")

    ff_wall = median([s.ffmpeg_wall or 0.0 for s in bench.samples["a"]])
    ff_cpu = median([s.ffmpeg_cpu or 0.0 for s in bench.samples["a"]])
    post_wall = median([s.wall - (s.ffmpeg_wall or 0.0) for s in bench.samples["a"]])
    post_cpu = median([s.cpu - (s.ffmpeg_cpu or 0.0) for s in bench.samples["a"]])
    print()
    print(f"(a) breakdown: ffmpeg {ff_wall:.2f} s wall / {ff_cpu:.2f} s cpu "
          f"({ratio(ff_wall, med_wall['a']):.0%} of wall); vidpipe around it (dirs, HLS measure "
          f"+ validate) {post_wall:.2f} s wall / {post_cpu:.2f} s cpu")
    print(f"(a) ffmpeg alone vs (b): wall {ratio(ff_wall, med_wall['b']):.2f}, "
          f"cpu {ratio(ff_cpu, med_cpu['b']):.2f}")

    ab_wall, ab_cpu = ratio(med_wall["a"], med_wall["b"]), ratio(med_cpu["a"], med_cpu["b"])
    ac_wall, ac_cpu = ratio(med_wall["a"], med_wall["c"]), ratio(med_cpu["a"], med_cpu["c"])
    ab_ok, ac_ok = ab_wall <= TARGET_AB_WALL, ac_wall <= TARGET_AC_WALL
    print()
    print(f"a/b  wall {ab_wall:.2f}  cpu {ab_cpu:.2f}   target wall <= {TARGET_AB_WALL:.2f}: "
          f"{'PASS' if ab_ok else 'FAIL'}")
    print(f"a/c  wall {ac_wall:.2f}  cpu {ac_cpu:.2f}   target wall <= {TARGET_AC_WALL:.2f}: "
          f"{'PASS' if ac_ok else 'FAIL'}")

    if args.json:
        report: dict[str, Any] = {
            "vidpipe_version": __version__,
            "ffmpeg": ffmpeg,
            "cpus": os.cpu_count(),
            "seconds": args.seconds,
            "repeats": args.repeats,
            "preset": settings.encode.preset,
            "ladder": args.ladder,
            "plan": {"video": [asdict(r) for r in plan.video],
                     "audio": asdict(plan.audio) if plan.audio else None},
            "samples": {v: [asdict(s) for s in bench.samples[v]] for v in VARIANTS},
            "median": {v: {"wall": med_wall[v], "cpu": med_cpu[v]} for v in VARIANTS},
            "a_ffmpeg_median": {"wall": ff_wall, "cpu": ff_cpu},
            "ratios": {"a/b": {"wall": ab_wall, "cpu": ab_cpu},
                       "a/c": {"wall": ac_wall, "cpu": ac_cpu}},
            "targets": {"a/b_wall": TARGET_AB_WALL, "a/c_wall": TARGET_AC_WALL},
            "pass": {"a/b": ab_ok, "a/c": ac_ok},
            "argv": {
                "a": build_transcode_argv(ffmpeg, variants["a"].job),
                "b": [list(c) for c in variants["b"].commands],
                "c": [list(c) for c in variants["c"].commands],
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"raw numbers: {args.json}")

    print(f"RESULT a/b wall={ab_wall:.2f} cpu={ab_cpu:.2f} | "
          f"a/c wall={ac_wall:.2f} cpu={ac_cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
