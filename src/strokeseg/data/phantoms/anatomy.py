"""Per-case subject anatomy: a random smooth deformation of the template and sampling of template-space
fields directly on a target (native) grid.

The mapping used for sampling goes target voxel → world → subject-intrinsic (undo head pose: rotation
and scaling) → template (add a smooth displacement). Composing it once and interpolating the template
maps a single time on each native grid avoids deforming the 1 mm template first and resampling again.
Interpolation is PyTorch's ``grid_sample`` (trilinear, float32), which MONAI's own resampler wraps; it is
called directly because the coordinates are computed here, not from an affine alone.

The displacement field has a mirror-symmetric part about the template's mid-sagittal plane, so the
subject's hemispheres stay homologous (the template itself is symmetric) and a lesion can be compared with
its mirror voxels, plus a small asymmetric part (``asymmetry_mm``): healthy brains are not
mirror images, and perfectly symmetric phantoms would make mirrored-modality features an unrealistically
perfect lesion detector. :func:`hemispheric_gain` adds the matching few-percent intensity difference between
the hemispheres. Both are drawn from child generators (``Generator.spawn``), so the patient's other draws
(pose, lesions, contrasts, noise) are the same as without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

from strokeseg.data.phantoms.grids import Grid
from strokeseg.data.phantoms.template import Template

__all__ = [
    "SubjectDeformation",
    "TissueMaps",
    "random_deformation",
    "roi_of_box",
    "template_points",
    "template_points_at",
    "sample_field",
    "sample_tissue",
    "tissue_box",
    "hemispheric_gain",
]

_MAX_ROTATION_DEG = 10.0  # head pose: rotation up to ±10° about each axis
_MAX_SCALING = 0.08  # head size: scaling up to ±8 % per axis
_ELASTIC_SPACING_MM = 20.0
# natural left-right asymmetry of healthy brains, a few mm of shape and a few percent of intensity
ASYMMETRY_MM = 1.5
HEMISPHERIC_GAIN_RANGE = (0.01, 0.03)
_HEMISPHERIC_TRANSITION_MM = 10.0
_ELASTIC_EXTENT_MM = ((-120.0, 120.0), (-160.0, 120.0), (-120.0, 120.0))  # symmetric in x


@dataclass(frozen=True)
class SubjectDeformation:
    """Template → subject mapping of one patient.

    A template point ``t`` sits at world ``x = centre + R·diag(scale)·y`` with ``t = y + u(y)``;
    ``u`` is the smooth displacement sampled from ``elastic``.

    Args:
        rotation: ``(3, 3)`` head rotation ``R``.
        scale: ``(3,)`` per-axis scaling.
        centre_mm: world position of the template origin (``y = 0``).
        elastic: ``(3, nx, ny, nz)`` float32 displacement (mm) on a regular grid of intrinsic coordinates.
        elastic_origin_mm: intrinsic position of node (0, 0, 0).
        elastic_spacing_mm: node spacing.
    """

    rotation: np.ndarray
    scale: np.ndarray
    centre_mm: np.ndarray
    elastic: np.ndarray
    elastic_origin_mm: np.ndarray
    elastic_spacing_mm: float

    @property
    def elastic_max_mm(self) -> float:
        """Largest displacement magnitude of the elastic part."""
        return float(np.sqrt((self.elastic**2).sum(axis=0)).max())

    def to_world(self, template_mm: np.ndarray) -> np.ndarray:
        """Approximate forward mapping (elastic part ignored, error ≤ ``elastic_max_mm``) of ``(..., 3)`` points."""
        return self.centre_mm + (np.asarray(template_mm) * self.scale) @ self.rotation.T

    def midsagittal_plane(self) -> tuple[np.ndarray, np.ndarray]:
        """World point and unit normal (towards the subject's right) of the mid-sagittal plane."""
        return self.centre_mm.copy(), self.rotation[:, 0].copy()

    def summary(self) -> dict:
        """JSON-ready description for ``phantom.json``."""
        angles = Rotation.from_matrix(self.rotation).as_euler("xyz", degrees=True)
        return {
            "rotation_deg_xyz": [round(float(a), 3) for a in angles],
            "scale": [round(float(s), 4) for s in self.scale],
            "elastic_max_mm": round(self.elastic_max_mm, 3),
        }


def random_deformation(
    rng: np.random.Generator, brain_centre_mm: np.ndarray, elastic_mm: float = 2.5, asymmetry_mm: float = ASYMMETRY_MM
) -> SubjectDeformation:
    """Draw a head pose (rotation ≤ 10° per axis, scaling ±8 %) and a mild, mostly mirror-symmetric elastic field.

    Args:
        rng: the patient's generator.
        brain_centre_mm: template point that lands near the world origin (a few mm of jitter).
        elastic_mm: largest elastic displacement before symmetrisation.
        asymmetry_mm: largest displacement of the added asymmetric component (0: perfectly symmetric
            hemispheres, as in the early phantoms); drawn from ``rng.spawn`` so ``rng``'s stream is unchanged.
    """
    angles = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, size=3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    scale = 1.0 + rng.uniform(-_MAX_SCALING, _MAX_SCALING, size=3)
    shape = [int(round((hi - lo) / _ELASTIC_SPACING_MM)) + 1 for lo, hi in _ELASTIC_EXTENT_MM]
    field = ndimage.gaussian_filter(rng.standard_normal((3, *shape)), sigma=(0, 1, 1, 1))
    # u_x odd and u_y, u_z even in x: the intrinsic mid-sagittal plane maps onto the template's
    field[0] = (field[0] - field[0][::-1]) / 2
    field[1:] = (field[1:] + field[1:, ::-1]) / 2
    field *= elastic_mm / max(np.abs(field).max(), 1e-6)
    if asymmetry_mm > 0:
        side_rng = rng.spawn(1)[0]
        asymmetric = ndimage.gaussian_filter(side_rng.standard_normal((3, *shape)), sigma=(0, 1, 1, 1))
        field = field + asymmetric * (asymmetry_mm / max(np.abs(asymmetric).max(), 1e-6))
    jitter = rng.uniform(-5.0, 5.0, size=3)
    centre = jitter - (np.asarray(brain_centre_mm) * scale) @ rotation.T
    return SubjectDeformation(
        rotation=rotation,
        scale=scale,
        centre_mm=centre,
        elastic=field.astype(np.float32),
        elastic_origin_mm=np.array([lo for lo, _ in _ELASTIC_EXTENT_MM]),
        elastic_spacing_mm=_ELASTIC_SPACING_MM,
    )


def hemispheric_gain(
    deformation: SubjectDeformation, grid: Grid, rng: np.random.Generator, gain_range=HEMISPHERIC_GAIN_RANGE
) -> np.ndarray:
    """Smooth intensity factor ``1 ± a·tanh(d / 10 mm)`` of signed distance ``d`` to the mid-sagittal plane.

    ``a`` is drawn uniformly from ``gain_range`` (1-3 %) with a random sign: one hemisphere a little brighter.
    Computed separably per voxel axis (no ``(3, X, Y, Z)`` coordinate array). Returns a float32 ``grid.shape``.
    """
    amplitude = float(rng.uniform(*gain_range)) * (1.0 if rng.random() < 0.5 else -1.0)
    point, normal = deformation.midsagittal_plane()
    per_axis = grid.affine[:3, :3].T @ normal  # mm of signed distance per voxel step along each axis
    distance = np.full(tuple(grid.shape), float((grid.affine[:3, 3] - point) @ normal), dtype=np.float32)
    for axis, step in enumerate(per_axis):
        shape = [1, 1, 1]
        shape[axis] = grid.shape[axis]
        distance += (np.arange(grid.shape[axis], dtype=np.float32) * np.float32(step)).reshape(shape)
    return (1.0 + amplitude * np.tanh(distance / _HEMISPHERIC_TRANSITION_MM)).astype(np.float32)


def roi_of_box(
    grid: Grid, deformation: SubjectDeformation, box_min_mm: np.ndarray, box_max_mm: np.ndarray, margin_mm: float = 4.0
) -> tuple[slice, slice, slice] | None:
    """Voxel slices of ``grid`` that cover a template-space box once mapped to the subject.

    Returns ``None`` when the box misses the grid.
    """
    corners = np.array(np.meshgrid(*zip(box_min_mm, box_max_mm, strict=True), indexing="ij")).reshape(3, -1).T
    world = deformation.to_world(corners)
    voxels = (world - grid.affine[:3, 3]) @ np.linalg.inv(grid.affine[:3, :3]).T
    margin = (margin_mm + deformation.elastic_max_mm) / grid.spacing
    lo = np.floor(voxels.min(axis=0) - margin).astype(int)
    hi = np.ceil(voxels.max(axis=0) + margin).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, grid.shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _intrinsic_matrix(deformation: SubjectDeformation, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (per voxel axis) and offset of the affine voxel → subject-intrinsic mapping."""
    inv = deformation.rotation / deformation.scale  # R · diag(1/s): world offset row-vector → intrinsic
    matrix = grid.affine[:3, :3].T @ inv
    offset = (grid.affine[:3, 3] - deformation.centre_mm) @ inv
    return torch.from_numpy(matrix.astype(np.float32)), torch.from_numpy(offset.astype(np.float32))


def _add_elastic(deformation: SubjectDeformation, intrinsic: torch.Tensor) -> torch.Tensor:
    elastic = torch.from_numpy(deformation.elastic)[None]
    displacement = sample_field(
        elastic, deformation.elastic_origin_mm, deformation.elastic_spacing_mm, intrinsic, "border"
    )
    return intrinsic + displacement.permute(1, 2, 3, 0)


def template_points(deformation: SubjectDeformation, grid: Grid, roi: tuple[slice, ...] | None = None) -> torch.Tensor:
    """Template coordinates (mm) of the voxels of ``grid`` (or of its ``roi``, slices may have a step),
    shape ``(I, J, K, 3)`` float32."""
    roi = roi or tuple(slice(0, n) for n in grid.shape)
    rows, offset = _intrinsic_matrix(deformation, grid)
    axes = [torch.arange(r.start, r.stop, r.step or 1, dtype=torch.float32) for r in roi]
    intrinsic = (
        axes[0][:, None, None, None] * rows[0]
        + axes[1][None, :, None, None] * rows[1]
        + (axes[2][None, None, :, None] * rows[2] + offset)
    )
    return _add_elastic(deformation, intrinsic)


def template_points_at(deformation: SubjectDeformation, grid: Grid, voxels: np.ndarray) -> torch.Tensor:
    """Template coordinates (mm) of a list of voxels ``(N, 3)`` of ``grid``, shape ``(1, 1, N, 3)`` float32."""
    rows, offset = _intrinsic_matrix(deformation, grid)
    intrinsic = torch.from_numpy(np.asarray(voxels, dtype=np.float32)) @ rows + offset
    return _add_elastic(deformation, intrinsic[None, None])


def sample_field(
    field: torch.Tensor, origin_mm: np.ndarray, spacing_mm: float, points: torch.Tensor, padding: str = "zeros"
) -> torch.Tensor:
    """Trilinear interpolation of an axis-aligned field at template points.

    Args:
        field: ``(1, C, I, J, K)`` float32 values on the grid ``origin_mm + spacing_mm · index``.
        origin_mm: ``(3,)`` position of voxel (0, 0, 0).
        spacing_mm: isotropic voxel size.
        points: ``(A, B, D, 3)`` positions (mm).
        padding: ``grid_sample`` padding mode outside the field.

    Returns:
        ``(C, A, B, D)`` float32 values.
    """
    size = torch.tensor(field.shape[2:], dtype=torch.float32)
    factor = 2.0 / (spacing_mm * (size - 1))
    shift = -torch.from_numpy(np.asarray(origin_mm, dtype=np.float32)) * factor - 1.0
    normalised = (points * factor + shift).flip(-1)  # grid_sample wants (x→K, y→J, z→I)
    out = F.grid_sample(field, normalised[None], mode="bilinear", padding_mode=padding, align_corners=True)
    return out[0]


@dataclass
class TissueMaps:
    """Subject tissue on one native grid.

    Args:
        gm / wm / csf: ``(I, J, K)`` float32 fractions.
        head: ``(3, I, J, K)`` outer-CSF, skull, scalp fractions, or ``None`` for skull-stripped grids.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    head: np.ndarray | None = None

    @cached_property
    def parenchyma(self) -> np.ndarray:
        """GM + WM fraction."""
        return self.gm + self.wm

    @cached_property
    def brain(self) -> np.ndarray:
        """Boolean brain mask (GM + WM + CSF > 0.5)."""
        return (self.parenchyma + self.csf) > 0.5

    def without_head(self) -> TissueMaps:
        """The same tissue, skull-stripped (derived maps already computed are shared, not recomputed)."""
        if self.head is None:
            return self
        out = TissueMaps(self.gm, self.wm, self.csf, None)
        for name in ("parenchyma", "brain"):
            if name in self.__dict__:
                out.__dict__[name] = self.__dict__[name]
        return out


_OCCUPANCY_STEP_MM = 4.0


def _presence(deformation: SubjectDeformation, grid: Grid, fields: list) -> tuple[np.ndarray, list[int]]:
    """Lattice (≈4 mm) of ``grid`` where the fields are present, dilated by one cell, and its steps."""
    steps = [max(1, int(round(_OCCUPANCY_STEP_MM / s))) for s in grid.spacing]
    lattice = tuple(slice(0, n, step) for n, step in zip(grid.shape, steps, strict=True))
    points = template_points(deformation, grid, lattice)
    presence = sum(sample_field(f, origin, spacing, points).sum(0) for f, origin, spacing in fields) > 0.01
    presence = ndimage.binary_dilation(presence.numpy(), structure=np.ones((3, 3, 3), dtype=bool))
    return presence, steps


def _occupied(template: Template, deformation: SubjectDeformation, grid: Grid, fields: list) -> np.ndarray:
    """Voxels of ``grid`` near the subject's tissue: the fields are probed on a ≈4 mm lattice, the hits
    dilated by one lattice cell and expanded back to voxels (a conservative superset)."""
    presence, steps = _presence(deformation, grid, fields)
    for axis, step in enumerate(steps):
        presence = np.repeat(presence, step, axis=axis)
    return presence[: grid.shape[0], : grid.shape[1], : grid.shape[2]]


def _fields(template: Template, head: bool) -> list:
    fields = [(template.tissue, template.origin_mm, template.spacing_mm)]
    if head:
        fields.append((template.head, template.head_origin_mm, template.coarse_spacing_mm))
    return fields


def tissue_box(
    template: Template, deformation: SubjectDeformation, grid: Grid, head: bool = False
) -> tuple[slice, slice, slice] | None:
    """Bounding box (voxel slices of ``grid``) of the voxels :func:`sample_tissue` may fill; ``None``
    when the subject misses the grid. Outside it every tissue map is 0."""
    presence, steps = _presence(deformation, grid, _fields(template, head))
    if not presence.any():
        return None
    hits = np.argwhere(presence)
    lo = hits.min(axis=0) * steps
    hi = np.minimum((hits.max(axis=0) + 1) * steps, grid.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _flipped_intrinsic(deformation: SubjectDeformation, grid: Grid, voxels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Subject-intrinsic coordinates (mm) ``(N, 3)`` of voxels ``(i, j, k)`` of ``grid``, columns in
    ``grid_sample`` order (z, y, x). The affine map is evaluated separably from one small table per
    voxel axis (a gather and an add per axis instead of a matrix product)."""
    inv = deformation.rotation / deformation.scale  # R · diag(1/s): world offset row-vector → intrinsic
    matrix = (grid.affine[:3, :3].T @ inv)[:, ::-1]
    offset = ((grid.affine[:3, 3] - deformation.centre_mm) @ inv)[::-1]
    out = None
    for axis, index in enumerate(voxels):
        table = np.arange(grid.shape[axis], dtype=np.float64)[:, None] * matrix[axis]
        if axis == 2:
            table = table + offset
        values = torch.from_numpy(table.astype(np.float32)).index_select(0, index)
        out = values if out is None else out.add_(values)
    return out


def _normalisation(field: torch.Tensor, origin_mm: np.ndarray, spacing_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor and shift (z, y, x order) mapping mm onto ``grid_sample``'s [-1, 1] for a field's grid."""
    size = np.array(field.shape[2:], dtype=np.float64)
    factor = 2.0 / (spacing_mm * (size - 1))
    shift = -np.asarray(origin_mm, dtype=np.float64) * factor - 1.0
    return (torch.from_numpy(v[::-1].astype(np.float32)) for v in (factor, shift))


def sample_tissue(template: Template, deformation: SubjectDeformation, grid: Grid, head: bool = False) -> TissueMaps:
    """Sample the subject's GM/WM/CSF (and head layers when ``head``) on ``grid``.

    Only voxels near the subject's head are interpolated (see :func:`_occupied`); the rest is empty.
    The elastic displacement is interpolated once (in mm) and added to the affine part of every field's
    sampling coordinates.
    """
    shape = tuple(grid.shape)
    fields = _fields(template, head)
    occupied = _occupied(template, deformation, grid, fields)
    voxels = tuple(torch.from_numpy(v) for v in np.nonzero(occupied))
    count = int(voxels[0].shape[0])
    intrinsic = _flipped_intrinsic(deformation, grid, voxels)
    elastic = torch.from_numpy(np.ascontiguousarray(deformation.elastic[::-1]))[None]  # channels in grid order
    factor, shift = _normalisation(elastic, deformation.elastic_origin_mm, deformation.elastic_spacing_mm)
    where = torch.addcmul(shift, intrinsic, factor).view(1, 1, 1, count, 3)
    displacement = F.grid_sample(elastic, where, mode="bilinear", padding_mode="border", align_corners=True)
    intrinsic.add_(displacement.view(3, count).t())  # template coordinates now
    del where, displacement
    sampled = []
    for field, origin, spacing in fields:
        factor, shift = _normalisation(field, origin, spacing)
        where = torch.addcmul(shift, intrinsic, factor).view(1, 1, 1, count, 3)
        values = F.grid_sample(field, where, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled.append(values.view(-1, count).numpy())
    gm, wm, csf = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    for target, values in zip((gm, wm, csf), sampled[0], strict=True):
        target[occupied] = values
    layers = None
    if head:
        layers = np.zeros((3, *shape), dtype=np.float32)
        for target, values in zip(layers, sampled[1], strict=True):
            target[occupied] = values
    return TissueMaps(gm=gm, wm=wm, csf=csf, head=layers)
