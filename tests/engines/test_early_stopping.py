"""The early-stopping criterion of Clèrigues et al. 2020 (L1 + error rate) and the (T_h, S_min) search handler."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from strokeseg.engines.early_stopping import L1ErrorRate, early_stop_score
from strokeseg.engines.threshold_search import ThresholdSizeSearch, tuned_value
from strokeseg.errors import DataError


def test_l1_error_rate_by_hand():
    metric = L1ErrorRate()
    prob = torch.tensor([0.2, 0.9, 0.6, 0.1]).reshape(1, 1, 4)
    two_channel = torch.cat([1 - prob, prob], dim=1)
    label = torch.tensor([0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 4)
    metric(two_channel, label)
    # L1 = (0.2 + 0.1 + 0.6 + 0.1) / 4 = 0.25; one of four voxels wrong after thresholding at 0.5
    assert float(metric.aggregate()) == pytest.approx(0.25 + 0.25)
    metric(prob, label)  # one-channel probabilities give the same value
    assert float(metric.aggregate()) == pytest.approx(0.5)


def test_early_stop_score_is_minus_the_metric():
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"val_l1_error": 0.3}
    assert early_stop_score()(engine) == pytest.approx(-0.3)


def test_threshold_search_fits_and_writes(tmp_path):
    label = torch.zeros(1, 20, 20, 10)
    label[0, 5:12, 5:12, 3:7] = 1
    prob = torch.zeros(1, 20, 20, 10)
    prob[0, 5:12, 5:12, 3:7] = 0.65  # the lesion
    prob[0, 15:17, 15:17, 1:3] = 0.95  # a small (8-voxel) false positive
    pred = torch.cat([1 - prob, prob])
    out = tmp_path / "postprocessing.json"
    search = ThresholdSizeSearch(out, thresholds=[0.5, 0.7], sizes=[1, 10])
    engine = Engine(lambda e, b: [{"pred": pred, "label": label}])
    search.attach(engine)
    engine.run([0], max_epochs=1)
    fitted = json.loads(out.read_text())
    assert (fitted["threshold"], fitted["min_size"]) == (0.5, 10)  # keeps the lesion, drops the false positive
    assert tuned_value(out, "threshold", 0.9) == 0.5 and tuned_value(tmp_path / "none.json", "threshold", 0.9) == 0.9
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="bad.json"):
        tuned_value(tmp_path / "bad.json", "threshold", 0.5)
