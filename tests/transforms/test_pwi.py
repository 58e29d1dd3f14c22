"""PWI_max over time, brain-masked z-scores and the 5-channel CT stack (P. Liu 2018, §2.1)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged

from strokeseg.errors import DataError
from strokeseg.transforms.pwi import (
    CTP_CHANNELS,
    BrainZScore,
    BrainZScored,
    LoadPerfusionMaximumd,
    PerfusionMaximum,
    PerfusionMaximumd,
    StackCTPChannelsd,
)
from strokeseg.transforms.validation import CheckNiftiHeadersd


def _write(path, array):
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 5.0, 1.0])), str(path))
    return str(path)


def _series(shape=(6, 5, 3, 7), seed=0):
    return np.random.default_rng(seed).integers(-100, 300, size=shape).astype(np.int16)


def test_maximum_over_time_equals_numpy(tmp_path):
    series = _series()
    loaded = LoadImaged("pwi", image_only=True)({"pwi": _write(tmp_path / "pwi.nii.gz", series)})
    out = PerfusionMaximumd("pwi", names="pwi_max")(loaded)
    assert "pwi" not in out
    peak = out["pwi_max"]
    assert isinstance(peak, MetaTensor) and peak.shape == (1, 6, 5, 3) and peak.dtype == torch.float32
    np.testing.assert_array_equal(peak[0].numpy(), series.max(axis=3))
    np.testing.assert_allclose(peak.affine.numpy(), np.diag([0.8, 0.8, 5.0, 1.0]))


def test_singleton_time_axis_and_five_d_files(tmp_path):
    series = _series()
    volume = series[..., :1]  # (X, Y, Z, 1): a series of one time point
    single = LoadImaged("p", image_only=True)({"p": _write(tmp_path / "one.nii.gz", volume)})["p"]
    np.testing.assert_array_equal(PerfusionMaximum()(single)[0].numpy(), volume[..., 0])
    five_d = series[:, :, :, None, :]  # (X, Y, Z, 1, T): time stored on the 5th NIfTI axis
    loaded = LoadImaged("p", image_only=True)({"p": _write(tmp_path / "five.nii.gz", five_d)})["p"]
    assert loaded.ndim == 5
    np.testing.assert_array_equal(PerfusionMaximum()(loaded)[0].numpy(), series.max(axis=3))
    # numpy input, no meta
    assert PerfusionMaximum()(series.astype(np.float32)).shape == (1, 6, 5, 3)


def test_three_d_file_is_a_clear_error_naming_it(tmp_path):
    path = _write(tmp_path / "SMIR.Brain.XX.O.CT_MTT.1.nii.gz", _series()[..., 0])
    loaded = LoadImaged("perfusion_4d", image_only=True)({"perfusion_4d": path})
    with pytest.raises(DataError, match=r"CT_MTT\.1\.nii\.gz.*expected the 4-D CT perfusion series"):
        PerfusionMaximumd("perfusion_4d")(loaded)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_load_maximum_equals_load_then_reduce(tmp_path, suffix):
    series = _series(shape=(6, 5, 3, 7))
    path = _write(tmp_path / f"SMIR.Brain.XX.O.CT_4DPWI.7{suffix}", series)
    reference = PerfusionMaximumd("p", names="pwi_max")(LoadImaged("p", image_only=True, dtype=None)({"p": path}))
    out = LoadPerfusionMaximumd("p", names="pwi_max")({"p": path, "other": 1})
    assert "p" not in out and out["other"] == 1
    peak, expected = out["pwi_max"], reference["pwi_max"]
    assert isinstance(peak, MetaTensor) and peak.shape == (1, 6, 5, 3) and peak.dtype == torch.float32
    assert peak.is_contiguous()
    np.testing.assert_array_equal(peak.numpy(), expected.numpy())
    np.testing.assert_allclose(peak.affine.numpy(), expected.affine.numpy())
    assert peak.meta["filename_or_obj"] == path and tuple(peak.meta["spatial_shape"]) == (6, 5, 3)
    # an already loaded series (a tensor) is reduced the same way
    loaded = LoadImaged("p", image_only=True)({"p": path})
    np.testing.assert_array_equal(LoadPerfusionMaximumd("p")(loaded)["p"].numpy(), expected.numpy())


def test_load_maximum_applies_scaling_and_five_d_files(tmp_path):
    series = _series()
    image = nib.Nifti1Image(series[:, :, :, None, :], np.diag([0.8, 0.8, 5.0, 1.0]))
    image.header.set_slope_inter(0.5, 10.0)
    path = str(tmp_path / "scaled.nii")
    nib.save(image, path)
    out = LoadPerfusionMaximumd("p")({"p": path})["p"]
    np.testing.assert_allclose(out[0].numpy(), series.max(axis=3) * 0.5 + 10.0)


def test_load_maximum_of_a_three_d_file_is_a_clear_error_naming_it(tmp_path):
    path = _write(tmp_path / "SMIR.Brain.XX.O.CT_MTT.1.nii", _series()[..., 0])
    with pytest.raises(DataError, match=r"CT_MTT\.1\.nii.*expected the 4-D CT perfusion series"):
        LoadPerfusionMaximumd("perfusion_4d")({"perfusion_4d": path})


def test_load_maximum_of_a_corrupt_file_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "SMIR.Brain.XX.O.CT_4DPWI.9.nii"
    path.write_bytes(b"not a nifti file at all" * 20)
    # what the GAN's configs run: the shared header check, then the loader
    check = CheckNiftiHeadersd("perfusion_4d", ndim=4)
    with pytest.raises(DataError, match=r"CT_4DPWI\.9\.nii: is not a NIfTI file"):
        LoadPerfusionMaximumd("perfusion_4d")(check({"perfusion_4d": str(path)}))
    single = _write(tmp_path / "one_time_point.nii", _series()[..., :1])  # a series of one time point passes
    out = LoadPerfusionMaximumd("p")(CheckNiftiHeadersd("p", ndim=4)({"p": single}))["p"]
    np.testing.assert_array_equal(out[0].numpy(), _series()[..., 0])


def test_brain_z_score_inside_the_mask_only():
    img = torch.tensor([[[1.0, 2.0], [3.0, 50.0]], [[0.0, 4.0], [8.0, -9.0]]])  # (2, 2, 2)
    mask = torch.tensor([[1, 1], [1, 0]])
    out = BrainZScore()(img, mask)
    for c in range(2):
        inside = img[c][mask.bool()]
        expected = (inside - inside.mean()) / inside.std(unbiased=False)
        torch.testing.assert_close(out[c][mask.bool()], expected)
        assert out[c][1, 1] == 0
    # a zero-valued voxel inside the brain is normalised too (MONAI's nonzero=True would leave it at 0)
    assert out[1][0, 0] != 0


def test_brain_mask_from_the_maps_excludes_the_skull_of_pwi_max():
    maps = torch.zeros(5, 4, 4, 1)
    maps[:4, 1:3, 1:3] = torch.rand(4, 2, 2, 1) + 1
    maps[4] = 500.0  # PWI_max: skull and air are not zero
    maps[4, 1:3, 1:3] = torch.tensor([[1.0], [2.0]]).expand(2, 2, 1)
    out = BrainZScored("image", mask_channels=[0, 1, 2, 3])({"image": maps})["image"]
    assert float(out[4].abs().amax()) == pytest.approx(1.0, abs=1e-4)
    assert bool((out[:, 0] == 0).all())
    with pytest.raises(DataError, match="no brain voxel"):
        BrainZScored("image")({"image": torch.zeros(4, 3, 3, 1)})


def test_stack_gives_the_five_channels_in_paper_order():
    maps = MetaTensor(torch.rand(4, 6, 5, 3), affine=torch.eye(4), meta={"filename_or_obj": "maps.nii"})
    pwi = torch.rand(1, 6, 5, 3)
    out = StackCTPChannelsd()({"image": maps, "pwi_max": pwi})
    assert set(out) == {"image"} and out["image"].shape == (5, 6, 5, 3)
    torch.testing.assert_close(out["image"][4], pwi[0])
    torch.testing.assert_close(out["image"][:4].as_tensor(), maps.as_tensor())
    assert CTP_CHANNELS == ("CT_MTT", "CT_Tmax", "CT_CBV", "CT_CBF", "PWI_max")


def test_stack_refuses_wrong_channels_or_grid():
    maps = MetaTensor(torch.rand(3, 6, 5, 3), meta={"filename_or_obj": "maps.nii"})
    with pytest.raises(DataError, match="maps.nii: expected the 4 perfusion maps"):
        StackCTPChannelsd()({"image": maps, "pwi_max": torch.rand(1, 6, 5, 3)})
    maps = MetaTensor(torch.rand(4, 6, 5, 3), meta={"filename_or_obj": "maps.nii"})
    pwi = MetaTensor(torch.rand(1, 6, 5, 4), meta={"filename_or_obj": "pwi.nii"})
    with pytest.raises(DataError, match="pwi.nii: perfusion series grid"):
        StackCTPChannelsd()({"image": maps, "pwi_max": pwi})
