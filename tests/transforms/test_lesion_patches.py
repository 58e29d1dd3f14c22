"""Lesion-centred 2-D patches with a random offset: geometry, statistics, determinism, MONAI composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, RandFlipd, RandRotated

from strokeseg.errors import DataError
from strokeseg.transforms.sampling import (
    RandLesionPatch2D,
    RandLesionPatch2Dd,
    lesion_area_sampler,
    lesion_areas,
    patch_affine,
)

H, W, D = 40, 48, 6


def _case(lesion: bool = True) -> dict:
    """Image = a coordinate code (row·1000 + col·10 + slice + 1) inside a brain box, 0 outside; one-voxel lesion."""
    rows, cols, slices = np.meshgrid(np.arange(H), np.arange(W), np.arange(D), indexing="ij")
    image = (rows * 1000 + cols * 10 + slices + 1).astype(np.float32)
    brain = np.zeros((H, W, D), dtype=bool)
    brain[8:32, 10:40, 1:5] = True
    image[~brain] = 0.0
    label = np.zeros((1, H, W, D), dtype=np.float32)
    if lesion:
        label[0, 20, 30, 3] = 1.0
    affine = torch.diag(torch.tensor([1.6, 1.6, 5.0, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-30.0, 12.0, 4.0], dtype=torch.float64)
    return {
        "image": MetaTensor(torch.as_tensor(image[None]), affine=affine, meta={"filename_or_obj": "c1.nii.gz"}),
        "label": MetaTensor(torch.as_tensor(label), affine=affine.clone()),
        "case": "c1",
    }


def test_lesion_patches_shape_position_and_coverage():
    t = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(16, 16), num_samples=400, background_ratio=0.0)
    t.set_random_state(1)
    out = t(_case())
    assert len(out) == 400
    positions = []
    for sample in out:
        assert sample["image"].shape == (1, 16, 16) and sample["label"].shape == (1, 16, 16)
        where = torch.nonzero(sample["label"][0])
        assert where.shape[0] == 1  # the only lesion voxel is in every lesion patch
        u, v = where[0].tolist()
        positions.append((u, v))
        # The image pixel there is the lesion voxel's own (row 20, col 30, slice 3).
        assert sample["image"][0, u, v].item() == 20 * 1000 + 30 * 10 + 3 + 1
        assert sample["case"] == "c1"
    positions = np.array(positions)
    # Uniform offsets: rows and columns each take (nearly) every value 0…15 and average ~7.5.
    assert len(np.unique(positions[:, 0])) >= 15 and len(np.unique(positions[:, 1])) >= 15
    assert abs(positions.mean() - 7.5) < 0.8


def test_patch_pixels_and_padding_match_the_volume():
    case = _case()
    t = RandLesionPatch2D(patch_size=(16, 16), num_samples=50, background_ratio=0.0, image_pad_value=-1.0)
    t.set_random_state(3)
    patches = t(case["image"], label=case["label"])
    volume = case["image"][0].numpy()
    padded = np.pad(volume, ((16, 16), (16, 16), (0, 0)), constant_values=-1.0)
    for patch, (row0, col0, z) in zip(patches, t.origins, strict=True):
        expected = padded[row0 + 16 : row0 + 32, col0 + 16 : col0 + 32, z]
        np.testing.assert_array_equal(patch[0].numpy(), expected)


def test_patch_affine_maps_patch_pixels_to_volume_world():
    case = _case()
    t = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(16, 16), num_samples=3, background_ratio=0.0)
    t.set_random_state(0)
    for sample in t(case):
        origin = sample["image"].meta["patch_origin"]
        voxel = torch.tensor([origin[0] + 5, origin[1] + 7, origin[2], 1.0], dtype=torch.float64)
        world_volume = case["image"].affine @ voxel
        world_patch = sample["image"].affine @ torch.tensor([5.0, 7.0, 0.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(world_patch, world_volume)
    torch.testing.assert_close(patch_affine(torch.eye(4), (2, 3, 4))[:3, 3], torch.tensor([2.0, 3.0, 4.0]).double())


def test_background_share_and_brain():
    t = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(8, 8), num_samples=2000, background_ratio=0.25)
    t.set_random_state(5)
    out = t(_case())
    with_lesion = np.array([s["label"].sum().item() > 0 for s in out])
    share = 1.0 - t.sampler.is_lesion.mean()
    assert 0.22 < share < 0.28  # binomial sd ~0.01
    assert with_lesion[t.sampler.is_lesion].all()  # lesion patches hold the lesion …
    assert with_lesion.mean() < 0.9  # … brain patches mostly do not (they may by chance, near the lesion)
    # Every patch touches the brain (background patches are centred on brain voxels).
    assert all((s["image"] != 0).any() for s in out)


def test_empty_label_gives_brain_patches_only():
    t = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(8, 8), num_samples=100, background_ratio=0.1)
    t.set_random_state(0)
    out = t(_case(lesion=False))
    assert len(out) == 100 and not t.sampler.is_lesion.any()
    assert all((s["image"] != 0).any() and s["label"].sum() == 0 for s in out)
    origins = t.sampler.origins
    assert set(origins[:, 2].tolist()) <= {1, 2, 3, 4}  # brain slices only


def test_pad_with_volume_minimum_and_label_zero():
    case = _case()
    case["image"] = case["image"] - 5.0  # minimum -5 outside the brain
    t = RandLesionPatch2D(patch_size=(64, 64), num_samples=2, background_ratio=0.0, image_pad_value=None)
    t.set_random_state(0)
    patch = t(case["image"], label=case["label"])[0]
    assert patch.shape == (1, 64, 64)
    assert (patch == -5.0).sum() > 64 * 64 - H * W  # the part outside the 40 × 48 slice is padded with the minimum


def test_determinism_with_set_random_state():
    t1 = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(16, 16), num_samples=6)
    t2 = RandLesionPatch2Dd(["image", "label"], "label", patch_size=(16, 16), num_samples=6)
    a = t1.set_random_state(11)(_case())
    b = t2.set_random_state(11)(_case())
    c = t2(_case())
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))


def test_composes_with_monai_2d_transforms_and_dataloader():
    pipeline = Compose(
        [
            RandLesionPatch2Dd(["image", "label"], "label", patch_size=(16, 16), num_samples=3, background_ratio=0.0),
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=0),
            RandRotated(["image", "label"], range_x=0.3, prob=1.0, mode=("bilinear", "nearest")),
        ]
    )
    pipeline.set_random_state(0)
    loader = DataLoader(Dataset([_case(), _case()], pipeline), batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (6, 1, 16, 16) and batch["label"].shape == (6, 1, 16, 16)
    assert batch["case"] == ["c1"] * 6
    assert batch["label"].sum() >= 1  # the lesion pixel survives flip + small rotation in most patches


def test_mismatched_shapes_raise():
    case = _case()
    case["label"] = torch.zeros(1, H, W, D + 1)
    with pytest.raises(DataError, match="c1.nii.gz"):
        RandLesionPatch2Dd(["image", "label"], "label")(case)


def _linear_case(height: int = 80, width: int = 90) -> dict:
    """A slice stack whose image is linear in (row, col) everywhere, so bilinear sampling reproduces it exactly."""
    rows, cols, slices = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    image = (rows * 1000.0 + cols * 10.0 + slices + 1).astype(np.float64)
    label = np.zeros((1, height, width, 3), dtype=np.float32)
    label[0, min(40, height - 1), min(45, width - 1), 1] = 1.0
    affine = torch.diag(torch.tensor([1.6, 1.2, 5.0, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-30.0, 12.0, 4.0], dtype=torch.float64)
    return {
        "image": MetaTensor(torch.as_tensor(image[None]), affine=affine),
        "label": MetaTensor(torch.as_tensor(label), affine=affine.clone()),
    }


def test_rotated_patches_are_rotated_windows_of_the_slice_about_the_lesion_pixel():
    case = _linear_case()
    t = RandLesionPatch2Dd(
        ["image", "label"],
        "label",
        patch_size=(16, 16),
        num_samples=40,
        background_ratio=0.0,
        rotation_range=np.pi,
        rotation_prob=1.0,
    )
    t.set_random_state(2)
    out = t(case)
    angles = t.sampler.angles
    assert (angles != 0).all() and np.abs(angles).max() <= np.pi and angles.min() < -1 and angles.max() > 1
    a, b = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    for sample, angle, (u, v) in zip(out, angles, t.sampler.offsets, strict=True):
        # the drawn lesion pixel stays where the offset put it, and it is the only lesion pixel (nearest labels)
        assert torch.nonzero(sample["label"][0]).tolist() == [[u, v]]
        rows = 40 + np.cos(angle) * (a - u) - np.sin(angle) * (b - v)
        cols = 45 + np.sin(angle) * (a - u) + np.cos(angle) * (b - v)
        np.testing.assert_allclose(sample["image"][0].numpy(), rows * 1000 + cols * 10 + 2, rtol=0, atol=0.05)
        # the patch affine places pixel (a, b) at the world position of the voxel it was sampled from
        world = sample["image"].affine @ torch.tensor([3.0, 11.0, 0.0, 1.0], dtype=torch.float64)
        r, c = rows[3, 11], cols[3, 11]
        expected = case["image"].affine @ torch.tensor([r, c, 1.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(world, expected)
        assert sample["image"].meta["patch_angle"] == pytest.approx(angle)


def test_rotation_leaves_no_constant_corners_and_respects_the_pad_value():
    case = _linear_case()
    case["image"] = MetaTensor(torch.full_like(case["image"].as_tensor(), 7.0), affine=case["image"].affine)
    t = RandLesionPatch2Dd(
        ["image", "label"],
        "label",
        patch_size=(16, 16),
        num_samples=20,
        background_ratio=0.0,
        rotation_range=np.pi,
        rotation_prob=1.0,
        image_pad_value=-3.0,
    )
    t.set_random_state(0)
    # a 16-px window turned about a pixel of the 80 x 90 slice centre stays inside: slice content only
    assert all(torch.allclose(s["image"], torch.full_like(s["image"], 7.0), atol=1e-5) for s in t(case))
    # MONAI's RandRotated on a patch cut first fills the corners with a constant (the artefact this avoids)
    rotated = RandRotated(["image"], range_x=np.pi / 4, prob=1.0, padding_mode="zeros")
    rotated.set_random_state(0)
    corner_case = {"image": torch.full((1, 16, 16), 7.0)}
    assert (rotated(corner_case)["image"] == 0).any()
    # near the slice edge, the part of the window outside the slice gets the pad value
    edge = _linear_case(20, 20)
    edge["image"] = MetaTensor(torch.full_like(edge["image"].as_tensor(), 7.0), affine=edge["image"].affine)
    edge["label"] = torch.zeros_like(edge["label"])
    edge["label"][0, 0, 0, 1] = 1
    t_edge = RandLesionPatch2D(
        patch_size=(16, 16),
        num_samples=5,
        background_ratio=0.0,
        image_pad_value=-3.0,
        rotation_range=np.pi,
        rotation_prob=1.0,
    )
    t_edge.set_random_state(1)
    for patch in t_edge(edge["image"], label=edge["label"]):
        values = set(np.round(patch[0].numpy().ravel(), 4).tolist())
        assert -3.0 in values and 7.0 in values


def test_no_rotation_keeps_the_unrotated_random_stream():
    plain = RandLesionPatch2D(patch_size=(16, 16), num_samples=10).set_random_state(4)
    zero_prob = RandLesionPatch2D(patch_size=(16, 16), num_samples=10, rotation_range=1.0).set_random_state(4)
    case = _case()
    for x, y in zip(
        plain(case["image"], label=case["label"]), zero_prob(case["image"], label=case["label"]), strict=True
    ):
        assert torch.equal(x, y)
    assert not zero_prob.angles.any()


def _write_label(path, voxels: int, zooms) -> str:
    import nibabel as nib

    data = np.zeros((10, 10, 4), dtype=np.uint8)
    data.reshape(-1)[:voxels] = 1
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), str(path))
    return str(path)


def test_lesion_area_sampler_draws_cases_in_proportion_to_lesion_area(tmp_path):
    data = [
        {"case": "none", "label": _write_label(tmp_path / "a.nii.gz", 0, (1.0, 1.0, 1.0))},
        {"case": "small", "label": _write_label(tmp_path / "b.nii.gz", 10, (1.0, 1.0, 5.0))},
        # 10 voxels of 2 x 2 mm: the same 40 mm² as 40 voxels of 1 x 1 mm
        {"case": "large", "label": _write_label(tmp_path / "c.nii.gz", 10, (2.0, 2.0, 1.0))},
    ]
    np.testing.assert_allclose(lesion_areas(data), [0.0, 10.0, 40.0])
    assert lesion_area_sampler(data, "case") is None
    sampler = lesion_area_sampler(data, "lesion_area")
    assert len(sampler) == 3 and sampler.replacement
    torch.manual_seed(0)
    draws = np.bincount(np.concatenate([list(sampler) for _ in range(2000)]), minlength=3)
    assert draws[0] == 0  # no lesion pixel, no patch (Chen et al. 2017, §4.2)
    assert 3.4 < draws[2] / draws[1] < 4.6  # 40 : 10 mm²
    # no lesion anywhere: every case equally often instead of a sampler with zero total weight
    flat = lesion_area_sampler(data[:1] * 2, "lesion_area")
    assert list(flat.weights.tolist()) == [1.0, 1.0]
    with pytest.raises(ValueError, match="patch_weighting"):
        lesion_area_sampler(data, "pixels")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="bad.nii.gz"):
        lesion_areas([{"label": str(tmp_path / "bad.nii.gz")}])
