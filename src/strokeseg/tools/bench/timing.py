"""Repeated wall-clock timing with a median: the one timing rule of every benchmark section.

:class:`NetworkTimer` adds the seconds a network spends inside its own forward during a larger run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["time_call", "time_repeats", "median", "NetworkTimer"]


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


class NetworkTimer:
    """Context manager adding up the seconds spent inside ``module``'s forward (pre- and post-hooks).

    Args:
        module: the network to watch.

    Attributes:
        seconds: wall seconds inside the forward, over every call while the context is open.
        calls: how many forward calls that was.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.seconds, self.calls, self._start = module, 0.0, 0, 0.0

    def __enter__(self) -> NetworkTimer:
        def pre(*_):
            self._start = time.perf_counter()

        def post(*_):
            self.seconds += time.perf_counter() - self._start
            self.calls += 1

        self._handles = [self.module.register_forward_pre_hook(pre), self.module.register_forward_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
