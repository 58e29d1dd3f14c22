"""Inputs on a grid the network was not trained for: one warning line per case (spacing, too small), and the
DICOM / narrowed-layout discovery of :class:`strokeseg.runtime.inputs.InferenceCases`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.errors import DataError
from strokeseg.runtime.input_grid import size_warning, spacing_warning
from strokeseg.runtime.inputs import InferenceCases, inference_cases


def _scan(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, dtype=np.float32), np.diag([*spacing, 1.0])), str(path))
    return path


def _bundle(root: Path) -> Path:
    spec = {
        "layout": "isles2022",
        "stages": ["train"],
        "networks": [{"id": "network_def", "checkpoint": "models/model.pt", "stage": "train"}],
        "inference_outputs": ["{case}/{case}_seg.nii.gz"],
    }
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps({"strokeseg": spec}))
    return root


def test_spacing_far_from_the_training_spacing_is_one_line_with_case_spacings_and_factor() -> None:
    line = spacing_warning("case_7", (0.5, 0.5, 7.0), (1.0, 1.0, 1.0))
    assert line == (
        "case_7: voxel spacing 0.5 × 0.5 × 7 mm differs from the 1 × 1 × 1 mm the network was trained at by a "
        "factor 7 on axis 2 (more than 1.5); the segmentation may be worse: resample the scan to the training "
        "spacing first"
    )
    assert spacing_warning("c", (1.4, 0.7, 1.0), (1.0, 1.0, 1.0)) is None  # within 1.5× either way
    assert "factor 2 on axis 0" in spacing_warning("c", (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), factor=1.9)
    # an axis the bundle resamples itself, or one trained at any spacing, is not reported
    assert spacing_warning("c", (0.5, 0.5, 7.0), (1.6, 1.6, None), resampled_spacing_mm=(1.6, 1.6, -1)) is None
    assert "axis 0" in spacing_warning("c", (0.5, 0.5, 7.0), (1.6, 1.6, None), resampled_spacing_mm=(None, 1.6, 0))


def test_scan_smaller_than_the_network_needs_is_one_line() -> None:
    assert size_warning("tiny", (16, 16, 4), (1.0, 1.0, 1.0), (24, 24, 16)) == (
        "tiny: the scan is 16 × 16 × 4 voxels, smaller than the 24 × 24 × 16 the network needs; the segmentation "
        "will likely be empty or wrong"
    )
    assert size_warning("ok", (24, 30, 16), (1.0, 1.0, 1.0), (24, 24, 16)) is None
    # measured on the grid the network sees: 40 voxels of 1 mm resampled to 4 mm are 10
    line = size_warning("small", (40, 40, 40), (1.0, 1.0, 1.0), (17, 17, 17), resampled_spacing_mm=(4.0, 4.0, 4.0))
    assert "40 × 40 × 40 voxels (10 × 10 × 10 after resampling), smaller than the 17 × 17 × 17" in line
    assert size_warning("c", (16, 16, 1), (1.6, 1.6, 5.0), (16, 16, 1), resampled_spacing_mm=(1.6, 1.6, -1)) is None


def test_inference_cases_warn_once_per_case_on_an_untrained_grid(tmp_path: Path, caplog) -> None:
    scans = tmp_path / "scans"
    _scan(scans / "good.nii.gz", (30, 30, 20), (1.0, 1.0, 1.0))
    _scan(scans / "thick.nii.gz", (30, 30, 20), (0.5, 0.5, 7.0))
    _scan(scans / "tiny.nii.gz", (16, 16, 4), (1.0, 1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="strokeseg.runtime.input_grid"):
        inputs = InferenceCases(
            scans,
            "isles2022",
            tmp_path / "out",
            _bundle(tmp_path / "bundle"),
            modalities=["dwi"],
            training_spacing_mm=[1.0, 1.0, 1.0],
            min_input_shape=[24, 24, 16],
        )
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == inputs.grid_warnings and len(lines) == 2
    assert lines[0].startswith("thick: voxel spacing 0.5 × 0.5 × 7 mm") and "factor 7" in lines[0]
    assert lines[1].startswith("tiny: the scan is 16 × 16 × 4 voxels")
    assert [c["case"] for c in inputs.pending] == ["good", "thick", "tiny"]  # warned, not refused


def test_dicom_series_folder_is_one_case_named_by_the_whole_folder_name(tmp_path: Path) -> None:
    series = tmp_path / "1.2.840.113619.7"
    series.mkdir()
    for k in range(3):
        (series / f"IM{k}.dcm").write_bytes(b"\0" * 132)
    assert inference_cases(series, "isles2022") == [{"image": [str(series.resolve())], "case": "1.2.840.113619.7"}]
    with pytest.raises(DataError, match="is a single DICOM file .*give the folder that holds the series"):
        inference_cases(series / "IM1.dcm", "isles2022")
    with pytest.raises(DataError, match="stand-alone NIfTI file or DICOM series is one single-modality case"):
        InferenceCases(series, "isles2017", tmp_path / "out", _bundle(tmp_path / "bundle"))
