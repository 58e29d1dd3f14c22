"""Minimum lesion size: drop connected components smaller than S_min voxels, and the (T_h, S_min) grid
search of seed 003 (§3.5, §4.1) that picks the threshold and minimum size on validation folds.

The transform is MONAI's ``RemoveSmallObjects`` (its ``remove_small_objects``, scikit-image underneath)
with three changes: full connectivity by default (26 neighbours in 3-D, as our lesion-wise metrics)
instead of MONAI's faces-only default; each channel filtered on its own (MONAI labels the whole
``(C, ...)`` array, so lesions of adjacent channels would join); and seed 003's "smaller than S_min"
kept on every scikit-image version (0.26 made MONAI's call remove objects of exactly ``min_size``
voxels too, with a deprecation warning). The grid search labels each thresholded case once and filters every S_min
from one ``np.bincount`` of component sizes, which is equivalent to the transform (tested).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RemoveSmallObjects
from monai.transforms.utils import remove_small_objects
from monai.utils import ensure_tuple_rep

from strokeseg.errors import DataError
from strokeseg.metrics.case import union_bounding_box
from strokeseg.metrics.lesionwise import label_lesions
from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics, hausdorff_distances

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_SIZES",
    "HD_MAX",
    "RemoveSmallLesions",
    "RemoveSmallLesionsd",
    "combined_score",
    "grid_search_threshold_size",
]

DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # seed 003 §4.1: T_h from 0.1 to 0.9
DEFAULT_SIZES = (1, 10, 50, 100, 200, 300, 500, 1000)  # S_min grid of evaluation.md (seed 003 §4.1: 10…1000)
HD_MAX = 200.0  # seed 003 §4.1, Eq. 2: HD_max normalising the Hausdorff distance


@functools.cache
def _skimage_removes_equal_size() -> bool:
    """Whether MONAI's ``remove_small_objects(min_size=s)`` also removes objects of exactly ``s`` voxels.

    scikit-image 0.26 turned the positional ``min_size`` MONAI passes into its new inclusive
    ``max_size``; older versions remove strictly smaller objects. Probed once on a 1-voxel object.
    """
    probe = np.zeros((1, 3), dtype=bool)
    probe[0, 0] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return not bool(np.asarray(remove_small_objects(probe, 1, 1)).any())


class RemoveSmallLesions(RemoveSmallObjects):
    """Remove connected components smaller than ``min_size`` voxels from a mask ``(C, H, W[, D])``.

    A thin layer over MONAI's ``RemoveSmallObjects`` (see the module docstring for the two differences).
    MetaTensor in ⇒ MetaTensor out with its affine and meta.

    Args:
        min_size: components with fewer voxels are removed (``<= 1`` keeps everything).
        connectivity: orthogonal hops between neighbours, ``None`` = full connectivity.
        independent_channels: see ``RemoveSmallObjects``.
        by_measure: ``min_size`` in mm³ (from the MetaTensor's pixdim or ``pixdim``) instead of voxels.
        pixdim: voxel size when the input is not a MetaTensor and ``by_measure`` is set.
    """

    def __init__(
        self,
        min_size: int = 1,
        connectivity: int | None = None,
        independent_channels: bool = True,
        by_measure: bool = False,
        pixdim: Sequence[float] | float | None = None,
    ) -> None:
        super().__init__(
            min_size=min_size,
            connectivity=connectivity,
            independent_channels=independent_channels,
            by_measure=by_measure,
            pixdim=pixdim,
        )

    def min_voxels(self, img: torch.Tensor | np.ndarray) -> int:
        """``min_size`` in voxels for this image (converted from mm³ when ``by_measure``)."""
        if not self.by_measure:
            return int(math.ceil(self.min_size))
        spatial = img.ndim - 1
        if isinstance(img, MetaTensor):
            pixdim = [float(p) for p in img.pixdim][:spatial]
        else:
            pixdim = list(ensure_tuple_rep(1.0 if self.pixdim is None else self.pixdim, spatial))
        return int(math.ceil(self.min_size / float(np.prod(pixdim))))

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Args: img: mask ``(C, H, W[, D])``; channels are filtered one at a time."""
        voxels = self.min_voxels(img)
        if voxels <= 1:
            return img
        # skimage >= 0.26 rejects connectivity=None, and MONAI labels the whole (C, ...) array, which
        # joins lesions of neighbouring channels: resolve "full" here and filter each channel alone
        conn = img.ndim - 1 if self.connectivity is None else self.connectivity
        limit = voxels - 1 if _skimage_removes_equal_size() else voxels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parts = [
                remove_small_objects(img[c : c + 1], limit, conn, self.independent_channels, False, None)
                for c in range(img.shape[0])
            ]
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts) if isinstance(img, torch.Tensor) else np.concatenate(parts)


class RemoveSmallLesionsd(MapTransform):
    """Dictionary version of :class:`RemoveSmallLesions`."""

    backend = RemoveSmallLesions.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_size: int = 1,
        connectivity: int | None = None,
        independent_channels: bool = True,
        by_measure: bool = False,
        pixdim: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = RemoveSmallLesions(min_size, connectivity, independent_channels, by_measure, pixdim)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d


def combined_score(dice: float, hd: float, hd_max: float = HD_MAX) -> float:
    """Seed 003's Eq. 2: ``DSC·(1 − HD/HD_max) / (DSC + (1 − HD/HD_max))``.

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
    """Pick (T_h, S_min) maximising seed 003's combined score of the mean Dice and mean Hausdorff distance.

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
            the same unit (seed 003's 200 were voxels of 1 mm isotropic ISLES 2015 data).
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
            component_sizes = np.bincount(lesions.ravel(), minlength=n + 1)
            for j, s in enumerate(sizes):
                keep = component_sizes >= s
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
