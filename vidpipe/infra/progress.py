"""A process-wide hook for progress reports.

Encoders report seconds of media done; the CLI subscribes a progress bar.
Nothing here knows about Prefect or rich.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, float, float], None]  # (stage, done_seconds, total_seconds)

_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Add a listener; returns a function that removes it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(stage: str, done_seconds: float, total_seconds: float) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(stage, done_seconds, total_seconds)


def reporter(stage: str, total_seconds: float) -> Callable[[float], None]:
    """A callback for ``run_ffmpeg`` that forwards to every listener."""
    return lambda done: emit(stage, done, total_seconds)
