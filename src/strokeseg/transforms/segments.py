"""DeepMedic's training segments: segment + context sampling and the segments' intensity augmentation.

Pérez Malla et al. (2019, doi:10.3389/fninf.2019.00033) train DeepMedic (Kamnitsas et al., 2017,
doi:10.1016/j.media.2016.10.004) on 25³ segments centred on lesion or brain voxels with probability 0.5 each
(§2.2), augment them with ``I' = (I + s) * m`` (Eq. 1) and fine-tune on segments drawn in proportion to error maps
(§2.3.4). MONAI's ``RandCropByPosNegLabeld`` moves centres inwards so crops fit (DeepMedic pads instead) and cuts
one window per sample, not a segment plus its decimated context; ``RandShiftIntensity`` / ``RandScaleIntensity``
draw from uniform ranges. MONAI's ``weighted_patch_samples`` (the centre draw of ``RandWeightedCropd``) is reused
for the error-map sampling. The whole-case transforms that come before (brain mask, z-score, lesion clones, error
maps) are in :mod:`strokeseg.transforms.deepmedic_cases`.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.transforms.utils import weighted_patch_samples
from monai.utils import TransformBackends, convert_to_tensor

from strokeseg.errors import DataError
from strokeseg.networks.deepmedic import context_positions
from strokeseg.transforms.meta import with_meta_of
from strokeseg.transforms.padding import fold_positions
from strokeseg.transforms.validation import source_name

__all__ = [
    "RandDeepMedicSegments",
    "RandDeepMedicSegmentsd",
    "RandShiftScaleIntensity",
    "RandShiftScaleIntensityd",
    "RandDeepMedicSegmentsD",
    "RandDeepMedicSegmentsDict",
    "RandShiftScaleIntensityD",
    "RandShiftScaleIntensityDict",
]


def _gather(volume: torch.Tensor, axes: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """``volume[:, axes[0]][:, :, axes[1]]...`` with out-of-volume positions folded back (reflect / replicate) or
    set to zero (``constant``)."""
    out = volume
    valid = None
    for d, positions in enumerate(axes):
        size = volume.shape[1 + d]
        if mode == "constant":
            inside = (positions >= 0) & (positions < size)
            index = positions.clamp(0, size - 1)
            shape = [1] * len(axes)
            shape[d] = -1
            axis_valid = inside.view(shape)
            valid = axis_valid if valid is None else valid & axis_valid
        else:
            index = fold_positions(positions, size, mode)
        out = out.index_select(1 + d, index.to(out.device))
    if valid is not None:
        out = out * valid.to(out.device, out.dtype)
    return out


class RandDeepMedicSegments(Randomizable, Transform, MultiSampleTrait):
    """Draw ``num_samples`` DeepMedic training segments: a normal-resolution segment, its co-centred
    low-resolution context and the label of the segment's output voxels.

    Each centre is a lesion voxel with probability ``pos / (pos + neg)``, else a brain voxel outside the lesion
    (Pérez Malla et al. 2019, §2.2, "foreground or background voxel with equal probability", background "inside
    the subject mask minus ... the label mask"); with a ``weight`` map, centres are drawn in proportion to it
    instead (E2, MONAI's ``weighted_patch_samples``). The context holds every ``subsample_factor``-th voxel around
    the centre as :func:`strokeseg.networks.deepmedic.context_positions` lays them out. Segments reaching out of the
    volume are padded (``padding_mode``), not moved.

    Args:
        segment_size: normal-resolution segment (Pérez Malla et al. 2019, §2.2: 25).
        pathway_shrink: voxels the network's pathways remove (16 for eight 3³ convolutions).
        subsample_factor: decimation of the context (3).
        num_samples: segments per call.
        pos: weight of lesion centres.
        neg: weight of brain (non-lesion) centres.
        padding_mode: ``"reflect"``, ``"replicate"`` or ``"constant"`` (zeros).

    Raises:
        DataError: no voxel to centre a segment on (empty brain mask and empty label).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        segment_size: int | Sequence[int] = 25,
        pathway_shrink: int = 16,
        subsample_factor: int = 3,
        num_samples: int = 1,
        pos: float = 1.0,
        neg: float = 1.0,
        padding_mode: str = "reflect",
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ValueError(f"pos and neg must be non-negative and not both 0, got {pos}, {neg}")
        if padding_mode not in ("reflect", "replicate", "constant"):
            raise ValueError(f"padding_mode must be reflect, replicate or constant, got {padding_mode!r}")
        self.segment_size = segment_size
        self.pathway_shrink = int(pathway_shrink)
        self.subsample_factor = int(subsample_factor)
        self.num_samples = int(num_samples)
        self.pos_ratio = float(pos) / float(pos + neg)
        self.padding_mode = padding_mode
        self._centres: list[list[int]] = []

    def _sizes(self, dims: int) -> list[int]:
        size = self.segment_size
        sizes = [int(size)] * dims if isinstance(size, (int, float)) else [int(s) for s in size]
        if len(sizes) != dims:
            raise ValueError(f"segment_size {list(sizes)} does not match a {dims}-D image")
        for s in sizes:
            if s <= self.pathway_shrink:
                raise ValueError(f"segment size {s} is not larger than the pathway shrink {self.pathway_shrink}")
        return sizes

    def randomize(
        self, label: torch.Tensor, mask: torch.Tensor | None = None, weight: torch.Tensor | None = None
    ) -> None:
        """Choose the centres (lists of voxel indices) of the next call."""
        spatial = tuple(label.shape[1:])
        if weight is not None:
            w = convert_to_tensor(weight, track_meta=False).reshape(spatial).float()
            centres = weighted_patch_samples([1] * len(spatial), w, self.num_samples, self.R)
            self._centres = [[int(v) for v in c] for c in centres]
            return
        lesion = convert_to_tensor(label, track_meta=False).reshape(spatial) > 0
        brain = (
            torch.ones_like(lesion) if mask is None else convert_to_tensor(mask, track_meta=False).reshape(spatial) > 0
        )
        fg = torch.nonzero(lesion.flatten()).flatten().numpy()
        bg = torch.nonzero((brain & ~lesion).flatten()).flatten().numpy()
        if fg.size == 0 and bg.size == 0:
            raise DataError(f"{source_name(label)}: no lesion and no brain voxel to centre a segment on")
        centres = []
        for _ in range(self.num_samples):
            take_fg = bg.size == 0 or (fg.size > 0 and self.R.rand() < self.pos_ratio)
            pool = fg if take_fg else bg
            flat = int(pool[self.R.randint(pool.size)])
            centres.append([int(v) for v in np.unravel_index(flat, spatial)])
        self._centres = centres

    def cut(
        self, images: Sequence[torch.Tensor], label: torch.Tensor | None, centre: Sequence[int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Segments and contexts of every image, and the output-voxel label, around ``centre``."""
        dims = len(centre)
        sizes = self._sizes(dims)
        firsts = [c - s // 2 for c, s in zip(centre, sizes, strict=True)]
        seg_axes = [torch.arange(s) + f for s, f in zip(sizes, firsts, strict=True)]
        ctx_axes = [
            torch.tensor(context_positions(s, self.pathway_shrink, self.subsample_factor)) + f
            for s, f in zip(sizes, firsts, strict=True)
        ]
        half = self.pathway_shrink // 2
        out_axes = [torch.arange(s - self.pathway_shrink) + f + half for s, f in zip(sizes, firsts, strict=True)]
        segments, contexts = [], []
        for img in images:
            data = convert_to_tensor(img, track_meta=False)
            segments.append(_gather(data, seg_axes, self.padding_mode))
            contexts.append(_gather(data, ctx_axes, self.padding_mode))
        cut_label = None
        if label is not None:
            cut_label = _gather(convert_to_tensor(label, track_meta=False), out_axes, "constant")
        return segments, contexts, cut_label

    def __call__(
        self,
        img: torch.Tensor,
        label: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        randomize: bool = True,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``num_samples`` tuples ``(segment (C, *S), context (C, *L), label (1, *(S - shrink)))``."""
        if randomize:
            self.randomize(label, mask, weight)
        out = []
        for centre in self._centres:
            (segment,), (context,), cut_label = self.cut([img], label, centre)
            out.append((segment, context, cut_label))
        return out


class RandDeepMedicSegmentsd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandDeepMedicSegments`: one dict per segment.

    Each output dict holds the segment of every key in ``keys`` under that key, its context under the matching
    ``context_keys`` entry, the output-voxel label under ``label_key``, and every other entry of the input
    (except ``mask_key`` and ``weight_key``) unchanged.

    Args:
        keys: images to cut (``"image"``).
        label_key: the lesion label.
        mask_key: the brain mask (background centres are drawn inside it); ``None``: the whole volume.
        context_keys: where the contexts go, one per key (default ``"context"`` for a single key). Avoid names
            starting with ``"<key>_"``: MONAI reads those as meta dictionaries.
        weight_key: sampling weights (E2 error maps); ``None``: lesion / brain centres.
        other arguments: as :class:`RandDeepMedicSegments`.
    """

    backend = RandDeepMedicSegments.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        mask_key: str | None = "brain",
        context_keys: str | Sequence[str] = "context",
        weight_key: str | None = None,
        segment_size: int | Sequence[int] = 25,
        pathway_shrink: int = 16,
        subsample_factor: int = 3,
        num_samples: int = 1,
        pos: float = 1.0,
        neg: float = 1.0,
        padding_mode: str = "reflect",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.context_keys = [context_keys] if isinstance(context_keys, str) else list(context_keys)
        if len(self.context_keys) != len(self.keys):
            raise ValueError(f"context_keys {self.context_keys} must name one context per key {list(self.keys)}")
        self.label_key = label_key
        self.mask_key = mask_key
        self.weight_key = weight_key
        self.sampler = RandDeepMedicSegments(
            segment_size, pathway_shrink, subsample_factor, num_samples, pos, neg, padding_mode
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.sampler.randomize(*data)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        label = d[self.label_key]
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        weight = d.get(self.weight_key) if self.weight_key is not None else None
        if self.weight_key is not None and weight is None:
            raise DataError(f"{source_name(label)}: no sampling weights under {self.weight_key!r}")
        self.randomize((label, mask, weight))
        keys = list(self.key_iterator(d))
        dropped = {self.mask_key, self.weight_key, self.label_key, *keys}
        rest = {k: v for k, v in d.items() if k not in dropped}
        samples = []
        for centre in self.sampler._centres:
            segments, contexts, cut_label = self.sampler.cut([d[k] for k in keys], label, centre)
            sample = copy.copy(rest)
            for key, context_key, segment, context in zip(keys, self.context_keys, segments, contexts, strict=False):
                sample[key] = segment
                sample[context_key] = context
            sample[self.label_key] = cut_label
            samples.append(sample)
        return samples


class RandShiftScaleIntensity(Randomizable, Transform):
    """``I' = (I + s) * m`` per channel, ``s ~ N(0, shift_std)``, ``m ~ N(1, scale_std)`` (Pérez Malla et al.
    2019, Eq. 1: σ 0.05 and 0.01), with probability ``prob``.

    MONAI's ``RandShiftIntensity`` and ``RandScaleIntensity`` draw their offsets from uniform ranges and scale by
    ``1 + f``; Eq. 1 draws both from Gaussians.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, shift_std: float = 0.05, scale_std: float = 0.01, prob: float = 1.0) -> None:
        self.shift_std = float(shift_std)
        self.scale_std = float(scale_std)
        self.prob = float(prob)
        self._apply = False
        self._shift = np.zeros(0)
        self._scale = np.ones(0)

    def randomize(self, channels: int) -> None:
        self._apply = self.R.rand() < self.prob
        self._shift = self.R.normal(0.0, self.shift_std, channels)
        self._scale = self.R.normal(1.0, self.scale_std, channels)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        data = convert_to_tensor(img, track_meta=False)
        if randomize:
            self.randomize(data.shape[0])
        if not self._apply:
            return img
        view = [-1] + [1] * (data.ndim - 1)
        shift = torch.as_tensor(self._shift, dtype=data.dtype, device=data.device).view(view)
        scale = torch.as_tensor(self._scale, dtype=data.dtype, device=data.device).view(view)
        return with_meta_of((data + shift) * scale, img)


class RandShiftScaleIntensityd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandShiftScaleIntensity`: the same ``s`` and ``m`` for every key (a segment
    and its context come from one image)."""

    backend = RandShiftScaleIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        shift_std: float = 0.05,
        scale_std: float = 0.01,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.augment = RandShiftScaleIntensity(shift_std, scale_std, prob)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.augment.randomize(int(data))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        self.randomize(d[keys[0]].shape[0])
        for key in keys:
            d[key] = self.augment(d[key], randomize=False)
        return d


RandDeepMedicSegmentsD = RandDeepMedicSegmentsDict = RandDeepMedicSegmentsd
RandShiftScaleIntensityD = RandShiftScaleIntensityDict = RandShiftScaleIntensityd
