"""vidpipe as a service: ``vidpipe up``, upload events, two pools, and a lost worker loses nothing.

One ``vidpipe up`` serves the module: a Prefect server on the embedded
PostgreSQL, the ``vidpipe-cpu`` and ``vidpipe-gpu`` pools with a worker each,
the deployments, the upload trigger and the automations of
``configs/service.yaml``, with Crashed after 60 s without a heartbeat instead
of 90 s (``tests/service.py``). The ladder runs on the
GPU pool (``pipeline.stage_deployments: [ladder]``) as a child run of
process-video, so every test crosses both pools. Media-only runs: the model
stages have tests of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import (
    BUNNY,
    MEDIA_ONLY,
    Media,
    Published,
    S3Server,
    ffmpeg,
    media_hashes,
    run_cli,
)
from tests.service import LocalService, fast_service_file, wait_for
from tests.test_process import check_published

pytestmark = [pytest.mark.service, pytest.mark.slow]

GPU_WORKER = "vidpipe-gpu-local"
ENV = MEDIA_ONLY | {"VIDPIPE_PIPELINE__STAGE_DEPLOYMENTS": '["ladder"]'}
RUN_TIMEOUT = 420


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    root = tmp_path_factory.mktemp("service")
    with LocalService.running(root, ENV, fast_service_file(root / "service.yaml")) as service:
        yield service


def _clip(tmp: Path, name: str, seconds: int, seed: int) -> Path:
    """A 1080p clip of its own (``seed`` makes its bytes, and so its video id, unique)."""
    path = tmp / name
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=1920x1080:r=30:d={seconds},hue=h={seed}",
           "-f", "lavfi", "-i", f"sine=f={300 + seed}:d={seconds}", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(path))  # fmt: skip
    return path


def _the_run(svc: LocalService, video_id: str) -> Any:
    runs = wait_for(lambda: svc.flow_runs("process-video", f"process-{video_id}"), 90,
                    f"a process-video run of {video_id}")  # fmt: skip
    return min(runs, key=lambda r: r.created)


def _ladder_child(svc: LocalService, video_id: str) -> Any:
    return wait_for(lambda: next(iter(svc.flow_runs("run-stage", f"ladder-{video_id}")), None),
                    120, f"the ladder's run on the GPU pool for {video_id}")  # fmt: skip


def _encoding(svc: LocalService, video_id: str) -> Any:
    """The ladder's child run, once its ffmpeg runs and the EVENT master plays."""
    child = _ladder_child(svc, video_id)
    svc.wait_state(child.id, ("Running",), 120)

    def transcoding() -> bool:
        master = svc.data_dir / "videos" / video_id / "master.m3u8"
        running = [p.name() for p in svc.run_processes(child.id)]
        return master.exists() and any("ffmpeg" in name for name in running)

    wait_for(transcoding, 120, "the transcode under way", every=0.2)
    return child


def _dispatched(svc: LocalService, sha256: str, count: int) -> None:
    """Wait until ``count`` dispatch-upload runs of this upload completed: every event
    was taken and acted on."""

    def completed() -> bool:
        runs = svc.flow_runs("dispatch-upload", f"dispatch-{sha256}")
        return len([r for r in runs if r.state and r.state.name == "Completed"]) == count

    wait_for(completed, 90, f"{count} dispatch-upload runs")


def _reference(tmp: Path, source: Path) -> dict[str, str]:
    """What an uninterrupted run of ``source`` publishes, by role."""
    run = run_cli("process", str(source), "--data-dir", str(tmp / "ref"), env=MEDIA_ONLY)
    assert run.returncode == 0, run.stderr
    (vid,) = [p.name for p in (tmp / "ref" / "videos").iterdir()]
    return media_hashes(Published(tmp / "ref", vid))


def test_upload_event_runs_once_and_show_agrees_with_the_ui(svc: LocalService) -> None:
    """Two events for one upload (two ids), and a third after the run finished: one run.

    The key is the run's idempotency key (``upload:{sha256}``), kept with the
    run in Prefect's database: not a window of seen event ids, which Prefect
    forgets after 30 minutes.
    """
    src = svc.store(BUNNY)
    svc.announce(src)
    svc.announce(src)
    run = _the_run(svc, src.video_id)
    done = svc.wait_state(run.id, ("Completed",), RUN_TIMEOUT)
    _dispatched(svc, src.sha256, 2)
    svc.announce(src)  # later, after the run is done: the same upload again
    _dispatched(svc, src.sha256, 3)
    runs = svc.flow_runs("process-video", f"process-{src.video_id}")
    assert [r.id for r in runs] == [done.id], "one upload, announced three times, ran once"
    assert done.idempotency_key == f"upload:{src.sha256}"

    # The ladder ran on the GPU pool, the parent on the CPU pool.
    child = _ladder_child(svc, src.video_id)
    assert svc.flow_run(child.id).state.name == "Completed"
    assert child.work_pool_name == "vidpipe-gpu" and done.work_pool_name == "vidpipe-cpu"
    assert child.parent_task_run_id is not None, "the stage's run is a subflow of its video's"

    def slots_held() -> list[Any]:
        return [e for e in svc.events("prefect.concurrency-limit.acquired")
                if e.resource.get("prefect.resource.name") == "gpu-slots"
                and any(r.id == f"prefect.flow-run.{child.id}" for r in e.related)]  # fmt: skip

    held = wait_for(slots_held, 30, "the GPU stage to hold a gpu-slots slot while it ran")
    assert len(held) == 1, held

    # `vidpipe show` and the UI tell the same story.
    pub = Published(svc.data_dir, src.video_id)
    check_published(pub)
    shown = run_cli("show", src.video_id, "--data-dir", str(svc.data_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"{src.video_id}  published" in shown.stdout
    artifacts = {a.key: a for a in svc.artifacts(done.id)}
    report = artifacts[f"video-{src.video_id}-report"].data
    ladder = pub.manifest["ladder"]
    for rendition in [*ladder["video"], ladder["audio"]]:
        assert rendition["name"] in shown.stdout and rendition["name"] in report
    assert artifacts[f"video-{src.video_id}-master"].data.endswith("master.m3u8)")
    assert f"video-{src.video_id}-poster" in artifacts
    progress = {a.key: a for a in svc.artifacts(child.id)}[f"video-{src.video_id}-transcode"]
    assert progress.data == 100.0, "the transcode's progress, in the run that encodes"


def test_submit_joins_the_upload_run_and_prints_its_link(
    svc: LocalService, media: Media, tmp_path: Path
) -> None:
    """``process --submit`` of a file already uploaded finds that upload's run; ``--wait``
    waits for it; a failure is said in the line the CLI prints when it runs the video here."""
    src = svc.store(media.portrait)
    svc.announce(src)
    run = _the_run(svc, src.video_id)
    env = {"PREFECT_API_URL": svc.api_url}
    wait = ("--submit", "--wait", str(RUN_TIMEOUT), "--data-dir", str(svc.data_dir))
    submitted = run_cli("process", str(media.portrait), *wait, env=env, timeout=RUN_TIMEOUT + 60)
    assert submitted.returncode == 0, submitted.stderr
    assert f"/runs/flow-run/{run.id}" in submitted.stdout
    assert f"process-{src.video_id}: Completed" in submitted.stdout
    assert len(svc.flow_runs("process-video", f"process-{src.video_id}")) == 1

    # A broken upload fails its run with the CLI's own line, exit 2 both ways.
    broken = media.corrupt
    here = run_cli("process", str(broken), "--data-dir", str(tmp_path / "here"), env=MEDIA_ONLY)
    there = run_cli("process", str(broken), *wait, env=env, timeout=RUN_TIMEOUT + 60)
    assert here.returncode == there.returncode == 2, (here.stderr, there.stdout, there.stderr)
    line = next(ln for ln in here.stderr.splitlines() if ln.startswith("error: "))
    assert line in there.stdout, (line, there.stdout)


def test_spot_notice_sigterm_reschedules_and_completes(svc: LocalService, tmp_path: Path) -> None:
    """SIGTERM (the two-minute warning) to ``prefect flow-run execute`` of the GPU stage:
    AwaitingRetry, picked up again, and the video publishes what an uninterrupted run does."""
    source = _clip(tmp_path, "notice.mp4", 20, seed=40)
    src = svc.store(source)
    svc.announce(src)
    parent = _the_run(svc, src.video_id)
    child = _encoding(svc, src.video_id)
    running = svc.run_processes(child.id)
    supervisors = [p for p in running if "execute" in p.cmdline()]
    assert supervisors, f"not under `prefect flow-run execute`: {[p.cmdline() for p in running]}"
    supervisors[0].send_signal(signal.SIGTERM)
    svc.wait_state(parent.id, ("Completed",), RUN_TIMEOUT)
    assert "AwaitingRetry" in svc.history(child.id)
    assert svc.flow_run(child.id).state.name == "Completed"
    pub = Published(svc.data_dir, src.video_id)
    check_published(pub)
    assert media_hashes(pub) == _reference(tmp_path, source)


def test_lost_gpu_node_crashes_then_resumes_with_only_the_unfinished_stage(
    svc: LocalService, tmp_path: Path
) -> None:
    """SIGKILL of the GPU worker and everything it runs mid-transcode (the node vanished):
    no heartbeat, Crashed, AwaitingRetry, a new node's worker finishes it; the stages the
    parent finished come back Cached; identical content; nothing of the dead run runs on."""
    source = _clip(tmp_path, "lost.mp4", 20, seed=80)
    src = svc.store(source)
    postgres_before = _postmasters()
    svc.announce(src)
    parent = _the_run(svc, src.video_id)
    child = _encoding(svc, src.video_id)
    node = svc.worker_process(GPU_WORKER)
    doomed = [node, *node.children(recursive=True)]
    assert any("ffmpeg" in p.name() for p in doomed), "killed before the transcode ran"
    for proc in doomed:
        proc.kill()
    _, alive = psutil.wait_procs(doomed, timeout=10)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after SIGKILL: {alive}"

    svc.wait_state(child.id, ("Crashed", "AwaitingRetry", "Scheduled"), 120)
    svc.start_worker("vidpipe-gpu", "vidpipe-gpu-replacement")  # the new node; stays
    svc.wait_state(parent.id, ("Completed",), RUN_TIMEOUT)
    history = svc.history(child.id)
    assert "Crashed" in history and "AwaitingRetry" in history, history
    assert svc.flow_run(child.id).state.name == "Completed"
    assert svc.flow_run(parent.id).run_count == 1, "the parent waited; only the stage re-ran"

    child_tasks = svc.task_runs(child.id)
    probes = [t for t in child_tasks if t.name.startswith("probe-")]
    assert probes and all(t.state.name == "Cached" for t in probes), "probe re-ran"
    ladders = [t for t in child_tasks if t.name.startswith("ladder-")]
    assert any(t.state.name == "Completed" for t in ladders), "the ladder never finished"
    parent_probes = [t for t in svc.task_runs(parent.id) if t.name.startswith("probe-")]
    assert len(parent_probes) == 1 and parent_probes[0].state.name == "Completed"

    postgres_after = _postmasters()
    assert postgres_after <= postgres_before, "a run started a PostgreSQL of its own"
    pub = Published(svc.data_dir, src.video_id)
    check_published(pub)
    # The same bytes as an uninterrupted run (x264 runs one thread per rung: bit-exact).
    assert media_hashes(pub) == _reference(tmp_path, source)


def _postmasters() -> set[int]:
    """PostgreSQL servers running (their backends are postgres processes too)."""
    found = set()
    for proc in psutil.process_iter(["name", "ppid"]):
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(proc.info["ppid"]).name()
            if proc.info["name"] == "postgres" and parent != "postgres":
                found.add(proc.pid)
    return found


def test_two_runs_of_one_video_on_two_workers_one_does_the_work(
    svc: LocalService, tmp_path: Path
) -> None:
    """Two process-video runs of one video at once, on two CPU workers: the video's lock
    lets one work; the other finds every stage Cached and publishes nothing new."""
    from vidpipe.flows.intake import source_uri
    from vidpipe.flows.submit import submit_reprocess
    from vidpipe.infra.settings import load_settings
    from vidpipe.infra.storage import open_storage

    source = _clip(tmp_path, "twice.mp4", 4, seed=120)
    src = svc.store(source)
    uri = source_uri(open_storage(load_settings(data_dir=str(svc.data_dir))), src.key)
    svc.start_worker("vidpipe-cpu", "vidpipe-cpu-second")
    with svc.api():
        runs = [submit_reprocess(src.video_id, src.sha256, uri, {}, batch)
                for batch in ("first", "second")]  # fmt: skip
    for run in runs:
        svc.wait_state(run.flow_run_id, ("Completed",), RUN_TIMEOUT)
    stage_tasks = {
        run.flow_run_id: [t for t in svc.task_runs(run.flow_run_id)
                          if t.name.split("-")[0] in ("probe", "fingerprint")]
        for run in runs
    }  # fmt: skip
    cached = {rid: all(t.state.name == "Cached" for t in ts) for rid, ts in stage_tasks.items()}
    assert sorted(cached.values()) == [False, True], stage_tasks
    assert len(svc.flow_runs("run-stage", f"ladder-{src.video_id}")) == 1, "one ladder, ever"
    check_published(Published(svc.data_dir, src.video_id))


def test_two_hosts_share_only_the_api_the_catalog_and_s3(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control host (``vidpipe up --no-workers``) and two worker hosts, each with a data
    dir and a HOME of its own, media and task results on S3 (moto over HTTP): the parent
    runs on the CPU host, the ladder on the GPU host; the video is published in the bucket;
    no host keeps media, results or a catalog of its own."""
    prefix = "cluster"
    storage = {"VIDPIPE_STORAGE__KIND": "s3", "VIDPIPE_STORAGE__S3_BUCKET": s3_server.bucket,
               "VIDPIPE_STORAGE__S3_ENDPOINT_URL": s3_server.endpoint,
               "VIDPIPE_STORAGE__S3_PREFIX": prefix}  # fmt: skip
    for key, value in storage.items():
        monkeypatch.setenv(key, value)  # the test's own store() and announce() use S3 too
    root = tmp_path / "control"
    spec = fast_service_file(tmp_path / "service.yaml")
    with LocalService.running(root, ENV, spec, workers=False) as control:
        hosts = {"cpu": root / "host-cpu", "gpu": root / "host-gpu"}
        control.start_worker("vidpipe-cpu", "cpu-host", host=hosts["cpu"])
        control.start_worker("vidpipe-gpu", "gpu-host", host=hosts["gpu"])
        src = control.store(_clip(tmp_path, "hosts.mp4", 8, seed=150))
        control.announce(src)
        parent = _the_run(control, src.video_id)
        child = _ladder_child(control, src.video_id)

        def data_dirs(run_id: str) -> set[str] | None:
            found = set()
            for proc in control.run_processes(run_id):
                with contextlib.suppress(psutil.Error):
                    found.add(proc.environ().get("VIDPIPE_DATA_DIR", ""))
            return found or None

        control.wait_state(child.id, ("Running",), 120)
        on_gpu = wait_for(lambda: data_dirs(str(child.id)), 60, "the ladder's processes", 0.2)
        on_cpu = wait_for(lambda: data_dirs(str(parent.id)), 60, "the parent's processes", 0.2)
        assert on_gpu == {str(hosts["gpu"] / "data")}, on_gpu
        assert on_cpu == {str(hosts["cpu"] / "data")}, on_cpu
        control.wait_state(parent.id, ("Completed",), RUN_TIMEOUT)

        # Published in the bucket, whole: fetched from S3, it meets every house rule.
        s3 = s3_server.client()
        video = f"{prefix}/videos/{src.video_id}/"
        fetched = tmp_path / "fetched"
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=s3_server.bucket, Prefix=video
        ):
            for obj in page.get("Contents", []):
                dest = fetched / "videos" / src.video_id / obj["Key"].removeprefix(video)
                dest.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(s3_server.bucket, obj["Key"], str(dest))
        check_published(Published(fetched, src.video_id))
        results = s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/.state/results/")
        assert results.get("KeyCount", 0) > 0, "task results are not in the bucket"

        shown = run_cli("show", src.video_id, "--data-dir", str(tmp_path / "anywhere"),
                        env={"VIDPIPE_DATABASE_URL": control.database_url})  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert f"{src.video_id}  published" in shown.stdout

        # Nothing another host needs stayed on a host's disk.
        for host in [*hosts.values(), control.data_dir]:
            kept = [p for p in host.rglob("*") if p.is_file()
                    and (p.suffix in (".ts", ".m4s", ".m3u8", ".vtt") or p.name == "manifest.json"
                         or ".state" in p.parts)]  # fmt: skip
            assert not kept, f"{host.name} kept {kept[:5]}"
        for host in hosts.values():
            assert not (host / "data" / "pg").exists(), f"{host.name} started a catalog"


def test_reconcile_finishes_a_killed_run_and_removes_only_orphans(
    svc: LocalService, tmp_path: Path
) -> None:
    """A process-video run SIGKILLed mid-transcode leaves its video ``playable``; reconcile
    re-drives it to ``published``, removes an attempt nothing points at, keeps the live one."""
    from vidpipe.infra.catalog import open_catalog

    source = _clip(tmp_path, "stuck.mp4", 20, seed=160)
    src = svc.store(source)
    svc.announce(src)
    parent = _the_run(svc, src.video_id)
    _encoding(svc, src.video_id)
    for proc in svc.run_processes(parent.id):
        proc.kill()
    with open_catalog(None, svc.data_dir) as catalog:
        video = catalog.get_video(src.video_id)
        assert video is not None and video.status in ("processing", "playable")

    # An attempt uploaded whole but never published: what a run killed before its publish
    # leaves. A copy of another video's attempt, under an old attempt name.
    other = next(p for p in (svc.data_dir / "videos").iterdir()
                 if (p / "manifest.json").exists() and p.name != src.video_id)  # fmt: skip
    attempt = json.loads((other / "manifest.json").read_text())["ladder"]["attempt"]
    orphan = other / "20200101T000000Z-0ddba1"
    shutil.copytree(other / attempt, orphan)

    with svc.api():
        from prefect.deployments import run_deployment

        now = {"stuck_after_minutes": 0, "orphan_after_hours": 1}
        run: Any = run_deployment("reconcile/vidpipe", timeout=0, parameters=now)
    svc.wait_state(run.id, ("Completed",), 120)
    table = {a.key: a for a in svc.artifacts(run.id)}["reconcile"].data
    rows = json.loads(table) if isinstance(table, str) else table
    redriven = [r for r in rows if r["what"] == "re-driven" and r["video"] == src.video_id]
    assert redriven, rows
    assert {"what": "orphan removed", "video": other.name,
            "detail": f"videos/{other.name}/{orphan.name}"} in rows  # fmt: skip
    started = redriven[0]["detail"].removeprefix("flow run ")
    svc.wait_state(started, ("Completed",), RUN_TIMEOUT)
    with open_catalog(None, svc.data_dir) as catalog:
        assert catalog.get_video(src.video_id).status == "published"  # type: ignore[union-attr]
    assert not orphan.exists()
    assert (other / attempt).is_dir(), "reconcile removed a published attempt"
    check_published(Published(svc.data_dir, other.name))
    check_published(Published(svc.data_dir, src.video_id))


def test_the_prefect_ui_shows_the_run_and_its_report(svc: LocalService, tmp_path: Path) -> None:
    """Headless Chromium opens the local Prefect UI, finds the video's flow run and its
    report artifact, and takes screenshots (kept under the test's tmp dir)."""
    node = shutil.which("node")
    script = Path(__file__).parent / "player" / "prefect_ui.mjs"
    if node is None or not (script.parent / "node_modules" / "playwright-core").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node or tests/player/node_modules missing (make player-deps)")
        pytest.skip("node or tests/player/node_modules missing (make player-deps)")
    src = svc.store(BUNNY)
    svc.announce(src)  # finds the first test's run (or starts it, run alone)
    run = _the_run(svc, src.video_id)
    svc.wait_state(run.id, ("Completed",), RUN_TIMEOUT)
    ui = svc.api_url.removesuffix("/api")
    key = f"video-{src.video_id}-report"
    proc = subprocess.run([node, str(script), ui, str(run.id), key, str(tmp_path)],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["run_name"] == f"process-{src.video_id}"
    assert "avc_720p25_5000k" in facts["report_text"]
    for shot in ("flow-run.png", "artifacts.png", "report.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
