"""Voxel-wise and lesion-wise metrics of the five papers in one table format, their cohort summary,
MONAI/ignite integration (:mod:`~strokeseg.metrics.handlers`) and reports
(:mod:`~strokeseg.metrics.report`, used by ``strokeseg evaluate``).

Column names of the per-case metrics: ``dice ppv tpr tnr acc mcc hd hd95 avd avd_rel vol_pred
vol_ref`` and ``n_fp n_fn size_fp size_fn detected lesion_f1 lesion_count_diff`` (plus
``n_ref_lesions mean_ref_lesion_size`` for the small/large grouping).
"""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.metrics.case import CASE_COLUMNS, case_metrics
from strokeseg.metrics.summary import summarize

__all__ = ["CASE_COLUMNS", "case_metrics", "summarize"]

__getattr__ = lazy_submodules(__name__)
