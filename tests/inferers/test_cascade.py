"""EDD + MUSCLE candidate cascade: fusion rules and MUSCLE weights loaded by the inferer itself (deployment)."""

from __future__ import annotations

import pytest
import torch

from strokeseg.errors import BundleError
from strokeseg.inferers.cascade import EddMuscleInferer
from strokeseg.networks.musclenet import MuscleNet


class ThresholdEDD(torch.nn.Module):
    """Stand-in EDD Net: lesion probability sigmoid(10·(x − 0.5))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 10.0 * (x - 0.5)], dim=1)


class CentreMUSCLE(torch.nn.Module):
    """Stand-in MUSCLE Net: bright candidate centres (> 0.9) are lesions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, 0, 6:9, 6:9].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(centre), 50.0 * (centre - 0.9)], dim=1)


def _image() -> torch.Tensor:
    """(1, 1, 32, 32, 4): a true small lesion (1.0), a mimic (0.8), a large lesion (80 px, 1.0) on brain 0.2."""
    image = torch.zeros(1, 1, 32, 32, 4)
    image[..., 4:28, 4:28, 1:3] = 0.2
    image[..., 6:9, 6:9, 1] = 1.0
    image[..., 20:23, 20:23, 1] = 0.8
    image[..., 10:18, 14:24, 2] = 1.0
    return image


def test_hard_reject_drops_rejected_candidates_and_keeps_the_rest_exactly():
    image = _image()
    edd = EddMuscleInferer(muscle_network=None)(image, ThresholdEDD())[0, 1]
    product = EddMuscleInferer(muscle_network=CentreMUSCLE())(image, ThresholdEDD())[0, 1]
    reject = EddMuscleInferer(muscle_network=CentreMUSCLE(), fusion_rule="hard_reject")(image, ThresholdEDD())[0, 1]
    # the mimic: product lowers it below 0.5, hard_reject removes it
    assert torch.all(product[20:23, 20:23, 1] < 0.5) and torch.all(product[20:23, 20:23, 1] > 0)
    assert torch.all(reject[20:23, 20:23, 1] == 0)
    # the accepted true lesion: product raises it, hard_reject keeps p_pix exactly
    assert torch.all(product[6:9, 6:9, 1] > edd[6:9, 6:9, 1])
    assert torch.equal(reject[6:9, 6:9, 1], edd[6:9, 6:9, 1])
    outside = torch.ones_like(edd, dtype=torch.bool)
    outside[20:23, 20:23, 1] = False
    assert torch.equal(reject[outside], edd[outside])  # large lesion and background untouched
    with pytest.raises(ValueError, match="fusion_rule"):
        EddMuscleInferer(fusion_rule="max")


def test_inferer_loads_muscle_weights_from_a_torchscript_or_state_dict_file(tmp_path):
    torch.manual_seed(0)
    trained = MuscleNet(in_channels=4, out_channels=2).eval()
    torch.save(trained.state_dict(), tmp_path / "muscle.pt")
    torch.jit.script(trained).save(str(tmp_path / "muscle.ts"))
    image = _image()
    expected = EddMuscleInferer(muscle_network=trained)(image, ThresholdEDD())

    torch.manual_seed(1)
    random_weights = MuscleNet(in_channels=4, out_channels=2)  # what a client gets when no handler runs
    untrained = EddMuscleInferer(muscle_network=MuscleNet(in_channels=4, out_channels=2))(image, ThresholdEDD())
    assert not torch.allclose(untrained, expected)

    from_pt = EddMuscleInferer(muscle_network=random_weights, muscle_checkpoint=tmp_path / "muscle.pt")
    torch.testing.assert_close(from_pt(image, ThresholdEDD()), expected)
    from_ts = EddMuscleInferer(muscle_network=None, muscle_checkpoint=str(tmp_path / "muscle.ts"))
    torch.testing.assert_close(from_ts(image, ThresholdEDD()), expected)
    assert isinstance(from_ts.muscle_network, torch.jit.ScriptModule)
    # EDD only never needs the file
    edd_only = EddMuscleInferer(muscle_checkpoint=tmp_path / "missing.pt", return_edd_only=True)
    assert edd_only(image, ThresholdEDD()).shape == (1, 2, 32, 32, 4)

    with pytest.raises(BundleError, match="missing.pt"):
        EddMuscleInferer(muscle_network=random_weights, muscle_checkpoint=tmp_path / "missing.pt")(
            image, ThresholdEDD()
        )
    with pytest.raises(BundleError, match="muscle.pt"):
        EddMuscleInferer(muscle_network=None, muscle_checkpoint=tmp_path / "muscle.pt")(image, ThresholdEDD())
    with pytest.raises(BundleError, match="muscle.pt"):
        wrong = MuscleNet(in_channels=3, out_channels=2)
        EddMuscleInferer(muscle_network=wrong, muscle_checkpoint=tmp_path / "muscle.pt")(image, ThresholdEDD())
