"""Where unfinished uploads live: what every upload store does, and the part size.

Two stores: a local directory (``local_store``) and S3 multipart uploads
(``s3_store``). Both answer "how many bytes are durably here" from the data
itself, never from a counter, so an upload resumes on any process or host
after any crash. Every method blocks; the server calls them in worker threads.

Every upload gets a part size when it is created, whatever the store: S3's
multipart limits (at most 10,000 parts of 5 MiB to 5 GiB) decide it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from vidpipe.infra.storage import Storage
from vidpipe.infra.upload.db import UPLOAD_ID, Upload

BLOCK_BYTES = 1 << 20
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_BYTES = 5 * 1024 * 1024 * 1024


def part_size_for(length: int, configured: int) -> int:
    """The part size for an upload of ``length`` bytes: at least ``configured``, and
    large enough that it needs at most 10,000 parts (rounded up to a MiB)."""
    needed = -(-length // MAX_PARTS)
    mib = 1024 * 1024
    size = max(configured, MIN_PART_BYTES, -(-needed // mib) * mib)
    if size > MAX_PART_BYTES:
        raise ValueError(f"{length} bytes need parts over 5 GiB; S3 cannot take that upload")
    return size


def check_upload_id(upload_id: str) -> str:
    """``upload_id``, or ``ValueError``: it names a file or key, so it must be an upload id."""
    if not UPLOAD_ID.match(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return upload_id


@dataclass(frozen=True)
class Staged:
    """One staged thing: a file or object (``handle`` None) or a multipart upload."""

    upload_id: str
    name: str  # path or key
    created: datetime
    handle: str | None = None  # S3 UploadId


class Writer(ABC):
    """Appends one PATCH body at ``offset``; ``commit`` makes it count, ``discard`` undoes it."""

    offset: int  # the durable offset when the writer was opened
    written: int = 0

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self, final: bool) -> int:
        """Make what was written durable; the new offset. ``final``: the upload is whole."""

    @abstractmethod
    def discard(self) -> None:
        """Drop what this writer wrote; the offset stays where it was."""


class UploadStore(ABC):
    kind: str

    @abstractmethod
    def create(self, upload_id: str) -> str | None:
        """Make room for a new upload; an S3 multipart UploadId, or None."""

    @abstractmethod
    def offset(self, upload: Upload) -> int:
        """How many bytes of the upload are durably stored."""

    @abstractmethod
    def open_writer(self, upload: Upload, atomic: bool) -> Writer:
        """A writer at the upload's durable offset. ``atomic``: nothing counts before commit."""

    @abstractmethod
    def assemble(self, upload: Upload) -> None:
        """Make the staged bytes one readable object (S3: complete the multipart upload)."""

    @abstractmethod
    def read_blocks(self, upload: Upload) -> Iterator[bytes]:
        """The assembled bytes, streamed in blocks."""

    @abstractmethod
    def promote(self, upload: Upload, key: str, storage: Storage) -> None:
        """Put the assembled file at ``key`` in the main storage (a hard link or a
        server-side copy where it can). The staged bytes stay until ``delete``, so a crash
        in between leaves a whole upload that can be completed again."""

    @abstractmethod
    def delete(self, upload: Upload) -> None:
        """Drop everything staged for the upload (an S3 multipart upload is aborted)."""

    @abstractmethod
    def list_staged(self) -> list[Staged]:
        """Everything staged, by upload id. List first, then ask the database which ids
        are live: a row is always written before its upload's first staged byte."""

    @abstractmethod
    def remove_staged(self, items: list[Staged]) -> int:
        """Remove what ``list_staged`` found (an S3 multipart upload is aborted)."""

    def sha256(self, upload: Upload) -> str:
        digest = hashlib.sha256()
        for block in self.read_blocks(upload):
            digest.update(block)
        return digest.hexdigest()
