"""Discovery of the five ISLES layouts on small fake trees, folds, datalist files and ``cases_for``."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from strokeseg.data.datalist import build_datalist, cases_for, load_datalist, write_datalist
from strokeseg.data.layouts import LAYOUTS, isles2022_paths
from strokeseg.errors import DataError

SHAPE = (8, 8, 4)


def _affine(z0: float = 0.0, x0: float = 0.0, spacing: float = 1.0) -> np.ndarray:
    affine = np.diag([spacing, spacing, 2.0, 1.0])
    affine[:3, 3] = (x0, -4.0, z0)
    return affine


def _write(path: Path, shape: tuple[int, ...] = SHAPE, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


def _legacy_case(
    root: Path,
    layout: str,
    folder: str,
    tokens: list[str],
    prefix: str = "VSD",
    gz: bool = False,
    flat: bool = False,
    affine: np.ndarray | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, Path]:
    """Write an ISLES 2015-2018 case: one ``<stem>/<stem>.nii[.gz]`` (or a flat file) per token."""
    spec = LAYOUTS[layout]
    paths = {}
    for i, token in enumerate(tokens):
        part = spec.label_prefix_part if token == spec.label_token else "Brain.XX.O"
        stem = f"{prefix}.{part}.{token}.{70000 + i}"
        name = stem + (".nii.gz" if gz else ".nii")
        path = root / folder / name if flat else root / folder / stem / name
        paths[token] = _write(path, (shapes or {}).get(token, SHAPE), affine)
    return paths


def _full(layout: str, label: bool = True) -> list[str]:
    spec = LAYOUTS[layout]
    extras = [e.token for e in spec.extras if e.required]
    return [*spec.modalities, *extras, *([spec.label_token] if label else [])]


def _bids_case(root: Path, n: int, rawdata: bool = True, nested: bool = True, label: bool = True, flair: str = "FLAIR"):
    case = f"sub-strokecase{n:04d}"
    paths = isles2022_paths(root, case, rawdata=rawdata)
    session = paths["dwi"].parent.parent
    for key in ("dwi", "adc"):
        target = paths[key] if nested else session / paths[key].name
        _write(target, affine=_oblique())
    flair_name = paths["flair"].name.replace("FLAIR", flair)
    _write((paths["flair"].parent if nested else session) / flair_name, shape=(10, 12, 6))
    if label:
        label_path = paths["label"].parent / ("anat" if nested else "") / paths["label"].name
        _write(label_path, affine=_oblique())
    return case


def _oblique() -> np.ndarray:
    angle = np.deg2rad(12.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    ) @ np.diag([2.0, 2.0, 2.0])
    affine[:3, 3] = (-10.0, 5.0, 3.0)
    return affine


# ------------------------------------------------------------------------------------------------ layouts


def test_isles2015_siss_cases_order_labels_prefixes_and_extensions(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path, layout, "1", _full(layout))
    _legacy_case(tmp_path, layout, "2", _full(layout), prefix="SMIR", gz=True)
    _legacy_case(tmp_path, layout, "10", _full(layout), flat=True)
    _legacy_case(tmp_path, layout, "11", _full(layout, label=False))  # test case: same root, next number
    _write(tmp_path / "preview" / "1" / "VSD.Brain.XX.O.MR_DWI.1.nii")  # not a case folder
    _write(tmp_path / "reference_test_labels" / "VSD.Brain.XX.O.OT.5.nii")
    data = build_datalist(layout, tmp_path, folds=2, seed=0)

    assert data["layout"] == layout and data["modalities"] == ["MR_DWI", "MR_Flair", "MR_T1", "MR_T2"]
    assert [e["case"] for e in data["training"]] == ["1", "2", "10"]
    assert [e["case"] for e in data["testing"]] == ["11"]
    assert data["skipped"] == [] and data["num_folds"] == 2 and data["seed"] == 0
    for entry in data["training"]:
        assert [Path(p).name.split(".")[4] for p in entry["image"]] == data["modalities"]
        assert ".OT." in Path(entry["label"]).name and "Brain_3more" in entry["label"]
        assert entry["fold"] in (0, 1) and all(Path(p).is_absolute() and Path(p).is_file() for p in entry["image"])
    assert data["training"][1]["image"][0].endswith("SMIR.Brain.XX.O.MR_DWI.70000.nii.gz")
    assert Path(data["training"][2]["image"][0]).parent.name == "10"  # file directly in the case folder
    assert "label" not in data["testing"][0] and "fold" not in data["testing"][0]
    assert sorted(e["fold"] for e in data["training"]) in ([0, 0, 1], [0, 1, 1])


def test_isles2015_spes_prefers_penumbra_label(tmp_path):
    layout = "isles2015_spes"
    paths = _legacy_case(tmp_path, layout, "1", _full(layout))
    pen = _write(
        tmp_path / "1" / "VSD.Brain_1more.XX.XX.OT.penumbra.80001" / "VSD.Brain_1more.XX.XX.OT.penumbra.80001.nii"
    )
    with pytest.warns(UserWarning, match="1 training patients for 5 folds; some folds are empty"):
        data = build_datalist(layout, tmp_path)
    (entry,) = data["training"]
    assert entry["label"] == str(pen) and entry["label_choice"] == pen.name
    assert entry["label"] != str(paths["OT"])
    assert [Path(p).name.split(".")[4] for p in entry["image"]] == list(LAYOUTS[layout].modalities)


def test_isles2015_spes_two_labels_without_penumbra_is_an_error(tmp_path):
    layout = "isles2015_spes"
    _legacy_case(tmp_path, layout, "3", _full(layout))
    _write(tmp_path / "3" / "VSD.Brain_1more.XX.XX.OT.80001.nii")
    with pytest.raises(DataError, match=r"3: 2 OT files .*0 of them mention 'penumbra'"):
        build_datalist(layout, tmp_path)


def test_isles2017_5d_perfusion_extra_and_case_patterns(tmp_path):
    layout = "isles2017"
    shapes = {"MR_4DPWI": (*SHAPE, 1, 5)}
    _legacy_case(tmp_path, layout, "training_1", _full(layout), shapes=shapes)
    _legacy_case(tmp_path, layout, "training_12", _full(layout), shapes=shapes, prefix="SMIR")
    _legacy_case(tmp_path, layout, "test_2", _full(layout, label=False), shapes=shapes)
    _write(tmp_path / "case_3" / "VSD.Brain.XX.O.MR_ADC.1.nii")  # another layout's folder name: ignored
    data = build_datalist(layout, tmp_path, folds=2)
    assert [e["case"] for e in data["training"]] == ["training_1", "training_12"]
    assert [e["case"] for e in data["testing"]] == ["test_2"]
    assert data["extras"] == ["perfusion_4d"]
    for entry in data["training"] + data["testing"]:
        assert ".MR_4DPWI." in entry["perfusion_4d"]
        assert nib.load(entry["perfusion_4d"]).shape == (*SHAPE, 1, 5)


def test_isles2017_missing_required_extra_names_it(tmp_path):
    layout = "isles2017"
    tokens = [t for t in _full(layout) if t != "MR_4DPWI"]
    _legacy_case(tmp_path, layout, "training_4", tokens)
    with pytest.raises(DataError, match=r"training_4: missing MR_4DPWI in /.*/training_4; found: .*MR_ADC"):
        build_datalist(layout, tmp_path)


def _isles2018_tree(root: Path) -> dict[str, str]:
    """Three patients of 2, 1 and 3 slabs (x/y origin per patient, z origin per slab) + 2 test slabs."""
    layout = "isles2018"
    patients = {"case_1": "A", "case_2": "A", "case_3": "B", "case_4": "C", "case_5": "C", "case_6": "C"}
    x0 = {"A": 0.0, "B": 7.0, "C": 15.0}
    shapes = {"CT_4DPWI": (*SHAPE, 6)}
    for n, (case, patient) in enumerate(patients.items()):
        tokens = [*_full(layout), "MR_DWI"]
        _legacy_case(
            root, layout, case, tokens, prefix="SMIR", affine=_affine(z0=10.0 * n, x0=x0[patient]), shapes=shapes
        )
    for n in (7, 8):
        _legacy_case(root, layout, f"case_{n}", _full(layout, label=False), prefix="SMIR", shapes=shapes)
    return patients


def test_isles2018_slabs_grouped_into_patients_and_never_split(tmp_path):
    patients = _isles2018_tree(tmp_path)
    data = build_datalist("isles2018", tmp_path, folds=3, seed=0)
    train = {e["case"]: e for e in data["training"]}
    assert list(train) == list(patients)
    assert {c: e["patient"] for c, e in train.items()} == {
        "case_1": "case_1",
        "case_2": "case_1",
        "case_3": "case_3",
        "case_4": "case_4",
        "case_5": "case_4",
        "case_6": "case_4",
    }
    assert train["case_1"]["fold"] == train["case_2"]["fold"]
    assert train["case_4"]["fold"] == train["case_5"]["fold"] == train["case_6"]["fold"]
    assert len({e["fold"] for e in train.values()}) == 3  # three patients, three folds
    assert all(".MR_DWI." in e["dwi"] and ".CT_4DPWI." in e["perfusion_4d"] for e in train.values())
    assert [e["case"] for e in data["testing"]] == ["case_7", "case_8"]
    assert all("dwi" not in e and "label" not in e for e in data["testing"])  # DWI is optional, training only
    assert data["testing"][0]["patient"] != "case_4"  # test slabs never join a training patient


def test_phantom_sidecar_groups_patients(tmp_path):
    layout = "isles2015_siss"
    for n in range(1, 7):
        _legacy_case(tmp_path, layout, str(n), _full(layout))
        (tmp_path / str(n) / "phantom.json").write_text(json.dumps({"seed": n, "patient": f"p{(n + 1) // 2}"}))
    for seed in range(4):
        data = build_datalist(layout, tmp_path, folds=3, seed=seed)
        by_case = {e["case"]: e for e in data["training"]}
        for a, b in (("1", "2"), ("3", "4"), ("5", "6")):
            assert by_case[a]["patient"] == by_case[b]["patient"]
            assert by_case[a]["fold"] == by_case[b]["fold"]
        assert sorted(e["fold"] for e in data["training"]) == [0, 0, 1, 1, 2, 2]


def test_folds_deterministic_balanced_and_seed_dependent(tmp_path):
    layout = "isles2015_siss"
    for n in range(1, 11):
        _legacy_case(tmp_path, layout, str(n), _full(layout))
    first = build_datalist(layout, tmp_path, folds=5, seed=0)
    again = build_datalist(layout, tmp_path, folds=5, seed=0)
    other = build_datalist(layout, tmp_path, folds=5, seed=1)
    folds = [e["fold"] for e in first["training"]]
    assert folds == [e["fold"] for e in again["training"]]
    assert folds != [e["fold"] for e in other["training"]]
    assert sorted(folds) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [e["case"] for e in first["training"]] == [str(n) for n in range(1, 11)]  # natural order


@pytest.mark.parametrize("rawdata", [True, False])
@pytest.mark.parametrize("nested", [True, False])
def test_isles2022_bids_variants(tmp_path, rawdata, nested):
    for n in (1, 2):
        _bids_case(tmp_path, n, rawdata=rawdata, nested=nested, flair="FLAIR" if n == 1 else "flair")
    _bids_case(tmp_path, 3, rawdata=rawdata, nested=nested, label=False)
    data = build_datalist("isles2022", tmp_path, folds=2)
    assert [e["case"] for e in data["training"]] == ["sub-strokecase0001", "sub-strokecase0002"]
    assert [e["case"] for e in data["testing"]] == ["sub-strokecase0003"]
    for entry in data["training"]:
        assert [Path(p).name.rsplit("_", 1)[1] for p in entry["image"]] == ["dwi.nii.gz", "adc.nii.gz"]
        assert entry["label"].endswith("_msk.nii.gz") and f"derivatives{os.sep}" in entry["label"]
        assert entry["flair"].lower().endswith("_flair.nii.gz")  # on its own grid: no grid error
    assert ("rawdata" in data["training"][0]["image"][0]) == rawdata
    assert (f"{os.sep}dwi{os.sep}" in data["training"][0]["image"][0]) == nested


def test_isles2022_multi_session_subject_is_one_patient(tmp_path):
    _bids_case(tmp_path, 1)
    second = isles2022_paths(tmp_path, "sub-strokecase0001", session="ses-0002")
    for key in ("dwi", "adc", "label"):
        _write(second[key], affine=_oblique())
    data = build_datalist("isles2022", tmp_path, folds=2)
    assert [e["case"] for e in data["training"]] == ["sub-strokecase0001_ses-0001", "sub-strokecase0001_ses-0002"]
    assert {e["patient"] for e in data["training"]} == {"sub-strokecase0001"}
    assert len({e["fold"] for e in data["training"]}) == 1
    assert "flair" not in data["training"][1]  # optional extra


def test_separate_training_and_testing_downloads_with_overlapping_numbers(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path / "Training", layout, "1", _full(layout))
    _legacy_case(tmp_path / "Testing", layout, "1", _full(layout, label=False))
    data = build_datalist(layout, tmp_path)
    assert [e["case"] for e in data["training"]] == ["Training_1"]
    assert [e["case"] for e in data["testing"]] == ["Testing_1"]
    alone = build_datalist(layout, tmp_path / "Testing")  # pointing at one download works as well
    assert [e["case"] for e in alone["testing"]] == ["1"] and alone["training"] == []


# ---------------------------------------------------------------------------------------- files and splits


def test_write_load_round_trip_relative_paths(tmp_path):
    root = tmp_path / "data"
    _isles2018_tree(root)
    data = build_datalist("isles2018", root, folds=3)
    out = write_datalist(data, tmp_path / "lists" / "isles2018.json")
    text = out.read_text()
    assert str(tmp_path) not in text and '"../data/case_1/' in text
    assert text.startswith('{\n    "layout"')  # indent 4
    assert load_datalist(out) == data
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp file left behind
    monai_train = load_decathlon_datalist(out, data_list_key="training")
    assert [e["image"] for e in monai_train] == [e["image"] for e in data["training"]]
    assert all(os.path.isfile(p) for e in monai_train for p in [*e["image"], e["label"], e["perfusion_4d"]])


def test_load_datalist_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_datalist(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not readable JSON"):
        load_datalist(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text('{"training": []}')
    with pytest.raises(DataError, match="'training' and 'testing'"):
        load_datalist(tmp_path / "partial.json")


def test_cases_for_splits_and_modalities(tmp_path):
    root = tmp_path / "data"
    _isles2018_tree(root)
    list_file = write_datalist(build_datalist("isles2018", root, folds=3, seed=2), tmp_path / "dl.json")
    for source in (root, list_file):
        trainval = cases_for(source, "isles2018", "trainval", num_folds=3, seed=2)
        assert [e["case"] for e in trainval] == [f"case_{n}" for n in range(1, 7)]
        for fold in range(3):
            train = cases_for(source, "isles2018", "train", fold, 3, 2)
            val = cases_for(source, "isles2018", "val", fold, 3, 2)
            assert val and {e["case"] for e in train}.isdisjoint(e["case"] for e in val)
            assert sorted(e["case"] for e in train + val) == sorted(e["case"] for e in trainval)
            assert {e["patient"] for e in train}.isdisjoint(e["patient"] for e in val)
            assert train == cases_for(source, "isles2018", "train", fold, 3, 2)  # deterministic
        assert [e["case"] for e in cases_for(source, "isles2018", "test", num_folds=3, seed=2)] == ["case_7", "case_8"]
        assert len(cases_for(source, "isles2018", "all", num_folds=3, seed=2)) == 8
        picked = cases_for(source, "isles2018", "val", 0, 3, 2, modalities=["CT_Tmax", "CT"])
        assert all([Path(p).name.split(".")[4] for p in e["image"]] == ["CT_Tmax", "CT"] for e in picked)
        assert all(Path(p).is_absolute() for e in picked for p in e["image"])
    one_fold = cases_for(root, "isles2018", "val", 0, 1)
    assert one_fold == cases_for(root, "isles2018", "train", 0, 1) and len(one_fold) == 6


def test_cases_for_argument_errors(tmp_path):
    root = tmp_path / "data"
    _isles2018_tree(root)
    list_file = write_datalist(build_datalist("isles2018", root, folds=3), tmp_path / "dl.json")
    with pytest.raises(ValueError, match=r"isles2018: unknown modality 'MR_DWI'; available: CT, CT_CBF"):
        cases_for(root, "isles2018", "train", 0, 3, modalities=["MR_DWI"])
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        cases_for(root, "isles2018", "validation")
    with pytest.raises(ValueError, match=r"fold must be in \[0, 3\), got 3"):
        cases_for(root, "isles2018", "val", 3, 3)
    with pytest.raises(DataError, match="has 3 folds but num_folds=5"):
        cases_for(list_file, "isles2018", "train", 0, 5)
    with pytest.raises(DataError, match="datalist .*missing.json does not exist"):
        cases_for(tmp_path / "missing.json", "isles2018")
    with pytest.raises(DataError, match="is for layout 'isles2018', not 'isles2017'"):
        cases_for(list_file, "isles2017", "train", 0, 3)


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="dataset root .*nowhere does not exist"):
        build_datalist("isles2015_siss", tmp_path / "nowhere")
    (tmp_path / "preview").mkdir()
    with pytest.raises(DataError, match=r"no case folder \(like 'case_1'\) in .*; found: preview"):
        build_datalist("isles2018", tmp_path)


def test_missing_modality_lists_missing_and_found(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path, layout, "5", ["MR_Flair", "MR_T1", "OT"])
    with pytest.raises(DataError, match=r"^5: missing MR_DWI, MR_T2 in /.*/5; found: MR_Flair, MR_T1, OT$"):
        build_datalist(layout, tmp_path)


def test_two_files_for_one_modality(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path, layout, "2", _full(layout))
    _write(tmp_path / "2" / "VSD.Brain.XX.O.MR_DWI.99999.nii.gz")
    with pytest.raises(DataError, match=r"2: 2 files for MR_DWI \(.*70000\.nii, 2/VSD.*99999\.nii\.gz\); expected one"):
        build_datalist(layout, tmp_path)


def test_text_file_named_nii(tmp_path):
    layout = "isles2015_siss"
    paths = _legacy_case(tmp_path, layout, "1", _full(layout))
    paths["MR_T1"].write_text("not an image\n")
    with pytest.raises(DataError, match=r"1: cannot read 1/VSD.Brain.XX.O.MR_T1.70002/.*\.nii as NIfTI"):
        build_datalist(layout, tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    layout = "isles2015_siss"
    paths = _legacy_case(tmp_path, layout, "1", _full(layout), gz=gz)
    flair = paths["MR_Flair"]
    img = nib.load(flair)
    # enough incompressible voxels (100 kB) for the gzip stream to span several blocks
    noise = np.random.default_rng(0).integers(0, 30000, (*SHAPE, 200)).astype(np.int16)
    nib.save(nib.Nifti1Image(noise, img.affine), str(flair))
    if gz:
        flair.write_bytes(flair.read_bytes()[:-100])  # stream cut short: header still readable
    else:
        flair.write_bytes(flair.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"1: 1/VSD.Brain.XX.O.MR_Flair.70001/.* is truncated or corrupt"):
        build_datalist(layout, tmp_path)


def test_multi_member_gzip_is_complete(tmp_path):
    layout = "isles2015_siss"
    paths = _legacy_case(tmp_path, layout, "1", _full(layout), gz=True)
    raw = gzip.decompress(paths["MR_T1"].read_bytes())
    paths["MR_T1"].write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]))  # as pigz/bgzip may write
    assert len(build_datalist(layout, tmp_path)["training"]) == 1
    paths["MR_T1"].write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:-8]))  # 8 voxel bytes short
    with pytest.raises(DataError, match=r"MR_T1.* is truncated or corrupt: .* holds 856 bytes"):
        build_datalist(layout, tmp_path)


def test_grid_mismatch_names_both_files(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path, layout, "1", _full(layout), shapes={"OT": (8, 8, 5)})
    with pytest.raises(DataError, match=r"1: grid mismatch: .*MR_DWI.*shape \(8, 8, 4\).* vs .*OT.*shape \(8, 8, 5\)"):
        build_datalist(layout, tmp_path)
    other = tmp_path / "other"
    paths = _legacy_case(other, layout, "1", _full(layout))
    _write(paths["MR_T2"], affine=_affine(x0=0.01))  # 10 µm shift: beyond the 1e-3 mm tolerance
    with pytest.raises(
        DataError, match=r"grid mismatch: .*MR_DWI.*affine .* vs .*MR_T2.*affine \[\[1\.0, 0\.0, 0\.0, 0\.01\]"
    ):
        build_datalist(layout, other)
    assert len(build_datalist(layout, other, grid_tolerance_mm=0.02)["training"]) == 1  # the knob widens it
    assert len(cases_for(other, layout, "trainval", 0, 1, grid_tolerance_mm=0.02)) == 1
    with pytest.raises(DataError, match=r"±0\.001 mm; --grid_tolerance_mm"):
        cases_for(other, layout, "trainval", 0, 1)
    _write(paths["MR_T2"], affine=_affine(x0=0.0005))  # within tolerance
    assert len(build_datalist(layout, other)["training"]) == 1


def test_perfusion_series_on_another_grid_is_a_mismatch(tmp_path):
    layout = "isles2018"
    _legacy_case(tmp_path, layout, "case_1", _full(layout), shapes={"CT_4DPWI": (8, 6, 4, 10)})
    with pytest.raises(DataError, match=r"case_1: grid mismatch: .*CT_4DPWI.*shape \(8, 6, 4\)"):
        build_datalist(layout, tmp_path)


def test_allow_incomplete_warns_skips_and_records(tmp_path):
    layout = "isles2015_siss"
    _legacy_case(tmp_path, layout, "1", _full(layout))
    _legacy_case(tmp_path, layout, "2", ["MR_DWI", "MR_Flair", "OT"])
    bad = _legacy_case(tmp_path, layout, "3", _full(layout))
    bad["MR_T2"].write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning, match="skipping case 2: 2: missing MR_T1, MR_T2") as record:
        data = build_datalist(layout, tmp_path, allow_incomplete=True)
    assert any("skipping case 3: 3: cannot read" in str(w.message) for w in record)
    assert [e["case"] for e in data["training"]] == ["1"]
    assert [s["case"] for s in data["skipped"]] == ["2", "3"]
    assert "missing MR_T1, MR_T2" in data["skipped"][0]["reason"] and "MR_T2" in data["skipped"][1]["reason"]
    only_bad = tmp_path / "bad"
    _legacy_case(only_bad, layout, "2", ["MR_DWI"])
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of the 1 cases .* is complete"):
        build_datalist(layout, only_bad, allow_incomplete=True)
