"""``relative_foreground``: noise floor dropped, bright tissue kept, threshold as documented; ``brain_mask``: the
union of the channels off their background."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CropForeground

from strokeseg.transforms.foreground import brain_mask, relative_foreground, selection_quantile


def _rician(shape: tuple[int, ...], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Magnitude of complex Gaussian noise: what an MR image shows outside the head (> 0 almost everywhere)."""
    real = torch.randn(shape, generator=generator) * sigma
    imag = torch.randn(shape, generator=generator) * sigma
    return torch.sqrt(real**2 + imag**2)


def _head_phantom(shape: tuple[int, ...], box: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(1, *shape)``: Rician noise (sigma 2) everywhere, tissue 80-120 inside ``box``; and the box mask."""
    generator = torch.Generator().manual_seed(0)
    img = _rician((1, *shape), 2.0, generator)
    head = torch.zeros((1, *shape), dtype=torch.bool)
    head[(slice(None), *box)] = True
    tissue = 80.0 + 40.0 * torch.rand((1, *shape), generator=generator)
    img[head] = tissue[head]
    return img, head


def test_noise_background_dropped_and_head_kept() -> None:
    img, head = _head_phantom((24, 20, 10), (slice(5, 19), slice(4, 16), slice(2, 8)))
    assert bool((img > 0).all())  # MONAI's default `x > 0` would keep the whole field of view

    mask = relative_foreground(img)

    assert mask.dtype == torch.bool and mask.shape == img.shape
    assert torch.equal(mask, head)


def test_crop_foreground_with_relative_select_fn_crops_to_the_head() -> None:
    img, _ = _head_phantom((24, 20, 10), (slice(5, 19), slice(4, 16), slice(2, 8)))
    assert CropForeground()(img).shape == (1, 24, 20, 10)
    assert CropForeground(select_fn=relative_foreground)(img).shape == (1, 14, 12, 6)


def test_threshold_is_fraction_of_the_quantile_of_positive_voxels() -> None:
    # positives 1..100: torch's linear 0.99 quantile is 99.01, 0.1 x 99.01 = 9.901 -> values >= 10 kept
    values = torch.cat([torch.zeros(50), torch.arange(1.0, 101.0)]).reshape(1, 10, 15)
    mask = relative_foreground(values)
    assert torch.equal(mask, values >= 10)
    assert int(mask.sum()) == 91

    # 0.5 x the median (50.5) -> values >= 26 kept; zeros never count towards the level
    assert torch.equal(relative_foreground(values, fraction=0.5, quantile=0.5), values >= 26)


def test_few_hot_voxels_do_not_raise_the_level() -> None:
    img, head = _head_phantom((24, 20, 10), (slice(5, 19), slice(4, 16), slice(2, 8)))
    img[0, 0, 0, :3] = 1e5  # three spikes outside the head, 3 of 4800 voxels (< 1 %)
    mask = relative_foreground(img)
    expected = head.clone()
    expected[0, 0, 0, :3] = True
    assert torch.equal(mask, expected)


def test_all_channels_share_one_level() -> None:
    img = torch.zeros(2, 4, 4, 4)
    img[0] = 100.0
    img[1] = 5.0  # dim channel: below 0.1 x the bright channel's level
    mask = relative_foreground(img)
    assert bool(mask[0].all()) and not bool(mask[1].any())


def test_all_zero_image_has_no_foreground() -> None:
    mask = relative_foreground(torch.zeros(1, 4, 4, 4))
    assert mask.dtype == torch.bool and mask.shape == (1, 4, 4, 4)
    assert not bool(mask.any())


def test_negative_only_image_has_no_foreground() -> None:
    assert not bool(relative_foreground(-torch.ones(1, 3, 3, 3)).any())


def _large_case(shape: tuple[int, int, int], head: tuple[slice, slice, slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise (0.01-3.01, all positive) with a constant 100 box; returns the image and the box mask."""
    img = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1)) * 3.0 + 0.01
    img[(0, *head)] = 100.0
    box = torch.zeros_like(img, dtype=torch.bool)
    box[(0, *head)] = True
    return img, box


def test_large_image_uses_a_subsample_and_finds_the_same_head() -> None:
    img, box = _large_case((128, 128, 72), (slice(30, 100), slice(20, 110), slice(10, 60)))
    assert img.numel() > 1_000_000  # strided subsample branch
    assert torch.equal(relative_foreground(img), box)


@pytest.mark.slow
def test_image_beyond_torch_quantile_limit() -> None:
    # 17.0 M positive voxels: more than torch.quantile accepts (2**24), only the subsample makes it work
    img, box = _large_case((260, 256, 256), (slice(60, 200), slice(50, 210), slice(40, 220)))
    assert img.numel() > 2**24
    assert torch.equal(relative_foreground(img), box)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 65_537])
def test_selection_quantile_is_torch_quantile_bit_for_bit(n):
    values = torch.rand(n, generator=torch.Generator().manual_seed(n)) * 1000.0
    values[: n // 3] = values[0]  # ties
    for q in (0.0, 0.01, 0.5, 0.99, 0.999, 1.0):
        assert torch.equal(selection_quantile(values, q), torch.quantile(values, q)), (n, q)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        selection_quantile(torch.zeros(0), 0.5)


def test_brain_mask_is_the_union_of_the_channels_off_zero() -> None:
    maps = np.zeros((2, 4, 3), dtype=np.float32)
    maps[0, :2, :2] = [[1, 2], [3, 4]]  # Tmax-like: 0 in part of the brain
    maps[1, :2] = [[10, -10, 10], [20, 20, 20]]  # a negative value is brain too
    mask = brain_mask(maps)
    assert mask.shape == (4, 3) and mask.dtype == torch.bool
    assert mask[:2].all() and not mask[2:].any()


def test_brain_mask_minimum_background_of_volumes_z_scored_as_a_whole() -> None:
    image = torch.full((2, 3, 2, 2), -1.5)  # z-scored background: a negative constant per channel
    image[1] = -0.7
    image[0, 0, 0, 0] = 2.0
    image[1, 2, 1, 1] = -0.2
    mask = brain_mask(MetaTensor(image), background="minimum")
    assert type(mask) is torch.Tensor and mask.shape == (3, 2, 2)
    assert mask.nonzero().tolist() == [[0, 0, 0], [2, 1, 1]]
    assert bool(brain_mask(image).all())  # nothing is 0: the "zero" rule would call everything brain


def test_brain_mask_refuses_a_bad_background_or_no_channel_axis() -> None:
    with pytest.raises(ValueError, match="background"):
        brain_mask(torch.ones(1, 2, 2), background="otsu")
    with pytest.raises(ValueError, match="channel-first"):
        brain_mask(torch.ones(4))


def _scaled_int16(values: np.ndarray, slope: float, inter: float, tmp_path) -> torch.Tensor:
    """``values`` stored as int16 with ``scl_slope``/``scl_inter`` and loaded back by MONAI, channel first."""
    import nibabel as nib
    from monai.transforms import LoadImage

    stored = np.round((values - inter) / slope).astype(np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(slope, inter)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


def test_zero_background_restores_the_exact_zero_a_scaled_int16_map_loses(tmp_path) -> None:
    from strokeseg.transforms.foreground import ZeroBackground

    values = np.zeros((12, 10, 4), dtype=np.float32)
    values[3:9, 2:8, 1:3] = np.arange(1, 6 * 6 * 2 + 1, dtype=np.float32).reshape(6, 6, 2)
    loaded = _scaled_int16(values, 0.1, -3.7, tmp_path)
    assert not bool(loaded[0][values == 0].eq(0).any())  # the fault: "brain = any channel != 0" takes everything
    assert int(brain_mask(loaded).sum()) == values.size

    shifted = ZeroBackground("mode")(loaded)

    assert isinstance(shifted, MetaTensor) and shifted.dtype == torch.float32
    np.testing.assert_allclose(shifted.affine.numpy(), np.eye(4))
    assert torch.equal(brain_mask(shifted), torch.from_numpy(values != 0))
    np.testing.assert_allclose(shifted[0].numpy(), values, atol=1e-5)


def test_zero_background_is_per_channel_and_keeps_nan_for_the_checks_after_it() -> None:
    from strokeseg.transforms.foreground import ZeroBackgroundd, background_values

    img = torch.full((2, 40), 7.0)
    img[0, :10] = torch.arange(10.0) + 20.0  # channel 0: background 7 (mode), minimum 7
    img[1] = torch.linspace(-3.0, 5.0, 40)  # channel 1: no repeated value, minimum -3
    img[1, 5] = float("nan")

    assert background_values(img, "mode")[0] == 7.0
    np.testing.assert_allclose(background_values(img, "minimum").numpy(), [7.0, -3.0])
    out = ZeroBackgroundd("image", rule="minimum")({"image": img})["image"]

    assert out[0, 10:].eq(0).all() and out[0, 0] == 13.0
    assert out[1, 0] == 0.0 and int(torch.isnan(out[1]).sum()) == 1


def test_zero_background_leaves_a_zero_background_as_it_is() -> None:
    from strokeseg.transforms.foreground import ZeroBackground

    img = torch.zeros(1, 6, 5, 4)
    img[0, 2:4, 1:3, 1:3] = torch.tensor([[0.5, 2.0], [3.0, 4.0]])
    for rule in ("mode", "minimum"):
        assert torch.equal(ZeroBackground(rule)(img), img)
    with pytest.raises(ValueError, match="rule"):
        ZeroBackground("median")
