"""Nudity screening of the sampled frames with NudeNet's detector (ONNX).

NudeNet 3.4 ships ``320n.onnx``, a YOLOv8n-style detector with 18 body-part
classes. This module runs it with onnxruntime directly (batched) with the
pre-processing of ``nudenet.NudeDetector``, bit for bit: pad to a square at
the bottom right, resize to 320, scale to 0..1, channels in BGR order. (NudeNet
swaps channels twice, ``cvtColor(RGBA2BGR)`` then ``swapRB=True``, so the
network sees BGR; its scores, and so any threshold tuned on NudeNet, come
from that.) It reads the raw output: each anchor keeps only its best class, as
NudeNet does, and a frame's score is the highest anchor score among the
*explicit* classes. No NMS is needed for a maximum.

Explicit by default: exposed genitalia (female, male), exposed female
breasts, exposed buttocks and anus. Exposed belly, armpits, feet and male
chest, covered parts and faces do not count. A video is ``flagged`` when at
least ``min_flagged_frames`` sampled frames score at or above ``threshold``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import ConfigError
from vidpipe.models import loader
from vidpipe.models.vision import OK, StageStatus, batches, load_bgr, read_index

STAGE_VERSION = "1"
PACKAGED_MODEL = ("nudenet", "320n.onnx")

# Output order of nudenet's 320n.onnx (nudenet/nudenet.py, ``__labels``).
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
EXPLICIT_LABELS = (
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)


@dataclass(frozen=True)
class SafetyOptions:
    """How to screen. Every field is part of the stage's cache key."""

    model: str = ""  # ONNX path; "" = nudenet's packaged 320n.onnx
    class_names: tuple[str, ...] = NUDENET_LABELS  # the model's output classes, in order
    explicit: tuple[str, ...] = EXPLICIT_LABELS  # classes whose score counts
    threshold: float = 0.6  # a frame scoring at or above this is flagged, 0..1
    min_flagged_frames: int = 1  # flagged frames needed to flag the video
    input_size_px: int = 320  # square model input side
    channel_order: Literal["bgr", "rgb"] = "bgr"  # what NudeNet 3.4 feeds its model
    batch_size: int = 16  # frames per forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 0  # onnxruntime intra-op threads; 0 = its default


@dataclass(frozen=True)
class FrameSafety:
    t: float  # seconds
    score: float  # best explicit-class score, 0..1; 0 when none
    label: str | None  # the class that scored it

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "score": round(self.score, 4), "label": self.label}


@dataclass(frozen=True)
class SafetyResult:
    status: StageStatus
    verdict: Literal["flagged", "ok"]
    max_score: float
    max_score_t: float | None  # seconds; None when no frames
    threshold: float
    flagged: tuple[float, ...]  # seconds of every frame at or above the threshold
    explicit: tuple[str, ...]
    frame_count: int
    frames: tuple[FrameSafety, ...]
    model: str
    model_sha256: str
    inference_seconds: float  # not in to_dict: timings go to the manifest's stages

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.safety/1",
            **self.status.to_dict(),
            "verdict": self.verdict,
            "max_score": round(self.max_score, 4),
            "max_score_t": self.max_score_t,
            "threshold": self.threshold,
            "flagged": list(self.flagged),
            "explicit": list(self.explicit),
            "frame_count": self.frame_count,
            "frames": [f.to_dict() for f in self.frames],
            "model": self.model,
            "model_sha256": self.model_sha256,
        }


def preprocess(bgr: np.ndarray, size: int, channel_order: str = "bgr") -> np.ndarray:
    """NudeNet's input for one BGR frame: ``3×size×size`` float32 in 0..1."""
    import cv2

    h, w = bgr.shape[:2]
    side = max(h, w)
    padded = cv2.copyMakeBorder(bgr, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT)
    blob = cv2.dnn.blobFromImage(
        padded, 1 / 255.0, (size, size), (0, 0, 0), swapRB=channel_order == "rgb"
    )
    return np.asarray(blob[0], dtype=np.float32)


def class_maxima(output: np.ndarray, n_classes: int) -> np.ndarray:
    """Per frame and class, the best score of anchors whose top class it is.

    ``output`` is the raw ``B×(4+C)×A`` YOLOv8 head (box, then class scores);
    returns ``B×C``.
    """
    scores = output[:, 4 : 4 + n_classes, :]
    best = scores.max(axis=1)  # B×A
    top = scores.argmax(axis=1)  # B×A
    mine = top[:, None, :] == np.arange(n_classes)[None, :, None]  # B×C×A
    return np.where(mine, best[:, None, :], 0.0).max(axis=2)


def screen(frames_dir: Path, options: SafetyOptions = SafetyOptions()) -> SafetyResult:
    """Score every sampled frame for explicit nudity and give a verdict.

    Raises ``FramesUnavailable`` when the frames are missing and ``ConfigError``
    when the model or onnxruntime cannot be loaded or the classes are unknown.
    """
    unknown = set(options.explicit) - set(options.class_names)
    if unknown:
        raise ConfigError(f"safety.explicit names unknown classes: {sorted(unknown)}")
    explicit_ids = [options.class_names.index(c) for c in options.explicit]
    frames = read_index(frames_dir)
    started = time.perf_counter()
    path = loader.model_path(options.model, *PACKAGED_MODEL)
    try:
        session = loader.ort_session(path, options.device, options.cpu_threads)
    except ImportError as exc:
        raise ConfigError(
            f"safety screening needs onnxruntime ({exc}); {loader.INSTALL_HINT}"
        ) from exc
    input_name = session.get_inputs()[0].name
    per_frame: list[FrameSafety] = []
    for batch in batches(frames, options.batch_size):
        blob = np.stack(
            [
                preprocess(load_bgr(f.path), options.input_size_px, options.channel_order)
                for f in batch
            ]
        )
        (output,) = session.run(None, {input_name: blob})[:1]
        maxima = class_maxima(np.asarray(output), len(options.class_names))[:, explicit_ids]
        for ref, row in zip(batch, maxima, strict=True):
            i = int(row.argmax()) if row.size else 0
            score = float(row[i]) if row.size else 0.0
            label = options.explicit[i] if score > 0 else None
            per_frame.append(FrameSafety(ref.t, score, label))
    top = max(per_frame, key=lambda f: f.score, default=None)
    flagged = tuple(f.t for f in per_frame if f.score >= options.threshold)
    return SafetyResult(
        status=OK,
        verdict="flagged" if len(flagged) >= max(1, options.min_flagged_frames) else "ok",
        max_score=top.score if top else 0.0,
        max_score_t=top.t if top else None,
        threshold=options.threshold,
        flagged=flagged,
        explicit=options.explicit,
        frame_count=len(frames),
        frames=tuple(per_frame),
        model=loader.model_label(options.model, *PACKAGED_MODEL),
        model_sha256=loader.file_sha256(path),
        inference_seconds=time.perf_counter() - started,
    )
