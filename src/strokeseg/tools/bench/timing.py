"""Repeated wall-clock timing with a median: the one timing rule of every benchmark section."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["time_call", "time_repeats", "median"]


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn()`` once and return ``(wall seconds, its result)``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_repeats(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls.

    Args:
        fn: the work to time (its result is discarded).
        repeats: timed calls, at least 1.
        warmup: untimed calls first (lazy initialisation, allocator and oneDNN primitive caches).

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    for _ in range(warmup):
        fn()
    return [time_call(fn)[0] for _ in range(repeats)]


def median(values: list[float], digits: int = 4) -> float:
    """Median of ``values`` rounded to ``digits`` decimals (the statistic the benchmark reports).

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("median of no measurements")
    return round(float(statistics.median(values)), digits)
