"""The one connected-components helper (:mod:`strokeseg.lesions`) that metrics, post-processing and fitting share."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from strokeseg.lesions import (
    component_sizes,
    label_lesions,
    lesion_structure,
    remove_small_components,
    union_bounding_box,
)


def _mask() -> np.ndarray:
    mask = np.zeros((8, 8, 4), bool)
    mask[1:3, 1:3, 0:2] = True  # 8 voxels across slices 0 and 1
    mask[5, 5, 2] = mask[6, 6, 2] = True  # two voxels joined through a corner, slice 2
    return mask


def test_full_faces_and_per_slice_connectivity():
    mask = _mask()
    assert label_lesions(mask)[1] == 2
    assert label_lesions(mask, connectivity=1)[1] == 3  # the corner pair splits
    assert label_lesions(mask, per_slice=True)[1] == 3  # the 3-D box splits into its two slices
    labels, n = label_lesions(mask)
    assert component_sizes(labels, n).tolist() == [int((~mask).sum()), 8, 2]
    with pytest.raises(ValueError, match="connectivity"):
        lesion_structure(3, connectivity=3, per_slice=True)


def test_slice_major_numbering_matches_per_slice_labelling():
    mask = _mask()
    slice_major = np.moveaxis(mask, -1, 0)  # (D, H, W): components numbered slice by slice
    labels, n = label_lesions(slice_major, per_slice=True, slice_axis=0)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 2)
    expected, count = ndimage.label(slice_major, structure=structure)
    assert n == count == 3
    np.testing.assert_array_equal(labels, expected)
    assert np.moveaxis(lesion_structure(3, per_slice=True, slice_axis=0), 0, -1).tolist() == (
        lesion_structure(3, per_slice=True).tolist()
    )


def test_remove_small_components_and_bounding_box():
    mask = _mask()
    kept = remove_small_components(mask, 3)
    assert kept.sum() == 8 and not kept[5, 5, 2]
    assert remove_small_components(mask, 1).sum() == mask.sum()
    assert remove_small_components(mask, 2, connectivity=1).sum() == 8  # faces only: two 1-voxel lesions
    assert union_bounding_box(mask, margin=0) == (slice(1, 7), slice(1, 7), slice(0, 3))
    assert union_bounding_box(np.zeros((3, 3), bool)) is None
