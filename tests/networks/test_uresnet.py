"""Asymmetric residual U-Net of Clèrigues et al. 2020: size, layout, residual connections, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from strokeseg.networks.uresnet import AddUpsample, AsymmetricResidualUNet, ConcatDownsample, PreActResidualBlock


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_and_asymmetry():
    net = AsymmetricResidualUNet(3, in_channels=8, out_channels=2)
    total = _count(net)
    # about 7.0 M parameters for the SISS input (8 channels), about 75 % in the encoder (as the model card says)
    assert total == pytest.approx(7.0e6, rel=0.02)
    encoder = sum(_count(m) for m in (net.input_conv, net.encoders, net.downs, net.bottom))
    assert 0.70 < encoder / total < 0.80
    # SPES (14 channels) only changes the input convolution
    spes = AsymmetricResidualUNet(3, in_channels=14, out_channels=2)
    assert _count(spes) - total == 6 * 27 * 32


def test_output_shape_and_patch_size():
    net = AsymmetricResidualUNet(3, in_channels=8, out_channels=2, features=(4, 8, 16, 32)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 8, 24, 24, 16))
    assert out.shape == (2, 2, 24, 24, 16)
    with torch.no_grad():
        assert net(torch.randn(1, 8, 40, 32, 24)).shape == (1, 2, 40, 32, 24)


def test_layout_dropout_norm_prelu():
    net = AsymmetricResidualUNet(3, in_channels=8)
    drops = [[m for m in block.modules() if isinstance(m, nn.Dropout3d)] for block in (*net.encoders, net.bottom)]
    assert [len(d) for d in drops] == [0, 1, 1, 1]  # channel dropout at levels 2-4 only
    assert all(d[0].p == pytest.approx(0.2) for d in drops[1:])
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns and all(bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3) for bn in bns)
    prelus = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    assert prelus and all(torch.all(p.weight == 0) for p in prelus)
    # decoder blocks hold one convolution, encoder blocks two
    assert [sum(isinstance(m, nn.Conv3d) for m in d.modules()) for d in net.decoders] == [1, 1, 1]
    assert [sum(isinstance(m, nn.Conv3d) for m in e.modules()) for e in net.encoders] == [2, 2, 2]


def test_widths_must_double():
    with pytest.raises(ValueError, match="double"):
        AsymmetricResidualUNet(3, features=(32, 48, 96, 192))


def test_short_residual_is_identity_plus_branch():
    block = PreActResidualBlock(3, 4, num_convs=2).eval()
    x = torch.randn(1, 4, 6, 6, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.branch(x))
        # PReLU at 0 and zeroed last conv: the block is exactly the identity (the skip is really there)
        block.branch[-1].weight.zero_()
        block.branch[-1].bias.zero_()
        assert torch.equal(block(x), x)


def test_long_residual_adds_encoder_feature():
    up = AddUpsample(3, 8, 4).eval()
    x, skip = torch.randn(1, 8, 3, 3, 2), torch.randn(1, 4, 6, 6, 4)
    with torch.no_grad():
        out = up(x, skip)
        assert out.shape == skip.shape
        assert torch.allclose(out - skip, up.up(x), atol=1e-6)  # added, not concatenated


def test_concat_downsample_doubles_channels_and_keeps_max_pool():
    down = ConcatDownsample(3, 3)
    x = torch.randn(1, 3, 8, 8, 4)
    out = down(x)
    assert out.shape == (1, 6, 4, 4, 2)
    assert torch.equal(out[:, 3:], torch.nn.functional.max_pool3d(x, 2))


def test_torchscript_matches_eager_and_gradients_flow():
    torch.manual_seed(0)
    net = AsymmetricResidualUNet(3, in_channels=8, features=(4, 8, 16, 32)).eval()
    x = torch.randn(1, 8, 24, 24, 16)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
    net.train()
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
