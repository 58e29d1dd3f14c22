"""One grid rule and one ``grid_tolerance_mm`` knob: the header check, discovery grids, ``strokeseg evaluate``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.data.headers import read_grid, same_grid
from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM, affines_match, grid_tolerance
from strokeseg.knobs import KnobError
from strokeseg.metrics.casefiles import check_same_grid, load_volume
from strokeseg.tools.cli import main
from strokeseg.transforms.validation import CheckNiftiHeaders, CheckNiftiHeadersd

SHIFT_MM = 0.004  # an origin rounded by an export: more than the default 0.001 mm, less than 0.01 mm


def _pair(folder: Path, name: str = "case") -> tuple[Path, Path]:
    """A 0/1 volume and the same volume with its origin moved by :data:`SHIFT_MM`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((6, 5, 4), np.uint8)
    data[2:4, 1:3, 1:3] = 1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted = affine.copy()
    shifted[0, 3] += SHIFT_MM
    a, b = folder / f"{name}_a.nii.gz", folder / f"{name}_b.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(a))
    nib.save(nib.Nifti1Image(data, shifted), str(b))
    return a, b


def test_affines_match_within_the_tolerance_only():
    a = np.eye(4)
    b = a.copy()
    b[1, 3] = 0.0009
    assert GRID_TOLERANCE_MM == 0.001 and affines_match(a, b) and not affines_match(a, b, 0.0005)
    assert not affines_match(a, np.eye(3), 1.0)
    assert grid_tolerance("1e-2") == 0.01
    for bad in (-1, "nan", "wide", True):
        with pytest.raises(KnobError, match="--grid_tolerance_mm expects a"):
            grid_tolerance(bad)


def test_the_header_check_uses_the_knob(tmp_path):
    a, b = _pair(tmp_path)
    with pytest.raises(DataError, match=r"affine differs from .* by up to 0\.004 mm \(tolerance 0\.001 mm, grid_tol"):
        CheckNiftiHeadersd(["image", "label"])({"image": str(a), "label": str(b)})
    with pytest.raises(DataError, match="affine differs"):
        CheckNiftiHeaders()([str(a), str(b)])
    assert CheckNiftiHeadersd(["image", "label"], grid_tolerance_mm="0.01")({"image": str(a), "label": str(b)})
    assert CheckNiftiHeaders(grid_tolerance_mm=0.01)([str(a), str(b)]) == [str(a), str(b)]
    with pytest.raises(KnobError):
        CheckNiftiHeadersd("image", grid_tolerance_mm=-0.1)


def test_discovery_grids_use_the_same_rule(tmp_path):
    a, b = _pair(tmp_path)
    first, second = read_grid(a, "case", tmp_path), read_grid(b, "case", tmp_path)
    assert not same_grid(first, second)
    assert same_grid(first, second, tolerance_mm=0.01)


def test_strokeseg_evaluate_takes_the_tolerance(tmp_path, capsys):
    pred, label = _pair(tmp_path / "files")
    with pytest.raises(DataError, match=r"differ by up to 0\.004 mm \(tolerance 0\.001 mm, --grid_tolerance_mm\)"):
        check_same_grid(load_volume(pred), load_volume(label))
    check_same_grid(load_volume(pred), load_volume(label), tolerance_mm=0.01)

    (tmp_path / "pred").mkdir()
    (tmp_path / "labels").mkdir()
    pred.rename(tmp_path / "pred" / "case1_seg.nii.gz")
    label.rename(tmp_path / "labels" / "case1.nii.gz")
    command = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "labels"), "--figures", "false"]
    assert main([*command, "--out", str(tmp_path / "refused")]) == 2
    assert "--grid_tolerance_mm" in capsys.readouterr().err
    assert main([*command, "--out", str(tmp_path / "report"), "--grid_tolerance_mm", "0.01"]) == 0
    assert (tmp_path / "report" / "metrics.csv").is_file()
