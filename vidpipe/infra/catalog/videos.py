"""The catalog's videos: their rows, their status transitions, and what gets published.

``published_attempt`` is what viewers get: it flips, together with that
attempt's renditions and assets, in one transaction in ``publish``, and stays
pointing at the last good attempt while a reprocess runs or fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from vidpipe.infra.catalog.errors import CatalogDataError, IllegalTransition, VideoNotFound
from vidpipe.infra.catalog.handle import Handle
from vidpipe.infra.catalog.records import (
    TRANSITIONS,
    Asset,
    NewVideo,
    PublishOutcome,
    RenditionRow,
    Video,
    VideoStatus,
)
from vidpipe.infra.catalog.sql import (
    SHA256,
    UPSERT_ASSET,
    UPSERT_RENDITION,
    VIDEO_BY_ID,
    VIDEO_COLS,
    check_status,
    check_video_id,
    video_row,
)


class Videos(Handle):
    """A video's row from registration to publish, and the reads of it."""

    def register_video(self, new: NewVideo) -> Video:
        """The video's row, created as ``uploaded`` on first sight; safe to repeat."""
        check_video_id(new.video_id)
        if not SHA256.match(new.source_sha256):
            raise CatalogDataError(f"invalid sha256 {new.source_sha256!r}")
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO videos (id, source_sha256, size_bytes, source_key) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (new.video_id, new.source_sha256, new.size_bytes, new.source_key),
            )
            cur.execute(VIDEO_BY_ID, (new.video_id,))
            row = cur.fetchone()
        assert row is not None
        video = video_row(row)
        if video.source_sha256 != new.source_sha256:
            raise CatalogDataError(
                f"video {new.video_id} already holds a different source "
                f"({video.source_sha256[:12]}…); choose another video id"
            )
        return video

    def record_probe(
        self, video_id: str, probe: Mapping[str, Any], kind: str, duration_seconds: float
    ) -> None:
        """Store the probe's findings (``VideoInfo.to_dict()``, ``.kind``, duration)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE videos SET probe = %(probe)s, kind = %(kind)s, "
                "duration_seconds = %(dur)s WHERE id = %(id)s "
                "AND (probe, kind, duration_seconds) IS DISTINCT FROM "
                "(%(probe)s::jsonb, %(kind)s, %(dur)s::float8)",
                {
                    "probe": Jsonb(dict(probe)),
                    "kind": kind,
                    "dur": duration_seconds,
                    "id": video_id,
                },
            )
            if cur.rowcount == 0:
                self._require(cur, video_id)

    def set_status(self, video_id: str, status: VideoStatus, error: str | None = None) -> Video:
        """Move a video along ``TRANSITIONS``; a repeat of the current status is a no-op.

        ``published`` is only reachable through ``publish``.
        """
        check_status(status)
        if status == "published":
            raise IllegalTransition("a video becomes published only through publish()")
        with self._tx() as cur:
            current = self._require(cur, video_id, for_update=True)
            if current.status != status and status not in TRANSITIONS[current.status]:
                raise IllegalTransition(
                    f"video {video_id} is {current.status}; it cannot become {status} "
                    f"(allowed: {', '.join(sorted(TRANSITIONS[current.status])) or 'none'})"
                )
            if status == "processing":
                error = None
            cur.execute(
                f"UPDATE videos SET status = %s, error = %s WHERE id = %s "
                f"AND (status, error) IS DISTINCT FROM (%s, %s) RETURNING {VIDEO_COLS}",
                (status, error, video_id, status, error),
            )
            row = cur.fetchone()
        return video_row(row) if row else current

    def publish(
        self,
        video_id: str,
        attempt: str,
        renditions: Sequence[RenditionRow],
        assets: Sequence[Asset],
    ) -> PublishOutcome:
        """Record an attempt's renditions and assets and make it the published one,
        in one transaction; only from ``processing`` (or a repeat of the same publish)."""
        if not renditions:
            raise CatalogDataError(f"attempt {attempt} of {video_id} has no renditions")
        with self._tx() as cur:
            video = self._require(cur, video_id, for_update=True)
            if video.status == "published" and video.published_attempt == attempt:
                return PublishOutcome(video_id, attempt, attempt, changed=False)
            if video.status not in ("processing", "playable"):
                raise IllegalTransition(
                    f"video {video_id} is {video.status}; only a processing (or playable) "
                    "video is published"
                )
            _write_renditions(cur, video_id, attempt, renditions)
            _write_assets(cur, video_id, attempt, assets)
            cur.execute(
                "UPDATE videos SET status = 'published', published_attempt = %s, error = NULL "
                "WHERE id = %s",
                (attempt, video_id),
            )
        return PublishOutcome(video_id, attempt, video.published_attempt, changed=True)

    def _require(
        self, cur: psycopg.Cursor[DictRow], video_id: str, for_update: bool = False
    ) -> Video:
        cur.execute(VIDEO_BY_ID + (" FOR UPDATE" if for_update else ""), (video_id,))
        row = cur.fetchone()
        if row is None:
            raise VideoNotFound(f"no video {video_id!r} in the catalog")
        return video_row(row)

    def add_assets(self, video_id: str, attempt: str, assets: Sequence[Asset]) -> None:
        """Record files a stage wrote after the attempt was published (captions, analysis)."""
        with self._tx() as cur:
            _write_assets(cur, video_id, attempt, assets)

    # -- reads

    def get_video(self, video_id: str) -> Video | None:
        with self._conn() as conn:
            row = conn.execute(VIDEO_BY_ID, (video_id,)).fetchone()
        return video_row(row) if row else None

    def find_by_sha256(self, sha256: str) -> Video | None:
        """The video holding these source bytes: a published one first, then the newest."""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {VIDEO_COLS} FROM videos WHERE source_sha256 = %s "
                "ORDER BY published_attempt IS NULL, updated_at DESC, id LIMIT 1",
                (sha256,),
            ).fetchone()
        return video_row(row) if row else None

    def list_videos(self, status: str | None = None, limit: int = 100) -> list[Video]:
        """Videos, most recently changed first, optionally of one status."""
        if status is not None:
            check_status(status)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {VIDEO_COLS} FROM videos WHERE %(s)s::text IS NULL OR status = %(s)s "
                "ORDER BY updated_at DESC, id LIMIT %(n)s",
                {"s": status, "n": limit},
            ).fetchall()
        return [video_row(r) for r in rows]


def _write_renditions(
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, renditions: Sequence[RenditionRow]
) -> None:
    cur.executemany(UPSERT_RENDITION, _attempt_rows(video_id, attempt, renditions))


def _write_assets(
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, assets: Sequence[Asset]
) -> None:
    cur.executemany(UPSERT_ASSET, _attempt_rows(video_id, attempt, assets))


def _attempt_rows(video_id: str, attempt: str, records: Sequence[Any]) -> list[dict[str, Any]]:
    """Each record's fields, keyed to the attempt of the video it belongs to."""
    return [{"video_id": video_id, "attempt": attempt, **vars(r)} for r in records]
