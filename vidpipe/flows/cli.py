"""The ``vidpipe`` command line.

Exit codes: 0 success, 2 bad input or configuration (a one-line reason on
stderr), 1 an internal failure.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from vidpipe.flows.serve import serve
from vidpipe.flows.service_cli import deploy, up, worker
from vidpipe.flows.terminal import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    ConfigOpt,
    DataDirOpt,
    bad_input,
    catalog_for,
    console,
    human_bytes,
    out,
    plain,
    say_error,
    settings_for,
)
from vidpipe.infra.errors import InternalError, PermanentError
from vidpipe.infra.runtime import apply_defaults

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _summary(result: Any) -> Table:
    t = result.ladder
    table = Table(
        title=f"video {result.source.video_id}  attempt {t.attempt}", title_justify="left"
    )
    for col in ("rendition", "resolution", "codecs", "segments", "size", "avg kbps", "peak kbps"):
        table.add_column(col, justify="right" if col not in ("rendition", "codecs") else "left")
    for r in t.renditions:
        res = f"{r.width}x{r.height}@{r.fps:g}" if r.kind == "video" else "audio"
        table.add_row(
            r.name,
            res,
            r.codecs,
            str(r.segments),
            human_bytes(r.bytes),
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
    submit: Annotated[
        bool,
        typer.Option(
            help="Hand FILE to the service at PREFECT_API_URL (vidpipe up) and print the run's "
            "link, instead of processing it here."
        ),
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(help="With --submit: wait up to this many seconds for the run to end."),
    ] = None,
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
    if submit:
        _submit(file, config, out_, ladder, overrides, data_dir, video_id, wait)
        return
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    try:
        from vidpipe.flows.process_video import build_settings, process_video
        from vidpipe.infra import progress

        # Fail on bad flags and config before starting Prefect.
        build_settings(str(config) if config else None, out_, ladder, overrides)
        if not file.is_file():
            raise PermanentError(f"{file} does not exist or is not a file; check the path")
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
    except InternalError as exc:
        say_error(exc)
        raise typer.Exit(EXIT_INTERNAL) from None
    except PermanentError as exc:
        say_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as exc:
        say_error(exc)
        console.print("re-run with --verbose for Prefect's logs; the run is in the Prefect UI")
        raise typer.Exit(EXIT_INTERNAL) from None

    if result.ladder.renditions:
        out.print(_summary(result))
    out.print(_stage_table(result.stages))
    status = "published" if result.published.changed else "already published, nothing new"
    out.print(f"[green]{status}[/green]: {result.published.master_url}")
    out.print(f"manifest: {result.published.manifest_url}")
    if result.ladder.poster:
        base = result.published.master_url.rsplit("/", 1)[0]
        out.print(f"poster: {base}/{result.ladder.poster}")


def _submit(
    file: Path,
    config: Path | None,
    out_: str | None,
    ladder: str | None,
    overrides: dict[str, Any],
    data_dir: Path | None,
    video_id: str | None,
    wait: float | None,
) -> None:
    """``process --submit``: the original to storage, a run of the service for it."""
    from vidpipe.flows import submit
    from vidpipe.flows.process_video import build_settings
    from vidpipe.infra.config import deep_merge, read_yaml

    try:
        submit.require_api()
        # The config file is read here and travels as overrides: workers do not see this disk.
        carried = deep_merge(read_yaml(config), overrides) if config else overrides
        local = dict(carried, **({"data_dir": str(data_dir)} if data_dir else {}))
        settings = build_settings(None, out_, ladder, local)
        params = {"out": out_, "ladder": ladder, "overrides": carried or None, "video_id": video_id}
        run = submit.submit_file(file, settings, {k: v for k, v in params.items() if v})
        out.print(f"submitted {run.video_id}: flow run {run.flow_run_name}")
        out.print(f"run: {run.url}")
        if wait is None:
            return
        state, message = submit.wait(run, wait)
    except PermanentError as exc:
        raise bad_input(exc) from None
    out.print(f"{run.flow_run_name}: {state}" + (f"  {message}" if message else ""))
    if state != "Completed":
        raise typer.Exit(EXIT_BAD_INPUT if message.startswith("error:") else EXIT_INTERNAL)


@app.command("ls")
def list_videos(
    status: Annotated[str | None, typer.Option(help="Only videos in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List videos in the catalog, the most recently changed first."""
    try:
        with catalog_for(settings_for(config_file, data_dir)) as catalog:
            videos = catalog.list_videos(status=status, limit=limit)
    except PermanentError as exc:
        raise bad_input(exc) from None
    table = Table(title=f"{len(videos)} videos", title_justify="left")
    for col in ("id", "status", "kind", "duration s", "published attempt", "updated"):
        table.add_column(col)
    for v in videos:
        duration = f"{v.duration_seconds:.1f}" if v.duration_seconds else "-"
        table.add_row(
            v.id,
            v.status,
            v.kind or "-",
            duration,
            v.published_attempt or "-",
            v.updated_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@app.command()
def show(
    video_id: Annotated[str, typer.Argument(help="The video id (see vidpipe ls).")],
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Facts, renditions, stages with their cost, safety verdicts and top labels of a video."""
    try:
        with catalog_for(settings_for(config_file, data_dir)) as catalog:
            details = catalog.show(video_id)
    except PermanentError as exc:
        raise bad_input(exc) from None
    if details is None:
        say_error(f"no video {video_id!r} in the catalog; see vidpipe ls")
        raise typer.Exit(EXIT_BAD_INPUT)
    v = details.video
    out.print(
        f"[bold]{v.id}[/bold]  {v.status}  {v.kind or ''}  "
        f"{(v.duration_seconds or 0):.2f} s  sha256 {v.source_sha256[:16]}…  "
        f"{human_bytes(v.size_bytes)}"
    )
    if v.error:
        out.print(Text("last error: ", style="red") + plain(v.error))
    if details.renditions:
        table = Table(title=f"renditions (attempt {v.published_attempt})", title_justify="left")
        for col in ("rendition", "resolution", "codecs", "avg kbps", "peak kbps", "size"):
            table.add_column(col)
        for r in details.renditions:
            res = f"{r.width}x{r.height}" if r.width else "audio"
            table.add_row(
                r.name,
                res,
                r.codecs,
                f"{r.average_kbps:.0f}",
                f"{r.peak_kbps:.0f}",
                human_bytes(r.bytes),
            )
        out.print(table)
    stages = Table(title="stages", title_justify="left")
    for col in ("stage", "version", "options", "status", "wall s", "cpu s", "gpu s", ""):
        stages.add_column(col)
    for s in details.stages:
        stages.add_row(
            s.stage,
            s.stage_version,
            s.options_hash[:12],
            s.status,
            f"{s.wall_seconds or 0:.2f}",
            f"{s.cpu_seconds or 0:.2f}",
            f"{s.gpu_seconds or 0:.2f}",
            "cached" if s.cached else "",
        )
    out.print(stages)
    if details.safety:
        safety = Table(title="safety", title_justify="left")
        for col in ("check", "status", "verdict", "score"):
            safety.add_column(col)
        for sv in details.safety:
            score = "-" if sv.score is None else f"{sv.score:.3f}"
            safety.add_row(sv.check_name, sv.status, sv.verdict or "-", score)
        out.print(safety)
    if details.labels:
        labels = Table(title="top labels", title_justify="left")
        for col in ("label", "seconds", "max conf", "first s", "last s"):
            labels.add_column(col)
        for lb in details.labels:
            labels.add_row(
                plain(lb.label),
                f"{lb.seconds_present:.1f}",
                f"{lb.max_confidence:.2f}",
                f"{lb.first_seen_seconds:.1f}",
                f"{lb.last_seen_seconds:.1f}",
            )
        out.print(labels)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What was said or shown, in plain words.")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    label: Annotated[str | None, typer.Option(help="Only videos where YOLO saw this.")] = None,
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search published videos: transcript segments and detected labels in one ranked list."""
    if not query.strip():
        say_error("the query is empty; say what to look for")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        from vidpipe.models.search import search as search_videos

        settings = settings_for(config_file, data_dir)
        with catalog_for(settings) as catalog:
            result = search_videos(catalog, query, settings, limit=limit, label=label)
    except PermanentError as exc:
        raise bad_input(exc) from None
    table = Table(title=f"{len(result.hits)} hits for {query!r}", title_justify="left")
    for col in ("score", "video", "at", "why", "match"):
        table.add_column(col)
    for h in result.hits:
        m, sec = divmod(h.at_seconds, 60)
        table.add_row(f"{h.score:.3f}", h.video_id, f"{int(m)}:{sec:04.1f}", h.why, plain(h.detail))
    out.print(table)
    if not result.pictures.ok:
        out.print(f"pictures: unavailable: {plain(result.pictures.reason)}")


@app.command()
def reprocess(
    video_ids: Annotated[list[str] | None, typer.Argument(help="Videos to reprocess.")] = None,
    all_videos: Annotated[bool, typer.Option("--all", help="Every video in the catalog.")] = False,
    status: Annotated[str | None, typer.Option(help="Videos in this status, e.g. failed.")] = None,
    since: Annotated[str | None, typer.Option(help="Videos updated since (YYYY-MM-DD).")] = None,
    stages: Annotated[
        str | None,
        typer.Option(
            help="With --force: the stages to re-run, comma-separated: probe, ladder, captions, "
            "detections, safety, deepfake, fingerprint, embeddings."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run stages even when nothing changed.")] = False,
    renditions: Annotated[
        str | None,
        typer.Option(
            help="Re-encode only these rungs (comma-separated, e.g. avc_240p30_500k), reusing the "
            "rest; the master is re-published atomically."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; change nothing.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="Videos at a time.")] = 1,
    submit: Annotated[
        bool,
        typer.Option(
            help="Queue the runs on the service at PREFECT_API_URL (its process-video "
            "concurrency limit bounds them) instead of running them here."
        ),
    ] = False,
    config_file: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-run what changed (stage version or options) for some videos, reusing the rest."""
    _quiet_prefect(verbose=False)
    apply_defaults()
    from vidpipe.flows import reprocessing

    try:
        settings = settings_for(config_file, data_dir)
        with catalog_for(settings) as catalog:
            videos = reprocessing.select(
                catalog, video_ids or [], all_videos=all_videos, status=status, since=since
            )
            forced = reprocessing.parse_stages(stages, force)
            rungs = tuple(r.strip() for r in (renditions or "").split(",") if r.strip())
            plans = [reprocessing.plan(catalog, settings, v, forced, rungs) for v in videos]
    except PermanentError as exc:
        raise bad_input(exc) from None
    table = Table(title=f"plan for {len(plans)} videos", title_justify="left")
    for col in ("video", "stage", "recorded", "now", "action"):
        table.add_column(col)
    for p in plans:
        for step in p.steps:
            table.add_row(p.video_id, step.stage, step.recorded, step.current, plain(step.action))
    out.print(table)
    if dry_run:
        out.print(f"dry run: {sum(p.runs for p in plans)} of {len(plans)} videos would run")
        return
    if submit:
        from vidpipe.infra.config import read_yaml

        try:
            carried = read_yaml(config_file) if config_file else None
            submitted = reprocessing.submit_all(plans, settings, carried)
        except PermanentError as exc:
            raise bad_input(exc) from None
        for r in submitted:
            out.print(f"{r.video_id}: {plain(r.detail)}")
        out.print(f"{len(submitted)} runs submitted")
        return
    with Progress(
        TextColumn("[bold]reprocess"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        job = bar.add_task("reprocess", total=len(plans))
        results = reprocessing.run_all(
            plans, settings, config_file, concurrency, lambda: bar.advance(job)
        )
    summary = Table(title="reprocess summary", title_justify="left")
    for col in ("video", "result", "detail"):
        summary.add_column(col)
    for r in results:
        summary.add_row(r.video_id, r.result, plain(r.detail))
    out.print(summary)
    failed = [r for r in results if r.result == "failed"]
    out.print(f"{len(results) - len(failed)} ok, {len(failed)} failed")
    if failed:
        raise typer.Exit(EXIT_INTERNAL)


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
        raise bad_input(exc) from None


app.command()(serve)  # vidpipe serve: the upload service (vidpipe/flows/serve.py)
for command in (up, deploy, worker):  # vidpipe/flows/service_cli.py
    app.command()(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
