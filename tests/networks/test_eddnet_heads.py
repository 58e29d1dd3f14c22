"""EDD Net heads at inference (Table 4 of Chen et al. 2017 scores the four outputs of one trained network)."""

from __future__ import annotations

import pytest
import torch

from strokeseg.networks.eddnet import EDDNet

SMALL = (4, 8, 8)


def test_each_head_returns_its_output_of_the_same_weights():
    torch.manual_seed(0)
    net = EDDNet(features=SMALL, deep_supervision=True).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        stacked = net.set_inference_head("all")(x)  # (B, 4, 2, H, W): refined, branch 1, branch 2, fused
        assert stacked.shape == (2, 4, 2, 16, 16)
        b1, b2 = net.branches[0](x), net.branches[1](x)
        fused = net.fusion(b1 + b2)
        refined = net.refinement(torch.cat([x, fused], dim=1))
        for head, expected, index in (
            ("branch1", b1, 1),
            ("branch2", b2, 2),
            ("fused", fused, 3),
            ("refined", refined, 0),
        ):
            out = net.set_inference_head(head)(x)
            torch.testing.assert_close(out, expected, rtol=0, atol=0)
            torch.testing.assert_close(stacked[:, index], expected, rtol=0, atol=0)
        torch.testing.assert_close(net.set_inference_head("final")(x), refined, rtol=0, atol=0)
    # training with deep supervision still returns every output, whatever head is selected for inference
    assert net.set_inference_head("branch1").train()(x).shape == (2, 4, 2, 16, 16)


def test_heads_of_reduced_configurations_and_bad_heads():
    naive = EDDNet(features=SMALL, refinement=False, inference_head="fused").eval()
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(naive(x), naive.set_inference_head("final")(x))
    with pytest.raises(ValueError, match="no such output"):
        EDDNet(features=SMALL, refinement=False, inference_head="refined")
    with pytest.raises(ValueError, match="no such output"):
        EDDNet(features=SMALL, num_branches=1, fusion=False, refinement=False, inference_head="fused")
    with pytest.raises(ValueError, match="inference_head must be one of"):
        EDDNet(features=SMALL, inference_head="branch3")


def test_scripted_network_keeps_the_selected_head_and_default_export_is_final():
    net = EDDNet(features=SMALL, deep_supervision=True).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        default = torch.jit.script(net)(x)
        torch.testing.assert_close(default, net(x))
        assert default.shape == (1, 2, 16, 16)
        net.set_inference_head("branch2")
        torch.testing.assert_close(torch.jit.script(net)(x), net.branches[1](x))
