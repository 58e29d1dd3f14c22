"""The ``inference_precision`` knob: spelling, machine detection (mocked), and :class:`PrecisionInferer`."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

import strokeseg.runtime.precision as precision
from strokeseg.inferers.patches import FaithfulPatchInferer
from strokeseg.knobs import KnobError
from strokeseg.runtime.precision import PrecisionInferer, as_precision, native_bf16, resolve_precision, use_bf16
from tests.tools.bench.test_bench import CPUINFO_AMX, CPUINFO_AVX2


def test_spellings_and_refusals():
    assert [as_precision(v) for v in ("auto", " AUTO ", "fp32", "float32", "bf16", "BFloat16")] == [
        "auto",
        "auto",
        "fp32",
        "fp32",
        "bf16",
        "bf16",
    ]
    for bad in ("fp16", "", True, 1, None):
        with pytest.raises(KnobError, match="inference_precision"):
            as_precision(bad)


def test_auto_follows_the_cpu_flags(monkeypatch):
    import strokeseg.runtime.hardware as machine

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for cpuinfo, native in ((CPUINFO_AVX2, False), (CPUINFO_AMX, True)):
        monkeypatch.setattr(machine, "_read_cpuinfo", lambda text=cpuinfo: text)
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
        assert native_bf16("cpu")[0] is native
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        assert use_bf16("auto", torch.device("cpu")) is native
        assert use_bf16("fp32", "cpu") is False and use_bf16("bf16", "cpu") is True
    # the flags are there, but oneDNN was told to stop at AVX2: auto must not pick emulated bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert native_bf16("cpu")[0] is False and resolve_precision("auto", "cpu") == "fp32"


def test_auto_on_cuda_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mock GPU")
    for supported in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert use_bf16("auto", "cuda:0") is supported
    assert native_bf16("mps")[0] is False


def test_forced_bf16_without_native_support_warns(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: (False, "mocked: no flag"))
    monkeypatch.setattr(precision, "_LOGGED", set())
    with caplog.at_level("WARNING", logger="strokeseg.runtime.precision"):
        assert use_bf16("bf16", "cpu") is True
    assert "without native bf16" in caplog.text and "mocked: no flag" in caplog.text


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 3, padding=1)
        )
        self.dtypes: list[torch.dtype] = []
        self.formats: list[bool] = []

    def forward(self, x):
        self.formats.append(x.is_contiguous(memory_format=torch.channels_last_3d))
        out = self.body(x)
        self.dtypes.append(out.dtype)
        return out


def test_precision_inferer_wraps_sliding_windows():
    image = torch.randn(1, 2, 20, 18, 12)
    inner = SlidingWindowInferer(roi_size=(12, 12, 8), sw_batch_size=2, overlap=0.5, mode="gaussian")
    net = _Net().eval()
    with torch.no_grad():
        plain = inner(image, net)
        same = PrecisionInferer(inner)(image, net)
        assert torch.equal(plain, same)  # both off: the inner inferer unchanged
        net.dtypes.clear()
        last = PrecisionInferer(inner, channels_last=True)(image, net)
        assert all(net.formats[-len(net.dtypes) :]) and set(net.dtypes) == {torch.float32}
        assert torch.allclose(last, plain, atol=1e-5)
        net.dtypes.clear()
        bf16 = PrecisionInferer(inner, autocast_bf16=True)(image, net)
    assert set(net.dtypes) == {torch.bfloat16}  # the network ran under autocast ...
    assert bf16.dtype == torch.float32 and bf16.shape == plain.shape  # ... the blended output is float32
    rel = float((bf16 - plain).norm() / plain.norm())
    assert 0 < rel < 0.02


def test_precision_inferer_wraps_the_faithful_patch_inferer():
    image = torch.randn(1, 2, 30, 28, 18)
    inner = FaithfulPatchInferer(batch_size=64)
    net = _Net().eval()
    with torch.no_grad():
        plain = inner(image, net)
        bf16 = PrecisionInferer(inner, autocast_bf16=True)(image, net)
    assert bf16.dtype == torch.float32 and bf16.shape == plain.shape
    assert torch.bfloat16 in net.dtypes
    finite = torch.isfinite(plain) & torch.isfinite(bf16)
    assert float((bf16[finite] - plain[finite]).abs().max()) < 0.05


def test_training_network_is_the_network_itself_in_fp32_and_autocast_in_bf16(monkeypatch):
    import strokeseg.runtime.hardware as machine

    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.PReLU())
    assert precision.training_network(net, "fp32", "cpu") is net
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: CPUINFO_AVX2)
    assert precision.training_network(net, "auto", "cpu") is net  # no native bf16: fp32
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: CPUINFO_AMX)
    wrapped = precision.training_network(net, "auto", "cpu")
    assert isinstance(wrapped, precision.AutocastModule) and wrapped.module is net
    assert precision.training_network(net, "BF16", "cpu").module is net
    x = torch.randn(2, 2, 6, 6, 4)
    out = wrapped(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, net(x))  # the convolution really ran in bf16
    torch.testing.assert_close(out, net(x), atol=0.05, rtol=0.05)
    out.sum().backward()  # gradients reach the inner network's float32 weights
    assert net[0].weight.grad is not None and net[0].weight.grad.dtype == torch.float32
    assert set(dict(wrapped.named_parameters())) == {f"module.{k}" for k in dict(net.named_parameters())}
    with pytest.raises(KnobError, match="train_precision"):
        precision.training_network(net, "maybe", "cpu")
