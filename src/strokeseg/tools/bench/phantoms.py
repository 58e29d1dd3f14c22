"""Timing of the phantom generator for ``strokeseg bench``: seconds per case with and without the 4-D
perfusion series, on one CPU thread, including writing the files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from strokeseg.data.phantoms.case import MODALITY_SOURCES, plan_cases, synthesize_case
from strokeseg.data.phantoms.template import load_template
from strokeseg.data.phantoms.writer import write_case

__all__ = ["benchmark_synth"]


def benchmark_synth(layout: str, cases: int = 2, seed: int = 0) -> dict:
    """Measure the generator on ``cases`` training cases of ``layout``.

    The template is loaded first and timed apart (once per process). Each case is synthesised and
    written to a temporary folder twice: without and with the 4-D series (layouts without one report
    ``None`` for the latter). Torch runs on one thread during the measurement.

    Returns:
        ``{"layout", "cases", "threads", "template_load_s", "seconds_per_case_without_series",
        "seconds_per_case_with_series", "cpu_seconds_per_case_without_series", "cpu_seconds_per_case_with_series",
        "per_case": [...]}`` (wall-clock and process CPU seconds; the latter is robust to a busy machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        load_template()
        template_s = time.perf_counter() - start
        has_series = any(source.startswith("series_") for source in MODALITY_SOURCES[layout].values())
        per_case = []
        with tempfile.TemporaryDirectory(prefix="strokeseg-bench-") as tmp:
            for plan in plan_cases(layout, cases, 0, seed):
                row = {"case": plan.name}
                for with_series in (False, True) if has_series else (False,):
                    start, cpu = time.perf_counter(), time.process_time()
                    case = synthesize_case(layout, seed=seed, plan=plan, series=with_series)
                    write_case(case, Path(tmp) / ("with" if with_series else "without"))
                    key = "with_series" if with_series else "without_series"
                    row[f"{key}_s"] = round(time.perf_counter() - start, 3)
                    row[f"{key}_cpu_s"] = round(time.process_time() - cpu, 3)
                per_case.append(row)
    finally:
        torch.set_num_threads(threads)

    def mean(key: str) -> float | None:
        values = [row[key] for row in per_case if key in row]
        return round(sum(values) / len(values), 3) if values else None

    return {
        "layout": layout,
        "cases": cases,
        "threads": 1,
        "template_load_s": round(template_s, 3),
        "seconds_per_case_without_series": mean("without_series_s"),
        "seconds_per_case_with_series": mean("with_series_s"),
        "cpu_seconds_per_case_without_series": mean("without_series_cpu_s"),
        "cpu_seconds_per_case_with_series": mean("with_series_cpu_s"),
        "per_case": per_case,
    }
