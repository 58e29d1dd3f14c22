"""EDD Net: layer table, variants, deep-supervision output order, init, export (TorchScript, trace, ONNX)."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch

from strokeseg.networks import DeconvNetBranch, EDDNet

SMALL = (4, 8, 8)  # narrow widths: same structure, fast on a shared CPU


def _conv_params(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def test_parameter_count_matches_layer_table_and_paper():
    branch = (
        _conv_params(1, 32)
        + _conv_params(32, 32)  # enc 1
        + _conv_params(32, 64)
        + 3 * _conv_params(64, 64)  # enc 2
        + _conv_params(64, 128)
        + 4 * _conv_params(128, 128)  # enc 3
        + 4 * _conv_params(128, 128)
        + _conv_params(128, 64)  # dec 1
        + 3 * _conv_params(64, 64)
        + _conv_params(64, 32)  # dec 2
        + _conv_params(32, 32)
        + _conv_params(32, 2)  # dec 3
    )
    fusion = _conv_params(2, 2, k=1)
    refinement = _conv_params(1 + 2, 32) + _conv_params(32, 32) + _conv_params(32, 2)
    n = sum(p.numel() for p in EDDNet().parameters())
    assert n == 2 * branch + fusion + refinement
    assert abs(n - 3.2e6) / 3.2e6 < 0.05  # about 3.2 M parameters, as the EDD model card says
    single = EDDNet(num_branches=1, fusion=False, refinement=False)
    assert sum(p.numel() for p in single.parameters()) == branch


def test_batchnorm_has_no_affine_parameters():
    net = EDDNet()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # per branch: 2 + 4 + 5 (encoder) + 5 + 4 + 1 (decoder); refinement: 2
    assert len(norms) == 2 * 21 + 2
    assert all(m.weight is None and m.bias is None for m in norms)


def test_caffe_xavier_init_uses_fan_in_of_conv_and_deconv():
    net = EDDNet()
    conv = net.branches[0].enc3[1].conv  # Conv2d 128 -> 128: fan_in = 128 * 9
    deconv = net.branches[0].dec1[4].conv  # ConvTranspose2d 128 -> 64: Caffe fan_in = 64 * 9
    assert isinstance(deconv, torch.nn.ConvTranspose2d)
    for layer, fan_in in ((conv, 128 * 9), (deconv, 64 * 9)):
        bound = math.sqrt(3.0 / fan_in)
        w = layer.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # uniform over the whole interval
        assert abs(w.std().item() - bound / math.sqrt(3.0)) < 0.02 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_branches_have_independent_weights():
    net = EDDNet(features=SMALL)
    w0 = net.branches[0].enc1[0].conv.weight
    w1 = net.branches[1].enc1[0].conv.weight
    assert w0.data_ptr() != w1.data_ptr() and not torch.equal(w0, w1)


@pytest.mark.parametrize(
    "kwargs, k",
    [
        ({}, 4),  # refined, branch 1, branch 2, fused
        ({"num_branches": 1, "fusion": False, "refinement": False}, 1),  # single DeconvNet
        ({"refinement": False}, 3),  # naive ensemble: fused, branch 1, branch 2
        ({"num_branches": 3}, 5),
        ({"decoder": "bilinear"}, 4),
        ({"num_branches": 1, "fusion": False}, 2),  # single branch + refinement
    ],
)
def test_output_shapes_per_variant(kwargs, k):
    net = EDDNet(features=SMALL, deep_supervision=True, **kwargs)
    assert net.num_outputs == k
    x = torch.randn(2, 1, 16, 20)
    assert net.train()(x).shape == (2, k, 2, 16, 20)
    assert net.eval()(x).shape == (2, 2, 16, 20)
    net.deep_supervision = False
    assert net.train()(x).shape == (2, 2, 16, 20)


def test_deep_supervision_order_final_branches_fused():
    net = EDDNet(features=SMALL, deep_supervision=True).train()
    x = torch.randn(2, 1, 16, 16)
    out = net(x)
    # train-mode BatchNorm uses batch statistics, so recomputing each piece on the same batch reproduces it
    b1, b2 = net.branches[0](x), net.branches[1](x)
    fused = net.fusion(b1 + b2)
    refined = net.refinement(torch.cat([x, fused], dim=1))
    for i, expected in enumerate((refined, b1, b2, fused)):
        torch.testing.assert_close(out[:, i], expected, rtol=1e-5, atol=1e-5)
    # fusion is sum -> ReLU -> 1x1 conv
    conv = net.fusion[1]
    torch.testing.assert_close(fused, conv(torch.relu(b1 + b2)))


def test_unpool_decoder_output_is_zero_off_the_pool_mask():
    """Right after the last unpooling, only enc-1 argmax positions can be non-zero (one per 2x2 window)."""
    branch = DeconvNetBranch(2, 1, 2, features=SMALL).eval()
    seen = {}
    branch.dec3.register_forward_pre_hook(lambda m, args: seen.setdefault("unpooled", args[0]))
    branch(torch.randn(1, 1, 16, 16))
    windows = seen["unpooled"].reshape(1, SMALL[0], 8, 2, 8, 2)
    assert int((windows != 0).sum(dim=(3, 5)).max()) <= 1
    bilinear = DeconvNetBranch(2, 1, 2, features=SMALL, decoder="bilinear").eval()
    seen.clear()
    bilinear.dec3.register_forward_pre_hook(lambda m, args: seen.setdefault("unpooled", args[0]))
    bilinear(torch.randn(1, 1, 16, 16))
    assert int((seen["unpooled"] != 0).sum()) > SMALL[0] * 64  # interpolation fills the windows


def test_3d_variant():
    net = EDDNet(spatial_dims=3, features=(2, 2, 2), deep_supervision=True).train()
    assert net(torch.randn(1, 1, 8, 8, 4)).shape == (1, 4, 2, 8, 8, 4)


@pytest.mark.parametrize("shape", [(1, 1, 30, 32), (1, 1, 32, 18)])
def test_sizes_not_multiple_of_four_are_rejected(shape):
    net = EDDNet(features=SMALL)
    with pytest.raises(ValueError, match=r"multiples of 4.*" + r"\[" + ", ".join(map(str, shape)) + r"\]"):
        net(torch.randn(shape))


def test_wrong_number_of_dimensions_is_rejected():
    with pytest.raises(ValueError, match=r"\[1, 32, 32\]"):
        EDDNet(features=SMALL)(torch.randn(1, 32, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_branches": 2, "fusion": False}, "fusion"),
        ({"num_branches": 0}, "num_branches"),
        ({"decoder": "nearest"}, "decoder"),
        ({"features": (32, 64)}, "features"),
        ({"spatial_dims": 1}, "spatial_dims"),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EDDNet(**kwargs)


@pytest.mark.parametrize("decoder", ["unpool", "bilinear"])
def test_scripted_matches_eager(decoder):
    net = EDDNet(decoder=decoder, deep_supervision=True, features=(8, 16, 16)).eval()
    x = torch.randn(2, 1, 32, 48)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-5)
        scripted.train()
        assert scripted(x).shape == (2, 4, 2, 32, 48)  # deep supervision survives scripting
    with pytest.raises(Exception, match="multiples of 4"):
        scripted(torch.randn(1, 1, 30, 32))


def test_traced_matches_eager_at_other_sizes():
    net = EDDNet(features=(8, 16, 16)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.randn(1, 1, 16, 16), check_trace=False)
        x = torch.randn(2, 1, 32, 48)
        torch.testing.assert_close(traced(x), net(x), rtol=0, atol=1e-5)  # unpool sizes are not frozen


@pytest.mark.parametrize("decoder", ["unpool", "bilinear"])
def test_channels_last_input(decoder):
    net = EDDNet(features=SMALL, decoder=decoder).eval()
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(net(x.to(memory_format=torch.channels_last)), net(x), rtol=0, atol=1e-5)
        net_cl = net.to(memory_format=torch.channels_last)
        torch.testing.assert_close(net_cl(x.to(memory_format=torch.channels_last)), net(x), rtol=0, atol=1e-5)


def _onnx_round_trip(net: torch.nn.Module, optimize: bool, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "eddnet.onnx"
    dynamic = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 1, 32, 32),),
            str(path),
            dynamo=True,
            input_names=["image"],
            output_names=["pred"],
            dynamic_shapes=dynamic,
            optimize=optimize,
            verbose=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 1, 48, 40)  # another batch size and image size than at export
    (pred,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(pred, net(x).numpy(), rtol=0, atol=1e-4)


ONNX = pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="onnxscript not installed")


@ONNX
def test_onnx_export_unpool_branch_matches_eager(tmp_path):
    """The pool-mask unpooling exports (torch.export-based exporter); one branch keeps the export fast."""
    net = EDDNet(features=SMALL, num_branches=1, fusion=False, refinement=False).eval()
    _onnx_round_trip(net, optimize=False, tmp_path=tmp_path)


@pytest.mark.slow
@ONNX
@pytest.mark.parametrize("decoder", ["unpool", "bilinear"])
def test_onnx_export_full_structure_matches_eager(decoder, tmp_path):
    _onnx_round_trip(EDDNet(features=SMALL, decoder=decoder).eval(), optimize=False, tmp_path=tmp_path)


@pytest.mark.slow
@ONNX
def test_onnx_export_default_network_optimised(tmp_path):
    _onnx_round_trip(EDDNet().eval(), optimize=True, tmp_path=tmp_path)
