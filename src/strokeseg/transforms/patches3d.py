"""Balanced 3-D training patches (Clèrigues et al. 2020, §3.3): lesion-centred with a random offset + a brain grid.

Clèrigues A et al. Acute and sub-acute stroke lesion segmentation from multimodal MRI. Comput Methods Programs
Biomed 194 (2020) 105521, doi:10.1016/j.cmpb.2020.105521.

Half of the patches are centred on lesion voxels shifted by a random offset of up to half the patch (so the
sampled voxel stays inside the patch and the lesion is seen at every position), the other half on healthy brain
voxels at regular spatial steps. Lesion patches are augmented with a sagittal reflection or a 90/180/270 degree
axial rotation, applied to image and label together. MONAI's ``RandCropByPosNegLabel`` centres crops exactly on
voxels, shifts them back inside the image and has no grid mode, hence this transform. The paper's "Baseline"
(DeepMedic-style sampling) is the same transform with ``offset=False, grid=False, augment=False``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple_rep

from strokeseg.errors import DataError
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.transforms.foreground import brain_mask
from strokeseg.transforms.validation import source_name

__all__ = [
    "URESNET_PATCH_SIZE",
    "grid_centres",
    "extract_patch",
    "RandBalancedPatches3D",
    "RandBalancedPatches3Dd",
    "RandBalancedPatches3DD",
    "RandBalancedPatches3DDict",
]

URESNET_PATCH_SIZE = (24, 24, 16)  # Clèrigues et al. 2020, §3.3
# Clèrigues et al. 2020, §3.3: sagittal reflection, axial rotations
AUGMENTATIONS = ("none", "flip", "rot90", "rot180", "rot270")


def grid_centres(mask: torch.Tensor, step: Sequence[int]) -> torch.Tensor:
    """Centres of a regular grid with ``step`` voxels per axis (phase ``step // 2``) that fall inside ``mask``.

    Returns:
        ``(N, 3)`` long tensor of voxel indices.
    """
    axes = [torch.arange(s // 2, n, s) for n, s in zip(mask.shape, step, strict=True)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid[mask[grid[:, 0], grid[:, 1], grid[:, 2]]]


def extract_patch(volume: torch.Tensor, centre: Sequence[int], size: Sequence[int], pad_value) -> torch.Tensor:
    """Cut ``(C, *size)`` around ``centre`` (voxel ``c - s // 2`` is the first), padding outside the volume.

    Args:
        volume: ``(C, X, Y, Z)``.
        centre: voxel index.
        size: patch size.
        pad_value: scalar or per-channel ``(C,)`` tensor used outside the volume.
    """
    start = [int(c) - s // 2 for c, s in zip(centre, size, strict=True)]
    src = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, size, volume.shape[1:], strict=True))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start, strict=True))
    if all(sl.start == 0 and sl.stop == s for sl, s in zip(dst, size, strict=True)):
        return volume[(slice(None), *src)].clone()
    out = torch.empty((volume.shape[0], *size), dtype=volume.dtype)
    out[:] = torch.as_tensor(pad_value, dtype=volume.dtype).reshape(-1, 1, 1, 1)
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def _augment(patch: torch.Tensor, op: str) -> torch.Tensor:
    """Sagittal reflection (voxel axis 0, left-right) or rotation in the axial plane (axes 0, 1) of ``(C, X, Y, Z)``."""
    if op == "flip":
        return torch.flip(patch, dims=(1,))
    if op.startswith("rot"):
        return torch.rot90(patch, k=int(op[3:]) // 90, dims=(1, 2))
    return patch


class RandBalancedPatches3D(Randomizable, Transform, MultiSampleTrait):
    """Draw ``num_samples`` patches of ``(C, X, Y, Z)`` image + ``(1, X, Y, Z)`` label, half on lesions, half on brain.

    Each patch is a lesion patch with probability ``lesion_ratio`` (0.5 in Clèrigues et al. 2020): a lesion voxel is
    drawn uniformly and the patch centre is moved from it by a uniform integer offset in ``(-s/2, s/2]`` per axis
    (``offset=True``), so the voxel lands anywhere inside the patch; it is then, with ``augment=True``, reflected
    sagittally or rotated by 90/180/270 degrees in the axial plane (each of the five options, identity included,
    equally likely), image and label alike. Other patches are centred on healthy brain voxels: with
    ``grid=True`` a random subset of a regular grid (``grid_step``, half the patch by default) over the brain,
    else random voxels. A case without lesion gives brain patches only. Outside the volume images are padded
    with each channel's minimum (the background), labels with 0.

    Args:
        patch_size: patch size (24 x 24 x 16 in Clèrigues et al. 2020); rotations need equal sizes on axes 0 and 1.
        num_samples: patches per call.
        lesion_ratio: probability of a lesion patch.
        offset: random offset of lesion patches (False: centred on the lesion voxel, the "Baseline").
        grid: brain patches on a regular grid (False: on random healthy brain voxels).
        augment: reflection/rotation of lesion patches.
        grid_step: grid spacing in voxels (default: half the patch size).

    Raises:
        DataError: image and label shapes disagree or the image holds no brain voxel; the message names the file.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        patch_size: Sequence[int] = URESNET_PATCH_SIZE,
        num_samples: int = 16,
        lesion_ratio: float = 0.5,
        offset: BoolKnob = True,
        grid: BoolKnob = True,
        augment: BoolKnob = True,
        grid_step: Sequence[int] | None = None,
    ) -> None:
        self.patch_size = tuple(int(s) for s in ensure_tuple_rep(patch_size, 3))
        if num_samples < 1 or not 0.0 <= lesion_ratio <= 1.0:
            raise ValueError(f"num_samples >= 1 and 0 <= lesion_ratio <= 1 required, got {num_samples}, {lesion_ratio}")
        if augment and self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"axial rotations need a square axial patch, got {self.patch_size}")
        self.num_samples = int(num_samples)
        self.lesion_ratio = float(lesion_ratio)
        self.offset, self.grid = as_bool(offset, "offset"), as_bool(grid, "grid")
        self.augment = as_bool(augment, "augment")
        self.grid_step = tuple(max(1, s // 2) for s in self.patch_size) if grid_step is None else tuple(grid_step)
        self.last_kinds: list[str] = []
        self.last_centres: list[list[int]] = []

    def randomize(self, data=None) -> None:  # the draws depend on the case; they happen in __call__
        pass

    def _pick(self, candidates: torch.Tensor, n: int) -> torch.Tensor:
        replace = len(candidates) < n
        return candidates[torch.as_tensor(self.R.choice(len(candidates), size=n, replace=replace), dtype=torch.long)]

    def __call__(self, img: torch.Tensor, label: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Returns ``num_samples`` ``(image, label)`` patch pairs; ``last_kinds`` / ``last_centres`` describe them."""
        name = source_name(img)
        # plain tensors: a patch cut inside the volume would otherwise stay a MetaTensor and one padded at the border
        # would not, and a batch mixing both does not collate
        image, seg = convert_to_tensor(img, track_meta=False), convert_to_tensor(label, track_meta=False)
        if image.ndim != 4 or seg.ndim != 4 or image.shape[1:] != seg.shape[1:]:
            raise DataError(
                f"{name}: image {tuple(image.shape)} and label {tuple(seg.shape)} must be (C, X, Y, Z) alike"
            )
        lesion = seg[0] > 0
        brain = brain_mask(image, background="minimum")  # the volumes are z-scored as a whole
        healthy = brain & ~lesion
        if not bool(healthy.any()):
            raise DataError(f"{name}: no healthy brain voxel to sample patches from")
        lesion_voxels = torch.nonzero(lesion)
        n_lesion = int(self.R.binomial(self.num_samples, self.lesion_ratio)) if len(lesion_voxels) else 0
        n_brain = self.num_samples - n_lesion
        centres, kinds = [], []
        if n_lesion:
            chosen = self._pick(lesion_voxels, n_lesion)
            if self.offset:
                low = np.array([-(s // 2) + 1 for s in self.patch_size])
                high = np.array([s // 2 for s in self.patch_size])
                chosen = chosen + torch.as_tensor(self.R.randint(low, high + 1, size=(n_lesion, 3)), dtype=torch.long)
            ops = self.R.randint(len(AUGMENTATIONS), size=n_lesion) if self.augment else np.zeros(n_lesion, int)
            centres += list(chosen)
            kinds += [AUGMENTATIONS[i] for i in ops]
        if n_brain:
            candidates = grid_centres(healthy, self.grid_step) if self.grid else torch.empty(0, 3, dtype=torch.long)
            if len(candidates) == 0:
                candidates = torch.nonzero(healthy)
            centres += list(self._pick(candidates, n_brain))
            kinds += ["brain"] * n_brain
        background = image.reshape(image.shape[0], -1).amin(dim=1)
        pairs = []
        for centre, kind in zip(centres, kinds, strict=True):
            patch = extract_patch(image, centre.tolist(), self.patch_size, background)
            patch_label = extract_patch(seg, centre.tolist(), self.patch_size, 0)
            pairs.append((_augment(patch, kind), _augment(patch_label, kind)))
        self.last_kinds = ["lesion" if k != "brain" else k for k in kinds]
        self.last_centres = [c.tolist() for c in centres]
        return pairs


class RandBalancedPatches3Dd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandBalancedPatches3D`: returns ``num_samples`` dicts.

    Args:
        keys: ``(image_key, label_key)``.
        kwargs: the arguments of :class:`RandBalancedPatches3D`.
    """

    backend = RandBalancedPatches3D.backend

    def __init__(self, keys: KeysCollection, **kwargs) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, label_key), got {self.keys}")
        self.sampler = RandBalancedPatches3D(**kwargs)

    def set_random_state(self, seed=None, state=None) -> RandBalancedPatches3Dd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict[Hashable, torch.Tensor]]:
        image_key, label_key = self.keys
        pairs = self.sampler(data[image_key], data[label_key])
        rest = {k: v for k, v in data.items() if k not in (image_key, label_key)}
        return [{**rest, image_key: patch, label_key: patch_label} for patch, patch_label in pairs]


RandBalancedPatches3DD = RandBalancedPatches3DDict = RandBalancedPatches3Dd
