"""Voxel-wise overlap, distance and volume metrics of one case, in the reference's physical space.

The confusion-matrix ratios follow MONAI's ``ConfusionMatrixMetric`` (``0/0`` is NaN) and the Hausdorff
distances reuse MONAI's edge extraction and surface distances (``get_edge_surface_distance``, the code
behind ``HausdorffDistanceMetric``), computed once for both ``hd`` and ``hd95``. What this module adds is
the project's edge-case contract: both masks empty ⇒ ``dice`` 1 and ``hd`` 0; exactly one empty ⇒
``dice`` 0 and ``hd`` NaN (never an infinite or huge sentinel that would be averaged in).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

__all__ = [
    "CONFUSION_COLUMNS",
    "DISTANCE_COLUMNS",
    "VOLUME_COLUMNS",
    "confusion_counts",
    "confusion_metrics",
    "hausdorff_distances",
    "volume_metrics",
]

CONFUSION_COLUMNS = ("dice", "ppv", "tpr", "tnr", "acc", "mcc")
DISTANCE_COLUMNS = ("hd", "hd95")
VOLUME_COLUMNS = ("avd", "avd_rel", "vol_pred", "vol_ref")

_MM3_PER_ML = 1000.0

# MONAI 1.6 passes its own deprecated argument internally; the warning is not actionable for our users.
warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")


def _ratio(num: float, den: float) -> float:
    """``num / den`` with ``0/0`` (an undefined ratio) as NaN, as MONAI's ConfusionMatrixMetric does."""
    return float(num) / float(den) if den != 0 else math.nan


def confusion_counts(pred: np.ndarray, ref: np.ndarray, total: int | None = None) -> tuple[int, int, int, int]:
    """True/false positives and negatives of two boolean masks.

    Args:
        pred: predicted mask, boolean, shape ``(H, W[, D])``.
        ref: reference mask, same shape.
        total: number of voxels of the full image when ``pred``/``ref`` are a crop that holds every
            foreground voxel (the voxels outside the crop are true negatives).

    Returns:
        ``(tp, fp, fn, tn)``.
    """
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref))
    fp = n_pred - tp
    fn = n_ref - tp
    tn = (int(pred.size) if total is None else int(total)) - tp - fp - fn
    return tp, fp, fn, tn


def confusion_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """``dice ppv tpr tnr acc mcc`` from confusion counts.

    Dice is 1 when both masks are empty (nothing to find, nothing found); every other ratio whose
    denominator is 0 is NaN.
    """
    dice = 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2.0 * tp + fp + fn)
    # float64 products: tp * tn overflows int32 on whole-brain volumes.
    mcc_den = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
    return {
        "dice": dice,
        "ppv": _ratio(tp, tp + fp),
        "tpr": _ratio(tp, tp + fn),
        "tnr": _ratio(tn, tn + fp),
        "acc": _ratio(tp + tn, tp + tn + fp + fn),
        "mcc": _ratio(float(tp) * tn - float(fp) * fn, mcc_den),
    }


def hausdorff_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None, percentile: float = 95.0
) -> tuple[float, float]:
    """Symmetric Hausdorff distance and its percentile version between the surfaces of two masks.

    Same definition as MONAI's ``HausdorffDistanceMetric`` (surface voxels from a binary erosion,
    Euclidean distances scaled by ``spacing``; the percentile version takes the given percentile of
    each directed distance set and then the larger of the two), computed from one edge extraction.

    Args:
        pred: predicted mask, boolean, shape ``(H, W[, D])``. Crop both masks to their union's
            bounding box (with a 1-voxel margin) first for speed; the result does not change.
        ref: reference mask, same shape.
        spacing: voxel size per axis in mm (default 1).
        percentile: the percentile of the second value (95 gives ``hd95``).

    Returns:
        ``(hd, hd_percentile)`` in the units of ``spacing``: ``(0, 0)`` when both masks are empty, NaN
        when exactly one is empty.
    """
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0, 0.0
    if has_pred != has_ref:
        return math.nan, math.nan
    spacing_list = None if spacing is None else [float(s) for s in spacing]
    _, distances, _ = get_edge_surface_distance(
        torch.as_tensor(pred, dtype=torch.bool),
        torch.as_tensor(ref, dtype=torch.bool),
        distance_metric="euclidean",
        spacing=spacing_list,
        symmetric=True,
        warn_empty=False,
    )
    maxima = [float(d.max()) for d in distances]
    quantiles = [float(torch.quantile(d.double(), percentile / 100.0)) for d in distances]
    return max(maxima), max(quantiles)


def volume_metrics(n_pred: int, n_ref: int, spacing: Sequence[float]) -> dict[str, float]:
    """Volumes in mL and their absolute difference (``avd``) and relative difference (``avd_rel``).

    ``avd_rel`` is ``avd / vol_ref``, NaN when the reference is empty.
    """
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / _MM3_PER_ML
    vol_pred, vol_ref = n_pred * voxel_ml, n_ref * voxel_ml
    avd = abs(vol_pred - vol_ref)
    return {"avd": avd, "avd_rel": _ratio(avd, vol_ref), "vol_pred": vol_pred, "vol_ref": vol_ref}
