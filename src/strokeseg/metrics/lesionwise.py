"""Lesion-wise (connected-component) metrics: false-positive / false-negative lesions, detection, lesion F1.

MONAI has no lesion-wise metric, hence this module. Components come from the package's one
connected-component helper (:func:`strokeseg.lesions.label_lesions`, ``scipy.ndimage.label``) and every
per-component quantity from one ``np.bincount`` over the label image, so the cost does not grow with a
Python loop over lesions.

Definitions (Chen et al. 2017, §3.3, for the FP/FN counts and sizes and the detection rate; the ISLES 2022
evaluation for the lesion F1 and count difference):

- a predicted component is a false positive when it touches no reference voxel;
- a reference lesion is a false negative when no predicted voxel touches it, else it is detected;
- ``lesion_f1 = TP / (TP + (FP + FN) / 2)`` with TP the detected reference lesions, 1 when there is
  neither a reference nor a predicted lesion;
- ``per_slice=True`` takes 2-D components in each axial slice (the last spatial axis), as Chen et al. 2017
  counted lesions on their 2-D DWI slices; otherwise components are N-D.
"""

from __future__ import annotations

import math

import numpy as np

from strokeseg.lesions import component_sizes, label_lesions, lesion_structure

__all__ = ["LESION_COLUMNS", "GROUPING_COLUMNS", "lesion_structure", "label_lesions", "lesion_metrics"]

LESION_COLUMNS = ("n_fp", "n_fn", "size_fp", "size_fn", "detected", "lesion_f1", "lesion_count_diff")
GROUPING_COLUMNS = ("n_ref_lesions", "mean_ref_lesion_size")


def lesion_metrics(
    pred: np.ndarray, ref: np.ndarray, connectivity: int | None = None, per_slice: bool = False
) -> dict[str, float]:
    """Lesion-wise metrics of one case.

    Args:
        pred: predicted mask, boolean, shape ``(H, W[, D])``.
        ref: reference mask, same shape.
        connectivity: see :func:`strokeseg.lesions.lesion_structure`.
        per_slice: 2-D components per axial slice (last axis) instead of N-D components.

    Returns:
        ``n_fp n_fn size_fp size_fn detected lesion_f1 lesion_count_diff n_ref_lesions
        mean_ref_lesion_size``. Sizes are in voxels; ``size_fp``/``size_fn`` are the mean size of those
        components and NaN when there are none; ``detected`` is 1.0/0.0, NaN when the reference is empty
        (a case without a lesion can neither be detected nor missed).
    """
    pred_lab, n_pred = label_lesions(pred, connectivity, per_slice)
    ref_lab, n_ref = label_lesions(ref, connectivity, per_slice)

    pred_sizes = component_sizes(pred_lab, n_pred)[1:]
    ref_sizes = component_sizes(ref_lab, n_ref)[1:]
    # voxels of each component that fall inside the other mask
    pred_hits = np.bincount(pred_lab[ref], minlength=n_pred + 1)[1:] > 0
    ref_hits = np.bincount(ref_lab[pred], minlength=n_ref + 1)[1:] > 0

    fp_sizes = pred_sizes[~pred_hits]
    fn_sizes = ref_sizes[~ref_hits]
    tp = int(ref_hits.sum())
    n_fp, n_fn = int(fp_sizes.size), int(fn_sizes.size)
    denominator = tp + 0.5 * (n_fp + n_fn)
    return {
        "n_fp": n_fp,
        "n_fn": n_fn,
        "size_fp": float(fp_sizes.mean()) if n_fp else math.nan,
        "size_fn": float(fn_sizes.mean()) if n_fn else math.nan,
        "detected": float(tp > 0) if n_ref else math.nan,
        "lesion_f1": tp / denominator if denominator > 0 else 1.0,
        "lesion_count_diff": abs(n_pred - n_ref),
        "n_ref_lesions": n_ref,
        "mean_ref_lesion_size": float(ref_sizes.mean()) if n_ref else math.nan,
    }
