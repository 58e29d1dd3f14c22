"""Maxout over channel groups (P. Liu 2018, §2.2): equals the formula, scripts, and trains every winning piece."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strokeseg.layers.maxout import ChannelMaxout, MaxoutHead


def _formula(x: np.ndarray, pieces: tuple[int, ...]) -> np.ndarray:
    """Per pixel, output channel c = max of the input channels of group c, written out with loops."""
    b, _, h, w = x.shape
    out = np.empty((b, len(pieces), h, w), dtype=x.dtype)
    start = 0
    for c, k in enumerate(pieces):
        for i in range(b):
            for y in range(h):
                for z in range(w):
                    out[i, c, y, z] = max(x[i, start + j, y, z] for j in range(k))
        start += k
    return out


@pytest.mark.parametrize("pieces", [(3, 1), (1, 1), (2, 3), (1, 2, 4)])
def test_channel_maxout_equals_the_formula(pieces):
    x = torch.randn(2, sum(pieces), 5, 6, generator=torch.Generator().manual_seed(1))
    out = ChannelMaxout(pieces)(x)
    assert out.shape == (2, len(pieces), 5, 6)
    np.testing.assert_array_equal(out.numpy(), _formula(x.numpy(), pieces))


def test_paper_head_background_is_the_max_of_three_pieces():
    # one pixel: background pieces -1, 4, 2 and lesion piece 3 -> logits (4, 3): background wins
    x = torch.tensor([-1.0, 4.0, 2.0, 3.0]).reshape(1, 4, 1, 1)
    out = ChannelMaxout((3, 1))(x)
    assert out.flatten().tolist() == [4.0, 3.0]


def test_three_dimensional_input():
    x = torch.randn(1, 4, 3, 4, 5)
    out = ChannelMaxout((3, 1))(x)
    assert out.shape == (1, 2, 3, 4, 5)
    torch.testing.assert_close(out[:, 0], x[:, :3].max(dim=1).values)
    torch.testing.assert_close(out[:, 1], x[:, 3])


def test_scripted_equals_eager():
    head = MaxoutHead(2, in_channels=6, pieces=(3, 1)).eval()
    scripted = torch.jit.script(head)
    x = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(scripted(x), head(x), rtol=0, atol=0)
    layer = torch.jit.script(ChannelMaxout((2, 2)))
    y = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(layer(y), ChannelMaxout((2, 2))(y), rtol=0, atol=0)


def test_gradient_reaches_exactly_the_winning_pieces():
    pieces = (3, 1)
    x = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(3), requires_grad=True)
    ChannelMaxout(pieces)(x).sum().backward()
    winner = x.detach()[:, :3].argmax(dim=1)  # (B, H, W) index of the winning background piece
    expected = torch.zeros_like(x)
    expected.scatter_(1, winner.unsqueeze(1), 1.0)
    expected[:, 3] = 1.0  # a single lesion piece always wins
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
    # every background piece wins somewhere in this input, so every piece receives gradient
    assert all(bool((x.grad[:, j] > 0).any()) for j in range(4))


def test_every_head_piece_learns_where_it_wins():
    torch.manual_seed(0)
    head = MaxoutHead(2, in_channels=3, pieces=(3, 1))
    features = torch.randn(4, 3, 6, 6)
    head(features).logsumexp(dim=1).sum().backward()
    pieces = head.conv(features).detach()
    winners = set(pieces[:, :3].argmax(dim=1).unique().tolist())
    weight_grad = head.conv.weight.grad.flatten(1).abs().sum(dim=1)
    for piece in range(3):
        assert (weight_grad[piece] > 0) == (piece in winners)
    assert weight_grad[3] > 0


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="expects 4 input channels"):
        ChannelMaxout((3, 1))(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("pieces", [(), (3, 0), (2, -1), (1.5, 1)])
def test_invalid_pieces_are_refused(pieces):
    with pytest.raises(ValueError, match="pieces"):
        ChannelMaxout(pieces)
