"""Benchmark vidpipe's ladder stage against two bare-ffmpeg baselines, side by side.

One 1080p30 H.264 + AAC mp4 is generated (lavfi ``testsrc2`` + ``sine``),
probed and planned with vidpipe; then three ways of producing the same HLS
ladder are timed with the same ffmpeg binary, ladder and x264 preset:

(a) vidpipe's ladder stage, ``encode_ladder``, as it runs in production: one
    ffmpeg decode, a cascaded scale (each rung from the one above), every rung
    and the audio through one HLS muxer, the by-products (storyboard tiles,
    poster candidates, vision frames, 16 kHz ASR audio), every segment
    uploaded to (local) storage as ffmpeg closes it with EVENT playlists kept
    current, then measuring, validation, VOD playlists, thumbnails, upload.
(b) the bare single-decode command: vidpipe's own argv without the
    by-products, the cascade replaced by a plain ``split`` from the source.
(c) one ffmpeg per rung, one after another, each decoding the source (the
    audio rides with the first rung): vidpipe's argv for a one-rung plan.

(b) and (c) come from vidpipe's own builder, so codec, rate control, GOP,
keyframes and muxer cannot drift from (a). Wall time is ``perf_counter``;
CPU time is user+sys of this process and its children. Rounds rotate the
order; medians are reported, with the share of the CPUs other processes used.

Targets: a/b wall <= 1.00 (the production stage, live upload included, costs
no more than the bare command) and a/c wall <= 0.80.

    .venv/bin/python bench/ladder.py                # 20 s input, 3 rounds, veryfast
    .venv/bin/python bench/ladder.py --smoke        # 2 s, 1 round, ultrafast: CI

The last line is always ``RESULT a/b wall=.. cpu=.. | a/c wall=.. cpu=..``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from common import Sample, bare_ffmpeg, busy_warning, make_clip, timed

from vidpipe.encoders.encode import encode_ladder, transcode_job
from vidpipe.encoders.ladder import LadderPlan, plan_ladder
from vidpipe.encoders.probe import probe
from vidpipe.encoders.transcode import TranscodeJob, build_transcode_argv, prepare_dirs
from vidpipe.infra.ffmpeg import ffmpeg_exe
from vidpipe.infra.ingest import ingest_file
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import Settings, load_settings
from vidpipe.infra.storage import LocalStorage

TARGET_AB_WALL = 1.00
TARGET_AC_WALL = 0.80
VARIANTS = ("a", "b", "c")
LABELS = {
    "a": "(a) vidpipe ladder stage",
    "b": "(b) bare ffmpeg, split",
    "c": "(c) ffmpeg per rung",
}
_RUNG = re.compile(r"^\[(?P<src>[^\]]+)\](?P<body>.*?),(?:split=\d+|null)(?P<outs>(\[[^\]]+\])+)$")


def uncascaded(argv: list[str]) -> list[str]:
    """vidpipe's argv with each rung scaled from the source instead of the rung above."""
    i = argv.index("-filter_complex") + 1
    chains = argv[i].split(";")
    rungs, rest = [], []
    for chain in chains:
        m = _RUNG.match(chain)
        if m and re.search(r"\[v\d+\]", m["outs"]):
            label = re.search(r"\[(v\d+)\]", m["outs"])
            assert label is not None
            rungs.append((m["src"], m["body"], label.group(1)))
        else:
            rest.append(chain)
    src, top, _ = rungs[0]
    head, _, scale = top.partition("scale=")
    split = f"[{src}]{head}split={len(rungs)}" + "".join(f"[s{k}]" for k in range(len(rungs)))
    bodies = ["scale=" + scale] + [body for _, body, _ in rungs[1:]]
    graph = [split, *(f"[s{k}]{b}[{lbl}]" for k, (b, (_, _, lbl)) in
                      enumerate(zip(bodies, rungs, strict=True)))]  # fmt: skip
    out = list(argv)
    out[i] = ";".join(graph + rest)
    return out


def baselines(job: TranscodeJob, ffmpeg: str, root: Path) -> dict[str, list[list[str]]]:
    bare = replace(job, byproducts=False, layout=replace(job.layout, root=root / "b"))
    per_rung = []
    for i, rung in enumerate(job.plan.video):
        plan = LadderPlan((rung,), job.plan.audio if i == 0 else None)
        one = replace(bare, plan=plan, layout=replace(job.layout, root=root / "c"))
        per_rung.append(one)
    for j in (bare, *per_rung):
        prepare_dirs(j)
    return {
        "b": [uncascaded(build_transcode_argv(ffmpeg, bare))],
        "c": [build_transcode_argv(ffmpeg, j) for j in per_rung],
    }


def run_round(
    name: str, root: Path, source: Path, settings: Settings, commands: dict[str, list[list[str]]]
) -> Sample:
    if name == "a":
        data = root / "a"
        storage = LocalStorage(data)

        def stage() -> None:
            src = ingest_file(source, storage)
            info = probe(source, settings.limits)
            plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)
            encode_ladder(src, info, plan, settings, storage, write_master=True)

        return timed(stage)
    return timed(lambda: [bare_ffmpeg(argv) for argv in commands[name]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--ladder", default="default")
    parser.add_argument("--smoke", action="store_true", help="2 s input, 1 round, ultrafast")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.preset = 2.0, 1, "ultrafast"

    ffmpeg = ffmpeg_exe()
    samples: dict[str, list[Sample]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-ladder-") as tmp:
        root = Path(tmp)
        source = make_clip(root / "input.mp4", args.seconds, size="1920x1080", rate=30)
        settings = load_settings(
            data_dir=str(root / "a"), encode={"preset": args.preset, "ladder": args.ladder}
        )
        info = probe(source, settings.limits)
        plan = plan_ladder(info, load_ladder(args.ladder), settings.encode.fps_cap)
        job = transcode_job(source, info, plan, settings, root / "a-job")
        commands = baselines(job, ffmpeg, root)
        print(
            f"input: {args.seconds:g} s 1920x1080 30 fps; ladder {args.ladder!r}: "
            + ", ".join(f"{r.width}x{r.height}@{r.video_bitrate_kbps}k" for r in plan.video)
            + f"; preset {args.preset}; {os.cpu_count()} CPUs"
        )
        for rnd in range(args.repeats):
            order = VARIANTS[rnd % 3 :] + VARIANTS[: rnd % 3]
            cells = []
            for name in order:
                s = run_round(name, root, source, settings, commands)
                samples[name].append(s)
                cells.append(f"{name} {s.wall:6.2f} s / {s.cpu:6.2f} cpu ({s.others:.0%})")
            print(f"  round {rnd + 1}: " + "   ".join(cells), flush=True)

    wall = {v: statistics.median(s.wall for s in samples[v]) for v in VARIANTS}
    cpu = {v: statistics.median(s.cpu for s in samples[v]) for v in VARIANTS}
    print(f"{'variant':<28} {'wall s':>8} {'cpu s':>8}")
    for v in VARIANTS:
        print(f"{LABELS[v]:<28} {wall[v]:8.2f} {cpu[v]:8.2f}")
    busy_warning([s for v in VARIANTS for s in samples[v]])
    ab, ac = wall["a"] / wall["b"], wall["a"] / wall["c"]
    ab_cpu, ac_cpu = cpu["a"] / cpu["b"], cpu["a"] / cpu["c"]
    for name, got, target in (("a/b", ab, TARGET_AB_WALL), ("a/c", ac, TARGET_AC_WALL)):
        verdict = "PASS" if got <= target else "FAIL"
        print(f"{name} wall {got:.2f} (target <= {target:.2f}: {verdict})")
    if args.json:
        args.json.write_text(json.dumps({"wall": wall, "cpu": cpu, "a/b": ab, "a/c": ac}, indent=2))
    print(f"RESULT a/b wall={ab:.2f} cpu={ab_cpu:.2f} | a/c wall={ac:.2f} cpu={ac_cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
