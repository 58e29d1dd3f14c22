"""Foreground selection for ``CropForegroundd`` on images whose background is noise, not zeros.

MONAI's default ``select_fn`` (``x > 0``) keeps the whole field of view of a magnitude MR image, whose
background is Rician noise (> 0 everywhere), so the crop saves nothing. A threshold relative to the
image's bright tissue keeps the head and drops the noise floor.
"""

from __future__ import annotations

import torch

__all__ = ["relative_foreground"]


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
    level = torch.quantile(positive, quantile)
    return values > fraction * level
