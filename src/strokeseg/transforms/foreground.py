"""Foreground selection: the brain of a skull-stripped stack, and the head of an image with a noisy background.

:func:`brain_mask` is the one brain-mask rule of the package: a voxel is brain when any channel differs from
its background (0, or the channel's minimum for volumes z-scored as a whole). MONAI's ``CropForeground`` has
the same idea as a ``select_fn`` but returns a bounding box, not the mask, hence the function.

:func:`relative_foreground` is a ``select_fn`` for ``CropForegroundd`` on images whose background is noise,
not zeros. MONAI's default ``select_fn`` (``x > 0``) keeps the whole field of view of a magnitude MR image,
whose background is Rician noise (> 0 everywhere), so the crop saves nothing. A threshold relative to the
image's bright tissue keeps the head and drops the noise floor.
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_tensor

__all__ = ["BRAIN_BACKGROUNDS", "brain_mask", "relative_foreground", "selection_quantile"]

#: what :func:`brain_mask` takes as the background of a channel
BRAIN_BACKGROUNDS: tuple[str, ...] = ("zero", "minimum")


def brain_mask(image: NdarrayOrTensor, background: Literal["zero", "minimum"] = "zero") -> torch.Tensor:
    """Bool ``(*spatial)`` mask of the voxels where at least one channel of ``(C, *spatial)`` is off its background.

    Skull-stripped stacks (CT perfusion maps, brain-extracted MR) are 0 outside the brain while a single map
    can be 0 inside it (Tmax of well-perfused tissue), so the brain is the union over the channels.

    Args:
        image: channel-first ``(C, *spatial)`` array or tensor (a ``MetaTensor``'s meta data are dropped).
        background: ``"zero"``: a voxel is brain where any channel is non-zero; ``"minimum"``: where any
            channel is above its own minimum, for volumes z-scored as a whole, whose background is a
            negative constant per channel.

    Returns:
        ``(*spatial)`` bool tensor on ``image``'s device (the channel axis reduced).

    Raises:
        ValueError: ``image`` has no spatial axis or ``background`` is not one of :data:`BRAIN_BACKGROUNDS`.

    Example:
        >>> brain_mask(torch.tensor([[[0.0, 2.0]], [[3.0, 0.0]]])).tolist()  # (2, 1, 2): Tmax-like, CBF-like
        [[True, True]]
    """
    if background not in BRAIN_BACKGROUNDS:
        raise ValueError(f"background must be one of {BRAIN_BACKGROUNDS}, got {background!r}")
    x = convert_to_tensor(image, track_meta=False)
    if x.ndim < 2:
        raise ValueError(f"brain_mask expects a channel-first image (C, *spatial), got shape {tuple(x.shape)}")
    if background == "zero":
        return x.ne(0).any(dim=0)
    flat = x.reshape(x.shape[0], -1)
    return (flat > flat.amin(dim=1, keepdim=True)).any(dim=0).reshape(x.shape[1:])


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
