"""What happens when the last byte of an upload arrives.

1. The store makes the staged bytes one object (S3: complete the multipart
   upload) and the file is streamed once to compute its sha256; a
   concatenated upload was hashed while it was assembled.
2. If the client declared a sha256 in its metadata and it differs, the
   upload is marked failed with that reason, its bytes are dropped, and
   nothing else happens.
3. The original goes to ``sources/{sha256}`` in the main storage (a hard link
   on local disk, a server-side copy on S3), where the pipeline expects it;
   only then, and once that is recorded, is the staged copy dropped.
4. ``on_complete(CompletedUpload)`` is called: the caller registers the
   video and starts the pipeline (``vidpipe.flows.intake``). If it fails, the
   upload stays "completed, not handed off" and the janitor calls it again;
   it must therefore be safe to call twice.

Each step runs with the upload's lock held, so it happens once at a time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from anyio import to_thread

from vidpipe.infra.storage import Storage
from vidpipe.infra.upload.db import Upload, UploadDB
from vidpipe.infra.upload.errors import UploadFailed
from vidpipe.infra.upload.stores import UploadStore

log = logging.getLogger("vidpipe.upload")


@dataclass(frozen=True)
class CompletedUpload:
    """A whole, checked original, stored at ``source_key`` in the main storage."""

    origin: str  # "tus:{upload id}" or "s3:{bucket}/{key}"
    sha256: str
    size_bytes: int
    source_key: str  # sources/{sha256}
    metadata: Mapping[str, str] = field(default_factory=dict)  # sanitised
    upload_id: str | None = None


OnComplete = Callable[[CompletedUpload], None]


def source_key_for(sha256: str) -> str:
    return f"sources/{sha256}"


class Completer:
    def __init__(
        self, db: UploadDB, store: UploadStore, storage: Storage, on_complete: OnComplete
    ) -> None:
        self.db, self.store, self.storage, self.on_complete = db, store, storage, on_complete

    async def finish(self, upload: Upload, known_sha256: str | None = None) -> None:
        """Steps 1-4 for an upload whose bytes all arrived; ``UploadFailed`` on a
        sha256 mismatch. Partial uploads (concatenation) are only assembled."""
        await to_thread.run_sync(self.store.assemble, upload)
        if upload.concat == "partial":
            await self.db.completed(upload.id, None, None)
            return
        if known_sha256 is None:
            known_sha256 = await to_thread.run_sync(self.store.sha256, upload)
        digest = known_sha256
        declared = upload.metadata.get("sha256", "").lower()
        if declared and declared != digest:
            reason = (
                f"the uploaded file's sha256 is {digest}, not the {declared} the client declared; "
                "upload it again"
            )
            await to_thread.run_sync(self.store.delete, upload)
            await self.db.failed(upload.id, reason)
            log.warning("upload %s failed: %s", upload.id, reason)
            raise UploadFailed(reason)
        key = source_key_for(digest)
        await to_thread.run_sync(self.store.promote, upload, key, self.storage)
        await self.db.completed(upload.id, digest, key)
        try:
            await to_thread.run_sync(self.store.delete, upload)  # the staged copy
        except Exception:
            log.warning("dropping the staged copy of %s failed; the janitor sweeps it", upload.id)
        await self.hand_off(replace(upload, status="completed", sha256=digest, source_key=key))

    async def hand_off(self, upload: Upload) -> bool:
        """Step 4; False (and logged) if the callback failed, for the janitor to retry."""
        assert upload.sha256 and upload.source_key and upload.length is not None
        done = CompletedUpload(
            origin=f"tus:{upload.id}",
            sha256=upload.sha256,
            size_bytes=upload.length,
            source_key=upload.source_key,
            metadata=dict(upload.metadata),
            upload_id=upload.id,
        )
        try:
            await to_thread.run_sync(self.on_complete, done)
        except Exception:
            log.exception("handing off upload %s failed; the janitor retries", upload.id)
            return False
        await self.db.handed_off(upload.id)
        log.info("upload %s complete: %s, %d bytes", upload.id, done.source_key, done.size_bytes)
        return True

    async def concatenate(self, final: Upload, partials: list[Upload]) -> None:
        """Assemble a final upload from its finished partials, hashing on the way, then
        finish it. Starts over if an earlier attempt left bytes behind."""
        if await to_thread.run_sync(self.store.offset, final):
            await to_thread.run_sync(self.store.delete, final)
            multipart = await to_thread.run_sync(self.store.create, final.id)
            final = replace(final, multipart_id=multipart)
            await self.db.set_multipart(final.id, final.multipart_id)
        digest = await to_thread.run_sync(self._copy_partials, final, partials)
        assert final.length is not None
        final = await self.db.progressed(final.id, final.length, final.expires_at)
        await self.finish(final, known_sha256=digest)

    def _copy_partials(self, final: Upload, partials: list[Upload]) -> str:
        digest = hashlib.sha256()
        writer = self.store.open_writer(final, atomic=True)
        try:
            for partial in partials:
                for block in self.store.read_blocks(partial):
                    digest.update(block)
                    writer.write(block)
        except BaseException:
            writer.discard()
            raise
        writer.commit(final=True)
        return digest.hexdigest()
