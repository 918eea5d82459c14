"""Run the upload service on uvicorn: settings in, a listening server out.

``run_server`` binds the socket itself (so ``port=0`` works and the real
port is known), prints one ``listening on URL`` line, and serves until
SIGINT or SIGTERM. At startup it connects to the catalog's database (the
embedded PostgreSQL by default), applies migrations, and starts the janitor.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from anyio import to_thread

from vidpipe.infra.errors import ConfigError
from vidpipe.infra.settings import Settings
from vidpipe.infra.storage import S3Storage, open_storage
from vidpipe.infra.upload.app import build_app
from vidpipe.infra.upload.complete import Completer, OnComplete
from vidpipe.infra.upload.db import UploadDB
from vidpipe.infra.upload.errors import Unavailable
from vidpipe.infra.upload.handlers import Service, UploadConfig, make_hook
from vidpipe.infra.upload.janitor import Janitor
from vidpipe.infra.upload.local_store import LocalUploadStore
from vidpipe.infra.upload.locks import UploadLocks
from vidpipe.infra.upload.s3_store import S3UploadStore
from vidpipe.infra.upload.stores import UploadStore

MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def upload_config(settings: Settings) -> UploadConfig:
    """The protocol's view of ``settings.upload``; ``ConfigError`` if it cannot work."""
    up = settings.upload
    token = up.token.get_secret_value() if up.token else None
    if token is None and not is_loopback(up.host):
        raise ConfigError(
            f"refusing to listen on {up.host} without a token: set upload.token "
            "(VIDPIPE_UPLOAD__TOKEN), or listen on 127.0.0.1"
        )
    if up.store == "s3" and settings.storage.kind != "s3":
        raise ConfigError("upload.store is s3 but storage.kind is local; set both to s3")
    secret = up.hook_secret.get_secret_value() if up.hook_secret else None
    return UploadConfig(
        max_size=int(up.max_size_mb * MIB),
        expiry=timedelta(hours=up.expiry_hours),
        retention=timedelta(hours=up.retention_hours),
        part_size=up.part_size_mb * MIB,
        token=token,
        hook_secret=secret,
        hook_prefix=up.hook_prefix,
        base_url=up.base_url,
        cors_origins=up.cors_origins,
        max_metadata_bytes=up.max_metadata_bytes,
        janitor_interval_seconds=up.janitor_interval_seconds,
    )


def open_upload_store(settings: Settings) -> UploadStore:
    """Where unfinished uploads are staged, per ``settings.upload.store``."""
    up = settings.upload
    if up.store == "s3":
        storage = open_storage(settings)
        assert isinstance(storage, S3Storage)
        spool = up.spool_dir or settings.work_dir / "upload-spool"
        return S3UploadStore(storage, up.s3_prefix, Path(spool))
    return LocalUploadStore(Path(up.local_dir or settings.data_dir / "uploads"))


_MIGRATE = """
import sys
from vidpipe.infra.catalog import migrate
from vidpipe.infra.errors import VidpipeError
try:
    migrate(sys.stdin.read())
except VidpipeError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3 if exc.retryable else 2)
"""


def _at_head(dsn: str) -> bool:
    import psycopg

    from vidpipe.infra.catalog import SCHEMA_HEAD

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT version_num FROM vidpipe.alembic_version"
                " WHERE to_regclass('vidpipe.alembic_version') IS NOT NULL"
            ).fetchone()
    except psycopg.Error:
        return False  # no schema yet, or no server: the migration says which
    return row is not None and row[0] == SCHEMA_HEAD


def catalog_dsn(settings: Settings) -> str:
    """The catalog's DSN (starting the embedded server), its schema migrated.

    A migration (alembic and SQLAlchemy: some 20 MiB that would stay resident
    in the server) runs in a short-lived child process.
    """
    from vidpipe.infra.catalog import resolve_dsn

    dsn = resolve_dsn(settings.database_url, settings.data_dir)
    if _at_head(dsn):
        return dsn
    # The DSN goes on stdin: it may hold a password, which argv would show to everyone.
    done = subprocess.run([sys.executable, "-c", _MIGRATE], input=dsn, text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    message = (done.stderr.strip().splitlines() or ["the migration failed"])[-1]
    if done.returncode == 2:
        raise ConfigError(message)
    if done.returncode != 0:
        raise Unavailable(f"migrating the catalog failed, retry: {message}")
    return dsn


def service_factory(
    settings: Settings, on_complete: OnComplete
) -> Callable[[], Awaitable[Service]]:
    cfg = upload_config(settings)

    async def make() -> Service:
        dsn = await to_thread.run_sync(catalog_dsn, settings)
        store = await to_thread.run_sync(open_upload_store, settings)
        storage = open_storage(settings)
        db = UploadDB(dsn)
        locks = UploadLocks(dsn)
        completer = Completer(db, store, storage, on_complete)
        janitor = Janitor(
            db, locks, store, completer, cfg.expiry, cfg.retention, cfg.janitor_interval_seconds
        )
        return Service(cfg, db, locks, store, storage, completer,
                       make_hook(db, storage, on_complete, cfg), janitor)  # fmt: skip

    return make


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(
    settings: Settings, on_complete: OnComplete, announce: Callable[[str], None] = print
) -> None:
    """Serve uploads until SIGINT/SIGTERM, on ``settings.upload.host`` and ``.port``."""
    import uvicorn

    cfg = upload_config(settings)  # fails on bad config before anything starts
    make = service_factory(settings, on_complete)
    sock = bind(settings.upload.host, settings.upload.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host

    async def make_then_announce() -> Service:
        service = await make()
        announce(f"listening on http://{shown}:{port}/files/")
        return service

    app = build_app(make_then_announce, cfg.cors_origins)
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
