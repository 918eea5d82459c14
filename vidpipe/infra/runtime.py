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
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
