"""``strokeseg evaluate`` end to end on small synthetic NIfTI files, and its error cases."""

from __future__ import annotations

import csv
import json
import math

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from strokeseg.errors import DataError
from strokeseg.metrics import case_metrics
from strokeseg.metrics.casefiles import find_labels, find_predictions
from strokeseg.metrics.report import evaluate_folders
from strokeseg.naming import OUTPUT_TAILS, case_name
from strokeseg.tools.cli import main

AFFINE = np.diag([1.5, 1.5, 4.0, 1.0])
SPACING = (1.5, 1.5, 4.0)
SHAPE = (24, 20, 8)


def _save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _dataset(tmp_path):
    """Three cases in the three accepted prediction namings; case c also has a soft map."""
    rng = np.random.default_rng(0)
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    truth = {}
    for k, case in enumerate(["a", "b", "c"]):
        ref = np.zeros(SHAPE, np.uint8)
        ref[4 + k : 12 + k, 5:12, 2:6] = 1
        pred = ref.copy()
        pred[4 + k : 6 + k] = 0  # miss a part
        pred[18:20, 15:17, 6] = 1  # a 4-voxel false positive
        truth[case] = (pred.astype(bool), ref.astype(bool))
        label_name = f"{case}.nii.gz" if case != "b" else f"{case}_label.nii.gz"
        _save(label_dir / label_name, ref)
    _save(pred_dir / "a" / "a_seg.nii.gz", truth["a"][0].astype(np.uint8))
    _save(pred_dir / "b_seg.nii.gz", truth["b"][0].astype(np.uint8))
    _save(pred_dir / "c.nii", truth["c"][0].astype(np.uint8))
    prob = np.clip(truth["c"][0] * 0.7 + rng.random(SHAPE) * 0.3, 0, 1).astype(np.float32)
    _save(pred_dir / "c_prob.nii.gz", prob)
    return pred_dir, label_dir, truth


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_evaluate_end_to_end(tmp_path):
    pred_dir, label_dir, truth = _dataset(tmp_path)
    out = tmp_path / "report"
    assert main(["evaluate", str(pred_dir), str(label_dir), "--out", str(out)]) == 0
    rows = _rows(out)
    assert sorted(rows) == ["a", "b", "c"]
    for case, (pred, ref) in truth.items():
        expected = case_metrics(pred, ref, SPACING)
        for key in ("dice", "hd", "hd95", "vol_ref", "avd", "n_fp", "n_fn", "lesion_f1"):
            assert float(rows[case][key]) == pytest.approx(expected[key], rel=1e-4), (case, key)
        assert int(rows[case]["n_fp"]) == 1 and float(rows[case]["size_fp"]) == 4.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 3 and summary["hd_nan_count"] == 0
    assert summary["lesionwise"]["DR"] == 1.0 and summary["lesionwise"]["m#FP"] == 1.0
    assert 0 < summary["thresholds"]["THT0"] < 1  # case c's soft map gives the curves
    assert "| dice |" in (out / "summary.md").read_text()
    names = {"dice_boxplot", "bland_altman", "pr_curve", "roc_curve", "overlay_best", "overlay_median", "overlay_worst"}
    for name in names:
        image = matplotlib.image.imread(out / "figures" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
        assert image.std() > 0  # not a blank canvas
    assert not list(out.rglob(".partial-*"))  # atomic writes left no temporary file


def test_evaluate_soft_prediction_threshold_and_datalist(tmp_path):
    rng = np.random.default_rng(1)
    ref = np.zeros(SHAPE, np.uint8)
    ref[5:15, 5:15, 2:6] = 1
    soft = np.clip(ref * 0.6 + rng.random(SHAPE) * 0.35, 0, 1).astype(np.float32)
    _save(tmp_path / "pred" / "x" / "x_seg.nii.gz", soft)  # a soft map stored as the prediction
    _save(tmp_path / "data" / "masks" / "x_mask.nii.gz", ref)
    datalist = {"training": [{"image": ["img.nii.gz"], "label": "masks/x_mask.nii.gz", "case": "x", "fold": 0}]}
    datalist["testing"] = [{"image": ["t.nii.gz"], "case": "unlabelled"}]
    (tmp_path / "data" / "datalist.json").write_text(json.dumps(datalist))
    out = evaluate_folders(
        tmp_path / "pred", tmp_path / "data" / "datalist.json", tmp_path / "o", threshold=0.7, figures=False
    )
    row = _rows(out)["x"]
    expected = case_metrics(soft >= 0.7, ref > 0, SPACING)
    assert float(row["dice"]) == pytest.approx(expected["dice"], rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["threshold"] == 0.7 and "THT1" in summary["thresholds"]


def test_per_slice_option(tmp_path):
    pred_dir, label_dir, truth = _dataset(tmp_path)
    out = evaluate_folders(pred_dir, label_dir, tmp_path / "o", per_slice=True, figures=False)
    pred, ref = truth["a"]
    assert int(_rows(out)["a"]["n_ref_lesions"]) == case_metrics(pred, ref, SPACING, per_slice=True)["n_ref_lesions"]
    assert int(_rows(out)["a"]["n_ref_lesions"]) == 4  # the lesion spans four axial slices
    assert not (out / "figures").exists()


def test_missing_cases_error_and_allow_missing(tmp_path, capsys):
    pred_dir, label_dir, _ = _dataset(tmp_path)
    _save(pred_dir / "extra_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    (label_dir / "a.nii.gz").unlink()
    assert main(["evaluate", str(pred_dir), str(label_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cases without a label: a, extra" in err and "strokeseg: error" in err
    out = evaluate_folders(pred_dir, label_dir, tmp_path / "o2", figures=False, allow_missing=True)
    assert sorted(_rows(out)) == ["b", "c"]


def test_grid_mismatch_and_unreadable_file(tmp_path, capsys):
    pred_dir, label_dir, _ = _dataset(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.01  # 10 µm more than the 1e-3 tolerance
    _save(pred_dir / "b_seg.nii.gz", np.zeros(SHAPE, np.uint8), affine=shifted)
    assert main(["evaluate", str(pred_dir), str(label_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "grid mismatch" in err and "b_seg.nii.gz" in err and "b_label.nii.gz" in err
    _save(pred_dir / "b_seg.nii.gz", np.zeros((24, 20, 7), np.uint8))
    with pytest.raises(DataError, match=r"shape \(24, 20, 7\)"):
        evaluate_folders(pred_dir, label_dir, tmp_path / "o", figures=False)
    (pred_dir / "b_seg.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="cannot read .*b_seg.nii.gz"):
        evaluate_folders(pred_dir, label_dir, tmp_path / "o", figures=False)


def test_discovery_rules(tmp_path):
    pred_dir, label_dir, _ = _dataset(tmp_path)
    found = find_predictions(pred_dir)
    assert found["a"].seg.name == "a_seg.nii.gz" and found["c"].prob.name == "c_prob.nii.gz"
    assert found["b"].prob is None
    assert sorted(find_labels(label_dir)) == ["a", "b", "c"]
    _save(pred_dir / "a_seg.nii.gz", np.zeros(SHAPE, np.uint8))  # second mask for case a
    with pytest.raises(DataError, match="case a: two seg predictions"):
        find_predictions(pred_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no prediction found"):
        find_predictions(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        find_predictions(tmp_path / "missing")
    assert case_name("/x/sub-01_prob.nii.gz", OUTPUT_TAILS) == "sub-01"
    assert case_name("VSD.Brain.XX.O.OT.7.nii", OUTPUT_TAILS) == "VSD.Brain.XX.O.OT.7"


def test_empty_prediction_counts_nan_hd(tmp_path):
    pred_dir, label_dir, _ = _dataset(tmp_path)
    _save(pred_dir / "b_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    out = evaluate_folders(pred_dir, label_dir, tmp_path / "o", figures=False)
    assert math.isnan(float(_rows(out)["b"]["hd"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hd_nan_count"] == 1 and summary["metrics"]["hd"]["n"] == 2


def test_overlay_slices_codes_and_selection():
    from strokeseg.metrics.figures import overlay_slices

    pred = np.zeros((10, 10, 6), bool)
    ref = np.zeros_like(pred)
    ref[2:5, 2:5, 3] = True
    pred[3:6, 2:5, 3] = True
    pred[8, 8, 1] = True  # one FP voxel in slice 1
    ov = overlay_slices(pred, ref, max_slices=1, margin=0)
    assert ov.indices == (3,)  # the slice with most lesion voxels
    codes = ov.codes[0]
    assert (codes == 1).sum() == 6 and (codes == 2).sum() == 3 and (codes == 3).sum() == 3
    assert overlay_slices(pred, ref, max_slices=4).indices == (1, 3)


def test_benchmark_function_small():
    from strokeseg.tools.bench.evaluation import benchmark_evaluate

    result = benchmark_evaluate(num_cases=2, shape=(24, 22, 10))
    assert result["num_cases"] == 2 and result["shape"] == [24, 22, 10]
    assert result["seconds_per_case"] == pytest.approx(result["seconds"] / 2, abs=1e-3)


def test_a_prediction_folder_is_a_reference(tmp_path):
    """Two runs compared (e.g. --inference_precision bf16 vs fp32): the second run's folder is the reference."""
    pred_dir, _, truth = _dataset(tmp_path)
    other = tmp_path / "other"
    _save(other / "a" / "a_seg.nii.gz", truth["a"][0].astype(np.uint8))  # identical to run 1
    _save(other / "b_seg.nii.gz", truth["b"][1].astype(np.uint8))  # the reference of b
    _save(other / "c.nii", truth["c"][0].astype(np.uint8))
    _save(other / "c_prob.nii.gz", np.zeros(SHAPE, np.float32))  # soft maps are not references
    labels = find_labels(other)
    assert {k: v.name for k, v in labels.items()} == {"a": "a_seg.nii.gz", "b": "b_seg.nii.gz", "c": "c.nii"}
    rows = _rows(evaluate_folders(pred_dir, other, tmp_path / "o", figures=False))
    assert float(rows["a"]["dice"]) == pytest.approx(1.0)
    assert float(rows["b"]["dice"]) == pytest.approx(case_metrics(*truth["b"], SPACING)["dice"], abs=1e-6)
    _save(other / "a" / "a_seg.nii", truth["a"][0].astype(np.uint8))
    with pytest.raises(DataError, match="case a: two label files"):
        find_labels(other)
