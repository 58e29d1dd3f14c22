"""``masked_zscore``, the one z-score inside a mask, against hand-computed volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.transforms.intensity import masked_zscore


def test_inside_the_mask_population_std_and_zero_outside():
    # inside: 1, 3 -> mean 2, population std 1 (the sample std would be sqrt(2))
    out = masked_zscore(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([1, 1, 0]))
    assert out.dtype == torch.float64
    assert out.tolist() == [[-1.0, 1.0, 0.0]]


def test_statistics_are_float64_whatever_the_input_dtype():
    image = np.array([[16_777_216.0, 16_777_218.0, 0.0]], dtype=np.float32)  # 2**24 and 2**24 + 2
    out = masked_zscore(image, np.array([True, True, False]))
    assert out.dtype == torch.float64 and out.tolist() == [[-1.0, 1.0, 0.0]]


def test_one_shared_mask_in_either_shape_or_one_mask_per_channel():
    image = torch.tensor([[1.0, 3.0, 5.0], [10.0, 20.0, 60.0]])
    shared = torch.tensor([1, 1, 0])
    expected = torch.tensor([[-1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(masked_zscore(image, shared), expected)
    assert torch.equal(masked_zscore(image, shared[None]), expected)
    # channel 1 over its last two voxels: 20, 60 -> mean 40, std 20
    per_channel = torch.tensor([[1, 1, 0], [0, 1, 1]])
    out = masked_zscore(image, per_channel)
    assert out.tolist() == [[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]]


def test_a_mask_of_another_shape_is_refused():
    with pytest.raises(ValueError, match=r"mask of shape \(2, 2\)"):
        masked_zscore(torch.zeros(1, 3), torch.ones(2, 2))


def test_keep_fraction_leaves_the_brightest_voxels_out_of_the_statistics_only():
    # 1..10 inside; int(0.8 * 10) = 8 darkest: 1..8 -> mean 4.5, population std sqrt((8**2 - 1) / 12)
    values = torch.arange(1.0, 11.0)[None]
    out = masked_zscore(values, torch.ones(10), keep_fraction=0.8)
    expected = (np.arange(1.0, 11.0) - 4.5) / math.sqrt((8**2 - 1) / 12)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-12)  # 9 and 10 are normalised too


def test_keep_fraction_keeps_values_tied_with_the_cut_as_often_as_needed():
    # int(0.6 * 5) = 3 darkest of 1, 2, 2, 2, 9: {1, 2, 2} -> mean 5/3, population std sqrt(2) / 3
    out = masked_zscore(torch.tensor([[2.0, 9.0, 1.0, 2.0, 2.0]]), torch.ones(5), keep_fraction=0.6)
    mean, std = 5 / 3, math.sqrt(2) / 3
    np.testing.assert_allclose(out[0].numpy(), (np.array([2, 9, 1, 2, 2]) - mean) / std, rtol=1e-12)


def test_keep_fraction_equals_a_partial_sort():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, size=(2, 9, 9, 4)).astype(np.float64)  # many ties
    mask = image > 3
    out = masked_zscore(image, mask, keep_fraction=0.9).numpy()
    for c in range(2):
        values = image[c][mask[c]]
        kept = np.partition(values, int(0.9 * values.size) - 1)[: int(0.9 * values.size)]
        np.testing.assert_allclose(out[c][mask[c]], (values - kept.mean()) / kept.std(), rtol=1e-12)


def test_without_spread_a_channel_is_only_centred_or_raises():
    image = torch.tensor([[5.0, 5.0, 7.0], [1.0, 3.0, 0.0]])
    mask = torch.tensor([1, 1, 0])
    out = masked_zscore(image, mask)
    assert out.tolist() == [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]
    with pytest.raises(DataError, match=r"scan\.nii\.gz: channel 0 has constant brain intensity \(5\)"):
        masked_zscore(image, mask, zero_spread="raise", name="scan.nii.gz", region="brain")


def test_an_empty_mask_gives_zeros_or_raises():
    image = torch.tensor([[1.0, 2.0]])
    assert masked_zscore(image, torch.zeros(2)).tolist() == [[0.0, 0.0]]
    with pytest.raises(DataError, match="case_3.nii: channel 0 has no voxel inside the mask"):
        masked_zscore(MetaTensor(image, meta={"filename_or_obj": "case_3.nii"}), torch.zeros(2), zero_spread="raise")


def test_outside_scale_divides_the_background_without_centring_it():
    # inside: 2, 4 -> mean 3, std 1; outside: 0 stays 0, -6 is only divided by the std
    out = masked_zscore(torch.tensor([[0.0, 2.0, 4.0, -6.0]]), torch.tensor([0, 1, 1, 0]), outside="scale")
    assert out.tolist() == [[0.0, -1.0, 1.0, -6.0]]
    # 10, 30 -> mean 20, std 10: the background is divided by 10
    out = masked_zscore(torch.tensor([[10.0, 30.0, -5.0]]), torch.tensor([1, 1, 0]), outside="scale")
    assert out.tolist() == [[-1.0, 1.0, -0.5]]


def test_a_meta_tensor_gives_a_plain_tensor():
    image = MetaTensor(torch.tensor([[1.0, 3.0]]), meta={"filename_or_obj": "x.nii.gz"})
    out = masked_zscore(image, torch.ones(2))
    assert type(out) is torch.Tensor and out.tolist() == [[-1.0, 1.0]]


@pytest.mark.parametrize(
    "option, match",
    [
        ({"keep_fraction": 0.0}, "keep_fraction"),
        ({"keep_fraction": 1.5}, "keep_fraction"),
        ({"zero_spread": "eps"}, "zero_spread"),
        ({"outside": "keep"}, "outside"),
    ],
)
def test_bad_options_are_refused(option, match):
    with pytest.raises(ValueError, match=match):
        masked_zscore(torch.ones(1, 2), torch.ones(2), **option)


def test_an_image_without_channel_axis_is_refused():
    with pytest.raises(ValueError, match=r"channel-first"):
        masked_zscore(torch.ones(3), torch.ones(3))
