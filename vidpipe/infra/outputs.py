"""What stages write: files in storage with their sizes and hashes, and typed reports.

Every stage hands the next one references to what it wrote (``StoredFile``:
a key, a size, a sha256), never the bytes. An analysis stage's result is a
``Report``: the model's typed result with its per-frame data left out, and the
file in storage that holds all of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from vidpipe.infra.storage import Storage


@dataclass(frozen=True)
class StoredFile:
    """A file a stage wrote, as it is in storage."""

    key: str  # relative to videos/{id}/
    bytes: int
    sha256: str


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def upload_file(storage: Storage, path: Path, base: str, rel: str) -> StoredFile:
    """Upload ``path`` to ``{base}/{rel}``; its entry for the manifest."""
    storage.put_file(f"{base}/{rel}", path)
    return StoredFile(rel, path.stat().st_size, sha256_file(path))


def upload_tree(
    storage: Storage, root: Path, base: str, prefix: str, skip: Iterable[str] = ()
) -> tuple[StoredFile, ...]:
    """Upload every file under ``root`` to ``{base}/{prefix}/...``, playlists last.

    ``skip`` names keys (relative to ``base``) already uploaded.
    """
    done = set(skip)
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: (p.suffix == ".m3u8", str(p)),
    )
    stored = []
    for path in files:
        rel = f"{prefix}/{path.relative_to(root).as_posix()}"
        if rel not in done:
            stored.append(upload_file(storage, path, base, rel))
    return tuple(stored)


class Summarised(Protocol):
    """A model's result that can say itself as JSON."""

    def to_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Summarised)


@dataclass(frozen=True)
class Report(Generic[T]):
    """An analysis stage's result: the typed summary and the file with everything."""

    result: T  # per-frame data emptied (a fingerprint keeps its hashes); all of it is in ``file``
    file: StoredFile

    @property
    def files(self) -> tuple[StoredFile, ...]:
        return (self.file,)

    def manifest(self) -> dict[str, Any]:
        """The manifest's entry: the summary without per-frame lists, and where the rest is."""
        body = {k: v for k, v in self.result.to_dict().items() if k not in PER_FRAME_KEYS}
        return body | {"file": self.file.key}


PER_FRAME_KEYS = frozenset({"frames"})  # what the manifest leaves to the file


def store_json(
    storage: Storage, base: str, rel: str, data: dict[str, Any], scratch: Path
) -> StoredFile:
    """Write ``data`` as compact JSON at ``{base}/{rel}``."""
    path = scratch / Path(rel).name
    path.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return upload_file(storage, path, base, rel)
