"""EDD Net + deep-supervision loss + the authors' AdaDelta settings overfit a fixed batch."""

from __future__ import annotations

import torch

from strokeseg.losses import DeepSupervisionCrossEntropy
from strokeseg.networks import EDDNet


def test_adadelta_steps_reduce_the_loss_on_a_fixed_batch():
    """Narrow widths keep this under a few seconds on a shared CPU; the structure is the paper's (2 branches,
    fusion, refinement, four supervised outputs)."""
    net = EDDNet(features=(8, 16, 16), deep_supervision=True).train()
    loss_fn = DeepSupervisionCrossEntropy()
    # authors' EDD/solver.prototxt (Chen et al. 2017): AdaDelta, lr 0.05, rho 0.9, eps (Caffe "delta") 1e-6, no decay
    optimizer = torch.optim.Adadelta(net.parameters(), lr=0.05, rho=0.9, eps=1e-6, weight_decay=0.0)
    labels = torch.zeros(2, 1, 64, 64)
    labels[0, :, 20:36, 24:40] = 1.0
    labels[1, :, 40:50, 10:22] = 1.0
    images = torch.randn(2, 1, 64, 64) + 2.0 * labels  # bright "lesions" on noise
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        out = net(images)
        assert out.shape == (2, 4, 2, 64, 64)
        loss = loss_fn(out, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))  # monotone on a fixed batch
    assert losses[-1] < 0.95 * losses[0]
