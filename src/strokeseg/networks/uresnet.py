"""Asymmetric residual U-Net (uResNet) of Clèrigues et al. 2020 (§3.2, Fig. 2).

Clèrigues A, Valverde S, Bernal J, Freixenet J, Oliver A, Lladó X. Acute and sub-acute stroke lesion
segmentation from multimodal MRI. Computer Methods and Programs in Biomedicine 194 (2020) 105521,
doi:10.1016/j.cmpb.2020.105521 (arXiv:1810.13304).

Four resolution levels with widths 32/64/128/256. The encoder has one pre-activation residual block per level
and downsamples by concatenating a stride-2 convolution with a 2x max-pool (C -> 2C channels); the decoder
upsamples with a transposed convolution whose output is *added* to the encoder feature of the same level (long
residual) and refines it with a single-convolution residual block (short residual), so most parameters (about
75 %) sit in the encoder: hence "asymmetric". MONAI's ``UNet``/``DynUNet``/``SegResNet`` concatenate skips
or use different blocks, so the network is assembled here from MONAI factories.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Dropout, Norm, Pool

__all__ = ["PreActResidualBlock", "ConcatDownsample", "AddUpsample", "AsymmetricResidualUNet"]

# Clèrigues et al. 2020, Fig. 2, and the authors' SUNETx4 code: 32 base filters doubled at each of 4 levels.
URESNET_FEATURES = (32, 64, 128, 256)
# authors' code: channel dropout 0.2 in the encoder residual blocks of levels 2-4.
URESNET_DROPOUT = 0.2
# authors' code: PyTorch BatchNorm momentum 0.01 and eps 1e-3.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


def _norm_act(spatial_dims: int, channels: int) -> nn.Sequential:
    """BatchNorm (momentum 0.01, eps 1e-3) followed by a per-channel PReLU initialised at 0 (authors' code)."""
    return nn.Sequential(
        Norm[Norm.BATCH, spatial_dims](channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.PReLU(num_parameters=channels, init=0.0),
    )


def _conv3(spatial_dims: int, cin: int, cout: int, stride: int = 1) -> nn.Module:
    return Conv[Conv.CONV, spatial_dims](cin, cout, kernel_size=3, stride=stride, padding=1)


class PreActResidualBlock(nn.Module):
    """Pre-activation residual block ``x + F(x)``, ``F`` = (BN, PReLU, conv 3) x ``num_convs`` [+ channel dropout].

    With ``num_convs=2`` it is the encoder block (dropout after the first convolution); with ``num_convs=1`` the
    decoder's single-convolution block.

    Args:
        spatial_dims: 2 or 3.
        channels: input = output channels.
        num_convs: convolutions in the residual branch (1 or 2).
        dropout: channel-dropout probability after the first convolution (0 disables it).
    """

    def __init__(self, spatial_dims: int, channels: int, num_convs: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if num_convs not in (1, 2):
            raise ValueError(f"num_convs must be 1 or 2, got {num_convs!r}.")
        layers: list[nn.Module] = [_norm_act(spatial_dims, channels), _conv3(spatial_dims, channels, channels)]
        if num_convs == 2:
            if dropout > 0:
                layers.append(Dropout[Dropout.DROPOUT, spatial_dims](dropout))
            layers += [_norm_act(spatial_dims, channels), _conv3(spatial_dims, channels, channels)]
        self.branch = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ConcatDownsample(nn.Module):
    """Halve the resolution and double the channels: ``cat(conv 3 stride 2 (C -> C), max-pool 2)``."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.conv = _conv3(spatial_dims, channels, channels, stride=2)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class AddUpsample(nn.Module):
    """Double the resolution with a transposed conv (k 3, s 2) and *add* the encoder feature (long residual)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](
            in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(x) + skip


class AsymmetricResidualUNet(nn.Module):
    """uResNet of Clèrigues et al. 2020: residual encoder, additive skips, light decoder; per-voxel class logits.

    Layout (Fig. 2 and the authors' code): conv 3 -> f0; per level ``k`` an encoder :class:`PreActResidualBlock`
    (channel dropout at levels 2-4) and, except at the bottom, a :class:`ConcatDownsample` to ``f(k+1) = 2 fk``;
    then per level upwards an :class:`AddUpsample` and a single-conv residual block; BN + PReLU and a conv 3 to
    ``out_channels`` logits (softmax is applied by the loss / post-processing). With the default 8 input
    channels there are about 7.0 M parameters. The input's spatial sizes must be divisible by
    ``2 ** (len(features) - 1)`` (8 by default; the training patch is 24 x 24 x 16).

    Args:
        spatial_dims: 3 (2 also works).
        in_channels: modalities (plus their symmetric counterparts): 8 for SISS, 14 for SPES.
        out_channels: classes (2: healthy, lesion).
        features: widths per level; each must be twice the previous one (the concat downsampling doubles).
        dropout: channel-dropout probability of the encoder blocks below the first level.

    Raises:
        ValueError: on widths that do not double from level to level.

    Example::

        net = AsymmetricResidualUNet(3, in_channels=8, out_channels=2).eval()
        logits = net(torch.randn(2, 8, 24, 24, 16))   # (2, 2, 24, 24, 16)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 8,
        out_channels: int = 2,
        features: Sequence[int] = URESNET_FEATURES,
        dropout: float = URESNET_DROPOUT,
    ) -> None:
        super().__init__()
        features = [int(f) for f in features]
        if len(features) < 2 or any(b != 2 * a for a, b in zip(features[:-1], features[1:], strict=True)):
            raise ValueError(f"features must double from level to level (e.g. 32, 64, 128, 256), got {features}.")
        self.in_channels = int(in_channels)
        self.levels = len(features)
        self.input_conv = _conv3(spatial_dims, in_channels, features[0])
        self.encoders = nn.ModuleList(
            PreActResidualBlock(spatial_dims, f, num_convs=2, dropout=dropout if k > 0 else 0.0)
            for k, f in enumerate(features[:-1])
        )
        self.downs = nn.ModuleList(ConcatDownsample(spatial_dims, f) for f in features[:-1])
        self.bottom = PreActResidualBlock(spatial_dims, features[-1], num_convs=2, dropout=dropout)
        # Decoder modules ordered from the deepest level upwards.
        self.ups = nn.ModuleList(
            AddUpsample(spatial_dims, features[k + 1], features[k]) for k in range(self.levels - 2, -1, -1)
        )
        self.decoders = nn.ModuleList(
            PreActResidualBlock(spatial_dims, features[k], num_convs=1) for k in range(self.levels - 2, -1, -1)
        )
        self.head = nn.Sequential(_norm_act(spatial_dims, features[0]), _conv3(spatial_dims, features[0], out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, H, W, D)``, sizes divisible by ``2 ** (levels - 1)``. Returns logits."""
        h = self.input_conv(x)
        skips: list[torch.Tensor] = []
        for encoder, down in zip(self.encoders, self.downs):  # noqa: B905 (TorchScript has no strict=)
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        depth = len(skips)
        for up, decoder in zip(self.ups, self.decoders):  # noqa: B905 (TorchScript has no strict=)
            depth -= 1
            h = decoder(up(h, skips[depth]))
        return self.head(h)
