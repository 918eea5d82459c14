"""NudeNet 3.4's part detector (``320n.onnx``), decoded as ``nudenet.NudeDetector`` does.

The frame is padded to a square at the bottom right, resized to the model's
input, scaled to 0..1 and fed in BGR order (NudeNet swaps channels twice, so
its network, and every threshold tuned on it, sees BGR). The raw YOLOv8 head
is decoded per frame: each anchor keeps only its best class, anchors below
the minimum score are dropped, then NMS per class. ``safety`` holds the rule
that turns these boxes into a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidpipe.models.vision import nms

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


@dataclass(frozen=True)
class PartBox:
    """One detector box: class, score, and ``x1, y1, x2, y2`` as fractions of the frame."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(v, 4) for v in self.box],
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


def decode_boxes(
    head: np.ndarray,
    class_names: Sequence[str],
    frame_size: tuple[int, int],
    input_size: int,
    min_score: float,
    iou: float,
) -> list[PartBox]:
    """One frame's raw ``(4+C)×A`` head → boxes after per-class NMS, as NudeNet decodes it.

    Each anchor keeps only its best class. Boxes come back as fractions of the
    frame (``frame_size`` = width, height); the frame was padded at the bottom
    right to a square before being resized to ``input_size``.
    """
    n = len(class_names)
    scores = head[4 : 4 + n, :]
    best = scores.max(axis=0)
    cls = scores.argmax(axis=0)
    keep = best >= min_score
    if not keep.any():
        return []
    w, h = frame_size
    scale = input_size / max(w, h)
    cx, cy, bw, bh = (head[i, keep] / scale for i in range(4))
    boxes = np.stack(
        [(cx - bw / 2) / w, (cy - bh / 2) / h, (cx + bw / 2) / w, (cy + bh / 2) / h], axis=1
    )
    boxes = np.clip(boxes, 0.0, 1.0)
    kept_scores, kept_cls = best[keep], cls[keep]
    out: list[PartBox] = []
    for c in np.unique(kept_cls):
        mine = np.nonzero(kept_cls == c)[0]
        for i in nms(boxes[mine], kept_scores[mine], iou):
            b = boxes[mine[i]]
            box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            out.append(PartBox(class_names[int(c)], float(kept_scores[mine[i]]), box))
    return sorted(out, key=lambda p: -p.score)
