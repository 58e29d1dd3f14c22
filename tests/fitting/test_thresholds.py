"""THT0 / THT1 threshold fitting: hand-computed curves and recovery of known optima."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strokeseg.errors import DataError
from strokeseg.metrics.curves import (
    CurveAccumulator,
    fit_threshold_pr,
    fit_threshold_roc,
    pr_curve,
    roc_curve,
)

PROBS = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
LABELS = np.array([0, 0, 1, 0, 1, 0, 1, 1])


def _brute_force(probs, labels, score):
    best, best_t = -np.inf, None
    for t in np.unique(probs)[::-1]:
        pred = probs >= t
        tp = np.sum(pred & labels)
        fp = np.sum(pred & ~labels)
        value = score(tp, fp, labels.sum(), (~labels).sum())
        if value > best:
            best, best_t = value, t
    return best_t


def test_hand_computed_curves():
    precision, recall, thresholds = pr_curve(PROBS, LABELS)
    np.testing.assert_allclose(thresholds, PROBS[::-1])
    # at t = 0.6: predicted {0.6, 0.7, 0.8, 0.9}, TP 3 ⇒ precision 3/4, recall 3/4
    k = int(np.flatnonzero(thresholds == 0.6)[0])
    assert precision[k] == pytest.approx(0.75) and recall[k] == pytest.approx(0.75)
    fpr, tpr, _ = roc_curve(PROBS, LABELS)
    assert fpr[k] == pytest.approx(0.25) and tpr[k] == pytest.approx(0.75)
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0
    # precision·recall: 0.9→.25, 0.8→.5, 0.7→.667·.5=.333, 0.6→.5625, 0.4→.6·.75=.45, 0.3→.667·1=.667
    assert fit_threshold_pr(PROBS, LABELS) == pytest.approx(0.3)
    # TPR−FPR: 0.8→.5, 0.6→.5, 0.3→1−.5=.5 … tie ⇒ highest threshold 0.8
    assert fit_threshold_roc(PROBS, LABELS) == pytest.approx(0.8)


def test_recovers_known_optimum_on_synthetic_maps():
    rng = np.random.default_rng(0)
    neg = np.clip(rng.normal(0.3, 0.1, 20000), 0, 1).round(3)  # ≤ 1001 distinct scores keep the
    pos = np.clip(rng.normal(0.7, 0.1, 20000), 0, 1).round(3)  # brute-force reference fast
    probs = np.r_[neg, pos]
    labels = np.r_[np.zeros(neg.size, bool), np.ones(pos.size, bool)]
    # equal-variance Gaussians with equal weight: Youden's optimum is the midpoint 0.5
    assert fit_threshold_roc(probs, labels) == pytest.approx(0.5, abs=0.02)
    expected_pr = _brute_force(probs, labels, lambda tp, fp, p, n: (tp / (tp + fp)) * (tp / p))
    assert fit_threshold_pr(probs, labels) == pytest.approx(expected_pr)
    expected_roc = _brute_force(probs, labels, lambda tp, fp, p, n: tp / p - fp / n)
    assert fit_threshold_roc(probs, labels) == pytest.approx(expected_roc)


def test_histogram_path_matches_exact_on_grid_scores():
    rng = np.random.default_rng(1)
    probs = rng.integers(0, 100, 5000) / 100.0  # scores on the bin edges
    labels = rng.random(5000) < probs
    acc = CurveAccumulator(bins=100)
    acc.update([probs[:2000], probs[2000:]], [labels[:2000], labels[2000:]])  # two "cases"
    assert acc.n_voxels == 5000
    exact_p, exact_r, exact_t = pr_curve(probs, labels)
    hist_p, hist_r, hist_t = acc.pr_curve()
    np.testing.assert_allclose(hist_t, exact_t, atol=1e-12)
    np.testing.assert_allclose(hist_p, exact_p)
    np.testing.assert_allclose(hist_r, exact_r)
    assert acc.fit_pr() == pytest.approx(fit_threshold_pr(probs, labels))
    assert acc.fit_roc() == pytest.approx(fit_threshold_roc(probs, labels, bins=100))


def test_accepts_tensors_and_case_lists():
    cases = [torch.tensor(PROBS[:4]).reshape(2, 2), torch.tensor(PROBS[4:]).reshape(2, 2)]
    labels = [torch.tensor(LABELS[:4]).reshape(2, 2), torch.tensor(LABELS[4:]).reshape(2, 2)]
    assert fit_threshold_pr(cases, labels) == pytest.approx(0.3)


def test_errors():
    with pytest.raises(DataError, match="no positive"):
        fit_threshold_pr(PROBS, np.zeros_like(LABELS))
    with pytest.raises(DataError, match="negative"):
        fit_threshold_roc(PROBS, np.ones_like(LABELS))
    with pytest.raises(DataError, match="voxels"):
        fit_threshold_pr(PROBS, LABELS[:-1])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        CurveAccumulator(10).update(PROBS * 2, LABELS)
