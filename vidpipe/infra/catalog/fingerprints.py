"""Perceptual fingerprints: a video's 64-bit frame hashes and their times, and the
stored videos that share enough of them to be near-duplicate candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

from vidpipe.infra.catalog.errors import CatalogDataError
from vidpipe.infra.catalog.handle import Handle
from vidpipe.infra.catalog.records import StoredFingerprint
from vidpipe.infra.catalog.sql import (
    FINGERPRINT_CANDIDATES,
    UPSERT_FINGERPRINT,
    signed64,
    unsigned64,
)


class Fingerprints(Handle):
    """One fingerprint per video, written, read back, and matched by Hamming distance."""

    def put_fingerprint(
        self, video_id: str, hashes: Sequence[int], frame_times: Sequence[float]
    ) -> None:
        """Store the video's 64-bit frame hashes (unsigned or signed) and their times.

        Leave out frames that ``encoders.fingerprint`` marks ``flat``: their hashes are noise.
        """
        if len(hashes) != len(frame_times) or not hashes:
            raise CatalogDataError("a fingerprint needs one time per hash, and at least one")
        with self._tx() as cur:
            cur.execute(
                UPSERT_FINGERPRINT,
                {
                    "video_id": video_id,
                    "hashes": [signed64(h) for h in hashes],
                    "frame_times": [float(t) for t in frame_times],
                },
            )

    def get_fingerprint(self, video_id: str) -> StoredFingerprint | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT hashes, frame_times FROM fingerprints WHERE video_id = %s", (video_id,)
            ).fetchone()
        if row is None:
            return None
        return StoredFingerprint(
            tuple(unsigned64(h) for h in row["hashes"]), tuple(row["frame_times"])
        )

    def near_duplicate_candidates(
        self,
        hashes: Sequence[int],
        *,
        max_hamming: int = 10,
        min_frames: int = 3,
        exclude_video_id: str | None = None,
        limit: int = 20,
    ) -> list[str]:
        """Stored videos sharing at least ``min_frames`` of ``hashes`` within ``max_hamming``
        bits (``bit_count`` of the xor), most shared first.

        Candidates only: read each back with ``get_fingerprint`` and decide with
        ``encoders.fingerprint.match``. Cost grows with (query frames x all
        stored frames): fine for thousands of videos; beyond, index the hashes
        (pgvector ``bit(64)`` + HNSW ``bit_hamming_ops``).
        """
        if not hashes:
            return []
        with self._tx() as cur:
            cur.execute(
                FINGERPRINT_CANDIDATES,
                {
                    "hashes": [signed64(h) for h in hashes],
                    "exclude": exclude_video_id,
                    "max_hamming": int(max_hamming),
                    "min_frames": int(min_frames),
                    "limit": int(limit),
                },
            )
            return [str(r["video_id"]) for r in cur.fetchall()]
