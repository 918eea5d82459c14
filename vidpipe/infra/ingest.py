"""Bring an upload under vidpipe's control: hash it, name it, keep the original.

The video id is derived from the content (sha256), so the same bytes always
map to the same video and a re-run is idempotent. The original is stored at
``sources/{sha256}``: the file name the user chose is never used in a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidpipe.infra.errors import ConfigError, InvalidMedia, PermanentError
from vidpipe.infra.outputs import sha256_file
from vidpipe.infra.storage import Storage


@dataclass(frozen=True)
class SourceRef:
    """A reference to an ingested upload; what stages pass each other."""

    video_id: str
    sha256: str
    key: str  # storage key of the original
    size_bytes: int
    local_path: str | None = None  # where it already sits on this machine, if anywhere

    def local_file(self, storage: Storage, scratch: Path) -> Path:
        """A readable local copy: the upload itself when still here, else a download."""
        if self.local_path:
            path = Path(self.local_path)
            if path.is_file() and path.stat().st_size == self.size_bytes:
                return path
        return storage.fetch(self.key, scratch / "source")


def video_id_for(sha256: str) -> str:
    return f"v{sha256[:15]}"


def ingest_file(path: Path, storage: Storage, video_id: str | None = None) -> SourceRef:
    """Hash ``path`` and store the original once; safe to call again."""
    if not path.exists():
        raise InvalidMedia(f"{path} does not exist")
    if not path.is_file():
        raise InvalidMedia(f"{path} is not a regular file")
    digest = sha256_file(path)
    key = f"sources/{digest}"
    size = path.stat().st_size
    if storage.size(key) != size:
        storage.put_file(key, path)
    return SourceRef(
        video_id=video_id or video_id_for(digest),
        sha256=digest,
        key=key,
        size_bytes=size,
        local_path=str(path.resolve()),
    )


def stored_source(storage: Storage, sha256: str, video_id: str | None = None) -> SourceRef:
    """The original an upload service already stored at ``sources/{sha256}``."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ConfigError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    key = f"sources/{sha256}"
    size = storage.size(key)
    if size is None:
        raise PermanentError(
            f"no original at {storage.url(key)}: the upload was not stored where this "
            "worker looks (check storage settings), or it was removed"
        )
    return SourceRef(video_id or video_id_for(sha256), sha256, key, size)
