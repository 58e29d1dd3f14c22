"""The layout registry's naming helpers."""

from __future__ import annotations

import pytest

from strokeseg.data.layouts import get_layout, isles_legacy_name, modality_token
from strokeseg.naming import nifti_stem


@pytest.mark.parametrize(
    ("name", "stem"),
    [("a.nii", "a"), ("a.nii.gz", "a"), ("SCAN.NII.GZ", "SCAN"), ("x.y.nii", "x.y"), ("a.txt", None), (".nii", None)],
)
def test_nifti_stem(name, stem):
    assert nifti_stem(name) == stem


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("VSD.Brain.XX.O.MR_DWI.70613.nii", "MR_DWI"),
        ("VSD.Brain_3more.XX.XX.OT.70618.nii", "OT"),
        ("SMIR.Brain.XX.O.CT_4DPWI.345563", "CT_4DPWI"),
        ("VSD.Brain.XX.O.MR_4DPWI.127014.nii.gz", "MR_4DPWI"),
        ("sub-strokecase0001_ses-0001_dwi.nii.gz", None),
    ],
)
def test_modality_token(name, token):
    assert modality_token(name) == token


def test_legacy_names_round_trip_through_the_token_parser():
    layout = get_layout("isles2015_siss")
    assert isles_legacy_name(layout, "OT", 5) == "VSD.Brain_3more.XX.XX.OT.5.nii"
    for token in (*layout.modalities, layout.label_token):
        assert modality_token(isles_legacy_name(layout, token, 70001, gz=True)) == token


def test_unknown_layout_lists_the_known_ones():
    with pytest.raises(ValueError, match="isles2022"):
        get_layout("isles2030")
