"""Synthetic phantoms: determinism, refusal to overwrite, argument validation, case planning (ISLES 2018
slabs), small lesions, difficulty, preview and the benchmark entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from strokeseg.data.phantoms import (
    plan_cases,
    synthesize_case,
    synthesize_dataset,
    write_preview,
)
from strokeseg.errors import DataError
from strokeseg.tools.bench.phantoms import benchmark_synth


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = _tree_bytes(synthesize_dataset("isles2015_spes", tmp_path / "a", cases=1, seed=11))
    second = _tree_bytes(synthesize_dataset("isles2015_spes", tmp_path / "b", cases=1, seed=11))
    other = _tree_bytes(synthesize_dataset("isles2015_spes", tmp_path / "c", cases=1, seed=12))
    assert first == second
    assert set(first) == set(other)
    volumes = [name for name in first if name.endswith(".nii")]
    assert len(volumes) == 8
    assert all(first[name] != other[name] for name in volumes)
    assert not [name for name in first if ".partial-" in name]  # temporary files were moved into place


def test_gzip_output_is_deterministic(tmp_path):
    from strokeseg.data.phantoms import write_nifti
    from strokeseg.data.phantoms.case import Volume
    from strokeseg.data.phantoms.grids import Grid

    volume = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), Grid((2, 3, 4), np.eye(4)))
    a = write_nifti(volume, tmp_path / "a.nii.gz").read_bytes()
    b = write_nifti(volume, tmp_path / "b.nii.gz").read_bytes()
    assert a == b and a[4:8] == b"\x00\x00\x00\x00"  # gzip mtime field is zero


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match=str(tmp_path)):
        synthesize_dataset("isles2015_spes", tmp_path, cases=1)
    out = synthesize_dataset("isles2015_spes", tmp_path, cases=1, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"
    assert (out / "1" / "phantom.json").is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layout": "isles2019"}, "unknown layout"),
        ({"difficulty": "extreme"}, "unknown difficulty"),
        ({"cases": 0, "test_cases": 0}, "at least one case"),
    ],
)
def test_invalid_arguments_raise_data_error(tmp_path, kwargs, message):
    args = {"layout": "isles2015_spes", "out": tmp_path / "x", "cases": 1} | kwargs
    with pytest.raises(DataError, match=message):
        synthesize_dataset(**args)
    assert not (tmp_path / "x").exists()  # validated before touching the disk


def test_case_plan_numbering_and_isles2018_patients():
    plans = plan_cases("isles2017", cases=3, test_cases=2)
    assert [p.name for p in plans] == ["training_1", "training_2", "training_3", "test_4", "test_5"]
    assert [p.split for p in plans] == ["training"] * 3 + ["testing"] * 2
    plans = plan_cases("isles2018", cases=12, test_cases=4, seed=0)
    assert [p.number for p in plans] == list(range(1, 17))
    patients: dict[str, list] = {}
    for plan in plans:
        patients.setdefault(plan.patient, []).append(plan)
    assert any(len(group) == 2 for group in patients.values())  # some patients have two slabs
    for group in patients.values():
        assert [p.slab_index for p in group] == list(range(len(group)))
        assert len({p.split for p in group}) == 1
        assert [p.number for p in group] == list(range(group[0].number, group[0].number + len(group)))


def test_two_slabs_of_one_patient_share_in_plane_geometry():
    plans = plan_cases("isles2018", cases=12, seed=0)
    pair = next((a, b) for a, b in zip(plans, plans[1:], strict=False) if a.patient == b.patient and a.slab_count == 2)
    a, b = (synthesize_case("isles2018", plan=p, series=False) for p in pair)
    assert a.meta["patient"] == b.meta["patient"]
    affine_a, affine_b = a.label.affine, b.label.affine
    assert np.allclose(affine_a[:3, :3], affine_b[:3, :3])
    assert np.allclose(affine_a[:2, 3], affine_b[:2, 3])
    z_a = affine_a[2, 3] + affine_a[2, 2] * np.array([0, a.label.data.shape[2] - 1])
    z_b = affine_b[2, 3] + affine_b[2, 2] * np.array([0, b.label.data.shape[2] - 1])
    assert not np.allclose(z_a, z_b)
    assert a.meta["hemisphere"] == b.meta["hemisphere"] and a.meta["contrasts"] == b.meta["contrasts"]


def test_small_lesions_occur():
    sizes = []
    for seed in range(3):
        case = synthesize_case("isles2015_spes", number=1, seed=seed)
        label = case.label.data
        for k in range(label.shape[2]):
            components, count = ndimage.label(label[:, :, k])
            sizes.extend(np.bincount(components.ravel())[1:].tolist())
        assert case.meta["lesions"], "every case has a visible lesion"
    sizes = np.array(sizes)
    assert np.sum((sizes >= 5) & (sizes <= 60)) >= 3  # Chen et al. 2017, §5.4: small objects are ≤ 60 pixels
    assert sizes.max() > 60


def test_difficulty_scales_contrast_and_confounders():
    easy = synthesize_case("isles2015_spes", seed=5, difficulty="easy").meta
    hard = synthesize_case("isles2015_spes", seed=5, difficulty="hard").meta
    assert easy["contrasts"]["dwi.core_ratio"] > hard["contrasts"]["dwi.core_ratio"]
    assert len(easy["confounders"]) <= 1 <= 3 <= len(hard["confounders"])
    assert easy["acquisition"]["noise_sigma"]["dwi"] < hard["acquisition"]["noise_sigma"]["dwi"]


def test_core_inside_penumbra_on_grid():
    case = synthesize_case("isles2017", seed=2, series=False)
    maps = case.lesion_maps
    core, final, penumbra = maps.mask("core"), maps.mask("final"), maps.mask("penumbra")
    assert core.any() and np.all(penumbra[core]) and np.all(final[core]) and np.all(penumbra[final])
    assert np.array_equal(case.label.data.astype(bool), final)  # ISLES 2017 label = final infarct


def test_preview_png(tmp_path):
    case = synthesize_case("isles2018", seed=1)
    path = write_preview(case, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(str(path)).shape[0] > 300


def test_benchmark_reports_seconds(tmp_path):
    report = benchmark_synth("isles2015_spes", cases=1)
    assert report["layout"] == "isles2015_spes" and report["threads"] == 1
    assert report["seconds_per_case_without_series"] > 0
    assert report["seconds_per_case_with_series"] is None  # SPES has no 4-D series
    json.dumps(report)


def test_head_box_crop_matches_full_grid_sampling():
    from strokeseg.data.phantoms.anatomy import random_deformation, sample_tissue, tissue_box
    from strokeseg.data.phantoms.grids import draw_image_grid, paste
    from strokeseg.data.phantoms.template import load_template

    template = load_template()
    rng = np.random.default_rng(3)
    deformation = random_deformation(rng, template.brain_centre_mm)
    grid = draw_image_grid("isles2015_spes", rng, deformation.to_world(template.brain_centre_mm))
    box = tissue_box(template, deformation, grid)
    assert box is not None and np.prod([b.stop - b.start for b in box]) < np.prod(grid.shape)
    work = grid.crop(box)
    corner = np.array([b.start for b in box])
    assert np.allclose(work.world(np.zeros(3)), grid.world(corner))  # same world positions
    full, crop = sample_tissue(template, deformation, grid), sample_tissue(template, deformation, work)
    for name in ("gm", "wm", "csf"):
        whole = getattr(full, name)
        pasted = paste(getattr(crop, name), box, grid.shape)
        assert pasted.flags.f_contiguous and pasted.shape == whole.shape
        assert whole.sum() > 1000 and np.abs(pasted - whole).max() < 1e-4  # nothing outside the box
