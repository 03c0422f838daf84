"""Timing helpers shared by the benchmark scripts (imported from the scripts' own folder)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(runs: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The fastest of `runs` calls of `fn`, in seconds, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result
