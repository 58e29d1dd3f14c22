"""Lesion-centred 2-D patches with a random offset: geometry, statistics, determinism, MONAI composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, RandFlipd, RandRotated

from strokeseg.errors import DataError
from strokeseg.transforms.sampling import RandLesionPatch2D, RandLesionPatch2Dd, patch_affine

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
