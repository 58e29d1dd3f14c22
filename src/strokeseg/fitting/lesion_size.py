"""The (T_h, S_min) grid search of Clèrigues et al. 2020 (§3.5, §4.1): the probability threshold and the minimum
lesion size that maximise the combined Dice / Hausdorff score on validation folds.

The grid search labels each thresholded case once (:func:`strokeseg.lesions.label_lesions`) and filters
every S_min from one ``np.bincount`` of component sizes, which is what
:class:`strokeseg.postprocessing.lesion_size.RemoveSmallLesions` does for one S_min (tested). Store both
fitted values in the bundle config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from strokeseg.errors import DataError
from strokeseg.lesions import component_sizes, label_lesions, union_bounding_box
from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics, hausdorff_distances

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_SIZES", "HD_MAX", "combined_score", "grid_search_threshold_size"]

DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # Clèrigues et al. 2020, §4.1: T_h from 0.1 to 0.9
DEFAULT_SIZES = (1, 10, 50, 100, 200, 300, 500, 1000)  # S_min grid (Clèrigues et al. 2020, §4.1: 10…1000)
HD_MAX = 200.0  # Clèrigues et al. 2020, §4.1, Eq. 2: HD_max normalising the Hausdorff distance


def combined_score(dice: float, hd: float, hd_max: float = HD_MAX) -> float:
    """Eq. 2 of Clèrigues et al. 2020: ``DSC·(1 − HD/HD_max) / (DSC + (1 − HD/HD_max))``.

    ``HD`` is clipped to ``[0, HD_max]``; a NaN ``HD`` (exactly one of prediction/reference empty)
    counts as ``HD_max``, the worst distance, so a missed or hallucinated lesion is never rewarded.
    The score is 0 when both terms are 0.
    """
    h = 1.0 - (hd_max if math.isnan(hd) else min(max(hd, 0.0), hd_max)) / hd_max
    return dice * h / (dice + h) if dice + h > 0 else 0.0


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def grid_search_threshold_size(
    probs: Sequence[np.ndarray | torch.Tensor],
    labels: Sequence[np.ndarray | torch.Tensor],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
    connectivity: int | None = None,
    hd_max: float = HD_MAX,
) -> tuple[float, int, np.ndarray]:
    """Pick (T_h, S_min) maximising the combined score of mean Dice and mean Hausdorff distance (Clèrigues et al. 2020).

    For every threshold ``t`` and minimum size ``s`` each case is binarised with ``prob >= t``, its
    components smaller than ``s`` voxels are removed, and Dice and HD (mm) are computed; the score of
    the pair is :func:`combined_score` of the cohort's mean Dice and mean normalised HD term (a NaN HD
    contributes the worst term, 0). Fit on validation folds only; store both values in the bundle.

    Args:
        probs: per-case foreground probabilities ``(H, W[, D])``.
        labels: per-case reference masks of the same shapes.
        thresholds: candidate T_h (default 0.1 … 0.9).
        sizes: candidate S_min in voxels (default 1, 10, 50, 100, 200, 300, 500, 1000).
        spacing: voxel size in mm, one tuple for all cases or one per case (default 1 mm). HD_max is in
            the same unit (the 200 of Clèrigues et al. 2020 were voxels of 1 mm isotropic ISLES 2015 data).
        connectivity: component connectivity, ``None`` = full.
        hd_max: normalisation of the HD term.

    Returns:
        ``(t, s, score_table)`` with ``score_table[i, j]`` the score of ``(thresholds[i], sizes[j])``;
        ties go to the lowest threshold, then the smallest size.

    Raises:
        DataError: different numbers of cases, an empty cohort, or a shape mismatch (names the case).
    """
    if len(probs) != len(labels) or len(labels) == 0:
        raise DataError(
            f"need the same non-zero number of probability maps and labels, got {len(probs)} and {len(labels)}."
        )
    n_cases = len(labels)
    if spacing is None or np.ndim(spacing[0]) == 0:
        spacings = [spacing] * n_cases
    else:
        spacings = list(spacing)
    thresholds = [float(t) for t in thresholds]
    sizes = [int(s) for s in sizes]
    dice = np.zeros((len(thresholds), len(sizes), n_cases))
    h_term = np.zeros_like(dice)
    for c, (prob, label, sp) in enumerate(zip(probs, labels, spacings, strict=True)):
        prob, ref = _to_numpy(prob).astype(np.float32, copy=False), _to_numpy(label) != 0
        if prob.shape != ref.shape:
            raise DataError(f"case {c}: probability shape {prob.shape} differs from label shape {ref.shape}.")
        total = int(ref.size)
        box = union_bounding_box(prob >= min(thresholds), ref, margin=1)
        if box is not None:  # every thresholded mask lies in this box
            prob, ref = prob[box], ref[box]
        for i, t in enumerate(thresholds):
            lesions, n = label_lesions(prob >= t, connectivity=connectivity)
            sizes_of = component_sizes(lesions, n)
            for j, s in enumerate(sizes):
                keep = sizes_of >= s
                keep[0] = False
                mask = keep[lesions]
                dice[i, j, c] = confusion_metrics(*confusion_counts(mask, ref, total=total))["dice"]
                hd, _ = hausdorff_distances(mask, ref, sp)
                h_term[i, j, c] = 1.0 - (hd_max if math.isnan(hd) else min(hd, hd_max)) / hd_max
    mean_dice, mean_h = dice.mean(axis=2), h_term.mean(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(mean_dice + mean_h > 0, mean_dice * mean_h / (mean_dice + mean_h), 0.0)
    i, j = np.unravel_index(int(np.argmax(table)), table.shape)
    return thresholds[i], sizes[j], table
