"""The catalog's SQL: fixed statements with bound parameters; user input never becomes SQL.

Every write is an ``INSERT … ON CONFLICT`` whose update only fires when a
value really differs: repeating a call leaves the rows, ``updated_at``
included, exactly as they were.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from vidpipe.infra.catalog.errors import CatalogDataError
from vidpipe.infra.catalog.records import (
    EMBEDDING_DIM,
    VIDEO_STATUSES,
    DetectionSummary,
    RenditionRow,
    StageRun,
    Video,
)

_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

VIDEO_COLS = (
    "id, source_sha256, size_bytes, source_key, kind, duration_seconds, probe, status, error, "
    "published_attempt, created_at, updated_at"
)
VIDEO_BY_ID = f"SELECT {VIDEO_COLS} FROM videos WHERE id = %s"


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
    """``INSERT … ON CONFLICT (key) DO UPDATE`` that writes only when a value differs.

    Built from this module's constant names only, never from input.
    """
    rest = [c for c in columns if c not in key]
    t = sql.Identifier(table)
    return sql.SQL(
        "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        t=t,
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        vals=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in rest
        ),
        old=sql.SQL(", ").join(sql.SQL("{t}.{c}").format(t=t, c=sql.Identifier(c)) for c in rest),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in rest),
    )


RENDITION_COLS = ("video_id", "attempt", *RenditionRow.__dataclass_fields__)
UPSERT_RENDITION = upsert("renditions", RENDITION_COLS, ("video_id", "attempt", "name"))
UPSERT_ASSET = upsert(
    "assets", ("video_id", "attempt", "key", "kind", "sha256", "bytes"), ("video_id", "key")
)
UPSERT_DETECTION = upsert(
    "detection_summaries",
    ("video_id", *DetectionSummary.__dataclass_fields__),
    ("video_id", "label"),
)
UPSERT_SAFETY = upsert(
    "safety_verdicts",
    ("video_id", "check_name", "status", "score", "verdict", "details"),
    ("video_id", "check_name"),
)
UPSERT_FINGERPRINT = upsert("fingerprints", ("video_id", "hashes", "frame_times"), ("video_id",))
STAGE_COLS = tuple(StageRun.__dataclass_fields__)
STAGE_KEY = ("video_id", "stage", "stage_version", "options_hash")
STAGE_RUNS_OF = f"SELECT {', '.join(STAGE_COLS)} FROM stage_runs WHERE video_id = %s"
# A cache hit re-recorded later must not overwrite the timings of the run that did the work.
UPSERT_STAGE = upsert("stage_runs", STAGE_COLS, STAGE_KEY) + sql.SQL(
    " AND NOT (stage_runs.status = 'succeeded' AND NOT stage_runs.cached AND EXCLUDED.cached)"
)
UPSERT_SEGMENT = sql.SQL(
    "INSERT INTO transcript_segments AS s "
    "(video_id, attempt, idx, start_seconds, end_seconds, text, language, embedding) "
    "VALUES (%(video_id)s, %(attempt)s, %(idx)s, %(start_seconds)s, %(end_seconds)s, %(text)s, "
    "%(language)s, %(embedding)b::vector) "
    "ON CONFLICT (video_id, attempt, idx) DO UPDATE SET start_seconds = EXCLUDED.start_seconds, "
    "end_seconds = EXCLUDED.end_seconds, text = EXCLUDED.text, language = EXCLUDED.language, "
    "embedding = EXCLUDED.embedding "
    "WHERE (s.start_seconds, s.end_seconds, s.text, s.language, s.embedding) "
    "IS DISTINCT FROM (EXCLUDED.start_seconds, EXCLUDED.end_seconds, EXCLUDED.text, "
    "EXCLUDED.language, EXCLUDED.embedding)"
)

SEARCH = """
SELECT s.video_id, s.start_seconds, s.end_seconds, left(s.text, %(chars)s) AS text,
       1 - (s.embedding <=> %(q)b::vector) AS score
FROM transcript_segments s
JOIN videos v ON v.id = s.video_id AND v.published_attempt = s.attempt
WHERE s.embedding IS NOT NULL {label}
ORDER BY s.embedding <=> %(q)b::vector
LIMIT %(limit)s
"""
SEARCH_ANY = SEARCH.format(label="")
SEARCH_LABEL = SEARCH.format(
    label="AND EXISTS (SELECT 1 FROM detection_summaries d "
    "WHERE d.video_id = s.video_id AND d.label = %(label)s)"
)

PUBLISHED_LABELS = """
SELECT d.video_id, d.label, d.seconds_present, d.max_confidence, d.first_seen_seconds
FROM detection_summaries d
JOIN videos v ON v.id = d.video_id AND v.published_attempt IS NOT NULL
ORDER BY d.label, d.seconds_present DESC, d.video_id
LIMIT %(limit)s
"""

# Stored videos sharing at least ``min_frames`` query frames within max_hamming bits:
# candidates only; encoders.fingerprint.match decides whether one is a duplicate.
FINGERPRINT_CANDIDATES = """
SELECT f.video_id, count(DISTINCT q.i) AS frames
FROM unnest(%(hashes)s::bigint[]) WITH ORDINALITY AS q(h, i)
CROSS JOIN fingerprints f
CROSS JOIN LATERAL unnest(f.hashes) AS c(h)
WHERE f.video_id IS DISTINCT FROM %(exclude)s
  AND bit_count((q.h # c.h)::bit(64)) <= %(max_hamming)s
GROUP BY f.video_id
HAVING count(DISTINCT q.i) >= %(min_frames)s
ORDER BY frames DESC, f.video_id
LIMIT %(limit)s
"""


def check_video_id(video_id: str) -> str:
    if not isinstance(video_id, str) or not _VIDEO_ID.match(video_id):
        raise CatalogDataError(
            f"invalid video id {video_id!r}: use 1-64 letters, digits, '_' or '-'"
        )
    return video_id


def check_status(status: str) -> str:
    if status not in VIDEO_STATUSES:
        raise CatalogDataError(f"unknown video status {status!r}; one of {VIDEO_STATUSES}")
    return status


def check_embedding(vector: Sequence[float]) -> list[float]:
    values = [float(x) for x in vector]
    if len(values) != EMBEDDING_DIM:
        raise CatalogDataError(
            f"an embedding has {len(values)} dimensions; the catalog stores {EMBEDDING_DIM}"
        )
    return values


def signed64(h: int) -> int:
    if not -(1 << 63) <= h < (1 << 64):
        raise CatalogDataError(f"frame hash {h} does not fit in 64 bits")
    return h - (1 << 64) if h >= (1 << 63) else h


def unsigned64(h: int) -> int:
    """A hash as stored (``signed64``) back as ``encoders.fingerprint`` computes it."""
    return h + (1 << 64) if h < 0 else h


def video_row(row: Mapping[str, Any]) -> Video:
    return Video(**row)
