"""Pool-mask max-pooling and max-unpooling: values back at their argmax, zeros elsewhere, 2-D and 3-D."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from strokeseg.layers import MaxPoolWithIndices, MaxUnpoolWithIndices


class _RoundTrip(torch.nn.Module):
    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.pool = MaxPoolWithIndices(spatial_dims)
        self.unpool = MaxUnpoolWithIndices(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, indices = self.pool(x)
        return self.unpool(pooled, indices, x.shape[2:])


def _expected_round_trip(x: np.ndarray) -> np.ndarray:
    """Window by window: keep each 2-wide window's maximum where it is, zero the rest (floor mode)."""
    out = np.zeros_like(x)
    spatial = x.shape[2:]
    starts = [range(0, s - 1, 2) for s in spatial]
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for corner in itertools.product(*starts):
            window = tuple(slice(k, k + 2) for k in corner)
            block = x[(b, c) + window]
            pos = np.unravel_index(np.argmax(block), block.shape)
            out[(b, c) + tuple(k + p for k, p in zip(corner, pos, strict=True))] = block[pos]
    return out


def test_hand_computed_2d():
    x = torch.tensor([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 9.0, 1.0], [0.0, 0.0, 7.0, 8.0], [6.0, 2.0, 1.0, 3.0]]]])
    pooled, indices = MaxPoolWithIndices(2)(x)
    assert pooled.tolist() == [[[[5.0, 9.0], [6.0, 8.0]]]]
    assert indices.tolist() == [[[[1, 6], [12, 11]]]]  # flat positions in the 4 x 4 grid
    out = MaxUnpoolWithIndices(2)(pooled, indices, [4, 4])
    expected = [[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 8.0], [6.0, 0.0, 0.0, 0.0]]
    assert out[0, 0].tolist() == expected


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (2, 3, 5, 7), (1, 2, 4, 6, 8), (1, 2, 5, 3, 7)])
def test_round_trip_places_maxima_at_argmax(shape):
    spatial_dims = len(shape) - 2
    x = torch.randn(shape)  # continuous values: no ties
    out = _RoundTrip(spatial_dims)(x)
    assert out.shape == x.shape  # odd sizes come back to the pre-pool size
    np.testing.assert_array_equal(out.numpy(), _expected_round_trip(x.numpy()))
    # one survivor per complete window, and every survivor is a value of x at the same place
    n_windows = int(np.prod([s // 2 for s in shape[2:]])) * shape[0] * shape[1]
    kept = out != 0
    assert int(kept.sum()) == n_windows
    assert torch.equal(out[kept], x[kept])


def test_odd_size_drops_the_incomplete_border_like_torch():
    x = torch.randn(1, 2, 5, 7)
    out = _RoundTrip(2)(x)
    assert torch.all(out[..., 4, :] == 0) and torch.all(out[..., :, 6] == 0)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(out, F.max_unpool2d(pooled, indices, 2, 2, output_size=[5, 7]))


def test_default_output_size_and_full_shape_argument():
    x = torch.randn(1, 1, 6, 4, 2)
    pooled, indices = MaxPoolWithIndices(3)(x)
    unpool = MaxUnpoolWithIndices(3)
    assert unpool(pooled, indices).shape == (1, 1, 6, 4, 2)
    assert torch.equal(unpool(pooled, indices, list(x.shape)), unpool(pooled, indices, [6, 4, 2]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_flow_to_the_argmax_only(spatial_dims):
    x = torch.randn((2, 2) + (6,) * spatial_dims, requires_grad=True)
    out = _RoundTrip(spatial_dims)(x)
    out.sum().backward()
    # d(out)/dx is 1 where x survived as a window maximum, 0 elsewhere
    assert torch.equal(x.grad, (out != 0).to(x.dtype))


def test_unpool_gradient_reaches_pooled_values():
    x = torch.randn(1, 1, 4, 4)
    pooled, indices = MaxPoolWithIndices(2)(x)
    pooled = pooled.clone().requires_grad_(True)
    weights = torch.arange(16.0).reshape(1, 1, 4, 4)
    (MaxUnpoolWithIndices(2)(pooled, indices, [4, 4]) * weights).sum().backward()
    # each pooled value's gradient is the weight at the position it was written to
    assert torch.equal(pooled.grad.flatten(), indices.flatten().to(torch.float32))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_scripted_and_traced_equal_eager(spatial_dims):
    net = _RoundTrip(spatial_dims)
    scripted = torch.jit.script(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.randn((1, 2) + (4,) * spatial_dims))
    x = torch.randn((2, 3) + (7,) * (spatial_dims - 1) + (5,))  # other batch, channels and odd sizes
    assert torch.equal(scripted(x), net(x))
    assert torch.equal(traced(x), net(x))


def test_channels_last_input():
    x = torch.randn(2, 3, 8, 6)
    net = _RoundTrip(2)
    assert torch.equal(net(x.to(memory_format=torch.channels_last)), net(x))


@pytest.mark.parametrize("cls", [MaxPoolWithIndices, MaxUnpoolWithIndices])
def test_unsupported_spatial_dims(cls):
    with pytest.raises(ValueError, match="spatial_dims"):
        cls(1)
