"""The (T_h, S_min) grid search of Clèrigues et al. 2020 and its combined score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strokeseg.errors import DataError
from strokeseg.fitting.lesion_size import combined_score, grid_search_threshold_size
from strokeseg.lesions import label_lesions
from strokeseg.metrics import case_metrics
from strokeseg.postprocessing.lesion_size import RemoveSmallLesions


def _scene():
    mask = np.zeros((1, 16, 16, 8), np.uint8)
    mask[0, 2:6, 2:6, 2:6] = 1  # 64 voxels
    mask[0, 10:12, 10:12, 3] = 1  # 4 voxels
    mask[0, 13, 2, 5] = mask[0, 14, 3, 6] = 1  # 2 voxels joined only through a corner
    return mask


def test_grid_search_filter_equals_transform():
    mask = _scene()
    lesions, n = label_lesions(mask[0] > 0)
    sizes = np.bincount(lesions.ravel(), minlength=n + 1)
    for s in (1, 3, 5, 100):
        keep = sizes >= s
        keep[0] = False
        np.testing.assert_array_equal(keep[lesions], RemoveSmallLesions(min_size=s)(mask)[0] > 0)


def test_combined_score_edge_cases():
    assert combined_score(1.0, 0.0) == pytest.approx(0.5)
    assert combined_score(0.5, 100.0) == pytest.approx(0.25 / 1.0)
    assert combined_score(0.8, math.nan) == 0.0  # NaN HD counts as HD_max
    assert combined_score(0.8, 500.0) == 0.0  # HD clipped to HD_max
    assert combined_score(0.0, 0.0) == 0.0


def test_grid_search_returns_argmax_of_score():
    shape = (30, 30, 12)
    ref = np.zeros(shape, bool)
    ref[5:15, 5:15, 3:9] = True
    prob = np.zeros(shape, np.float32)
    prob[5:15, 5:15, 3:9] = 0.65  # the lesion: found for T_h <= 0.6
    prob[24:27, 24:27, 9:11] = 0.9  # an 18-voxel false positive far away: removed for S_min > 18
    prob[5:15, 15:17, 3:9] = 0.45  # a rim outside the lesion: included for T_h <= 0.4
    thresholds, sizes = (0.3, 0.5, 0.7), (1, 10, 50)
    t, s, table = grid_search_threshold_size([prob], [ref], thresholds, sizes, spacing=(1.0, 1.0, 2.0))
    assert table.shape == (3, 3)
    assert (t, s) == (0.5, 50)
    # each table entry is the score of the corresponding thresholded and filtered case
    for i, th in enumerate(thresholds):
        for j, sz in enumerate(sizes):
            mask = RemoveSmallLesions(min_size=sz)((prob >= th)[None].astype(np.uint8))[0] > 0
            m = case_metrics(mask, ref, spacing=(1.0, 1.0, 2.0))
            assert table[i, j] == pytest.approx(combined_score(m["dice"], m["hd"]))
    assert table[2].max() == 0.0  # T_h 0.7 leaves only the FP (dice 0) or nothing (HD NaN)


def test_grid_search_errors():
    with pytest.raises(DataError, match="case 0"):
        grid_search_threshold_size([np.zeros((4, 4, 4))], [np.zeros((4, 4, 5))])
    with pytest.raises(DataError, match="same non-zero number"):
        grid_search_threshold_size([], [])
