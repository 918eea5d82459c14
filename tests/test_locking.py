"""The stage lock survives nothing: a killed holder frees it, a live one serialises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vidpipe.infra.scratch import scratch_dir
from vidpipe.tasks.locking import FlockLockManager

HOLD = """
import sys, time
from pathlib import Path
from vidpipe.tasks.locking import FlockLockManager
m = FlockLockManager(Path(sys.argv[1]))
assert m.acquire_lock("transcode-key", "child")
print("held", flush=True)
time.sleep(600)
"""


def test_killed_holder_releases_lock(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"held"
    manager = FlockLockManager(tmp_path)
    assert manager.is_locked("transcode-key")
    assert not manager.acquire_lock("transcode-key", "parent", acquire_timeout=0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert manager.wait_for_lock("transcode-key", timeout=5)
    assert manager.acquire_lock("transcode-key", "parent", acquire_timeout=5)
    assert manager.is_lock_holder("transcode-key", "parent")
    assert not manager.is_lock_holder("transcode-key", "someone-else")
    manager.release_lock("transcode-key", "parent")
    assert not manager.is_locked("transcode-key")


def test_second_holder_waits_in_process(tmp_path: Path) -> None:
    manager = FlockLockManager(tmp_path)
    assert manager.acquire_lock("k", "first")
    assert manager.acquire_lock("k", "first")  # re-entrant for the same holder
    start = time.monotonic()
    assert not manager.acquire_lock("k", "second", acquire_timeout=0.3)
    assert time.monotonic() - start >= 0.3
    manager.release_lock("k", "first")
    assert manager.acquire_lock("k", "second", acquire_timeout=1)


def test_scratch_sweeps_dead_owners_only(tmp_path: Path) -> None:
    with scratch_dir(tmp_path, "alive") as alive:
        (alive / "f").write_text("x")
        dead = tmp_path / "dead"
        dead.mkdir()
        (dead / ".owner").touch()  # nobody holds its lock: its owner died
        with scratch_dir(tmp_path, "new") as new:
            assert not dead.exists()
            assert alive.exists() and (alive / "f").exists()
            assert new.exists()
    assert list(tmp_path.iterdir()) == []
