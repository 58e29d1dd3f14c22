"""Cohort summary of per-case metric rows: mean ± std and median per metric, the lesion rows of Chen et al. 2017,
and the same per small/large-lesion group.

NaN values (undefined metrics, e.g. ``hd`` when one mask is empty) are left out of every statistic and
counted (``nan_count``, ``hd_nan_count``); no sentinel value is ever averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from strokeseg.metrics.case import CASE_COLUMNS

__all__ = ["LESION_SUMMARY_ROWS", "SMALL_LESION_VOXELS_SEED000", "metric_statistics", "lesion_summary", "summarize"]

#: the summary rows of Chen et al. 2017 (mean number / mean size of FP and FN lesions, detection rate)
LESION_SUMMARY_ROWS = ("m#FP", "m#FN", "mSFP", "mSFN", "DR")
#: the small/large split Chen et al. 2017 used (test-set mean lesion size in pixels); the default here is the
#: mean of the evaluated cohort instead, as the paper derived it from its own cohort.
SMALL_LESION_VOXELS_SEED000 = 37.0  # Chen et al. 2017, §5.5 (subjects with mean lesion size < 37 px are "small")


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    return np.array([float(r.get(name, math.nan)) for r in rows], dtype=np.float64)


def metric_statistics(values: np.ndarray) -> dict[str, float]:
    """``mean std median n nan_count`` of a 1-D array, NaNs excluded (statistics NaN when nothing is left).

    ``std`` is the population standard deviation (``ddof=0``).
    """
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        mean = std = median = math.nan
    else:
        mean, std, median = float(finite.mean()), float(finite.std()), float(np.median(finite))
    return {
        "mean": mean,
        "std": std,
        "median": median,
        "n": int(finite.size),
        "nan_count": int(values.size - finite.size),
    }


def lesion_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The lesion rows of Chen et al. 2017 over a group of cases.

    ``m#FP``/``m#FN``: mean number of FP/FN lesions per case; ``mSFP``/``mSFN``: mean size (voxels) of all
    FP/FN lesions of the group pooled (each lesion counts once); ``DR``: fraction of the cases with a
    reference lesion that have at least one detected lesion (Chen et al. 2017, §3.3, DR = N_TP / N).
    """
    n_fp, n_fn = _column(rows, "n_fp"), _column(rows, "n_fn")
    size_fp, size_fn = _column(rows, "size_fp"), _column(rows, "size_fn")
    detected = _column(rows, "detected")

    def pooled(counts: np.ndarray, mean_sizes: np.ndarray) -> float:
        total = counts.sum()
        return float(np.nansum(counts * np.nan_to_num(mean_sizes)) / total) if total > 0 else math.nan

    with_lesion = detected[~np.isnan(detected)]
    return {
        "m#FP": float(n_fp.mean()) if len(rows) else math.nan,
        "m#FN": float(n_fn.mean()) if len(rows) else math.nan,
        "mSFP": pooled(n_fp, size_fp),
        "mSFN": pooled(n_fn, size_fn),
        "DR": float(with_lesion.mean()) if with_lesion.size else math.nan,
    }


def _group_summary(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    return {
        "n_cases": len(rows),
        "cases": [str(r.get("case", i)) for i, r in enumerate(rows)],
        "metrics": {name: metric_statistics(_column(rows, name)) for name in columns},
        "lesionwise": lesion_summary(rows),
    }


def summarize(rows: list[dict], small_lesion_voxels: float | None = None) -> dict:
    """Summarise per-case rows (from :func:`strokeseg.metrics.case.case_metrics`, plus ``case``).

    Args:
        rows: one dict per case with the ``CASE_COLUMNS`` keys.
        small_lesion_voxels: a case is "small" when its mean reference lesion size (voxels) is below
            this; default the mean of ``mean_ref_lesion_size`` over the cohort (Chen et al. 2017 used their test-set
            mean, 37 px). Cases without a reference lesion belong to neither group.

    Returns:
        ``{"n_cases", "small_lesion_voxels", "hd_nan_count", "metrics": {name: stats}, "lesionwise":
        {m#FP …}, "groups": {"small": …, "large": …}}`` where stats are ``mean std median n nan_count``.
    """
    columns = [c for c in CASE_COLUMNS if any(c in r for r in rows)]
    sizes = _column(rows, "mean_ref_lesion_size")
    finite_sizes = sizes[~np.isnan(sizes)]
    if small_lesion_voxels is None:
        threshold = float(finite_sizes.mean()) if finite_sizes.size else math.nan
    else:
        threshold = float(small_lesion_voxels)
    with np.errstate(invalid="ignore"):
        small = [r for r, s in zip(rows, sizes, strict=True) if not np.isnan(s) and s < threshold]
        large = [r for r, s in zip(rows, sizes, strict=True) if not np.isnan(s) and s >= threshold]
    overall = _group_summary(rows, columns)
    return {
        "n_cases": len(rows),
        "small_lesion_voxels": threshold,
        "n_cases_without_reference_lesion": int(np.isnan(sizes).sum()),
        "hd_nan_count": int(np.isnan(_column(rows, "hd")).sum()) if "hd" in columns else 0,
        "metrics": overall["metrics"],
        "lesionwise": overall["lesionwise"],
        "groups": {"small": _group_summary(small, columns), "large": _group_summary(large, columns)},
    }
