"""MS-DCNN: pathway isolation (gradients and perturbations), shapes, layer assignment, parameter count, dropout,
input validation, TorchScript."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from strokeseg.networks.msdcnn import CHANNEL_ORDER, MSDCNN, DenseUPathway, MultiKernelConv, count_parameters

TINY = {"init_features": 8, "growth_rate": 4, "block_config": (1, 2, 1, 1), "bn_size": 2}


def _tiny(**kwargs) -> MSDCNN:
    torch.manual_seed(0)
    return MSDCNN(**{**TINY, **kwargs})


@pytest.mark.parametrize("shape", [(2, 4, 32, 32), (1, 4, 16, 48), (3, 4, 64, 32)])
def test_output_shape_and_range(shape):
    net = _tiny().eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 1, *shape[2:])
    assert float(out.min()) > 0.0 and float(out.max()) < 1.0  # sigmoid probabilities


def test_channel_order_is_the_documented_one():
    assert CHANNEL_ORDER == ("Tmax", "CBF", "CBV", "MTT")
    net = _tiny()
    x = torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 16, 16)
    x_a, x_b = net.split(x)
    assert x_a.shape[1] == 3 and x_b.shape[1] == 1
    assert torch.equal(x_a[0, :, 0, 0], torch.tensor([0.0, 1.0, 2.0])) and float(x_b[0, 0, 0, 0]) == 3.0


def _pathway_outputs(net: MSDCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        net.pathway_a.register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out)),
        net.pathway_b.register_forward_hook(lambda _m, _i, out: captured.__setitem__("b", out)),
    ]
    try:
        out = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured["a"], captured["b"], out


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_each_pathway_gets_gradient_only_from_its_own_maps(mode):
    net = _tiny()
    net.train(mode == "train")
    x = torch.randn(2, 4, 32, 32, requires_grad=True)
    feat_a, feat_b, out = _pathway_outputs(net, x)
    (grad_a,) = torch.autograd.grad(feat_a.square().sum(), x, retain_graph=True)
    (grad_b,) = torch.autograd.grad(feat_b.square().sum(), x, retain_graph=True)
    (grad_out,) = torch.autograd.grad(out.sum(), x)
    per_channel = lambda g: g.abs().sum(dim=(0, 2, 3))  # noqa: E731
    assert torch.all(per_channel(grad_a)[:3] > 0) and float(per_channel(grad_a)[3]) == 0.0  # A: Tmax, CBF, CBV
    assert torch.all(per_channel(grad_b)[:3] == 0) and float(per_channel(grad_b)[3]) > 0  # B: MTT only
    assert torch.all(per_channel(grad_out) > 0)  # the joined head sees all four maps


def test_changing_one_group_leaves_the_other_pathway_unchanged():
    net = _tiny().eval()
    x = torch.randn(1, 4, 32, 32)
    y = x.clone()
    y[:, 3] = torch.randn(32, 32) * 5  # new MTT
    z = x.clone()
    z[:, :3] = torch.randn(3, 32, 32) * 5  # new Tmax, CBF, CBV
    with torch.no_grad():
        a_x, b_x, out_x = _pathway_outputs(net, x)
        a_y, b_y, out_y = _pathway_outputs(net, y)
        a_z, b_z, _ = _pathway_outputs(net, z)
    assert torch.equal(a_x, a_y) and not torch.allclose(b_x, b_y)
    assert torch.equal(b_x, b_z) and not torch.allclose(a_x, a_z)
    assert not torch.allclose(out_x, out_y)


def _dense_layer_params(m: int, k: int, bn: int) -> int:
    return 2 * m + m * bn * k + 2 * bn * k + bn * k * k * 9  # BN, 1x1 bottleneck, BN, 3x3 conv (no biases)


def _pathway_params(c_in: int, init: int, k: int, blocks, bn: int) -> tuple[int, int]:
    n = c_in * (init // 2) * (9 + 25) + 2 * init  # 3x3 || 5x5 first layer + BN
    channels, skips = init, [init]
    for i, units in enumerate(blocks):
        if i > 0:
            reduced = channels // 2
            n += 2 * channels + channels * reduced  # transition: BN + 1x1 conv (no bias)
            channels = reduced
        for _ in range(units):
            n += _dense_layer_params(channels, k, bn)
            channels += k
        skips.append(channels)
    skips.pop()
    for skip in skips[::-1]:
        width = max(k, skip // 4)
        n += 2 * (channels + skip) + (channels + skip) * width * 9 + width  # BN, 3x3 conv with bias
        channels = width
    return n, channels


def test_parameter_count_of_the_densenet121_sized_network(record_property):
    net = MSDCNN()
    n_a, w_a = _pathway_params(3, 64, 32, (6, 12, 24, 16), 4)
    n_b, w_b = _pathway_params(1, 64, 32, (6, 12, 24, 16), 4)
    joined = w_a + w_b
    head = joined * joined * 9 + 2 * joined + joined + 1
    assert count_parameters(net.pathway_a) == n_a
    assert count_parameters(net.pathway_b) == n_b
    assert count_parameters(net) == n_a + n_b + head == 25_663_233  # reported in the model card
    record_property("msdcnn_parameters", count_parameters(net))


def test_layer_assignment_per_pathway():
    net = MSDCNN()
    for pathway in (net.pathway_a, net.pathway_b):
        assert isinstance(pathway.stem, MultiKernelConv)
        assert [b.kernel_size for b in pathway.stem.branches] == [(3, 3), (5, 5)]
        dense = [level.dense for level in pathway.encoder]
        assert [len(block) for block in dense] == [6, 12, 24, 16]  # DenseNet-121 block sizes
        assert sum(isinstance(m, nn.MaxPool2d) for m in pathway.modules()) == 1
        assert sum(isinstance(m, nn.AvgPool2d) for m in pathway.modules()) == 3  # 3 transition blocks
        assert len(pathway.up_blocks) == 4
    head_convs = [m for m in net.head if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in head_convs] == [(3, 3), (1, 1)] and head_convs[-1].out_channels == 1


def test_dropout_rates_of_the_pathways():
    net = MSDCNN(**TINY)
    rates_a = [m.p for m in net.pathway_a.modules() if isinstance(m, nn.Dropout2d)]
    rates_b = [m.p for m in net.pathway_b.modules() if isinstance(m, nn.Dropout2d)]
    n_units = sum(TINY["block_config"])
    assert rates_a == [0.01] * (n_units + 3)  # Liu et al. 2018, §2.3: Tmax+CBF+CBV 0.01, in dense units and transitions
    assert rates_b == [0.5] * (n_units + 3)  # MTT 0.5
    assert not any(isinstance(m, nn.Dropout2d) for m in net.head.modules())


def test_dropout_acts_in_training_only():
    net = _tiny()
    x = torch.randn(2, 4, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
    quiet = _tiny(dropout_a=0.0, dropout_b=0.0).train()
    with torch.no_grad():
        assert torch.equal(quiet(x), quiet(x))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 5, 32, 32), (2, 4, 30, 32), (2, 4, 32, 24), (4, 32, 32)])
def test_bad_input_is_rejected_with_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*multiples of 16.*\[" + ", ".join(map(str, shape))):
        _tiny()(torch.randn(shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_config": (1, 1, 1)},
        {"dropout_a": 1.0},
        {"dropout_b": -0.1},
        {"kernel_sizes": (3, 4)},
        {"init_features": 9},
        {"up_features": (4, 4, 4)},
        {"in_channels_b": 0},
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        _tiny(**kwargs)


def test_custom_decoder_and_head_widths():
    net = _tiny(up_features=(6, 5, 4, 3), head_features=7)
    assert net.pathway_a.out_channels == 3 and net.pathway_b.out_channels == 3
    assert net.head[0].in_channels == 6 and net.head[0].out_channels == 7
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 4, 16, 16)).shape == (1, 1, 16, 16)


def test_pathway_alone_keeps_the_resolution():
    pathway = DenseUPathway(2, 1, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        assert pathway(torch.randn(2, 1, 48, 16)).shape == (2, pathway.out_channels, 48, 16)


def test_torchscript_matches_eager():
    net = _tiny().eval()
    scripted = torch.jit.script(net)
    for shape in [(2, 4, 32, 32), (1, 4, 48, 16)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-6)
    with pytest.raises(torch.jit.Error, match="multiples of 16"):
        scripted(torch.randn(1, 4, 20, 20))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="onnxscript / onnxruntime not installed",
)
def test_onnx_export_with_dynamic_batch_and_size_matches_eager(tmp_path):
    import onnxruntime as ort

    net = _tiny().eval()
    path = tmp_path / "msdcnn.onnx"
    dynamic = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 4, 32, 32),),
            str(path),
            dynamo=True,
            input_names=["image"],
            output_names=["pred"],
            dynamic_shapes=dynamic,
            optimize=False,
            verbose=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 4, 48, 64)  # another batch and image size than at export
    (pred,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(pred, net(x).numpy(), rtol=0, atol=1e-5)
