"""Native acquisition grids (shape + affine) of each ISLES layout, drawn per case.

Grids follow the ISLES releases: ISLES 2015 SISS 1 mm iso 230×230×154, SPES 2 mm iso 96×110×72, ISLES 2017
thick-slice grids varying per case, ISLES 2018 256×256 slabs of 2-22 slices, ISLES 2022 oblique
2 mm DWI/ADC and a FLAIR on its own grid. ISLES 2015-2018 are axis-aligned with the x and y axes
flipped (the LPS storage their ITK-based conversion produced); ISLES 2022 carries oblique affines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "Grid",
    "grid_from_centre",
    "draw_image_grid",
    "draw_flair_grid",
    "slab_layout",
    "mirror_voxels",
    "paste",
    "LPS_FLIP",
]

LPS_FLIP = np.diag([-1.0, -1.0, 1.0])

# (shape, in-plane FOV mm, slice thickness mm) of typical ISLES 2017 acquisitions
_ISLES2017_GRIDS = (
    ((192, 192, 19), 230.0, 6.5),
    ((256, 256, 24), 240.0, 6.0),
    ((128, 128, 25), 220.0, 5.5),
    ((256, 256, 22), 230.0, 6.0),
    ((192, 192, 20), 220.0, 6.5),
)
_ISLES2022_FLAIR = (
    ((232, 256, 32), (0.9, 0.9, 5.0)),
    ((256, 256, 30), (0.86, 0.86, 5.5)),
    ((224, 256, 36), (1.0, 0.9, 4.4)),
)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (I, J, K) and a 4×4 voxel → world (RAS mm) ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along each voxel axis."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def world(self, voxels: np.ndarray) -> np.ndarray:
        """World coordinates of ``(..., 3)`` voxel indices."""
        return np.asarray(voxels) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def voxel(self, world: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of ``(..., 3)`` world points."""
        return (np.asarray(world) - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def crop(self, box: tuple[slice, slice, slice]) -> Grid:
        """The sub-grid of the voxels in ``box`` (unit-step slices), with the same world positions."""
        start = np.array([b.start for b in box], dtype=np.float64)
        affine = self.affine.copy()
        affine[:3, 3] = self.world(start)
        return Grid(shape=tuple(int(b.stop - b.start) for b in box), affine=affine)

    def describe(self) -> dict:
        """JSON-ready shape, spacing and affine."""
        return {
            "shape": [int(n) for n in self.shape],
            "spacing_mm": [round(float(s), 4) for s in self.spacing],
            "affine": [[round(float(v), 4) for v in row] for row in self.affine],
        }


def grid_from_centre(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], centre_mm: np.ndarray, direction: np.ndarray
) -> Grid:
    """Grid whose central voxel sits at ``centre_mm``, axes along the columns of ``direction``."""
    shape = tuple(int(n) for n in shape)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = np.asarray(centre_mm, dtype=np.float64) - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return Grid(shape=shape, affine=affine)


def slab_layout(rng: np.random.Generator, slabs: int) -> list[tuple[int, float]]:
    """Slice count and thickness (mm) of each ISLES 2018 slab of one patient (2-22 slices);
    the slabs of one patient share the slice thickness."""
    counts = [int(rng.choice([2, 4, 6, 8, 10, 12, 16, 18, 22])) for _ in range(slabs)]
    thickness = 5.0 if max(counts) > 12 else float(rng.choice([5.0, 8.0, 10.0]))
    return [(count, thickness) for count in counts]


def draw_image_grid(
    layout: str,
    rng: np.random.Generator,
    head_centre_mm: np.ndarray,
    slab: tuple[int, float] | None = None,
    slab_centre_z_mm: float | None = None,
    in_plane: tuple[float, np.ndarray] | None = None,
) -> Grid:
    """Grid of the main images of ``layout`` around ``head_centre_mm`` (ISLES 2018: one slab).

    Args:
        layout: layout name.
        rng: generator of the patient (grids of two slabs of one patient share its in-plane draw).
        head_centre_mm: world centre of the brain.
        slab: ISLES 2018 (slices, thickness).
        slab_centre_z_mm: ISLES 2018 world z of the slab centre.
        in_plane: ISLES 2018 (pixel size, in-plane centre) shared by the slabs of one patient.
    """
    centre = np.asarray(head_centre_mm, dtype=np.float64) + rng.uniform(-4.0, 4.0, size=3)
    if layout == "isles2015_siss":
        return grid_from_centre((230, 230, 154), (1.0, 1.0, 1.0), centre, LPS_FLIP)
    if layout == "isles2015_spes":
        return grid_from_centre((96, 110, 72), (2.0, 2.0, 2.0), centre, LPS_FLIP)
    if layout == "isles2017":
        shape, fov, thickness = _ISLES2017_GRIDS[int(rng.integers(len(_ISLES2017_GRIDS)))]
        thickness *= rng.uniform(0.92, 1.0)
        return grid_from_centre(shape, (fov / shape[0], fov / shape[1], thickness), centre, LPS_FLIP)
    if layout == "isles2018":
        if slab is None or slab_centre_z_mm is None or in_plane is None:
            raise ValueError("isles2018 grids need the slab, its centre z and the shared in-plane geometry")
        pixel, xy = in_plane
        return grid_from_centre(
            (256, 256, slab[0]), (pixel, pixel, slab[1]), np.array([xy[0], xy[1], slab_centre_z_mm]), LPS_FLIP
        )
    if layout == "isles2022":
        tilt = Rotation.from_euler("xyz", rng.uniform(-8.0, 8.0, size=3), degrees=True).as_matrix()
        return grid_from_centre((112, 112, 73), (2.0, 2.0, 2.0), centre, tilt @ LPS_FLIP)
    raise ValueError(f"no native grid for layout {layout!r}")


def draw_flair_grid(rng: np.random.Generator, head_centre_mm: np.ndarray) -> Grid:
    """ISLES 2022 FLAIR grid: ≈1 mm in-plane, 4-6 mm slices, its own (oblique, RAS-stored) orientation."""
    shape, spacing = _ISLES2022_FLAIR[int(rng.integers(len(_ISLES2022_FLAIR)))]
    tilt = Rotation.from_euler("xyz", rng.uniform(-12.0, 12.0, size=3), degrees=True).as_matrix()
    centre = np.asarray(head_centre_mm, dtype=np.float64) + rng.uniform(-6.0, 6.0, size=3)
    return grid_from_centre(shape, spacing, centre, tilt)


def mirror_voxels(
    grid: Grid, point_mm: np.ndarray, normal: np.ndarray, voxels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of ``grid`` mirrored across a plane (the subject's mid-sagittal plane).

    Args:
        grid: the grid of ``voxels``.
        point_mm / normal: a point of the plane and its normal (world).
        voxels: ``(N, 3)`` integer indices.

    Returns:
        ``(N, 3)`` rounded mirrored indices and an ``(N,)`` boolean "inside the grid".
    """
    normal = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    world = grid.world(voxels)
    distance = (world - np.asarray(point_mm)) @ normal
    mirrored = np.rint(grid.voxel(world - 2.0 * distance[:, None] * normal)).astype(int)
    inside = np.all((mirrored >= 0) & (mirrored < np.array(grid.shape)), axis=1)
    return mirrored, inside


def paste(data: np.ndarray, box: tuple[slice, slice, slice], shape: tuple[int, int, int]) -> np.ndarray:
    """Zero volume of ``shape`` with ``data`` written into ``box``.

    The result is Fortran-ordered: NIfTI stores the first axis fastest, so nibabel then writes each
    slice with a plain memory copy instead of a strided gather.
    """
    out = np.zeros(shape, dtype=data.dtype, order="F")
    out[box] = data
    return out
