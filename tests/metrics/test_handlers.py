"""MONAI/ignite integration: LesionwiseMetric as a key metric and CaseMetricsSaver on a real evaluator."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.transforms import AsDiscreted

from strokeseg.metrics import case_metrics
from strokeseg.metrics.handlers import CaseMetricsSaver, LesionwiseMetric, foreground, spacing_from_meta

AFFINE = torch.diag(torch.tensor([2.0, 1.0, 3.0, 1.0], dtype=torch.float64))
SPACING = (2.0, 1.0, 3.0)


def _cases(with_case_key: bool = True):
    """Three cases: the 'image' is a soft map that an identity network passes through as the prediction."""
    rng = np.random.default_rng(0)
    items = []
    for k in range(3):
        ref = np.zeros((16, 14, 6), np.float32)
        ref[3 + k : 9 + k, 4:10, 1:4] = 1
        prob = np.clip(ref * 0.8 + rng.random(ref.shape).astype(np.float32) * 0.45, 0, 1)
        meta = {"filename_or_obj": f"/data/case_{k}/case_{k}_label.nii.gz"}
        item = {
            "image": MetaTensor(torch.from_numpy(prob[None]), affine=AFFINE.clone()),
            "label": MetaTensor(torch.from_numpy(ref[None]), affine=AFFINE.clone(), meta=meta),
        }
        if with_case_key:
            item["case"] = f"case_{k}"
        items.append((item, prob, ref))
    return items


def _evaluator(items, out_dir, batch_size, postprocessing=True, figures=True):
    loader = DataLoader(Dataset([i for i, _, _ in items]), batch_size=batch_size, num_workers=0)
    saver = CaseMetricsSaver(out_dir, figures=figures)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=torch.nn.Identity(),
        postprocessing=AsDiscreted(keys="pred", threshold=0.5) if postprocessing else None,
        key_val_metric={
            "val_lesion_f1": IgniteMetricHandler(
                metric_fn=LesionwiseMetric("lesion_f1"), output_transform=from_engine(["pred", "label"])
            )
        },
        additional_metrics={
            "val_hd": IgniteMetricHandler(
                metric_fn=LesionwiseMetric("hd"), output_transform=from_engine(["pred", "label"])
            )
        },
        val_handlers=[saver],
    )
    return evaluator, saver


def _read_csv(path):
    with open(path, newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluator_writes_per_case_report(tmp_path, batch_size):
    items = _cases()
    evaluator, saver = _evaluator(items, tmp_path / "report", batch_size, figures=batch_size == 1)
    evaluator.run()
    rows = _read_csv(tmp_path / "report" / "metrics.csv")
    assert sorted(rows) == ["case_0", "case_1", "case_2"]
    expected = {f"case_{k}": case_metrics(prob >= 0.5, ref > 0, SPACING) for k, (_, prob, ref) in enumerate(items)}
    for case, m in expected.items():
        assert float(rows[case]["dice"]) == pytest.approx(m["dice"], rel=1e-5)
        assert float(rows[case]["hd"]) == pytest.approx(m["hd"], rel=1e-5)  # spacing from the affine
        assert int(rows[case]["n_fp"]) == m["n_fp"]
    # the key metric is the NaN-aware mean of the per-case values
    f1 = np.mean([m["lesion_f1"] for m in expected.values()])
    assert evaluator.state.metrics["val_lesion_f1"] == pytest.approx(f1, rel=1e-5)
    assert evaluator.state.metrics["val_hd"] == pytest.approx(np.mean([m["hd"] for m in expected.values()]), rel=1e-5)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["n_cases"] == 3
    assert (tmp_path / "report" / "figures" / "dice_boxplot.png").is_file() == (batch_size == 1)
    assert saver.report_path == tmp_path / "report"


def test_soft_predictions_give_curves_and_names_from_meta(tmp_path):
    items = _cases(with_case_key=False)
    evaluator, saver = _evaluator(items, tmp_path / "r", batch_size=2, postprocessing=False)
    evaluator.run()
    rows = _read_csv(tmp_path / "r" / "metrics.csv")
    assert sorted(rows) == ["case_0", "case_1", "case_2"]  # from the label's filename_or_obj
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert 0.0 < summary["thresholds"]["THT0"] < 1.0
    assert (tmp_path / "r" / "figures" / "pr_curve.png").stat().st_size > 0
    # a second run starts from scratch (no duplicated cases)
    saver.figures = False
    evaluator.run()
    assert len(_read_csv(tmp_path / "r" / "metrics.csv")) == 3


def test_lesionwise_metric_batch_and_list_inputs_and_nan_reduction():
    ref = torch.zeros(2, 2, 8, 8, 4)
    ref[:, 1, 2:5, 2:5, 1:3] = 1
    ref[:, 0] = 1 - ref[:, 1]
    pred = ref.clone()
    pred[1] = 0
    pred[1, 0] = 1  # the second case predicts nothing ⇒ hd NaN
    metric = LesionwiseMetric("hd", get_not_nans=True)
    values = metric(pred, ref)
    assert values.shape == (2, 1) and values[0, 0] == 0.0 and math.isnan(float(values[1, 0]))
    metric(list(pred), list(ref))  # decollated form
    mean, not_nans = metric.aggregate()
    assert float(mean) == 0.0 and float(not_nans) == 2
    dice = LesionwiseMetric("dice")
    dice(pred, ref)
    assert float(dice.aggregate()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="metric_name"):
        LesionwiseMetric("volume")


def test_foreground_and_spacing_helpers():
    onehot = torch.zeros(2, 3, 3)
    onehot[1, 1, 1] = 1
    assert foreground(onehot)[1, 1] == 1 and foreground(onehot[1:])[1, 1] == 1
    with pytest.raises(ValueError, match="channels"):
        foreground(torch.zeros(3, 2, 2))
    oblique = torch.eye(4, dtype=torch.float64)
    oblique[:3, :3] = torch.tensor([[0.0, -1.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    assert spacing_from_meta(MetaTensor(torch.zeros(1, 2, 2, 2), affine=oblique), 3) == (2.0, 1.5, 4.0)
    assert spacing_from_meta(torch.zeros(1, 2, 2), 2) is None
