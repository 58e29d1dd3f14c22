"""NIfTI headers of a dataset's files: each file's spatial grid, read without its voxels, and a check that the
file holds every voxel its header announces.

Datalist discovery (:mod:`strokeseg.data.datalist`) reads every file of a case through :func:`read_grid`, so a
truncated download or a file that is not a NIfTI image is reported with the case and file it belongs to before
any bundle loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM, affines_match
from strokeseg.transforms.validation import gzip_payload_size

__all__ = ["AFFINE_TOLERANCE", "FileGrid", "read_grid", "same_grid", "grid_text", "shown_path"]

#: affine entries (mm) closer than this are the same grid (the default of ``grid_tolerance_mm``)
AFFINE_TOLERANCE = GRID_TOLERANCE_MM


@dataclass
class FileGrid:
    """Spatial grid of one NIfTI file, read from its header only."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


def shown_path(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root when it lies inside it (keeps messages short)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_grid(path: Path, case: str, root: Path) -> FileGrid:
    """Read the grid of a NIfTI file without loading its voxels, and check the file holds all its voxels.

    nibabel reads only the header; a truncated file is caught by comparing the file size (``.nii``) or the
    gzip trailer's uncompressed size (``.nii.gz``, falling back to a streamed decompression, still without
    building an array) with ``vox_offset + voxels × bytes per voxel``.

    Args:
        path: the NIfTI file.
        case: case id the file belongs to (starts every message).
        root: dataset root (messages show ``path`` relative to it).

    Returns:
        The file's grid, its shape padded with 1 to at least three dimensions.

    Raises:
        DataError: the file is not a readable NIfTI or is shorter than its header says.
    """
    shown = shown_path(path, root)
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(s) for s in header.get_data_shape())
        # the loaded header's vox_offset is reset to 0 by nibabel; the array proxy keeps the file's offset
        offset = int(getattr(img.dataobj, "offset", header["vox_offset"]))
        expected = offset + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, OSError, EOFError, ...)
        raise DataError(f"{case}: cannot read {shown} as NIfTI: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image):
        raise DataError(f"{case}: {shown} is a {type(img).__name__}, not a NIfTI image")
    if str(path).lower().endswith(".gz"):
        actual = gzip_payload_size(path, expected, f"{case}: {shown}")
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            f"{case}: {shown} is truncated or corrupt: its header announces shape {shape} "
            f"({expected} bytes with the header) but the file holds {actual} bytes"
        )
    while len(shape) < 3:
        shape = (*shape, 1)
    return FileGrid(path=path, shape=shape, affine=affine)


def same_grid(a: FileGrid, b: FileGrid, tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
    """Whether two files share the first three dimensions and the affine (:func:`strokeseg.grids.affines_match`).

    Args:
        a, b: the files' grids.
        tolerance_mm: largest difference between affine entries (mm) that still counts as one grid.

    Raises:
        KnobError: ``tolerance_mm`` is not a number >= 0.
    """
    return a.shape[:3] == b.shape[:3] and affines_match(a.affine, b.affine, tolerance_mm)


def grid_text(grid: FileGrid, root: Path) -> str:
    """``<file> (shape ..., affine ...)`` for a grid-mismatch message."""
    return f"{shown_path(grid.path, root)} (shape {grid.shape[:3]}, affine {np.round(grid.affine[:3], 3).tolist()})"
