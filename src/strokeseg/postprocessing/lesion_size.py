"""Minimum lesion size: drop connected components smaller than S_min voxels (Clèrigues et al. 2020, §3.5).

The transform keeps MONAI's ``RemoveSmallObjects`` interface (``min_size``, ``connectivity``,
``independent_channels``, ``by_measure``, ``pixdim``) but labels lesions with the package's one
connected-component helper (:func:`strokeseg.lesions.remove_small_components`) instead of MONAI's
scikit-image call, for three reasons: full connectivity by default (26 neighbours in 3-D, exactly the
components of the lesion-wise metrics and of the grid search) instead of MONAI's faces-only default; each
channel filtered on its own (MONAI labels the whole ``(C, ...)`` array, so lesions of adjacent channels
would join); and the "smaller than S_min" of Clèrigues et al. 2020 on every scikit-image version (0.26 made MONAI's call
remove objects of exactly ``min_size`` voxels too). The (T_h, S_min) grid search that fits S_min is
:func:`strokeseg.fitting.lesion_size.grid_search_threshold_size`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RemoveSmallObjects
from monai.utils import convert_to_dst_type, ensure_tuple_rep

from strokeseg.lesions import remove_small_components

__all__ = ["RemoveSmallLesions", "RemoveSmallLesionsd"]


class RemoveSmallLesions(RemoveSmallObjects):
    """Remove connected components smaller than ``min_size`` voxels from a mask ``(C, H, W[, D])``.

    MONAI's ``RemoveSmallObjects`` interface over :func:`strokeseg.lesions.remove_small_components` (see the
    module docstring). MetaTensor in ⇒ MetaTensor out with its affine and meta; dtype and device are kept.

    Args:
        min_size: components with fewer voxels are removed (``<= 1`` keeps everything).
        connectivity: orthogonal hops between neighbours, ``None`` = full connectivity.
        independent_channels: kept for ``RemoveSmallObjects``'s interface; channels are always filtered one at
            a time (lesions of different channels never join).
        by_measure: ``min_size`` in mm³ (from the MetaTensor's pixdim or ``pixdim``) instead of voxels.
        pixdim: voxel size when the input is not a MetaTensor and ``by_measure`` is set.
    """

    def __init__(
        self,
        min_size: int = 1,
        connectivity: int | None = None,
        independent_channels: bool = True,
        by_measure: bool = False,
        pixdim: Sequence[float] | float | None = None,
    ) -> None:
        super().__init__(
            min_size=min_size,
            connectivity=connectivity,
            independent_channels=independent_channels,
            by_measure=by_measure,
            pixdim=pixdim,
        )

    def min_voxels(self, img: torch.Tensor | np.ndarray) -> int:
        """``min_size`` in voxels for this image (converted from mm³ when ``by_measure``)."""
        if not self.by_measure:
            return int(math.ceil(self.min_size))
        spatial = img.ndim - 1
        if isinstance(img, MetaTensor):
            pixdim = [float(p) for p in img.pixdim][:spatial]
        else:
            pixdim = list(ensure_tuple_rep(1.0 if self.pixdim is None else self.pixdim, spatial))
        return int(math.ceil(self.min_size / float(np.prod(pixdim))))

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Args: img: mask ``(C, H, W[, D])``; channels are filtered one at a time (non-zero = lesion)."""
        voxels = self.min_voxels(img)
        if voxels <= 1:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        keep = np.stack([remove_small_components(c, voxels, self.connectivity) for c in arr])
        out = np.where(keep, arr, np.zeros((), dtype=arr.dtype))
        return convert_to_dst_type(out, img, dtype=img.dtype)[0] if isinstance(img, torch.Tensor) else out


class RemoveSmallLesionsd(MapTransform):
    """Dictionary version of :class:`RemoveSmallLesions`."""

    backend = RemoveSmallLesions.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_size: int = 1,
        connectivity: int | None = None,
        independent_channels: bool = True,
        by_measure: bool = False,
        pixdim: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = RemoveSmallLesions(min_size, connectivity, independent_channels, by_measure, pixdim)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d
