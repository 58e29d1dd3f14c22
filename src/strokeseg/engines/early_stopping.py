"""Early-stopping criterion of Clèrigues et al. 2020 (§3.4): validation L1 loss + error rate, lower is better.

Clèrigues A et al. Acute and sub-acute stroke lesion segmentation from multimodal MRI. Comput Methods Programs
Biomed 194 (2020) 105521, doi:10.1016/j.cmpb.2020.105521.

The authors stop training when the sum of the mean absolute difference between the lesion probability and the
reference (L1) and the voxel error rate of the thresholded output has not improved for 8 epochs. MONAI's
``EarlyStopHandler`` (ignite ``EarlyStopping``) does the stopping; MONAI has no metric for this sum, hence
:class:`L1ErrorRate`. :func:`early_stop_score` turns it into the higher-is-better score ignite expects.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["EARLY_STOP_PATIENCE", "L1ErrorRate", "early_stop_score"]

EARLY_STOP_PATIENCE = 8  # Clèrigues et al. 2020, §3.4


class L1ErrorRate(CumulativeIterationMetric):
    """Per case ``mean |p - y| + mean[(p >= threshold) != y]`` of the lesion probability ``p`` and reference ``y``.

    Args:
        threshold: binarisation of the probability for the error rate.
        reduction: MONAI reduction over the buffered cases (default mean).

    Inputs are ``(B, 2, ...)`` softmax probabilities (channel 1 = lesion) or ``(B, 1, ...)`` lesion probabilities,
    and ``(B, 1, ...)`` labels (or ``(B, 2, ...)`` one-hot).

    Example::

        metric = L1ErrorRate()
        metric(torch.tensor([[[[0.2, 0.9]]]]), torch.tensor([[[[0.0, 1.0]]]]))   # (0.2 + 0.1) / 2 + 0 = 0.15
    """

    def __init__(self, threshold: float = 0.5, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None or y_pred.shape[0] != y.shape[0] or y_pred.shape[2:] != y.shape[2:]:
            raise ValueError(f"L1ErrorRate needs y of y_pred's batch and spatial shape, got {y_pred.shape}, {y!r:.60}")
        prob = (y_pred[:, 1] if y_pred.shape[1] == 2 else y_pred[:, 0]).float()
        ref = ((y[:, 1] if y.shape[1] == 2 else y[:, 0]) > 0).float()
        dims = tuple(range(1, prob.ndim))
        l1 = (prob - ref).abs().mean(dim=dims)
        error = ((prob >= self.threshold).float() != ref).float().mean(dim=dims)
        return (l1 + error).unsqueeze(1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("L1ErrorRate has no buffered values to aggregate.")
        value, _ = do_metric_reduction(data, reduction or self.reduction)
        return value


def early_stop_score(metric_name: str = "val_l1_error"):
    """Score function for ``EarlyStopHandler``: minus the evaluator's ``metric_name`` (higher is better)."""

    def score(engine) -> float:
        return -float(engine.state.metrics[metric_name])

    return score
