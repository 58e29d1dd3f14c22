"""Cohort summary: NaN handling, the lesion rows of Chen et al. 2017 and the small/large split."""

from __future__ import annotations

import math

import pytest

from strokeseg.metrics import summarize


def _row(case, dice, hd, n_fp, size_fp, n_fn, size_fn, detected, mean_size):
    return {
        "case": case,
        "dice": dice,
        "hd": hd,
        "n_fp": n_fp,
        "size_fp": size_fp,
        "n_fn": n_fn,
        "size_fn": size_fn,
        "detected": detected,
        "mean_ref_lesion_size": mean_size,
        "n_ref_lesions": 0 if math.isnan(mean_size) else 1,
    }


ROWS = [
    _row("a", 0.8, 4.0, 2, 5.0, 0, math.nan, 1.0, 10.0),
    _row("b", 0.6, math.nan, 0, math.nan, 1, 30.0, 0.0, 20.0),
    _row("c", 0.4, 8.0, 1, 20.0, 2, 6.0, 1.0, 90.0),
    _row("d", 1.0, 0.0, 0, math.nan, 0, math.nan, math.nan, math.nan),  # no reference lesion
]


def test_statistics_exclude_and_count_nan():
    s = summarize(ROWS)
    assert s["hd_nan_count"] == 1
    assert s["metrics"]["hd"]["mean"] == pytest.approx(4.0)  # (4 + 8 + 0) / 3, the NaN left out
    assert s["metrics"]["hd"]["n"] == 3 and s["metrics"]["hd"]["nan_count"] == 1
    assert s["metrics"]["dice"]["median"] == pytest.approx(0.7)
    assert s["metrics"]["dice"]["std"] == pytest.approx(math.sqrt(0.05))


def test_lesion_rows_pooled():
    lw = summarize(ROWS)["lesionwise"]
    assert lw["m#FP"] == pytest.approx(3 / 4)
    assert lw["m#FN"] == pytest.approx(3 / 4)
    assert lw["mSFP"] == pytest.approx((2 * 5 + 20) / 3)  # each FP lesion counts once
    assert lw["mSFN"] == pytest.approx((30 + 2 * 6) / 3)
    assert lw["DR"] == pytest.approx(2 / 3)  # the case without a lesion is not in the denominator


def test_small_large_groups_default_cohort_mean_and_explicit():
    s = summarize(ROWS)
    assert s["small_lesion_voxels"] == pytest.approx(40.0)  # mean of 10, 20, 90
    assert s["groups"]["small"]["cases"] == ["a", "b"]
    assert s["groups"]["large"]["cases"] == ["c"]
    assert s["n_cases_without_reference_lesion"] == 1
    assert s["groups"]["small"]["lesionwise"]["DR"] == pytest.approx(0.5)
    s37 = summarize(ROWS, small_lesion_voxels=15)
    assert s37["groups"]["small"]["cases"] == ["a"]
    assert s37["groups"]["large"]["metrics"]["dice"]["mean"] == pytest.approx(0.5)
