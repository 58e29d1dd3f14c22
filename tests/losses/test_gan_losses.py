"""CE − log(GDS) and the LSGAN losses of P. Liu 2018, §2.3, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from strokeseg.losses.gan import (
    CrossEntropyLogGeneralizedDiceLoss,
    LSGANDiscriminatorLoss,
    LSGANGeneratorLoss,
    inverse_frequency_weights,
)


def _gds(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Generalised Dice score of Sudre et al. (weights 1 / (sum of reference)^2), per batch item, averaged."""
    dims = (2, 3)
    ref = onehot.sum(dims)
    w = 1.0 / (ref * ref)
    w = torch.where(torch.isinf(w), torch.zeros_like(w), w)
    w = torch.where(w == 0, w.max(dim=1, keepdim=True).values.expand_as(w), w)
    num = 2 * (w * (probs * onehot).sum(dims)).sum(1)
    den = (w * (probs + onehot).sum(dims)).sum(1)
    return ((num + 1e-5) / (den + 1e-5)).mean()


def test_seg_loss_equals_weighted_ce_minus_log_gds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, generator=g)
    target = torch.zeros(2, 1, 6, 6)
    target[:, :, 1:3, 2:4] = 1  # 4 of 36 pixels per image: lesion weight 64 / 8 = 8
    loss = CrossEntropyLogGeneralizedDiceLoss(weight_cap=10.0)(logits, target)
    weight = torch.tensor([1.0, 64 / 8])
    ce = F.cross_entropy(logits, target[:, 0].long(), weight=weight)
    onehot = torch.cat([1 - target, target], dim=1)
    expected = ce - torch.log(_gds(logits.softmax(1), onehot) + 1e-5)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_weights_are_capped_inverse_frequencies():
    target = torch.zeros(100, dtype=torch.long)
    target[:5] = 1
    torch.testing.assert_close(inverse_frequency_weights(target, 2, 10.0), torch.tensor([1.0, 10.0]))
    target[:40] = 1
    torch.testing.assert_close(inverse_frequency_weights(target, 2, 10.0), torch.tensor([1.0, 1.5]))
    # no lesion in the batch: finite, capped
    torch.testing.assert_close(inverse_frequency_weights(torch.zeros(9), 2, 10.0), torch.tensor([1.0, 10.0]))


def test_perfect_prediction_has_near_zero_loss_and_a_wrong_one_is_large():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:5, 2:5] = 1
    perfect = torch.cat([(1 - target) * 20 - 10, target * 20 - 10], dim=1)
    loss_fn = CrossEntropyLogGeneralizedDiceLoss()
    assert float(loss_fn(perfect, target)) < 1e-3
    assert float(loss_fn(-perfect, target)) > 5.0
    assert math.isfinite(float(loss_fn(-perfect * 100, target)))


def test_seg_loss_checks_the_target_shape():
    with pytest.raises(ValueError, match="target must be"):
        CrossEntropyLogGeneralizedDiceLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_lsgan_losses_are_the_paper_equations():
    real, fake = torch.tensor([[0.9], [0.2]]), torch.tensor([[0.3], [-0.1]])
    d_loss = LSGANDiscriminatorLoss()(real, fake)
    expected = ((fake - 0) ** 2).mean() + ((real - 1) ** 2).mean()
    torch.testing.assert_close(d_loss, expected)
    torch.testing.assert_close(LSGANGeneratorLoss()(fake), ((fake - 1) ** 2).mean())
    # no sigmoid / activation: scores above 1 are penalised quadratically
    torch.testing.assert_close(LSGANGeneratorLoss()(torch.tensor([[3.0]])), torch.tensor(4.0))
