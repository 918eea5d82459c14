"""Helpers for the service tests and bench/service.py: the real ``vidpipe up``, driven
through the Prefect API it serves.

``LocalService.running`` starts ``vidpipe up`` in a process of its own, on a
fresh data dir and a HOME of its own, and waits for it to say it is up. On the
way out it sends Ctrl-C (SIGINT) and then checks that no process anywhere still
names its directory: the service leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from uuid import UUID

import psutil
import yaml

from vidpipe.flows.server import free_port
from vidpipe.infra.catalog import stop_embedded
from vidpipe.infra.ingest import SourceRef, ingest_file
from vidpipe.infra.settings import load_settings
from vidpipe.infra.storage import open_storage

REPO = Path(__file__).resolve().parent.parent
SERVICE_YAML = REPO / "vidpipe" / "configs" / "service.yaml"
T = TypeVar("T")


def fast_service_file(dest: Path, heartbeat_seconds: int = 30, silence_seconds: int = 60) -> Path:
    """configs/service.yaml with the missing-heartbeat window shortened, no schedules.

    Production: heartbeats every 30 s (Prefect's minimum), Crashed after 90 s
    of silence. A test waits 60 s (two missed beats) instead; the mechanism is the same.
    """
    spec = yaml.safe_load(SERVICE_YAML.read_text())
    spec["worker_env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_seconds)
    for automation in spec["automations"]:
        if automation.get("posture") == "Proactive":
            automation["within_seconds"] = silence_seconds
    for deployment in spec["deployments"]:
        # Tests start reconcile themselves; a scheduled run would race theirs (and remove
        # the orphan a test planted before the test's own run could report it).
        deployment.pop("interval_seconds", None)
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def processes_naming(text: str) -> list[psutil.Process]:
    """Processes whose command line or environment names ``text`` (a directory)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            named = any(text in part for part in proc.info.get("cmdline") or [])
            named = named or any(text in v for v in proc.environ().values())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if named:
            found.append(proc)
    return found


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@dataclass
class LocalService:
    root: Path
    proc: subprocess.Popen[bytes]
    api_url: str
    log: Path
    env: dict[str, str]
    service_file: Path
    extra_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        root: Path,
        env: dict[str, str] | None = None,
        service_file: Path | None = None,
        workers: bool = True,
    ) -> Iterator[LocalService]:
        root.mkdir(parents=True, exist_ok=True)
        home = root / "home"
        home.mkdir(exist_ok=True)
        port, upload_port = free_port(), free_port()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        child_env |= {"HOME": str(home), "PREFECT_HOME": str(home / ".prefect"),
                      "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | (env or {})  # fmt: skip
        argv = [sys.executable, "-m", "vidpipe.flows.cli", "up", "--data-dir", str(root / "data"),
                "--port", str(port), "--upload-port", str(upload_port)]  # fmt: skip
        if service_file is not None:
            argv += ["--service", str(service_file)]
        if not workers:
            argv.append("--no-workers")
        log = root / "up.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        svc = cls(root, proc, f"http://127.0.0.1:{port}/api", log, child_env,
                  service_file or SERVICE_YAML)  # fmt: skip
        try:
            wait_for(svc._up, 180, "vidpipe up to say it is up")
            yield svc
        finally:
            svc.stop()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"vidpipe up exited {self.proc.returncode}:\n{self.log_text()}")
        return "vidpipe is up" in self.log_text()

    def log_text(self) -> str:
        text = self.log.read_text(errors="replace")
        for worker in sorted((self.data_dir / "logs").glob("*.log")):
            text += f"\n--- {worker.name}\n" + worker.read_text(errors="replace")[-6000:]
        return text

    def stop(self) -> None:
        """Ctrl-C, as an operator would; then nothing of the service may be running."""
        for worker in self.extra_workers:
            worker.send_signal(signal.SIGTERM)
        for worker in self.extra_workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise AssertionError("vidpipe up did not stop within 90 s of Ctrl-C") from None
        stop_embedded(self.data_dir)  # this test process's own use of the catalog
        try:
            wait_for(lambda: not processes_naming(str(self.root)), 20, "", every=0.5)
        except AssertionError:
            left = [" ".join(p.cmdline())[:200] for p in processes_naming(str(self.root))]
            raise AssertionError(f"left running after vidpipe up stopped: {left}") from None

    # ------------------------------------------------------------- the Prefect API

    @contextlib.contextmanager
    def api(self) -> Iterator[None]:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with a sync client of this service's API."""
        from prefect.client.orchestration import get_client

        with self.api(), get_client(sync_client=True) as client:
            return fn(client)

    def events(self, name: str) -> list[Any]:
        """The events called ``name`` that the service's API has kept, newest first."""
        from prefect.events.filters import EventFilter, EventNameFilter

        found = self.call(
            lambda c: c.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
        )
        return list(found.events)

    def flow_runs(self, flow_name: str, run_name: str | None = None) -> list[Any]:
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterName,
        )

        runs = FlowRunFilter(name=FlowRunFilterName(any_=[run_name])) if run_name else None
        return self.call(lambda c: c.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), flow_run_filter=runs,
        ))  # fmt: skip

    def flow_run(self, run_id: str | UUID) -> Any:
        return self.call(lambda c: c.read_flow_run(UUID(str(run_id))))

    def wait_state(self, run_id: str | UUID, names: tuple[str, ...], timeout: float) -> Any:
        """Wait until the run's state is one of ``names``; fails with the logs otherwise."""

        def reached() -> Any:
            run = self.flow_run(run_id)
            if run.state and run.state.name in names:
                return run
            if run.state and run.state.is_final() and not run.state.is_crashed():
                raise AssertionError(
                    f"run {run.name} ended {run.state.name} ({run.state.message}) waiting for "
                    f"{names}\n{self.log_text()[-8000:]}"
                )
            return None

        try:
            return wait_for(reached, timeout, f"flow run {run_id} to be {'/'.join(names)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_text()[-8000:]}") from None

    def history(self, run_id: str | UUID) -> list[str]:
        states = self.call(lambda c: c.read_flow_run_states(UUID(str(run_id))))
        return [s.name for s in states]

    def task_runs(self, flow_run_id: str | UUID) -> list[Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
        return self.call(lambda c: c.read_task_runs(flow_run_filter=runs))

    def artifacts(self, flow_run_id: str | UUID) -> list[Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        only = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]))
        return self.call(lambda c: c.read_artifacts(artifact_filter=only))

    # ------------------------------------------------------------- uploads and workers

    def store(self, path: Path) -> SourceRef:
        """Put ``path`` where the upload service would: ``sources/{sha256}`` in its storage."""
        settings = load_settings(data_dir=str(self.data_dir))
        return ingest_file(path, open_storage(settings))

    def announce(self, src: SourceRef) -> None:
        """Emit ``vidpipe.upload.completed`` for a stored source, as the upload service does."""
        from vidpipe.flows.intake import emit_completed, source_uri

        uri = source_uri(open_storage(load_settings(data_dir=str(self.data_dir))), src.key)
        with self.api():
            emit_completed(SimpleNamespace(sha256=src.sha256), uri)  # type: ignore[arg-type]

    def start_worker(
        self, pool: str, name: str, host: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Another worker on ``pool`` (``vidpipe worker``), as a new node would bring; stopped
        with the service. ``host``: a root of its own, for its data dir and HOME, as on
        another machine; it reaches the service only through its API, catalog and storage."""
        root = host or self.root
        home = root / "home"
        (root / "data").mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        env = self.env | {"PREFECT_API_URL": self.api_url, "HOME": str(home),
                          "PREFECT_HOME": str(home / ".prefect"),
                          "VIDPIPE_DATABASE_URL": self.database_url}  # fmt: skip
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "vidpipe.flows.cli", "worker", "--pool", pool,
                "--name", name, "--data-dir", str(root / "data"),
                "--service", str(self.service_file)]  # fmt: skip
        with (logs / f"worker-{name}.log").open("ab") as log:
            worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        self.extra_workers.append(worker)
        return worker

    @property
    def database_url(self) -> str:
        """The catalog's DSN, as ``vidpipe up`` prints it."""
        for line in self.log.read_text().splitlines():
            if line.startswith("VIDPIPE_DATABASE_URL="):
                return line.removeprefix("VIDPIPE_DATABASE_URL=").strip()
        raise AssertionError(f"vidpipe up did not print its DSN:\n{self.log_text()}")

    def run_processes(self, flow_run_id: str | UUID) -> list[psutil.Process]:
        """The processes executing one flow run (``PREFECT__FLOW_RUN_ID`` in their env)."""
        found = []
        for proc in processes_naming(str(flow_run_id)):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
                    found.append(proc)
        return found

    def worker_process(self, name: str) -> psutil.Process:
        """The ``prefect worker start`` process named ``name``."""
        for proc in processes_naming(str(self.root)):
            cmd = proc.cmdline()
            if "worker" in cmd and name in cmd:
                return proc
        raise AssertionError(f"no worker {name!r} is running")
