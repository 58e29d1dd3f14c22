"""``CheckImage(d)``: channel count, dimensionality, NaN/Inf and empty images fail early with the file name."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage

from strokeseg.errors import DataError
from strokeseg.transforms.validation import (
    CheckImage,
    CheckImaged,
    CheckNiftiHeaders,
    CheckNiftiHeadersd,
    read_nifti_header,
    source_name,
)


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


# ------------------------------------------------------------------------------- header checks (before loading)


def _good(path: Path, shape: tuple[int, ...] = (6, 5, 4), affine: np.ndarray | None = None) -> Path:
    affine = np.diag([0.9, 0.9, 3.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.ones(shape, dtype=np.float32), affine), str(path))
    return path


def _rewrite_header(src: Path, dst: Path, **fields) -> Path:
    """Copy ``src`` with header fields overwritten in the stored bytes (nibabel would "fix" some of them)."""
    import gzip

    raw = bytearray(gzip.decompress(src.read_bytes()) if src.name.endswith(".gz") else src.read_bytes())
    header = np.frombuffer(bytes(raw[:348]), dtype=nib.Nifti1Header.template_dtype)[0].copy()
    for name, value in fields.items():
        header[name] = value
    raw[:348] = header.tobytes()
    dst.write_bytes(gzip.compress(bytes(raw)) if dst.name.endswith(".gz") else bytes(raw))
    return dst


def test_good_file_gives_shape_affine_and_spacing(tmp_path: Path) -> None:
    for name in ("ok.nii.gz", "ok.nii"):
        info = read_nifti_header(_good(tmp_path / name))
        assert info.shape == (6, 5, 4) and info.grid_shape == (6, 5, 4)
        np.testing.assert_allclose(info.spacing, (0.9, 0.9, 3.0), atol=1e-6)


def test_missing_folder_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.nii\.gz: file does not exist"):
        read_nifti_header(tmp_path / "nowhere.nii.gz")
    (tmp_path / "dir.nii").mkdir()
    with pytest.raises(DataError, match=r"dir\.nii: is a folder"):
        read_nifti_header(tmp_path / "dir.nii")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.nii\.gz: file is empty \(0 bytes\)"):
        read_nifti_header(tmp_path / "empty.nii.gz")


def test_non_nifti_files_with_nifti_names(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "text.nii.gz").write_text("not gzip at all")
    with pytest.raises(DataError, match=r"text\.nii\.gz: is not gzip-compressed.*not a NIfTI file"):
        read_nifti_header(tmp_path / "text.nii.gz")
    (tmp_path / "short.nii").write_text("hello")
    with pytest.raises(DataError, match=r"short\.nii: is not a NIfTI file or is truncated \(5 bytes"):
        read_nifti_header(tmp_path / "short.nii")
    (tmp_path / "png.nii").write_bytes(b"\x89PNG" + bytes(600))
    with pytest.raises(DataError, match=r"png\.nii: is not a NIfTI file \(no NIfTI-1/2 header\)"):
        read_nifti_header(tmp_path / "png.nii")
    (tmp_path / "zipped_text.nii.gz").write_bytes(gzip.compress(b"x" * 600))
    with pytest.raises(DataError, match=r"zipped_text\.nii\.gz: is not a NIfTI file"):
        read_nifti_header(tmp_path / "zipped_text.nii.gz")


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_files_are_named(tmp_path: Path, name: str) -> None:
    good = _good(tmp_path / ("full" + name[3:]), shape=(20, 20, 20))
    data = good.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=re.escape(name) + ": is truncated"):
        read_nifti_header(tmp_path / name)


def test_gzip_cut_inside_the_header(tmp_path: Path) -> None:
    good = _good(tmp_path / "full.nii.gz")
    (tmp_path / "head.nii.gz").write_bytes(good.read_bytes()[:30])
    with pytest.raises(DataError, match=r"head\.nii\.gz: is truncated or corrupt"):
        read_nifti_header(tmp_path / "head.nii.gz")


def test_header_smaller_than_its_data(tmp_path: Path) -> None:
    src = _good(tmp_path / "src.nii.gz")
    dim = nib.load(str(src)).header["dim"].copy()
    dim[3] = 3  # 4 slices stored, 3 announced
    bad = _rewrite_header(src, tmp_path / "bad.nii.gz", dim=dim)
    with pytest.raises(DataError, match=r"bad\.nii\.gz: header size does not match its data.*6×5×3"):
        read_nifti_header(bad)


def test_header_claiming_absurd_size_is_refused_before_allocating(tmp_path: Path) -> None:
    src = _good(tmp_path / "src.nii")
    dim = nib.load(str(src)).header["dim"].copy()
    dim[1:4] = 4000
    bad = _rewrite_header(src, tmp_path / "huge.nii", dim=dim)
    with pytest.raises(DataError, match=r"huge\.nii: header announces 4000×4000×4000 = 6\.4e\+10 voxels"):
        read_nifti_header(bad)
    with pytest.raises(DataError, match=r"more than the 100 accepted"):
        read_nifti_header(src, max_voxels=100)


def test_no_valid_spacing_is_an_error_not_1mm(tmp_path: Path) -> None:
    src = _good(tmp_path / "src.nii.gz")
    pixdim = nib.load(str(src)).header["pixdim"].copy()
    pixdim[1:4] = 0
    bad = _rewrite_header(src, tmp_path / "nospace.nii.gz", qform_code=0, sform_code=0, pixdim=pixdim)
    with pytest.raises(DataError, match=r"nospace\.nii\.gz: has no valid voxel spacing \(qform_code and sform_code"):
        read_nifti_header(bad)
    # codes 0 with a valid pixdim is the NIfTI "method 1" grid: accepted
    ok = _rewrite_header(src, tmp_path / "method1.nii.gz", qform_code=0, sform_code=0)
    np.testing.assert_allclose(read_nifti_header(ok).spacing, (0.9, 0.9, 3.0), atol=1e-6)


def test_singular_affine_is_refused(tmp_path: Path) -> None:
    src = _good(tmp_path / "src.nii.gz")
    bad = _rewrite_header(src, tmp_path / "flat.nii.gz", qform_code=0, sform_code=1, srow_z=np.zeros(4))
    with pytest.raises(DataError, match=r"flat\.nii\.gz: has no valid voxel spacing or orientation"):
        read_nifti_header(bad)


def test_dimensionality_volume_versus_series(tmp_path: Path) -> None:
    series = _good(tmp_path / "pwi.nii.gz", shape=(6, 5, 4, 7))
    volume = _good(tmp_path / "dwi.nii.gz")
    single = _good(tmp_path / "one.nii.gz", shape=(6, 5, 4, 1))
    with pytest.raises(DataError, match=r"pwi\.nii\.gz: holds a 4-D series of 7 volumes.*3-D volume is expected"):
        read_nifti_header(series, ndim=3)
    with pytest.raises(DataError, match=r"dwi\.nii\.gz: holds a single volume.*4-D series is expected"):
        read_nifti_header(volume, ndim=4)
    assert read_nifti_header(series, ndim=4).shape == (6, 5, 4, 7)
    assert read_nifti_header(single, ndim=3).grid_shape == (6, 5, 4)
    assert read_nifti_header(single, ndim=4).shape == (6, 5, 4, 1)  # a series of one time point
    flat = tmp_path / "flat2d.nii"
    nib.save(nib.Nifti1Image(np.ones((6, 5), dtype=np.float32), np.eye(4)), str(flat))
    with pytest.raises(DataError, match=r"flat2d\.nii: is 2-D"):
        read_nifti_header(flat)


def test_case_files_must_share_one_grid(tmp_path: Path) -> None:
    dwi = _good(tmp_path / "dwi.nii.gz")
    shifted = np.diag([0.9, 0.9, 3.0, 1.0])
    shifted[:3, 3] = (0.0, 5.0, 0.0)
    adc_moved = _good(tmp_path / "adc_moved.nii.gz", affine=shifted)
    adc_bigger = _good(tmp_path / "adc_bigger.nii.gz", shape=(6, 5, 5))
    with pytest.raises(DataError, match=r"adc_moved\.nii\.gz: affine differs from .*dwi\.nii\.gz by up to 5 mm"):
        CheckNiftiHeaders()([str(dwi), str(adc_moved)])
    with pytest.raises(DataError, match=r"adc_bigger\.nii\.gz: grid 6×5×5 differs from .*dwi\.nii\.gz \(6×5×4\)"):
        CheckNiftiHeaders()([dwi, adc_bigger])
    assert CheckNiftiHeaders(same_grid=False)([dwi, adc_bigger]) == [dwi, adc_bigger]


def test_dict_version_keys_ndim_and_grid_groups(tmp_path: Path) -> None:
    dwi = _good(tmp_path / "dwi.nii.gz")
    series = _good(tmp_path / "pwi.nii.gz", shape=(6, 5, 4, 3))
    label = _good(tmp_path / "msk.nii.gz", shape=(6, 5, 5))
    check = CheckNiftiHeadersd(["image", "perfusion_4d", "label"], ndim={"perfusion_4d": 4})
    entry = {"image": [str(dwi)], "perfusion_4d": str(series), "label": str(dwi), "case": "c1"}
    assert check(entry) == entry
    with pytest.raises(DataError, match=r"msk\.nii\.gz: grid 6×5×5 differs"):
        check({**entry, "label": str(label)})
    only_image = CheckNiftiHeadersd(["image", "label"], same_grid_keys="image")
    assert only_image({"image": [str(dwi)], "label": str(label)})["label"] == str(label)
    with pytest.raises(DataError, match="4-D series is expected"):
        check({**entry, "perfusion_4d": str(dwi)})
    with pytest.raises(KeyError):
        check({"image": [str(dwi)]})
    lenient = CheckNiftiHeadersd(["image", "flair"], allow_missing_keys=True)
    assert lenient({"image": [str(dwi)]}) == {"image": [str(dwi)]}


def test_tensors_pass_through_unchecked() -> None:
    # a client that feeds tensors (MONAI Deploy drops LoadImage) runs the same preprocessing
    img = MetaTensor(torch.ones(1, 4, 4, 4))
    assert CheckNiftiHeaders()(img) is img
    out = CheckNiftiHeadersd("image")({"image": img})
    assert out["image"] is img
    with pytest.raises(ValueError, match="ndim must be 3 or 4"):
        CheckNiftiHeaders(ndim=2)


def test_an_empty_modality_of_a_stacked_case_is_named(tmp_path: Path) -> None:
    dwi = _nifti(tmp_path / "c_dwi.nii.gz", _volume())
    adc = _nifti(tmp_path / "c_adc.nii.gz", np.zeros((4, 5, 3), dtype=np.float32))
    img = _load([dwi, adc])
    with pytest.raises(DataError, match=r"c_dwi\.nii\.gz: channel 1 of the case \(its file number 2\) is empty"):
        CheckImage(channels=2)(img)
    assert CheckImage(channels=2, allow_empty=True)(img) is img
    series = _load(_nifti(tmp_path / "series.nii.gz", np.stack([_volume(), np.zeros((4, 5, 3), np.float32)], -1)))
    assert CheckImage(channels=2)(series) is series  # one 4-D file: a blank frame is not a missing modality
