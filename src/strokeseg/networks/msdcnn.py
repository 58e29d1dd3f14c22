"""MS-DCNN: two symmetric dense U-shaped pathways for CT perfusion maps, joined before a sigmoid head.

Liu L, Yang S, Meng L, Li M, Wang J. Multi-scale Deep Convolutional Neural Network for Stroke Lesions Segmentation
on CT Images. Brainlesion workshop (BrainLes) 2018 at MICCAI, ISLES 2018 challenge, Springer LNCS (the network: §2.2,
Fig. 1). DenseNet: Huang G, Liu Z, van der Maaten L, Weinberger KQ. Densely connected convolutional networks. CVPR 2017.

The network takes ONE 4-channel slice tensor ``(B, 4, H, W)`` in the channel order **Tmax, CBF, CBV, MTT** and
splits it internally: pathway A sees channels 0-2 (Tmax + CBF + CBV), pathway B sees channel 3 (MTT) (Liu et al.
2018, §2.2: the two groups of maps). The pathways have their own weights and their own dropout (0.01 for A, 0.5 for B,
Liu et al. 2018, §2.3) and meet only at the end: their full-resolution decoder outputs are concatenated, then two
convolutions and a sigmoid give the lesion probability ``(B, 1, H, W)``.

Layer assignment. The paper lists "3 separate convolution layers, 1 pooling layer, 4 dense blocks, 3 transition
blocks and 4 up-sampling blocks" without saying whether these are per pathway or for the whole network. We read
them as follows (our assumption; also in the bundle's model card):

* per pathway: the multi-kernel first layer (a 3 x 3 and a 5 x 5 convolution in parallel, concatenated, then
  BN + ReLU), **1 pooling layer** (2 x 2 max-pool, as DenseNet's stem pool), **4 dense blocks** of
  DenseNet-121's sizes ``(6, 12, 24, 16)`` with **3 transition blocks** between them (BN, ReLU, 1 x 1 conv with
  compression 0.5, 2 x 2 average pool, dropout), and **4 up-sampling blocks** (bilinear x2 up-sampling,
  concatenation with the encoder feature of that scale, BN, ReLU, 3 x 3 conv) back to full resolution;
* shared: the 2 head convolutions after the concatenation of the pathways (3 x 3 conv + BN + ReLU, then a
  1 x 1 conv to one channel), so the "3 separate convolution layers" are the first layer and the two head convs.

Dense units are MONAI's DenseNet layers (BN, ReLU, 1 x 1 bottleneck conv of ``bn_size · growth_rate`` channels,
BN, ReLU, 3 x 3 conv, dropout; Liu et al. 2018, Fig. 2, names BN-ReLU-Conv); growth rate 32, bottleneck factor 4 and 64
initial features are DenseNet-121's, which the paper extends ("123 layers") without giving the two extra layers,
so we keep DenseNet-121's block sizes. The input size must be a multiple of 16 (one pool + three transitions);
the bundle resizes slices to 160 x 160 (Liu et al. 2018, §3.1).

MONAI provides the dense block and the transition (``monai.networks.nets.densenet._DenseBlock`` /
``_Transition``), reused here; MONAI has no dual-pathway dense U-shape network, hence this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.densenet import _DenseBlock, _Transition

__all__ = [
    "CHANNEL_ORDER",
    "PATHWAY_A_CHANNELS",
    "PATHWAY_B_CHANNELS",
    "MultiKernelConv",
    "UpsamplingBlock",
    "DenseUPathway",
    "MSDCNN",
    "count_parameters",
]

#: input channel order of :class:`MSDCNN` (the bundle loads the maps in this order)
CHANNEL_ORDER: tuple[str, ...] = ("Tmax", "CBF", "CBV", "MTT")
#: channels of pathway A (Tmax + CBF + CBV) and pathway B (MTT), Liu et al. 2018, §2.2
PATHWAY_A_CHANNELS = 3
PATHWAY_B_CHANNELS = 1

# DenseNet-121 (Huang et al. 2017), the depth Liu et al. 2018 (§2.2) build on
DENSENET121_BLOCKS = (6, 12, 24, 16)
DENSENET121_GROWTH = 32
DENSENET121_INIT_FEATURES = 64
DENSENET121_BN_SIZE = 4
# Liu et al. 2018, §2.3: dropout of pathway A (Tmax+CBF+CBV) 0.01, of pathway B (MTT) 0.5
DROPOUT_A = 0.01
DROPOUT_B = 0.5

_ACT = ("relu", {"inplace": True})
_NORM = "batch"


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class MultiKernelConv(nn.Module):
    """Dual parallel kernels of the first layer ("multi-kernel", Liu et al. 2018, §2.2): ``k_1 × k_1`` and ``k_2 × k_2``
    convolutions of the same input, concatenated, then norm + activation.

    Args:
        spatial_dims: 2 for slices.
        in_channels: input channels.
        out_channels: output channels, split evenly between the kernels (must be divisible by their number).
        kernel_sizes: the parallel kernel sizes (odd; "same" padding).
        act / norm: MONAI factory names or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (3, 5),
        act: str | tuple = _ACT,
        norm: str | tuple = _NORM,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) < 1 or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {tuple(kernel_sizes)}.")
        if out_channels % len(kernel_sizes) != 0:
            raise ValueError(
                f"out_channels ({out_channels}) must be divisible by the number of kernels ({len(kernel_sizes)})."
            )
        conv = Conv[Conv.CONV, spatial_dims]
        width = out_channels // len(kernel_sizes)
        self.branches = nn.ModuleList(
            [conv(in_channels, width, kernel_size=k, padding=k // 2, bias=False) for k in kernel_sizes]
        )
        self.norm = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=out_channels)
        self.act = get_act_layer(name=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(torch.cat([branch(x) for branch in self.branches], dim=1)))


class UpsamplingBlock(nn.Module):
    """Bilinear x2 up-sampling, concatenation with the encoder feature, then norm → activation → 3 × 3 conv.

    Args:
        spatial_dims: 2 for slices (bilinear; trilinear for 3).
        in_channels: channels of the coarse input.
        skip_channels: channels of the encoder feature.
        out_channels: output channels.
        act / norm: MONAI factory names or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        act: str | tuple = _ACT,
        norm: str | tuple = _NORM,
    ) -> None:
        super().__init__()
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.layers = nn.Sequential(
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels + skip_channels),
            get_act_layer(name=act),
            Conv[Conv.CONV, spatial_dims](in_channels + skip_channels, out_channels, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.layers(torch.cat([x, skip], dim=1))


class DenseUPathway(nn.Module):
    """One U-shaped pathway of MS-DCNN: multi-kernel first layer, pool, 4 dense blocks with 3 transitions,
    4 up-sampling blocks back to the input resolution (see the module docstring for the layer assignment).

    Args:
        spatial_dims: 2 for slices.
        in_channels: maps this pathway sees.
        init_features: channels of the first layer.
        growth_rate: dense-unit growth rate ``k``.
        block_config: dense units per dense block (4 blocks).
        bn_size: bottleneck factor of the dense units.
        dropout_prob: dropout in dense units and after every transition (MONAI's ``Dropout`` factory: whole
            feature maps, ``nn.Dropout2d`` for 2-D, as in MONAI's DenseNet).
        compression: channel reduction of the transitions (DenseNet-BC's 0.5).
        up_features: output channels of the 4 up-sampling blocks, coarsest first; default a quarter of the
            encoder feature each block joins (at least ``growth_rate``).
        kernel_sizes: kernels of the multi-kernel first layer.
        act / norm: MONAI factory names or ``(name, kwargs)``.

    Shapes:
        ``(B, in_channels, H, W) → (B, out_channels, H, W)`` with ``H, W`` multiples of 16.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        init_features: int = DENSENET121_INIT_FEATURES,
        growth_rate: int = DENSENET121_GROWTH,
        block_config: Sequence[int] = DENSENET121_BLOCKS,
        bn_size: int = DENSENET121_BN_SIZE,
        dropout_prob: float = 0.0,
        compression: float = 0.5,
        up_features: Sequence[int] | None = None,
        kernel_sizes: Sequence[int] = (3, 5),
        act: str | tuple = _ACT,
        norm: str | tuple = _NORM,
    ) -> None:
        super().__init__()
        if len(block_config) != 4 or any(n < 1 for n in block_config):
            raise ValueError(f"block_config must hold 4 positive unit counts, got {tuple(block_config)}.")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob}.")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}.")
        self.stem = MultiKernelConv(spatial_dims, in_channels, init_features, kernel_sizes, act=act, norm=norm)
        dropout = Dropout[Dropout.DROPOUT, spatial_dims]

        # encoder level i = (the pool | transition i) followed by dense block i + 1; each halves the size
        skips = [init_features]
        channels = init_features
        levels = []
        for i, units in enumerate(block_config):
            level = nn.Sequential()
            if i == 0:
                level.add_module("pool", Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2))
            else:
                reduced = max(1, int(channels * compression))
                level.add_module("transition", _Transition(spatial_dims, channels, reduced, act=act, norm=norm))
                if dropout_prob > 0:
                    level.add_module("transition_dropout", dropout(dropout_prob))
                channels = reduced
            level.add_module(
                "dense", _DenseBlock(spatial_dims, units, channels, bn_size, growth_rate, dropout_prob, act, norm)
            )
            channels += units * growth_rate
            skips.append(channels)
            levels.append(level)
        self.encoder = nn.ModuleList(levels)
        skips.pop()  # the deepest dense block's output is the decoder's input, not a skip

        skips = skips[::-1]  # coarsest first: dense block 3, 2, 1, first layer
        if up_features is None:
            up_features = [max(growth_rate, s // 4) for s in skips]
        if len(up_features) != 4 or any(f < 1 for f in up_features):
            raise ValueError(f"up_features must hold 4 positive widths, got {tuple(up_features)}.")
        ups = []
        for skip, width in zip(skips, up_features, strict=True):
            ups.append(UpsamplingBlock(spatial_dims, channels, skip, width, act=act, norm=norm))
            channels = width
        self.up_blocks = nn.ModuleList(ups)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = [x]
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        for i, up in enumerate(self.up_blocks):
            x = up(x, skips[len(skips) - 2 - i])
        return x


class MSDCNN(nn.Module):
    """Multi-scale dual-pathway dense U-shape network (Liu et al. 2018, Fig. 1) on ``(B, 4, H, W)`` CT perfusion slices.

    Input channels in the order of :data:`CHANNEL_ORDER` (Tmax, CBF, CBV, MTT); pathway A sees the first
    ``PATHWAY_A_CHANNELS`` channels, pathway B the remaining ``PATHWAY_B_CHANNELS``. The output is the lesion
    probability (sigmoid, Liu et al. 2018, §2.2), ``(B, out_channels, H, W)``.

    Args:
        spatial_dims: 2 (slices; 3 works too but is not what the paper does).
        in_channels_a / in_channels_b: channels of pathway A / B (3 and 1 for Tmax+CBF+CBV / MTT).
        out_channels: output channels (1: lesion probability).
        init_features, growth_rate, block_config, bn_size, compression, kernel_sizes, up_features: see
            :class:`DenseUPathway` (DenseNet-121 sizes by default).
        dropout_a / dropout_b: dropout of pathway A / B (0.01 / 0.5, Liu et al. 2018, §2.3).
        head_features: channels of the first head convolution (default: the concatenated pathway width).
        act / norm: MONAI factory names or ``(name, kwargs)``.

    Raises:
        ValueError (in ``forward``): the input is not ``(B, in_channels_a + in_channels_b, H, W)`` with ``H`` and
            ``W`` multiples of 16.

    Example:
        >>> net = MSDCNN(init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))
        >>> net(torch.randn(2, 4, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels_a: int = PATHWAY_A_CHANNELS,
        in_channels_b: int = PATHWAY_B_CHANNELS,
        out_channels: int = 1,
        init_features: int = DENSENET121_INIT_FEATURES,
        growth_rate: int = DENSENET121_GROWTH,
        block_config: Sequence[int] = DENSENET121_BLOCKS,
        bn_size: int = DENSENET121_BN_SIZE,
        dropout_a: float = DROPOUT_A,
        dropout_b: float = DROPOUT_B,
        compression: float = 0.5,
        kernel_sizes: Sequence[int] = (3, 5),
        up_features: Sequence[int] | None = None,
        head_features: int | None = None,
        act: str | tuple = _ACT,
        norm: str | tuple = _NORM,
    ) -> None:
        super().__init__()
        if in_channels_a < 1 or in_channels_b < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels_a, in_channels_b and out_channels must be >= 1, got "
                f"{in_channels_a}, {in_channels_b}, {out_channels}."
            )
        self.in_channels_a = int(in_channels_a)
        self.in_channels_b = int(in_channels_b)
        self.in_channels = self.in_channels_a + self.in_channels_b
        self.spatial_dims = int(spatial_dims)
        self.divisor = 16  # one pool + three transitions, each halving the size
        shared = {
            "init_features": init_features,
            "growth_rate": growth_rate,
            "block_config": block_config,
            "bn_size": bn_size,
            "compression": compression,
            "up_features": up_features,
            "kernel_sizes": kernel_sizes,
            "act": act,
            "norm": norm,
        }
        self.pathway_a = DenseUPathway(spatial_dims, in_channels_a, dropout_prob=dropout_a, **shared)
        self.pathway_b = DenseUPathway(spatial_dims, in_channels_b, dropout_prob=dropout_b, **shared)
        joined = self.pathway_a.out_channels + self.pathway_b.out_channels
        head_features = joined if head_features is None else int(head_features)
        conv = Conv[Conv.CONV, spatial_dims]
        self.head = nn.Sequential(
            conv(joined, head_features, kernel_size=3, padding=1, bias=False),
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=head_features),
            get_act_layer(name=act),
            conv(head_features, out_channels, kernel_size=1),
        )

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pathway inputs ``(x_A, x_B)``: the first ``in_channels_a`` channels and the rest."""
        return x[:, : self.in_channels_a], x[:, self.in_channels_a :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion probability ``(B, out_channels, H, W)`` of slices ``(B, 4, H, W)`` (Tmax, CBF, CBV, MTT)."""
        bad_size = False
        for size in x.shape[2:]:
            if size % self.divisor != 0:
                bad_size = True
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels or bad_size:
            raise ValueError(
                "MSDCNN expects (B, "
                + str(self.in_channels)
                + ", H, W) slices (channels Tmax, CBF, CBV, MTT) with H and W multiples of "
                + str(self.divisor)
                + ", got shape "
                + str(list(x.shape))
            )
        x_a, x_b = self.split(x)
        joined = torch.cat([self.pathway_a(x_a), self.pathway_b(x_b)], dim=1)
        return torch.sigmoid(self.head(joined))
