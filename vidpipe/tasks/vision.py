"""Prefect shells: the stages that judge the frames the transcode sampled once.

detect (YOLO), safety (NudeNet), deepfake (faces → classifier), fingerprint
(DCT hashes, near-duplicates via the catalog) and embed (MiniLM over the
transcript and labels). None of them decodes the video: they read the
attempt's ``frames/`` from storage. Full per-frame results land at
``videos/{id}/analysis/{stage}-{options hash}.json``; the manifest gets a
summary and a pointer.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import task

from vidpipe.encoders import fingerprint
from vidpipe.encoders.pipeline import StageOutput, StoredFile, TranscodeResult, upload_tree
from vidpipe.infra.catalog import open_catalog
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.scratch import scratch_dir
from vidpipe.infra.settings import Settings, options_hash
from vidpipe.infra.storage import LocalStorage, Storage, open_storage
from vidpipe.tasks.common import RETRY_TRANSIENT, stage_cache

VERSIONS = {"detect": 1, "safety": 1, "deepfake": 1, "fingerprint": 1, "embed": 1}


_downloaded: dict[tuple[str, str], Path] = {}
_downloads_lock = threading.Lock()


def local_frames(storage: Storage, source: SourceRef, encoded: TranscodeResult) -> Path:
    """The attempt's sampled frames as a local directory: in place, or downloaded once.

    An attempt's frames never change, so a remote copy is fetched once per
    process and shared by every vision stage; it is removed when the process exits.
    """
    assert encoded.frames_index is not None
    key = f"videos/{source.video_id}/{encoded.frames_index.rsplit('/', 1)[0]}"
    if isinstance(storage, LocalStorage):
        return Path(storage.url(key))
    with _downloads_lock:
        cached = _downloaded.get((storage.identity(), key))
        if cached is not None and (cached / "index.json").is_file():
            return cached
        target = Path(tempfile.mkdtemp(prefix="vidpipe-frames-"))
        atexit.register(shutil.rmtree, target, ignore_errors=True)
        for name in storage.sizes(key):
            storage.fetch(name, target / Path(name).name)
        _downloaded[(storage.identity(), key)] = target
        return target


def _store(
    storage: Storage, settings: Settings, source: SourceRef, name: str, data: dict[str, Any]
) -> tuple[str, tuple[StoredFile, ...]]:
    """Write a stage's full result as ``analysis/{name}.json``; returns its key and file entry."""
    with scratch_dir(settings.work_dir / source.video_id, f"out-{name}") as tmp:
        out = tmp / "analysis"
        out.mkdir()
        (out / f"{name}.json").write_text(json.dumps(data, separators=(",", ":")))
        files = upload_tree(storage, out, f"videos/{source.video_id}", "analysis")
    return f"analysis/{name}.json", files


def _summary(data: dict[str, Any], drop: tuple[str, ...] = ("frames", "tracks")) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in drop}


def _opts(section: str, extra: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    def options(p: dict[str, Any]) -> str:
        s: Settings = p["settings"]
        encoded: TranscodeResult = p["encoded"]
        own = options_hash(getattr(s, section).model_dump(exclude={"enabled", "device"}))
        upstream = options_hash({"frames": encoded.frames_index}, open_storage(s).identity())
        return f"{own}.{upstream}" + (f".{options_hash(extra(p))}" if extra else "")

    return options


def _vision_task(name: str, options: Callable[[dict[str, Any]], str] | None = None) -> Any:
    return task(
        name=name,
        task_run_name=f"{name}-{{source.video_id}}",
        cache_policy=stage_cache(name, VERSIONS[name], options or _opts(name)),
        persist_result=True,
        **RETRY_TRANSIENT,
        tags=["vision", name],
    )


@_vision_task("detect")
def detect_objects(source: SourceRef, encoded: TranscodeResult, settings: Settings) -> StageOutput:
    from vidpipe.models.detect import DetectOptions, detect

    d = settings.detect
    options = replace(
        DetectOptions(), model=d.model, confidence=d.confidence, iou=d.iou,
        batch_size=d.batch_size, image_size_px=d.image_size_px, device=d.device,
        label_map=tuple(d.label_map.items()),
    )  # fmt: skip
    storage = open_storage(settings)
    frames = local_frames(storage, source, encoded)
    data = detect(frames, options).to_dict()
    key, files = _store(storage, settings, source, f"detections-{_key(settings, 'detect')}", data)
    return StageOutput("detections", _summary(data) | {"file": key}, files)


@_vision_task("safety")
def screen_safety(source: SourceRef, encoded: TranscodeResult, settings: Settings) -> StageOutput:
    from vidpipe.models.safety import SafetyOptions, screen

    s = settings.safety
    options = replace(SafetyOptions(), model=s.model, threshold=s.threshold, device=s.device)
    storage = open_storage(settings)
    frames = local_frames(storage, source, encoded)
    data = screen(frames, options).to_dict()
    key, files = _store(storage, settings, source, f"safety-{_key(settings, 'safety')}", data)
    summary = _summary(data) | {"file": key, "score": data.get("max_score")}
    return StageOutput("safety", summary, files)


@_vision_task("deepfake")
def check_deepfake(source: SourceRef, encoded: TranscodeResult, settings: Settings) -> StageOutput:
    from vidpipe.models.deepfake import DeepfakeOptions, check

    d = settings.deepfake
    options = replace(
        DeepfakeOptions(), classifier=d.classifier, face_detector=d.face_detector,
        threshold=d.threshold, device=d.device,
    )  # fmt: skip
    storage = open_storage(settings)
    frames = local_frames(storage, source, encoded)
    data = check(frames, options).to_dict()
    key, files = _store(storage, settings, source, f"deepfake-{_key(settings, 'deepfake')}", data)
    return StageOutput("deepfake", _summary(data) | {"file": key}, files)


def _fingerprint_options(p: dict[str, Any]) -> str:
    encoded: TranscodeResult = p["encoded"]
    return options_hash({"frames": encoded.frames_index}, open_storage(p["settings"]).identity())


@_vision_task("fingerprint", _fingerprint_options)
def fingerprint_video(
    source: SourceRef, encoded: TranscodeResult, settings: Settings
) -> StageOutput:
    storage = open_storage(settings)
    frames = local_frames(storage, source, encoded)
    fp = fingerprint.fingerprint(frames)
    data = fp.to_dict()
    key, files = _store(storage, settings, source, "fingerprint", data)
    usable = [f for f in fp.frames if not f.flat]
    duplicates: list[dict[str, Any]] = []
    if usable:
        with open_catalog(settings.database_url, settings.data_dir) as catalog:
            catalog.put_fingerprint(
                source.video_id, [f.hash for f in usable], [f.t for f in usable]
            )
            for dup in catalog.near_duplicates(
                [f.hash for f in usable], frame_times=[f.t for f in usable],
                exclude_video_id=source.video_id,
            ):  # fmt: skip
                duplicates.append(
                    {"video_id": dup.video_id, "overlap": round(dup.overlap, 3),
                     "offset_seconds": round(dup.offset_seconds, 2)}
                )  # fmt: skip
    summary = {
        "algorithm": fp.algorithm, "frames": len(fp.frames), "usable_frames": len(usable),
        "file": key, "near_duplicates": duplicates,
    }  # fmt: skip
    return StageOutput("fingerprint", summary, files)


def _embed_options(p: dict[str, Any]) -> str:
    s: Settings = p["settings"]
    inputs = [o.summary.get("transcript") or o.summary.get("file") for o in p["inputs"]]
    own = options_hash(s.embed.model_dump(exclude={"enabled", "device"}))
    return f"{own}.{options_hash({'inputs': inputs}, open_storage(s).identity())}"


@task(
    name="embed",
    task_run_name="embed-{source.video_id}",
    cache_policy=stage_cache("embed", VERSIONS["embed"], _embed_options),
    persist_result=True,
    **RETRY_TRANSIENT,
    tags=["embed"],
)
def embed_for_search(
    source: SourceRef, inputs: list[StageOutput], settings: Settings
) -> StageOutput:
    """Embed transcript segments and detection labels (384-d MiniLM) for semantic search."""
    from vidpipe.models.embed import EmbedOptions, embed_texts, model_info

    options = replace(
        EmbedOptions(),
        text_model=settings.embed.text_model,
        image_weights=settings.embed.image_weights,
        device=settings.embed.device,
    )
    storage = open_storage(settings)
    base = f"videos/{source.video_id}"
    by_name = {o.name: o for o in inputs}
    segments: list[dict[str, Any]] = []
    language = None
    if (cap := by_name.get("captions")) and cap.summary.get("segments"):
        transcript = json.loads(storage.get_bytes(f"{base}/{cap.summary['transcript']}") or b"{}")
        language = transcript.get("language")
        segments = [
            {"start": s["start"], "end": s["end"], "text": s["text"]}
            for s in transcript.get("segments", [])
        ]
    labels = (
        [s["label"] for s in by_name["detections"].summary.get("labels", [])]
        if ("detections" in by_name)
        else []
    )
    vectors = (
        embed_texts([s["text"] for s in segments] + labels, options) if (segments or labels) else []
    )
    for seg, vec in zip(segments, vectors, strict=False):
        seg["embedding"] = vec
    info = model_info(options)
    data = {
        "schema": "vidpipe.embeddings/1", "model": info.name, "dims": info.dims,
        "language": language, "segments": segments,
        "labels": [{"label": lb, "embedding": v}
                   for lb, v in zip(labels, vectors[len(segments):], strict=True)],
    }  # fmt: skip
    key, files = _store(storage, settings, source, f"embeddings-{_key(settings, 'embed')}", data)
    summary = {
        "status": "ok", "model": info.name, "dims": info.dims, "segments": len(segments),
        "labels": len(labels), "file": key,
        "images": {"status": "unavailable", "reason": "no open_clip weights configured"}
        if not settings.embed.image_weights else {"status": "configured"},
    }  # fmt: skip
    return StageOutput("embeddings", summary, files)


def _key(settings: Settings, section: str) -> str:
    return options_hash(getattr(settings, section).model_dump(exclude={"enabled", "device"}))
