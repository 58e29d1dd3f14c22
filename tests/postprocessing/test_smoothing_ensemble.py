"""Per-slice median filter (MONAI's median filter with radius (r, r, 0)) and the MONAI fold ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, MeanEnsembled, MedianSmooth
from scipy import ndimage

from strokeseg.postprocessing.smoothing import SliceMedianSmooth, SliceMedianSmoothd


def test_monai_median_radius_r_r_0_is_a_per_slice_filter():
    rng = np.random.default_rng(0)
    x = rng.random((1, 11, 9, 7)).astype(np.float32)
    monai_out = MedianSmooth(radius=(2, 2, 0))(torch.from_numpy(x)).numpy()
    expected = ndimage.median_filter(x[0], size=(5, 5, 1), mode="nearest")
    np.testing.assert_allclose(monai_out[0], expected)
    # a per-slice filter ignores the other slices entirely
    x2 = x.copy()
    x2[0, :, :, 3] = 0
    changed = MedianSmooth(radius=(2, 2, 0))(torch.from_numpy(x2)).numpy()
    np.testing.assert_allclose(np.delete(changed, 3, axis=-1), np.delete(monai_out, 3, axis=-1))


def test_slice_median_chunked_equals_whole_and_keeps_meta():
    rng = np.random.default_rng(1)
    x = rng.random((1, 10, 8, 9)).astype(np.float32)
    affine = torch.diag(torch.tensor([0.8, 0.8, 6.0, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(x), affine=affine, meta={"filename_or_obj": "c.nii.gz"})
    out = SliceMedianSmoothd(keys="prob", radius=2, slices_per_chunk=4)({"prob": img})["prob"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "c.nii.gz"
    torch.testing.assert_close(out.affine, affine)
    expected = ndimage.median_filter(x[0], size=(5, 5, 1), mode="nearest")
    np.testing.assert_allclose(out.numpy()[0], expected)
    # numpy and 2-D inputs
    np.testing.assert_allclose(SliceMedianSmooth(1)(x)[0], ndimage.median_filter(x[0], size=(3, 3, 1), mode="nearest"))
    x2d = x[..., 0]
    np.testing.assert_allclose(SliceMedianSmooth(1)(x2d)[0], ndimage.median_filter(x2d[0], size=3, mode="nearest"))


def test_salt_noise_removed():
    x = np.zeros((1, 9, 9, 2), np.float32)
    x[0, 4, 4, :] = 1.0  # an isolated bright voxel per slice
    assert SliceMedianSmooth(1)(x).max() == 0.0


def test_mean_ensembled_averages_fold_maps_then_asdiscreted_thresholds():
    rng = np.random.default_rng(2)
    affine = torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0], dtype=torch.float64))
    folds = [MetaTensor(torch.from_numpy(rng.random((1, 6, 5, 4)).astype(np.float32)), affine=affine) for _ in range(4)]
    data = {f"pred{k}": f for k, f in enumerate(folds)}
    out = MeanEnsembled(keys=list(data), output_key="pred")(data)
    expected = torch.stack([f.as_tensor() for f in folds]).mean(0)
    torch.testing.assert_close(out["pred"].as_tensor(), expected)
    binary = AsDiscreted(keys="pred", threshold=0.5)(out)["pred"]
    torch.testing.assert_close(binary.as_tensor(), (expected >= 0.5).float())


@pytest.mark.parametrize("shape", [(1, 24, 20, 5), (2, 9, 7, 3), (1, 12, 11)])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_median_threshold_is_the_median_then_the_threshold(shape, radius):
    from monai.transforms import AsDiscrete

    from strokeseg.postprocessing.smoothing import SliceMedianThreshold, SliceMedianThresholdd

    generator = torch.Generator().manual_seed(len(shape) + radius)
    soft = MetaTensor(torch.rand(*shape, generator=generator).round(decimals=1), affine=torch.eye(4))  # ties at t
    for threshold in (0.5, 0.3):
        smoothed = SliceMedianSmooth(radius=radius)(soft) if radius else soft
        expected = AsDiscrete(threshold=threshold)(smoothed)
        out = SliceMedianThreshold(threshold, radius)(soft)
        assert isinstance(out, MetaTensor) and out.dtype == expected.dtype and out.shape == soft.shape
        assert torch.equal(out.as_tensor(), expected.as_tensor()), threshold
    data = SliceMedianThresholdd("pred", threshold=0.5, radius=radius)({"pred": soft})
    assert torch.equal(data["pred"].as_tensor(), SliceMedianThreshold(0.5, radius)(soft).as_tensor())
