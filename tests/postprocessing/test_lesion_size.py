"""Minimum lesion size transform (the grid search that fits S_min: tests/fitting/test_size_search.py)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.data import MetaTensor

from strokeseg.lesions import remove_small_components
from strokeseg.postprocessing.lesion_size import RemoveSmallLesions, RemoveSmallLesionsd


def _scene():
    mask = np.zeros((1, 16, 16, 8), np.uint8)
    mask[0, 2:6, 2:6, 2:6] = 1  # 64 voxels
    mask[0, 10:12, 10:12, 3] = 1  # 4 voxels
    mask[0, 13, 2, 5] = mask[0, 14, 3, 6] = 1  # 2 voxels joined only through a corner
    return mask


def test_remove_small_lesions_sizes_and_full_connectivity():
    mask = _scene()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no scikit-image deprecation path is taken
        out = RemoveSmallLesions(min_size=4)(mask)
    assert out.sum() == 64 + 4  # the 2-voxel corner-connected lesion is dropped, the 4-voxel one kept
    assert RemoveSmallLesions(min_size=5)(mask).sum() == 64
    assert RemoveSmallLesions(min_size=2)(mask).sum() == 70  # corner neighbours: one 2-voxel lesion, kept
    faces = RemoveSmallLesions(min_size=2, connectivity=1)(mask)
    assert faces.sum() == 68  # with faces only, the corner pair is two 1-voxel lesions
    np.testing.assert_array_equal(RemoveSmallLesions(min_size=1)(mask), mask)


def test_remove_small_lesions_keeps_metatensor_meta():
    affine = torch.diag(torch.tensor([0.9, 0.9, 5.0, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(_scene().astype(np.float32)), affine=affine, meta={"case": "x"})
    out = RemoveSmallLesionsd(keys="pred", min_size=10)({"pred": img})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["case"] == "x"
    torch.testing.assert_close(out.affine, affine)
    assert float(out.sum()) == 64
    # 17 mm³ at 0.9 × 0.9 × 5 mm (4.05 mm³ per voxel) is 5 voxels: the 4- and 2-voxel lesions go
    by_mm3 = RemoveSmallLesions(min_size=17.0, by_measure=True)(img)
    assert float(by_mm3.sum()) == 64
    assert float(RemoveSmallLesions(min_size=16.0, by_measure=True)(img).sum()) == 68


def test_channels_are_filtered_alone_and_dtype_kept():
    two = np.concatenate([_scene(), _scene()[:, ::-1]]).astype(np.float32)
    two[1, 0, 0, 0] = 1.0  # a 1-voxel lesion only in channel 1
    out = RemoveSmallLesions(min_size=4)(torch.from_numpy(two))
    assert out.dtype == torch.float32 and out.shape == two.shape
    for c in range(2):
        expected = remove_small_components(two[c], 4)
        np.testing.assert_array_equal(out[c].numpy() > 0, expected)
    assert float(out[1, 0, 0, 0]) == 0.0
