"""Synthetic stroke phantoms: on-disk layouts, geometry, labels and realism of every ISLES layout.

Each layout is synthesised once per module (one training + one test case) and reused by many tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.data.layouts import get_layout, isles2022_paths, modality_token
from strokeseg.data.phantoms import Grid, mirror_voxels, synthesize_dataset
from strokeseg.data.phantoms.case import MODALITY_SOURCES

LEGACY = ("isles2015_siss", "isles2015_spes", "isles2017", "isles2018")
ALL = (*LEGACY, "isles2022")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Lazily synthesised dataset per layout: ``dataset(layout) -> root``."""
    cache: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in cache:
            root = tmp_path_factory.mktemp(layout)
            cache[layout] = synthesize_dataset(layout, root, cases=1, test_cases=1, seed=3)
        return cache[layout]

    return get


def _case_dirs(root: Path, layout: str) -> dict[str, Path]:
    spec = get_layout(layout)
    base = root / "rawdata" if spec.bids else root
    return {
        "training": base / spec.train_case_pattern.format(n=1),
        "testing": base / spec.test_case_pattern.format(n=2),
    }


def _legacy_files(case_dir: Path) -> dict[str, Path]:
    """token → file, checking the folder = file stem convention."""
    files = {}
    for folder in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        inner = list(folder.iterdir())
        assert [p.name for p in inner] == [folder.name + ".nii"], folder
        files[modality_token(folder.name)] = inner[0]
    return files


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _meta(case_dir: Path) -> dict:
    return json.loads((case_dir / "phantom.json").read_text())


@pytest.mark.parametrize("layout", LEGACY)
def test_legacy_tree_names_and_labels(dataset, layout):
    root = dataset(layout)
    spec = get_layout(layout)
    dirs = _case_dirs(root, layout)
    expected = set(spec.modalities) | {e.token for e in spec.extras}
    train = _legacy_files(dirs["training"])
    assert set(train) == expected | {spec.label_token}
    test = _legacy_files(dirs["testing"])
    test_expected = expected - {e.token for e in spec.extras if e.training_only}
    assert set(test) == test_expected  # no label (and no training-only DWI) for test cases
    assert (root / "reference_test_labels" / f"{dirs['testing'].name}.nii.gz").is_file()
    for path in train.values():
        prefix = path.name.split(".")[0]
        assert prefix == spec.prefix and path.suffix == ".nii"
    label_name = train[spec.label_token].name
    assert label_name.startswith(f"{spec.prefix}.{spec.label_prefix_part}.OT.")
    meta = _meta(dirs["training"])
    assert meta["split"] == "training" and meta["layout"] == layout and meta["seed"] == 3
    assert _meta(dirs["testing"])["split"] == "testing"


def test_isles2022_bids_tree(dataset):
    root = dataset("isles2022")
    train = isles2022_paths(root, "sub-strokecase0001")
    test = isles2022_paths(root, "sub-strokecase0002")
    for key in ("dwi", "adc", "flair", "label"):
        assert train[key].is_file(), train[key]
    for key in ("dwi", "adc", "flair"):
        assert test[key].is_file()
    assert not test["label"].exists()
    assert (root / "reference_test_labels" / "sub-strokecase0002.nii.gz").is_file()
    assert (root / "rawdata" / "sub-strokecase0001" / "phantom.json").is_file()
    assert train["dwi"].read_bytes()[:2] == b"\x1f\x8b"  # gzip


@pytest.mark.parametrize("layout", ALL)
def test_grids_dtypes_and_label_alignment(dataset, layout):
    root = dataset(layout)
    dirs = _case_dirs(root, layout)
    meta = _meta(dirs["training"])
    if layout == "isles2022":
        paths = isles2022_paths(root, "sub-strokecase0001")
        files = {"dwi": paths["dwi"], "adc": paths["adc"], "FLAIR": paths["flair"], "label": paths["label"]}
    else:
        files = _legacy_files(dirs["training"])
        files["label"] = files.pop("OT")
    label, label_affine = _load(files["label"])
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    grid = Grid(label.shape, label_affine)
    image_grid = meta["grids"]["image"]
    assert list(label.shape) == image_grid["shape"]
    direction = label_affine[:3, :3] / grid.spacing
    for token, path in files.items():
        data, affine = _load(path)
        if token == "FLAIR":
            assert data.shape != label.shape and not np.allclose(affine, label_affine)
            assert np.isclose(Grid(data.shape[:3], affine).spacing[:2], 1.0, atol=0.15).all()
            continue
        assert data.shape[:3] == label.shape and np.allclose(affine, label_affine), token
        source = MODALITY_SOURCES[layout].get(token)
        if source in ("ct", "series_ct", "series_mr"):
            assert data.dtype == np.int16, token
        elif token != "label":
            assert data.dtype == np.float32, token
    if layout == "isles2015_siss":
        assert label.shape == (230, 230, 154) and np.allclose(grid.spacing, 1.0)
    elif layout == "isles2015_spes":
        assert label.shape == (96, 110, 72) and np.allclose(grid.spacing, 2.0)
    elif layout == "isles2017":
        assert grid.spacing[2] > 4.5 and grid.spacing[2] > 3 * grid.spacing[0]
        series, _ = _load(files["MR_4DPWI"])
        assert series.ndim == 5 and series.shape[3] == 1 and 40 <= series.shape[4] <= 80
    elif layout == "isles2018":
        assert label.shape[:2] == (256, 256) and 2 <= label.shape[2] <= 22
        series, _ = _load(files["CT_4DPWI"])
        frames = series.shape[-1]
        assert series.ndim in (4, 5) and 40 <= frames <= 60
        assert nib.load(str(files["CT_4DPWI"])).header.get_zooms()[-1] == pytest.approx(1.0)
        ct, _ = _load(files["CT"])
        assert ct.min() <= -900 and ct.max() >= 500  # air and skull: not skull-stripped
    else:
        assert label.shape == (112, 112, 73) and np.allclose(grid.spacing, 2.0)
        off_diagonal = direction - np.diag(np.diag(direction))
        assert np.abs(off_diagonal).max() > 0.02  # oblique
    if layout != "isles2022":
        assert np.allclose(direction, np.diag(np.diag(direction)))  # axis-aligned
    reference, ref_affine = _load(root / "reference_test_labels" / f"{dirs['testing'].name}.nii.gz")
    test_meta = _meta(dirs["testing"])
    assert list(reference.shape) == test_meta["grids"]["image"]["shape"]
    assert np.allclose(ref_affine, np.array(test_meta["grids"]["image"]["affine"]), atol=1e-3)


def _signed_distance(grid: Grid, voxels: np.ndarray, plane: dict) -> np.ndarray:
    normal = np.asarray(plane["normal"])
    return (grid.world(voxels) - np.asarray(plane["point_mm"])) @ normal


@pytest.mark.parametrize("layout", ALL)
def test_lesions_one_hemisphere_in_brain_and_described(dataset, layout):
    root = dataset(layout)
    for split, case_dir in _case_dirs(root, layout).items():
        meta = _meta(case_dir)
        path = root / meta["files"]["label" if split == "training" else "reference"]
        label, affine = _load(path)
        grid = Grid(label.shape, affine)
        voxels = np.argwhere(label)
        assert voxels.shape[0] > 0
        side = np.sign(_signed_distance(grid, voxels, meta["midsagittal_plane"]))
        assert np.all(side == (1 if meta["hemisphere"] == "right" else -1))
        assert {lesion["hemisphere"] for lesion in meta["lesions"]} == {meta["hemisphere"]}
        total = sum(lesion["voxels"] for lesion in meta["lesions"])
        assert total == voxels.shape[0]
        volume = sum(lesion["volume_mm3"] for lesion in meta["lesions"])
        assert volume == pytest.approx(voxels.shape[0] * grid.voxel_volume_mm3, rel=1e-3)
        for lesion in meta["lesions"]:
            assert lesion["category"] in ("lacunar", "small_cortical", "large_cortical")
            channel = lesion["channel_volumes_mm3"]
            assert channel["core"] <= channel["final"] + 1e-6 <= channel["penumbra"] + 2e-6
            centroid = grid.voxel(np.array(lesion["centroid_mm"]))
            assert np.all(centroid > -1) and np.all(centroid < np.array(label.shape))
        assert meta["difficulty"] == "standard" and "dwi.core_ratio" in meta["contrasts"]


def _contrast(root: Path, layout: str, token: str) -> tuple[float, float]:
    """Mean over label voxels and over their mirror voxels, of the training case."""
    case_dir = _case_dirs(root, layout)["training"]
    meta = _meta(case_dir)
    if layout == "isles2022":
        paths = isles2022_paths(root, case_dir.name)
        label, affine = _load(paths["label"])
        image, _ = _load(paths[token])
    else:
        files = _legacy_files(case_dir)
        label, affine = _load(files["OT"])
        image, _ = _load(files[token])
    grid = Grid(label.shape, affine)
    voxels = np.argwhere(label)
    plane = meta["midsagittal_plane"]
    mirrored, inside = mirror_voxels(grid, plane["point_mm"], plane["normal"], voxels)
    image = image.astype(np.float64)
    return image[tuple(voxels[inside].T)].mean(), image[tuple(mirrored[inside].T)].mean()


def test_realistic_contrasts_core_layouts(dataset):
    # ISLES 2018 (label = core): CT hypodensity, CBF < 30 %, Tmax > 10 s, DWI 1.6-2.5×
    root = dataset("isles2018")
    lesion, mirror = _contrast(root, "isles2018", "CT")
    assert -8.0 < lesion - mirror < -2.0
    lesion, mirror = _contrast(root, "isles2018", "CT_CBF")
    assert lesion / mirror < 0.32
    lesion, mirror = _contrast(root, "isles2018", "CT_Tmax")
    assert lesion > 9.5 and mirror < 3.0
    lesion, mirror = _contrast(root, "isles2018", "MR_DWI")
    assert 1.5 < lesion / mirror < 2.7
    # ISLES 2022 (label = DWI lesion): DWI bright, ADC 0.40-0.60 ×10^-3 mm²/s
    root = dataset("isles2022")
    lesion, mirror = _contrast(root, "isles2022", "dwi")
    assert 1.5 < lesion / mirror < 2.7
    lesion, mirror = _contrast(root, "isles2022", "adc")
    assert 350 < lesion < 700 and mirror > 700


def test_penumbra_label_contrasts_spes(dataset):
    # SPES label = penumbra: Tmax ≥ 6 s on average, CBF reduced, DWI only mildly changed
    root = dataset("isles2015_spes")
    lesion, mirror = _contrast(root, "isles2015_spes", "MR_Tmax")
    assert lesion > 5.5 and mirror < 3.0
    lesion, mirror = _contrast(root, "isles2015_spes", "MR_CBF")
    assert lesion / mirror < 0.7
    meta = _meta(_case_dirs(root, "isles2015_spes")["training"])
    assert all(r["channel_volumes_mm3"]["penumbra"] >= r["channel_volumes_mm3"]["core"] for r in meta["lesions"])


@pytest.mark.parametrize("layout", ("isles2017", "isles2018"))
def test_bolus_arrives_later_in_lesion(dataset, layout):
    root = dataset(layout)
    case_dir = _case_dirs(root, layout)["training"]
    files = _legacy_files(case_dir)
    token = "MR_4DPWI" if layout == "isles2017" else "CT_4DPWI"
    series, affine = _load(files[token])
    series = series.reshape(*series.shape[:3], -1).astype(np.float32)
    label, _ = _load(files["OT"])
    grid = Grid(label.shape, affine)
    meta = _meta(case_dir)
    plane = meta["midsagittal_plane"]
    voxels = np.argwhere(label)
    mirrored, inside = mirror_voxels(grid, plane["point_mm"], plane["normal"], voxels)
    lesion_curve = series[tuple(voxels[inside].T)].mean(axis=0)
    mirror_curve = series[tuple(mirrored[inside].T)].mean(axis=0)
    pick = np.argmin if layout == "isles2017" else np.argmax  # DSC signal drops, CT enhances
    assert pick(lesion_curve) > pick(mirror_curve) + 3
    # the TTP map agrees with the series' peak in normal tissue (within a few frames)
    ttp, _ = _load(files["MR_TTP" if layout == "isles2017" else "CT_Tmax"])
    if layout == "isles2017":
        dt = meta["perfusion"]["dt_s"]
        assert abs(pick(mirror_curve) * dt - np.median(ttp[tuple(mirrored[inside].T)])) < 3 * dt + 1.5
