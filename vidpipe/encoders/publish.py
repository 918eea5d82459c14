"""Publish in steps: the manifest and the master playlist of a video.

Each step leaves a valid, atomic state: ``publish`` checks every file the new
master and manifest name is whole in storage, writes ``manifest.json``, then
``master.m3u8`` last. Step 2 publishes the finished VOD ladder, step 3 the
same master with the captions' SUBTITLES group; analysis results only update
the manifest (``update_manifest``), never the master.

Entries of the live manifest that this run has not (yet) produced are carried
over when they describe the same source, so a re-run of a finished video
writes nothing, and a reprocess keeps the old captions and analysis visible
until their new versions land.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from vidpipe import __version__
from vidpipe.encoders import hls
from vidpipe.encoders.encode import LadderResult
from vidpipe.encoders.probe import VideoInfo
from vidpipe.infra.errors import AttemptVanished
from vidpipe.infra.ingest import SourceRef
from vidpipe.infra.outputs import StoredFile
from vidpipe.infra.storage import Storage

SCHEMA = "vidpipe.manifest/2"


class Reported(Protocol):
    """What a stage's result gives the manifest: its summary and the files it wrote."""

    @property
    def files(self) -> tuple[StoredFile, ...]: ...

    def manifest(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PublishResult:
    video_id: str
    attempt: str
    master_url: str
    manifest_url: str
    changed: bool  # False when storage already held exactly this


def master_key(video_id: str) -> str:
    return f"videos/{video_id}/master.m3u8"


def manifest_key(video_id: str) -> str:
    return f"videos/{video_id}/manifest.json"


def live_manifest(storage: Storage, source: SourceRef) -> dict[str, Any]:
    """The published manifest of this video if it is of these very bytes, else ``{}``."""
    data = storage.get_bytes(manifest_key(source.video_id))
    if data is None:
        return {}
    try:
        manifest = json.loads(data)
    except ValueError:
        return {}
    same = manifest.get("schema") == SCHEMA and manifest["source"]["sha256"] == source.sha256
    return manifest if same else {}


def _entry(result: Reported) -> dict[str, Any]:
    return result.manifest() | {"files": [asdict(f) for f in result.files]}


def _rendition(r: hls.Rendition) -> dict[str, Any]:
    return asdict(r) | {"average_kbps": r.average_kbps, "peak_kbps": r.peak_kbps}


def _ladder_entry(ladder: LadderResult) -> dict[str, Any]:
    thumbs = None
    if ladder.poster:
        thumbs = {
            "poster": ladder.poster,
            "poster_is_blank": ladder.poster_is_blank,
            "storyboard": asdict(ladder.storyboard) if ladder.storyboard else None,
        }
    return {
        "attempt": ladder.attempt,
        "segment_format": ladder.segment_format,
        "duration_seconds": ladder.duration_seconds,
        "video": [_rendition(r) for r in ladder.video],
        "audio": _rendition(ladder.audio) if ladder.audio else None,
        "thumbnails": thumbs,
        "frames": {"index": ladder.frames_index, "count": ladder.frame_count},
        "notes": list(ladder.notes),
        "files": [asdict(f) for f in ladder.files],
    }


def build_manifest(
    source: SourceRef,
    info: VideoInfo,
    ladder: LadderResult,
    results: Mapping[str, Reported],
    stages: Mapping[str, Any],
    subtitles: Sequence[hls.SubtitleTrack],
    carried: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest: source facts, the ladder, each stage's summary and files, timings.

    ``carried`` holds entries of the live manifest for stages this run has
    not produced; ``extra`` adds facts to a stage's entry (the near-duplicates
    the catalog found for a fingerprint). ``content_sha256`` covers everything
    but timings, so publishing the same content twice is recognised and skipped.
    """
    body: dict[str, Any] = {
        "video_id": ladder.video_id,
        "kind": info.kind,
        "source": info.to_dict()
        | {"sha256": source.sha256, "size_bytes": source.size_bytes, "key": source.key},
        "master": {"uri": "master.m3u8", "subtitles": [asdict(t) for t in subtitles]},
        "ladder": _ladder_entry(ladder),
    }
    for name, entry in carried.items():
        if (
            name not in body
            and name not in results
            and isinstance(entry, dict)
            and "files" in entry
        ):
            body[name] = entry
    for name, result in sorted(results.items()):  # the same content whatever finished first
        body[name] = _entry(result) | dict((extra or {}).get(name, {}))
    body["files"] = [asdict(f) for f in sorted(manifest_files(body), key=lambda f: f.key)]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {
        "schema": SCHEMA,
        "vidpipe_version": __version__,
        "content_sha256": digest,
        **body,
        "stages": dict(stages),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def manifest_files(manifest: Mapping[str, Any]) -> list[StoredFile]:
    """Every file a manifest names, each once."""
    seen: dict[str, StoredFile] = {}
    for entry in manifest.values():
        if isinstance(entry, dict):
            for f in entry.get("files", []):
                seen.setdefault(f["key"], StoredFile(f["key"], f["bytes"], f["sha256"]))
    return list(seen.values())


def carried_subtitles(carried: Mapping[str, Any]) -> tuple[hls.SubtitleTrack, ...]:
    """The SUBTITLES tracks the live master carries, to keep through a re-publish."""
    master = carried.get("master") or {}
    return tuple(hls.SubtitleTrack(**t) for t in master.get("subtitles", []))


def _missing(storage: Storage, base: str, files: Sequence[StoredFile]) -> list[str]:
    """Keys of ``files`` that are absent from storage or have the wrong size."""
    listed: dict[str, int] = {}
    for top in sorted({f.key.split("/", 1)[0] for f in files}):
        listed |= storage.sizes(f"{base}/{top}")
    return [f.key for f in files if listed.get(f"{base}/{f.key}") != f.bytes]


def publish(
    storage: Storage, manifest: dict[str, Any], ladder: LadderResult,
    subtitles: Sequence[hls.SubtitleTrack],
) -> PublishResult:  # fmt: skip
    """Verify every file is in storage, then write manifest.json, and master.m3u8 last.

    Publishing content that is already live writes nothing. ``AttemptVanished``
    when files of the (cached) attempt are gone from storage.
    """
    video_id = ladder.video_id
    base = f"videos/{video_id}"
    outcome = PublishResult(
        video_id, ladder.attempt, storage.url(master_key(video_id)),
        storage.url(manifest_key(video_id)), changed=False,
    )  # fmt: skip
    master = hls.master_playlist(ladder.video, ladder.audio, subtitles=subtitles)
    current = storage.get_bytes(manifest_key(video_id))
    live = json.loads(current).get("content_sha256") if current is not None else None
    live_master = storage.get_bytes(master_key(video_id))
    if live == manifest["content_sha256"] and live_master == master.encode():
        return outcome
    files = manifest_files(manifest)
    missing = _missing(storage, base, files)
    if missing:
        raise AttemptVanished(
            f"attempt {ladder.attempt} is incomplete in storage ({len(missing)} files missing, "
            f"e.g. {missing[0]}); a fresh attempt will be encoded"
        )
    hls.validate_master(master, {f.key: f.bytes for f in files})
    if live != manifest["content_sha256"]:
        storage.put_bytes(manifest_key(video_id), json.dumps(manifest, indent=2).encode())
    if live_master != master.encode():
        storage.put_bytes(master_key(video_id), master.encode())
    return PublishResult(
        video_id, ladder.attempt, outcome.master_url, outcome.manifest_url, changed=True
    )


def update_manifest(storage: Storage, manifest: dict[str, Any]) -> bool:
    """Write ``manifest`` unless the live one has the same content; never touches the master."""
    video_id = manifest["video_id"]
    current = storage.get_bytes(manifest_key(video_id))
    if (
        current is not None
        and json.loads(current).get("content_sha256") == manifest["content_sha256"]
    ):
        return False
    files = manifest_files(manifest)
    missing = _missing(storage, f"videos/{video_id}", files)
    if missing:
        raise AttemptVanished(f"{missing[0]} is missing from storage; re-run the stage")
    storage.put_bytes(manifest_key(video_id), json.dumps(manifest, indent=2).encode())
    return True


def withdraw_live(storage: Storage, video_id: str) -> bool:
    """Remove the master if it is an EVENT ladder that will never finish (nothing half published).

    A VOD master (a finished, earlier publish) is left as it is.
    """
    data = storage.get_bytes(master_key(video_id))
    if data is None or manifest_exists(storage, video_id):
        return False
    storage.delete(master_key(video_id))
    return True


def manifest_exists(storage: Storage, video_id: str) -> bool:
    """A manifest is written only with a VOD master: its presence means a whole video is out."""
    return storage.exists(manifest_key(video_id))
