"""CT perfusion → DWI generator, LSGAN discriminator and maxout segmentator (Pengbo Liu 2018).

Pengbo Liu, "Stroke Lesion Segmentation with 2D Novel CNN Pipeline and Novel Loss Function",
Brainlesion (BrainLes 2018), LNCS 11383, doi:10.1007/978-3-030-11723-8_25 (P. Liu 2018). Three 2-D networks:

* generator G: a U-Net (Ronneberger et al. 2015, doi:10.1007/978-3-319-24574-4_28) from the five CT channels
  (MTT, Tmax, CBV, CBF, PWI_max) to one synthetic DWI channel;
* discriminator D: five ``5 × 5`` stride-2 unpadded convolutions with GroupNorm + ReLU and an average pool
  to one least-squares score (no sigmoid, LSGAN: Mao et al. 2017, doi:10.1109/ICCV.2017.304);
* segmentator S: the same U-Net on the generated DWI with a maxout head (:mod:`strokeseg.layers.maxout`).

Inference is ``S(G(x))``; :class:`GeneratorSegmentator` composes the two so that one TorchScript file holds
the deployable model (5 channels in, 2 class logits out).

Normalisation is GroupNorm with a fixed 16 channels per group (P. Liu 2018, §3.1: "the group number can change
across layers"; Wu & He 2018, doi:10.1007/978-3-030-01261-8_1), which neither MONAI's ``BasicUNet`` nor its
``Norm`` factory can express (both fix ``num_groups``); hence the small U-Net written here from MONAI's
``Conv`` / ``Pool`` / ``Norm`` factories. ``norm="batch"`` gives the paper's stage-3 network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from strokeseg.layers.maxout import MaxoutHead

__all__ = [
    "CHANNELS_PER_GROUP",
    "channel_group_norm",
    "norm_layer",
    "TwoConv",
    "UNetDown",
    "UNetUp",
    "GroupNormUNet",
    "LSGANDiscriminator",
    "GeneratorSegmentator",
]

CHANNELS_PER_GROUP = 16  # P. Liu 2018, §3.1
NORMS = ("group", "batch", "instance", "none")


def channel_group_norm(channels: int, channels_per_group: int = CHANNELS_PER_GROUP) -> nn.GroupNorm:
    """GroupNorm with about ``channels_per_group`` channels per group.

    The group count is the largest divisor of ``channels`` not above ``channels // channels_per_group``
    (at least 1), so 64 channels give 4 groups of 16 and 8 channels one group of 8.
    """
    if channels < 1 or channels_per_group < 1:
        raise ValueError(f"channels and channels_per_group must be >= 1, got {channels}, {channels_per_group}.")
    groups = max(1, channels // channels_per_group)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def norm_layer(norm: str, spatial_dims: int, channels: int, channels_per_group: int = CHANNELS_PER_GROUP) -> nn.Module:
    """Normalisation after a convolution: ``group`` (channels per group), ``batch``, ``instance`` or ``none``."""
    if norm == "group":
        return channel_group_norm(channels, channels_per_group)
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if norm == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}.")


def _check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return int(spatial_dims)


class TwoConv(nn.Sequential):
    """Two ``3 × 3`` convolutions (zero-padded), each followed by the normalisation and ReLU."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, channels_per_group: int
    ) -> None:
        conv = Conv[Conv.CONV, spatial_dims]
        super().__init__(
            conv(in_channels, out_channels, kernel_size=3, padding=1),
            norm_layer(norm, spatial_dims, out_channels, channels_per_group),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, kernel_size=3, padding=1),
            norm_layer(norm, spatial_dims, out_channels, channels_per_group),
            nn.ReLU(inplace=True),
        )


class UNetDown(nn.Sequential):
    """``2 × 2`` max-pool, then :class:`TwoConv`."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, channels_per_group: int
    ) -> None:
        super().__init__(
            Pool[Pool.MAX, spatial_dims](kernel_size=2),
            TwoConv(spatial_dims, in_channels, out_channels, norm, channels_per_group),
        )


class UNetUp(nn.Module):
    """``2 × 2`` transposed convolution ("up-conv"), concatenation with the skip, then :class:`TwoConv`."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: str,
        channels_per_group: int,
    ) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)
        self.convs = TwoConv(spatial_dims, out_channels + skip_channels, out_channels, norm, channels_per_group)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # an odd-sized skip (input not divisible by 2^depth): pad the upsampled map to it
        pads: list[int] = []
        for d in range(skip.dim() - 1, 1, -1):
            pads += [0, skip.shape[d] - x.shape[d]]
        if any(p != 0 for p in pads):
            x = F.pad(x, pads)
        return self.convs(torch.cat([skip, x], dim=1))


class GroupNormUNet(nn.Module):
    """U-Net with GroupNorm (16 channels per group) and an optional maxout head (P. Liu 2018, §2.2, Fig. 4).

    Encoder: :class:`TwoConv` then ``len(features) - 1`` × (max-pool + :class:`TwoConv`); decoder: up-conv,
    skip concatenation and :class:`TwoConv` back to ``features[0]``; head: a ``1 × 1`` convolution to
    ``out_channels``, or with ``maxout_pieces`` a :class:`~strokeseg.layers.maxout.MaxoutHead`
    (``len(maxout_pieces)`` classes).

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: input channels (5 CT channels for G, 1 DWI channel for S).
        out_channels: output channels without a maxout head (1 for G, 2 for a plain segmentator).
        features: channels per resolution level, finest first.
        norm: ``group`` (the paper's final network), ``batch`` (stage 3), ``instance`` or ``none``.
        channels_per_group: GroupNorm channels per group.
        maxout_pieces: pieces per class of a maxout head, e.g. ``(3, 1)``; ``None`` for a plain head.

    Raises:
        ValueError: invalid ``spatial_dims``, ``features``, ``norm`` or ``maxout_pieces``, or an
            ``out_channels`` that disagrees with ``maxout_pieces``.

    Example:
        >>> net = GroupNormUNet(2, in_channels=1, features=(16, 32, 64), maxout_pieces=(3, 1))
        >>> net(torch.randn(2, 1, 64, 64)).shape
        torch.Size([2, 2, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 5,
        out_channels: int = 1,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str = "group",
        channels_per_group: int = CHANNELS_PER_GROUP,
        maxout_pieces: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        spatial_dims = _check_spatial_dims(spatial_dims)
        features = [int(f) for f in features]
        if len(features) < 2 or any(f < 1 for f in features):
            raise ValueError(f"features needs at least two positive channel counts, got {features!r}.")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}.")
        if maxout_pieces is not None and out_channels not in (len(maxout_pieces), 1):
            raise ValueError(
                f"out_channels={out_channels} disagrees with maxout_pieces={tuple(maxout_pieces)} "
                f"({len(maxout_pieces)} classes)."
            )
        self.divisor = 2 ** (len(features) - 1)
        self.first = TwoConv(spatial_dims, in_channels, features[0], norm, channels_per_group)
        self.downs = nn.ModuleList(
            UNetDown(spatial_dims, features[i], features[i + 1], norm, channels_per_group)
            for i in range(len(features) - 1)
        )
        self.ups = nn.ModuleList(
            UNetUp(spatial_dims, features[i + 1], features[i], features[i], norm, channels_per_group)
            for i in reversed(range(len(features) - 1))
        )
        self.head: nn.Module
        if maxout_pieces is None:
            self.head = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)
            self.out_channels = int(out_channels)
        else:
            self.head = MaxoutHead(spatial_dims, features[0], maxout_pieces)
            self.out_channels = len(maxout_pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        x = self.first(x)
        skips: list[torch.Tensor] = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        depth = len(skips)
        for i, up in enumerate(self.ups):
            x = up(x, skips[depth - 2 - i])
        return self.head(x)


class LSGANDiscriminator(nn.Module):
    """Real-vs-generated DWI critic: ``len(features) + 1`` unpadded ``5 × 5`` stride-2 convolutions, mean score.

    The first ``len(features)`` convolutions are each followed by the normalisation and ReLU (P. Liu 2018, §2.2);
    the last one maps to a single score channel without normalisation or activation, and an average pool over
    the score map gives one least-squares score per image (no sigmoid: LSGAN). With the default four feature
    widths there are five convolutions, as in the paper; the smallest accepted input side is
    :attr:`min_input_size` (125 for five layers).

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: channels of the judged image (1: DWI).
        features: output channels of the normalised convolutions.
        kernel_size: 5 (P. Liu 2018, §2.2).
        stride: 2 (P. Liu 2018, §2.2).
        norm: ``group``, ``batch``, ``instance`` or ``none``.
        channels_per_group: GroupNorm channels per group.

    Raises:
        ValueError: in ``forward``, an input side below :attr:`min_input_size`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        features: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 5,
        stride: int = 2,
        norm: str = "group",
        channels_per_group: int = CHANNELS_PER_GROUP,
    ) -> None:
        super().__init__()
        spatial_dims = _check_spatial_dims(spatial_dims)
        features = [int(f) for f in features]
        if any(f < 1 for f in features):
            raise ValueError(f"features must be positive channel counts, got {features!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for f in features:
            layers += [
                conv(channels, f, kernel_size=kernel_size, stride=stride, padding=0),
                norm_layer(norm, spatial_dims, f, channels_per_group),
                nn.ReLU(inplace=True),
            ]
            channels = f
        layers.append(conv(channels, 1, kernel_size=kernel_size, stride=stride, padding=0))
        self.layers = nn.Sequential(*layers)
        size = 1
        for _ in range(len(features) + 1):
            size = (size - 1) * stride + kernel_size
        self.min_input_size: int = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → ``(B, 1)`` scores (real ≈ 1, generated ≈ 0 after training)."""
        for side in x.shape[2:]:
            if side < self.min_input_size:
                raise ValueError(
                    f"LSGANDiscriminator needs every spatial side >= {self.min_input_size}, got shape {list(x.shape)}."
                )
        scores = self.layers(x)
        return scores.flatten(2).mean(dim=2)


class GeneratorSegmentator(nn.Module):
    """Deployable composition ``S(G(x))``: CT channels → synthetic DWI → class logits (P. Liu 2018, Fig. 1).

    Args:
        generator: network ``(B, 5, H, W) → (B, 1, H, W)``; ``None`` for the paper's stages 1-2 (a U-Net on the
            inputs directly, no GAN): the composition is then ``S(x)`` and keeps the same state-dict names.
        segmentator: network ``(B, 1, H, W) → (B, 2, H, W)``.

    Example:
        >>> g = GroupNormUNet(2, 5, 1, features=(8, 16))
        >>> s = GroupNormUNet(2, 1, 2, features=(8, 16), maxout_pieces=(3, 1))
        >>> GeneratorSegmentator(g, s)(torch.randn(1, 5, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(self, generator: nn.Module | None, segmentator: nn.Module) -> None:
        super().__init__()
        self.generator = nn.Identity() if generator is None else generator
        self.segmentator = segmentator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial)`` → ``(B, classes, *spatial)`` logits."""
        return self.segmentator(self.generator(x))

    @torch.jit.export
    def synthesize(self, x: torch.Tensor) -> torch.Tensor:
        """The generated DWI ``G(x)`` alone, ``(B, 1, *spatial)`` (the input itself without a generator)."""
        return self.generator(x)
