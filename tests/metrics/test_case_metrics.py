"""Per-case metrics: hand-computed cases, agreement with MONAI's metrics, lesion scenes, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric

from strokeseg.errors import DataError
from strokeseg.metrics import CASE_COLUMNS, case_metrics
from strokeseg.metrics.case import union_bounding_box
from strokeseg.metrics.lesionwise import label_lesions, lesion_metrics


def _onehot(mask: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.stack([~mask, mask]))[None].float()


def test_hand_computed_voxel_metrics():
    pred = np.zeros((4, 4, 2), bool)
    ref = np.zeros((4, 4, 2), bool)
    ref[0, 0:2, 0] = True  # 2 voxels
    pred[0, 1:4, 0] = True  # 3 voxels, 1 shared
    m = case_metrics(pred, ref, spacing=(2.0, 1.0, 3.0))
    tp, fp, fn, tn = 1, 2, 1, 28
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["ppv"] == pytest.approx(1 / 3)
    assert m["tpr"] == pytest.approx(1 / 2)
    assert m["tnr"] == pytest.approx(28 / 30)
    assert m["acc"] == pytest.approx(29 / 32)
    assert m["mcc"] == pytest.approx((tp * tn - fp * fn) / math.sqrt(3 * 2 * 30 * 29))
    # voxel volume 6 mm³ = 0.006 mL
    assert m["vol_pred"] == pytest.approx(0.018)
    assert m["vol_ref"] == pytest.approx(0.012)
    assert m["avd"] == pytest.approx(0.006)
    assert m["avd_rel"] == pytest.approx(0.5)
    # surfaces along axis 1 (spacing 1 mm): ref {0,1}, pred {1,2,3}; farthest pred voxel 3 is 2 mm from ref 1
    assert m["hd"] == pytest.approx(2.0)
    assert set(CASE_COLUMNS) <= set(m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_metrics_anisotropic(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random((14, 12, 9)) > 0.85
    ref = rng.random((14, 12, 9)) > 0.85
    spacing = (0.7, 1.3, 4.0)
    m = case_metrics(pred, ref, spacing=spacing)
    y_pred, y = _onehot(pred), _onehot(ref)
    assert m["dice"] == pytest.approx(float(DiceMetric(include_background=False)(y_pred, y)), rel=1e-6)
    hd = HausdorffDistanceMetric(include_background=False)(y_pred, y, spacing=spacing)
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)(y_pred, y, spacing=spacing)
    assert m["hd"] == pytest.approx(float(hd), rel=1e-5)
    assert m["hd95"] == pytest.approx(float(hd95), rel=1e-5)
    names = ["precision", "sensitivity", "specificity", "accuracy", "matthews correlation coefficient"]
    confusion = ConfusionMatrixMetric(include_background=False, metric_name=names)
    confusion(y_pred, y)
    for key, value in zip(["ppv", "tpr", "tnr", "acc", "mcc"], confusion.aggregate(), strict=True):
        assert m[key] == pytest.approx(float(value), rel=1e-5)


def test_crop_does_not_change_results():
    rng = np.random.default_rng(3)
    pred = np.zeros((30, 30, 20), bool)
    ref = np.zeros((30, 30, 20), bool)
    pred[10:14, 12:15, 5:9] = rng.random((4, 3, 4)) > 0.3
    ref[11:16, 12:16, 6:9] = True
    full = case_metrics(pred, ref, spacing=(1.0, 2.0, 0.5))
    box = union_bounding_box(pred, ref, margin=1)
    cropped = case_metrics(pred[box], ref[box], spacing=(1.0, 2.0, 0.5))
    for key in ("dice", "ppv", "tpr", "hd", "hd95", "vol_pred", "n_fp", "n_fn", "lesion_f1"):
        assert full[key] == pytest.approx(cropped[key], nan_ok=True)
    assert full["tnr"] != cropped["tnr"]  # the true negatives of the full image count


def test_both_empty_and_one_empty():
    empty = np.zeros((6, 6, 4), bool)
    lesion = empty.copy()
    lesion[2:4, 2:4, 1:3] = True
    both = case_metrics(empty, empty)
    assert both["dice"] == 1.0 and both["hd"] == 0.0 and both["hd95"] == 0.0
    assert both["lesion_f1"] == 1.0 and both["n_fp"] == 0 and math.isnan(both["detected"])
    missed = case_metrics(empty, lesion)
    assert missed["dice"] == 0.0 and math.isnan(missed["hd"]) and math.isnan(missed["hd95"])
    assert missed["n_fn"] == 1 and missed["size_fn"] == 8 and missed["detected"] == 0.0
    hallucinated = case_metrics(lesion, empty)
    assert hallucinated["dice"] == 0.0 and math.isnan(hallucinated["hd"])
    assert hallucinated["n_fp"] == 1 and math.isnan(hallucinated["avd_rel"])


def test_lesion_scene_two_lesions_one_detected_and_fp_blob():
    ref = np.zeros((40, 40, 12), bool)
    pred = np.zeros_like(ref)
    ref[5:10, 5:10, 2:6] = True  # lesion A, 100 voxels, detected
    ref[25:28, 25:28, 2:5] = True  # lesion B, 27 voxels, missed
    pred[6:11, 6:11, 3:7] = True  # overlaps A
    pred[30:37, 5, 8] = True  # FP blob of 7 voxels
    m = lesion_metrics(pred, ref)
    assert m["n_fp"] == 1 and m["size_fp"] == 7.0
    assert m["n_fn"] == 1 and m["size_fn"] == 27.0
    assert m["detected"] == 1.0
    assert m["n_ref_lesions"] == 2 and m["mean_ref_lesion_size"] == pytest.approx(63.5)
    # TP = 1 detected lesion, FP = 1, FN = 1 ⇒ F1 = 1 / (1 + 1)
    assert m["lesion_f1"] == pytest.approx(0.5)
    assert m["lesion_count_diff"] == 0


def test_per_slice_versus_3d_components():
    ref = np.zeros((10, 10, 5), bool)
    ref[2:5, 2:5, 1:4] = True  # one 3-D lesion spanning three slices
    pred = np.zeros_like(ref)
    pred[2:5, 2:5, 1] = True  # only its first slice
    m3 = lesion_metrics(pred, ref)
    m2 = lesion_metrics(pred, ref, per_slice=True)
    assert m3["n_ref_lesions"] == 1 and m3["n_fn"] == 0 and m3["mean_ref_lesion_size"] == 27
    assert m2["n_ref_lesions"] == 3 and m2["n_fn"] == 2 and m2["mean_ref_lesion_size"] == 9
    assert m2["size_fn"] == 9.0


def test_connectivity_parameter():
    mask = np.zeros((5, 5, 3), bool)
    mask[1, 1, 1] = mask[2, 2, 1] = True  # diagonal neighbours in-plane
    assert label_lesions(mask, connectivity=1)[1] == 2
    assert label_lesions(mask, connectivity=2)[1] == 1
    assert label_lesions(mask)[1] == 1
    stacked = np.zeros((5, 5, 3), bool)
    stacked[1, 1, 0] = stacked[2, 2, 1] = True  # corner neighbours across slices
    assert label_lesions(stacked, connectivity=2)[1] == 2
    assert label_lesions(stacked)[1] == 1
    assert label_lesions(stacked, per_slice=True)[1] == 2
    with pytest.raises(ValueError, match="connectivity"):
        label_lesions(mask, connectivity=3, per_slice=True)


def test_2d_masks_and_validation():
    pred = np.zeros((8, 8), bool)
    ref = np.zeros((8, 8), bool)
    pred[1:3, 1:3] = ref[1:3, 1:4] = True
    m = case_metrics(pred, ref, spacing=(1.0, 2.0))
    assert m["dice"] == pytest.approx(8 / 10)
    assert m["hd"] == pytest.approx(2.0)
    with pytest.raises(DataError, match="spacing"):
        case_metrics(pred, ref)  # 3 spacing values for 2-D masks
    with pytest.raises(DataError, match="shape"):
        case_metrics(pred, ref[:, :4], spacing=(1, 1))


def test_restricted_metric_groups():
    pred = np.zeros((6, 6, 3), bool)
    pred[1:3, 1:3, 1] = True
    m = case_metrics(pred, pred, metrics=["n_fp"])
    assert m["n_fp"] == 0 and "hd" not in m and "dice" not in m
