"""Transcript segments with their embeddings, and what search reads: the semantic
search over the segments of published videos (cosine distance, pgvector's HNSW
index) and the labels detected in published videos.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgvector import Vector

from vidpipe.infra.catalog.errors import CatalogDataError
from vidpipe.infra.catalog.handle import Handle
from vidpipe.infra.catalog.records import SearchHit, SeenLabel, TranscriptSegment
from vidpipe.infra.catalog.sql import (
    PUBLISHED_LABELS,
    SEARCH_ANY,
    SEARCH_LABEL,
    UPSERT_SEGMENT,
    check_embedding,
)


class Transcripts(Handle):
    """An attempt's transcript, written; published transcripts, searched."""

    def put_segments(
        self, video_id: str, attempt: str, segments: Sequence[TranscriptSegment]
    ) -> None:
        """Upsert the transcript of an attempt; searchable once that attempt is published."""
        rows = [
            {
                "video_id": video_id,
                "attempt": attempt,
                "idx": s.idx,
                "start_seconds": s.start_seconds,
                "end_seconds": s.end_seconds,
                "text": s.text,
                "language": s.language,
                "embedding": None if s.embedding is None else Vector(check_embedding(s.embedding)),
            }
            for s in segments
        ]
        with self._tx() as cur:
            cur.executemany(UPSERT_SEGMENT, rows)
            cur.execute(
                "DELETE FROM transcript_segments WHERE video_id = %s AND attempt = %s "
                "AND NOT (idx = ANY(%s))",
                (video_id, attempt, [r["idx"] for r in rows]),
            )

    def search(
        self,
        query_embedding: Sequence[float],
        limit: int = 10,
        label: str | None = None,
        snippet_chars: int = 200,
    ) -> list[SearchHit]:
        """Transcript segments of published videos nearest to ``query_embedding``
        (cosine, HNSW index), optionally only in videos where ``label`` was detected."""
        q = Vector(check_embedding(query_embedding))
        if not 1 <= limit <= 1000:
            raise CatalogDataError(f"search limit {limit} is outside 1..1000")
        params = {"q": q, "limit": limit, "label": label, "chars": snippet_chars}
        with self._tx() as cur:
            if limit > 40:  # hnsw.ef_search must be at least LIMIT to return LIMIT rows
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(limit),))
            cur.execute(SEARCH_ANY if label is None else SEARCH_LABEL, params)
            rows = cur.fetchall()
        return [
            SearchHit(
                video_id=r["video_id"],
                start_seconds=r["start_seconds"],
                end_seconds=r["end_seconds"],
                text=r["text"],
                score=float(r["score"]),
            )
            for r in rows
        ]

    def published_labels(self, limit: int = 100_000) -> list[SeenLabel]:
        """Every detection label of every published video, by label."""
        with self._conn() as conn:
            rows = conn.execute(PUBLISHED_LABELS, {"limit": limit}).fetchall()
        return [SeenLabel(**r) for r in rows]
