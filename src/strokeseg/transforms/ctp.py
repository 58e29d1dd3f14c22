"""CT perfusion map transforms of the MS-DCNN bundle: per-map z-score inside one shared brain mask.

Liu et al., MS-DCNN, BrainLes 2018 (seed 002, §3.1) feed ISLES 2018 CT perfusion maps (Tmax, CBF, CBV, MTT) as
2-D slices resized to 160 × 160 and do not say how the maps are normalised; we assume a per-case, per-map
z-score inside the brain (method sheet). The slice resizing and its inversion are MONAI's ``Resized`` with
``spatial_size=(160, 160, -1)`` and ``Invertd`` in the bundle configs (slice count kept, any slab thickness);
:data:`SLICE_SIZE` is that size.

Why not MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``: it takes each channel's *own* non-zero
voxels as its mask, and a perfusion map is legitimately 0 inside the brain (Tmax of well-perfused tissue is
0 s in the ISLES 2018 maps), so Tmax would be normalised over a different, lesion-biased region than CBF. Here
the brain is the union of the non-zero voxels of all maps, every map is normalised over that same region, and
everything outside stays exactly 0 (so the slice inferer still recognises slices without brain).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from strokeseg.errors import DataError
from strokeseg.transforms.validation import source_name

__all__ = [
    "SLICE_SIZE",
    "brain_mask",
    "BrainMaskNormalizeIntensity",
    "BrainMaskNormalizeIntensityd",
    "BrainMaskNormalizeIntensityD",
    "BrainMaskNormalizeIntensityDict",
]

#: in-plane size of the network input, seed 002 §3.1 ("all CT sequences are resized to 160 × 160")
SLICE_SIZE: tuple[int, int] = (160, 160)


def brain_mask(img: NdarrayOrTensor) -> torch.Tensor:
    """Bool ``(1, H, W[, D])`` mask of the voxels where at least one channel of ``(C, H, W[, D])`` is non-zero."""
    x = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
    return x.ne(0).any(dim=0, keepdim=True)


class BrainMaskNormalizeIntensity(Transform):
    """Z-score each channel of a ``(C, H, W[, D])`` map stack over one brain mask shared by all channels.

    The mask is :func:`brain_mask` (any channel non-zero), computed on the whole case (all slices together).
    Each channel gets ``(x - mean) / std`` over the mask, in float64 statistics (population std); voxels outside
    the mask are set to 0. A channel without spread inside the brain (``std == 0``) is only centred.

    Args:
        dtype: output dtype (floating). A ``MetaTensor`` input keeps its metadata.

    Raises:
        DataError: the maps hold NaN/inf or no voxel is non-zero; the message names ``meta["filename_or_obj"]``.

    Example:
        >>> maps = BrainMaskNormalizeIntensity()(ctp)  # ctp: (4, H, W, D), Tmax, CBF, CBV, MTT
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}.")
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img: channel-first maps ``(C, H, W[, D])``."""
        name = source_name(img)
        if img.ndim < 3:
            raise DataError(f"{name}: expected channel-first maps (C, H, W[, D]), got shape {tuple(img.shape)}.")
        x = (img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)).to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name}: the perfusion maps hold NaN or infinite values; cannot normalise them.")
        mask = brain_mask(x)[0]
        count = int(mask.sum())
        if count == 0:
            raise DataError(f"{name}: every perfusion map is all zero (no brain voxel); cannot normalise them.")
        out = torch.zeros_like(x)
        for c in range(x.shape[0]):
            values = x[c][mask]
            mean = values.mean()
            std = values.std(unbiased=False)
            out[c][mask] = (values - mean) / std if float(std) > 0 else values - mean
        return convert_to_dst_type(out, img, dtype=self.dtype)[0]


class BrainMaskNormalizeIntensityd(MapTransform):
    """Dictionary version of :class:`BrainMaskNormalizeIntensity`."""

    backend = BrainMaskNormalizeIntensity.backend

    def __init__(
        self, keys: KeysCollection, dtype: torch.dtype = torch.float32, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = BrainMaskNormalizeIntensity(dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


BrainMaskNormalizeIntensityD = BrainMaskNormalizeIntensityDict = BrainMaskNormalizeIntensityd
