"""One case-name rule: ``case_name`` of a file, ``entry_case_name`` of a datalist entry or a loaded item."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor

from strokeseg.naming import OUTPUT_TAILS, case_name, entry_case_name


def test_case_name_keeps_dots_and_drops_only_the_nifti_extension_and_a_tail():
    assert case_name("/d/VSD.Brain.XX.O.MR_DWI.70613.nii") == "VSD.Brain.XX.O.MR_DWI.70613"
    assert case_name(Path("/d/SCAN.NII.GZ")) == "SCAN"
    assert case_name("/d/sub-01_seg.nii.gz") == "sub-01_seg"
    assert case_name("/d/sub-01_seg.nii.gz", OUTPUT_TAILS) == "sub-01"
    assert case_name("/d/_seg.nii.gz", OUTPUT_TAILS) == "_seg"  # a tail alone is a name, not an empty one


def test_entry_case_name_prefers_the_case_field_then_the_first_image_file():
    assert entry_case_name({"case": "c7", "image": ["/d/x.nii.gz"]}) == "c7"
    assert entry_case_name({"image": ["/d/VSD.Brain.1.nii", "/d/y.nii"]}) == "VSD.Brain.1"
    loaded = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/d/sub-3_dwi.nii.gz"})
    assert entry_case_name({"image": loaded}) == "sub-3_dwi"


def test_entry_case_name_falls_back_to_the_index_or_raises():
    assert entry_case_name({"image": torch.zeros(1, 2, 2)}, index=4) == "case_4"
    with pytest.raises(ValueError, match="no 'case' field"):
        entry_case_name({"image": torch.zeros(1, 2, 2)})


def test_entry_case_name_reads_other_image_keys_with_tails():
    label = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/ref/sub-9_label.nii.gz"})
    pred = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/out/sub-8_seg.nii.gz"})
    item = {"pred": pred, "label": label}
    assert entry_case_name(item, image_keys=("label", "pred"), tails=OUTPUT_TAILS) == "sub-9"
    assert entry_case_name({"pred": pred, "label": None}, image_keys=("label", "pred"), tails=OUTPUT_TAILS) == "sub-8"
