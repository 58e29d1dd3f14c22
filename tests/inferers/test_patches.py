"""Paper-faithful patch inference of Clèrigues et al. 2020 against exact values and against the sliding-window mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.inferers import SlidingWindowInferer

from strokeseg.inferers.patches import FaithfulPatchInferer


def _volume():
    torch.manual_seed(0)
    image = torch.zeros(1, 2, 40, 36, 20)
    image[:, :, 4:36, 4:32, 2:18] = 1.0 + 0.1 * torch.randn(1, 2, 32, 28, 16)
    image[:, 0, 14:24, 10:20, 6:12] += 2.0  # a "lesion"
    return image


def _pointwise_net():
    net = nn.Conv3d(2, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-1.0, 0.2], [1.0, -0.2]]).reshape(2, 2, 1, 1, 1))
        net.bias.copy_(torch.tensor([1.0, -1.5]))
    return net.eval()


def test_pointwise_network_gives_the_direct_prediction_in_the_brain():
    image, net = _volume(), _pointwise_net()
    inferer = FaithfulPatchInferer(batch_size=64)
    with torch.no_grad():
        out = inferer(image, net)
        direct = torch.softmax(net(image), dim=1)
    assert out.shape == (1, 2, 40, 36, 20)
    prob = torch.softmax(out, dim=1)
    assert torch.allclose(prob.sum(1), torch.ones(1, 40, 36, 20), atol=1e-5)
    brain = image[0, 1] > 0  # every brain voxel is the centre of a patch or lies inside one
    assert torch.allclose(prob[:, :, brain], direct[:, :, brain], atol=1e-5)
    with torch.no_grad():
        everywhere = torch.softmax(FaithfulPatchInferer(foreground_only=False)(image, net), dim=1)
    assert torch.allclose(everywhere, direct, atol=1e-5)
    # foreground patches only: fewer than the full 4 x 4 x 1 grid (5 x 4 x 5 origins)
    assert inferer.last_num_patches == 5 * 4 * 5  # every centre is in the brain here
    half = image.clone()
    half[:, :, 20:] = 0
    origins = FaithfulPatchInferer().patch_origins(half[0])
    assert 0 < len(origins) < 5 * 4 * 5 and bool((origins[:, 0] + 12 < 20).all())
    assert FaithfulPatchInferer(foreground_only=False).patch_origins(image[0]).shape == (5 * 4 * 5, 3)


def test_agrees_with_sliding_window_on_a_tiny_network():
    # a local-mean lesion detector: decisive outputs, receptive field 5 voxels, zero padding at every border
    net = nn.Sequential(nn.Conv3d(2, 2, 3, padding=1), nn.PReLU(2, init=0.1), nn.Conv3d(2, 2, 3, padding=1)).eval()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1 / 27
        net[0].weight[1, 0] = -1 / 27
        net[0].bias.copy_(torch.tensor([-2.0, 2.0]))
        net[2].weight.zero_()
        net[2].weight[1, 0, 1, 1, 1], net[2].weight[1, 1, 1, 1, 1] = 4.0, -4.0
        net[2].bias.zero_()
    image = _volume()
    with torch.no_grad():
        faithful = FaithfulPatchInferer(batch_size=128)(image, net).argmax(1)
        fast = SlidingWindowInferer(roi_size=(32, 32, 16), overlap=0.25, mode="gaussian")(image, net).argmax(1)
    brain = image[0, 1] > 0
    a, b = faithful[0][brain] == 1, fast[0][brain] == 1
    assert a.any() and b.any()
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert float(dice) >= 0.95


def test_small_volume_is_padded_and_bad_input_refused():
    net = _pointwise_net()
    small = torch.ones(1, 2, 10, 12, 8)
    with torch.no_grad():
        out = FaithfulPatchInferer()(small, net)
    assert out.shape == (1, 2, 10, 12, 8)
    with pytest.raises(ValueError, match=r"\(1, C, X, Y, Z\)"):
        FaithfulPatchInferer()(torch.ones(2, 2, 24, 24, 16), net)
