"""CT perfusion inputs of the CTP → DWI GAN: PWI_max, brain-masked z-scores, the 5-channel stack.

Pengbo Liu, BrainLes 2018 (CTP→DWI GAN, §2.1): the network input is CT_MTT, CT_Tmax, CT_CBV, CT_CBF and
"PWI_max", the maximum of the 4-D CT perfusion series (CT_4DPWI) over time, each normalised. MONAI has no
reduction over a NIfTI's time axis that copes with how perfusion series are stored (time as the 4th axis, a
5-D file with time as the 5th after a singleton 4th, or a series of length 1), hence the perfusion maximum; the
z-score restricted to a mask given by another image is :func:`strokeseg.transforms.intensity.masked_zscore`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple

from strokeseg.errors import DataError
from strokeseg.transforms.foreground import brain_mask
from strokeseg.transforms.intensity import masked_zscore
from strokeseg.transforms.validation import source_name

__all__ = [
    "CTP_MAPS",
    "CTP_CHANNELS",
    "PerfusionMaximum",
    "PerfusionMaximumd",
    "PerfusionMaximumReader",
    "LoadPerfusionMaximumd",
    "BrainZScore",
    "BrainZScored",
    "StackCTPChannelsd",
    "PerfusionMaximumD",
    "PerfusionMaximumDict",
    "LoadPerfusionMaximumD",
    "LoadPerfusionMaximumDict",
    "BrainZScoreD",
    "BrainZScoreDict",
]

CTP_MAPS: tuple[str, ...] = ("CT_MTT", "CT_Tmax", "CT_CBV", "CT_CBF")
"""Perfusion maps of the input, in the paper's channel order (P. Liu 2018, §2.1)."""

CTP_CHANNELS: tuple[str, ...] = (*CTP_MAPS, "PWI_max")
"""The five input channels of the generator (P. Liu 2018, §3.1: input ``(B, 5, 256, 256)``)."""


def check_series_shape(shape: Sequence[int], name: str) -> None:
    """Raise a :class:`DataError` naming ``name`` unless ``shape`` is a perfusion series ``(X, Y, Z, T[, ...])``."""
    if len(shape) < 4:
        raise DataError(
            f"{name}: expected the 4-D CT perfusion series (x, y, z, time), got a {len(shape)}-D array of "
            f"shape {tuple(shape)}; is a 3-D map given where CT_4DPWI belongs?"
        )
    if any(int(s) == 0 for s in shape):
        raise DataError(f"{name}: the perfusion series holds no time point (shape {tuple(shape)})")


class PerfusionMaximum(Transform):
    """Maximum of a perfusion series over time: ``(X, Y, Z, T[, ...])`` → ``(1, X, Y, Z)``.

    Apply right after ``LoadImage`` (before ``EnsureChannelFirst``): the first three axes are space and every
    further axis is reduced by its maximum, so a ``(X, Y, Z, T)`` series, a 5-D ``(X, Y, Z, 1, T)`` file and a
    singleton-time ``(X, Y, Z, 1)`` file all give the same kind of output. A MetaTensor keeps its meta data
    (affine, file name).

    Raises:
        DataError: the array has fewer than 4 axes (a 3-D volume given where the 4-D series belongs) or no
            time point; the message names the file.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, series: torch.Tensor | np.ndarray) -> torch.Tensor:
        name = source_name(series) if isinstance(series, torch.Tensor) else "<in-memory array>"
        check_series_shape(series.shape, name)
        data = convert_to_tensor(series, track_meta=False)
        if not torch.is_floating_point(data):
            data = data.float()
        peak = data.reshape(*data.shape[:3], -1).amax(dim=-1).unsqueeze(0)
        if isinstance(series, MetaTensor):
            out = MetaTensor(peak, meta=dict(series.meta))  # meta holds the affine
            out.meta["original_channel_dim"] = "no_channel"
            return out
        return peak


class PerfusionMaximumd(MapTransform):
    """Dictionary version of :class:`PerfusionMaximum`.

    Args:
        keys: keys of loaded perfusion series (``perfusion_4d``).
        names: keys of the results (default: replace in place), e.g. ``pwi_max``.
    """

    backend = PerfusionMaximum.backend

    def __init__(
        self, keys: KeysCollection, names: KeysCollection | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        names = self.keys if names is None else ((names,) if isinstance(names, str) else tuple(names))
        if len(names) != len(self.keys):
            raise ValueError(f"names must give one key per key: {self.keys} vs {names}")
        self.names = dict(zip(self.keys, names, strict=True))
        self.reduce = PerfusionMaximum()

    def peak(self, value: torch.Tensor) -> torch.Tensor:
        """PWI_max of one value (a loaded series)."""
        return self.reduce(value)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.names[key]] = self.peak(d[key])
            if self.names[key] != key:
                del d[key]
        return d


class PerfusionMaximumReader(NibabelReader):
    """MONAI ``NibabelReader`` that reads a perfusion series as its maximum over time: a 3-D image.

    Loading CT_4DPWI with ``LoadImage`` and then reducing it (:class:`PerfusionMaximum`) first turns the whole
    Fortran-ordered 4-D series into a C-ordered array (``convert_to_tensor``): for ISLES 2018's 256 × 256 × 22 × 43
    int16 series that transposing copy took 1.56 s of the GAN's 11 s inference on a 2-core EPYC
    (``strokeseg profile stroke_ctp_dwi_gan``). This reader takes the maximum over every axis after the three
    spatial ones straight from nibabel's data object (a memory map of an uncompressed ``.nii``, in file order, with
    the header's scaling applied) and hands MONAI a 3-D image on the same grid, with the source header and affine,
    so only one volume is ever copied. MONAI has no reader option for a reduction while reading, hence this class.
    The values equal :class:`PerfusionMaximum` of the loaded series.

    Raises:
        DataError: the file holds fewer than 4 axes or no time point (see :func:`check_series_shape`).
    """

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        peaks = []
        for image in ensure_tuple(img):
            check_series_shape(image.shape, str(image.get_filename() or "<in-memory image>"))
            series = np.asanyarray(image.dataobj)
            peak = np.ascontiguousarray(series.max(axis=tuple(range(3, series.ndim))))
            volume = type(image)(peak, image.affine, image.header)  # a 3-D header, the same affine
            volume.header.set_data_dtype(peak.dtype)
            volume.header.set_slope_inter(1.0, 0.0)  # the values are already scaled
            peaks.append(volume)
        return super().get_data(peaks if isinstance(img, (list, tuple)) else peaks[0])


class LoadPerfusionMaximumd(PerfusionMaximumd):
    """Load perfusion series as their maximum over time: path → ``(1, X, Y, Z)`` float32 ``MetaTensor``.

    ``LoadImage`` with :class:`PerfusionMaximumReader` and a channel axis added; the result equals
    ``LoadImaged`` followed by :class:`PerfusionMaximumd`, without the copy of the whole 4-D series. Already
    loaded values (tensors) are reduced as :class:`PerfusionMaximumd` does. Check the files' headers first, as
    for every image (``CheckNiftiHeadersd`` with ``ndim`` 4 for the series): a truncated or foreign file is
    refused there, in one line naming it.

    Args:
        keys: datalist keys holding the series' paths (``perfusion_4d``).
        names: keys of the results (default: replace in place), e.g. ``pwi_max``.
    """

    def __init__(
        self, keys: KeysCollection, names: KeysCollection | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, names, allow_missing_keys)
        self.load = LoadImage(
            reader=PerfusionMaximumReader(), image_only=True, dtype=np.float32, ensure_channel_first=True
        )

    def peak(self, value: object) -> torch.Tensor:
        return super().peak(value) if isinstance(value, torch.Tensor) else self.load(value)


class BrainZScore(Transform):
    """Z-score every channel inside a brain mask, zero outside: ``(C, *spatial)`` → same shape, float32.

    The mask is given to ``__call__`` (``(1, *spatial)`` or ``(*spatial)``, non-zero = brain). ISLES 2018 perfusion
    maps are zero outside the brain while CT_4DPWI (and DWI) are not skull-stripped, so the maps' support is the
    brain mask of every channel (P. Liu 2018, §2.1, says only "normalize"; the brain restriction is our assumption).
    Unlike :class:`strokeseg.transforms.ctp.BrainMaskNormalizeIntensity`, which takes the mask from the image it
    normalises, the mask here comes from elsewhere (the maps), so that PWI_max and the real DWI, which are
    non-zero on the skull and in the air, are normalised over the same brain voxels. The z-score is
    :func:`strokeseg.transforms.intensity.masked_zscore` (float64 statistics, population std; a channel without
    spread is only centred, an empty mask gives zeros).
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = masked_zscore(img, mask, name=source_name(img), region="brain").float()
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=dict(img.meta), applied_operations=img.applied_operations)
        return out


class BrainZScored(MapTransform):
    """Dictionary version of :class:`BrainZScore`; the mask is where any channel of ``mask_source_key`` is non-zero.

    Args:
        keys: images to normalise (``image``, ``dwi``).
        mask_source_key: image whose non-zero support is the brain (the stacked CT maps, ``image``).
        mask_channels: channels of ``mask_source_key`` that define the mask (default: all; the four maps
            ``[0, 1, 2, 3]`` when PWI_max, which is not skull-stripped, is channel 4).

    Raises:
        DataError: the mask is empty (no brain voxel); the message names the file.
    """

    backend = BrainZScore.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_source_key: str = "image",
        mask_channels: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_source_key = mask_source_key
        self.mask_channels = None if mask_channels is None else [int(c) for c in mask_channels]
        self.normalise = BrainZScore()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        source = d[self.mask_source_key]
        channels = source if self.mask_channels is None else source[self.mask_channels]
        mask = brain_mask(channels)
        if not bool(mask.any()):
            raise DataError(f"{source_name(source)}: no brain voxel (every perfusion-map voxel is 0)")
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key], mask)
        return d


class StackCTPChannelsd(MapTransform):
    """Append PWI_max to the four stacked perfusion maps: ``image`` becomes the 5-channel generator input.

    ``image`` holds CT_MTT, CT_Tmax, CT_CBV, CT_CBF (channel-first, loaded as one list in
    :data:`CTP_MAPS` order) and ``pwi_key`` the ``(1, X, Y, Z)`` output of :class:`PerfusionMaximumd`; the
    result is ``(5, X, Y, Z)`` in :data:`CTP_CHANNELS` order with ``image``'s meta data, and ``pwi_key`` is
    removed.

    Raises:
        DataError: ``image`` does not have 4 channels or the two spatial shapes differ (both files named).
    """

    def __init__(self, image_key: str = "image", pwi_key: str = "pwi_max", maps: int = len(CTP_MAPS)) -> None:
        super().__init__([image_key, pwi_key])
        self.image_key, self.pwi_key, self.maps = image_key, pwi_key, int(maps)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image, pwi = d[self.image_key], d[self.pwi_key]
        if image.shape[0] != self.maps:
            raise DataError(
                f"{source_name(image)}: expected the {self.maps} perfusion maps {', '.join(CTP_MAPS)} "
                f"as channels, got {image.shape[0]}"
            )
        if tuple(image.shape[1:]) != tuple(pwi.shape[1:]):
            raise DataError(
                f"{source_name(pwi)}: perfusion series grid {tuple(pwi.shape[1:])} differs from the maps' "
                f"{tuple(image.shape[1:])} ({source_name(image)})"
            )
        pwi_values = convert_to_tensor(pwi, track_meta=False).to(dtype=image.dtype, device=image.device)
        stacked = torch.cat([image.as_tensor() if isinstance(image, MetaTensor) else image, pwi_values], dim=0)
        if isinstance(image, MetaTensor):
            stacked = MetaTensor(stacked, meta=dict(image.meta))
            stacked.applied_operations = image.applied_operations
        d[self.image_key] = stacked
        del d[self.pwi_key]
        return d


PerfusionMaximumD = PerfusionMaximumDict = PerfusionMaximumd
LoadPerfusionMaximumD = LoadPerfusionMaximumDict = LoadPerfusionMaximumd
BrainZScoreD = BrainZScoreDict = BrainZScored
