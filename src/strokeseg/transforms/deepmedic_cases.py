"""DeepMedic's whole-case transforms, applied before segments are cut: TTP brain mask, z-score inside it, lesion
intensity clones (E1) and error-map sampling weights (E2).

Pérez Malla et al. (2019, doi:10.3389/fninf.2019.00033) preprocess ISLES 2017 with a brain mask from the
binarised and dilated TTP map and a z-score inside that mask (Algorithm 1), clone the training cases with redrawn
lesion intensities (Algorithm 2) and fine-tune DeepMedic on segments drawn in proportion to error maps (§2.3.4).
MONAI has none of these as such: ``NormalizeIntensity`` computes its statistics over the image's own non-zero
voxels. The segments themselves are cut by :mod:`strokeseg.transforms.segments`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor
from scipy import ndimage

from strokeseg.errors import DataError
from strokeseg.transforms.intensity import masked_zscore
from strokeseg.transforms.meta import with_meta_of
from strokeseg.transforms.validation import source_name

__all__ = [
    "PerfusionBrainMask",
    "PerfusionBrainMaskd",
    "ZScoreInMask",
    "ZScoreInMaskd",
    "LesionIntensityClone",
    "LesionIntensityCloned",
    "with_lesion_clones",
    "SquaredErrorMapd",
    "PerfusionBrainMaskD",
    "PerfusionBrainMaskDict",
    "ZScoreInMaskD",
    "ZScoreInMaskDict",
    "LesionIntensityClonedD",
    "LesionIntensityClonedDict",
]


class PerfusionBrainMask(Transform):
    """Brain mask of a perfusion map: voxels above ``threshold``, binary-dilated ``dilation`` times (3-D cross).

    Pérez Malla et al. 2019, Algorithm 1: "binarizing the TTP images, and applying binary dilation before the
    resampling". The threshold (0: any positive TTP) and the number of dilations are not given in the paper; both
    are knobs.

    Args:
        threshold: a voxel is brain when its value is above this.
        dilation: iterations of ``scipy.ndimage.binary_dilation``.

    Returns:
        ``(1, *spatial)`` float32 mask (1 brain, 0 outside) of a ``(1, *spatial)`` or ``(*spatial)`` map.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float = 0.0, dilation: int = 1) -> None:
        if dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {dilation}")
        self.threshold = float(threshold)
        self.dilation = int(dilation)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        data = convert_to_tensor(img, track_meta=False)
        if data.ndim >= 2 and data.shape[0] == 1:
            data = data[0]
        mask = (data > self.threshold).cpu().numpy()
        if self.dilation:
            mask = ndimage.binary_dilation(mask, iterations=self.dilation)
        return with_meta_of(torch.from_numpy(mask[None].astype(np.float32)), img)


class PerfusionBrainMaskd(MapTransform):
    """Dictionary version of :class:`PerfusionBrainMask`: the mask of channel ``channel`` of ``keys`` goes to
    ``mask_key``; with ``remove_channel`` the source channel (TTP, loaded only for the mask) is dropped.

    Raises:
        DataError: no voxel above the threshold; the message names the file.
    """

    backend = PerfusionBrainMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "brain",
        channel: int = -1,
        remove_channel: bool = True,
        threshold: float = 0.0,
        dilation: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.channel = int(channel)
        self.remove_channel = bool(remove_channel)
        self.masker = PerfusionBrainMask(threshold, dilation)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            channels = img.shape[0]
            index = self.channel % channels
            mask = self.masker(img[index : index + 1])
            if not bool(mask.any()):
                raise DataError(f"{source_name(img)}: no brain voxel (channel {index} is never above the threshold)")
            d[self.mask_key] = mask
            if self.remove_channel:
                if channels < 2:
                    raise DataError(f"{source_name(img)}: only the mask channel; no image channel is left")
                keep = [c for c in range(channels) if c != index]
                d[key] = img[keep]
        return d


class ZScoreInMask(Transform):
    """Z-score every channel over the voxels of a mask, zero outside it (Pérez Malla et al. 2019, Algorithm 1
    ``normalize``).

    MONAI's ``NormalizeIntensity(nonzero=True)`` takes each channel's own non-zero voxels as the region, which
    differs from the brain wherever a perfusion map is 0 inside it (rCBF in an infarct core). The z-score is
    :func:`strokeseg.transforms.intensity.masked_zscore` (float64 statistics, population std; a channel without
    spread is only centred, an empty mask gives zeros); the output is float32.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor) -> torch.Tensor:
        """Normalise ``img`` ``(C, *spatial)`` over ``mask`` ``(1, *spatial)`` or ``(*spatial)`` (non-zero = inside)."""
        return with_meta_of(masked_zscore(img, mask, name=source_name(img), region="brain").float(), img)


class ZScoreInMaskd(MapTransform):
    """Dictionary version of :class:`ZScoreInMask`, the mask read from ``mask_key``."""

    backend = ZScoreInMask.backend

    def __init__(self, keys: KeysCollection, mask_key: str = "brain", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.normalise = ZScoreInMask()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key], d[self.mask_key])
        return d


class LesionIntensityClone(Transform):
    """Algorithm 2 of Pérez Malla et al. 2019 ("intensity variance"): every channel's lesion voxels redrawn from
    ``N(mean, std)`` of that channel's lesion voxels; everything else unchanged.

    Deterministic given ``seed``, so a clone is the same case every epoch, as the paper's offline clones are.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor, label: NdarrayOrTensor, seed: int) -> torch.Tensor:
        data = convert_to_tensor(img, track_meta=False).float().clone()
        lesion = convert_to_tensor(label, track_meta=False).reshape(data.shape[1:]) > 0
        count = int(lesion.sum())
        if count:
            generator = torch.Generator().manual_seed(int(seed))
            for c in range(data.shape[0]):
                roi = data[c][lesion]
                draw = torch.randn(count, generator=generator, dtype=torch.float32)
                data[c][lesion] = roi.mean() + roi.std(unbiased=False) * draw.to(data.device)
        return with_meta_of(data, img)


class LesionIntensityCloned(MapTransform):
    """Dictionary version of :class:`LesionIntensityClone`, applied only to entries that carry ``seed_key``
    (the clones :func:`with_lesion_clones` adds); originals pass through unchanged. ``seed_key`` is removed from
    the output, so originals and clones have the same keys and collate into one batch."""

    backend = LesionIntensityClone.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        seed_key: str = "clone_seed",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.seed_key = seed_key
        self.clone = LesionIntensityClone()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        # the seed is consumed here, so that originals and clones leave with the same keys (a batch that mixes
        # them must collate)
        seed = d.pop(self.seed_key, None)
        if seed is None:
            return d
        for key in self.key_iterator(d):
            d[key] = self.clone(d[key], d[self.label_key], int(seed))
        return d


def with_lesion_clones(
    cases: Sequence[Mapping[str, Any]], clones: int = 1, seed: int = 0, seed_key: str = "clone_seed"
) -> list[dict[str, Any]]:
    """The training cases followed by ``clones`` clones of each (Pérez Malla et al. 2019, §2.3.3: 43 -> 86 cases
    with one clone); a clone is the same entry with ``seed_key`` set (and ``case`` suffixed ``_clone<k>``), which
    :class:`LesionIntensityCloned` turns into redrawn lesion intensities. Give it the training fold only."""
    out = [dict(c) for c in cases]
    for k in range(1, int(clones) + 1):
        for i, case in enumerate(cases):
            clone = dict(case)
            clone[seed_key] = int(seed) * 1_000_003 + k * 10_007 + i
            if "case" in clone:
                clone["case"] = f"{clone['case']}_clone{k}"
            out.append(clone)
    return out


class SquaredErrorMapd(MapTransform):
    """E2's sampling weights: ``(label - p)^2`` of a trained network's lesion probability ``p``, z-scored per case
    (Pérez Malla et al. 2019, §2.3.4; MONAI's ``weighted_patch_samples`` shifts the map to non-negative values).

    Args:
        keys: the image the network reads.
        label_key: the lesion label.
        weight_key: where the map goes.
        network: the trained network (put in eval mode here).
        inferer: dense inferer (``ValidTileInferer``); called as ``inferer(image[None], network)``.
        device: where the network runs.
    """

    def __init__(
        self,
        keys: KeysCollection,
        network: torch.nn.Module,
        inferer: Callable[..., torch.Tensor],
        label_key: str = "label",
        weight_key: str = "weight",
        device: str | torch.device = "cpu",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.network = network
        self.inferer = inferer
        self.label_key = label_key
        self.weight_key = weight_key
        self.device = torch.device(device)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=False).float()[None].to(self.device)
            was_training = self.network.training
            self.network.eval()
            with torch.no_grad():
                probability = torch.softmax(self.inferer(image, self.network), dim=1)[0, 1:2].cpu()
            self.network.train(was_training)
            label = convert_to_tensor(d[self.label_key], track_meta=False).float().reshape(probability.shape)
            error = (label - probability) ** 2
            d[self.weight_key] = (error - error.mean()) / (error.std(unbiased=False) + 1e-6)
        return d


PerfusionBrainMaskD = PerfusionBrainMaskDict = PerfusionBrainMaskd
ZScoreInMaskD = ZScoreInMaskDict = ZScoreInMaskd
LesionIntensityClonedD = LesionIntensityClonedDict = LesionIntensityCloned
