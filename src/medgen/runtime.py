"""Process-wide run facts that hooks set and report nodes read."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_run_started_at: float | None = None


def start_run_clock() -> None:
    global _run_started_at
    _run_started_at = time.perf_counter()


def seconds_since_run_start() -> float | None:
    """Seconds since the current ``kedro run`` started; None outside a run."""
    if _run_started_at is None:
        return None
    return round(time.perf_counter() - _run_started_at, 2)


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on the CPU (SSE3 flush-to-zero / denormals-are-zero).

    Arithmetic on subnormals is ~100x slower on x86; after a few optimiser steps Adam's
    second-moment state and some weights of small attention networks hold them, and a training
    step of the text2image network went from 0.7 s to 14 s. Values below ~1e-38 carry nothing a
    float32 model uses. Returns whether the CPU supports it."""
    import torch

    return bool(torch.set_flush_denormal(True))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads (None: unchanged), then restore.

    On a loaded machine one thread per training process can be several times faster than
    torch's default of one per core (oversubscription)."""
    import torch  # here, not at module level: the Kedro hooks import this module at start-up

    previous = torch.get_num_threads()
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"torch_threads must be null or an int >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
