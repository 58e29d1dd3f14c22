"""Maxout over channel groups: several predicted pieces per class, the class score is their maximum.

Pengbo Liu, "Stroke Lesion Segmentation with 2D Novel CNN Pipeline and Novel Loss Function", BrainLes 2018
(§2.2, Fig. 3): instead of two output channels the segmentator predicts four -- three background
pieces and one foreground piece -- and the background score of a pixel is the maximum of its three pieces,
which the paper credits with fewer false positives. The idea is Goodfellow et al.'s maxout unit
(Goodfellow, Warde-Farley, Mirza, Courville, Bengio, "Maxout Networks", ICML 2013, arXiv:1302.4389) applied
to class logits. MONAI has no maxout layer, hence this module; it takes any number of pieces per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

__all__ = ["ChannelMaxout", "MaxoutHead"]


def _check_pieces(pieces: Sequence[int]) -> list[int]:
    values = [int(p) for p in pieces]
    if len(values) < 1 or any(p < 1 for p in values) or any(p != q for p, q in zip(values, pieces, strict=True)):
        raise ValueError(f"pieces must be a non-empty sequence of positive ints (pieces per class), got {pieces!r}.")
    return values


class ChannelMaxout(nn.Module):
    """Class logits as the channel-wise maximum of each class's consecutive group of pieces.

    For ``pieces = (k_0, k_1, ...)`` the input has ``sum(pieces)`` channels; output channel ``c`` is
    ``max_{j in group c} x[:, j]`` where group ``c`` is channels ``k_0 + ... + k_{c-1}`` to
    ``k_0 + ... + k_c - 1``. The maximum is ``torch.amax``: its gradient goes to the winning piece of every
    pixel (shared equally between exact ties).

    Args:
        pieces: number of pieces of each class, in class order; the paper's head is ``(3, 1)``
            (3 background pieces, 1 lesion piece; P. Liu 2018, §2.2).

    Raises:
        ValueError: ``pieces`` is empty or holds a non-positive count; the input (in ``forward``) does not have
            ``sum(pieces)`` channels.

    Example:
        >>> ChannelMaxout((3, 1))(torch.randn(2, 4, 8, 8)).shape
        torch.Size([2, 2, 8, 8])
    """

    def __init__(self, pieces: Sequence[int] = (3, 1)) -> None:
        super().__init__()
        self.pieces = _check_pieces(pieces)
        self.in_channels = sum(self.pieces)
        self.out_channels = len(self.pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, sum(pieces), *spatial)`` → ``(B, len(pieces), *spatial)``."""
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ChannelMaxout{self.pieces} expects {self.in_channels} input channels, got shape {list(x.shape)}."
            )
        groups = torch.split(x, self.pieces, dim=1)
        return torch.cat([torch.amax(group, dim=1, keepdim=True) for group in groups], dim=1)

    def extra_repr(self) -> str:
        return f"pieces={tuple(self.pieces)}"


class MaxoutHead(nn.Module):
    """A ``1 × 1`` convolution to ``sum(pieces)`` channels followed by :class:`ChannelMaxout`.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: feature channels entering the head.
        pieces: pieces per class (``(3, 1)``: 3 background pieces + 1 foreground, P. Liu 2018, Fig. 3).

    Example:
        >>> head = MaxoutHead(2, in_channels=16, pieces=(3, 1))
        >>> head(torch.randn(1, 16, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, pieces: Sequence[int] = (3, 1)) -> None:
        super().__init__()
        self.maxout = ChannelMaxout(pieces)
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, self.maxout.in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → ``(B, len(pieces), *spatial)`` class logits."""
        return self.maxout(self.conv(x))
