"""The ``Catalog`` handle: what vidpipe knows about every video, read and written.

Everything lives in the ``vidpipe`` schema, so the catalog can share a
database with Prefect's server. ``published_attempt`` is what viewers get: it
flips, together with that attempt's renditions and assets, in one transaction
in ``publish``, and stays pointing at the last good attempt while a
reprocess runs or fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from vidpipe.infra.catalog.connection import (
    SET_SEARCH_PATH,
    connect_defaults,
    lock_key,
    parse_dsn,
    where,
)
from vidpipe.infra.catalog.errors import (
    CatalogDataError,
    IllegalTransition,
    VideoNotFound,
    connect_error,
    mapped_errors,
)
from vidpipe.infra.catalog.records import (
    TRANSITIONS,
    VIDEO_STATUSES,
    Asset,
    DetectionSummary,
    NewVideo,
    PublishOutcome,
    RenditionRow,
    SafetyVerdict,
    SearchHit,
    StageRun,
    StoredFingerprint,
    TranscriptSegment,
    Video,
    VideoDetails,
    VideoStatus,
)
from vidpipe.infra.catalog.sql import (
    FINGERPRINT_CANDIDATES,
    SEARCH_ANY,
    SEARCH_LABEL,
    SHA256,
    STAGE_COLS,
    UPSERT_ASSET,
    UPSERT_DETECTION,
    UPSERT_FINGERPRINT,
    UPSERT_RENDITION,
    UPSERT_SAFETY,
    UPSERT_SEGMENT,
    UPSERT_STAGE,
    VIDEO_COLS,
    check_embedding,
    check_video_id,
    signed64,
    video_row,
)


class Catalog:
    """A handle on the catalog: a DSN and a few idle connections, safe across threads.

    Build one inside each task (``open_catalog``); never pass it between tasks.
    """

    def __init__(self, dsn: str, *, max_idle: int = 4) -> None:
        self.dsn = dsn
        self._params = parse_dsn(dsn)
        self._idle: list[psycopg.Connection[DictRow]] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, row_factory=dict_row, **connect_defaults(self._params)
            )
        except psycopg.Error as exc:
            raise connect_error(exc, where(self._params)) from exc
        try:
            with mapped_errors():
                conn.execute(SET_SEARCH_PATH)
                # Vectors travel as pgvector's binary format, not as 384 decimal strings.
                register_vector_info(conn, TypeInfo.fetch(conn, "vector"))
            # A filtered ANN query keeps walking the graph until LIMIT rows pass
            # (pgvector >= 0.8; older servers just filter the first ef_search rows).
            with suppress(pgerrors.UndefinedObject, pgerrors.InvalidParameterValue):
                conn.execute("SET hnsw.iterative_scan = strict_order")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            with mapped_errors():
                yield conn
        finally:
            healthy = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
            with self._lock:
                keep = healthy and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction; rolled back on any exception."""
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def video_lock(self, video_id: str, timeout_seconds: float | None = None) -> Iterator[None]:
        """Hold the video's advisory lock: runs for the same video serialise here.

        Session-level, on a connection of its own, released when the block
        exits or the process dies. ``CatalogUnavailable`` after ``timeout_seconds``.
        """
        conn = self._connect()
        try:
            with mapped_errors():
                if timeout_seconds is not None:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, int(timeout_seconds * 1000))}ms",),
                    )
                conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"video:{video_id}"),))
            yield
        finally:
            conn.close()  # ends the session, which releases the lock

    # -- videos

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
            cur.execute(f"SELECT {VIDEO_COLS} FROM videos WHERE id = %s", (new.video_id,))
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
        if status not in VIDEO_STATUSES:
            raise CatalogDataError(f"unknown video status {status!r}; one of {VIDEO_STATUSES}")
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
        query = f"SELECT {VIDEO_COLS} FROM videos WHERE id = %s"
        cur.execute(query + (" FOR UPDATE" if for_update else ""), (video_id,))
        row = cur.fetchone()
        if row is None:
            raise VideoNotFound(f"no video {video_id!r} in the catalog")
        return video_row(row)

    def add_assets(self, video_id: str, attempt: str, assets: Sequence[Asset]) -> None:
        """Record files a stage wrote after the attempt was published (captions, analysis)."""
        with self._tx() as cur:
            _write_assets(cur, video_id, attempt, assets)

    # -- stage outputs

    def record_stage(self, run: StageRun) -> None:
        """Upsert a stage run under its cache key; a later cache hit keeps the real timings."""
        with self._tx() as cur:
            cur.execute(UPSERT_STAGE, {c: getattr(run, c) for c in STAGE_COLS})

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

    def put_detections(self, video_id: str, summaries: Sequence[DetectionSummary]) -> None:
        """Replace the video's detection summary with ``summaries``."""
        rows = [{"video_id": video_id, **vars(s)} for s in summaries]
        with self._tx() as cur:
            cur.executemany(UPSERT_DETECTION, rows)
            cur.execute(
                "DELETE FROM detection_summaries WHERE video_id = %s AND NOT (label = ANY(%s))",
                (video_id, [s.label for s in summaries]),
            )

    def put_safety(self, video_id: str, verdicts: Sequence[SafetyVerdict]) -> None:
        """Upsert one verdict per check; other checks' verdicts are kept."""
        rows = [
            {
                "video_id": video_id,
                "check_name": v.check_name,
                "status": v.status,
                "score": v.score,
                "verdict": v.verdict,
                "details": Jsonb(dict(v.details)),
            }
            for v in verdicts
        ]
        with self._tx() as cur:
            cur.executemany(UPSERT_SAFETY, rows)

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
            tuple(h + (1 << 64) if h < 0 else h for h in row["hashes"]), tuple(row["frame_times"])
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

    # -- reads

    def get_video(self, video_id: str) -> Video | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {VIDEO_COLS} FROM videos WHERE id = %s", (video_id,)
            ).fetchone()
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
        if status is not None and status not in VIDEO_STATUSES:
            raise CatalogDataError(f"unknown video status {status!r}; one of {VIDEO_STATUSES}")
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {VIDEO_COLS} FROM videos WHERE %(s)s::text IS NULL OR status = %(s)s "
                "ORDER BY updated_at DESC, id LIMIT %(n)s",
                {"s": status, "n": limit},
            ).fetchall()
        return [video_row(r) for r in rows]

    def stage_runs(self, video_id: str) -> list[StageRun]:
        """Every recorded stage run of the video, for display and reprocess planning."""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
                "ORDER BY started_at NULLS LAST, stage, stage_version, options_hash",
                (video_id,),
            ).fetchall()
        return [StageRun(**r) for r in rows]

    def find_stage(
        self, video_id: str, stage: str, stage_version: str, options_hash: str
    ) -> StageRun | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {', '.join(STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
                "AND stage = %s AND stage_version = %s AND options_hash = %s",
                (video_id, stage, stage_version, options_hash),
            ).fetchone()
        return StageRun(**row) if row else None

    def show(self, video_id: str, top_labels: int = 10) -> VideoDetails | None:
        """Facts, published renditions, stage timings, safety verdicts and top labels."""
        with self._tx() as cur:
            cur.execute(f"SELECT {VIDEO_COLS} FROM videos WHERE id = %s", (video_id,))
            row = cur.fetchone()
            if row is None:
                return None
            video = video_row(row)
            cur.execute(
                f"SELECT {', '.join(RenditionRow.__dataclass_fields__)} FROM renditions "
                "WHERE video_id = %s AND attempt = %s "
                "ORDER BY kind DESC, height DESC, target_kbps DESC, name",
                (video_id, video.published_attempt),
            )
            renditions = tuple(RenditionRow(**r) for r in cur.fetchall())
            cur.execute(
                "SELECT count(*) AS n FROM assets WHERE video_id = %s AND attempt = %s",
                (video_id, video.published_attempt),
            )
            counted = cur.fetchone()
            cur.execute(
                f"SELECT {', '.join(STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
                "ORDER BY started_at NULLS LAST, stage",
                (video_id,),
            )
            stages = tuple(StageRun(**r) for r in cur.fetchall())
            cur.execute(
                "SELECT check_name, status, verdict, score, details FROM safety_verdicts "
                "WHERE video_id = %s ORDER BY check_name",
                (video_id,),
            )
            safety = tuple(SafetyVerdict(**r) for r in cur.fetchall())
            cur.execute(
                f"SELECT {', '.join(DetectionSummary.__dataclass_fields__)} "
                "FROM detection_summaries WHERE video_id = %s "
                "ORDER BY seconds_present DESC, max_confidence DESC, label LIMIT %s",
                (video_id, top_labels),
            )
            labels = tuple(DetectionSummary(**r) for r in cur.fetchall())
        return VideoDetails(
            video=video,
            renditions=renditions,
            assets=int(counted["n"]) if counted else 0,
            stages=stages,
            safety=safety,
            labels=labels,
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


def _write_renditions(
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, renditions: Sequence[RenditionRow]
) -> None:
    cur.executemany(
        UPSERT_RENDITION,
        [{"video_id": video_id, "attempt": attempt, **vars(r)} for r in renditions],
    )


def _write_assets(
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, assets: Sequence[Asset]
) -> None:
    cur.executemany(
        UPSERT_ASSET,
        [{"video_id": video_id, "attempt": attempt, **vars(a)} for a in assets],
    )
