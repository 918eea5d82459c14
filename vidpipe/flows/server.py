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
from collections.abc import Iterator
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the parent exits (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
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
    child_env = (
        os.environ
        | {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
            "PREFECT_API_URL": "",
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
    url = f"http://{host}:{port}/api"
    try:
        wait_healthy(url, proc, timeout_seconds)
        yield url
    finally:
        stop_group(proc)
        log.close()
