"""``vidpipe up``, ``vidpipe deploy`` and ``vidpipe worker``: the service's commands."""

from __future__ import annotations

from typing import Annotated

import typer

from vidpipe.flows.terminal import (
    ConfigOpt,
    DataDirOpt,
    ServiceOpt,
    bad_input,
    out,
    plain,
    settings_for,
)
from vidpipe.infra.errors import PermanentError


def up(
    port: Annotated[int, typer.Option(help="Prefect API and UI port.")] = 4200,
    upload_port: Annotated[int, typer.Option(help="Upload service (tus) port.")] = 8080,
    service_file: ServiceOpt = None,
    workers: Annotated[
        bool, typer.Option(help="A worker per pool here; --no-workers: all on other hosts.")
    ] = True,
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the whole service here: Prefect server and UI on the embedded PostgreSQL, a CPU and
    a GPU work pool with a worker each, deployments and triggers, the upload service."""
    from vidpipe.flows.up import run_until_stopped, service
    from vidpipe.infra.catalog.errors import redact

    try:
        settings = settings_for(config_file, data_dir)
        with service(
            settings, port=port, upload_port=upload_port, config=config_file,
            service_file=service_file, workers=workers,
        ) as svc:  # fmt: skip
            out.print(f"[green]vidpipe is up[/green]  UI {svc.ui_url}  uploads {svc.upload_url}")
            out.print(plain(f"PREFECT_API_URL={svc.api_url}   (Ctrl-C stops everything)"))
            out.print(plain(f"VIDPIPE_DATABASE_URL={redact(svc.database_url)}"))
            run_until_stopped()
    except PermanentError as exc:
        raise bad_input(exc) from None
    out.print("vidpipe is down")


def deploy(
    service_file: ServiceOpt = None,
) -> None:
    """Apply the work pools, limits, deployments, triggers and automations of the service
    to the Prefect API at PREFECT_API_URL (a self-hosted server, or Prefect Cloud)."""
    from vidpipe.flows.service import apply_service, load_service
    from vidpipe.flows.submit import require_api

    try:
        require_api("PREFECT_API_URL is not set; point it at the Prefect API to deploy to")
        for line in apply_service(load_service(service_file)):
            out.print(plain(line))
    except PermanentError as exc:
        raise bad_input(exc) from None


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take runs from, e.g. vidpipe-gpu.")],
    name: Annotated[str | None, typer.Option(help="Worker name (default pool-host-pid).")] = None,
    service_file: ServiceOpt = None,
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Join the service as a worker of one pool, on this host or any other: it shares only
    the Prefect API (PREFECT_API_URL), the catalog (VIDPIPE_DATABASE_URL) and storage."""
    from vidpipe.flows.service import load_service
    from vidpipe.flows.worker import run_worker

    try:
        run_worker(load_service(service_file), pool, settings_for(config_file, data_dir), name)
    except PermanentError as exc:
        raise bad_input(exc) from None
