"""A DICOM series in, a NIfTI prediction out on the series' grid, through ``python -m monai.bundle run``.

The good test case's first image is written as a DICOM series (ITK, one file per slice, on the same grid). A
single-modality bundle is given the series folder itself as ``--dataset_dir`` (what ``strokeseg infer BUNDLE
series/`` passes on); a multi-modality bundle a datalist whose entry names the series folder as that modality's
path. The prediction must be a NIfTI file with the shape and world affine of the series as ITK reads it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.runtime.description import BundleDescription

from ..dicom_series import write_nifti_as_dicom
from .conftest import run_config
from .test_bad_inputs import _datalist, _setup

SERIES = "1.2.840.113619.2.77"  # series folders are often named by their UID: the case keeps the whole name


@pytest.mark.representative("stroke_dwi_edd_muscle")
def test_dicom_series_in_nifti_prediction_out_on_the_series_grid(
    bundle: BundleDescription, smoke_dataset, tmp_path: Path
) -> None:
    from monai.transforms import LoadImage

    setup = _setup(bundle, tmp_path / "setup", smoke_dataset(bundle.layout))
    series = write_nifti_as_dicom(Path(setup.good["image"][0]), tmp_path / "export" / SERIES)
    if len(setup.good["image"]) == 1:
        source, case = series, SERIES
    else:
        entry = {**setup.good, "image": [str(series), *setup.good["image"][1:]]}
        source, case = _datalist(setup, [entry], tmp_path / "dicom.json"), setup.good["case"]
    out = tmp_path / "out"

    run = run_config(setup.copy, ["configs/inference.json"], setup.args(source, out), tmp_path / "dicom.log")

    assert run.returncode == 0, run.failure()
    reference = LoadImage(image_only=True)(str(series))
    for name in bundle.outputs_for(case):
        written = nib.load(str(out / name))
        assert isinstance(written, nib.Nifti1Image), name
        assert written.shape[:3] == tuple(reference.shape), name
        np.testing.assert_allclose(written.affine, reference.affine.numpy(), atol=1e-4, err_msg=name)
