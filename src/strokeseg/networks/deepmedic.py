"""DeepMedic v0.6.1: a normal-resolution and a subsampled pathway of valid 3D convolutions, fused by
"fully connected" convolutions (Pérez Malla et al., 2019, doi:10.3389/fninf.2019.00033, §2.2;
Kamnitsas et al., 2017, doi:10.1016/j.media.2016.10.004).

The layer list, residual connections, padding of the first FC layer, dropout and PReLU follow the public
DeepMedic v0.6.1 configuration. MONAI has no DeepMedic, hence this module; its layers are
:mod:`strokeseg.layers.deepmedic`.

The network has two calling conventions:

* ``net(segment, context)`` (training, DeepMedic's own): ``segment`` is the normal-resolution segment
  ``(B, C, *S)``, ``context`` the co-centred low-resolution segment ``(B, C, *L)`` built by
  :class:`strokeseg.transforms.segments.RandDeepMedicSegmentsd` (every ``subsample_factor``-th voxel around the
  same centre, :func:`context_positions`); the output is ``(B, classes, *(S - 16))``, DeepMedic's 25³ -> 9³.
* ``net(region)`` (inference and export): ``region`` is one normal-resolution tile that already holds the whole
  receptive field of both pathways; the network cuts the two segments itself and returns
  ``(B, classes, *(R - 2 * margin))`` (``margin`` = 25 for v0.6.1), where ``R - 2 * margin`` must be a multiple of
  ``subsample_factor``. Every output voxel of this mode depends only on voxels of the tile (the voxels that saw the
  first FC layer's padding are cropped), so tiles of any size give the same segmentation
  (:class:`strokeseg.inferers.tiles.ValidTileInferer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from strokeseg.layers.deepmedic import DeepMedicPathway, PreActivationConv, add_residual, deepmedic_init_

__all__ = ["DeepMedic", "freeze_pathway_layers", "context_positions"]


def context_positions(segment_size: int, pathway_shrink: int, factor: int) -> list[int]:
    """Offsets, relative to a segment's first voxel, of the voxels of its low-resolution context (one axis).

    The pathways turn a segment of ``segment_size`` voxels into ``P = segment_size - pathway_shrink`` outputs that
    start at ``pathway_shrink // 2``; the subsampled pathway must give ``m = ceil(P / factor)`` low-resolution
    outputs whose ``factor``-fold nearest-neighbour upsampling, centre-cropped to ``P`` (as
    :meth:`DeepMedic.forward` does), covers the same voxels: low-resolution output ``k`` stands for the voxel
    ``first - crop + factor * k + (factor - 1) // 2``, and its input reaches ``pathway_shrink // 2`` low-resolution
    voxels further on either side.

    Args:
        segment_size: normal-resolution segment size along the axis (e.g. 25).
        pathway_shrink: voxels a pathway removes (16 for eight 3³ valid convolutions).
        factor: subsampling factor (3).

    Returns:
        ``m + pathway_shrink`` offsets, ``factor`` apart (may be negative or beyond the segment).
    """
    half = pathway_shrink // 2
    outputs = segment_size - pathway_shrink
    if outputs < 1:
        raise ValueError(f"segment size {segment_size} is smaller than the receptive field {pathway_shrink + 1}")
    low = math.ceil(outputs / factor)
    crop = (factor * low - outputs) // 2
    first = half - crop + (factor - 1) // 2 - factor * half
    return [first + factor * k for k in range(low + pathway_shrink)]


class DeepMedic(nn.Module):
    """DeepMedic v0.6.1 (``deepMedic`` example configuration) for 2- or 3-D inputs.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (ISLES 2017: ADC, MTT, rCBF).
        out_channels: classes (2: background, lesion); the output is logits.
        features: channels of each pathway's valid convolutions.
        residual_layers: 1-indexed pathway layers whose output gets the input of the layer before.
        kernel_size: pathway kernel.
        subsample_factor: decimation of the second pathway's input (every ``f``-th voxel, no smoothing).
        fc_features: channels of the "fully connected" layers before the classification layer.
        fc_kernel_size: kernel of the first FC layer (padded, so the size is kept).
        fc_residual_layers: 1-indexed FC layers whose output gets the input of the FC layer before.
        fc_dropout: dropout on the input of each FC layer, classification layer last.
        fc_padding_mode: padding of the first FC layer (``torch.nn.Conv3d`` mode).
        conv_dropout: dropout in the pathways (DeepMedic's default is none).

    Raises:
        ValueError: inconsistent lengths (``fc_dropout`` must have ``len(fc_features) + 1`` rates).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 3,
        out_channels: int = 2,
        features: Sequence[int] = (30, 30, 40, 40, 40, 40, 50, 50),
        residual_layers: Sequence[int] = (4, 6, 8),
        kernel_size: int = 3,
        subsample_factor: int = 3,
        fc_features: Sequence[int] = (150, 150),
        fc_kernel_size: int = 3,
        fc_residual_layers: Sequence[int] = (2,),
        fc_dropout: Sequence[float] = (0.0, 0.5, 0.5),
        fc_padding_mode: str = "replicate",
        conv_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if subsample_factor < 1:
            raise ValueError(f"subsample_factor must be >= 1, got {subsample_factor}")
        fc_features = [int(f) for f in fc_features]
        if len(fc_dropout) != len(fc_features) + 1:
            raise ValueError(
                f"fc_dropout needs {len(fc_features) + 1} rates (one per FC layer and the classification layer), "
                f"got {list(fc_dropout)}"
            )
        for layer in fc_residual_layers:
            if not 2 <= int(layer) <= len(fc_features) + 1:
                raise ValueError(f"fc_residual_layers: layer {layer} is outside 2..{len(fc_features) + 1}")
        self.spatial_dims = spatial_dims
        self.factor = int(subsample_factor)
        self.normal = DeepMedicPathway(spatial_dims, in_channels, features, residual_layers, kernel_size, conv_dropout)
        self.subsampled = DeepMedicPathway(
            spatial_dims, in_channels, features, residual_layers, kernel_size, conv_dropout
        )
        self.pathway_shrink = self.normal.shrink
        fc_layers = []
        channels = 2 * self.normal.out_channels
        widths = fc_features + [int(out_channels)]
        for i, width in enumerate(widths):
            first = i == 0 and fc_kernel_size > 1
            fc_layers.append(
                PreActivationConv(
                    spatial_dims,
                    channels,
                    width,
                    kernel_size=fc_kernel_size if i == 0 else 1,
                    dropout=float(fc_dropout[i]),
                    padding_mode=fc_padding_mode if first else "valid",
                    final_bias=i == len(widths) - 1,
                )
            )
            channels = width
        self.fc = nn.ModuleList(fc_layers)
        residual = {int(r) for r in fc_residual_layers}
        self.fc_residual = [i + 1 in residual for i in range(len(widths))]
        # single-tile geometry (module docstring): the voxels next to the tile border saw the padding of FC 1
        self.fc_crop = fc_kernel_size // 2
        half, f, c = self.pathway_shrink // 2, self.factor, self.fc_crop
        extra_low = math.ceil(2 * c / f)  # low-resolution outputs beyond O / f
        self.low_crop = (f * extra_low - 2 * c) // 2
        left = c + self.low_crop - (f - 1) // 2 + f * half
        right = -c - self.low_crop + (f - 1) // 2 + f * (extra_low - 1 + half) + 1
        self.margin = max(c + half, left, right)
        self.normal_start = self.margin - c - half
        self.low_start = self.margin - left
        self.low_extra = extra_low + self.pathway_shrink
        self.output_multiple = self.factor  # region outputs must be a multiple of it (ValidTileInferer reads it)
        deepmedic_init_(self)

    def _pathways(self, segment: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Both pathways and the FC layers; the output has the normal pathway's size."""
        normal = self.normal(segment)
        low = self.subsampled(context)
        size = list(normal.shape[2:])
        for d in range(self.spatial_dims):
            low = low.repeat_interleave(self.factor, dim=2 + d)
            if low.shape[2 + d] < size[d]:
                raise ValueError(
                    f"context of spatial shape {list(context.shape[2:])} is too small for a segment of spatial "
                    f"shape {list(segment.shape[2:])} (subsample factor {self.factor})"
                )
            low = low.narrow(2 + d, (low.shape[2 + d] - size[d]) // 2, size[d])
        x = torch.cat([normal, low], dim=1)
        previous_input = x
        for i, layer in enumerate(self.fc):
            out = layer(x)
            if self.fc_residual[i]:
                out = add_residual(out, previous_input)
            previous_input = x
            x = out
        return x

    def output_size(self, region_size: int) -> int:
        """Output size of ``net(region)`` along an axis of ``region_size`` voxels."""
        return region_size - 2 * self.margin

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of a segment and its context, or of one self-contained region (module docstring).

        Args:
            x: ``(B, C, *S)`` normal-resolution segment, or region when ``context`` is ``None``.
            context: ``(B, C, *L)`` low-resolution context of the segment.

        Raises:
            ValueError: a region whose output size (``R - 2 * margin``) is not a positive multiple of the
                subsample factor, or a context too small for its segment.
        """
        if context is not None:
            return self._pathways(x, context)
        sizes = list(x.shape[2:])
        segment = x
        context = x
        for d in range(self.spatial_dims):
            out = sizes[d] - 2 * self.margin
            if out < 1 or out % self.factor != 0:
                raise ValueError(
                    f"DeepMedic region of spatial shape {sizes}: every size must be 2 * {self.margin} plus a positive "
                    f"multiple of {self.factor}"
                )
            segment = segment.narrow(2 + d, self.normal_start, out + 2 * (self.fc_crop + self.pathway_shrink // 2))
            count = out // self.factor + self.low_extra
            index = torch.arange(count, device=x.device) * self.factor + self.low_start
            context = context.index_select(2 + d, index)
        logits = self._pathways(segment, context)
        if self.fc_crop > 0:
            for d in range(self.spatial_dims):
                logits = logits.narrow(2 + d, self.fc_crop, logits.shape[2 + d] - 2 * self.fc_crop)
        return logits


def freeze_pathway_layers(network: DeepMedic, layers: int | None) -> DeepMedic:
    """Freeze the first ``layers`` convolutional layers of both pathways (Pérez Malla et al. 2019, §2.3.4-2.3.5;
    ``-1`` or ``None``: all of them, 0: none) and return the network, so a config can wrap its network id in it.

    Frozen parameters get ``requires_grad = False``; build the optimiser from the trainable parameters only.

    Raises:
        ValueError: ``layers`` larger than a pathway.
    """
    count = len(network.normal.layers)
    layers = count if layers is None or int(layers) < 0 else int(layers)
    if layers > count:
        raise ValueError(f"cannot freeze {layers} layers of a pathway that has {count}")
    for pathway in (network.normal, network.subsampled):
        for i, layer in enumerate(pathway.layers):
            for parameter in layer.parameters():
                parameter.requires_grad_(i >= layers)
    return network
