"""Stand-alone inputs (NIfTI files, DICOM series folders) and layouts narrowed to what a bundle reads."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.data.datalist import build_datalist, select_split
from strokeseg.data.discovery import narrowed_layout, standalone_volumes
from strokeseg.data.layouts import get_layout, isles_legacy_name
from strokeseg.errors import DataError

ISLES2017 = get_layout("isles2017")


def _slices(folder: Path, count: int = 3) -> Path:
    """A folder named like a series, holding slice files with the ``.dcm`` ending (recognised by name)."""
    folder.mkdir(parents=True)
    for k in range(count):
        (folder / f"IM{k:04d}.dcm").write_bytes(b"\0" * 132)
    return folder


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), dtype=np.float32), np.eye(4)), str(path))
    return path


def test_series_folder_or_folder_of_series_folders_are_stand_alone_volumes(tmp_path: Path) -> None:
    one = _slices(tmp_path / "patients" / "1.2.840.10")
    two = _slices(tmp_path / "patients" / "1.2.840.9")
    assert standalone_volumes(one) == [one]
    assert standalone_volumes(tmp_path / "patients") == [two, one]  # natural order: 9 before 10
    assert standalone_volumes(tmp_path) is None  # a folder of folders of series: a dataset root, not volumes
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an export's index is no slice
    assert standalone_volumes(tmp_path) is None
    (tmp_path / "patients" / "notes").mkdir()
    assert standalone_volumes(tmp_path / "patients") is None


def test_lone_dicom_file_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = _slices(tmp_path / "series")
    with pytest.raises(DataError) as error:
        standalone_volumes(folder / "IM0001.dcm")
    assert str(error.value) == (
        f"{folder / 'IM0001.dcm'}: is a single DICOM file (one slice of a series); give the folder that holds "
        f"the series ({folder}) instead"
    )


def test_nifti_inputs_are_unchanged(tmp_path: Path) -> None:
    scan = _nifti(tmp_path / "scans" / "b.nii.gz")
    other = _nifti(tmp_path / "scans" / "a.nii")
    assert standalone_volumes(scan) == [scan]
    assert standalone_volumes(tmp_path / "scans") == [other, scan]
    assert standalone_volumes(tmp_path / "list.json") is None


def _isles2017_case(root: Path, name: str, tokens: tuple[str, ...]) -> None:
    for n, token in enumerate(tokens):
        stem = isles_legacy_name(ISLES2017, token, 100 + n)
        _nifti(root / name / stem.removesuffix(".nii") / stem)


def test_narrowed_layout_accepts_a_case_without_the_files_a_bundle_does_not_read(tmp_path: Path) -> None:
    read = ("MR_ADC", "MR_MTT", "MR_rCBF")
    _isles2017_case(tmp_path, "test_1", read)  # no MR_4DPWI, MR_rCBV, MR_Tmax, MR_TTP
    with pytest.raises(DataError, match="missing MR_rCBV, MR_Tmax, MR_TTP, MR_4DPWI"):
        build_datalist("isles2017", tmp_path)

    spec = narrowed_layout(ISLES2017, ["mr_rcbf", "MR_ADC"], extras=[])
    [entry] = select_split(build_datalist(spec, tmp_path), "test", modalities=["MR_rCBF", "MR_ADC"])
    assert [Path(p).parent.name.split(".")[4] for p in entry["image"]] == ["MR_rCBF", "MR_ADC"]
    assert "perfusion_4d" not in entry

    # an extra the bundle reads stays required; one present but not read is still picked up
    with pytest.raises(DataError, match="missing MR_4DPWI"):
        build_datalist(narrowed_layout(ISLES2017, read, extras=["perfusion_4d"]), tmp_path)
    _isles2017_case(tmp_path, "test_2", (*read, "MR_4DPWI"))
    data = build_datalist(narrowed_layout(ISLES2017, read, extras=[]), tmp_path)
    assert [("perfusion_4d" in e) for e in data["testing"]] == [False, True]
    with pytest.raises(ValueError, match="unknown modality 'CT'; available: MR_ADC"):
        narrowed_layout(ISLES2017, ["CT"], None)
