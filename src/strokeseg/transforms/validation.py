"""Input checks right after loading: channel count, dimensionality, NaNs, empty images.

MONAI loads whatever a file holds (a 4-D DWI series becomes several channels, NaNs pass through
every transform), so a wrong input would otherwise surface much later as a shape error deep inside a
network or as a silently empty prediction. These checks fail early with the file's name.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from strokeseg.errors import DataError

__all__ = ["CheckImage", "CheckImaged", "source_name"]


def source_name(img: torch.Tensor) -> str:
    """File name(s) a MetaTensor was loaded from, for error messages."""
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        if isinstance(name, (list, tuple)):
            return ", ".join(str(n) for n in name)
        if name:
            return str(name)
    return "<in-memory image>"


class CheckImage(Transform):
    """Validate a channel-first image ``(C, H, W[, D])`` and return it unchanged.

    Args:
        channels: expected number of channels (``None``: any).
        spatial_dims: expected number of spatial dimensions.
        allow_empty: accept an image whose values are all zero (e.g. a label).

    Raises:
        DataError: wrong channel count (e.g. a 4-D series where a 3-D volume is expected), wrong
            dimensionality, NaN/Inf values, or an all-zero image; the message names the file.
    """

    def __init__(self, channels: int | None = 1, spatial_dims: int = 3, allow_empty: bool = False) -> None:
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.allow_empty = allow_empty

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        name = source_name(img)
        if img.ndim != self.spatial_dims + 1:
            raise DataError(
                f"{name}: expected a {self.spatial_dims}-D volume (channel-first shape of {self.spatial_dims + 1} "
                f"dims), got shape {tuple(img.shape)}"
            )
        if self.channels is not None and img.shape[0] != self.channels:
            extra = ""
            # MONAI marks a 3-D file with NaN ("no_channel" before 1.3) and several stacked 3-D files with 0;
            # only a channel axis read from the file itself (-1 for a 4-D NIfTI) means a 4-D series.
            channel_dim = img.meta.get("original_channel_dim") if isinstance(img, MetaTensor) else None
            if isinstance(channel_dim, int) and not isinstance(channel_dim, bool) and channel_dim != 0:
                extra = " (the file holds a 4-D series; a single 3-D volume is expected)"
            raise DataError(f"{name}: expected {self.channels} channel(s), got {img.shape[0]}{extra}")
        if not torch.isfinite(img).all():
            bad = int((~torch.isfinite(img)).sum())
            raise DataError(f"{name}: contains {bad} NaN/Inf voxel(s)")
        if not self.allow_empty and not bool(torch.any(img != 0)):
            raise DataError(f"{name}: the image is empty (every voxel is 0)")
        return img


class CheckImaged(MapTransform):
    """Dictionary version of :class:`CheckImage`."""

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | None = 1,
        spatial_dims: int = 3,
        allow_empty: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckImage(channels=channels, spatial_dims=spatial_dims, allow_empty=allow_empty)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.checker(d[key])
        return d
