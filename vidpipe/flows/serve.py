"""``vidpipe serve``: the upload service (tus 1.0.0 at /files/, S3 hook at /hooks/s3)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vidpipe.infra.errors import PermanentError

EXIT_BAD_INPUT = 2


def _log_to_stderr(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("vidpipe.upload", "vidpipe.intake"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default upload.host: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="TCP port (default upload.port: 8080; 0: any free)."),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML override file.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ./vidpipe-data).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")] = False,
) -> None:
    """Run the upload service: tus 1.0.0 at /files/, S3 bucket notifications at /hooks/s3.

    A finished upload is registered in the catalog and starts process-video
    once per source (see upload.dispatch). Without upload.token it listens
    only on a loopback address.
    """
    from vidpipe.infra.settings import load_settings
    from vidpipe.infra.upload import run_server, upload_config

    flags = {"host": host, "port": port}
    upload: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = load_settings(
            config_file, data_dir=str(data_dir) if data_dir else None, upload=upload or None
        )
        upload_config(settings)  # refuses a public address without a token, before anything
        from vidpipe.flows.intake import Intake

        intake = Intake(settings, config_file)
        _log_to_stderr(verbose)
        intake.start()
    except PermanentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        run_server(settings, intake, announce=lambda line: print(line, flush=True))
    except PermanentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    finally:
        intake.close(wait=False)
