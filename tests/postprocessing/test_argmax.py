"""ChannelArgmax(d): the same decisions as MONAI's AsDiscrete(argmax=True), ties and NaN included."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscrete, AsDiscreted

from strokeseg.postprocessing.argmax import ChannelArgmax, ChannelArgmaxd, channel_argmax


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_equals_monai_as_discrete_argmax(channels):
    generator = torch.Generator().manual_seed(channels)
    scores = torch.randn(channels, 7, 6, 5, generator=generator)
    scores[:, 0] = 0.25  # a plane of ties: the first channel wins, as in torch.argmax
    scores = MetaTensor(scores, affine=torch.diag(torch.tensor([2.0, 1.5, 3.0, 1.0])))
    expected = AsDiscrete(argmax=True)(scores)
    out = ChannelArgmax()(scores)
    assert isinstance(out, MetaTensor) and out.dtype == expected.dtype == torch.float32
    assert out.shape == expected.shape == (1, 7, 6, 5)
    torch.testing.assert_close(out.as_tensor(), expected.as_tensor(), rtol=0, atol=0)
    torch.testing.assert_close(out.affine, expected.affine)


def test_nan_counts_as_the_maximum_like_torch_argmax():
    nan = float("nan")
    scores = torch.tensor(
        [[1.0, nan, 2.0, 2.0, 0.0, nan], [1.0, 0.0, nan, 3.0, 5.0, nan], [1.0, 9.0, 9.0, nan, 5.0, 1.0]]
    )
    torch.testing.assert_close(channel_argmax(scores)[0], torch.argmax(scores, dim=0), rtol=0, atol=0)


def test_integer_scores_and_the_dictionary_version():
    scores = torch.randint(0, 3, (4, 5, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(channel_argmax(scores), torch.argmax(scores, dim=0, keepdim=True))
    data = {"pred": scores.float(), "label": torch.ones(1, 5, 6)}
    out = ChannelArgmaxd("pred")(data)
    expected = AsDiscreted("pred", argmax=True)(data)
    assert torch.equal(out["pred"], expected["pred"]) and out["label"] is data["label"]


def test_no_channel_is_a_clear_error():
    with pytest.raises(ValueError, match="C >= 1"):
        channel_argmax(torch.zeros(0, 3, 3))
