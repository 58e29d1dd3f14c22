"""EDD Net intensity normalisation: brain-voxel statistics without the brightest 1 %, mean removed inside the brain."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

from strokeseg.errors import DataError
from strokeseg.transforms.validation import source_name

__all__ = ["EDDNormaliseIntensity", "EDDNormaliseIntensityd"]

# seed 000 authors' code (utils.norm): the top 1 % of brain intensities are left out of mean and std.
EDD_KEEP_FRACTION = 0.99


class EDDNormaliseIntensity(Transform):
    """Normalise a DWI volume the way the EDD Net authors did, channel by channel.

    Brain voxels are the voxels > 0 of the whole volume (all slices together). Their intensities, with the
    brightest 1 % dropped, give a mean and a (population) standard deviation; the mean is subtracted from the
    brain voxels only (the background stays exactly 0) and the whole volume is divided by the standard
    deviation. MONAI's ``NormalizeIntensity(nonzero=True)`` is close but uses all brain voxels for the statistics
    and does not scale the background, hence this transform.

    The statistics use a partial sort (``np.partition``), O(n) in the number of brain voxels, in float64.

    Args:
        keep_fraction: share of the brain voxels, from the darkest, used for the statistics (0.99 in the
            authors' code).
        dtype: output dtype (floating). Metadata of a ``MetaTensor`` input are kept.

    Raises:
        DataError: the volume holds NaN/inf, a channel has no voxel > 0 (empty brain) or its brain intensities
            have no spread; the message names ``meta["filename_or_obj"]``.

    Example:
        >>> EDDNormaliseIntensity()(dwi)  # dwi: (1, H, W, D) MetaTensor from LoadImage + EnsureChannelFirst
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, keep_fraction: float = EDD_KEEP_FRACTION, dtype: torch.dtype = torch.float32) -> None:
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
        self.keep_fraction = keep_fraction
        self.dtype = dtype

    def brain_statistics(self, channel: np.ndarray, name: str, index: int) -> tuple[float, float]:
        """Mean and std of the brain voxels (> 0) of one channel without the brightest ``1 - keep_fraction``."""
        tissue = channel[channel > 0].astype(np.float64, copy=False)
        if tissue.size == 0:
            raise DataError(f"{name}: channel {index} has no voxel > 0 (empty brain); cannot normalise intensities.")
        keep = max(int(self.keep_fraction * tissue.size), 1)
        if keep < tissue.size:
            # After partitioning, the first `keep` entries are the `keep` darkest voxels (in any order).
            tissue = np.partition(tissue, keep - 1)[:keep]
        mean, std = float(tissue.mean()), float(tissue.std())
        if not std > 0.0:
            raise DataError(
                f"{name}: channel {index} has constant brain intensity ({mean:g}); cannot divide by a zero std."
            )
        return mean, std

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Normalise ``img`` of shape ``(C, H, W[, D])``; returns the same type (MetaTensor meta kept)."""
        name = source_name(img)
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if array.ndim < 2:
            raise DataError(f"{name}: expected a channel-first image (C, H, W[, D]), got shape {array.shape}.")
        if not np.isfinite(array).all():
            raise DataError(f"{name}: the image holds NaN or infinite values; cannot normalise intensities.")
        out = np.empty(array.shape, dtype=np.float64)
        for index, channel in enumerate(array):
            mean, std = self.brain_statistics(channel, name, index)
            brain = channel > 0
            out[index] = np.where(brain, channel - mean, channel) / std
        result, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return result


class EDDNormaliseIntensityd(MapTransform):
    """Dictionary version of :class:`EDDNormaliseIntensity`.

    Args:
        keys: keys of the images to normalise, each ``(C, H, W[, D])``.
        keep_fraction: see :class:`EDDNormaliseIntensity`.
        dtype: output dtype.
        allow_missing_keys: do not fail on a missing key.

    Raises:
        DataError: see :class:`EDDNormaliseIntensity`.
    """

    backend = EDDNormaliseIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        keep_fraction: float = EDD_KEEP_FRACTION,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normaliser = EDDNormaliseIntensity(keep_fraction=keep_fraction, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normaliser(d[key])
        return d
