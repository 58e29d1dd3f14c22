"""``CheckImage(d)``: channel count, dimensionality, NaN/Inf and empty images fail early with the file name."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage

from strokeseg.errors import DataError
from strokeseg.transforms.validation import CheckImage, CheckImaged, source_name


def _load(path: Path | list[Path]) -> MetaTensor:
    """Load as a bundle does (``LoadImage`` + ``EnsureChannelFirst``) to get MONAI's real metadata."""
    arg = [str(p) for p in path] if isinstance(path, list) else str(path)
    return EnsureChannelFirst()(LoadImage(image_only=True)(arg))


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _volume(shape: tuple[int, ...] = (4, 5, 3)) -> np.ndarray:
    return np.random.default_rng(0).uniform(1.0, 2.0, size=shape).astype(np.float32)


def test_valid_loaded_volume_is_returned_unchanged(tmp_path: Path) -> None:
    img = _load(_nifti(tmp_path / "case_dwi.nii.gz", _volume()))
    out = CheckImage()(img)
    assert out is img


def test_four_d_series_is_named_as_such(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "sub-01_dwi.nii.gz", _volume((4, 5, 3, 3)))
    img = _load(path)
    assert img.shape[0] == 3
    with pytest.raises(DataError) as info:
        CheckImage(channels=1)(img)
    message = str(info.value)
    assert "sub-01_dwi.nii.gz" in message
    assert "expected 1 channel(s), got 3" in message
    assert "4-D series" in message


def test_single_three_d_file_is_not_called_a_series(tmp_path: Path) -> None:
    img = _load(_nifti(tmp_path / "only_dwi.nii.gz", _volume()))
    with pytest.raises(DataError, match=r"only_dwi\.nii\.gz: expected 2 channel\(s\), got 1") as info:
        CheckImage(channels=2)(img)
    assert "4-D" not in str(info.value)


def test_stacked_three_d_files_are_not_called_a_series(tmp_path: Path) -> None:
    paths = [_nifti(tmp_path / f"m{i}.nii.gz", _volume()) for i in range(2)]
    img = _load(paths)
    assert img.shape[0] == 2
    with pytest.raises(DataError, match=r"expected 1 channel\(s\), got 2") as info:
        CheckImage(channels=1)(img)
    assert "4-D" not in str(info.value)


def test_channels_none_accepts_any_count() -> None:
    img = MetaTensor(torch.ones(5, 2, 2, 2))
    assert CheckImage(channels=None)(img) is img


@pytest.mark.parametrize(
    ("shape", "spatial_dims"),
    [((1, 4, 5), 3), ((1, 4, 5, 3, 2), 3), ((1, 4, 5, 3), 2), ((4, 5, 3), 3)],
)
def test_wrong_dimensionality(shape: tuple[int, ...], spatial_dims: int) -> None:
    img = MetaTensor(torch.ones(shape), meta={"filename_or_obj": "/data/x_adc.nii"})
    with pytest.raises(DataError) as info:
        CheckImage(spatial_dims=spatial_dims)(img)
    assert str(info.value).startswith(f"/data/x_adc.nii: expected a {spatial_dims}-D volume")
    assert f"got shape {shape}" in str(info.value)


def test_two_d_image_passes_with_two_spatial_dims() -> None:
    img = torch.ones(1, 4, 5)
    assert CheckImage(spatial_dims=2)(img) is img


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_counted(tmp_path: Path, bad: float) -> None:
    data = _volume()
    data[1, 2, 0] = bad
    data[3, 4, 2] = bad
    img = _load(_nifti(tmp_path / "broken.nii.gz", data))
    kind = "NaN" if np.isnan(bad) else "Inf"
    with pytest.raises(DataError, match=rf"broken\.nii\.gz: contains 2 {kind} voxel\(s\)$"):
        CheckImage()(img)


def test_nan_and_inf_are_counted_separately(tmp_path: Path) -> None:
    data = _volume()
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    img = _load(_nifti(tmp_path / "mixed.nii.gz", data))
    with pytest.raises(DataError, match=r"mixed\.nii\.gz: contains 1 NaN and 2 Inf voxel\(s\)$"):
        CheckImage()(img)


def test_all_zero_image_is_rejected_unless_allowed(tmp_path: Path) -> None:
    img = _load(_nifti(tmp_path / "blank_msk.nii.gz", np.zeros((4, 5, 3), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"blank_msk\.nii\.gz: the image is empty"):
        CheckImage()(img)
    assert CheckImage(allow_empty=True)(img) is img


def test_single_nonzero_voxel_is_not_empty() -> None:
    data = torch.zeros(1, 3, 3, 3, dtype=torch.uint8)
    data[0, 1, 1, 1] = 1
    assert CheckImage()(data) is data


def test_in_memory_tensor_named_in_message() -> None:
    assert source_name(torch.zeros(1)) == "<in-memory image>"
    with pytest.raises(DataError, match="<in-memory image>: the image is empty"):
        CheckImage()(torch.zeros(1, 2, 2, 2))


def test_dict_version_checks_each_key(tmp_path: Path) -> None:
    image = _load(_nifti(tmp_path / "img.nii.gz", _volume()))
    label = _load(_nifti(tmp_path / "lbl.nii.gz", np.zeros((4, 5, 3), dtype=np.uint8)))
    data = {"image": image, "label": label, "case": "c1"}

    out = CheckImaged(keys=["image", "label"], allow_empty=True)(data)
    assert out["image"] is image and out["label"] is label and out["case"] == "c1"

    with pytest.raises(DataError, match=r"lbl\.nii\.gz: the image is empty"):
        CheckImaged(keys=["image", "label"])(data)
    with pytest.raises(KeyError):
        CheckImaged(keys=["image", "flair"])(data)
    assert CheckImaged(keys=["image", "flair"], allow_missing_keys=True)(data)["image"] is image
