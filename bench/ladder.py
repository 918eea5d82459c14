"""Benchmark vidpipe's ladder stage against two bare-ffmpeg baselines, in one run.

What it measures
----------------
One 1080p30 H.264 + AAC mp4 is generated once (lavfi ``testsrc2`` + ``sine``),
probed and planned with vidpipe, then three ways of producing the same HLS
ladder are timed with the same ffmpeg binary (``vidpipe.infra.ffmpeg.ffmpeg_exe``),
the same ladder and the same x264 preset:

(a) vidpipe: ``vidpipe.encoders.pipeline.encode_attempt``. One ffmpeg process
    decodes once, scales in a cascade (each rung from the rung above), encodes
    every rung plus the audio into HLS, and also writes its by-products
    (storyboard tiles, poster candidates and whatever else vidpipe's command
    adds; the run prints the list); then vidpipe measures and validates the
    HLS in Python. That is more work than (b) and (c) on purpose: it is what
    vidpipe runs.
(b) bare ffmpeg, one process: decode once, ``split``, scale every rung from the
    source (no cascade), encode every rung plus the same audio into HLS.
(c) bare ffmpeg, one process per rung, run one after another; every process
    decodes the source itself. The audio rides along with the first rung.

(b) and (c) are cut out of vidpipe's own ``build_transcode_argv`` command, so
they cannot drift from it: the same input options, the same per-rung filters
(``fps`` once on the source, then vidpipe's ``scale``/``setsar``/``format``
chain per rung) and, verbatim, the same HLS (fMP4) outputs: codec, preset,
profile, bitrate, maxrate/bufsize, GOP, keyframe forcing, muxer. Only the
cascade becomes a plain split, and vidpipe's by-products are left out. The
run prints each rung's measured bitrate for all three as a check.

Wall time is ``time.perf_counter`` around each variant. CPU time is user + sys
of this process and its waited-for children (``resource.getrusage`` deltas of
RUSAGE_SELF and RUSAGE_CHILDREN), so (a)'s in-process measuring and validation
counts too. Each round runs a, b and c once, the order rotated each round so
drift and first-run effects hit all three alike; the table reports medians.
It also reports the share of the CPUs that other processes used meanwhile
("others", from /proc/stat): wall times taken on a busy machine are inflated
unevenly and not comparable, CPU times still are.

Targets: a/b wall <= 1.10 (vidpipe costs at most 10 % more than the textbook
command despite its thumbnails and validation) and a/c wall <= 0.80.

Run (defaults: 20 s input, 3 rounds, preset veryfast; about 2.5 min on an idle
2-core machine)::

    .venv/bin/python bench/ladder.py
    .venv/bin/python bench/ladder.py --seconds 10 --repeats 1 --preset ultrafast
    .venv/bin/python bench/ladder.py --json /tmp/ladder.json

The last line printed is always ``RESULT a/b wall=.. cpu=.. | a/c wall=.. cpu=..``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
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
from vidpipe.encoders.ladder import LadderPlan, plan_ladder
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


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    """One timed run of one variant."""

    wall: float
    cpu: float
    other: float | None = None  # share of all CPUs that other processes used meanwhile, 0..1
    ffmpeg_wall: float | None = None  # (a) only: what encode_attempt reports for ffmpeg
    ffmpeg_cpu: float | None = None


def _cpu_seconds() -> float:
    """User + sys of this process and of every child it has waited for, so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all processes, incl. steal); Linux only."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _timed(fn: Callable[[], tuple[float, float] | None]) -> Sample:
    """Run ``fn`` and time it; ``fn`` may return ffmpeg's own (wall, cpu).

    Also records how much of the machine other processes used meanwhile: wall
    times taken on a busy machine are not comparable, CPU times still are.
    """
    busy0 = _machine_busy_seconds()
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    inner = fn()
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    busy1 = _machine_busy_seconds()
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = min(1.0, max(0.0, (busy1 - busy0 - cpu) / (wall * (os.cpu_count() or 1))))
    if inner is None:
        return Sample(wall, cpu, other)
    return Sample(wall, cpu, other, ffmpeg_wall=inner[0], ffmpeg_cpu=inner[1])


def _run(argv: Sequence[str]) -> None:
    """Run one ffmpeg command to completion; stdout (``-progress``) is discarded."""
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"ffmpeg failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


# --------------------------------------------------------------------------- input


def make_input(ffmpeg: str, path: Path, seconds: float) -> None:
    """A 1920x1080 30 fps testsrc2 + stereo sine, as H.264 (ultrafast, crf 18) + AAC mp4."""
    _run(
        [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1920x1080:rate=30:duration={seconds:g}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={seconds:g}",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "192k",
            "-ac",
            "2",
            "-movflags",
            "+faststart",
            str(path),
        ]
    )


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


def _job(
    source: Path, info: VideoInfo, plan: LadderPlan, settings: Settings, out_dir: Path
) -> TranscodeJob:
    """The TranscodeJob encode_attempt builds, writing under ``out_dir``.

    Fields other than the source, plan and layout are the settings sections of
    the same name (``encode``, ``thumbnails``, ...), so a new section needs no edit here.
    """
    known: dict[str, Any] = {
        "source": source,
        "container": info.container,
        "duration_seconds": info.duration_seconds,
        "plan": plan,
        "layout": OutputLayout(out_dir),
    }
    values = {
        f.name: known[f.name] if f.name in known else getattr(settings, f.name)
        for f in dataclasses.fields(TranscodeJob)
    }
    return TranscodeJob(**values)


def split_vidpipe_argv(argv: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Cut vidpipe's command into its input part and its outputs.

    Input part: everything before ``-filter_complex`` (binary, global options,
    ``-f``/``-i``, metadata stripping). Outputs: each starts at its one ``-map``
    and ends with its path.
    """
    fc = list(argv).index("-filter_complex")
    head, rest = list(argv[:fc]), list(argv[fc + 2 :])
    starts = [i for i, arg in enumerate(rest) if arg == "-map"]
    return head, [rest[a:b] for a, b in zip(starts, [*starts[1:], len(rest)], strict=True)]


_CHAIN = re.compile(r"\[[^\]]+\](?P<body>.*),split=\d+(?P<outs>(?:\[[^\]]+\])+)")


def rung_filters(graph: str, labels: Sequence[str]) -> tuple[str, list[str]]:
    """vidpipe's filters per rung, without the cascade, from its filter graph.

    vidpipe's rung chains read ``[in]FILTERS,split=N[v0][next0]...``. Returns
    the filters the top rung applies before scaling (``fps=...``), which the
    baselines apply once to the source, and each rung's filters from ``scale=`` on.
    """
    bodies: dict[str, str] = {}
    for chain in graph.split(";"):
        if m := _CHAIN.fullmatch(chain):
            for out in re.findall(r"\[([^\]]+)\]", m["outs"]):
                bodies[out] = m["body"]
    filters = [bodies.get(label, "") for label in labels]
    head, _, top = filters[0].rpartition("scale=")
    filters[0] = "scale=" + top
    if not all(f.startswith("scale=") and "split" not in f for f in filters):
        raise SystemExit(f"cannot read vidpipe's rung filters; update rung_filters(): {graph}")
    return head.rstrip(","), filters


@dataclass(frozen=True)
class Baselines:
    textbook: tuple[str, ...]  # (b)
    per_rung: tuple[tuple[str, ...], ...]  # (c)
    extras: tuple[str, ...]  # outputs of vidpipe's command that (b) and (c) leave out


def baseline_commands(job: TranscodeJob, ffmpeg: str) -> Baselines:
    """(b)'s one command and (c)'s per-rung commands, cut out of vidpipe's own command.

    Input options, per-rung filters and every HLS output (codec, rate control,
    GOP, muxer) are vidpipe's, verbatim; only the cascade becomes a plain split.
    """
    head, outputs = split_vidpipe_argv(build_transcode_argv(ffmpeg, job))
    by_path = {out[-1]: out for out in outputs}
    rungs, audio_plan = job.plan.video, job.plan.audio
    graph, labels = build_filtergraph(job)
    labels = labels[: len(rungs)]
    pre, filters = rung_filters(graph, labels)
    src = f"[0:v:0]{pre}," if pre else "[0:v:0]"

    rung_out = [by_path[str(job.layout.playlist(r.name))] for r in rungs]
    audio = by_path[str(job.layout.playlist(audio_plan.name))] if audio_plan else []
    used = [*rung_out, audio]
    extras = tuple(f"{out[1]} {Path(out[-1]).name}" for out in outputs if out not in used)

    pairs = list(zip(filters, labels, strict=True))
    graph_b = ";".join(
        [
            f"{src}split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs))),
            *(f"[s{i}]{flt}[{label}]" for i, (flt, label) in enumerate(pairs)),
        ]
    )
    textbook = [*head, "-filter_complex", graph_b]
    for out in rung_out:
        textbook += out
    textbook += audio

    per_rung = []
    for i, (flt, label) in enumerate(pairs):
        argv = [*head, "-filter_complex", f"{src}{flt}[{label}]", *rung_out[i]]
        if i == 0:
            argv += audio  # the audio rides with the first rung
        per_rung.append(tuple(argv))
    return Baselines(tuple(textbook), tuple(per_rung), extras)


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


def check_outputs(bench: Bench) -> list[str]:
    """Measure every variant's last HLS output; lines comparing the rungs side by side."""
    names = [r.name for r in bench.plan.video]
    if bench.plan.audio is not None:
        names.append(bench.plan.audio.name)
    lines = [
        f"{'rendition':<22} {'size':>9} {'segs':>4}   "
        + "   ".join(f"{v + ': avg kbps / MB':>18}" for v in VARIANTS)
    ]
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
        if any(
            (m.width, m.height, len(m.segments)) != (a.width, a.height, len(a.segments))
            for m in measured.values()
        ):
            lines.append(f"  WARNING: {name} differs in size or segment count between variants")
    return lines


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


@dataclass(frozen=True)
class Summary:
    """Medians per variant and the ratios the targets are about."""

    wall: dict[str, float]
    cpu: dict[str, float]
    other: dict[str, float | None]
    ab_wall: float
    ab_cpu: float
    ac_wall: float
    ac_cpu: float

    @property
    def ab_ok(self) -> bool:
        return self.ab_wall <= TARGET_AB_WALL

    @property
    def ac_ok(self) -> bool:
        return self.ac_wall <= TARGET_AC_WALL


def summarize(samples: dict[str, list[Sample]]) -> Summary:
    wall = {v: median([s.wall for s in samples[v]]) for v in VARIANTS}
    cpu = {v: median([s.cpu for s in samples[v]]) for v in VARIANTS}
    other: dict[str, float | None] = {}
    for v in VARIANTS:
        loads = [s.other for s in samples[v] if s.other is not None]
        other[v] = median(loads) if loads else None
    return Summary(
        wall,
        cpu,
        other,
        ab_wall=ratio(wall["a"], wall["b"]),
        ab_cpu=ratio(cpu["a"], cpu["b"]),
        ac_wall=ratio(wall["a"], wall["c"]),
        ac_cpu=ratio(cpu["a"], cpu["c"]),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def print_report(bench: Bench, summary: Summary, seconds: float) -> dict[str, float]:
    """The table, (a)'s breakdown and the ratios; returns (a)'s ffmpeg medians."""
    samples, repeats = bench.samples, len(bench.samples["a"])
    header = (
        f"{'variant':<32} {'wall s':>7} {'cpu s':>7} {'cpu/wall':>8} "
        f"{'x realtime':>10} {'others':>6}   wall s per round"
    )
    print(header)
    print("-" * len(header))
    for v in VARIANTS:
        wall, cpu = summary.wall[v], summary.cpu[v]
        print(
            f"{LABELS[v]:<32} {wall:7.2f} {cpu:7.2f} {ratio(cpu, wall):8.2f} "
            f"{ratio(seconds, wall):10.2f} {_pct(summary.other[v]):>6}   "
            + " ".join(f"{s.wall:.1f}" for s in samples[v])
        )
    print(
        f"medians of {repeats}; cpu = user+sys of this process and its ffmpeg children; "
        f"others = share of the {os.cpu_count()} CPUs other processes used meanwhile; "
        f"(c) runs {len(bench.plan.video)} processes"
    )
    busy = [s.other for v in VARIANTS for s in samples[v] if s.other and s.other > 0.10]
    if busy:
        print(
            f"WARNING: in {len(busy)} of {repeats * len(VARIANTS)} runs other processes used "
            f"over 10 % of the CPUs (up to {max(busy):.0%}); those wall times are inflated, "
            f"CPU times are not. Rerun on an idle machine if the medians are affected."
        )

    a = samples["a"]
    ff = {
        "wall": median([s.ffmpeg_wall or 0.0 for s in a]),
        "cpu": median([s.ffmpeg_cpu or 0.0 for s in a]),
    }
    post_wall = median([s.wall - (s.ffmpeg_wall or 0.0) for s in a])
    post_cpu = median([s.cpu - (s.ffmpeg_cpu or 0.0) for s in a])
    print()
    print(
        f"(a) ffmpeg: {ff['wall']:.2f} s wall / {ff['cpu']:.2f} s cpu "
        f"({ratio(ff['wall'], summary.wall['a']):.0%} of (a)'s wall); vidpipe around it "
        f"(dirs, HLS measure + validate): {post_wall:.2f} s wall / {post_cpu:.2f} s cpu"
    )
    print(
        f"(a) ffmpeg alone / (b): wall {ratio(ff['wall'], summary.wall['b']):.2f}, "
        f"cpu {ratio(ff['cpu'], summary.cpu['b']):.2f}"
    )
    best = {v: min(s.wall for s in samples[v]) for v in VARIANTS}
    print(
        f"fastest runs instead of medians: a/b wall {ratio(best['a'], best['b']):.2f}, "
        f"a/c wall {ratio(best['a'], best['c']):.2f}"
    )
    print()
    print(
        f"a/b  wall {summary.ab_wall:.2f}  cpu {summary.ab_cpu:.2f}   "
        f"target wall <= {TARGET_AB_WALL:.2f}: {'PASS' if summary.ab_ok else 'FAIL'}"
    )
    print(
        f"a/c  wall {summary.ac_wall:.2f}  cpu {summary.ac_cpu:.2f}   "
        f"target wall <= {TARGET_AC_WALL:.2f}: {'PASS' if summary.ac_ok else 'FAIL'}"
    )
    return ff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="input length (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of a+b+c (default 3)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    parser.add_argument("--ladder", default="default", help="ladder name or YAML path")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")

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
        baselines = baseline_commands(jobs["b"], ffmpeg)
        variants = {
            "a": Variant("a", jobs["a"]),
            "b": Variant("b", jobs["b"], (baselines.textbook,)),
            "c": Variant("c", jobs["c"], baseline_commands(jobs["c"], ffmpeg).per_rung),
        }
        bench = Bench(source, info, plan, settings, variants)

        rungs = ", ".join(f"{r.width}x{r.height}@{r.video_bitrate_kbps}k" for r in plan.video)
        audio = plan.audio.name if plan.audio else "no audio"
        print(f"vidpipe {__version__} | ffmpeg {ffmpeg}")
        print(
            f"host: {platform.machine()}, {os.cpu_count()} CPUs | "
            f"python {platform.python_version()}"
        )
        print(
            f"input: {args.seconds:g} s 1920x1080 30 fps testsrc2 + sine, "
            f"{source.stat().st_size / 1e6:.1f} MB (generated in {gen_seconds:.1f} s)"
        )
        print(
            f"ladder {args.ladder!r}: {rungs} + {audio}; x264 preset "
            f"{settings.encode.preset}, {settings.encode.segment_seconds} s "
            f"{settings.encode.segment_format} segments"
        )
        print(f"(a) also writes, (b) and (c) do not: {', '.join(baselines.extras) or 'nothing'}")
        print(f"targets: a/b wall <= {TARGET_AB_WALL:.2f}, a/c wall <= {TARGET_AC_WALL:.2f}")
        print(f"rounds: {args.repeats}, order rotated each round; wall s / cpu s (others)")
        sys.stdout.flush()

        for rnd in range(args.repeats):
            order = VARIANTS[rnd % 3 :] + VARIANTS[: rnd % 3]
            done = []
            for name in order:
                s = bench.run_once(name)
                done.append(f"{name} {s.wall:5.1f} / {s.cpu:5.1f} ({_pct(s.other)})")
            print(f"  round {rnd + 1}: " + "   ".join(done), flush=True)

        check = check_outputs(bench)

    print()
    print("outputs of the last round (HLS, fMP4):")
    for line in check:
        print("  " + line)
    print()
    summary = summarize(bench.samples)
    ff = print_report(bench, summary, args.seconds)

    if args.json:
        report: dict[str, Any] = {
            "vidpipe_version": __version__,
            "ffmpeg": ffmpeg,
            "cpus": os.cpu_count(),
            "seconds": args.seconds,
            "repeats": args.repeats,
            "preset": settings.encode.preset,
            "ladder": args.ladder,
            "plan": {
                "video": [asdict(r) for r in plan.video],
                "audio": asdict(plan.audio) if plan.audio else None,
            },
            "samples": {v: [asdict(s) for s in bench.samples[v]] for v in VARIANTS},
            "median": {
                v: {"wall": summary.wall[v], "cpu": summary.cpu[v], "others": summary.other[v]}
                for v in VARIANTS
            },
            "a_ffmpeg_median": ff,
            "ratios": {
                "a/b": {"wall": summary.ab_wall, "cpu": summary.ab_cpu},
                "a/c": {"wall": summary.ac_wall, "cpu": summary.ac_cpu},
            },
            "targets": {"a/b_wall": TARGET_AB_WALL, "a/c_wall": TARGET_AC_WALL},
            "pass": {"a/b": summary.ab_ok, "a/c": summary.ac_ok},
            "argv": {
                "a": build_transcode_argv(ffmpeg, variants["a"].job),
                "b": [list(c) for c in variants["b"].commands],
                "c": [list(c) for c in variants["c"].commands],
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"raw numbers: {args.json}")

    print(
        f"RESULT a/b wall={summary.ab_wall:.2f} cpu={summary.ab_cpu:.2f} | "
        f"a/c wall={summary.ac_wall:.2f} cpu={summary.ac_cpu:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
