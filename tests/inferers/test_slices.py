"""Batched slice-wise inference of a 2-D network over volumes: equivalence, skipping, padding, batching."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.inferers.slices import BatchedSliceInferer, slices_to_volume, volume_to_slices


class CountingNet(torch.nn.Module):
    """(N, 1, H, W) → (N, 2, H, W) logits (−x, x) with a weight, recording the batch shapes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return torch.cat([-self.scale * x, self.scale * x], dim=1)


def _volume() -> torch.Tensor:
    x = torch.rand(2, 1, 10, 7, 5) + 0.1
    x[0, ..., 0] = 0.0  # empty first slice of case 0
    x[1, ..., 3:] = 0.0  # two empty slices of case 1
    return x


def test_slice_round_trip():
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    s = volume_to_slices(x)
    assert s.shape == (12, 3, 4, 5)
    torch.testing.assert_close(s[1 * 6 + 4], x[1, :, :, :, 4])
    torch.testing.assert_close(slices_to_volume(s, 2), x)


def test_matches_per_slice_loop_and_skips_empty_slices():
    x, net = _volume(), CountingNet()
    with torch.no_grad():
        out = BatchedSliceInferer(slice_batch_size=3)(x, net)
        assert out.shape == (2, 2, 10, 7, 5) and out.dtype == torch.float32
        for b in range(2):
            for d in range(5):
                if x[b, ..., d].any():
                    torch.testing.assert_close(out[b, ..., d], net(x[b : b + 1, ..., d])[0])
    # 7 non-empty slices in mini-batches of at most 3 (the per-slice loop above added 7 more calls).
    assert [c[0] for c in net.calls[:3]] == [3, 3, 1]
    probs = torch.softmax(out, dim=1)
    assert torch.equal(probs[0, 0, ..., 0], torch.ones(10, 7))  # skipped slices: background probability 1
    assert torch.equal(probs[1, 1, ..., 3:], torch.zeros(10, 7, 2))


def test_all_empty_volume_is_background():
    net = CountingNet()
    out = BatchedSliceInferer()(torch.zeros(1, 1, 8, 8, 3), net)
    assert out.shape == (1, 2, 8, 8, 3)
    assert torch.equal(out.argmax(dim=1), torch.zeros(1, 8, 8, 3, dtype=torch.long))


def test_padding_to_divisor_and_crop_back():
    net = CountingNet()
    out = BatchedSliceInferer(spatial_divisor=4)(_volume(), net)
    assert net.calls[0][-2:] == (12, 8)  # 10 × 7 padded to 12 × 8
    assert out.shape == (2, 2, 10, 7, 5)


def test_bf16_channels_last_close_to_fp32_and_meta_kept():
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = MetaTensor(_volume(), meta={"filename_or_obj": "c.nii.gz"})
    with torch.no_grad():
        ref = BatchedSliceInferer()(x, conv)
        fast = BatchedSliceInferer(autocast_bf16=True, channels_last=True)(x, conv)
    assert isinstance(fast, MetaTensor) and fast.meta["filename_or_obj"] == "c.nii.gz"
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.as_tensor(), ref.as_tensor(), rtol=0.05, atol=0.05)


def test_rejects_non_volume_input():
    with pytest.raises(DataError, match=r"\(B, C, H, W, D\)"):
        BatchedSliceInferer()(torch.zeros(1, 1, 8, 8), CountingNet())


class TwoInputNet(torch.nn.Module):
    """(N, 1, H, W) image + (N, 1, H, W) map → (N, 2, H, W) logits (-(x·y), x·y) and an auxiliary (N, 1, H, W)."""

    def __init__(self, several_outputs: bool = False) -> None:
        super().__init__()
        self.several_outputs = several_outputs
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...], float]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        self.calls.append((tuple(x.shape), tuple(y.shape), offset))
        product = x * y + offset
        logits = torch.cat([-product, product], dim=1)
        return (logits, x - y) if self.several_outputs else logits


def test_several_inputs_are_sliced_alongside_the_image():
    x = _volume()
    y = torch.rand(2, 1, 10, 7, 5) + 0.5
    y[0, ..., 0] = 0.0  # empty in both inputs: skipped
    y[1, ..., 3] = 0.0  # slice 3 of case 1 is empty in both inputs too
    y[1, ..., 4] = 1.0  # empty image (slices 3, 4 of case 1) but not an empty map: kept (the union decides)
    net = TwoInputNet()
    out = BatchedSliceInferer(slice_batch_size=4)((x, y), net, offset=0.25)
    assert out.shape == (2, 2, 10, 7, 5)
    kept = [(b, d) for b in range(2) for d in range(5) if x[b, ..., d].any() or y[b, ..., d].any()]
    assert sum(c[0][0] for c in net.calls) == len(kept) == 8
    assert all(c[0] == c[1] and c[2] == 0.25 for c in net.calls)  # same slices, unsliced kwargs passed on
    for b, d in kept:
        expected = x[b, ..., d] * y[b, ..., d] + 0.25
        torch.testing.assert_close(out[b, 1, ..., d], expected[0])
    assert torch.equal(out[0, 1, ..., 0], torch.full((10, 7), -1.0e4))
    # the same call with the map as a positional or keyword argument of the inferer
    by_arg = BatchedSliceInferer(slice_batch_size=4)(x, TwoInputNet(), y, offset=0.25)
    by_kw = BatchedSliceInferer(slice_batch_size=4)(x, TwoInputNet(), y=y, offset=0.25)
    torch.testing.assert_close(by_arg, out)
    torch.testing.assert_close(by_kw, out)


def test_several_outputs_are_each_stitched():
    x, y = _volume(), torch.rand(2, 1, 10, 7, 5)
    logits, aux = BatchedSliceInferer(spatial_divisor=4)((x, y), TwoInputNet(several_outputs=True))
    assert logits.shape == (2, 2, 10, 7, 5) and aux.shape == (2, 1, 10, 7, 5)
    torch.testing.assert_close(aux[1, ..., 1], x[1, ..., 1] - y[1, ..., 1])


def test_mismatched_inputs_are_refused():
    with pytest.raises(DataError, match="does not match"):
        BatchedSliceInferer()((_volume(), torch.zeros(2, 1, 10, 7, 4)), TwoInputNet())
