"""Deep-supervision cross-entropy: hand-computed values, stacked vs plain input, weights, shape checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from strokeseg.losses import DeepSupervisionCrossEntropy

# one image, two classes, two pixels: pixel 0 logits (0, ln 3) label 1 -> p = 3/4; pixel 1 logits (0, 0) label 0
LOGITS = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])  # (1, 2, 1, 2)
LABELS = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2), float as MONAI delivers it
CE_HAND = (math.log(4.0 / 3.0) + math.log(2.0)) / 2.0


def test_plain_logits_match_hand_computation():
    loss = DeepSupervisionCrossEntropy()
    assert loss(LOGITS, LABELS).item() == pytest.approx(CE_HAND, rel=1e-6)
    assert loss(LOGITS, LABELS[:, 0]).item() == pytest.approx(CE_HAND, rel=1e-6)  # (B, H, W) target


def test_stacked_outputs_weighted_sum():
    stacked = torch.stack([LOGITS, torch.zeros_like(LOGITS)], dim=1)  # (1, K=2, 2, 1, 2); zeros: CE = ln 2
    expected = CE_HAND + 0.5 * math.log(2.0)
    loss = DeepSupervisionCrossEntropy(weights=[1.0, 0.5])
    assert loss(stacked, LABELS).item() == pytest.approx(expected, rel=1e-6)
    assert loss(stacked, LABELS[:, 0]).item() == pytest.approx(expected, rel=1e-6)
    # default: every output weighted 1 (Chen et al. 2017, Eq. 3 with lambda = 1)
    assert DeepSupervisionCrossEntropy()(stacked, LABELS).item() == pytest.approx(CE_HAND + math.log(2.0), rel=1e-6)


def test_plain_input_ignores_output_weights():
    assert DeepSupervisionCrossEntropy(weights=[2.0, 1.0, 1.0, 1.0])(LOGITS, LABELS).item() == pytest.approx(
        CE_HAND, rel=1e-6
    )


def test_class_weights_hand_computation():
    loss = DeepSupervisionCrossEntropy(class_weights=[1.0, 3.0])
    expected = (3.0 * math.log(4.0 / 3.0) + 1.0 * math.log(2.0)) / (3.0 + 1.0)  # torch's weighted mean
    assert loss(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_matches_sum_of_torch_cross_entropies_and_gradients_reach_every_output():
    logits = torch.randn(2, 4, 3, 8, 8, requires_grad=True)  # (B, K=4, C=3, H, W)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    value = DeepSupervisionCrossEntropy()(logits, labels)
    expected = sum(F.cross_entropy(logits[:, k], labels[:, 0]) for k in range(4))
    torch.testing.assert_close(value, expected)
    value.backward()
    assert all(logits.grad[:, k].abs().sum() > 0 for k in range(4))


def test_3d_plain_and_3d_stacked():
    labels = torch.randint(0, 2, (1, 1, 4, 4, 2))
    plain = torch.randn(1, 2, 4, 4, 2)  # (B, C, H, W, D): same rank as a stacked 2-D output
    torch.testing.assert_close(DeepSupervisionCrossEntropy()(plain, labels), F.cross_entropy(plain, labels[:, 0]))
    stacked = torch.randn(1, 3, 2, 4, 4, 2)
    expected = sum(F.cross_entropy(stacked[:, k], labels[:, 0]) for k in range(3))
    torch.testing.assert_close(DeepSupervisionCrossEntropy()(stacked, labels), expected)
    torch.testing.assert_close(DeepSupervisionCrossEntropy()(stacked, labels[:, 0]), expected)


def test_wrong_number_of_weights():
    stacked = torch.randn(1, 4, 2, 4, 4)
    with pytest.raises(ValueError, match="3 weights given for 4 outputs"):
        DeepSupervisionCrossEntropy(weights=[1.0, 1.0, 1.0])(stacked, torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("target_shape", [(1, 1, 4, 5), (2, 1, 4, 4), (1, 2, 4, 4)])
def test_shapes_that_do_not_fit(target_shape):
    with pytest.raises(ValueError, match="DeepSupervisionCrossEntropy"):
        DeepSupervisionCrossEntropy()(torch.randn(1, 2, 4, 4), torch.zeros(target_shape))


def test_ambiguous_ranks_are_settled_by_the_class_count():
    # plain (B, C=2, 1, W) with target (B, 1, W) vs stacked (B, K=2, C=3, W) with target (B, 1, W)
    plain = torch.randn(2, 2, 1, 5)
    labels = torch.randint(0, 2, (2, 1, 5))
    torch.testing.assert_close(DeepSupervisionCrossEntropy()(plain, labels), F.cross_entropy(plain, labels))
    stacked = torch.randn(2, 2, 3, 5)
    expected = F.cross_entropy(stacked[:, 0], labels[:, 0]) + F.cross_entropy(stacked[:, 1], labels[:, 0])
    torch.testing.assert_close(DeepSupervisionCrossEntropy()(stacked, labels), expected)
