"""What the stages recorded about a video: their runs (cache keys and timings),
detection labels and safety verdicts; and ``show``, which sums a video up with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from vidpipe.infra.catalog.handle import Handle
from vidpipe.infra.catalog.records import (
    DetectionSummary,
    RenditionRow,
    SafetyVerdict,
    StageRun,
    VideoDetails,
)
from vidpipe.infra.catalog.sql import (
    STAGE_COLS,
    STAGE_RUNS_OF,
    UPSERT_DETECTION,
    UPSERT_SAFETY,
    UPSERT_STAGE,
    VIDEO_BY_ID,
    video_row,
)

_Record = TypeVar("_Record")


class Results(Handle):
    """Stage runs, detection summaries and safety verdicts, written and read."""

    def record_stage(self, run: StageRun) -> None:
        """Upsert a stage run under its cache key; a later cache hit keeps the real timings."""
        with self._tx() as cur:
            cur.execute(UPSERT_STAGE, {c: getattr(run, c) for c in STAGE_COLS})

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

    # -- reads

    def stage_runs(self, video_id: str) -> list[StageRun]:
        """Every recorded stage run of the video, for display and reprocess planning."""
        with self._conn() as conn:
            rows = conn.execute(
                STAGE_RUNS_OF
                + " ORDER BY started_at NULLS LAST, stage, stage_version, options_hash",
                (video_id,),
            ).fetchall()
        return [StageRun(**r) for r in rows]

    def find_stage(
        self, video_id: str, stage: str, stage_version: str, options_hash: str
    ) -> StageRun | None:
        with self._conn() as conn:
            row = conn.execute(
                STAGE_RUNS_OF + " AND stage = %s AND stage_version = %s AND options_hash = %s",
                (video_id, stage, stage_version, options_hash),
            ).fetchone()
        return StageRun(**row) if row else None

    def show(self, video_id: str, top_labels: int = 10) -> VideoDetails | None:
        """Facts, published renditions, stage timings, safety verdicts and top labels."""
        with self._tx() as cur:
            cur.execute(VIDEO_BY_ID, (video_id,))
            row = cur.fetchone()
            if row is None:
                return None
            video = video_row(row)
            published = (video_id, video.published_attempt)
            renditions = _records(
                cur,
                RenditionRow,
                f"SELECT {', '.join(RenditionRow.__dataclass_fields__)} FROM renditions "
                "WHERE video_id = %s AND attempt = %s "
                "ORDER BY kind DESC, height DESC, target_kbps DESC, name",
                published,
            )
            cur.execute(
                "SELECT count(*) AS n FROM assets WHERE video_id = %s AND attempt = %s", published
            )
            counted = cur.fetchone()
            stages = _records(
                cur, StageRun, STAGE_RUNS_OF + " ORDER BY started_at NULLS LAST, stage", (video_id,)
            )
            safety = _records(
                cur,
                SafetyVerdict,
                "SELECT check_name, status, verdict, score, details FROM safety_verdicts "
                "WHERE video_id = %s ORDER BY check_name",
                (video_id,),
            )
            labels = _records(
                cur,
                DetectionSummary,
                f"SELECT {', '.join(DetectionSummary.__dataclass_fields__)} "
                "FROM detection_summaries WHERE video_id = %s "
                "ORDER BY seconds_present DESC, max_confidence DESC, label LIMIT %s",
                (video_id, top_labels),
            )
        return VideoDetails(
            video=video,
            renditions=renditions,
            assets=int(counted["n"]) if counted else 0,
            stages=stages,
            safety=safety,
            labels=labels,
        )


def _records(
    cur: psycopg.Cursor[DictRow],
    record: Callable[..., _Record],
    query: str,
    params: Sequence[Any],
) -> tuple[_Record, ...]:
    """The rows of ``query``, each made a ``record`` from its columns."""
    cur.execute(query, params)
    return tuple(record(**r) for r in cur.fetchall())
