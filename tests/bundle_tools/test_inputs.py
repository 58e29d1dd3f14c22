"""``inference_cases``: one file, a folder of files, a dataset root or a datalist → datalist entries."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.bundle.inputs import case_name_from_file, inference_cases, is_nifti
from strokeseg.data.datalist import build_datalist, write_datalist
from strokeseg.errors import DataError


def _nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, dtype=np.float32), np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return path


def _isles2022_subject(root: Path, n: int, label: bool) -> dict[str, Path]:
    """``rawdata/sub-strokecaseNNNN/ses-0001/dwi/*_{dwi,adc}.nii.gz`` (+ ``derivatives/.../*_msk.nii.gz``)."""
    case = f"sub-strokecase{n:04d}"
    stem = f"{case}_ses-0001"
    dwi_dir = root / "rawdata" / case / "ses-0001" / "dwi"
    paths = {"dwi": _nifti(dwi_dir / f"{stem}_dwi.nii.gz"), "adc": _nifti(dwi_dir / f"{stem}_adc.nii.gz", 800.0)}
    if label:
        paths["label"] = _nifti(root / "derivatives" / case / "ses-0001" / f"{stem}_msk.nii.gz", 0.0)
    return paths


def test_single_file_is_one_case_named_by_stem(tmp_path: Path) -> None:
    for name, case in (("scan.nii.gz", "scan"), ("patient.7.nii", "patient.7")):
        path = _nifti(tmp_path / name)
        assert inference_cases(path, "isles2022") == [{"image": [str(path.resolve())], "case": case}]


def test_relative_file_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nifti(tmp_path / "sub" / "my_dwi.nii.gz")
    monkeypatch.chdir(tmp_path)
    [entry] = inference_cases("sub/my_dwi.nii.gz", "isles2022")
    assert entry["image"] == [str(tmp_path.resolve() / "sub" / "my_dwi.nii.gz")]
    assert Path(entry["image"][0]).is_absolute()


def test_folder_of_files_is_one_case_per_file(tmp_path: Path) -> None:
    b = _nifti(tmp_path / "b.nii")
    a = _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    cases = inference_cases(tmp_path, "isles2017")
    assert cases == [
        {"image": [str(a.resolve())], "case": "a"},
        {"image": [str(b.resolve())], "case": "b"},
    ]


def test_missing_path_raises_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(DataError, match=rf"{missing} does not exist"):
        inference_cases(missing, "isles2022")


def test_dataset_root_delegates_to_cases_for(tmp_path: Path) -> None:
    labelled = _isles2022_subject(tmp_path, 1, label=True)
    unlabelled = _isles2022_subject(tmp_path, 2, label=False)

    test = inference_cases(tmp_path, "isles2022", split="test", num_folds=1)

    assert [e["case"] for e in test] == ["sub-strokecase0002"]
    assert test[0]["image"] == [str(unlabelled["dwi"].resolve()), str(unlabelled["adc"].resolve())]
    assert "label" not in test[0]

    everything = inference_cases(tmp_path, "isles2022", split="all", num_folds=1)
    assert [e["case"] for e in everything] == ["sub-strokecase0001", "sub-strokecase0002"]
    assert everything[0]["label"] == str(labelled["label"].resolve())

    adc_only = inference_cases(tmp_path, "isles2022", split="test", num_folds=1, modalities=["adc"])
    assert adc_only[0]["image"] == [str(unlabelled["adc"].resolve())]


def test_datalist_json_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "isles"
    _isles2022_subject(root, 1, label=True)
    unlabelled = _isles2022_subject(root, 2, label=False)
    datalist = write_datalist(build_datalist("isles2022", root, folds=1), tmp_path / "datalist.json")

    test = inference_cases(datalist, "isles2022", split="test", num_folds=1)
    assert [e["case"] for e in test] == ["sub-strokecase0002"]
    assert test[0]["image"] == [str(unlabelled["dwi"].resolve()), str(unlabelled["adc"].resolve())]


def test_empty_split_suggests_infer_split(tmp_path: Path) -> None:
    _isles2022_subject(tmp_path, 1, label=True)
    with pytest.raises(DataError, match="no 'test' case.*--infer_split all"):
        inference_cases(tmp_path, "isles2022", split="test", num_folds=1)


def test_empty_folder_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no case folder"):
        inference_cases(tmp_path, "isles2022")


def test_name_helpers() -> None:
    assert is_nifti(Path("x.nii")) and is_nifti(Path("x.nii.gz"))
    assert not is_nifti(Path("x.json")) and not is_nifti(Path("x.nii.gz.bak"))
    assert case_name_from_file(Path("/d/sub-01_ses-1_dwi.nii.gz")) == "sub-01_ses-1_dwi"
    assert case_name_from_file(Path("/d/a.b.nii")) == "a.b"


def test_upper_case_nifti_names_are_recognised(tmp_path):
    from strokeseg.bundle.inputs import case_name_from_file, is_nifti

    path = tmp_path / "SCAN.NII.GZ"
    assert is_nifti(path)
    assert case_name_from_file(path) == "SCAN"
