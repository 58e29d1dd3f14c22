"""DeepMedic's building blocks: the pre-activation valid convolution and one convolutional pathway.

DeepMedic (Kamnitsas et al., 2017, doi:10.1016/j.media.2016.10.004; the v0.6.1 configuration used by
Pérez Malla et al., 2019, doi:10.3389/fninf.2019.00033, §2.2) orders every layer as BatchNorm -> PReLU ->
dropout -> convolution (He et al.'s pre-activation), has no BatchNorm and no non-linearity in front of the first
convolution (a per-channel bias on the raw input instead), and adds residual connections whose shorter branch is
centre-cropped to the valid-convolution output and zero-padded in its channels. MONAI's ``ResidualUnit`` and
``Convolution`` pad their convolutions and project residuals with a 1x1 convolution, so neither gives these
blocks; they are written here with MONAI's layer factories.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm

__all__ = ["PreActivationConv", "DeepMedicPathway", "centre_crop", "add_residual", "deepmedic_init_"]

#: PReLU slope at initialisation (DeepMedic v0.6.1 ``layers.py``)
PRELU_INIT = 0.01


def centre_crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` (``(B, C, *spatial)``) to ``size`` around their centre.

    Where a dimension loses an odd number of voxels, the extra one is taken from its end.
    """
    for d in range(len(size)):
        start = (x.shape[2 + d] - size[d]) // 2
        x = x.narrow(2 + d, start, size[d])
    return x


def add_residual(out: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """``out + centre_crop(earlier)``, with ``earlier`` zero-padded at the end of its channels to ``out``'s.

    DeepMedic's residual connection (DeepMedic v0.6.1 ``cnnHelpers``): no projection, missing channels are zeros.
    """
    earlier = centre_crop(earlier, list(out.shape[2:]))
    missing = out.shape[1] - earlier.shape[1]
    if missing > 0:
        pads = [0, 0] * (out.dim() - 2) + [0, missing]
        earlier = F.pad(earlier, pads)
    elif missing < 0:
        earlier = earlier[:, : out.shape[1]]
    return out + earlier


class PreActivationConv(nn.Module):
    """One DeepMedic layer: ``[BN -> PReLU] -> dropout -> conv`` (``bias -> conv`` when ``linear`` is set).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: convolution kernel (same in every dimension).
        linear: first layer of a pathway: a learnt per-channel bias instead of BatchNorm, no activation.
        dropout: dropout rate on the layer's input (after the activation).
        padding_mode: ``"valid"`` (no padding, DeepMedic's pathways) or a ``torch.nn.Conv`` padding mode
            (``"replicate"``, ``"reflect"``, ``"zeros"``) that keeps the spatial size.
        final_bias: add a learnt bias to the output (DeepMedic's classification layer).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        linear: bool = False,
        dropout: float = 0.0,
        padding_mode: str = "valid",
        final_bias: bool = False,
    ) -> None:
        super().__init__()
        if padding_mode != "valid" and kernel_size % 2 == 0:
            raise ValueError(f"padding_mode {padding_mode!r} needs an odd kernel_size, got {kernel_size}")
        if linear:
            self.input_bias = nn.Parameter(torch.zeros(in_channels))
            self.norm: nn.Module = nn.Identity()
            self.act: nn.Module = nn.Identity()
        else:
            self.register_parameter("input_bias", None)
            self.norm = Norm[Norm.BATCH, spatial_dims](in_channels)
            self.act = nn.PReLU(in_channels, init=PRELU_INIT)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        conv_type = Conv[Conv.CONV, spatial_dims]
        if padding_mode == "valid":
            self.conv = conv_type(in_channels, out_channels, kernel_size, bias=final_bias)
        else:
            self.conv = conv_type(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                padding_mode=padding_mode,
                bias=final_bias,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.input_bias
        if bias is not None:
            x = x + bias.view([1, -1] + [1] * (x.dim() - 2))
        return self.conv(self.dropout(self.act(self.norm(x))))


class DeepMedicPathway(nn.Module):
    """A stack of valid convolutions with DeepMedic's residual connections; each layer shrinks the input by
    ``kernel_size - 1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        features: channels of every layer (v0.6.1: ``[30, 30, 40, 40, 40, 40, 50, 50]``).
        residual_layers: 1-indexed layers whose output gets the (cropped, channel-padded) input of the
            layer before them (v0.6.1: ``[4, 6, 8]``); each must be at least 2.
        kernel_size: convolution kernel of every layer.
        dropout: dropout rate of every layer but the first (DeepMedic's default is 0).

    Raises:
        ValueError: an empty ``features`` list or a residual layer outside ``2..len(features)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int] = (30, 30, 40, 40, 40, 40, 50, 50),
        residual_layers: Sequence[int] = (4, 6, 8),
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        features = [int(f) for f in features]
        if not features:
            raise ValueError("features must name at least one layer")
        for layer in residual_layers:
            if not 2 <= int(layer) <= len(features):
                raise ValueError(f"residual_layers: layer {layer} is outside 2..{len(features)}")
        self.out_channels = features[-1]
        self.shrink = len(features) * (kernel_size - 1)
        residual = {int(r) for r in residual_layers}
        self.residual = [i + 1 in residual for i in range(len(features))]
        layers = []
        channels = in_channels
        for i, width in enumerate(features):
            layers.append(
                PreActivationConv(
                    spatial_dims, channels, width, kernel_size, linear=i == 0, dropout=0.0 if i == 0 else dropout
                )
            )
            channels = width
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous_input = x
        for i, layer in enumerate(self.layers):
            out = layer(x)
            if self.residual[i]:
                out = add_residual(out, previous_input)
            previous_input = x
            x = out
        return x


def deepmedic_init_(module: nn.Module) -> None:
    """He-normal initialisation of every convolution (Pérez Malla et al. 2019, §2.2: "modified Xavier ... that
    accounts for nonlinearities (He et al., 2015)"), biases zero, BatchNorm scale 1 and shift 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
