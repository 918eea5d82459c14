"""What an engineer sees of a video's run in the Prefect UI: its artifacts.

- ``transcode`` progress while the ladder encodes (a progress artifact);
- links to the master playlist and the poster once published;
- a markdown report: the ladder, each stage's wall/CPU/GPU seconds, the
  captions' language, the safety verdict, near-duplicates;
- a table of what the detector found.

Artifacts are keyed by video (``video-{id}-…``), so the UI's artifact pages
show each video's latest next to its history. They are a view: a failure
to create one is logged and never fails the video.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from vidpipe.encoders.encode import LadderResult
from vidpipe.infra import progress

log = logging.getLogger(__name__)
_PROGRESS_EVERY_SECONDS = 2.0


def _key(video_id: str, what: str) -> str:
    """Artifact keys: lowercase letters, digits and dashes."""
    return f"video-{video_id.lower()}-{what}"


def _in_a_run() -> bool:
    from prefect.runtime import flow_run

    return flow_run.get_id() is not None


def _quietly(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except Exception as exc:  # a view; the video does not depend on it
        log.warning("could not create a Prefect artifact: %s", exc)
        return None


@contextmanager
def transcode_progress(video_id: str) -> Iterator[None]:
    """A progress artifact that follows the ladder's encode, updated every few seconds."""
    if not _in_a_run():
        yield
        return
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact_id = _quietly(
        lambda: create_progress_artifact(
            0.0, key=_key(video_id, "transcode"), description=f"transcode of {video_id}"
        )
    )
    if artifact_id is None:
        yield
        return
    lock = threading.Lock()
    last = [0.0, 0.0]  # when, percent

    def on_progress(stage: str, done: float, total: float) -> None:
        if stage != "ladder" or total <= 0:
            return
        percent = min(100.0, 100.0 * done / total)
        with lock:
            if time.monotonic() - last[0] < _PROGRESS_EVERY_SECONDS or percent <= last[1]:
                return
            last[:] = [time.monotonic(), percent]
        _quietly(lambda: update_progress_artifact(UUID(str(artifact_id)), round(percent, 1)))

    unsubscribe = progress.subscribe(on_progress)
    try:
        yield
        _quietly(lambda: update_progress_artifact(UUID(str(artifact_id)), 100.0))
    finally:
        unsubscribe()


def publish_links(video_id: str, master_url: str, poster_url: str | None) -> None:
    """Link artifacts to what a player and a page need."""
    if not _in_a_run():
        return
    from prefect.artifacts import create_link_artifact

    _quietly(lambda: create_link_artifact(master_url, link_text="master.m3u8",
                                          key=_key(video_id, "master")))  # fmt: skip
    if poster_url:
        _quietly(lambda: create_link_artifact(poster_url, link_text="poster",
                                              key=_key(video_id, "poster")))  # fmt: skip


@dataclass(frozen=True)
class RunReport:
    """What the report of one video's run says."""

    video_id: str
    ladder: LadderResult
    master_url: str
    stages: dict[str, dict[str, Any]]  # name -> StageTiming.to_dict()
    results: dict[str, Any]  # name -> the stage's typed result
    near_duplicates: list[dict[str, Any]]
    errors: dict[str, str]  # stage name -> why it failed


def markdown(report: RunReport) -> str:
    """The run's report, as markdown."""
    video_id, ladder, master_url = report.video_id, report.ladder, report.master_url
    stages, results, errors = report.stages, report.results, report.errors
    near_duplicates = report.near_duplicates
    lines = [f"# {video_id}", "", f"master: [{master_url}]({master_url})", ""]
    if ladder.renditions:
        lines += ["| rendition | resolution | codecs | segments | avg kbps | peak kbps |",
                  "|---|---|---|---:|---:|---:|"]  # fmt: skip
        for r in ladder.renditions:
            res = f"{r.width}x{r.height}@{r.fps:g}" if r.kind == "video" else "audio"
            lines.append(f"| {r.name} | {res} | `{r.codecs}` | {r.segments} | "
                         f"{r.average_kbps:.0f} | {r.peak_bps / 1000:.0f} |")  # fmt: skip
        lines.append("")
    lines += ["| stage | wall s | cpu s | gpu s | |", "|---|---:|---:|---:|---|"]
    for name, s in stages.items():
        state = "cached" if s.get("cached") else ("failed" if name in errors else "")
        lines.append(f"| {name} | {s['wall_seconds']:.2f} | {s['cpu_seconds']:.2f} | "
                     f"{s.get('gpu_seconds', 0.0):.2f} | {state} |")  # fmt: skip
    lines.append("")
    captions = results.get("captions")
    if captions is not None:
        c = captions
        lines.append(f"**captions**: {c.status}, language {c.language or '-'} "
                     f"({c.language_probability:.2f}), {c.segments} segments")  # fmt: skip
    safety = results.get("safety")
    if safety is not None:
        s = safety.result
        when = ", ".join(f"{t:.1f} s" for t in (s.flagged or s.review)[:8])
        lines.append(f"**safety**: {s.verdict}" + (f" at {when}" if when else "")
                     + (f" ({s.rule})" if s.rule else ""))  # fmt: skip
    if near_duplicates:
        dups = ", ".join(f"{d['video_id']} ({d['overlap']:.0%})" for d in near_duplicates)
        lines.append(f"**near-duplicates**: {dups}")
    elif "fingerprint" in results:
        lines.append("**near-duplicates**: none")
    for name, why in errors.items():
        lines.append(f"**{name} failed**: {why}")
    return "\n".join(lines) + "\n"


def publish_report(report: RunReport) -> None:
    """The markdown report and the detections table, as artifacts of this run."""
    if not _in_a_run():
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    video_id, results = report.video_id, report.results
    body = markdown(report)
    what = f"vidpipe report of {video_id}"
    _quietly(lambda: create_markdown_artifact(body, key=_key(video_id, "report"),
                                              description=what))  # fmt: skip
    detections = results.get("detections")
    if detections is not None:
        rows = [s.to_dict() for s in detections.result.labels]
        _quietly(lambda: create_table_artifact(rows or [{"label": "(nothing counted)"}],
                                               key=_key(video_id, "detections"),
                                               description=f"{detections.result.model}: labels "
                                               "that count for the video"))  # fmt: skip
