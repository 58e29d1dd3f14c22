"""Z-score normalisation inside a mask (:func:`masked_zscore`), the one copy every bundle's normalisation calls,
and EDD Net's normalisation built on it (brain-voxel statistics without the brightest 1 %).

MONAI's ``NormalizeIntensity(nonzero=True)`` takes each channel's *own* non-zero voxels as the region and uses all
of them for the statistics. The bundles need a region given from outside (a brain mask shared by all channels,
or one from another image), statistics without the brightest voxels (EDD Net) and a defined answer for a channel
without spread, hence :func:`masked_zscore`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Literal

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from strokeseg.errors import DataError
from strokeseg.transforms.validation import source_name

__all__ = ["ZERO_SPREAD_MODES", "OUTSIDE_MODES", "masked_zscore", "EDDNormaliseIntensity", "EDDNormaliseIntensityd"]

# Chen, Bentley and Rueckert 2017, the authors' code (utils.norm): the top 1 % of brain intensities are left
# out of mean and std.
EDD_KEEP_FRACTION = 0.99

#: what :func:`masked_zscore` does with a channel whose statistics have no spread
ZERO_SPREAD_MODES: tuple[str, ...] = ("centre", "raise")
#: what :func:`masked_zscore` writes outside the mask
OUTSIDE_MODES: tuple[str, ...] = ("zero", "scale")


def _kept_statistics(values: torch.Tensor, keep_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of the ``max(int(keep_fraction * n), 1)`` smallest of the ``n`` 1-D ``values``.

    The cut is one ``torch.kthvalue`` selection (O(n), no sort); values tied with the cut are kept as often as
    the count needs, so the kept set is exactly that of a partial sort.
    """
    keep = max(int(keep_fraction * values.numel()), 1)
    if keep < values.numel():
        cut = torch.kthvalue(values, keep).values
        below = values[values < cut]
        values = torch.cat([below, cut.expand(keep - below.numel())])
    return values.mean(), values.std(unbiased=False)


def masked_zscore(
    image: NdarrayOrTensor,
    mask: NdarrayOrTensor,
    *,
    keep_fraction: float = 1.0,
    zero_spread: Literal["centre", "raise"] = "centre",
    outside: Literal["zero", "scale"] = "zero",
    name: str | None = None,
    region: str = "mask",
) -> torch.Tensor:
    """Z-score every channel of ``image`` over the voxels of ``mask``: ``(x - mean) / std`` inside the mask.

    The statistics are float64 and the standard deviation is the population one (``ddof=0``), whatever the
    input dtype. No epsilon is added: a channel without spread is handled by ``zero_spread``.

    Args:
        image: channel-first ``(C, *spatial)`` array or tensor with finite values (the callers check them and
            name the file).
        mask: non-zero = inside; ``(*spatial)`` or ``(1, *spatial)`` shared by every channel, or ``(C, *spatial)``
            one region per channel.
        keep_fraction: share of each channel's masked voxels, from the darkest, that give mean and std (1: all of
            them; 0.99 leaves the brightest 1 % out, Chen, Bentley and Rueckert 2017). The whole region is
            normalised either way.
        zero_spread: a channel whose statistics have no spread (``std == 0``) or whose region is empty:
            ``"centre"`` subtracts the mean without scaling (a constant channel becomes 0 inside the mask);
            ``"raise"`` raises a :class:`DataError`.
        outside: voxels outside the mask: ``"zero"`` sets them to 0; ``"scale"`` divides them by the std without
            centring them (a zero background stays 0, the mean is removed inside the region only).
        name: the image's name in error messages (default: ``meta["filename_or_obj"]``).
        region: what the mask is, in error messages (``"brain"``).

    Returns:
        ``(C, *spatial)`` float64 tensor (no meta data) on ``image``'s device.

    Raises:
        ValueError: an option out of range, or ``mask`` fits neither shape.
        DataError: ``zero_spread="raise"`` and a channel's region is empty or has no spread.

    Example:
        >>> masked_zscore(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([1, 1, 0])).tolist()
        [[-1.0, 1.0, 0.0]]
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
    if zero_spread not in ZERO_SPREAD_MODES:
        raise ValueError(f"zero_spread must be one of {ZERO_SPREAD_MODES}, got {zero_spread!r}.")
    if outside not in OUTSIDE_MODES:
        raise ValueError(f"outside must be one of {OUTSIDE_MODES}, got {outside!r}.")
    label = source_name(image) if name is None else name
    x = convert_to_tensor(image, dtype=torch.float64, track_meta=False)
    if x.ndim < 2:
        raise ValueError(f"{label}: expected a channel-first image (C, *spatial), got shape {tuple(x.shape)}.")
    inside = convert_to_tensor(mask, track_meta=False, device=x.device).ne(0)
    if tuple(inside.shape) == tuple(x.shape[1:]):
        inside = inside[None]
    if tuple(inside.shape) not in (tuple(x.shape), (1, *x.shape[1:])):
        raise ValueError(
            f"{label}: mask of shape {tuple(inside.shape)} fits neither (*spatial), (1, *spatial) nor (C, *spatial) "
            f"of the image {tuple(x.shape)}."
        )
    out = torch.zeros_like(x)
    for c in range(x.shape[0]):
        channel, region_c = x[c], inside[min(c, inside.shape[0] - 1)]
        values = channel[region_c]
        if values.numel() == 0:
            if zero_spread == "raise":
                raise DataError(f"{label}: channel {c} has no voxel inside the {region}; cannot normalise it.")
            if outside == "scale":
                out[c] = channel
            continue
        mean, std = _kept_statistics(values, keep_fraction)
        if not float(std) > 0.0:
            if zero_spread == "raise":
                raise DataError(
                    f"{label}: channel {c} has constant {region} intensity ({float(mean):g}); cannot divide by a "
                    "zero standard deviation."
                )
            std = torch.ones_like(std)
        if outside == "scale":
            out[c] = channel / std
        out[c][region_c] = (values - mean) / std
    return out


class EDDNormaliseIntensity(Transform):
    """Normalise a DWI volume the way the EDD Net authors did, channel by channel.

    Brain voxels are the voxels > 0 of the whole volume (all slices together). Their intensities, with the
    brightest 1 % dropped, give a mean and a (population) standard deviation; the mean is subtracted from the
    brain voxels only (the background stays exactly 0) and the whole volume is divided by the standard
    deviation: :func:`masked_zscore` with ``keep_fraction=0.99``, ``outside="scale"`` and
    ``zero_spread="raise"``. MONAI's ``NormalizeIntensity(nonzero=True)`` is close but uses all brain voxels for
    the statistics and does not scale the background, hence this transform.

    The statistics use one selection (``torch.kthvalue``), O(n) in the number of brain voxels, in float64.

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

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keep_fraction: float = EDD_KEEP_FRACTION, dtype: torch.dtype = torch.float32) -> None:
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
        self.keep_fraction = keep_fraction
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Normalise ``img`` of shape ``(C, H, W[, D])``; returns the same type (MetaTensor meta kept)."""
        name = source_name(img)
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim < 2:
            raise DataError(f"{name}: expected a channel-first image (C, H, W[, D]), got shape {tuple(x.shape)}.")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name}: the image holds NaN or infinite values; cannot normalise intensities.")
        brain = x > 0
        for index in range(x.shape[0]):
            if not bool(brain[index].any()):
                raise DataError(
                    f"{name}: channel {index} has no voxel > 0 (empty brain); cannot normalise intensities."
                )
        out = masked_zscore(
            x, brain, keep_fraction=self.keep_fraction, zero_spread="raise", outside="scale", name=name, region="brain"
        )
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
