"""Padding by index: where each voxel of a padded axis comes from, for any padding length.

``torch.nn.functional.pad`` refuses a reflection longer than the axis; the valid-convolution tiles of
:mod:`strokeseg.inferers.tiles` and DeepMedic's training segments (:mod:`strokeseg.transforms.segments`) need
it for small volumes, and both must pad the same way so that training and inference see the same borders.
"""

from __future__ import annotations

import torch

__all__ = ["padding_index", "fold_positions"]


def padding_index(size: int, before: int, after: int, mode: str, device: torch.device | None = None) -> torch.Tensor:
    """Source index of every voxel of an axis of ``size`` voxels padded by ``before`` / ``after`` voxels.

    ``reflect`` mirrors about the edge voxels (``2 1 | 0 1 2 | 1 0``, numpy's ``reflect``), repeatedly when the
    padding is longer than the axis; ``replicate`` repeats the edge voxel. Unlike ``torch.nn.functional.pad``,
    any padding length works.

    Raises:
        ValueError: an unknown ``mode``.
    """
    return fold_positions(torch.arange(-before, size + after, device=device), size, mode)


def fold_positions(positions: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map any integer ``positions`` on an axis of ``size`` voxels into it, as :func:`padding_index` pads."""
    if mode == "replicate" or size == 1:
        return positions.clamp(0, size - 1)
    if mode == "reflect":
        period = 2 * (size - 1)
        folded = positions.remainder(period)
        return torch.where(folded < size, folded, period - folded)
    raise ValueError(f"padding mode must be 'reflect' or 'replicate' here, got {mode!r}")
