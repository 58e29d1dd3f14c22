"""Connected components of lesion masks, one definition for the whole package.

Lesion-wise metrics (:mod:`strokeseg.metrics.lesionwise`), the minimum-size transform
(:class:`strokeseg.postprocessing.lesion_size.RemoveSmallLesions`), the (T_h, S_min) grid search
(:mod:`strokeseg.fitting.lesion_size`) and the bounding-box crops of metrics and post-processing all label
lesions here, so "a lesion" means the same connected component everywhere (full connectivity by default: 8
neighbours in 2-D, 26 in 3-D, optionally 2-D components per axial slice). This module sits below both
``metrics`` and ``postprocessing`` and imports neither.

Components come from ``scipy.ndimage.label`` and every per-component quantity from one ``np.bincount`` over
the label image, so nothing loops over lesions in Python.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["lesion_structure", "label_lesions", "component_sizes", "remove_small_components", "union_bounding_box"]


def lesion_structure(
    ndim: int, connectivity: int | None = None, per_slice: bool = False, slice_axis: int = -1
) -> np.ndarray:
    """Neighbourhood of ``ndimage.label`` for lesions of an ``ndim``-D mask.

    Args:
        ndim: spatial dimensions of the mask (2 or 3).
        connectivity: maximum number of orthogonal hops between neighbours (1 = faces; ``None`` = full,
            i.e. 8 in 2-D, 26 in 3-D), counted within the dimensionality of the components.
        per_slice: 2-D components in each slice along ``slice_axis`` (no connection between slices).
        slice_axis: the slice axis of ``per_slice`` (default the last; 0 numbers components slice by slice
            for a slice-major ``(D, H, W)`` array).

    Raises:
        ValueError: when ``connectivity`` is outside ``1..component_dims``.
    """
    comp_dims = ndim - 1 if per_slice and ndim > 2 else ndim
    conn = comp_dims if connectivity is None else int(connectivity)
    if not 1 <= conn <= comp_dims:
        raise ValueError(f"connectivity must be in 1..{comp_dims} for {comp_dims}-D lesions, got {connectivity}.")
    structure = ndimage.generate_binary_structure(comp_dims, conn)
    if comp_dims == ndim:
        return structure
    # embed the in-plane neighbourhood in the middle plane of the slice axis
    full = np.zeros(structure.shape + (3,), dtype=bool)
    full[..., 1] = structure
    return np.moveaxis(full, -1, slice_axis)


def label_lesions(
    mask: np.ndarray, connectivity: int | None = None, per_slice: bool = False, slice_axis: int = -1
) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask (``(H, W[, D])``); returns ``(labels, count)``.

    Labels are numbered in raster order of each component's first voxel (``scipy.ndimage.label``).

    Args:
        mask: boolean (or 0/1) mask.
        connectivity: see :func:`lesion_structure`.
        per_slice: 2-D components per slice along ``slice_axis``.
        slice_axis: see :func:`lesion_structure`.
    """
    mask = np.asarray(mask)
    return ndimage.label(mask, structure=lesion_structure(mask.ndim, connectivity, per_slice, slice_axis))


def component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels per label of a :func:`label_lesions` image: ``sizes[k]`` for label ``k`` (``sizes[0]`` background)."""
    return np.bincount(np.asarray(labels).ravel(), minlength=count + 1)


def remove_small_components(
    mask: np.ndarray, min_voxels: int, connectivity: int | None = None, per_slice: bool = False
) -> np.ndarray:
    """``mask`` without its components of fewer than ``min_voxels`` voxels (boolean, same shape).

    Args:
        mask: boolean (or 0/1) mask ``(H, W[, D])``.
        min_voxels: smallest size kept (``<= 1`` keeps everything).
        connectivity: see :func:`lesion_structure`.
        per_slice: 2-D components per slice along the last axis.
    """
    mask = np.asarray(mask) != 0
    if min_voxels <= 1:
        return mask.copy()
    labels, count = label_lesions(mask, connectivity, per_slice)
    keep = component_sizes(labels, count) >= min_voxels
    keep[0] = False
    return keep[labels]


def union_bounding_box(*masks: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of the union of ``masks`` grown by ``margin`` (clipped to the image).

    Returns ``None`` when every mask is empty.
    """
    union = np.logical_or.reduce(masks) if len(masks) > 1 else np.asarray(masks[0])
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)
