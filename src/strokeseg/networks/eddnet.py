"""EDD Net: an ensemble of DeconvNets with a fusion layer and a refinement head (Chen et al. 2017, §3.1, Fig. 3).

Each branch is a DeconvNet (an encoder of 3 x 3 convolutions and max-pools that record their pool masks,
and a mirrored decoder of 3 x 3 deconvolutions and max-unpools that reuse those masks). The branches
have independent weights and all see the same image; their logits are summed, passed through a ReLU and
a 1 x 1 convolution (the "naive ensemble"), and a refinement head convolves the concatenation of the
input image and that fused map. The layer widths follow the authors' Caffe file ``EDD/net.prototxt``
(part of their public code).

MONAI has neither DeconvNet nor the pool-mask unpooling it needs, hence this module; its blocks are
MONAI ``Convolution`` units and :mod:`strokeseg.layers.pooling`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Conv

from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.layers.pooling import MaxPoolWithIndices, MaxUnpoolWithIndices

__all__ = ["EDDNet", "DeconvNetBranch", "caffe_xavier_init_", "INFERENCE_HEADS"]

# Caffe "BatchNorm" without a following "Scale" layer has no learnable scale or shift (the authors' EDD/net.prototxt).
_NORM = ("batch", {"affine": False})
_DECODERS = ("unpool", "bilinear")
# Outputs an EDD Net can return at inference (Chen et al. 2017, Table 4, compares branch 1, branch 2, fused and
# refined of one trained network): "final" is the network's prediction; "branch<k>" (1-based) a branch's logits;
# "fused" the naive ensemble; "refined" the refinement head; "all" every output stacked as in deep supervision.
INFERENCE_HEADS = ("final", "fused", "refined", "all")
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def caffe_xavier_init_(module: nn.Module) -> None:
    """Initialise every convolution, transposed convolution and linear layer as Caffe's ``xavier`` filler does.

    Caffe's default ``xavier`` draws weights from ``U(-a, a)`` with ``a = sqrt(3 / fan_in)``, where ``fan_in`` is
    ``weight.numel() / weight.shape[0]``: ``in * k * k`` for a convolution, ``out * k * k`` for a deconvolution
    (Caffe stores its weights as ``(in, out, k, k)``, like ``torch.nn.ConvTranspose2d``) and ``in`` for an inner
    product. That is exactly ``torch.nn.init.kaiming_uniform_(w, nonlinearity="linear")`` with torch's
    ``fan_in``, which is reused here rather than re-derived. Biases are set to zero (the prototxt's
    ``bias_filler: constant 0``). Glorot's original rule averages fan-in and fan-out; Caffe's does not.

    Args:
        module: the network; its sub-modules are initialised in place.
    """
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.kaiming_uniform_(layer.weight, mode="fan_in", nonlinearity="linear")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _conv_stack(spatial_dims: int, in_channels: int, widths: Sequence[int], transposed: bool) -> nn.Sequential:
    """3 x 3, stride 1, pad 1 (de)convolutions, each followed by BatchNorm (no affine) and ReLU."""
    layers = nn.Sequential()
    for i, width in enumerate(widths):
        layers.add_module(
            f"{'deconv' if transposed else 'conv'}_{i}",
            Convolution(
                spatial_dims,
                in_channels,
                width,
                strides=1,
                kernel_size=3,
                padding=1,
                act="relu",
                norm=_NORM,
                is_transposed=transposed,
            ),
        )
        in_channels = width
    return layers


class DeconvNetBranch(nn.Module):
    """One DeconvNet of the EDD Net: pool-mask encoder, mirrored (de)convolutional decoder, logits out.

    Stages (widths ``f0, f1, f2 = features``; every layer 3 x 3 / stride 1 / pad 1 + BN + ReLU unless noted),
    after the authors' ``EDD/net.prototxt``: enc 1 ``f0, f0`` -> max-pool 2; enc 2 ``f1`` x 4 -> max-pool 2;
    enc 3 ``f2`` x 5; dec 1 ``f2`` x 4, ``f1`` -> unpool (enc-2 mask); dec 2 ``f1`` x 3, ``f0`` -> unpool
    (enc-1 mask); dec 3 ``f0``, then ``out_channels`` without BN/ReLU. Decoder layers are transposed
    convolutions, as Caffe's "Deconvolution" layers were; at stride 1 they span the same functions as
    convolutions, and their weight layout lets Caffe weights be copied in unchanged.

    Args:
        spatial_dims: number of spatial dimensions (2 in the paper; 3 works the same way).
        in_channels: number of input channels.
        out_channels: number of output classes (logit channels).
        features: widths ``(f0, f1, f2)`` of the three resolution levels.
        decoder: ``"unpool"`` (max-unpooling with the encoder's pool masks, the paper's DeconvNet) or
            ``"bilinear"`` (bilinear / trilinear ×2 upsampling, the comparison of Chen et al. 2017, §5.1).

    Raises:
        ValueError: on an unknown ``decoder`` or a ``features`` that is not three positive ints.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (32, 64, 128),
        decoder: str = "unpool",
    ) -> None:
        super().__init__()
        if decoder not in _DECODERS:
            raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}.")
        if len(features) != 3 or any(int(f) < 1 for f in features):
            raise ValueError(f"features must be three positive widths (f0, f1, f2), got {tuple(features)!r}.")
        f0, f1, f2 = (int(f) for f in features)
        self.use_unpool = decoder == "unpool"
        self.interp_mode = "bilinear" if spatial_dims == 2 else ("trilinear" if spatial_dims == 3 else "linear")

        self.enc1 = _conv_stack(spatial_dims, in_channels, [f0] * 2, transposed=False)
        self.pool1 = MaxPoolWithIndices(spatial_dims, kernel_size=2, stride=2)
        self.enc2 = _conv_stack(spatial_dims, f0, [f1] * 4, transposed=False)
        self.pool2 = MaxPoolWithIndices(spatial_dims, kernel_size=2, stride=2)
        self.enc3 = _conv_stack(spatial_dims, f1, [f2] * 5, transposed=False)
        self.dec1 = _conv_stack(spatial_dims, f2, [f2] * 4 + [f1], transposed=True)
        self.dec2 = _conv_stack(spatial_dims, f1, [f1] * 3 + [f0], transposed=True)
        self.unpool = MaxUnpoolWithIndices(spatial_dims, kernel_size=2, stride=2)  # stateless: serves both levels
        self.dec3 = _conv_stack(spatial_dims, f0, [f0], transposed=True)
        self.logits = Conv[Conv.CONVTRANS, spatial_dims](f0, out_channels, kernel_size=3, stride=1, padding=1)

    def _upsample(self, x: torch.Tensor, indices: torch.Tensor, size: list[int]) -> torch.Tensor:
        if self.use_unpool:
            return self.unpool(x, indices, size)
        return F.interpolate(x, size=size, mode=self.interp_mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Branch logits ``(B, out_channels, H, W[, D])`` for an input ``(B, in_channels, H, W[, D])``."""
        e1 = self.enc1(x)
        p1, idx1 = self.pool1(e1)
        e2 = self.enc2(p1)
        p2, idx2 = self.pool2(e2)
        d = self.dec1(self.enc3(p2))
        d = self._upsample(d, idx2, e2.shape[2:])
        d = self.dec2(d)
        d = self._upsample(d, idx1, e1.shape[2:])
        return self.logits(self.dec3(d))


class EDDNet(nn.Module):
    """Ensemble of DeconvNets with fusion and refinement: the lesion segmenter of Chen et al. 2017 (Fig. 3, Eqs. 1-3).

    The network is fully convolutional; it is trained on 64 x 64 patches and applied to whole slices whose
    sides are multiples of 4 (two 2 x 2 poolings). Ablations of Chen et al. 2017 (Tables 2-4) are argument choices:

    - single DeconvNet: ``num_branches=1, fusion=False, refinement=False``;
    - naive ensemble: ``refinement=False``;
    - N branches: ``num_branches=N`` (the paper uses 2);
    - bilinear decoder instead of unpooling: ``decoder="bilinear"``.

    Output. In eval mode, or when ``deep_supervision`` is off, the final logits ``(B, out_channels, H, W)``:
    the refined map, else the fused map, else the single branch. In training mode with ``deep_supervision``
    on, a tensor ``(B, K, out_channels, H, W)`` stacked on dim 1 holding the final prediction first, then the
    auxiliary outputs that feed Eq. 3 (branch logits in branch order, then the fused map when it is not
    already the final prediction) -- the convention of MONAI's ``DynUNet``, so that
    ``torch.unbind(out, dim=1)`` yields the maps and :class:`strokeseg.losses.DeepSupervisionCrossEntropy`
    sums their losses. ``K`` is :attr:`num_outputs`; it is 4 for the default network.

    Heads at inference (``inference_head``; Table 4 of Chen et al. 2017 scores the four outputs of one trained
    network): ``"final"`` (default; what the export returns), ``"branch1"`` … ``"branch<N>"``, ``"fused"``,
    ``"refined"``, or ``"all"`` (the stacked ``(B, K, out_channels, H, W)`` tensor of deep supervision, also in eval
    mode). The choice selects an output only; it changes no weight, so one trained model is scored head by head.

    Weights follow Caffe's ``xavier`` filler (see :func:`caffe_xavier_init_`), BatchNorm has no scale/shift.
    The default network has about 3.2 M parameters (checked in ``tests/networks/test_eddnet.py``).

    Args:
        in_channels: input channels (1: DWI).
        out_channels: classes (2: background, lesion).
        num_branches: number of DeconvNet branches, each with its own weights (Chen et al. 2017, §3.4: N = 2).
        fusion: sum the branch logits, ReLU, 1 x 1 conv (the naive ensemble ⊕). Required when
            ``num_branches > 1``.
        refinement: add the refinement head r(x, h(x)): concat(input, ensemble logits) -> conv f0 -> conv f0
            -> conv ``out_channels`` (3 x 3, BN + ReLU except the last).
        decoder: ``"unpool"`` (pool-mask max-unpooling, the paper's) or ``"bilinear"``.
        deep_supervision: in training mode, return all the outputs stacked (see above).
        features: widths ``(f0, f1, f2)`` of the three resolution levels.
        spatial_dims: 2 (the paper) or 3.
        inference_head: output returned when not training with deep supervision (see above).

    Raises:
        ValueError: on an inconsistent configuration (``num_branches < 1``, several branches without fusion,
            unknown decoder, bad ``features``, a head the configuration lacks); at call time, on an input whose
            spatial sizes are not multiples of 4 or whose number of dimensions is wrong.

    Example::

        net = EDDNet(deep_supervision=True).train()
        out = net(torch.randn(8, 1, 64, 64))        # (8, 4, 2, 64, 64): refined, branch 1, branch 2, fused
        net.eval()
        logits = net(torch.randn(1, 1, 128, 128))   # (1, 2, 128, 128)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        num_branches: int = 2,
        fusion: BoolKnob = True,
        refinement: BoolKnob = True,
        decoder: str = "unpool",
        deep_supervision: bool = False,
        features: Sequence[int] = (32, 64, 128),
        spatial_dims: int = 2,
        inference_head: str = "final",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if num_branches < 1:
            raise ValueError(f"num_branches must be >= 1, got {num_branches!r}.")
        if num_branches > 1 and not fusion:
            raise ValueError(
                f"num_branches={num_branches} needs fusion=True: without the fusion layer there is no single "
                "ensemble output to refine or return."
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.use_fusion = as_bool(fusion, "fusion")
        self.use_refinement = as_bool(refinement, "refinement")
        self.deep_supervision = bool(deep_supervision)
        self.branches = nn.ModuleList(
            DeconvNetBranch(spatial_dims, in_channels, out_channels, features=features, decoder=decoder)
            for _ in range(num_branches)
        )
        conv = Conv[Conv.CONV, spatial_dims]
        # modules that a configuration leaves out are nn.Identity, so that TorchScript sees one fixed structure
        self.fusion: nn.Module = (
            nn.Sequential(Act[Act.RELU](), conv(out_channels, out_channels, kernel_size=1)) if fusion else nn.Identity()
        )
        f0 = int(features[0])
        self.refinement: nn.Module = (
            nn.Sequential(
                _conv_stack(spatial_dims, in_channels + out_channels, [f0] * 2, transposed=False),
                conv(f0, out_channels, kernel_size=3, stride=1, padding=1),
            )
            if refinement
            else nn.Identity()
        )
        self.num_outputs = 1 + (num_branches if (fusion or refinement) else 0) + int(fusion and refinement)
        self.inference_head = str(inference_head)
        self.head_index = self._head_index(self.inference_head, num_branches)
        caffe_xavier_init_(self)

    def _head_index(self, head: str, num_branches: int) -> int:
        """Index of ``head``: -1 final, -2 all, 0 … N-1 a branch, N the fused map.

        Raises:
            ValueError: unknown head, or one this configuration does not have.
        """
        branches = [f"branch{k + 1}" for k in range(num_branches)]
        known = ("final", *branches, "fused", "refined", "all")
        if head not in known:
            raise ValueError(f"inference_head must be one of {known}, got {head!r}.")
        if head == "final" or (head == "refined" and self.use_refinement):
            return -1
        if head == "all":
            return -2
        if head == "fused" and self.use_fusion:
            return -1 if not self.use_refinement else num_branches
        if head in branches:
            return branches.index(head)
        raise ValueError(
            f"inference_head={head!r}: this EDD Net has no such output (fusion={self.use_fusion}, "
            f"refinement={self.use_refinement})."
        )

    def set_inference_head(self, head: str) -> EDDNet:
        """Select the output returned at inference (see the class docstring); returns ``self``."""
        self.head_index = self._head_index(str(head), len(self.branches))
        self.inference_head = str(head)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: image batch ``(B, in_channels, H, W[, D])``, each spatial size a multiple of 4.

        Returns:
            ``(B, out_channels, H, W[, D])`` final logits, or in training mode with deep supervision
            ``(B, K, out_channels, H, W[, D])`` (final first, then branches, then fused).

        Raises:
            ValueError: on a wrong number of dimensions or a spatial size that is not a multiple of 4.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "EDDNet expects a (B, C, spatial...) input with "
                + str(self.spatial_dims)
                + " spatial dimensions, got shape "
                + str(list(x.shape))
                + "."
            )
        for size in x.shape[2:]:
            if size % 4 != 0:
                raise ValueError(
                    "EDDNet needs spatial sizes that are multiples of 4 (two 2x2 poolings), got input shape "
                    + str(list(x.shape))
                    + "; pad or crop the image (e.g. monai.transforms.DivisiblePad(k=4))."
                )
        branch_logits: list[torch.Tensor] = []
        for branch in self.branches:
            branch_logits.append(branch(x))
        ensemble = branch_logits[0]
        if self.use_fusion:
            ensemble = self.fusion(torch.stack(branch_logits, dim=0).sum(dim=0))
        final = ensemble
        if self.use_refinement:
            final = self.refinement(torch.cat([x, ensemble], dim=1))
        all_outputs = self.training and self.deep_supervision
        if not all_outputs:
            if self.head_index == -1:
                return final
            if self.head_index >= 0:
                return ensemble if self.head_index == len(branch_logits) else branch_logits[self.head_index]
        outputs: list[torch.Tensor] = [final]
        if self.use_fusion or self.use_refinement:
            outputs.extend(branch_logits)
        if self.use_fusion and self.use_refinement:
            outputs.append(ensemble)
        return torch.stack(outputs, dim=1)
