"""Process-wide run facts that hooks set and report nodes read."""

from __future__ import annotations

import time

_run_started_at: float | None = None


def start_run_clock() -> None:
    global _run_started_at
    _run_started_at = time.perf_counter()


def seconds_since_run_start() -> float | None:
    """Seconds since the current ``kedro run`` started; None outside a run."""
    if _run_started_at is None:
        return None
    return round(time.perf_counter() - _run_started_at, 2)
