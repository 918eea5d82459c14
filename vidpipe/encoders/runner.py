"""The one place ffmpeg runs: argv list, timeout on the process group, progress.

ffmpeg starts in its own session, so a timeout (or a cancelled flow) kills it
and anything it spawned. ``-progress pipe:1`` feeds the progress callback;
stderr goes to a file whose tail ends up in the ``EncodeError``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidpipe.infra.errors import EncodeError, EncodeTimeout

_STDERR_TAIL_BYTES = 4000


@dataclass(frozen=True)
class FfmpegRun:
    argv: tuple[str, ...]
    wall_seconds: float
    cpu_seconds: float  # user + system time of ffmpeg and its children


def run_ffmpeg(
    argv: Sequence[str],
    *,
    timeout_seconds: float,
    on_progress: Callable[[float], None] | None = None,
    expect: Sequence[Path] = (),
) -> FfmpegRun:
    """Run ``argv`` (which must include ``-progress pipe:1``) and check ``expect`` exist.

    Raises ``EncodeTimeout`` past ``timeout_seconds`` and ``EncodeError`` on a
    non-zero exit or a missing output. A run killed by a signal (OOM killer,
    preemption) is marked retryable.
    """
    argv = [str(a) for a in argv]
    start = time.monotonic()
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )

        def kill_group() -> None:
            timed_out.set()
            _killpg(proc.pid)

        timer = threading.Timer(timeout_seconds, kill_group)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if on_progress and line.startswith("out_time_us="):
                    value = line.partition("=")[2]
                    if value.isdigit():
                        on_progress(int(value) / 1e6)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            _killpg(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
        err.seek(max(0, err.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
        tail = err.read().decode(errors="replace")

    wall = time.monotonic() - start
    if timed_out.is_set():
        raise EncodeTimeout(
            f"ffmpeg ran past its {timeout_seconds:.0f} s timeout and was killed",
            tail,
            retryable=False,
        )
    if proc.returncode != 0:
        killed = proc.returncode < 0
        what = f"killed by signal {-proc.returncode}" if killed else f"exit {proc.returncode}"
        raise EncodeError(f"ffmpeg failed ({what})", tail, retryable=killed)
    missing = [str(p) for p in expect if not p.exists() or p.stat().st_size == 0]
    if missing:
        raise EncodeError(f"ffmpeg exited 0 but wrote no output at {', '.join(missing)}", tail)
    return FfmpegRun(tuple(argv), wall, usage.ru_utime + usage.ru_stime)


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
