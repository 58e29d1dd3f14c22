"""CT perfusion map transforms of the MS-DCNN bundle: per-map z-score inside one shared brain mask.

Liu et al., MS-DCNN, BrainLes 2018 (§3.1) feed ISLES 2018 CT perfusion maps (Tmax, CBF, CBV, MTT) as
2-D slices resized to 160 × 160 and do not say how the maps are normalised; we assume a per-case, per-map
z-score inside the brain (listed among the assumptions of the bundle's model card). The slice resizing and its
inversion are MONAI's ``Resized`` with ``spatial_size=(160, 160, -1)`` and ``Invertd`` in the bundle configs
(slice count kept, any slab thickness); :data:`SLICE_SIZE` is that size.

Why not MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``: it takes each channel's *own* non-zero
voxels as its mask, and a perfusion map is legitimately 0 inside the brain (Tmax of well-perfused tissue is
0 s in the ISLES 2018 maps), so Tmax would be normalised over a different, lesion-biased region than CBF. Here
the brain is the union of the non-zero voxels of all maps, every map is normalised over that same region, and
everything outside stays exactly 0 (so the slice inferer still recognises slices without brain).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from strokeseg.errors import DataError
from strokeseg.transforms.foreground import brain_mask
from strokeseg.transforms.intensity import masked_zscore
from strokeseg.transforms.validation import source_name

__all__ = [
    "SLICE_SIZE",
    "BrainMaskNormalizeIntensity",
    "BrainMaskNormalizeIntensityd",
    "BrainMaskNormalizeIntensityD",
    "BrainMaskNormalizeIntensityDict",
]

#: in-plane size of the network input, Liu et al. 2018, §3.1 ("all CT sequences are resized to 160 × 160")
SLICE_SIZE: tuple[int, int] = (160, 160)


def _channel_source(img: NdarrayOrTensor, channel: int, files: Sequence[str] | None) -> str:
    """File of one channel: ``files[channel]`` when given (``LoadImage`` keeps only the first file name of maps
    stacked from several files), else the image's own name."""
    if files is not None and len(files) > channel:
        return str(files[channel])
    return source_name(img)


class BrainMaskNormalizeIntensity(Transform):
    """Z-score each channel of a ``(C, H, W[, D])`` map stack over one brain mask shared by all channels.

    The mask is :func:`strokeseg.transforms.foreground.brain_mask` (any channel non-zero), computed on the whole
    case (all slices together). Each channel gets ``(x - mean) / std`` over the mask
    (:func:`strokeseg.transforms.intensity.masked_zscore`: float64 statistics, population std); voxels outside
    the mask are set to 0. A channel without spread inside the brain (``std == 0``) is only centred.

    Args:
        dtype: output dtype (floating). A ``MetaTensor`` input keeps its metadata.

    Raises:
        DataError: a map holds NaN/Inf voxels or is all zero (a broken export); the message names that map's
            file (``files`` of ``__call__``, else ``meta["filename_or_obj"]``).

    Example:
        >>> maps = BrainMaskNormalizeIntensity()(ctp)  # ctp: (4, H, W, D), Tmax, CBF, CBV, MTT
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}.")
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, files: Sequence[str] | None = None) -> NdarrayOrTensor:
        """Normalise ``img``.

        Args:
            img: channel-first maps ``(C, H, W[, D])``.
            files: the file of each channel, for error messages (default: the image's ``filename_or_obj``).
        """
        if img.ndim < 3:
            raise DataError(
                f"{source_name(img)}: expected channel-first maps (C, H, W[, D]), got shape {tuple(img.shape)}."
            )
        x = (img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)).to(torch.float64)
        for c in range(x.shape[0]):
            nan, inf = int(torch.isnan(x[c]).sum()), int(torch.isinf(x[c]).sum())
            if nan or inf:
                what = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
                raise DataError(f"{_channel_source(img, c, files)}: contains {what} voxel(s) (perfusion map {c})")
            if not bool(x[c].ne(0).any()):
                raise DataError(
                    f"{_channel_source(img, c, files)}: the image is empty (every voxel is 0): perfusion map {c} "
                    f"of {x.shape[0]} holds no brain; cannot normalise it."
                )
        out = masked_zscore(x, brain_mask(x), name=source_name(img), region="brain")
        return convert_to_dst_type(out, img, dtype=self.dtype)[0]


class BrainMaskNormalizeIntensityd(MapTransform):
    """Dictionary version of :class:`BrainMaskNormalizeIntensity`.

    Args:
        keys: keys of the map stacks.
        dtype: output dtype.
        files_key: key of the list of per-channel files (a copy of the datalist's ``image`` list made before
            ``LoadImaged``, e.g. by ``CopyItemsd``), so that a broken map is reported by its own file name.
            Do not start it with ``<key>_`` (MONAI would take it for that key's meta dict).
        allow_missing_keys: skip missing keys.
    """

    backend = BrainMaskNormalizeIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        dtype: torch.dtype = torch.float32,
        files_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = BrainMaskNormalizeIntensity(dtype=dtype)
        self.files_key = files_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        files = d.get(self.files_key) if self.files_key is not None else None
        if isinstance(files, str):
            files = [files]
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], files=files)
        return d


BrainMaskNormalizeIntensityD = BrainMaskNormalizeIntensityDict = BrainMaskNormalizeIntensityd
