"""MUSCLE Net: layer table and parameter count, dropout behaviour, input validation, TorchScript."""

from __future__ import annotations

import pytest
import torch

from strokeseg.networks import MuscleNet


def test_parameter_count():
    convs = (4 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
    fcs = (4096 * 128 + 128) + (128 * 64 + 64) + (64 * 2 + 2)  # 64 channels x 8 x 8 = 4096 after one pool
    n = sum(p.numel() for p in MuscleNet().parameters())
    assert n == convs + fcs
    assert abs(n - 0.6e6) / 0.6e6 < 0.05  # about 0.6 M parameters, as the EDD model card says


def test_layers_follow_the_table():
    net = MuscleNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (4, 32, (3, 3), (1, 1)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
        (64, 64, (3, 3), (1, 1)),
    ]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(4096, 128), (128, 64), (64, 2)]
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_output_and_dropout_behaviour():
    net = MuscleNet()
    x = torch.randn(6, 4, 16, 16)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert a.shape == (6, 2) and torch.equal(a, b)  # eval: deterministic
    net.train()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)  # train: dropout active


def test_no_dropout_is_deterministic_in_training():
    torch.manual_seed(1)
    net = MuscleNet(dropout=0.0).train()
    x = torch.randn(3, 4, 16, 16)
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("shape", [(2, 4, 17, 16), (2, 3, 16, 16), (4, 16, 16), (2, 4, 32, 32)])
def test_wrong_input_size_is_rejected(shape):
    with pytest.raises(ValueError, match=r"\(B, 4, 16, 16\).*\[" + ", ".join(map(str, shape)) + r"\]"):
        MuscleNet()(torch.randn(shape))


@pytest.mark.parametrize("kwargs", [{"patch_size": 15}, {"dropout": 1.0}])
def test_bad_configuration(kwargs):
    with pytest.raises(ValueError):
        MuscleNet(**kwargs)


def test_other_patch_size():
    net = MuscleNet(patch_size=8).eval()
    assert net.classifier[1].in_features == 64 * 4 * 4
    assert net(torch.randn(2, 4, 8, 8)).shape == (2, 2)


def test_scripted_matches_eager():
    net = MuscleNet().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(5, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="16, 16"):
        scripted(torch.randn(5, 4, 8, 8))
