"""Lesion-centred 2-D training patches with a random offset (Chen et al. 2017, §4.2), and the paper's case weighting.

Each lesion patch is cut around a random lesion voxel, with that voxel placed at a uniformly random position
inside the patch, so the patches mix lesion and tissue; a share of patches is taken around random brain voxels
with no requirement on lesion. A random rotation is applied while cutting (the patch is a rotated window of the
slice), so rotated patches have no zero-filled corners. :func:`lesion_area_sampler` draws the training cases in
proportion to their lesion area, which is how Chen et al. 2017's one-patch-per-lesion-pixel scheme weights the cases.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import convert_to_tensor, ensure_tuple_rep

from strokeseg.errors import DataError
from strokeseg.transforms.foreground import brain_mask
from strokeseg.transforms.validation import source_name

__all__ = [
    "RandLesionPatch2D",
    "RandLesionPatch2Dd",
    "patch_affine",
    "lesion_areas",
    "lesion_area_sampler",
    "PATCH_WEIGHTINGS",
]

# Chen et al. 2017, Table 3: 64 × 64 training patches gave the best Dice.
EDD_PATCH_SIZE = (64, 64)
# Not in Chen et al. 2017 (a knob of ours): a small share of lesion-agnostic patches so the net sees healthy slices.
DEFAULT_BACKGROUND_RATIO = 0.1
# How training cases are weighted: "lesion_area" = Chen et al. 2017, §4.2 (one patch per lesion pixel, so a case
# counts in proportion to its lesion area); "case" = every case drawn equally often (samples_per_case patches each).
PATCH_WEIGHTINGS = ("lesion_area", "case")


def patch_affine(
    affine: torch.Tensor, origin: Sequence[float], angle: float = 0.0, pivot: Sequence[float] = (0.0, 0.0)
) -> torch.Tensor:
    """Affine of a 2-D patch whose pixel ``(0, 0)`` is voxel ``origin = (row, col, slice)`` of the volume.

    The result stays 4 × 4 (the patch is a one-slice image embedded in the volume's world space): patch pixel
    ``(a, b)`` maps to the world position of volume voxel ``(row + a, col + b, slice)``. With a rotation, the
    patch is the window of the slice turned by ``angle`` about patch pixel ``pivot = (u, v)``, which stays at
    voxel ``(row + u, col + v)``: pixel ``(a, b)`` maps to ``(row + u, col + v) + R(angle)·(a − u, b − v)``.

    Args:
        affine: ``(4, 4)`` voxel-to-world affine of the volume.
        origin: ``(row, col, slice)`` voxel index of the unrotated patch's first pixel (may lie outside the volume).
        angle: in-plane rotation in radians (0: none).
        pivot: ``(u, v)`` patch pixel the rotation turns about.
    """
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    pivot_t = torch.as_tensor([float(v) for v in pivot], dtype=torch.float64)
    shift = torch.eye(4, dtype=torch.float64)
    shift[:2, :2] = rotation
    origin_t = torch.as_tensor([float(v) for v in origin], dtype=torch.float64)
    shift[:2, 3] = origin_t[:2] + pivot_t - rotation @ pivot_t
    shift[2, 3] = origin_t[2]
    return affine.to(torch.float64) @ shift


class RandLesionPatch2D(Randomizable, Transform, MultiSampleTrait):
    """Cut ``num_samples`` 2-D axial patches from a ``(C, H, W, D)`` volume, centred on lesions with a random offset.

    Lesion patches: a lesion voxel ``(x, y, z)`` is drawn uniformly among all label voxels > 0 and placed at a
    uniformly random pixel ``(u, v)`` of the patch, i.e. the patch covers rows ``x - u … x - u + h - 1`` and
    columns ``y - v … y - v + w - 1`` of slice ``z`` (Chen et al. 2017, §4.2). Each patch is a background patch with
    probability ``background_ratio``: the same construction around a random brain voxel (any image channel
    != 0), so it always touches the brain; a volume without lesion gives background patches only, one without
    brain voxels patches around random voxels. All draws use ``self.R`` at once (no loop over voxels).

    MONAI's ``RandCropByPosNegLabel`` centres crops on voxels and shifts crops back inside the image, which
    removes the random offset of Chen et al. 2017 and cannot cut a 2-D patch out of a 3-D volume, hence this transform.

    Rotation (Chen et al. 2017, §4.2: "randomly rotated", range not given): with probability ``rotation_prob`` a patch
    is cut as a window of the slice turned by an angle drawn uniformly in ``[-rotation_range, rotation_range]``
    about the drawn voxel, so that voxel stays at ``(u, v)`` and the patch is filled with slice content to its
    corners (MONAI's ``RandRotated`` on the cut patch would fill the corners with a constant, which is not the
    background of a scan that is not skull-stripped; rotating every whole slice per patch would cost far more).
    Rotated images are sampled bilinearly, labels by nearest neighbour, both by ``grid_sample``; unrotated
    patches are exact copies of the slice pixels.

    Where a patch leaves the slice it is padded: images with ``image_pad_value``, labels with 0.

    Args:
        patch_size: ``(h, w)`` of the patches (64 × 64 in Chen et al. 2017) or one int.
        num_samples: number of patches per call.
        background_ratio: probability of a patch being a lesion-agnostic brain patch (default 0.1).
        image_pad_value: value outside the slice for images; ``None`` = each channel's volume minimum. The
            default 0 is the background of both raw skull-stripped DWI and EDD-normalised volumes (whose
            minimum lies inside the brain, so padding with it would draw an edge the network never sees at
            inference, where slices are padded with 0).
        rotation_range: largest rotation angle in radians (0: no rotation).
        rotation_prob: probability that a patch is rotated.

    Raises:
        DataError: image and label have different spatial shapes or are not ``(C, H, W, D)``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        patch_size: Sequence[int] | int = EDD_PATCH_SIZE,
        num_samples: int = 1,
        background_ratio: float = DEFAULT_BACKGROUND_RATIO,
        image_pad_value: float | None = 0.0,
        rotation_range: float = 0.0,
        rotation_prob: float = 0.0,
    ) -> None:
        self.patch_size = tuple(int(s) for s in ensure_tuple_rep(patch_size, 2))
        if min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if not 0.0 <= background_ratio <= 1.0:
            raise ValueError(f"background_ratio must be in [0, 1], got {background_ratio}.")
        self.num_samples = int(num_samples)
        self.background_ratio = float(background_ratio)
        if rotation_range < 0 or not 0.0 <= rotation_prob <= 1.0:
            raise ValueError(
                f"rotation_range must be >= 0 and rotation_prob in [0, 1], got {rotation_range}, {rotation_prob}."
            )
        self.image_pad_value = image_pad_value
        self.rotation_range = float(rotation_range)
        self.rotation_prob = float(rotation_prob)
        self.origins = np.zeros((0, 3), dtype=np.int64)
        self.offsets = np.zeros((0, 2), dtype=np.int64)
        self.angles = np.zeros(0, dtype=np.float64)
        self.is_lesion = np.zeros(0, dtype=bool)

    def randomize(self, label: NdarrayOrTensor | None, image: NdarrayOrTensor | None = None) -> None:
        """Draw the patch origins ``(row, col, slice)`` of the next call from ``label`` (and ``image``'s brain).

        Args:
            label: ``(C_l, H, W, D)`` reference; voxels > 0 in any channel are lesion. ``None`` = no lesion.
            image: ``(C, H, W, D)`` image giving the brain mask for background patches
                (:func:`strokeseg.transforms.foreground.brain_mask`: any channel non-zero).
        """
        if label is None and image is None:
            raise ValueError("RandLesionPatch2D.randomize needs a label or an image to know the volume's shape.")
        reference = label if label is not None else image
        spatial = tuple(reference.shape[1:])
        if len(spatial) != 3 or (label is not None and image is not None and tuple(image.shape[1:]) != spatial):
            shapes = [tuple(v.shape) for v in (label, image) if v is not None]
            raise DataError(
                f"{source_name(reference)}: lesion patches need (C, H, W, D) image and label of one spatial shape; "
                f"got {shapes}."
            )
        lesion_flat = _flat_lesion(label) if label is not None else np.zeros(0, dtype=np.int64)

        n = self.num_samples
        is_background = self.R.random_sample(n) < self.background_ratio
        if lesion_flat.size == 0:
            is_background[:] = True
        centres = np.empty(n, dtype=np.int64)
        n_lesion = int((~is_background).sum())
        if n_lesion:
            centres[~is_background] = lesion_flat[self.R.randint(lesion_flat.size, size=n_lesion)]
        n_background = n - n_lesion
        if n_background:
            brain = brain_mask(image) if image is not None else torch.zeros(0, dtype=torch.bool)
            brain_flat = np.flatnonzero(brain.cpu().numpy())
            if brain_flat.size:
                centres[is_background] = brain_flat[self.R.randint(brain_flat.size, size=n_background)]
            else:
                centres[is_background] = self.R.randint(int(np.prod(spatial)), size=n_background)
        offsets = np.stack([self.R.randint(s, size=n) for s in self.patch_size], axis=1)
        centre_index = np.stack(np.unravel_index(centres, spatial), axis=1).astype(np.int64)
        self.origins = centre_index.copy()
        self.origins[:, :2] -= offsets
        self.offsets = offsets.astype(np.int64)
        self.angles = np.zeros(n, dtype=np.float64)
        if self.rotation_prob > 0 and self.rotation_range > 0:  # no draw otherwise: unrotated streams unchanged
            rotate = self.R.random_sample(n) < self.rotation_prob
            angles = self.R.uniform(-self.rotation_range, self.rotation_range, size=n)
            self.angles = np.where(rotate, angles, 0.0)
        self.is_lesion = ~is_background

    def crop(self, img: NdarrayOrTensor, pad_value: float | None = None, mode: str = "bilinear") -> list[torch.Tensor]:
        """Cut the patches drawn by the last :meth:`randomize` from ``img`` ``(C, H, W, D)`` → list of ``(C, h, w)``.

        Args:
            img: the volume; a ``MetaTensor`` gives ``MetaTensor`` patches whose affine is :func:`patch_affine`.
            pad_value: value outside the slice; ``None`` = each channel's minimum over the volume.
            mode: interpolation of rotated patches, ``"bilinear"`` (images) or ``"nearest"`` (labels).
        """
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}.")
        name = source_name(img)
        volume = convert_to_tensor(img, track_meta=False)
        if volume.ndim != 4:
            raise DataError(f"{name}: expected a (C, H, W, D) volume, got shape {tuple(volume.shape)}.")
        channels, height, width, _ = volume.shape
        if pad_value is None:
            fill = volume.reshape(channels, -1).amin(dim=1).reshape(channels, 1, 1)
        else:
            fill = torch.full((channels, 1, 1), float(pad_value), dtype=volume.dtype, device=volume.device)
        h, w = self.patch_size
        patches = []
        for row0, col0, z in self.origins.tolist():
            patch = fill.expand(channels, h, w).clone()
            r_start, r_stop = max(row0, 0), min(row0 + h, height)
            c_start, c_stop = max(col0, 0), min(col0 + w, width)
            if r_start < r_stop and c_start < c_stop:
                patch[:, r_start - row0 : r_stop - row0, c_start - col0 : c_stop - col0] = volume[
                    :, r_start:r_stop, c_start:c_stop, z
                ]
            patches.append(patch)
        rotated = np.flatnonzero(self.angles != 0)
        if rotated.size:
            for i, patch in zip(rotated.tolist(), self._rotated(volume, fill, rotated, mode), strict=True):
                patches[i] = patch
        if isinstance(img, MetaTensor):
            return [self._with_meta(patch, img, i) for i, patch in enumerate(patches)]
        return patches

    def _rotated(self, volume: torch.Tensor, fill: torch.Tensor, which: np.ndarray, mode: str) -> torch.Tensor:
        """Rotated windows ``(len(which), C, h, w)`` of the slices of ``volume`` for the patches ``which``."""
        channels, height, width, _ = volume.shape
        h, w = self.patch_size
        device = volume.device
        angle = torch.as_tensor(self.angles[which], dtype=torch.float64, device=device)[:, None, None]
        pivot = torch.as_tensor(self.offsets[which], dtype=torch.float64, device=device)
        centre = torch.as_tensor(self.origins[which, :2] + self.offsets[which], dtype=torch.float64, device=device)
        da = torch.arange(h, dtype=torch.float64, device=device)[None, :, None] - pivot[:, 0, None, None]
        db = torch.arange(w, dtype=torch.float64, device=device)[None, None, :] - pivot[:, 1, None, None]
        cos, sin = torch.cos(angle), torch.sin(angle)
        rows = centre[:, 0, None, None] + cos * da - sin * db  # (N, h, w) source row of each patch pixel
        cols = centre[:, 1, None, None] + sin * da + cos * db
        # grid_sample (align_corners=False) wants (x, y) = (col, row) normalised as (2·i + 1) / size − 1
        grid = torch.stack([(2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1], dim=-1).to(torch.float32)
        slices = torch.as_tensor(self.origins[which, 2], dtype=torch.long, device=device)
        source = volume.permute(3, 0, 1, 2)[slices].to(torch.float32)  # (N, C, H, W)
        offset = fill.to(torch.float32)[None]  # sample (x − fill) with zero padding, then add fill back
        out = F.grid_sample(source - offset, grid, mode=mode, padding_mode="zeros", align_corners=False) + offset
        return out.to(volume.dtype) if volume.dtype.is_floating_point else out.round().to(volume.dtype)

    def _with_meta(self, patch: torch.Tensor, img: MetaTensor, index: int) -> MetaTensor:
        origin = self.origins[index]
        meta = deepcopy({k: v for k, v in img.meta.items() if k != "affine"})
        meta["spatial_shape"] = np.asarray(self.patch_size, dtype=np.int64)
        meta["patch_index"] = index
        meta["patch_origin"] = origin.copy()
        meta["patch_angle"] = float(self.angles[index])
        out = MetaTensor(patch, meta=meta)
        out.affine = patch_affine(img.affine, origin.tolist(), float(self.angles[index]), self.offsets[index].tolist())
        return out

    def __call__(
        self,
        img: NdarrayOrTensor,
        label: NdarrayOrTensor | None = None,
        image: NdarrayOrTensor | None = None,
        randomize: bool = True,
    ) -> list[torch.Tensor]:
        """Draw (unless ``randomize=False``) and cut ``num_samples`` patches ``(C, h, w)`` from ``img``.

        Args:
            img: ``(C, H, W, D)`` volume to cut.
            label: ``(C_l, H, W, D)`` lesion reference for the draw (default: no lesion ⇒ brain patches).
            image: brain-mask source for background patches (default ``img``).
            randomize: draw new origins first.
        """
        if randomize:
            self.randomize(label, img if image is None else image)
        return self.crop(img, self.image_pad_value)


class RandLesionPatch2Dd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandLesionPatch2D`: the same patch origins for every key.

    Returns a list of ``num_samples`` dictionaries (like ``RandCropByPosNegLabeld``, so ``monai.data.Dataset`` +
    ``DataLoader`` with ``list_data_collate`` flatten them into the batch). Keys not in ``keys`` are deep-copied
    into every sample. MetaTensor inputs give MetaTensor patches whose 4 × 4 affine places the patch in world
    space (:func:`patch_affine`) and whose meta holds ``patch_index`` and ``patch_origin`` (row, col, slice); the
    patches start with an empty transform trace (this crop is not invertible).

    Args:
        keys: keys of the ``(C, H, W, D)`` volumes to cut (images and label).
        label_key: key of the lesion reference (voxels > 0 are lesion); padded with 0.
        patch_size: ``(h, w)`` (64 × 64 in Chen et al. 2017).
        num_samples: patches per case.
        background_ratio: probability of a lesion-agnostic brain patch (default 0.1).
        image_key: key whose non-zero voxels are the brain (default: the first key that is not ``label_key``).
        image_pad_value: pad value of image keys (``None`` = volume minimum), see :class:`RandLesionPatch2D`.
        rotation_range: largest rotation angle in radians (0: none), see :class:`RandLesionPatch2D`.
        rotation_prob: probability that a patch is rotated (same angle for every key of a sample).
        allow_missing_keys: do not fail on a missing key.

    Raises:
        DataError: the volumes of one case differ in spatial shape or are not 4-D.

    Example:
        >>> Compose([RandLesionPatch2Dd(["image", "label"], "label", num_samples=8),
        ...          RandFlipd(["image", "label"], prob=0.5, spatial_axis=0)])
    """

    backend = RandLesionPatch2D.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        patch_size: Sequence[int] | int = EDD_PATCH_SIZE,
        num_samples: int = 1,
        background_ratio: float = DEFAULT_BACKGROUND_RATIO,
        image_key: str | None = None,
        image_pad_value: float | None = 0.0,
        rotation_range: float = 0.0,
        rotation_prob: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.image_key = image_key
        self.sampler = RandLesionPatch2D(
            patch_size, num_samples, background_ratio, image_pad_value, rotation_range, rotation_prob
        )

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandLesionPatch2Dd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, label: NdarrayOrTensor | None, image: NdarrayOrTensor | None = None) -> None:
        self.sampler.randomize(label, image)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        d = dict(data)
        image_key = self.image_key or next((k for k in self.keys if k != self.label_key), None)
        label = d.get(self.label_key)
        image = d.get(image_key) if image_key is not None else None
        present = [k for k in self.key_iterator(d)]
        shapes = {k: tuple(d[k].shape) for k in present}
        if any(len(s) != 4 for s in shapes.values()) or len({s[1:] for s in shapes.values()}) > 1:
            name = source_name(d[present[0]]) if present else "<case>"
            raise DataError(
                f"{name}: RandLesionPatch2Dd needs (C, H, W, D) volumes of one spatial shape; got {shapes}."
            )
        self.randomize(label, image)

        samples: list[dict[Hashable, NdarrayOrTensor]] = [dict(d) for _ in range(self.sampler.num_samples)]
        for sample in samples:
            for key in set(d).difference(self.keys):
                sample[key] = deepcopy(d[key])
        for key in present:
            is_label = key == self.label_key
            pad = 0.0 if is_label else self.sampler.image_pad_value
            mode = "nearest" if is_label else "bilinear"
            for sample, patch in zip(samples, self.sampler.crop(d[key], pad, mode), strict=True):
                sample[key] = patch
        return samples


def _flat_lesion(label: NdarrayOrTensor) -> np.ndarray:
    """Flat spatial indices of the voxels of ``(C_l, *spatial)`` that are > 0 in any channel."""
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    return np.flatnonzero((array > 0).any(axis=0))


def lesion_areas(data: Sequence[Mapping[str, object]], label_key: str = "label") -> np.ndarray:
    """In-plane lesion area (mm², summed over the slices) of each datalist entry's label file.

    The voxel count times the in-plane voxel area is proportional to the number of lesion pixels after the
    in-plane resampling of the bundles (the slice spacing is kept), whatever the scan's native resolution.
    Only the label files are read (``nibabel``), once, before training.

    Args:
        data: datalist entries with a label file path (or a ``(C, H, W, D)`` array) under ``label_key``.
        label_key: key of the label.

    Raises:
        DataError: an entry has no label, or its file cannot be read (names the file).
    """
    import nibabel as nib

    areas = np.zeros(len(data), dtype=np.float64)
    for i, entry in enumerate(data):
        source = entry.get(label_key)
        if source is None:
            raise DataError(f"case {entry.get('case', i)}: no '{label_key}' to weight the case by its lesion area.")
        if isinstance(source, (str, os.PathLike)):
            try:
                image = nib.load(os.fspath(source))
                count = int(np.count_nonzero(np.asanyarray(image.dataobj) > 0))
                zooms = image.header.get_zooms()
            except Exception as err:  # nibabel raises many types; name the file in one line
                raise DataError(f"{os.fspath(source)}: cannot read the label to weight its case: {err}") from err
            areas[i] = count * float(zooms[0]) * float(zooms[1] if len(zooms) > 1 else 1.0)
        else:
            array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
            areas[i] = float(np.count_nonzero(array > 0))
            if isinstance(source, MetaTensor):
                pixdim = source.pixdim
                areas[i] *= float(pixdim[0]) * float(pixdim[1] if len(pixdim) > 1 else 1.0)
    return areas


def lesion_area_sampler(
    data: Sequence[Mapping[str, object]], weighting: str = "lesion_area", label_key: str = "label"
) -> torch.utils.data.WeightedRandomSampler | None:
    """Case sampler of the EDD training loader for a patch ``weighting`` (a bundle knob).

    ``"lesion_area"`` (Chen et al. 2017, §4.2): the paper takes one patch per lesion pixel, so a case contributes in
    proportion to its lesion area. Drawing ``len(data)`` cases per epoch with replacement, with probability
    proportional to :func:`lesion_areas`, and ``samples_per_case`` patches around uniformly drawn lesion pixels
    of each, gives every lesion pixel of the training set the same expected number of patches: the paper's
    weighting. Cases without lesion are never drawn (they have no lesion pixel); the brain patches of
    ``background_ratio`` come from the drawn cases. If no case has a lesion, every case is drawn equally.
    ``"case"``: returns ``None``, i.e. a shuffled loader that visits every case once per epoch (each case counts
    equally, which gives small-lesion cases far more weight than the paper did).

    The sampler draws from torch's global generator, which ``monai.utils.set_determinism`` seeds.

    Args:
        data: training datalist.
        weighting: ``"lesion_area"`` or ``"case"``.
        label_key: key of the label in the entries.

    Raises:
        ValueError: unknown ``weighting``.
        DataError: a label cannot be read.
    """
    if weighting not in PATCH_WEIGHTINGS:
        raise ValueError(f"patch_weighting must be one of {PATCH_WEIGHTINGS}, got {weighting!r}.")
    if weighting == "case" or len(data) == 0:
        return None
    areas = lesion_areas(data, label_key)
    weights = areas if areas.sum() > 0 else np.ones_like(areas)
    return torch.utils.data.WeightedRandomSampler(weights.tolist(), num_samples=len(data), replacement=True)
