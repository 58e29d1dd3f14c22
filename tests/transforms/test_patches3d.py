"""Balanced 3-D patches of Clèrigues et al. 2020: lesion offsets, brain grid, joint image/label augmentation."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.transforms.patches3d import (
    RandBalancedPatches3D,
    RandBalancedPatches3Dd,
    _augment,
    extract_patch,
    grid_centres,
)

SHAPE = (40, 44, 30)


def _case(lesion_voxels):
    brain = torch.zeros(SHAPE, dtype=torch.bool)
    brain[4:36, 4:40, 3:27] = True
    label = torch.zeros((1, *SHAPE))
    for v in lesion_voxels:
        label[(0, *v)] = 1
    # channel 0 encodes the label (3 on lesion, 1 on brain): any image/label misalignment shows
    image = torch.stack([brain.float() + 2 * label[0], 0.5 * brain.float()])
    return MetaTensor(image, meta={"filename_or_obj": "case_5.nii"}), label


# an L-shaped (chiral) lesion: no flip or rotation maps it onto itself
L_LESION = [(20, 22, 15), (21, 22, 15), (22, 22, 15), (22, 23, 15), (22, 24, 15), (20, 22, 16)]


def test_image_and_label_transformed_together():
    image, label = _case(L_LESION)
    sampler = RandBalancedPatches3D(num_samples=200)
    sampler.set_random_state(0)
    pairs = sampler(image, label)
    assert len(pairs) == 200
    assert all(p.shape == (2, 24, 24, 16) and lab.shape == (1, 24, 24, 16) for p, lab in pairs)
    for patch, patch_label in pairs:
        assert torch.equal(patch[0] == 3, patch_label[0] == 1)
    # several orientations of the L occur among the lesion patches (the augmentation really happened)
    orientations = set()
    for _, lab in pairs:
        voxels = torch.nonzero(lab[0])
        if len(voxels) == len(L_LESION):  # the whole L inside the patch
            orientations.add(tuple((voxels - voxels.min(0).values).flatten().tolist()))
    assert len(orientations) >= 4
    kinds = sampler.last_kinds
    assert 70 < kinds.count("lesion") < 130  # lesion_ratio 0.5


def test_augment_is_joint_and_exact():
    _, label = _case(L_LESION)
    patch = extract_patch(label, (21, 23, 15), (24, 24, 16), 0)
    assert torch.equal(_augment(patch, "flip"), patch.flip(1))
    assert torch.equal(_augment(patch, "rot90"), torch.rot90(patch, 1, (1, 2)))
    assert torch.equal(_augment(_augment(patch, "rot180"), "rot180"), patch)
    assert not torch.equal(_augment(patch, "flip"), patch) and not torch.equal(_augment(patch, "rot90"), patch)


def test_offset_moves_the_lesion_inside_the_patch():
    image, label = _case([(20, 22, 15)])
    with_offset = RandBalancedPatches3D(num_samples=100, lesion_ratio=1.0, augment=False)
    with_offset.set_random_state(1)
    positions = {tuple(torch.nonzero(lab[0])[0].tolist()) for _, lab in with_offset(image, label)}
    assert len(positions) > 50  # the single lesion voxel lands at many places, always inside the patch
    baseline = RandBalancedPatches3D(num_samples=20, lesion_ratio=1.0, offset=False, augment=False)
    baseline.set_random_state(1)
    positions = {tuple(torch.nonzero(lab[0])[0].tolist()) for _, lab in baseline(image, label)}
    assert positions == {(12, 12, 8)}  # DeepMedic-style: the voxel is the centre


def test_brain_patches_on_a_regular_grid():
    image, label = _case(L_LESION)
    sampler = RandBalancedPatches3D(num_samples=60, lesion_ratio=0.0)
    sampler.set_random_state(2)
    sampler(image, label)
    grid = {tuple(c) for c in grid_centres(torch.ones(SHAPE, dtype=torch.bool), (12, 12, 8)).tolist()}
    assert all(tuple(c) in grid for c in sampler.last_centres)
    for c in sampler.last_centres:
        assert 4 <= c[0] < 36 and 4 <= c[1] < 40 and 3 <= c[2] < 27
        assert label[(0, *c)] == 0  # healthy tissue
    # without a lesion every patch is a brain patch
    image, label = _case([])
    sampler = RandBalancedPatches3D(num_samples=10)
    sampler(image, label)
    assert sampler.last_kinds == ["brain"] * 10


def test_padding_uses_background_and_dictionary_version_is_reproducible():
    image, label = _case(L_LESION)
    patch = extract_patch(image, (0, 0, 0), (24, 24, 16), image.reshape(2, -1).amin(1))
    assert patch.shape == (2, 24, 24, 16) and float(patch[0, 0, 0, 0]) == 0.0
    data = {"image": image, "label": label, "case": "case_5"}
    a = RandBalancedPatches3Dd(keys=("image", "label"), num_samples=8).set_random_state(3)(data)
    b = RandBalancedPatches3Dd(keys=("image", "label"), num_samples=8).set_random_state(3)(data)
    assert len(a) == 8 and all(d["case"] == "case_5" for d in a)
    assert all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b, strict=True)
    )


def test_patches_inside_and_at_the_border_collate_into_one_batch():
    from monai.data import list_data_collate

    image, label = _case([(1, 22, 15), (20, 22, 15)])  # one lesion voxel at the border: its patches are padded
    data = {"image": image, "label": label, "case": "case_5"}
    patches = RandBalancedPatches3Dd(keys=("image", "label"), num_samples=16).set_random_state(0)(data)
    assert all(type(d["image"]) is torch.Tensor and type(d["label"]) is torch.Tensor for d in patches)
    assert list_data_collate(patches)["image"].shape == (16, 2, 24, 24, 16)


def test_bad_input_names_the_file():
    image, label = _case(L_LESION)
    with pytest.raises(DataError, match="case_5.nii"):
        RandBalancedPatches3D()(image, label[:, :-1])
    with pytest.raises(DataError, match="case_5.nii.*no healthy brain"):
        RandBalancedPatches3D()(MetaTensor(torch.zeros(2, *SHAPE), meta={"filename_or_obj": "case_5.nii"}), label)
