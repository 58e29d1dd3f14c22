"""One rule for "these files share a voxel grid": equal affines within a tolerance in millimetres.

Datalist discovery (:mod:`strokeseg.data.headers`), the header check of every bundle
(:class:`strokeseg.transforms.validation.CheckNiftiHeadersd`) and ``strokeseg evaluate``
(:mod:`strokeseg.metrics.casefiles`) compare grids with :func:`affines_match`, so one ``grid_tolerance_mm`` knob
means the same everywhere. nibabel and MONAI have no such comparison (MONAI's ``Spacingd`` resamples; it does not
say whether two files already share a grid), hence this module.
"""

from __future__ import annotations

import math

import numpy as np

from strokeseg.knobs import KnobError, as_float

__all__ = ["GRID_TOLERANCE_MM", "affines_match", "grid_tolerance"]

#: largest difference (mm) between two affines' entries that still counts as the same grid
GRID_TOLERANCE_MM = 1e-3


def grid_tolerance(value: object = GRID_TOLERANCE_MM, name: str = "grid_tolerance_mm") -> float:
    """``value`` as a grid tolerance in mm (the ``grid_tolerance_mm`` knob: ``0.01``, ``"1e-2"``).

    Raises:
        KnobError: not a finite number >= 0.
    """
    tolerance = as_float(value, name)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise KnobError(f"--{name} expects a number of millimetres >= 0, got {value!r}")
    return tolerance


def affines_match(a: np.ndarray, b: np.ndarray, tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
    """Whether every entry of the affines ``a`` and ``b`` (voxel → mm) differs by at most ``tolerance_mm``.

    Args:
        a, b: affine matrices of the same shape (4 × 4 for NIfTI).
        tolerance_mm: the largest accepted difference, in mm (the ``grid_tolerance_mm`` knob).

    Raises:
        KnobError: ``tolerance_mm`` is not a number >= 0.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=grid_tolerance(tolerance_mm)))
