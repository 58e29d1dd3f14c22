"""Inference precision that follows the machine: the ``inference_precision`` knob of every bundle.

``auto`` (the default of every bundle) runs the networks under bfloat16 autocast where the hardware computes bf16
natively — a CPU with the ``avx512_bf16`` or ``amx_bf16`` flag, or a CUDA GPU that reports bf16 support — and in
float32 everywhere else: without those flags oneDNN emulates bf16 through fp32, which on this project's
machines was 20–40× slower than fp32. ``fp32`` and ``bf16`` force one or the other (``bf16`` on a
machine without native support is allowed, with a warning, for agreement checks). The decision is taken at run
time from what the machine has, never hard-coded, and logged once per process and device.

:class:`PrecisionInferer` puts any MONAI inferer (``SlidingWindowInferer``, the faithful patch inferer, …)
under that precision: autocast is applied around each *network call*, and the network's outputs are cast back
to float32 before the inferer blends or stitches them, so overlap averaging always happens in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

from strokeseg.knobs import BoolKnob, KnobError, as_bool
from strokeseg.runtime.hardware import bf16_support

__all__ = [
    "PRECISIONS",
    "as_precision",
    "native_bf16",
    "resolve_precision",
    "use_bf16",
    "AutocastModule",
    "training_network",
    "to_memory_format",
    "PrecisionInferer",
]

PRECISIONS = ("auto", "fp32", "bf16")
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16"}
_LOGGED: set[tuple[str, str, str]] = set()
logger = logging.getLogger(__name__)


def as_precision(value: object, name: str = "inference_precision") -> str:
    """``value`` as one of :data:`PRECISIONS` (case-insensitive; ``float32``/``bfloat16`` accepted).

    Raises:
        KnobError: anything else (``"fp16"``, ``True``, …).
    """
    if isinstance(value, str):
        text = value.strip().lower()
        text = _ALIASES.get(text, text)
        if text in PRECISIONS:
            return text
    raise KnobError(f"--{name} expects one of {', '.join(PRECISIONS)}, got {value!r}")


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    return device if isinstance(device, torch.device) else torch.device(device)


def native_bf16(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and why (or why not).

    CPU: a flag of :data:`strokeseg.runtime.hardware.BF16_FLAGS` in ``/proc/cpuinfo`` (see
    :func:`strokeseg.runtime.hardware.bf16_support`). CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    dev = _device(device)
    if dev.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"CUDA device {torch.cuda.get_device_name(dev)} supports bf16"
        return False, "the CUDA device reports no bf16 support"
    if dev.type != "cpu":
        return False, f"device type {dev.type!r}: bf16 is only chosen automatically on CPUs and CUDA GPUs"
    return bf16_support()


def resolve_precision(
    value: object, device: torch.device | str | None = None, name: str = "inference_precision"
) -> str:
    """``"bf16"`` or ``"fp32"``: what the knob ``name`` = ``value`` means on ``device`` (``auto`` resolved).

    Raises:
        KnobError: ``value`` is not one of :data:`PRECISIONS`.
    """
    precision = as_precision(value, name)
    dev = _device(device)
    native, reason = native_bf16(dev)
    chosen = ("bf16" if native else "fp32") if precision == "auto" else precision
    key = (f"{name}={precision}", str(dev), chosen)
    if key not in _LOGGED:
        _LOGGED.add(key)
        if precision == "bf16" and not native:
            logger.warning("%s bf16 on %s without native bf16 (%s): expect it to be slow", name, dev, reason)
        else:
            logger.info("%s %s on %s: %s (%s)", name, precision, dev, chosen, reason)
    return chosen


def use_bf16(value: object, device: torch.device | str | None = None, name: str = "inference_precision") -> bool:
    """Whether the networks run under bfloat16 autocast for the knob ``name`` = ``value`` on ``device``.

    The bundle configs call it as ``"$strokeseg.runtime.precision.use_bf16(@inference_precision, @device)"``.
    """
    return resolve_precision(value, device, name) == "bf16"


class AutocastModule(torch.nn.Module):
    """``module`` run under bfloat16 autocast, its tensor outputs cast back to float32: bf16 *training* on a CPU.

    MONAI's trainers have ``amp``, but it is ``torch.autocast("cuda")`` with a CUDA ``GradScaler``, which does
    nothing for a network on a CPU. Wrapped in this module (parameters shared, so the optimiser and the
    checkpoints of the inner network are unchanged), the forward pass and its backward run the autocast
    operations (convolutions, matrix products) in bf16 with float32 weights and gradients; the loss sees float32.
    bf16 needs no loss scaling.

    Args:
        module: the network.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        device_type = first.device.type if first is not None else "cpu"
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = self.module(*args, **kwargs)
        return _float_outputs(out)


def training_network(
    network: torch.nn.Module, precision: object, device: torch.device | str | None = None
) -> torch.nn.Module:
    """The network a trainer should call for ``train_precision`` = ``precision`` on ``device``.

    ``fp32`` (or ``auto`` without native bf16): ``network`` itself, so fp32 training is exactly what it was.
    ``bf16``: :class:`AutocastModule` around it. The bundle configs call it as
    ``"$strokeseg.runtime.precision.training_network(@network, @train_precision, @device)"``.

    Raises:
        KnobError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    return AutocastModule(network) if use_bf16(precision, device, "train_precision") else network


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D / 5-D tensor made contiguous channels-last (``channels_last_3d`` in 3-D) or plain; others unchanged."""
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    return x


def _float_outputs(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_float_outputs(o) for o in out)
    if isinstance(out, dict):
        return {k: _float_outputs(v) for k, v in out.items()}
    return out


class PrecisionInferer(Inferer):
    """Run any inferer with its network under bfloat16 autocast and/or channels-last, outputs in float32.

    MONAI's ``SlidingWindowInferer`` and our :class:`strokeseg.inferers.patches.FaithfulPatchInferer` have no
    precision option of their own, and MONAI's evaluators only autocast on CUDA; this wrapper adds both for CPU and
    GPU. The network is wrapped, not the inferer, so that windows are blended in float32: each window's output is
    cast to float32 as it leaves the network. With ``autocast_bf16=False`` and ``channels_last=False`` it calls the
    inner inferer unchanged (the same numbers bit for bit).

    Args:
        inferer: the inferer to wrap.
        autocast_bf16: run the network under ``torch.autocast(dtype=torch.bfloat16)`` on the input's device.
        channels_last: feed the network channels-last inputs (``channels_last_3d`` in 3-D) and convert a
            ``torch.nn.Module`` network's parameters to that memory format.
    """

    def __init__(self, inferer: Inferer, autocast_bf16: bool = False, channels_last: BoolKnob = False) -> None:
        super().__init__()
        self.inferer = inferer
        self.autocast_bf16 = bool(autocast_bf16)
        self.channels_last = as_bool(channels_last, "channels_last")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not (self.autocast_bf16 or self.channels_last):
            return self.inferer(inputs, network, *args, **kwargs)
        if self.channels_last and isinstance(network, torch.nn.Module) and inputs.ndim in (4, 5):
            fmt = torch.channels_last if inputs.ndim == 4 else torch.channels_last_3d
            network = network.to(memory_format=fmt)
        device_type = inputs.device.type
        autocast_bf16, channels_last = self.autocast_bf16, self.channels_last

        def run(x: torch.Tensor, *a: Any, **k: Any) -> Any:
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=autocast_bf16):
                out = network(to_memory_format(x, channels_last) if channels_last else x, *a, **k)
            return _float_outputs(out)

        return self.inferer(inputs, run, *args, **kwargs)
