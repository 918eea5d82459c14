"""The ``vidpipe`` command line.

Exit codes: 0 success, 2 bad input or configuration (a one-line reason on
stderr), 1 an internal failure.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vidpipe.infra.errors import PermanentError
from vidpipe.infra.runtime import apply_defaults

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
# Wide enough for the summary when stdout is a pipe or a CI log.
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _summary(result: Any) -> Table:
    t = result.transcode
    table = Table(
        title=f"video {result.source.video_id}  attempt {t.attempt}", title_justify="left"
    )
    for col in ("rendition", "resolution", "codecs", "segments", "size", "avg kbps", "peak kbps"):
        table.add_column(col, justify="right" if col not in ("rendition", "codecs") else "left")
    for r in [*t.video, *([t.audio] if t.audio else [])]:
        res = f"{r.width}x{r.height}@{r.fps:g}" if r.kind == "video" else "audio"
        table.add_row(
            r.name,
            res,
            r.codecs,
            str(r.segments),
            _human_bytes(r.bytes),
            f"{r.average_kbps:.0f}",
            f"{r.peak_kbps:.0f}",
        )
    return table


def _stage_table(stages: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="stages", title_justify="left")
    for col in ("stage", "wall s", "cpu s", ""):
        table.add_column(col, justify="left" if col in ("stage", "") else "right")
    for name, s in stages.items():
        table.add_row(
            name,
            f"{s['wall_seconds']:.2f}",
            f"{s['cpu_seconds']:.2f}",
            "cached" if s["cached"] else "",
        )
    return table


def _quiet_prefect(verbose: bool) -> None:
    """Keep the terminal for the progress bar and the verdict; the Prefect UI keeps the logs."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def process(
    file: Annotated[Path, typer.Argument(help="The video (or audio) file to process.")],
    out_: Annotated[
        str | None,
        typer.Option(
            "--out", help="Output: a directory, or s3://bucket/prefix. Default: the data dir."
        ),
    ] = None,
    ladder: Annotated[
        str | None,
        typer.Option(help="Ladder name in configs/ladders (default, mobile) or a YAML path."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A YAML file overriding configs/default.yaml.")
    ] = None,
    segment_format: Annotated[
        str | None, typer.Option(help="HLS segments: fmp4 (default) or ts.")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="x264 (default) or nvenc.")] = None,
    preset: Annotated[str | None, typer.Option(help="Encoder preset, e.g. veryfast.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Local state and default output directory (default ./vidpipe-data)."),
    ] = None,
    video_id: Annotated[
        str | None, typer.Option(help="Use this id instead of one derived from the content hash.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Transcode FILE into an HLS ladder with thumbnails and a manifest, and publish it."""
    _quiet_prefect(verbose)
    apply_defaults()
    encode = {
        k: v
        for k, v in {"segment_format": segment_format, "encoder": encoder, "preset": preset}.items()
        if v is not None
    }
    overrides: dict[str, Any] = {"encode": encode} if encode else {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    try:
        from vidpipe.flows.process_video import build_settings, process_video
        from vidpipe.infra import progress

        # Fail on bad flags and config before starting Prefect.
        build_settings(str(config) if config else None, out_, ladder, overrides)
        if not file.is_file():
            raise PermanentError(f"{file} does not exist or is not a file")
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            job = bar.add_task("transcode", total=None)

            def on_progress(stage: str, done: float, total: float) -> None:
                bar.update(job, description=stage, total=total, completed=min(done, total))

            unsubscribe = progress.subscribe(on_progress)
            try:
                result = process_video(
                    str(file.resolve()),
                    out=out_,
                    ladder=ladder,
                    config=str(config) if config else None,
                    video_id=video_id,
                    overrides=overrides,
                )
            finally:
                unsubscribe()
    except PermanentError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as exc:
        console.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc}", highlight=False)
        console.print("re-run with --verbose for Prefect's logs; the run is in the Prefect UI")
        raise typer.Exit(EXIT_INTERNAL) from None

    if result.transcode.video or result.transcode.audio:
        out.print(_summary(result))
    out.print(_stage_table(result.stages))
    status = "published" if result.published.changed else "already published, nothing new"
    out.print(f"[green]{status}[/green]: {result.published.master_url}")
    out.print(f"manifest: {result.published.manifest_url}")
    if result.transcode.poster:
        base = result.published.master_url.rsplit("/", 1)[0]
        out.print(f"poster: {base}/{result.transcode.poster}")


@app.command()
def config(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML override file.")
    ] = None,
) -> None:
    """Print the effective configuration (defaults, file, VIDPIPE_* environment)."""
    from vidpipe.infra.settings import load_settings

    try:
        out.print(load_settings(config_file).to_yaml(), highlight=False)
    except PermanentError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
