"""MUSCLE Net: a multi-scale candidate classifier that removes EDD Net false positives (Chen et al. 2017, §3.2, Fig. 5).

A mini VGG: four 3 x 3 convolutions with one 2 x 2 max-pool, then three fully connected layers, applied to
a ``(4, 16, 16)`` stack per candidate lesion (three DWI scales resized to 16 x 16 plus the EDD probability
patch). Widths follow the authors' Caffe file ``MUSCLE/net.prototxt`` (part of their public code). MONAI's
``Classifier``/``Regressor`` use strided residual units and a single output layer, not this layout, so the
network is assembled here from MONAI ``Convolution`` blocks and torch ``Linear`` layers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Pool

from strokeseg.networks.eddnet import caffe_xavier_init_

__all__ = ["MuscleNet"]


class MuscleNet(nn.Module):
    """Classify a candidate lesion patch stack as lesion or false positive.

    Layers (authors' code): conv 32, conv 32 (3 x 3, pad 1, ReLU) -> max-pool 2 -> conv 64, conv 64 -> FC 4096 -> 128
    (ReLU, dropout) -> FC 128 -> 64 (ReLU, dropout) -> FC 64 -> ``out_channels``. No BatchNorm. About 0.6 M
    parameters with the defaults. Weights follow Caffe's ``xavier`` filler (:func:`caffe_xavier_init_`).

    Args:
        in_channels: channels of the patch stack (4: DWI at 3 scales + EDD probability).
        out_channels: classes (2: false positive, lesion); the output is logits.
        dropout: dropout ratio after the first two fully connected layers (0.5 in the authors' code).
        patch_size: side of the square input patch (16 in the authors' code); must be even.

    Raises:
        ValueError: on an odd or non-positive ``patch_size`` or a dropout outside ``[0, 1)``; at call time,
            on an input that is not ``(B, in_channels, patch_size, patch_size)``.

    Example::

        net = MuscleNet().eval()
        p_lesion = net(torch.randn(10, 4, 16, 16)).softmax(dim=1)[:, 1]   # (10,)
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 2, dropout: float = 0.5, patch_size: int = 16) -> None:
        super().__init__()
        if patch_size < 2 or patch_size % 2 != 0:
            raise ValueError(f"patch_size must be a positive even number, got {patch_size!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.in_channels = int(in_channels)
        self.patch_size = int(patch_size)

        def conv(cin: int, cout: int) -> Convolution:
            return Convolution(2, cin, cout, strides=1, kernel_size=3, padding=1, act="relu", norm=None)

        self.features = nn.Sequential(
            conv(in_channels, 32),
            conv(32, 32),
            Pool[Pool.MAX, 2](kernel_size=2, stride=2),
            conv(32, 64),
            conv(64, 64),
        )
        flat = 64 * (patch_size // 2) ** 2  # 4096 for 16 x 16 patches, as in the authors' ip1 layer
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(flat, 128),
            Act[Act.RELU](),
            nn.Dropout(dropout),
            nn.Linear(128, 64),
            Act[Act.RELU](),
            nn.Dropout(dropout),
            nn.Linear(64, out_channels),
        )
        caffe_xavier_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels)`` for a patch stack ``(B, in_channels, patch_size, patch_size)``.

        Raises:
            ValueError: when ``x`` does not have that shape.
        """
        if (
            x.dim() != 4
            or x.shape[1] != self.in_channels
            or x.shape[2] != self.patch_size
            or x.shape[3] != self.patch_size
        ):
            raise ValueError(
                "MuscleNet expects (B, "
                + str(self.in_channels)
                + ", "
                + str(self.patch_size)
                + ", "
                + str(self.patch_size)
                + ") candidate patch stacks, got shape "
                + str(list(x.shape))
                + "."
            )
        return self.classifier(self.features(x))
