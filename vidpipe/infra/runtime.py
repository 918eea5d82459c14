"""Process-wide environment defaults, applied before Prefect or ultralytics load.

Each is a default only: a variable already set in the environment wins.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # No telemetry leaves the machine.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Task results are what makes stage caching work across runs.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    # Prefect's local server for a one-off `vidpipe process` gets 20 s to start by default;
    # on a busy 2-core box (a ladder encoding next to it) that was measured not to be enough.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
