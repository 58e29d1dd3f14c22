"""CT perfusion transforms: shared-mask z-score, and the MS-DCNN slice path (resize to 160 × 160, batched slice
inference, resize back) returning predictions in the original grid and affine for slabs of 1-22 slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Resized

from strokeseg.errors import DataError
from strokeseg.inferers.slices import BatchedSliceInferer
from strokeseg.transforms.ctp import (
    SLICE_SIZE,
    BrainMaskNormalizeIntensity,
    BrainMaskNormalizeIntensityd,
)


def _maps() -> np.ndarray:
    x = np.zeros((2, 4, 3), dtype=np.float32)
    x[0, :2, :2] = [[1, 2], [3, 4]]  # Tmax-like: zero in part of the brain
    x[1, :2] = [[10, 10, 10], [20, 20, 20]]  # brain = first two rows
    return x


def test_every_map_is_normalised_over_the_same_brain():
    x = _maps()
    out = BrainMaskNormalizeIntensity()(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    brain = np.zeros((4, 3), bool)
    brain[:2] = True
    for c in range(2):
        values = x[c][brain].astype(np.float64)
        expected = (values - values.mean()) / values.std()
        np.testing.assert_allclose(out[c][brain], expected, rtol=1e-6)
        assert np.all(out[c][~brain] == 0)
    # the zeros of channel 0 inside the brain are part of its statistics (6 brain voxels, mean 10/6)
    assert out[0, 0, 2] == pytest.approx((0 - 10 / 6) / np.std([1, 2, 0, 3, 4, 0]), rel=1e-6)


def test_meta_is_kept_and_a_flat_map_is_only_centred():
    x = MetaTensor(torch.from_numpy(_maps()), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    x[1, :2] = 7.0
    out = BrainMaskNormalizeIntensityd(keys="image")({"image": x})["image"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    assert torch.all(out[1] == 0)


@pytest.mark.parametrize("value, problem", [(math.nan, "1 NaN voxel"), (math.inf, "1 Inf voxel"), (0.0, "empty")])
def test_bad_maps_raise_a_data_error_naming_the_file(value, problem):
    x = np.full((4, 3, 3, 2), value, dtype=np.float32) if value == 0.0 else _maps()[..., None].repeat(2, -1)
    if value != 0.0:
        x[0, 0, 0, 0] = value
    img = MetaTensor(torch.from_numpy(x), meta={"filename_or_obj": "case_7/CT_Tmax.nii"})
    with pytest.raises(DataError, match=f"case_7/CT_Tmax.nii.*{problem}"):
        BrainMaskNormalizeIntensity()(img)


@pytest.mark.parametrize("value, problem", [(0.0, r"the image is empty .*map 2 of 4"), (math.nan, r"contains 1 NaN")])
def test_a_broken_map_is_named_by_its_own_file(value, problem):
    x = _maps()[..., None].repeat(2, -1)
    x = np.concatenate([x, x], axis=0)  # 4 maps
    if value == 0.0:
        x[2] = 0  # a CBV map of zeros: a broken export
    else:
        x[2, 0, 0, 0] = value
    files = ["c/CT_Tmax.nii", "c/CT_CBF.nii", "c/CT_CBV.nii", "c/CT_MTT.nii"]
    # LoadImage keeps only the first file name of stacked maps; the datalist copy under files_key names them all
    img = MetaTensor(torch.from_numpy(x), meta={"filename_or_obj": files[0]})
    with pytest.raises(DataError, match=r"^c/CT_CBV.nii: " + problem):
        BrainMaskNormalizeIntensityd(keys="image", files_key="map_files")({"image": img, "map_files": files})


def test_integer_dtype_is_refused():
    with pytest.raises(ValueError, match="floating"):
        BrainMaskNormalizeIntensity(dtype=torch.int16)


def _slab(depth: int, seed: int) -> tuple[MetaTensor, np.ndarray]:
    """4 maps of a 44 × 52 × depth slab with one disc per slice at a slice-dependent place (the 'lesion')."""
    rng = np.random.default_rng(seed)
    h, w = 44, 52
    yy, xx = np.mgrid[:h, :w]
    head = (yy - h / 2) ** 2 / (0.45 * h) ** 2 + (xx - w / 2) ** 2 / (0.45 * w) ** 2 < 1
    maps = np.zeros((4, h, w, depth), dtype=np.float32)
    lesion = np.zeros((h, w, depth), bool)
    for k in range(depth):
        cy, cx = 12 + (k * 5) % 20, 14 + (k * 7) % 24
        lesion[..., k] = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36) & head
        for c in range(4):
            maps[c, ..., k] = head * (rng.uniform(1.0, 2.0) + 0.05 * rng.standard_normal((h, w)))
        maps[0, ..., k][lesion[..., k]] += 6.0  # Tmax is high in the lesion
    affine = np.array([[0.0, -0.9, 0.1, 100.0], [0.85, 0.0, 0.0, -80.0], [0.0, 0.05, 5.0, 30.0], [0, 0, 0, 1]])
    meta = {"filename_or_obj": f"slab_{depth}.nii"}
    return MetaTensor(torch.from_numpy(maps), affine=torch.from_numpy(affine), meta=meta), lesion


@pytest.mark.parametrize("depth", [1, 2, 9, 22])
def test_slices_are_resized_inferred_and_stacked_back_into_the_original_grid(depth):
    image, lesion = _slab(depth, seed=depth)
    preprocessing = Compose(
        [
            BrainMaskNormalizeIntensityd(keys="image"),
            Resized(keys="image", spatial_size=(*SLICE_SIZE, -1), mode="bilinear"),
        ]
    )
    data = preprocessing({"image": image})
    assert tuple(data["image"].shape) == (4, *SLICE_SIZE, depth)

    seen: list[tuple[int, ...]] = []

    def tmax_detector(x: torch.Tensor) -> torch.Tensor:  # a "network": lesion probability from the Tmax channel
        seen.append(tuple(x.shape))
        return torch.sigmoid(4.0 * (x[:, :1] - 1.5))

    inferer = BatchedSliceInferer(slice_batch_size=4, spatial_divisor=16, empty_logits=[0.0])
    data["pred"] = inferer(data["image"][None], tmax_detector)[0]
    assert all(s[1:] == (4, *SLICE_SIZE) for s in seen) and sum(s[0] for s in seen) == depth

    out = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)(data)["pred"]
    assert tuple(out.shape) == (1, 44, 52, depth)
    np.testing.assert_allclose(out.affine.numpy(), image.affine.numpy(), atol=1e-6)
    seg = out[0].numpy() >= 0.5
    for k in range(depth):  # each slice back in its own place: a stacking or resizing error breaks the overlap
        dice = 2 * (seg[..., k] & lesion[..., k]).sum() / (seg[..., k].sum() + lesion[..., k].sum())
        assert dice > 0.85, (k, dice)


def test_slices_without_brain_get_probability_zero():
    image, _ = _slab(3, seed=0)
    image[..., 1] = 0  # a slice outside the head
    x = Resized(keys="image", spatial_size=(*SLICE_SIZE, -1))({"image": BrainMaskNormalizeIntensity()(image)})
    calls: list[int] = []

    def net(s: torch.Tensor) -> torch.Tensor:
        calls.append(s.shape[0])
        return torch.full_like(s[:, :1], 0.9)

    pred = BatchedSliceInferer(spatial_divisor=16, empty_logits=[0.0])(x["image"][None], net)[0]
    assert calls == [2]
    assert torch.all(pred[..., 1] == 0) and torch.all(pred[..., [0, 2]] == 0.9)
