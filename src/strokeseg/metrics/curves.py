"""Threshold tuning on validation voxels: THT0 (max precision × recall) and THT1 (max TPR − FPR, Youden).

Pérez Malla et al. 2019 (§2.4.1) concatenate the ground truth and foreground probability of all validation subjects,
computes the PR and ROC curves, and keeps the threshold at the optimum of each; the fitted value is then
applied to the test fold with MONAI's ``AsDiscreted(threshold=t)``, which predicts lesion where
``prob >= t`` — the convention of the curves below. Fit on validation folds only: a threshold fitted on
the cases it is evaluated on is optimistic.

MONAI has no curve-based threshold fitting, hence this module. Two exact-equivalent ways to build the
curves: sorting the voxels (the algorithm of scikit-learn's ``_binary_clf_curve``; every distinct score
is a threshold) or a histogram of the scores over ``bins`` equal bins of ``[0, 1]``
(:class:`CurveAccumulator`; thresholds at the bin edges), which streams over cases of any size in
``O(bins)`` memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from strokeseg.errors import DataError

__all__ = [
    "CurveAccumulator",
    "pr_curve",
    "roc_curve",
    "fit_threshold_pr",
    "fit_threshold_roc",
]

ArrayLike = np.ndarray | torch.Tensor


def _flatten(values: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
    """One flat float array from an array/tensor or a sequence of per-case arrays (concatenated)."""
    if isinstance(values, (list, tuple)):
        parts = [_flatten(v) for v in values]
        return np.concatenate(parts) if parts else np.zeros(0)
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).ravel()


def _validated(probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike]):
    p = _flatten(probs).astype(np.float64, copy=False)
    y = _flatten(labels) > 0
    if p.shape != y.shape:
        raise DataError(f"probs have {p.size} voxels but labels have {y.size}; pass matching arrays.")
    if p.size == 0:
        raise DataError("no voxels to fit a threshold on (empty probs/labels).")
    if not np.isfinite(p).all():
        raise DataError("probs contain NaN or infinite values.")
    return p, y


def _counts_sorted(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP/FP counts at each distinct score, thresholds in decreasing order."""
    order = np.argsort(probs, kind="stable")[::-1]
    scores, truth = probs[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(truth, dtype=np.int64)[last_of_value]
    fps = (last_of_value + 1) - tps
    return tps, fps, scores[last_of_value]


class CurveAccumulator:
    """Histogram of foreground-probability scores of positive and negative voxels, accumulated over cases.

    Thresholds are the ``bins`` lower bin edges ``k / bins``; a voxel counts as predicted positive at
    threshold ``t`` when ``prob >= t``, exactly (bins are found by comparing with the same edge values).
    Scores must lie in ``[0, 1]``.

    Args:
        bins: number of equal bins of ``[0, 1]`` (the threshold resolution).

    Example:
        >>> acc = CurveAccumulator(bins=100)
        >>> for prob, label in validation_cases:  # doctest: +SKIP
        ...     acc.update(prob, label)
        >>> tht0, tht1 = acc.fit_pr(), acc.fit_roc()  # doctest: +SKIP
    """

    def __init__(self, bins: int = 1000) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}.")
        self.bins = int(bins)
        self.edges = np.arange(self.bins) / self.bins
        self.positives = np.zeros(self.bins, dtype=np.int64)
        self.negatives = np.zeros(self.bins, dtype=np.int64)

    def update(self, probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike]) -> None:
        """Add the voxels of one case (or a sequence of cases) to the histograms.

        Raises:
            DataError: shapes differ, or a score is outside ``[0, 1]`` or not finite.
        """
        p, y = _flatten(probs), _flatten(labels) != 0
        if p.shape != y.shape:
            raise DataError(f"probs have {p.size} voxels but labels have {y.size}; pass matching arrays.")
        if p.size == 0:
            return
        lo, hi = p.min(), p.max()
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise DataError(f"probabilities must lie in [0, 1]; got range [{lo:.4g}, {hi:.4g}].")
        index = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        # bin k must hold edges[k] <= p < edges[k+1], compared exactly as `prob >= t` will be applied
        index -= p < self.edges[index]
        upper = np.minimum(index + 1, self.bins - 1)
        index += (upper > index) & (p >= self.edges[upper])
        counts = np.bincount(index + self.bins * y, minlength=2 * self.bins)
        self.negatives += counts[: self.bins]
        self.positives += counts[self.bins :]

    def merge(self, other: CurveAccumulator) -> None:
        """Add the histograms of another accumulator with the same ``bins`` (e.g. from a worker thread)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {other.bins} and {self.bins} bins.")
        self.positives += other.positives
        self.negatives += other.negatives

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tps, fps, thresholds)`` with thresholds in decreasing order (only bins holding voxels)."""
        occupied = np.flatnonzero(self.positives + self.negatives)[::-1]
        tps = np.cumsum(self.positives[::-1])[::-1][occupied]
        fps = np.cumsum(self.negatives[::-1])[::-1][occupied]
        return tps, fps, self.edges[occupied]

    @property
    def n_voxels(self) -> int:
        """Number of voxels accumulated so far."""
        return int(self.positives.sum() + self.negatives.sum())

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, recall, thresholds)``, thresholds decreasing."""
        return _pr_from_counts(*self.counts())

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, tpr, thresholds)``, thresholds decreasing."""
        return _roc_from_counts(*self.counts())

    def fit_pr(self) -> float:
        """THT0 of the accumulated voxels."""
        return _argmax_threshold(*_pr_score(*self.counts()))

    def fit_roc(self) -> float:
        """THT1 of the accumulated voxels."""
        return _argmax_threshold(*_roc_score(*self.counts()))


def _counts(probs, labels, bins: int | None):
    if bins is None:
        return _counts_sorted(*_validated(probs, labels))
    acc = CurveAccumulator(bins)
    acc.update(probs, labels)
    return acc.counts()


def _pr_from_counts(tps, fps, thresholds):
    if tps[-1] == 0:
        raise DataError("labels hold no positive voxel: precision/recall are undefined.")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return precision, recall, thresholds


def _roc_from_counts(tps, fps, thresholds):
    if tps[-1] == 0 or fps[-1] == 0:
        raise DataError("labels must hold both positive and negative voxels to build a ROC curve.")
    return fps / fps[-1], tps / tps[-1], thresholds


def _pr_score(tps, fps, thresholds):
    precision, recall, thresholds = _pr_from_counts(tps, fps, thresholds)
    return precision * recall, thresholds


def _roc_score(tps, fps, thresholds):
    fpr, tpr, thresholds = _roc_from_counts(tps, fps, thresholds)
    return tpr - fpr, thresholds


def _argmax_threshold(score: np.ndarray, thresholds: np.ndarray) -> float:
    # first maximum in decreasing-threshold order: on ties the most conservative (highest) threshold
    return float(thresholds[int(np.argmax(score))])


def pr_curve(
    probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike], bins: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of validation voxels.

    Args:
        probs: foreground probabilities, any shape, or a sequence of per-case arrays (concatenated).
        labels: reference masks of the same shapes (non-zero = lesion).
        bins: ``None`` for the exact sort-based curve (one point per distinct score); an int for a
            histogram over that many bins of ``[0, 1]`` (faster and lighter on many large volumes).

    Returns:
        ``(precision, recall, thresholds)`` with thresholds decreasing; point ``i`` predicts
        ``probs >= thresholds[i]``.

    Raises:
        DataError: mismatched sizes, no voxels, non-finite scores, or no positive voxel.
    """
    return _pr_from_counts(*_counts(probs, labels, bins))


def roc_curve(
    probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike], bins: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of validation voxels; same arguments as :func:`pr_curve`.

    Returns:
        ``(fpr, tpr, thresholds)`` with thresholds decreasing.

    Raises:
        DataError: as :func:`pr_curve`, or labels without negative voxels.
    """
    return _roc_from_counts(*_counts(probs, labels, bins))


def fit_threshold_pr(
    probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike], bins: int | None = None
) -> float:
    """THT0: the threshold maximising precision × recall on the PR curve (Pérez Malla et al. 2019, §2.4.1).

    Fit on the validation fold(s) only and store the value in the bundle config; apply it with
    ``AsDiscreted(threshold=t)`` (``prob >= t``). Arguments as :func:`pr_curve`; ties go to the highest
    threshold.
    """
    return _argmax_threshold(*_pr_score(*_counts(probs, labels, bins)))


def fit_threshold_roc(
    probs: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike], bins: int | None = None
) -> float:
    """THT1: the threshold maximising TPR − FPR (Youden's J) on the ROC curve (Pérez Malla et al. 2019, §2.4.1).

    Fit on the validation fold(s) only; arguments as :func:`pr_curve`; ties go to the highest threshold.
    """
    return _argmax_threshold(*_roc_score(*_counts(probs, labels, bins)))
