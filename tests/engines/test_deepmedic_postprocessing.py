"""Post-processing of Pérez Malla et al. 2019: THT0 / THT1 / FH fitted on validation outputs, read back by inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from strokeseg.engines.deepmedic import PostprocessingFitter, discretise_steps, read_fitted
from strokeseg.errors import DataError
from strokeseg.metrics.curves import CurveAccumulator
from strokeseg.postprocessing.morphology import binary_closing


def _case(shift: int):
    label = torch.zeros(1, 20, 20, 20)
    label[0, 5 + shift : 13 + shift, 5:13, 5:13] = 1
    prob = torch.full((1, 20, 20, 20), 0.1)
    prob[0, 6 + shift : 12 + shift, 6:12, 6:12] = 0.7  # under-segmented core
    prob[0, 9 + shift, 9, 9] = 0.2  # a hole
    return {"pred": torch.cat([1 - prob, prob]), "label": label}


def test_fitter_writes_the_values_the_toolkit_gives(tmp_path):
    cases = [_case(0), _case(2)]
    fitter = PostprocessingFitter(tmp_path / "models" / "postprocessing.json", description="fold 0")
    engine = Engine(lambda e, batch: batch)
    fitter.attach(engine)
    engine.run([cases], max_epochs=1)
    values = json.loads((tmp_path / "models" / "postprocessing.json").read_text())
    expected = CurveAccumulator(1000)
    for c in cases:
        expected.update(c["pred"][1].numpy(), c["label"][0].numpy())
    assert values["tht0"] == pytest.approx(expected.fit_pr())
    assert values["tht1"] == pytest.approx(expected.fit_roc())
    assert values["cases"] == 2 and values["fitted_on"] == "fold 0" and values["fh_radius"] == 3
    assert values["fh_iterations"] >= 1  # closing fills the hole
    assert read_fitted(tmp_path / "models" / "postprocessing.json") == values


def test_discretise_steps_apply_the_fitted_values(tmp_path):
    fitted = tmp_path / "postprocessing.json"
    fitted.write_text(json.dumps({"tht0": 0.15, "tht1": 0.65, "fh_iterations": 1}))
    case = _case(0)
    out = {}
    for step in ("none", "tht0", "tht1", "fh"):
        d = {"pred": case["pred"].clone()}
        for t in discretise_steps(step, fitted):
            d = t(d)
        out[step] = d["pred"]
        assert out[step].shape == (1, 20, 20, 20)
    prob = case["pred"][1]
    assert torch.equal(out["none"][0] > 0, prob > 0.5)
    assert torch.equal(out["tht0"][0] > 0, prob >= 0.15) and torch.equal(out["tht1"][0] > 0, prob >= 0.65)
    assert np.array_equal(out["fh"][0].numpy() > 0, binary_closing((prob > 0.5).numpy(), 3, 1))
    assert out["fh"][0, 9, 9, 9] == 1 and out["none"][0, 9, 9, 9] == 0


def test_missing_fit_and_unknown_step_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="fit_postprocessing"):
        discretise_steps("fh", tmp_path / "absent.json")
    with pytest.raises(ValueError, match="postprocess must be one of"):
        discretise_steps("crf")
    with pytest.raises(DataError, match="nothing to fit"):
        PostprocessingFitter(tmp_path / "p.json").fit()
