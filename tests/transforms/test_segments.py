"""DeepMedic data transforms: TTP mask, masked z-score, segment + context sampling, Eq. 1 augmentation, clones, E2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.networks.deepmedic import DeepMedic
from strokeseg.transforms.deepmedic_cases import (
    LesionIntensityCloned,
    PerfusionBrainMaskd,
    SquaredErrorMapd,
    ZScoreInMaskd,
    with_lesion_clones,
)
from strokeseg.transforms.segments import (
    RandDeepMedicSegments,
    RandDeepMedicSegmentsd,
    RandShiftScaleIntensity,
    RandShiftScaleIntensityd,
)


def _coordinates(shape=(40, 36, 30)) -> torch.Tensor:
    """Three channels holding each voxel's x, y and z index."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    return torch.stack(grids)


def test_ttp_mask_is_thresholded_dilated_and_the_ttp_channel_dropped():
    image = torch.zeros(2, 7, 7, 7)
    image[0] = 5.0  # another channel
    image[1, 3, 3, 3] = 12.0  # TTP: one brain voxel
    out = PerfusionBrainMaskd("image", dilation=1)({"image": image})
    assert out["image"].shape == (1, 7, 7, 7) and torch.all(out["image"] == 5.0)
    brain = out["brain"][0]
    assert brain.sum() == 7  # the voxel and its 6 face neighbours (3-D cross)
    assert brain[3, 3, 3] == 1 and brain[2, 3, 3] == 1 and brain[2, 2, 3] == 0
    empty = MetaTensor(torch.zeros(2, 4, 4, 4), meta={"filename_or_obj": "case_7/MR_TTP.nii"})
    with pytest.raises(DataError, match="case_7/MR_TTP.nii"):
        PerfusionBrainMaskd("image")({"image": empty})


def test_zscore_uses_only_the_mask_and_zeroes_the_rest():
    image = torch.rand(2, 6, 6, 6) * 10 + 3
    brain = torch.zeros(1, 6, 6, 6)
    brain[:, 1:5, 1:5, 1:5] = 1
    image[0, 2, 2, 2] = 0.0  # a zero inside the brain still counts
    out = ZScoreInMaskd("image")({"image": image, "brain": brain})["image"]
    inside = brain[0] > 0
    for c in range(2):
        values = out[c][inside]
        assert abs(float(values.mean())) < 1e-5 and abs(float(values.std(unbiased=False)) - 1) < 1e-4
        assert torch.all(out[c][~inside] == 0)
    expected = (0.0 - image[0][inside].mean()) / image[0][inside].std(unbiased=False)
    assert float(out[0, 2, 2, 2]) == pytest.approx(float(expected), rel=1e-4)


def test_segment_context_and_label_are_cut_around_the_same_centre():
    image = _coordinates()
    label = torch.zeros(1, 40, 36, 30)
    label[0, 20, 18, 15] = 1
    sampler = RandDeepMedicSegments(num_samples=3, pos=1.0, neg=0.0)  # lesion centres only: one voxel
    for segment, context, cut_label in sampler(image, label):
        assert segment.shape == (3, 25, 25, 25) and context.shape == (3, 19, 19, 19)
        assert cut_label.shape == (1, 9, 9, 9) and cut_label[0, 4, 4, 4] == 1 and cut_label.sum() == 1
        centre = torch.tensor([20.0, 18.0, 15.0])
        assert torch.equal(segment[:, 12, 12, 12], centre)
        assert torch.equal(context[:, 9, 9, 9], centre)  # co-centred
        # every third voxel, 27 voxels either side (inside the volume: no padding on x between 0 and 39)
        assert torch.equal(context[0, :, 9, 9][3:16], torch.arange(-18.0, 21.0, 3.0) + 20)
        assert torch.equal(segment[0, :, 12, 12], torch.arange(8.0, 33.0))


def test_segments_reaching_out_of_the_volume_are_reflected_not_moved():
    image = _coordinates((30, 30, 30))
    label = torch.zeros(1, 30, 30, 30)
    label[0, 1, 15, 15] = 1
    (segment, context, _), *_ = RandDeepMedicSegments(pos=1, neg=0)(image, label)
    assert torch.equal(segment[:, 12, 12, 12], torch.tensor([1.0, 15.0, 15.0]))
    assert torch.equal(segment[0, :4, 12, 12], torch.tensor([11.0, 10.0, 9.0, 8.0]))  # numpy 'reflect'
    assert context.shape == (3, 19, 19, 19)
    (zero_padded, _, _), *_ = RandDeepMedicSegments(pos=1, neg=0, padding_mode="constant")(image, label)
    assert torch.all(zero_padded[:, :11] == 0) and torch.equal(zero_padded[0, 11:14, 12, 12], torch.tensor([0.0, 1, 2]))


def test_half_the_centres_are_lesion_and_background_stays_in_the_brain():
    label = torch.zeros(1, 30, 30, 30)
    label[0, 10:14, 10:14, 10:14] = 1
    brain = torch.zeros(1, 30, 30, 30)
    brain[0, 5:25, 5:25, 5:25] = 1
    sampler = RandDeepMedicSegments(segment_size=17, num_samples=400)
    sampler.set_random_state(3)
    sampler.randomize(label, brain)
    centres = np.array(sampler._centres)
    lesion = label[0][tuple(centres.T)].numpy() > 0
    assert 0.43 < lesion.mean() < 0.57
    assert np.all(brain[0][tuple(centres[~lesion].T)].numpy() > 0)
    again = RandDeepMedicSegments(segment_size=17, num_samples=400)
    again.set_random_state(3)
    again.randomize(label, brain)
    assert again._centres == sampler._centres  # reproducible from the seed
    with pytest.raises(DataError, match="no lesion and no brain"):
        sampler.randomize(torch.zeros(1, 5, 5, 5), torch.zeros(1, 5, 5, 5))


def test_weight_map_decides_the_centres_and_dict_version_keeps_other_keys():
    image = _coordinates((30, 30, 30))
    weight = torch.zeros(1, 30, 30, 30)
    weight[0, 7, 8, 9] = 5.0
    data = {"image": image, "label": torch.zeros(1, 30, 30, 30), "weight": weight, "brain": torch.ones(1, 30, 30, 30)}
    data["case"] = "training_1"
    samples = RandDeepMedicSegmentsd("image", weight_key="weight", num_samples=4)(data)
    assert len(samples) == 4
    for sample in samples:
        assert set(sample) == {"image", "context", "label", "case"}
        assert torch.equal(sample["image"][:, 12, 12, 12], torch.tensor([7.0, 8.0, 9.0]))
        assert torch.equal(sample["context"][:, 9, 9, 9], torch.tensor([7.0, 8.0, 9.0]))


def test_sampled_context_feeds_the_network_as_the_tile_mode_does():
    """A dict sample through DeepMedic(segment, context) equals the region mode on the same voxels."""
    net = DeepMedic(features=(4, 4, 4), residual_layers=(), fc_features=(6,), fc_dropout=(0.0, 0.0)).eval()
    volume = torch.rand(3, 60, 60, 60)
    label = torch.zeros(1, 60, 60, 60)
    label[0, 30, 30, 30] = 1
    sample = RandDeepMedicSegmentsd("image", segment_size=15, pathway_shrink=6, num_samples=1, pos=1, neg=0)(
        {"image": volume, "label": label, "brain": torch.ones(1, 60, 60, 60)}
    )[0]
    with torch.no_grad():
        segment_out = net(sample["image"][None], sample["context"][None])  # outputs 26..34, triples at 27, 30, 33
        r0 = 27 - net.margin
        region_out = net(
            volume[None, :, r0 : r0 + 2 * net.margin + 9][..., r0 : r0 + 2 * net.margin + 9, :][
                ..., r0 : r0 + 2 * net.margin + 9
            ]
        )
    torch.testing.assert_close(segment_out[..., 1:8, 1:8, 1:8], region_out[..., 0:7, 0:7, 0:7], rtol=1e-5, atol=1e-5)


def test_eq1_shift_and_scale_are_gaussian_per_channel_and_shared_by_segment_and_context():
    image = torch.rand(3, 4, 4, 4)
    augment = RandShiftScaleIntensity()
    augment.set_random_state(11)
    out = augment(image)
    rng = np.random.RandomState(11)
    rng.rand()
    shift, scale = rng.normal(0, 0.05, 3), rng.normal(1, 0.01, 3)
    expected = (image + torch.tensor(shift, dtype=torch.float32).view(3, 1, 1, 1)) * torch.tensor(
        scale, dtype=torch.float32
    ).view(3, 1, 1, 1)
    torch.testing.assert_close(out, expected)
    d = RandShiftScaleIntensityd(["image", "context"], shift_std=0.5, scale_std=0.2)
    d.set_random_state(0)
    ctx = image[:, :2, :2, :2].clone()
    res = d({"image": image, "context": ctx})
    torch.testing.assert_close(res["image"][:, :2, :2, :2], res["context"])
    assert not torch.allclose(res["image"], image)


def test_lesion_clone_redraws_only_lesion_voxels_with_their_statistics():
    torch.manual_seed(0)
    image = torch.randn(2, 20, 20, 20) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    label = torch.zeros(1, 20, 20, 20)
    label[0, 5:15, 5:15, 5:15] = 1
    image[:, 5:15, 5:15, 5:15] += torch.tensor([4.0, -2.0]).view(2, 1, 1, 1)
    cases = with_lesion_clones([{"image": image, "label": label, "case": "training_1"}], clones=1, seed=0)
    assert len(cases) == 2 and cases[1]["case"] == "training_1_clone1" and "clone_seed" not in cases[0]
    cloner = LesionIntensityCloned("image")
    original, clone = cloner(cases[0]), cloner(cases[1])
    assert original["image"] is image
    lesion = label[0] > 0
    assert torch.equal(clone["image"][:, ~lesion], image[:, ~lesion])
    assert not torch.allclose(clone["image"][:, lesion], image[:, lesion])
    for c in range(2):
        roi = image[c][lesion]
        new = clone["image"][c][lesion]
        assert float(new.mean()) == pytest.approx(float(roi.mean()), abs=0.1 * float(roi.std()))
        assert float(new.std()) == pytest.approx(float(roi.std()), rel=0.1)
    torch.testing.assert_close(cloner(cases[1])["image"], clone["image"])  # the same clone every epoch
    assert set(original) == set(clone) == {"image", "label", "case"}  # the seed is consumed
    from monai.data import list_data_collate

    batch = list_data_collate([original, clone])  # an original and a clone in one batch (E1 training)
    assert batch["image"].shape[0] == 2


def test_error_map_is_the_zscored_squared_error_of_the_prediction():
    class Constant(torch.nn.Module):
        def forward(self, x):  # lesion probability sigmoid(1) everywhere
            return torch.cat([torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])], dim=1)

    label = torch.zeros(1, 4, 4, 4)
    label[0, :2] = 1
    out = SquaredErrorMapd("image", Constant(), lambda x, net: net(x))(
        {"image": torch.rand(1, 4, 4, 4), "label": label}
    )
    p = float(torch.sigmoid(torch.tensor(1.0)))
    error = torch.where(label > 0, torch.tensor((1 - p) ** 2), torch.tensor(p**2))
    torch.testing.assert_close(out["weight"], (error - error.mean()) / (error.std(unbiased=False) + 1e-6))
