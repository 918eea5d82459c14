"""process-video: one upload in; a ladder that plays while it encodes, then everything else.

    ingest ─► probe ─► plan (pure) ─► ladder ─┬─► publish: VOD ladder (step 2)
                                  (EVENT ladder │
                                   while it     ├─► captions ─► publish: + SUBTITLES (step 3)
                                   encodes,     ├─► detections ─┐
                                   step 1)      ├─► safety      ├─► embeddings
                                                ├─► deepfake    │
                                                └─► fingerprint │ (captions ──┘)
                                                      └─► manifest and catalog, never the master

Every stage is a cached, retried Prefect task declared once in the registry
(``flows/stages.py``) and handed only references. The analysis stages that
read only the ladder run concurrently, ``pipeline.max_parallel_stages`` at a
time. A re-run with the same source and options hits every cache and writes
nothing; a run killed anywhere leaves a master that plays what it points at.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.states import Failed

from vidpipe.encoders.captions import Captions
from vidpipe.encoders.encode import LadderResult, merge_rungs
from vidpipe.encoders.ladder import LadderPlan, plan_ladder
from vidpipe.encoders.probe import VideoInfo
from vidpipe.encoders.publish import (
    PublishResult,
    Reported,
    build_manifest,
    carried_subtitles,
    live_manifest,
    manifest_exists,
    update_manifest,
    withdraw_live,
)
from vidpipe.flows import record, report
from vidpipe.flows.stages import ANALYSIS, STAGES, StageRunner, refuse_endless_retries, stage_args
from vidpipe.infra.catalog import Catalog, open_catalog
from vidpipe.infra.errors import (
    AttemptVanished,
    ConfigError,
    UploadRejected,
    is_retryable,
    one_line,
)
from vidpipe.infra.ingest import SourceRef, stored_source
from vidpipe.infra.ladders import load_ladder
from vidpipe.infra.settings import Settings, load_settings, storage_overrides
from vidpipe.infra.storage import Storage, open_storage
from vidpipe.tasks.common import results_here
from vidpipe.tasks.ingest import ingest
from vidpipe.tasks.ladder import ladder_rungs
from vidpipe.tasks.publish import publish_step

_PLAYABLE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ProcessResult:
    source: SourceRef
    info: VideoInfo
    ladder: LadderResult
    published: PublishResult
    stages: dict[str, dict[str, Any]]
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # analysis stages that failed


def build_settings(
    config: str | None, out: str | None, ladder: str | None, overrides: dict[str, Any] | None
) -> Settings:
    """Settings for one run: defaults, ``config``, environment, then the CLI's flags."""
    merged: dict[str, Any] = dict(overrides or {})
    if out:
        merged["storage"] = {**merged.get("storage", {}), **storage_overrides(out)}
    if ladder:
        merged["encode"] = {**merged.get("encode", {}), "ladder": ladder}
    return load_settings(Path(config) if config else None, **merged)


@flow(name="process-video", validate_parameters=False, persist_result=False)
def process_video(
    source: str | None = None,
    out: str | None = None,
    ladder: str | None = None,
    config: str | None = None,
    video_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: list[str] | None = None,
    renditions: list[str] | None = None,
    sha256: str | None = None,
) -> ProcessResult:
    """Process one upload into a published HLS ladder and its analysis.

    ``source`` is a local file to ingest; or, with ``sha256``, the original an
    upload service stored at ``sources/{sha256}`` (``source`` is then its URI,
    for the record). ``force`` names stages to re-run even when their cached
    result is valid; ``renditions`` names rungs to re-encode on their own.

    A failed run's state says why in the line the CLI prints (``error: …``
    for a fault of the upload or configuration, ``internal error: …``).
    """
    try:
        return _process(source, out, ladder, config, video_id, overrides, force, renditions,
                        sha256)  # fmt: skip
    except Exception as exc:
        return Failed(message=one_line(exc), data=exc)  # type: ignore[return-value]


def _process(
    source: str | None,
    out: str | None,
    ladder: str | None,
    config: str | None,
    video_id: str | None,
    overrides: dict[str, Any] | None,
    force: list[str] | None,
    renditions: list[str] | None,
    sha256: str | None,
) -> ProcessResult:
    settings = build_settings(config, out, ladder, overrides)
    refuse_endless_retries(settings)
    if sha256:
        src = stored_source(open_storage(settings), sha256, video_id)
    else:
        if not source:
            raise ConfigError("process-video needs a source file, or the sha256 of a stored one")
        with results_here(settings):
            src = ingest(source, settings, video_id)
    _name_run(f"process-{src.video_id}")
    with open_catalog(settings.database_url, settings.data_dir) as catalog:
        record.begin(catalog, src)
        # A second run of the same video waits here and then finds the first one's work.
        with catalog.video_lock(src.video_id):
            before = record.start_processing(catalog, src.video_id)
            run = _Run(src, settings, catalog, StageRunner(settings, frozenset(force or ())))
            try:
                return run.process(renditions or [])
            except UploadRejected as exc:
                record.fail(catalog, src.video_id, "rejected", exc)
                raise
            except ConfigError as exc:
                record.restore(catalog, src.video_id, before, exc)
                raise
            except Exception as exc:
                record.fail(catalog, src.video_id, "failed", exc)
                raise
            finally:
                record.stage_runs(catalog, src.video_id, run.timings, run.attempt, run.errors)


class _Run:
    """One run of process-video over one source: the steps, in order."""

    def __init__(
        self, src: SourceRef, settings: Settings, catalog: Catalog, runner: StageRunner
    ) -> None:
        self.src = src
        self.settings = settings
        self.catalog = catalog
        self.runner = runner
        self.storage: Storage = open_storage(settings)
        self.log = get_run_logger()
        self.attempt: str | None = None
        self.errors: dict[str, str] = {}
        self.results: dict[str, Reported] = {}
        self.extra: dict[str, dict[str, Any]] = {}

    @property
    def timings(self) -> dict[str, Any]:
        return self.runner.timings

    def process(self, renditions: list[str]) -> ProcessResult:
        src, settings = self.src, self.settings
        info: VideoInfo = self.runner.run("probe", src, settings)
        record.probed(self.catalog, src.video_id, info)
        self.log.info("probed %s: %s, %.2f s", src.video_id, info.kind, info.duration_seconds)
        plan = plan_ladder(info, load_ladder(settings.encode.ladder), settings.encode.fps_cap)
        carried = live_manifest(self.storage, src)
        self.subtitles = carried_subtitles(carried)
        self.carried = carried
        self.info = info

        rungs = _only(plan, renditions) if renditions else None  # a typo fails before encoding
        published = None
        live = settings.pipeline.progressive and not manifest_exists(self.storage, src.video_id)
        with self._withdraw_on_permanent_failure(live), report.transcode_progress(src.video_id):
            for fresh in (False, True):
                ladder = self._ladder(info, plan, live, refresh=fresh)
                if rungs is not None:
                    partial = self.runner.run_task(
                        "ladder-rungs", ladder_rungs, src, info, rungs, settings, like="ladder"
                    )
                    ladder = merge_rungs(ladder, partial)
                try:
                    published = self._publish(ladder)  # step 2: the whole VOD ladder
                    break
                except AttemptVanished as exc:
                    if fresh:
                        raise
                    self.log.warning("cached attempt unusable (%s); encoding a fresh attempt", exc)
        assert published is not None
        self.attempt = ladder.attempt
        record.published(self.catalog, src.video_id, ladder)
        self.log.info("published %s attempt %s", src.video_id, ladder.attempt)
        base = published.master_url.rsplit("/", 1)[0]
        report.publish_links(src.video_id, published.master_url,
                             f"{base}/{ladder.poster}" if ladder.poster else None)  # fmt: skip
        self._analyse(ladder)
        update_manifest(self.storage, self._manifest(ladder))
        report.publish_report(report.RunReport(
            src.video_id, ladder, published.master_url,
            {n: t.to_dict() for n, t in self.timings.items()}, self.results,
            self.extra.get("fingerprint", {}).get("near_duplicates", []), self.errors,
        ))  # fmt: skip
        if self.errors:
            first = next(iter(self.errors.values()))
            raise self._first_error or RuntimeError(first)
        return ProcessResult(
            src, info, ladder, published,
            {n: t.to_dict() for n, t in self.timings.items()}, dict(self.results), self.errors,
        )  # fmt: skip

    _first_error: BaseException | None = None

    def _ladder(self, info: VideoInfo, plan: LadderPlan, live: bool, refresh: bool) -> LadderResult:
        """Encode (or find cached) the ladder; with ``live``, an EVENT master plays meanwhile."""
        src, settings = self.src, self.settings
        if refresh:
            return self.runner.run("ladder", src, info, plan, settings, live, refresh=True)
        future = self.runner.start("ladder", src, info, plan, settings, live)
        playable = False
        while not _done(future, _PLAYABLE_POLL_SECONDS):
            master = f"videos/{src.video_id}/master.m3u8"
            if live and not playable and self.storage.exists(master):
                record.playable(self.catalog, src.video_id)
                playable = True
        result: LadderResult = future.result()
        return result

    @contextmanager
    def _withdraw_on_permanent_failure(self, live: bool) -> Iterator[None]:
        """Nothing half published: an EVENT master whose ladder can never finish is removed.

        A transient failure keeps it: the retry finishes what it plays.
        """
        try:
            yield
        except Exception as exc:
            if live and not is_retryable(exc) and withdraw_live(self.storage, self.src.video_id):
                self.log.warning("the ladder failed; its EVENT master was withdrawn")
            raise

    def _manifest(self, ladder: LadderResult) -> dict[str, Any]:
        stages = {n: t.to_dict() for n, t in self.timings.items()}
        return build_manifest(
            self.src, self.info, ladder, self.results, stages, self.subtitles,
            self.carried, self.extra,
        )  # fmt: skip

    def _publish(self, ladder: LadderResult) -> PublishResult:
        result: PublishResult = publish_step(
            self._manifest(ladder), ladder, self.subtitles, self.settings
        )
        return result

    def _analyse(self, ladder: LadderResult) -> None:
        """The stages after the ladder, at most ``max_parallel_stages`` at a time.

        Captions re-publish the master with their SUBTITLES group as soon as
        they are done; every other result updates the manifest and the catalog.
        """
        s = self.settings
        wanted = [n for n in ANALYSIS if STAGES[n].enabled(s) and self._has_input(n, ladder)]
        if STAGES["embeddings"].enabled(s) and ("captions" in wanted or "detections" in wanted):
            wanted.append("embeddings")
        pending = list(wanted)
        running: dict[Future[Any], str] = {}
        while pending or running:
            for name in [n for n in pending if self._ready(n, pending, running)]:
                if len(running) >= s.pipeline.max_parallel_stages:
                    break
                done = {"ladder": ladder, **self.results}
                running[self.runner.start(name, *stage_args(name, self.src, s, done))] = name
                pending.remove(name)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                self._finished(running.pop(future), future, ladder)

    def _has_input(self, name: str, ladder: LadderResult) -> bool:
        return bool(ladder.asr_audio) if name == "captions" else bool(ladder.frames_index)

    def _ready(self, name: str, pending: list[str], running: dict[Any, str]) -> bool:
        busy = set(pending) | set(running.values())
        return not any(up in busy for up in STAGES[name].reads)

    def _finished(self, name: str, future: Future[Any], ladder: LadderResult) -> None:
        try:
            result = future.result()
        except Exception as exc:
            self.errors[name] = str(exc).splitlines()[0][:2000] if str(exc) else repr(exc)
            self._first_error = self._first_error or exc
            self.log.error("stage %s failed: %s", name, self.errors[name])
            return
        self.results[name] = result
        stage = STAGES[name]
        record.files(self.catalog, self.src.video_id, ladder.attempt, result.files)
        if stage.record is not None:
            found = stage.record(self.catalog, self.storage, self.src.video_id, ladder.attempt,
                                 result)  # fmt: skip
            if name == "fingerprint":
                self.extra[name] = {"near_duplicates": [vars(d) for d in found or []]}
        if isinstance(result, Captions):
            self.subtitles = result.subtitles
            self._publish(ladder)  # step 3: the master with its SUBTITLES group
        else:
            update_manifest(self.storage, self._manifest(ladder))


def _name_run(name: str) -> None:
    """Name the flow run after the video, once ingest knows its id (engineers search by it)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if run_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(run_id), name=name)
    except Exception:  # a name is a convenience; never fail a video over it
        pass


def _done(future: Future[Any], seconds: float) -> bool:
    return not wait([future], timeout=seconds).not_done


def _only(plan: LadderPlan, names: list[str]) -> LadderPlan:
    """The plan's rungs named in ``names`` (no audio); an unknown name is a clear error."""
    known = [r.name for r in plan.video]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"no rendition {unknown[0]!r} in this video's ladder; renditions: {', '.join(known)}"
        )
    return LadderPlan(video=tuple(r for r in plan.video if r.name in names), audio=None)


if __name__ == "__main__":
    import sys

    print(process_video(sys.argv[1]))
