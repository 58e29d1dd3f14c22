"""Binary closing (FH): hole filling, border behaviour, MetaTensor meta (iteration fitting: tests/fitting)."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage.morphology import ball

from strokeseg.postprocessing.morphology import BinaryClosing, BinaryClosingd, binary_closing


def _sphere(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_closing_fills_hole_of_known_size():
    box = np.zeros((20, 20, 20), bool)
    box[4:16, 4:16, 4:16] = True
    holed = box.copy()
    holed[8:11, 8:11, 8:11] = False  # 27-voxel cavity
    closed = binary_closing(holed, radius=3, iterations=1)
    assert int(closed.sum() - holed.sum()) == 27
    np.testing.assert_array_equal(closed, box)


def test_closing_equals_scipy_away_from_border_and_keeps_border_lesions():
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 40, 30), bool)
    mask[12:28, 12:28, 10:20] = rng.random((16, 16, 10)) > 0.3
    expected = ndimage.binary_closing(mask, ball(3), iterations=1)
    np.testing.assert_array_equal(binary_closing(mask, 3, 1), expected)
    # a lesion cut by the image border is not eroded (scipy's plain closing would erode it)
    edge = np.zeros((20, 20, 10), bool)
    edge[0:6, 5:12, 2:8] = True
    assert binary_closing(edge, 3, 2).sum() == edge.sum()
    assert ndimage.binary_closing(edge, ball(3), iterations=2).sum() < edge.sum()


def test_metatensor_affine_kept_and_dict_version():
    affine = torch.tensor([[2.0, 0, 0, -10], [0, 1.5, 0, 3], [0, 0, 4.0, 7], [0, 0, 0, 1]], dtype=torch.float64)
    arr = np.zeros((1, 12, 12, 8), np.float32)
    arr[0, 3:9, 3:9, 2:6] = 1
    arr[0, 5, 5, 3] = 0
    img = MetaTensor(torch.from_numpy(arr), affine=affine, meta={"filename_or_obj": "case_1.nii.gz"})
    out = BinaryClosingd(keys="pred", radius=1, iterations=1)({"pred": img})["pred"]
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, affine)
    assert out.meta["filename_or_obj"] == "case_1.nii.gz"
    assert out.dtype == img.dtype and float(out[0, 5, 5, 3]) == 1.0
    assert isinstance(BinaryClosing(1, 1)(arr), np.ndarray)
