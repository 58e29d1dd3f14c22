"""DICOM series folders: one series read without its pixels on the grid MONAI's ITK reader gives, the header
checks of the loaders, and one line for a folder of several series or a lone slice file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.dicom import read_series_info
from strokeseg.errors import DataError
from strokeseg.transforms.validation import CheckNiftiHeadersd, read_nifti_header

from .dicom_series import write_dicom_series

SHAPE = (10, 12, 5)


def _oblique_affine() -> np.ndarray:
    """RAS affine: 0.8 × 0.9 × 3 mm voxels rotated 0.2 rad about z, off-origin."""
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.8, 0.9, 3.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    return affine


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(folder, volume, affine)`` of one oblique series."""
    volume = np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE) % 1000
    folder = write_dicom_series(volume, _oblique_affine(), tmp_path_factory.mktemp("dicom") / "1.2.840.99")
    return folder, volume, _oblique_affine()


def test_series_grid_is_the_grid_monai_itk_reader_loads(series) -> None:
    from monai.transforms import LoadImage

    folder, volume, affine = series
    info = read_series_info(folder)
    loaded = LoadImage(image_only=True)(str(folder))

    assert info.shape == SHAPE == tuple(loaded.shape)
    assert np.allclose(info.spacing, (0.8, 0.9, 3.0), atol=1e-5)
    assert np.allclose(info.affine, affine, atol=1e-4)
    assert np.allclose(info.affine, loaded.affine.numpy(), atol=1e-6)
    assert np.array_equal(loaded.numpy(), volume)
    assert info.files == SHAPE[2]


def test_header_check_reads_a_series_folder_like_a_nifti_file(series, tmp_path: Path) -> None:
    folder, volume, affine = series
    header = read_nifti_header(folder)
    assert header.grid_shape == SHAPE and np.allclose(header.affine, affine, atol=1e-4)

    same = tmp_path / "adc.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(same))
    CheckNiftiHeadersd(keys="image")({"image": [str(folder), str(same)]})  # one grid: accepted

    shifted = affine.copy()
    shifted[:3, 3] += 4.0
    nib.save(nib.Nifti1Image(volume.astype(np.float32), shifted), str(same))
    with pytest.raises(DataError, match="affine differs from .*1.2.840.99"):
        CheckNiftiHeadersd(keys="image")({"image": [str(folder), str(same)]})
    with pytest.raises(DataError, match=r"DICOM series folder \(one 3-D volume\); a 4-D series is expected"):
        read_nifti_header(folder, ndim=4)


def test_folder_of_two_series_is_refused_in_one_line(series, tmp_path: Path) -> None:
    folder, volume, affine = series
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in folder.iterdir():
        (mixed / f"a_{path.name}").write_bytes(path.read_bytes())
    write_dicom_series(volume[:, :, :3], affine, mixed, series=2, prefix="b_")

    with pytest.raises(DataError) as error:
        read_nifti_header(mixed)
    message = str(error.value)
    assert message.startswith(f"{mixed}: holds 2 DICOM series (") and "give one series per folder" in message
    assert "\n" not in message


def test_lone_slice_file_or_folder_without_dicom_is_refused_in_one_line(series, tmp_path: Path) -> None:
    folder, _, _ = series
    slice_file = sorted(folder.iterdir())[0]
    with pytest.raises(DataError) as error:
        read_nifti_header(slice_file)
    assert str(error.value) == (
        f"{slice_file}: is a single DICOM file (one slice of a series); give the folder that holds the series "
        f"({folder}) instead"
    )
    # a DICOM file without the .dcm ending is recognised by its preamble
    unnamed = tmp_path / "IM0001"
    unnamed.write_bytes(slice_file.read_bytes())
    with pytest.raises(DataError, match="single DICOM file"):
        read_nifti_header(unnamed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="is a folder without DICOM files; give a DICOM series folder or a NIfTI"):
        read_nifti_header(empty)
