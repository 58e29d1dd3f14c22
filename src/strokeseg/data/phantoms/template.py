"""The MNI ICBM152 2009a symmetric template shipped inside the nilearn wheel, as tissue maps for the phantoms.

The three volumes (T1, GM, WM probability) are read from nilearn's package folder, so nothing is
downloaded. The brain mask follows nilearn's own rule (T1/255 > 0.2); CSF is what the mask holds
beyond GM and WM. A coarse (2 mm) copy carries the layers outside the brain (outer CSF, skull,
scalp) that the non-skull-stripped layouts (CT, ISLES 2022) need; those are not in the template and
are built here as shells at fixed distances from the brain surface. Everything is loaded once per
process (module cache).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from strokeseg.errors import DataError

__all__ = ["MNI_FILES", "Template", "template_path", "load_template"]

MNI_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_BRAIN_THRESHOLD = 0.2  # nilearn's load_mni152_brain_mask rule on T1/255
_COARSE = 2  # mm, spacing of the coarse copy (lesion centre candidates, head layers)
_HEAD_PAD_BELOW = 15  # coarse voxels added under the template, which stops at the brainstem
# outer CSF 0-3 mm, skull 3-9 mm, scalp 9-14 mm outside the brain surface (typical adult head)
_HEAD_LAYERS_MM = ((0.0, 3.0), (3.0, 9.0), (9.0, 14.0))


@dataclass(frozen=True)
class Template:
    """Tissue maps of the template in its world space (RAS mm).

    Args:
        tissue: ``(1, 3, I, J, K)`` float32 GM, WM, CSF fractions on the 1 mm grid.
        origin_mm: world position of voxel (0, 0, 0) of ``tissue``; the grid is axis-aligned, 1 mm.
        coarse: ``(3, I2, J2, K2)`` float32 GM, WM, CSF at 2 mm (block means).
        coarse_origin_mm: world position of voxel (0, 0, 0) of ``coarse``.
        head: ``(1, 3, I2, J2, K3)`` float32 outer-CSF, skull, scalp fractions at 2 mm (padded below).
        head_origin_mm: world position of voxel (0, 0, 0) of ``head``.
        skull_base_mm: ``(P, 3)`` brain-surface points near the sinuses and the skull base.
        brain_min_mm / brain_max_mm: bounding box of the brain mask.
    """

    tissue: torch.Tensor
    origin_mm: np.ndarray
    coarse: np.ndarray
    coarse_origin_mm: np.ndarray
    head: torch.Tensor
    head_origin_mm: np.ndarray
    skull_base_mm: np.ndarray
    brain_min_mm: np.ndarray
    brain_max_mm: np.ndarray

    spacing_mm: float = 1.0
    coarse_spacing_mm: float = float(_COARSE)

    @property
    def brain_centre_mm(self) -> np.ndarray:
        """Centre of the brain bounding box (world mm)."""
        return (self.brain_min_mm + self.brain_max_mm) / 2

    def coarse_points_mm(self) -> np.ndarray:
        """World coordinates ``(I2, J2, K2, 3)`` of the voxels of ``coarse``."""
        axes = [
            self.coarse_origin_mm[d] + self.coarse_spacing_mm * np.arange(n)
            for d, n in enumerate(self.coarse.shape[1:])
        ]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def template_path(name: str) -> Path:
    """Path of one MNI file (``t1``, ``gm``, ``wm``) inside the installed nilearn package.

    Raises:
        DataError: nilearn is not installed or the file is missing from its data folder.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the synthetic phantoms need the MNI template shipped with nilearn; nilearn is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / MNI_FILES[name]
    if not path.is_file():
        raise DataError(f"MNI template file missing from the nilearn package: {path}")
    return path


def _read(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(template_path(name)))
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise DataError(
            f"{template_path(name)}: expected an axis-aligned 1 mm RAS affine, found {affine[:3, :3].tolist()}"
        )
    return np.asarray(img.dataobj, dtype=np.float32) / 255.0, affine


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-n) % factor) for n in volume.shape]
    padded = np.pad(volume, pad)
    shape = [n // factor for n in padded.shape]
    return padded.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def _ramp(distance: np.ndarray, start: float, stop: float, soft: float = 1.0) -> np.ndarray:
    """Soft indicator of ``start < distance <= stop`` (linear edges of width ``soft`` mm)."""
    rise = np.clip((distance - start) / soft + 0.5, 0, 1)
    fall = np.clip((stop - distance) / soft + 0.5, 0, 1)
    return (rise * fall).astype(np.float32)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load (once per process) the template tissue maps and derived layers.

    Raises:
        DataError: the template files cannot be found or have an unexpected geometry.
    """
    t1, affine = _read("t1")
    gm, _ = _read("gm")
    wm, _ = _read("wm")
    mask = (t1 > _BRAIN_THRESHOLD).astype(np.float32)
    gm *= mask
    wm *= mask
    csf = np.clip(mask * (1.0 - gm - wm), 0.0, 1.0)
    tissue = np.ascontiguousarray(np.stack([gm, wm, csf]))  # nibabel hands out Fortran-ordered arrays
    origin = affine[:3, 3].copy()

    coarse = np.ascontiguousarray(np.stack([_block_mean(v, _COARSE) for v in tissue]), dtype=np.float32)
    coarse_origin = origin + (_COARSE - 1) / 2.0
    brain2 = coarse.sum(axis=0) > 0.5
    padded = np.pad(brain2, ((0, 0), (0, 0), (_HEAD_PAD_BELOW, 0)))
    distance = ndimage.distance_transform_edt(~padded).astype(np.float32) * _COARSE
    head = np.stack([_ramp(distance, lo, hi) for lo, hi in _HEAD_LAYERS_MM]) * (~padded)
    head_origin = coarse_origin - np.array([0.0, 0.0, _HEAD_PAD_BELOW * _COARSE])

    surface = brain2 & ~ndimage.binary_erosion(brain2)
    points = np.argwhere(surface) * _COARSE + coarse_origin
    x, y, z = points.T
    frontal_sinus = (np.abs(x) < 35) & (y > 15) & (z < -5)
    temporal_mastoid = (np.abs(x) > 25) & (y > -45) & (y < 15) & (z < -15)
    skull_base = points[frontal_sinus | temporal_mastoid].astype(np.float32)

    inside = np.argwhere(mask > 0)
    brain_min = inside.min(axis=0) + origin
    brain_max = inside.max(axis=0) + origin
    return Template(
        tissue=torch.from_numpy(tissue)[None],
        origin_mm=origin,
        coarse=coarse,
        coarse_origin_mm=coarse_origin,
        head=torch.from_numpy(np.ascontiguousarray(head, dtype=np.float32))[None],
        head_origin_mm=head_origin,
        skull_base_mm=skull_base,
        brain_min_mm=brain_min.astype(np.float64),
        brain_max_mm=brain_max.astype(np.float64),
    )
