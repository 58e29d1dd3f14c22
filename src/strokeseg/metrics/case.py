"""All metrics of one case (voxel-wise + lesion-wise), computed on the bounding box of pred ∪ ref.

Every metric is invariant to cropping away voxels that are background in both masks (they only add
true negatives, which are counted from the full image size), so the work is done on the union's
bounding box plus a 1-voxel margin: a whole-brain volume with a small lesion costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from strokeseg.errors import DataError
from strokeseg.lesions import union_bounding_box
from strokeseg.metrics.lesionwise import GROUPING_COLUMNS, LESION_COLUMNS, lesion_metrics
from strokeseg.metrics.voxelwise import (
    CONFUSION_COLUMNS,
    DISTANCE_COLUMNS,
    VOLUME_COLUMNS,
    confusion_counts,
    confusion_metrics,
    hausdorff_distances,
    volume_metrics,
)

__all__ = ["CASE_COLUMNS", "METRIC_GROUPS", "case_metrics", "union_bounding_box"]

#: per-case columns, in the order of ``metrics.csv`` (after ``case``)
CASE_COLUMNS = CONFUSION_COLUMNS + DISTANCE_COLUMNS + VOLUME_COLUMNS + LESION_COLUMNS + GROUPING_COLUMNS
#: metric name → the group computed together (used to compute only what a caller asks for)
METRIC_GROUPS = {
    **{name: "confusion" for name in CONFUSION_COLUMNS},
    **{name: "distance" for name in DISTANCE_COLUMNS},
    **{name: "volume" for name in VOLUME_COLUMNS},
    **{name: "lesion" for name in LESION_COLUMNS + GROUPING_COLUMNS},
}


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}.")
    if pred.ndim not in (2, 3):
        raise DataError(f"masks must be 2-D or 3-D (H, W[, D]) without a channel axis, got shape {pred.shape}.")
    if len(spacing) != pred.ndim:
        raise DataError(f"spacing {tuple(spacing)} has {len(spacing)} values for {pred.ndim}-D masks.")
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise DataError(f"spacing {tuple(spacing)} must be positive and finite.")
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    connectivity: int | None = None,
    per_slice: bool = False,
    *,
    metrics: Collection[str] | None = None,
) -> dict[str, float]:
    """Voxel-wise and lesion-wise metrics of one case (the columns of ``metrics.csv``).

    Args:
        pred: predicted mask, shape ``(H, W[, D])``, boolean (non-zero = lesion).
        ref: reference mask, same shape and grid.
        spacing: voxel size per axis in mm (``hd``/``hd95`` in mm, volumes in mL). For 2-D masks pass
            two values.
        connectivity: lesion connectivity (1 = faces … ``None`` = full) for the lesion-wise metrics.
        per_slice: lesion-wise metrics on 2-D components in each axial slice (last axis).
        metrics: compute only the groups these names belong to (see ``METRIC_GROUPS``); default all.

    Returns:
        dict with the keys of ``CASE_COLUMNS`` (or the requested groups): both masks empty ⇒ dice 1,
        hd 0; one empty ⇒ dice 0, hd NaN; undefined ratios are NaN.

    Raises:
        DataError: shapes differ, masks are not 2-D/3-D, or the spacing does not fit.
        KeyError: an unknown name in ``metrics``.
    """
    pred, ref = _check_pair(pred, ref, spacing)
    groups = set(METRIC_GROUPS.values()) if metrics is None else {METRIC_GROUPS[m] for m in metrics}
    total = int(pred.size)
    box = union_bounding_box(pred, ref, margin=1)
    if box is not None:
        pred, ref = pred[box], ref[box]
    else:  # nothing anywhere: a 1-voxel crop keeps every formula on its defined empty path
        pred, ref = pred[(slice(0, 1),) * pred.ndim], ref[(slice(0, 1),) * ref.ndim]

    row: dict[str, float] = {}
    tp, fp, fn, tn = confusion_counts(pred, ref, total=total)
    if "confusion" in groups:
        row.update(confusion_metrics(tp, fp, fn, tn))
    if "distance" in groups:
        row["hd"], row["hd95"] = hausdorff_distances(pred, ref, spacing, percentile=95.0)
    if "volume" in groups:
        row.update(volume_metrics(tp + fp, tp + fn, spacing))
    if "lesion" in groups:
        row.update(lesion_metrics(pred, ref, connectivity=connectivity, per_slice=per_slice))
    return row
