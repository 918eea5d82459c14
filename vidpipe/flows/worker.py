"""``vidpipe worker``: a worker for one of the service's pools, on this host or another.

A host that joins the service shares nothing with the others but the Prefect
API, the catalog's PostgreSQL and object storage. Its own data dir is scratch:
the flow runs it executes download what they need from storage, upload what
they make, and keep nothing another host needs. So a worker's settings are the
process's own (``VIDPIPE_DATA_DIR``, ``VIDPIPE_DATABASE_URL``,
``VIDPIPE_STORAGE__*``), never the pool's job template: ``vidpipe up``'s
local workers and a spot GPU node far away take the same deployment.

    PREFECT_API_URL=http://control:4200/api \\
    VIDPIPE_DATABASE_URL=postgresql://vidpipe@db/vidpipe \\
    VIDPIPE_STORAGE__KIND=s3 VIDPIPE_STORAGE__S3_BUCKET=media \\
    vidpipe worker --pool vidpipe-gpu --data-dir /scratch/vidpipe
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from vidpipe.flows.service import ServiceSpec, WorkPoolSpec
from vidpipe.flows.submit import require_api
from vidpipe.infra.errors import ConfigError
from vidpipe.infra.settings import Settings


def pool_spec(spec: ServiceSpec, name: str) -> WorkPoolSpec:
    for pool in spec.work_pools:
        if pool.name == name:
            return pool
    known = ", ".join(p.name for p in spec.work_pools)
    raise ConfigError(f"no work pool {name!r} in the service file; it has: {known}")


def worker_argv(pool: WorkPoolSpec, name: str) -> list[str]:
    """``prefect worker start`` for ``pool``, with this interpreter's Prefect."""
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool.name,
            "--type", pool.type, "--name", name]  # fmt: skip


def worker_env(
    spec: ServiceSpec, api_url: str, data_dir: Path, database_url: str
) -> dict[str, str]:
    """The environment a worker and the flow runs it starts inherit."""
    bin_dir = str(Path(sys.executable).parent)  # the venv's, activated or not
    return os.environ | spec.worker_env | {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PREFECT_API_URL": api_url,
        "VIDPIPE_DATA_DIR": str(data_dir),
        "VIDPIPE_DATABASE_URL": database_url,
    }  # fmt: skip


def default_name(pool: str) -> str:
    return f"{pool}-{socket.gethostname()}-{os.getpid()}"


def run_worker(spec: ServiceSpec, pool_name: str, settings: Settings, name: str | None) -> None:
    """Become the worker (``exec``): its signals, SIGTERM included, are Prefect's to handle."""
    pool = pool_spec(spec, pool_name)
    api_url = require_api(
        "PREFECT_API_URL is not set; point it at the service's API "
        "(vidpipe up prints it, e.g. http://control-host:4200/api)"
    )
    if not settings.database_url:
        raise ConfigError(
            "VIDPIPE_DATABASE_URL is not set; a worker's runs write the service's shared "
            "catalog, not one of their own (vidpipe up prints its DSN)"
        )
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = worker_env(spec, api_url, data_dir, settings.database_url)
    argv = worker_argv(pool, name or default_name(pool.name))
    os.execve(argv[0], argv, env)
