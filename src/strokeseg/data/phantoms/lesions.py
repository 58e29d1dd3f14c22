"""Stroke lesions and lesion-like confounders, drawn in template space and rasterised on native grids.

Each lesion is a smooth field on a small template-space box: an ellipsoid profile whose boundary is
made irregular by smoothed noise, confined to one hemisphere and to a vascular-territory-like
ellipsoid (MCA, ACA, PCA, deep/lenticulostriate). Three channels share the same shape and noise with
growing radii (core ≤ final infarct ≤ penumbra), so after thresholding at one level on any grid,
``core ⊂ final ⊂ penumbra`` holds exactly (trilinear interpolation keeps the ordering). Confounders
(air / susceptibility spots near the sinuses and the skull base) use the same machinery without a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from strokeseg.data.phantoms.anatomy import SubjectDeformation, roi_of_box, sample_field, template_points
from strokeseg.data.phantoms.difficulty import Difficulty
from strokeseg.data.phantoms.grids import Grid
from strokeseg.data.phantoms.template import Template, load_template

__all__ = [
    "CATEGORIES",
    "TERRITORIES",
    "LESION_CHANNELS",
    "LESION_THRESHOLD",
    "TemplateBlob",
    "Lesion",
    "Confounder",
    "LesionMaps",
    "draw_lesions",
    "draw_confounders",
    "rasterise",
    "lesion_maps",
    "confounder_map",
]

LESION_CHANNELS = ("core", "final", "penumbra")
LESION_THRESHOLD = 0.5
# lesion categories of the ISLES 2017 training set: lacunar/subcortical 10, small cortical 7,
# big cortical/main artery 26 subjects (Pérez Malla et al. 2019, §2.1)
CATEGORIES = {"lacunar": 10 / 43, "small_cortical": 7 / 43, "large_cortical": 26 / 43}
# territory ellipsoids in MNI mm for the right hemisphere (x mirrored for the left): centre, radii
TERRITORIES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "MCA": ((42.0, -12.0, 12.0), (26.0, 50.0, 38.0)),
    "ACA": ((9.0, 10.0, 40.0), (10.0, 52.0, 28.0)),
    "PCA": ((22.0, -72.0, 2.0), (18.0, 26.0, 22.0)),
    "deep": ((19.0, -8.0, 6.0), (12.0, 22.0, 16.0)),
}
_CATEGORY_TERRITORIES = {
    "lacunar": {"deep": 1.0},
    "small_cortical": {"MCA": 0.6, "ACA": 0.2, "PCA": 0.2},
    "large_cortical": {"MCA": 0.7, "ACA": 0.1, "PCA": 0.2},
}
# core radius (mm) of the profile, penumbra/core radius ratio, box spacing (mm)
_SIZES = {
    "lacunar": ((1.8, 5.0), (1.0, 1.25), 1.0),
    "small_cortical": ((3.5, 8.0), (1.1, 1.6), 1.0),
    "large_cortical": ((12.0, 22.0), (1.2, 1.7), 3.0),
}
_NOISE = 0.2  # log-amplitude of the boundary irregularity
_PROFILE_REACH = np.sqrt(-2.0 * np.log(LESION_THRESHOLD)) / np.exp(
    -2.5 * _NOISE
)  # farthest threshold crossing / radius


@dataclass(frozen=True)
class TemplateBlob:
    """Channels of a field on an axis-aligned template-space box: ``values`` ``(C, a, b, c)`` float32."""

    origin_mm: np.ndarray
    spacing_mm: float
    values: np.ndarray

    @property
    def box_max_mm(self) -> np.ndarray:
        """Far corner of the box."""
        return self.origin_mm + self.spacing_mm * (np.array(self.values.shape[1:]) - 1)


@dataclass(frozen=True)
class Lesion:
    """One ischaemic lesion of a patient (template space)."""

    category: str
    territory: str
    hemisphere: str
    centre_mm: np.ndarray
    radius_mm: float
    mismatch: float
    final_ratio: float
    blob: TemplateBlob = field(repr=False)


@dataclass(frozen=True)
class Confounder:
    """A bright non-lesion spot on DWI (air / susceptibility artefact)."""

    centre_mm: np.ndarray
    radius_mm: float
    strength: float
    blob: TemplateBlob = field(repr=False)


def _hemisphere_weight(x: np.ndarray, sign: float) -> np.ndarray:
    return np.clip((sign * x - 1.0) / 2.0, 0.0, 1.0)


def _territory_distance(points: np.ndarray, territory: str, sign: float) -> np.ndarray:
    centre, radii = TERRITORIES[territory]
    centre = np.array([sign * centre[0], centre[1], centre[2]])
    return np.sqrt((((points - centre) / np.array(radii)) ** 2).sum(axis=-1))


@lru_cache(maxsize=64)
def _candidates(category: str, territory: str, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Coarse template points allowed as the centre of a lesion (cached per category / territory / side)."""
    template = load_template()
    points = template.coarse_points_mm()
    gm, wm, _ = template.coarse
    inside = (_territory_distance(points, territory, sign) < 0.8) & (sign * points[..., 0] > 4.0)
    if category == "lacunar":
        inside &= gm + wm > 0.9
    elif category == "small_cortical":
        inside &= gm > 0.5
    else:
        inside &= gm + wm > 0.6
    if not inside.any():  # territories are drawn generously; this guards an empty intersection
        inside = (gm + wm > 0.8) & (sign * points[..., 0] > 8.0)
    return points.reshape(-1, 3), np.flatnonzero(inside)


def _pick_centre(rng: np.random.Generator, category: str, territory: str, sign: float) -> np.ndarray:
    points, candidates = _candidates(category, territory, sign)
    index = candidates[int(rng.integers(candidates.size))]
    return points[index].astype(np.float64) + rng.uniform(-1.0, 1.0, size=3)


def _lesion(
    rng: np.random.Generator, template: Template, category: str, sign: float, difficulty: Difficulty, acute: bool
) -> Lesion:
    names, weights = zip(*_CATEGORY_TERRITORIES[category].items(), strict=True)
    territory = str(rng.choice(names, p=np.array(weights)))
    centre = _pick_centre(rng, category, territory, sign)
    (r_lo, r_hi), (m_lo, m_hi), spacing = _SIZES[category]
    radius = rng.uniform(r_lo, r_hi) * difficulty.size
    mismatch = rng.uniform(m_lo, m_hi) if acute else 1.0
    final_ratio = 1.0 + (mismatch - 1.0) * rng.uniform(0.2, 0.8)
    axes = radius * rng.uniform(0.75, 1.25, size=3)
    rotation = Rotation.from_rotvec(rng.normal(size=3) * 0.8).as_matrix()

    half = _PROFILE_REACH * axes.max() * mismatch + 2 * spacing
    box_min = np.maximum(centre - half, template.brain_min_mm - spacing)
    box_max = np.minimum(centre + half, template.brain_max_mm + spacing)
    shape = np.maximum(np.ceil((box_max - box_min) / spacing).astype(int) + 1, 2)
    axes_mm = [box_min[d] + spacing * np.arange(shape[d]) for d in range(3)]
    points = np.stack(np.meshgrid(*axes_mm, indexing="ij"), axis=-1)
    local = (points - centre) @ rotation
    distance = np.sqrt(((local / axes) ** 2).sum(axis=-1))
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma=max(1.0, 0.3 * radius / spacing))
    noise = np.clip(noise / max(noise.std(), 1e-6), -2.5, 2.5)
    distance = distance * np.exp(-_NOISE * noise)
    confine = _hemisphere_weight(points[..., 0], sign) * np.clip(
        (1.3 - _territory_distance(points, territory, sign)) / 0.3, 0.0, 1.0
    )
    channels = [np.exp(-0.5 * (distance / ratio) ** 2) * confine for ratio in (1.0, final_ratio, mismatch)]
    blob = TemplateBlob(origin_mm=box_min, spacing_mm=float(spacing), values=np.stack(channels).astype(np.float32))
    return Lesion(
        category=category,
        territory=territory,
        hemisphere="right" if sign > 0 else "left",
        centre_mm=centre,
        radius_mm=float(radius),
        mismatch=float(mismatch),
        final_ratio=float(final_ratio),
        blob=blob,
    )


def draw_lesions(
    rng: np.random.Generator, template: Template, difficulty: Difficulty, acute: bool = True
) -> tuple[str, list[Lesion]]:
    """Draw 1-5 lesions in one hemisphere.

    The first lesion's category follows the seed-001 proportions; up to four additional lesions
    (emboli) are mostly small (lacunar or small cortical), so small lesions occur often.

    Args:
        rng: the patient's generator.
        template: loaded template.
        difficulty: size scale and number of extra lesions.
        acute: draw a penumbra larger than the core (``False``: completed, sub-acute infarct).

    Returns:
        The hemisphere (``left`` / ``right``) and the lesions.
    """
    sign = 1.0 if rng.random() < 0.5 else -1.0
    names = list(CATEGORIES)
    first = str(rng.choice(names, p=np.array(list(CATEGORIES.values()))))
    categories = [first] + [
        str(rng.choice(names, p=[0.45, 0.45, 0.10])) for _ in range(4) if rng.random() < difficulty.extra_lesion_p
    ]
    lesions = [_lesion(rng, template, category, sign, difficulty, acute) for category in categories]
    return ("right" if sign > 0 else "left"), lesions


def draw_confounders(rng: np.random.Generator, template: Template, difficulty: Difficulty) -> list[Confounder]:
    """Bright spots on the brain surface near the sinuses / skull base (the air artefacts of Chen et al. 2017, §1)."""
    low, high = difficulty.confounders
    count = int(rng.integers(low, high + 1))
    spots = []
    for _ in range(count):
        centre = template.skull_base_mm[int(rng.integers(len(template.skull_base_mm)))].astype(np.float64)
        radius = rng.uniform(1.5, 4.0)
        strength = rng.uniform(0.5, 1.2) * difficulty.contrast
        half = 3.0 * radius
        spacing = 1.0
        shape = int(np.ceil(2 * half / spacing)) + 1
        axis = np.arange(shape) * spacing - half
        d2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
        values = np.exp(-0.5 * d2 / radius**2)[None].astype(np.float32)
        blob = TemplateBlob(origin_mm=centre - half, spacing_mm=spacing, values=values)
        spots.append(Confounder(centre_mm=centre, radius_mm=float(radius), strength=float(strength), blob=blob))
    return spots


def rasterise(
    blob: TemplateBlob, deformation: SubjectDeformation, grid: Grid
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Sample a template-space blob on ``grid``: the voxel slices it covers and ``(C, ...)`` values there."""
    roi = roi_of_box(grid, deformation, blob.origin_mm, blob.box_max_mm, margin_mm=2.0 * blob.spacing_mm)
    if roi is None:
        return None
    points = template_points(deformation, grid, roi)
    values = sample_field(torch.from_numpy(blob.values)[None], blob.origin_mm, blob.spacing_mm, points)
    return roi, values.numpy()


@dataclass
class LesionMaps:
    """Lesion fields on one grid: ``core``, ``final``, ``penumbra`` float32 ``(I, J, K)`` (threshold
    :data:`LESION_THRESHOLD`), and ``lesion_id`` uint8 (1-based index of the dominant lesion, 0 = none)."""

    core: np.ndarray
    final: np.ndarray
    penumbra: np.ndarray
    lesion_id: np.ndarray

    def mask(self, channel: str) -> np.ndarray:
        """Boolean mask of one channel."""
        return getattr(self, channel) > LESION_THRESHOLD

    def weight(self, channel: str) -> np.ndarray:
        """Soft 0-1 membership of one channel (0.5 at the threshold, saturating 0.02 above it); cached."""
        cache = self.__dict__.setdefault("_weights", {})
        if channel not in cache:
            cache[channel] = np.clip((getattr(self, channel) - LESION_THRESHOLD) / 0.04 + 0.5, 0.0, 1.0).astype(
                np.float32
            )
        return cache[channel]


def lesion_maps(
    lesions: list[Lesion], deformation: SubjectDeformation, grid: Grid, parenchyma: np.ndarray
) -> LesionMaps:
    """Rasterise ``lesions`` on ``grid`` and clip them to the parenchyma (GM + WM fraction > 0.35).

    The clipping is applied inside each lesion's box only (the fields are 0 elsewhere), which gives the
    same maps as clipping the whole grid.
    """
    fields = np.zeros((3, *grid.shape), dtype=np.float32)
    lesion_id = np.zeros(grid.shape, dtype=np.uint8)
    rois = []
    for index, lesion in enumerate(lesions, start=1):
        sampled = rasterise(lesion.blob, deformation, grid)
        if sampled is None:
            continue
        roi, values = sampled
        values *= parenchyma[roi] > 0.35
        current = fields[(slice(None), *roi)]
        lesion_id[roi] = np.where(values[2] > current[2], index, lesion_id[roi])
        np.maximum(current, values, out=current)
        rois.append(roi)
    for roi in rois:
        lesion_id[roi][fields[2][roi] <= LESION_THRESHOLD] = 0
    return LesionMaps(core=fields[0], final=fields[1], penumbra=fields[2], lesion_id=lesion_id)


def confounder_map(spots: list[Confounder], deformation: SubjectDeformation, grid: Grid) -> np.ndarray:
    """Sum of ``strength · profile`` of the confounder spots on ``grid`` (float32 ``(I, J, K)``)."""
    out = np.zeros(grid.shape, dtype=np.float32)
    for spot in spots:
        sampled = rasterise(spot.blob, deformation, grid)
        if sampled is not None:
            roi, values = sampled
            out[roi] += spot.strength * values[0]
    return out
