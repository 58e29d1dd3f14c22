"""The iteration count of the FH closing (Pérez Malla et al. 2019, §2.4.2), fitted on validation cases by Dice.

The transform that applies it is :class:`strokeseg.postprocessing.morphology.BinaryClosingd`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from strokeseg.errors import DataError
from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics
from strokeseg.postprocessing.morphology import FH_RADIUS, binary_closing

__all__ = ["fit_closing_iterations"]


def _to_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _as_mask(values: np.ndarray | torch.Tensor, threshold: float) -> np.ndarray:
    arr = _to_numpy(values)
    return arr if arr.dtype == bool else arr >= threshold


def fit_closing_iterations(
    probs_or_masks: Sequence[np.ndarray | torch.Tensor],
    labels: Sequence[np.ndarray | torch.Tensor],
    threshold: float = 0.5,
    max_iterations: int = 5,
    radius: int = FH_RADIUS,
    strategy: str = "mean_dice",
) -> int:
    """Closing iterations (0 … ``max_iterations``) that give the best Dice on validation cases.

    Fit on the validation fold(s) only and store the value in the bundle config.

    Args:
        probs_or_masks: per-case ``(H, W[, D])`` probability maps (binarised with ``>= threshold``) or
            boolean masks (used as they are).
        labels: per-case reference masks of the same shapes.
        threshold: binarisation threshold of non-boolean inputs.
        max_iterations: largest iteration count tried.
        radius: ball radius (Pérez Malla et al. 2019: 3).
        strategy: ``"mean_dice"`` — the count maximising the mean Dice over the cases (ties: fewest
            iterations); ``"per_case_average"`` — the rule of Pérez Malla et al. 2019, the rounded average of each
            case's best count.

    Raises:
        DataError: different numbers of cases or a shape mismatch (names the case index).
        ValueError: unknown strategy or ``max_iterations`` < 0.
    """
    if strategy not in ("mean_dice", "per_case_average"):
        raise ValueError(f"strategy must be 'mean_dice' or 'per_case_average', got {strategy!r}.")
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}.")
    if len(probs_or_masks) != len(labels) or len(labels) == 0:
        raise DataError(
            f"need the same non-zero number of predictions and labels, got {len(probs_or_masks)} and {len(labels)}."
        )
    dice = np.zeros((len(labels), max_iterations + 1))
    for i, (pred, ref) in enumerate(zip(probs_or_masks, labels, strict=True)):
        mask, ref_mask = _as_mask(pred, threshold), _to_numpy(ref) != 0
        if mask.shape != ref_mask.shape:
            raise DataError(f"case {i}: prediction shape {mask.shape} differs from label shape {ref_mask.shape}.")
        for k in range(max_iterations + 1):
            closed = binary_closing(mask, radius, k)
            dice[i, k] = confusion_metrics(*confusion_counts(closed, ref_mask))["dice"]
    if strategy == "mean_dice":
        return int(np.argmax(dice.mean(axis=0)))
    return int(np.floor(np.argmax(dice, axis=1).mean() + 0.5))
