"""Compatibility path of the threshold fitting, which lives in :mod:`strokeseg.fitting.thresholds`.

Kept as a re-export while :mod:`strokeseg.engines.deepmedic` and the MS-DCNN model card still name this path;
new code imports ``strokeseg.fitting.thresholds``. It imports nothing of :mod:`strokeseg.metrics`.
"""

from __future__ import annotations

from strokeseg.fitting.thresholds import CurveAccumulator, fit_threshold_pr, fit_threshold_roc, pr_curve, roc_curve

__all__ = ["CurveAccumulator", "pr_curve", "roc_curve", "fit_threshold_pr", "fit_threshold_roc"]
