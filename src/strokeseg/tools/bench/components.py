"""Benchmark sections of the shared components: the phantom generator and the evaluation toolkit.

Targets (absolute, indicative on a shared machine): phantom synthesis ≤ 2 s per case without a 4-D series
and ≤ 10 s with one, on one core; evaluation, 20 cases of 230 × 230 × 154 evaluated in < 30 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Sequence

from strokeseg.data.layouts import LAYOUT_NAMES
from strokeseg.tools.bench.evaluation import benchmark_evaluate
from strokeseg.tools.bench.phantoms import benchmark_synth

__all__ = ["bench_synth", "bench_evaluate", "SYNTH_TARGETS_S", "EVALUATE_TARGET_S", "QUICK_SYNTH_LAYOUTS"]

#: seconds per synthetic case without / with the 4-D series
SYNTH_TARGETS_S = {"without_series": 2.0, "with_series": 10.0}
#: seconds to evaluate 20 cases of 230 × 230 × 154
EVALUATE_TARGET_S = 30.0
EVALUATE_FULL = {"num_cases": 20, "shape": (230, 230, 154)}
EVALUATE_QUICK = {"num_cases": 2, "shape": (64, 64, 32)}
#: quick mode: the smallest layout without a series and one with a series
QUICK_SYNTH_LAYOUTS = ("isles2015_spes", "isles2018")


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else bool(value <= target)


def bench_synth(quick: bool = False, layouts: Sequence[str] | None = None, seed: int = 0) -> dict:
    """Seconds per synthetic case of every layout, with and without the 4-D series, against the targets.

    Wraps :func:`strokeseg.tools.bench.phantoms.benchmark_synth` (one torch thread, files written); ``met`` is
    judged on wall seconds (the target), ``met_cpu`` on process CPU seconds (robust to a busy machine).

    Args:
        quick: one case of :data:`QUICK_SYNTH_LAYOUTS` only (unit tests); else two cases of every layout.
        layouts: layouts to measure (default as above).
        seed: phantom seed.

    Returns:
        ``{"cases", "targets_s", "layouts": {layout: {raw numbers…, "met": {...}, "met_cpu": {...}}}}``.

    Raises:
        ValueError: an unknown layout.
    """
    chosen = tuple(layouts) if layouts is not None else (QUICK_SYNTH_LAYOUTS if quick else LAYOUT_NAMES)
    unknown = [name for name in chosen if name not in LAYOUT_NAMES]
    if unknown:
        raise ValueError(f"unknown layout(s) {unknown}; expected among {', '.join(LAYOUT_NAMES)}.")
    cases = 1 if quick else 2
    results = {}
    for layout in chosen:
        raw = benchmark_synth(layout, cases=cases, seed=seed)
        met, met_cpu = {}, {}
        for key, target in SYNTH_TARGETS_S.items():
            met[key] = _met(raw[f"seconds_per_case_{key}"], target)
            met_cpu[key] = _met(raw[f"cpu_seconds_per_case_{key}"], target)
        results[layout] = {**raw, "met": met, "met_cpu": met_cpu}
    return {"cases": cases, "targets_s": dict(SYNTH_TARGETS_S), "layouts": results}


def bench_evaluate(quick: bool = False) -> dict:
    """Time ``strokeseg evaluate`` (with figures) on synthetic cases against the < 30 s target.

    Wraps :func:`strokeseg.tools.bench.evaluation.benchmark_evaluate`. The target is defined for 20 cases of
    230 × 230 × 154; in quick mode (2 cases of 64 × 64 × 32) ``met`` is ``None``: there is nothing to judge.

    Args:
        quick: the small configuration (unit tests).

    Returns:
        The raw record plus ``"target_s"``, ``"target_applies"`` and ``"met"``.
    """
    setting = EVALUATE_QUICK if quick else EVALUATE_FULL
    raw = benchmark_evaluate(num_cases=setting["num_cases"], shape=setting["shape"])
    applies = not quick
    met = bool(raw["seconds"] < EVALUATE_TARGET_S) if applies else None
    return {**raw, "target_s": EVALUATE_TARGET_S, "target_applies": applies, "met": met}
