"""Scratch directories that clean up after killed owners.

Each scratch directory holds an ``flock`` on its ``.owner`` file while in use.
Creating a new one sweeps siblings whose owner is gone (the lock is free), so
a worker killed mid-encode leaves no garbage behind after the next run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_OWNER = ".owner"
_GRACE_SECONDS = 3600  # a directory with no owner file yet may be being created


def _sweep(parent: Path) -> None:
    for d in parent.iterdir():
        if not d.is_dir():
            continue
        try:
            fd = os.open(d / _OWNER, os.O_RDWR)
        except FileNotFoundError:
            if time.time() - d.stat().st_mtime > _GRACE_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # alive
        else:
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)


@contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """``parent/name``, private to this process and removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep(parent)
    path = parent / name
    path.mkdir()
    fd = os.open(path / _OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
