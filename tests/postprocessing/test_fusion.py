"""Bayes fusion of instance and pixel probabilities (Chen et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from strokeseg.postprocessing.fusion import BayesFusion, BayesFusiond, bayes_fusion


def test_formula_hand_values():
    # 0.8·0.2 / (0.16 + 0.2·0.8) = 0.5; 0.9·0.9 / (0.81 + 0.01) = 81/82; 0.6·0.1 / (0.06 + 0.36) = 1/7
    p = np.array([0.8, 0.9, 0.6])
    q = np.array([0.2, 0.9, 0.1])
    np.testing.assert_allclose(bayes_fusion(p, q), [0.5, 81 / 82, 1 / 7], rtol=1e-12)
    t = bayes_fusion(torch.tensor(p), torch.tensor(q))
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t, torch.tensor([0.5, 81 / 82, 1 / 7], dtype=torch.float64))


def test_neutral_half_and_edges():
    p = torch.linspace(0, 1, 101)
    torch.testing.assert_close(bayes_fusion(p, 0.5), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        bayes_fusion(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.7, 0.3])), [0, 1, 0, 1]
    )
    # contradictory certainties (0·0 / 0) are defined as 0.5, never NaN
    out = bayes_fusion(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert torch.equal(out, torch.tensor([0.5, 0.5]))


def test_monotone_in_both_arguments():
    grid = np.linspace(0.0, 1.0, 41)
    fused = bayes_fusion(grid[:, None], grid[None, :])
    assert not np.isnan(fused).any()
    assert np.all(np.diff(fused, axis=0) >= -1e-12) and np.all(np.diff(fused, axis=1) >= -1e-12)
    # symmetric in its arguments
    np.testing.assert_allclose(fused, fused.T, atol=1e-12)


def test_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match="p_inst"):
        bayes_fusion(np.array([0.5]), np.array([1.5]))
    with pytest.raises(ValueError, match="p_pix"):
        bayes_fusion(torch.tensor([float("nan")]), 0.5)


def test_dictionary_transform_keeps_meta_and_two_class_map():
    lesion = torch.tensor([0.9, 0.7, 0.2]).reshape(1, 3, 1, 1)
    pred = MetaTensor(torch.cat([1 - lesion, lesion]), meta={"filename_or_obj": "p.nii.gz"})
    inst = torch.tensor([0.1, 0.5, 0.5]).reshape(1, 3, 1, 1)
    out = BayesFusiond("pred", instance_key="inst", lesion_channel=1)({"pred": pred, "inst": inst})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "p.nii.gz"
    torch.testing.assert_close(out[1].flatten(), torch.tensor([0.5, 0.7, 0.2]))  # 0.9·0.1/(0.09+0.09) = 0.5
    torch.testing.assert_close(out.sum(0), torch.ones(3, 1, 1))
    plain = BayesFusion()(np.array([0.9]), np.array([0.1]))
    np.testing.assert_allclose(plain, [0.5])
    with pytest.raises(KeyError, match="inst"):
        BayesFusiond("pred", instance_key="inst")({"pred": pred})


def test_hard_reject_and_rule_dispatch():
    from strokeseg.postprocessing.fusion import FUSION_RULES, fuse_instance_probability, hard_reject

    p = np.array([0.9, 0.7, 0.6, 0.2], dtype=np.float32)
    q = np.array([0.49, 0.5, 0.99, 0.1], dtype=np.float32)
    np.testing.assert_array_equal(hard_reject(p, q), np.array([0.0, 0.7, 0.6, 0.0], dtype=np.float32))
    t = hard_reject(torch.as_tensor(p), torch.as_tensor(q))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.tensor([0.0, 0.7, 0.6, 0.0]))
    assert FUSION_RULES == ("product", "hard_reject")
    np.testing.assert_allclose(fuse_instance_probability(p, q, "product"), bayes_fusion(p, q))
    np.testing.assert_array_equal(fuse_instance_probability(p, q, "hard_reject"), hard_reject(p, q))
    with pytest.raises(ValueError, match="fusion rule"):
        fuse_instance_probability(p, q, "max")
    with pytest.raises(ValueError):
        hard_reject(p, np.array([1.5]))
