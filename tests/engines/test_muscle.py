"""MUSCLE Net stage: small candidates, multi-scale patches, sample mining, the EDD + MUSCLE inferer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import EnsureTyped

from strokeseg.engines.muscle import balanced_sample_weights, mine_muscle_samples
from strokeseg.errors import DataError
from strokeseg.inferers.cascade import EddMuscleInferer, find_small_candidates, multiscale_candidate_patches


class ThresholdEDD(torch.nn.Module):
    """Stand-in EDD Net: (N, 1, H, W) → logits (0, 10·(x − 0.5)), i.e. lesion probability sigmoid(10·(x − 0.5))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0  # the EDD contract: H, W divisible by 4
        return torch.cat([torch.zeros_like(x), 10.0 * (x - 0.5)], dim=1)


class CentreMUSCLE(torch.nn.Module):
    """Stand-in MUSCLE Net: (N, 4, 16, 16) → logits (0, 50·(centre DWI − 0.9)): bright candidates are lesions."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)  # must be switched off by the inferer
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (4, 16, 16)
        self.seen.append(x)
        # the centroid pixel sits at index 7 (the window of the authors' utils.py)
        centre = self.dropout(x[:, 0, 6:9, 6:9]).mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(centre), 50.0 * (centre - 0.9)], dim=1)


def _probability_map() -> np.ndarray:
    prob = np.zeros((40, 300, 3), dtype=np.float32)
    prob[10:13, 20:23, 0] = 0.9  # A: 3 × 3 = 9 px, centroid (11, 21)
    prob[5, 5, 0] = prob[6, 6, 0] = 0.8  # B: diagonal pair, one component with 8-connectivity
    prob[20:28, 40:48, 0] = 0.7  # 64 px: too large
    prob[30:36, 100:110, 0] = 0.6  # exactly 60 px: too large (< 60 is the rule)
    prob[30:36, 200:210, 0] = 0.6
    prob[30, 200, 0] = 0.5  # 59 px (0.5 is not > 0.5): a candidate
    prob[10:13, 20:23, 1] = 0.9  # same place, next slice: a separate candidate
    prob[2:4, 280:284, 2] = 0.99  # far column (> 255): centroid (2.5, 281.5)
    return prob


def test_small_candidates_sizes_centroids_and_slices():
    c = find_small_candidates(_probability_map())
    assert len(c) == 5
    np.testing.assert_array_equal(c.slice_index, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(c.size, [2, 9, 59, 9, 8])
    np.testing.assert_allclose(c.centroid[:2], [(5.5, 5.5), (11.0, 21.0)])
    # 59 px: rows 30…35 × cols 200…209 without (30, 200)
    assert c.centroid[2, 0] == pytest.approx((10 * sum(range(30, 36)) - 30) / 59)
    assert c.centroid[2, 1] == pytest.approx((6 * sum(range(200, 210)) - 200) / 59)
    np.testing.assert_allclose(c.centroid[3:], [(11.0, 21.0), (2.5, 281.5)])
    # label map: background 0, candidate i has value i + 1, large components are absent
    assert c.label_map.shape == (40, 300, 3) and c.label_map.dtype == np.int32
    assert set(np.unique(c.label_map)) == {0, 1, 2, 3, 4, 5}
    assert np.all(c.label_map[10:13, 20:23, 0] == 2) and np.all(c.label_map[10:13, 20:23, 1] == 4)
    assert np.all(c.label_map[20:28, 40:48, 0] == 0) and np.all(c.label_map[30:36, 100:110, 0] == 0)
    np.testing.assert_array_equal(np.bincount(c.label_map.ravel())[1:], c.size)


def test_small_candidates_connectivity_and_torch_input():
    four = find_small_candidates(torch.as_tensor(_probability_map()), connectivity=1)
    assert len(four) == 6  # the diagonal pair splits into two single pixels
    np.testing.assert_array_equal(four.size[:2], [1, 1])
    assert len(find_small_candidates(np.zeros((4, 4, 2)))) == 0
    with pytest.raises(DataError):
        find_small_candidates(np.zeros((4, 4)))


def _reference_patch(volume: np.ndarray, centroid: tuple[float, float], side: int) -> np.ndarray:
    """Hand crop as the authors' utils.patch_extract: start int(mean - side/2 + 1), zero-pad (no shift), resize."""
    padded = np.pad(volume, 40)
    r0 = int(np.floor(centroid[0] - side / 2 + 1)) + 40
    c0 = int(np.floor(centroid[1] - side / 2 + 1)) + 40
    crop = torch.as_tensor(padded[r0 : r0 + side, c0 : c0 + side])[None, None]
    return F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_multiscale_patches_match_hand_crops_inside_and_at_border():
    rng = np.random.default_rng(0)
    image = rng.random((40, 300, 3)).astype(np.float32)
    prob = _probability_map()
    c = find_small_candidates(prob)
    patches = multiscale_candidate_patches(image, prob, c)
    assert patches.shape == (5, 4, 16, 16) and patches.dtype == torch.float32
    for i in (1, 4):  # interior candidate (11, 21) on slice 0 and border candidate (2.5, 281.5) on slice 2
        z, centroid = c.slice_index[i], tuple(c.centroid[i])
        for channel, side in enumerate((16, 24, 32)):
            expected = _reference_patch(image[..., z], centroid, side)
            np.testing.assert_allclose(patches[i, channel].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(patches[i, 3].numpy(), _reference_patch(prob[..., z], centroid, 16), atol=1e-5)
    # the 16-px patch is a plain copy; the 32-px one averages 2 × 2 blocks
    # utils.patch_extract of an integer centroid (11, 21), side 16: rows 11 - 8 + 1 = 4 … 19, cols 14 … 29
    np.testing.assert_allclose(patches[1, 0].numpy(), image[4:20, 14:30, 0], atol=1e-5)
    # 32-px patch starts at (-4, 6): output pixel (7, 7) is the mean of rows 10-11, cols 20-21
    assert patches[1, 2, 7, 7].item() == pytest.approx(image[10:12, 20:22, 0].mean(), abs=1e-5)
    # border: rows above the image are zero padding
    assert torch.all(patches[4, 2, :3] == 0)


def test_multiscale_patches_on_single_slice_and_empty():
    prob = _probability_map()[..., 0]
    c = find_small_candidates(prob[..., None])
    patches = multiscale_candidate_patches(prob, prob, c)
    assert patches.shape == (3, 4, 16, 16)
    empty = find_small_candidates(np.zeros((8, 8, 1)))
    assert multiscale_candidate_patches(np.zeros((8, 8)), np.zeros((8, 8)), empty).shape == (0, 4, 16, 16)


def _case() -> dict:
    """(1, 32, 32, 4) DWI: brain 0.2, a true small lesion (1.0), a mimic (0.8), a large lesion; slices 0, 3 empty."""
    image = np.zeros((1, 32, 32, 4), dtype=np.float32)
    image[0, 4:28, 4:28, 1:3] = 0.2
    image[0, 6:9, 6:9, 1] = 1.0  # true lesion, 9 px
    image[0, 20:23, 20:23, 1] = 0.8  # mimic, 9 px
    image[0, 10:18, 14:24, 2] = 1.0  # large lesion, 80 px
    label = np.zeros_like(image)
    label[0, 7:9, 7:8, 1] = 1  # overlaps the true lesion partially
    label[0, 10:18, 14:24, 2] = 1
    return {"image": image, "label": label, "case": "sub-01"}


def test_mining_labels_and_weights():
    samples = mine_muscle_samples(ThresholdEDD(), [_case()], EnsureTyped(keys=["image", "label"]))
    assert [s["label"] for s in samples] == [1, 0]  # slice 1: true lesion first (raster order), then mimic
    assert all(s["case"] == "sub-01" for s in samples)
    assert all(s["image"].shape == (4, 16, 16) and s["image"].dtype == np.float32 for s in samples)
    assert samples[0]["image"][0, 8, 8] == pytest.approx(1.0) and samples[1]["image"][0, 8, 8] == pytest.approx(0.8)
    assert samples[0]["image"][3, 8, 8] == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-5)  # EDD probability

    weights = balanced_sample_weights([{"label": 1}, {"label": 0}, {"label": 0}, {"label": 0}])
    assert weights == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
    assert balanced_sample_weights([]) == []


def test_mining_rejects_mismatched_case():
    case = _case()
    case["label"] = case["label"][..., :3]
    with pytest.raises(DataError, match="sub-01"):
        mine_muscle_samples(ThresholdEDD(), [case], EnsureTyped(keys=["image", "label"]))


def test_inferer_shape_skipping_and_fusion_effect():
    image = torch.as_tensor(_case()["image"])[None]  # (1, 1, 32, 32, 4)
    muscle = CentreMUSCLE()  # left in training mode on purpose
    edd_only = EddMuscleInferer(muscle_network=None)(image, ThresholdEDD())
    fused = EddMuscleInferer(muscle_network=muscle)(MetaTensor(image), ThresholdEDD())
    assert edd_only.shape == fused.shape == (1, 2, 32, 32, 4)
    assert isinstance(fused, MetaTensor)
    torch.testing.assert_close(fused.sum(dim=1), torch.ones(1, 32, 32, 4))
    # empty slices were skipped: lesion probability exactly 0
    assert torch.all(fused[0, 1, ..., 0] == 0) and torch.all(fused[0, 1, ..., 3] == 0)

    p, f = edd_only[0, 1], fused.as_tensor()[0, 1]
    assert len(muscle.seen) == 1 and muscle.seen[0].shape[0] == 2  # only the two small candidates
    p_true, p_mimic = torch.sigmoid(torch.tensor(5.0)), torch.sigmoid(torch.tensor(3.0))
    q_true, q_mimic = torch.sigmoid(torch.tensor(5.0)), torch.sigmoid(torch.tensor(-5.0))
    bayes = lambda a, b: a * b / (a * b + (1 - a) * (1 - b))  # noqa: E731
    torch.testing.assert_close(f[6:9, 6:9, 1], bayes(p_true, q_true).expand(3, 3))
    torch.testing.assert_close(f[20:23, 20:23, 1], bayes(p_mimic, q_mimic).expand(3, 3))
    assert torch.all(f[20:23, 20:23, 1] < 0.5) and torch.all(p[20:23, 20:23, 1] > 0.5)  # mimic rejected
    assert torch.all(f[6:9, 6:9, 1] > p[6:9, 6:9, 1])  # true lesion reinforced
    outside = torch.ones_like(p, dtype=torch.bool)
    outside[6:9, 6:9, 1] = outside[20:23, 20:23, 1] = False
    assert torch.equal(f[outside], p[outside])  # large lesion and every other pixel unchanged

    again = EddMuscleInferer(muscle_network=muscle)(image, ThresholdEDD())
    assert torch.equal(again, fused.as_tensor())
    assert muscle.training  # flag restored
    edd_flag = EddMuscleInferer(muscle_network=muscle, return_edd_only=True)(image, ThresholdEDD())
    assert torch.equal(edd_flag, edd_only)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inferer_on_cuda_matches_cpu():
    image = torch.as_tensor(_case()["image"])[None]
    cpu = EddMuscleInferer(muscle_network=CentreMUSCLE())(image, ThresholdEDD())
    gpu = EddMuscleInferer(muscle_network=CentreMUSCLE().cuda())(image.cuda(), ThresholdEDD())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
