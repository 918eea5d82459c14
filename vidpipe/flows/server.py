"""A Prefect server on loopback, started as a child process and stopped with it.

``vidpipe up`` runs one for the local service; tests and benches run one per
session so that flows report to a real API. The server runs in its own
process group, so stopping it stops its workers too, and ``PR_SET_PDEATHSIG``
ends it if the parent dies without a chance to stop it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the parent exits (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def become_subreaper() -> None:
    """Orphans among this process's descendants become its children, not init's (Linux).

    A flow run's engine runs in a session of its own; when its worker dies,
    it is re-parented here, where :func:`stop_descendants` still finds it.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reap_orphans(known: set[int]) -> None:
    """Collect the exit of orphans re-parented here (as a subreaper), so none stays a zombie.

    ``known`` are the children this process waits for itself (its ``Popen``s).
    """
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.pid not in known and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def stop_descendants(keep: Callable[[Any], bool], timeout_seconds: float = 10) -> list[str]:
    """SIGTERM, then SIGKILL, every descendant of this process but those ``keep`` names;
    returns the command lines it had to stop (each was left behind by something)."""
    import psutil

    left = [p for p in psutil.Process().children(recursive=True) if not _kept(p, keep)]
    stopped = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            stopped.append(" ".join(proc.cmdline())[:200])
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=timeout_seconds)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return stopped


def _kept(proc: Any, keep: Callable[[Any], bool]) -> bool:
    try:
        return keep(proc)
    except Exception:
        return False


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server at {url} did not start")
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen[bytes], timeout_seconds: float = 30) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left."""
    stop_groups([proc], timeout_seconds)


def stop_groups(procs: list[subprocess.Popen[bytes]], timeout_seconds: float = 30) -> None:
    """SIGTERM every child's process group at once; SIGKILL what is left at the deadline."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: what the child started, too
        proc.wait()


@contextlib.contextmanager
def prefect_server(
    home: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    ui: bool = False,
    env: dict[str, str] | None = None,
    timeout_seconds: float = 120,
) -> Iterator[str]:
    """Start ``prefect server start`` with its state in ``home``; yields the API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    url = f"http://{host}:{port}/api"
    child_env = (
        os.environ
        | {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
            "PREFECT_API_URL": "",
            # The UI's browser code calls this API; left alone it assumes port 4200.
            "PREFECT_UI_API_URL": url,
            "PREFECT_UI_URL": url.removesuffix("/api"),
        }
        | (env or {})
    )
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=child_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        wait_healthy(url, proc, timeout_seconds)
        yield url
    finally:
        stop_group(proc)
        log.close()
