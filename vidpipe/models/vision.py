"""What every vision stage shares: the sampled frames, how a stage reports itself, and
boxes (IoU, non-maximum suppression).

The transcode decodes the source once and leaves ``frames/``: JPEGs (longest
side 640 px) named by their time in ms and ``index.json`` =
``[{"t": seconds, "file": "0000001000.jpg"}, ...]``. Vision stages read only
that directory; none of them ever opens the video. Frames are loaded lazily,
one batch at a time, so memory stays flat however long the video is.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from vidpipe.infra.errors import PermanentError

Status = Literal["ok", "unavailable", "error"]


class FramesUnavailable(PermanentError, FileNotFoundError):
    """The frames directory or its ``index.json`` is missing or malformed."""


@dataclass(frozen=True)
class StageStatus:
    """Whether a stage produced a real result. ``unavailable`` is never a guess."""

    status: Status
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason}


OK = StageStatus("ok")


@dataclass(frozen=True)
class FrameRef:
    t: float  # presentation time, seconds
    path: Path


def read_index(frames_dir: Path) -> list[FrameRef]:
    """The sampled frames in time order, checked to exist."""
    index = frames_dir / "index.json"
    try:
        rows = json.loads(index.read_text())
        frames = [FrameRef(float(r["t"]), frames_dir / str(r["file"])) for r in rows]
    except FileNotFoundError as exc:
        raise FramesUnavailable(f"no frames index at {index}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise FramesUnavailable(f"malformed frames index {index}: {exc}") from exc
    for f in frames:
        if f.path.parent != frames_dir or not f.path.is_file():
            raise FramesUnavailable(f"frames index names a missing frame: {f.path.name}")
    return sorted(frames, key=lambda f: f.t)


def batches(frames: Sequence[FrameRef], size: int) -> Iterator[Sequence[FrameRef]]:
    """Consecutive slices of at most ``size`` frames."""
    step = max(1, size)
    for i in range(0, len(frames), step):
        yield frames[i : i + step]


def load_rgb(path: Path) -> np.ndarray:
    """One frame as an ``H×W×3`` uint8 RGB array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def load_bgr(path: Path) -> np.ndarray:
    """One frame as an ``H×W×3`` uint8 BGR array (what OpenCV and ultralytics expect)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FramesUnavailable(f"cannot decode frame {path}")
    return np.asarray(image, dtype=np.uint8)


def frame_durations(times: Sequence[float], max_gap_seconds: float = 0.0) -> list[float]:
    """Seconds each sample stands for: the gap to the next sample, capped.

    The cap (``max_gap_seconds``; 0 means 1.5 × the median gap) keeps a hole in
    the sampling from counting as presence. The last sample stands for the
    median gap. One lone sample stands for 1 s.
    """
    if not times:
        return []
    gaps = [b - a for a, b in itertools.pairwise(times)]
    typical = statistics.median(gaps) if gaps else 1.0
    cap = max_gap_seconds if max_gap_seconds > 0 else 1.5 * typical
    return [min(max(g, 0.0), cap) for g in gaps] + [min(typical, cap)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.asarray(order)
        ious = box_iou(boxes[i], boxes[rest])
        order = [int(j) for j, o in zip(rest, ious, strict=True) if o < iou]
    return keep


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``x1,y1,x2,y2`` box with each row of ``others``."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))
