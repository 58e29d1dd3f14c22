"""Inputs on a grid the network was not trained for: a voxel spacing far from the training spacing, or a scan
smaller than the network needs, each reported in one warning line per case before inference runs.

A bundle declares in its ``inference.json`` what its network was trained at and hands it to
:class:`strokeseg.runtime.inputs.InferenceCases` (config shape)::

    "training_spacing_mm": [1.0, 1.0, 1.0],
    "min_input_shape": [24, 24, 16],
    "inputs": {..., "training_spacing_mm": "@training_spacing_mm", "min_input_shape": "@min_input_shape",
               "resampled_spacing_mm": "@pixdim"}

``training_spacing_mm`` holds, per axis, the voxel size (mm) the network was trained at (``null``: any, e.g.
across the slices of a 2-D network); ``resampled_spacing_mm`` the spacing the bundle's own preprocessing
resamples to (MONAI ``Spacingd``'s ``pixdim``; a value ``<= 0`` or ``null`` keeps that axis), so those axes
are not reported; ``min_input_shape`` the smallest grid (voxels, on the grid the network sees) the network
gives a meaningful output for (its training patch or receptive field). MONAI resamples (``Spacingd``) but
never tells a user that a scan is far from what a network learnt, so this check is ours. It reads headers
only (a DICOM series' grid through :func:`strokeseg.dicom.read_series_info`); a file it cannot read is left
to the loader's one-line error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from strokeseg.errors import DataError
from strokeseg.transforms.validation import read_nifti_header

__all__ = ["SPACING_FACTOR", "grid_warnings", "spacing_warning", "size_warning", "warn_untrained_grids"]

SPACING_FACTOR = 1.5
"""A spacing differing from the training spacing by more than this factor on any axis is reported."""

logger = logging.getLogger(__name__)


def _axes(values: Sequence[float | None] | None) -> list[float | None]:
    """Three per-axis values, ``None`` for a missing, ``null`` or non-positive entry."""
    out: list[float | None] = [None, None, None]
    for axis, value in enumerate(list(values or [])[:3]):
        out[axis] = float(value) if value is not None and float(value) > 0 else None
    return out


def _text(values: Sequence[float | None]) -> str:
    return " × ".join("any" if v is None else f"{v:.3g}" for v in values)


def spacing_warning(
    case: str,
    spacing: Sequence[float],
    training_spacing_mm: Sequence[float | None] | None,
    resampled_spacing_mm: Sequence[float | None] | None = None,
    factor: float = SPACING_FACTOR,
) -> str | None:
    """One line when ``spacing`` differs from the training spacing by more than ``factor`` on an axis the
    bundle does not resample, else ``None``.

    Args:
        case: the case name (starts the line).
        spacing: the input's voxel size (mm) per axis.
        training_spacing_mm: voxel size the network was trained at, per axis (``None``: any).
        resampled_spacing_mm: spacing the bundle resamples to, per axis (``None`` / ``<= 0``: kept).
        factor: largest accepted ratio (either way).
    """
    training = _axes(training_spacing_mm)
    resampled = _axes(resampled_spacing_mm)
    worst, worst_axis = 1.0, -1
    for axis in range(3):
        if training[axis] is None or resampled[axis] is not None:
            continue
        ratio = float(spacing[axis]) / training[axis]
        ratio = max(ratio, 1.0 / ratio)
        if ratio > worst:
            worst, worst_axis = ratio, axis
    if worst <= factor:
        return None
    return (
        f"{case}: voxel spacing {_text(spacing)} mm differs from the {_text(training)} mm the network was trained at "
        f"by a factor {worst:.2g} on axis {worst_axis} (more than {factor:g}); the segmentation may be worse: "
        "resample the scan to the training spacing first"
    )


def size_warning(
    case: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    min_input_shape: Sequence[int | None] | None,
    resampled_spacing_mm: Sequence[float | None] | None = None,
) -> str | None:
    """One line when the input, on the grid the network sees, is smaller than ``min_input_shape``, else ``None``.

    Args:
        case: the case name (starts the line).
        shape, spacing: the input's spatial shape (voxels) and voxel size (mm).
        min_input_shape: smallest grid (voxels) the network needs, per axis (``None``: any).
        resampled_spacing_mm: spacing the bundle resamples to, per axis (``None`` / ``<= 0``: kept).
    """
    minimum = [None if m is None else int(m) for m in list(min_input_shape or [])[:3]]
    resampled = _axes(resampled_spacing_mm)
    seen = [
        float(shape[a]) * float(spacing[a]) / resampled[a] if resampled[a] is not None else float(shape[a])
        for a in range(3)
    ]
    if all(m is None or seen[a] >= m for a, m in enumerate(minimum)):
        return None
    resampled_text = "" if all(r is None for r in resampled) else f" ({_text(seen)} after resampling)"
    return (
        f"{case}: the scan is {_text([float(s) for s in shape[:3]])} voxels{resampled_text}, smaller than the "
        f"{_text(minimum)} the network needs; the segmentation will likely be empty or wrong"
    )


def grid_warnings(
    cases: Sequence[dict],
    training_spacing_mm: Sequence[float | None] | None = None,
    min_input_shape: Sequence[int | None] | None = None,
    resampled_spacing_mm: Sequence[float | None] | None = None,
    factor: float = SPACING_FACTOR,
) -> list[str]:
    """The warning lines of every case whose first image is on a grid the network was not trained for.

    Args:
        cases: datalist entries (``case``, ``image``: a path or a list of paths, the first is read).
        training_spacing_mm, min_input_shape, resampled_spacing_mm, factor: see :func:`spacing_warning` and
            :func:`size_warning`.
    """
    if training_spacing_mm is None and min_input_shape is None:
        return []
    lines = []
    for entry in cases:
        image = entry.get("image")
        first = image[0] if isinstance(image, (list, tuple)) and image else image
        if not isinstance(first, str):
            continue
        try:
            info = read_nifti_header(first)
        except DataError:  # the loader reports it, with the case, in one line
            continue
        case = str(entry.get("case", first))
        for line in (
            spacing_warning(case, info.spacing, training_spacing_mm, resampled_spacing_mm, factor),
            size_warning(case, info.grid_shape, info.spacing, min_input_shape, resampled_spacing_mm),
        ):
            if line is not None:
                lines.append(line)
    return lines


def warn_untrained_grids(cases: Sequence[dict], **declared) -> list[str]:
    """Log :func:`grid_warnings` (one ``WARNING`` line each) and return them."""
    lines = grid_warnings(cases, **declared)
    for line in lines:
        logger.warning(line)
    return lines
