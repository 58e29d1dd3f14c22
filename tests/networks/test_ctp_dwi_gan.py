"""Generator / discriminator / maxout segmentator of the CTP → DWI GAN (P. Liu 2018) and their composition."""

from __future__ import annotations

import pytest
import torch

from strokeseg.layers.maxout import MaxoutHead
from strokeseg.networks.ctp_dwi_gan import (
    GeneratorSegmentator,
    GroupNormUNet,
    LSGANDiscriminator,
    channel_group_norm,
)


@pytest.mark.parametrize(("channels", "groups"), [(64, 4), (128, 8), (16, 1), (8, 1), (48, 3), (40, 2), (1024, 64)])
def test_group_norm_keeps_sixteen_channels_per_group(channels, groups):
    norm = channel_group_norm(channels)
    assert norm.num_groups == groups and norm.num_channels == channels


def test_unet_group_counts_vary_by_layer():
    net = GroupNormUNet(2, in_channels=5, out_channels=1, features=(16, 32, 64))
    groups = {m.num_channels: m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {16: 1, 32: 2, 64: 4}


def test_generator_and_segmentator_shapes():
    x = torch.randn(2, 5, 32, 32)
    g = GroupNormUNet(2, 5, 1, features=(8, 16, 32))
    s = GroupNormUNet(2, 1, 2, features=(8, 16, 32), maxout_pieces=(3, 1))
    assert g(x).shape == (2, 1, 32, 32)
    assert isinstance(s.head, MaxoutHead) and s.head.conv.out_channels == 4
    assert s(g(x)).shape == (2, 2, 32, 32)


def test_unet_accepts_sides_not_divisible_by_the_depth():
    net = GroupNormUNet(2, 1, 2, features=(4, 8, 16)).eval()
    assert net(torch.randn(1, 1, 30, 22)).shape == (1, 2, 30, 22)


def test_batch_norm_variant_has_no_group_norm():
    net = GroupNormUNet(2, 5, 2, features=(8, 16), norm="batch")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_discriminator_is_five_unpadded_5x5_stride_2_convs_with_no_sigmoid():
    d = LSGANDiscriminator(features=(8, 16, 32, 32))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) and c.padding == (0, 0) for c in convs)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in d.modules())
    assert d.min_input_size == 125
    scores = d(torch.randn(3, 1, 128, 128))
    assert scores.shape == (3, 1)
    # the score equals the mean of the last convolution's map (average pooling)
    with torch.no_grad():
        score_map = d.layers(torch.ones(1, 1, 160, 160))
        torch.testing.assert_close(d(torch.ones(1, 1, 160, 160)), score_map.mean(dim=(2, 3)))


def test_discriminator_refuses_too_small_inputs():
    with pytest.raises(ValueError, match=">= 125"):
        LSGANDiscriminator(features=(4, 4, 4, 4))(torch.randn(1, 1, 64, 64))
    assert LSGANDiscriminator(features=(4, 4)).min_input_size == 29


def test_composed_network_equals_s_of_g_and_scripts():
    torch.manual_seed(0)
    g = GroupNormUNet(2, 5, 1, features=(8, 16))
    s = GroupNormUNet(2, 1, 2, features=(8, 16), maxout_pieces=(3, 1))
    net = GeneratorSegmentator(g, s).eval()
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        expected = s(g(x))
        torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(scripted.synthesize(x), g(x), rtol=1e-5, atol=1e-5)
    assert set(net.state_dict()) == {f"generator.{k}" for k in g.state_dict()} | {
        f"segmentator.{k}" for k in s.state_dict()
    }


def test_composition_without_a_generator_is_the_segmentator_alone():
    s = GroupNormUNet(2, 4, 2, features=(4, 8), norm="batch").eval()
    net = GeneratorSegmentator(None, s).eval()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), s(x), rtol=0, atol=0)
        torch.testing.assert_close(torch.jit.script(net)(x), s(x), rtol=1e-5, atol=1e-5)
    assert all(k.startswith("segmentator.") for k in net.state_dict())


def test_discriminator_scripts():
    d = LSGANDiscriminator(features=(4, 8)).eval()
    x = torch.randn(1, 1, 40, 40)
    torch.testing.assert_close(torch.jit.script(d)(x), d(x))


def test_segmentation_gradients_reach_every_generator_parameter():
    """The joint G+S update trains G through S (P. Liu 2018, eq. 6): every G parameter gets a gradient from S."""
    torch.manual_seed(0)
    g = GroupNormUNet(2, 5, 1, features=(8, 16))
    s = GroupNormUNet(2, 1, 2, features=(8, 16), maxout_pieces=(3, 1))
    x = torch.randn(2, 5, 32, 32)
    s(g(x)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features": (8,)},
        {"features": (8, 16), "norm": "layer"},
        {"spatial_dims": 1},
        {"out_channels": 3, "maxout_pieces": (3, 1)},
    ],
)
def test_invalid_arguments_are_refused(kwargs):
    args = {"spatial_dims": 2, "in_channels": 1, "features": (8, 16), **kwargs}
    with pytest.raises(ValueError):
        GroupNormUNet(**args)
