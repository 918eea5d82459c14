"""The analysis stages' bodies: models over the frames and transcript a ladder left.

detections (YOLO), safety (NudeNet), deepfake (faces, then a classifier) and
embeddings (MiniLM over the transcript and labels). None of them decodes the
video: they read the attempt's sampled ``frames/`` from storage, fetched once
per process and shared. Each writes its full result to
``videos/{id}/{out}.json`` and returns a ``Report``: the model's typed result
without the per-frame data, and that file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from vidpipe.infra.config import options_from
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import Report, store_json
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import Storage, local_folder
from vidpipe.models.deepfake import DeepfakeOptions, DeepfakeResult
from vidpipe.models.detect import Detections, DetectOptions, LabelSummary
from vidpipe.models.safety import SafetyOptions, SafetyResult


def _frames_folder(source: SourceRef, frames_index: str) -> str:
    return f"videos/{source.video_id}/{frames_index.rsplit('/', 1)[0]}"


def _store(
    storage: Storage, settings: Settings, source: SourceRef, out: str, data: dict[str, Any]
) -> Any:
    with scratch_dir(settings.work_dir / source.video_id, out.replace("/", "-")) as tmp:
        return store_json(storage, f"videos/{source.video_id}", f"{out}.json", data, tmp)


Result = TypeVar("Result", Detections, SafetyResult, DeepfakeResult)


def _reported(
    result: Result, storage: Storage, settings: Settings, source: SourceRef, out: str
) -> Report[Result]:
    """The whole result in ``{out}.json``; the report keeps it without the per-frame data."""
    file = _store(storage, settings, source, out, result.to_dict())
    return Report(replace(result, frames=()), file)


def detections_stage(
    source: SourceRef, frames_index: str, settings: Settings, storage: Storage, out: str
) -> Report[Detections]:
    """Objects in every sampled frame, and how long each label is on screen."""
    from vidpipe.models.detect import detect

    label_map = tuple(settings.detect.label_map.items())
    options = options_from(DetectOptions, settings.detect, label_map=label_map)
    frames = local_folder(storage, _frames_folder(source, frames_index))
    return _reported(detect(frames, options), storage, settings, source, out)


def safety_stage(
    source: SourceRef, frames_index: str, settings: Settings, storage: Storage, out: str
) -> Report[SafetyResult]:
    """The nudity verdict of the sampled frames."""
    from vidpipe.models.safety import screen

    options = options_from(SafetyOptions, settings.safety)
    frames = local_folder(storage, _frames_folder(source, frames_index))
    return _reported(screen(frames, options), storage, settings, source, out)


def deepfake_stage(
    source: SourceRef, frames_index: str, settings: Settings, storage: Storage, out: str
) -> Report[DeepfakeResult]:
    """Faces in the sampled frames and, with a classifier configured, whether they are fake."""
    from vidpipe.models.deepfake import check

    options = options_from(DeepfakeOptions, settings.deepfake)
    frames = local_folder(storage, _frames_folder(source, frames_index))
    return _reported(check(frames, options), storage, settings, source, out)


@dataclass(frozen=True)
class Embeddings:
    """What the embeddings stage indexed for search; the vectors are in the file."""

    status: str
    model: str
    dims: int
    language: str | None
    segments: int  # transcript segments embedded
    labels: tuple[str, ...]  # detection labels embedded

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "vidpipe.embeddings/2", "status": self.status, "model": self.model,
            "dims": self.dims, "language": self.language, "segments": self.segments,
            "labels": list(self.labels),
        }  # fmt: skip


def embeddings_stage(
    source: SourceRef,
    transcript_key: str | None,
    labels: tuple[LabelSummary, ...],
    settings: Settings,
    storage: Storage,
    out: str,
) -> Report[Embeddings]:
    """Embed transcript segments and detection labels (384-d MiniLM) for semantic search."""
    from vidpipe.models.embed import EmbedOptions, embed_texts, model_info

    options = replace(EmbedOptions(), text_model=settings.embed.text_model,
                      device=settings.embed.device)  # fmt: skip
    base = f"videos/{source.video_id}"
    segments: list[dict[str, Any]] = []
    language = None
    if transcript_key:
        transcript = json.loads(storage.get_bytes(f"{base}/{transcript_key}") or b"{}")
        language = transcript.get("language")
        segments = [
            {"start": s["start"], "end": s["end"], "text": s["text"]}
            for s in transcript.get("segments", [])
        ]
    names = tuple(s.label for s in labels)
    texts = [s["text"] for s in segments] + list(names)
    vectors = embed_texts(texts, options) if texts else []
    for seg, vec in zip(segments, vectors, strict=False):
        seg["embedding"] = vec
    info = model_info(options)
    summary = Embeddings("ok", info.name, info.dims, language, len(segments), names)
    data = summary.to_dict() | {
        "segments": segments,
        "labels_embedded": [
            {"label": lb, "embedding": v}
            for lb, v in zip(names, vectors[len(segments) :], strict=True)
        ],
    }
    return Report(summary, _store(storage, settings, source, out, data))
