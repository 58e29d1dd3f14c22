"""DeepMedic v0.6.1: parameter count, receptive field, pathway alignment, the two calling modes, freezing, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strokeseg.networks.deepmedic import DeepMedic, context_positions, freeze_pathway_layers

# same structure as v0.6.1, small enough for structural tests on a shared CPU
TINY = {"features": (4, 4, 4), "residual_layers": (3,), "fc_features": (6,), "fc_dropout": (0.0, 0.0)}


def _eval64(net: DeepMedic) -> DeepMedic:
    """Eval mode (BatchNorm from running statistics, so voxels do not interact) in float64."""
    return net.double().eval()


def _context(volume: torch.Tensor, start: list[int], size: int, net: DeepMedic) -> torch.Tensor:
    """The low-resolution context of the segment of ``size`` whose first voxel is ``start`` (3-D)."""
    offsets = context_positions(size, net.pathway_shrink, net.factor)
    grids = [torch.tensor([s + o for o in offsets]) for s in start]
    return volume[:, :, grids[0]][:, :, :, grids[1]][:, :, :, :, grids[2]]


def _changed(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a - b).abs().amax(dim=(0, 1)).numpy() > 0


def test_parameter_count_matches_v061_layer_list():
    def conv(cin, cout, k=3):
        return cin * cout * k**3

    widths = [30, 30, 40, 40, 40, 40, 50, 50]
    pathway = conv(3, 30) + sum(conv(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
    pathway += 3 + 3 * sum(widths[:-1])  # input bias of layer 1; BN scale, shift + PReLU slope of layers 2-8
    fc = conv(100, 150) + conv(150, 150, 1) + conv(150, 2, 1) + 2  # + classification bias
    fc += 3 * (100 + 150 + 150)  # BN + PReLU in front of each FC layer
    n = sum(p.numel() for p in DeepMedic(in_channels=3, out_channels=2).parameters())
    assert n == 2 * pathway + fc == 1_051_088
    assert abs(n - 1.06e6) / 1.06e6 < 0.01  # the expected size: about 1.06 M


def test_segment_shapes_of_training_validation_and_region_modes():
    net = DeepMedic().eval()
    with torch.no_grad():
        # Pérez Malla et al. 2019, §2.2: training segments 25³ -> 9³ outputs, context 19³; validation 17³ -> 1³
        assert context_positions(25, 16, 3) == list(range(-15, 40, 3))
        assert net(torch.rand(2, 3, 25, 25, 25), torch.rand(2, 3, 19, 19, 19)).shape == (2, 2, 9, 9, 9)
        assert net(torch.rand(1, 3, 17, 17, 17), torch.rand(1, 3, 17, 17, 17)).shape == (1, 2, 1, 1, 1)
        assert net.margin == 25
        assert net(torch.rand(1, 3, 53, 56, 53)).shape == (1, 2, 3, 6, 3)


def test_region_of_a_size_that_breaks_the_subsampling_grid_is_refused():
    net = DeepMedic(**TINY).eval()
    bad = 2 * net.margin + 4  # output 4 is not a multiple of 3
    with pytest.raises(ValueError, match="multiple of 3"):
        net(torch.rand(1, 3, bad, bad, bad))
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(1, 3, 25, 25, 25), torch.rand(1, 3, 8, 8, 8))


def _dependence(net: DeepMedic, size: int, voxel: int) -> np.ndarray:
    """Which normal-resolution input voxels the output voxel ``voxel`` (on the diagonal) depends on."""
    segment = torch.rand(1, 3, size, size, size, dtype=torch.float64, requires_grad=True)
    context = torch.rand(1, 3, *[len(context_positions(size, net.pathway_shrink, 3))] * 3, dtype=torch.float64)
    net(segment, context)[0, 1, voxel, voxel, voxel].backward()
    return segment.grad.abs().sum(dim=(0, 1)).numpy() > 0


def _cube(mask: np.ndarray) -> list[tuple[int, int]]:
    idx = np.argwhere(mask)
    return [(int(lo), int(hi)) for lo, hi in zip(idx.min(0), idx.max(0), strict=True)]


def test_receptive_field_of_the_normal_pathway_is_17_cubed():
    net = _eval64(DeepMedic())
    # the smallest segment, 17³, gives one output voxel and every one of its 17³ voxels counts
    assert _dependence(net, 17, 0).all()
    # inside a larger segment the 3³ first FC layer adds one voxel each side: 19³ (17³ without it)
    for fc_kernel, width in ((3, 19), (1, 17)):
        net = _eval64(DeepMedic(fc_kernel_size=fc_kernel))
        mask = _dependence(net, 25, 4)  # centre output voxel at input 12
        assert mask.sum() == width**3
        assert _cube(mask) == [(12 - width // 2, 12 + width // 2)] * 3


def test_subsampled_pathway_is_aligned_with_the_normal_pathway():
    """An impulse in the volume moves the outputs through each pathway symmetrically around its own voxel."""
    net = _eval64(DeepMedic(**TINY))
    size, start = 31, [20, 20, 20]  # segment voxels 20..50, outputs 23..47
    first_out = start[0] + net.pathway_shrink // 2
    offsets = context_positions(size, net.pathway_shrink, net.factor)
    clean = torch.rand(1, 3, 80, 80, 80, dtype=torch.float64)

    def segment_of(volume):
        return volume[:, :, 20:51, 20:51, 20:51]

    with torch.no_grad():
        base = net(segment_of(clean), _context(clean, start, size, net))
        on_grid = start[0] + offsets[len(offsets) // 2]  # a context voxel near the middle
        for q in (on_grid, on_grid + 1):
            bump = clean.clone()
            bump[:, :, q, q, q] += 10.0
            via_normal = _changed(net(segment_of(bump), _context(clean, start, size, net)), base)
            via_context = _changed(net(segment_of(clean), _context(bump, start, size, net)), base)
            lo, hi = _cube(via_normal)[0]
            assert first_out + lo + first_out + hi == 2 * q  # centred on the impulse
            if q == on_grid:
                lo, hi = _cube(via_context)[0]
                assert first_out + lo + first_out + hi == 2 * q
            else:  # decimation without smoothing: an off-grid voxel is invisible to the subsampled pathway
                assert not via_context.any()


def test_segment_mode_and_region_mode_agree_on_shared_voxels():
    """The sampler's context (context_positions) and the tile mode put the low-resolution grid at the same place."""
    net = _eval64(DeepMedic())
    volume = torch.rand(1, 3, 70, 70, 70, dtype=torch.float64)
    c = 35  # segment 25³ centred at c: outputs c-4..c+4, triple centres c-3, c, c+3
    seg_start = [c - 12] * 3
    with torch.no_grad():
        segment_out = net(
            volume[:, :, c - 12 : c + 13, c - 12 : c + 13, c - 12 : c + 13], _context(volume, seg_start, 25, net)
        )
        r0 = c - 3 - net.margin  # region whose 9 outputs start at c-3 (a triple centre)
        region_out = net(volume[:, :, r0 : r0 + 59, r0 : r0 + 59, r0 : r0 + 59])
    # voxels c-3..c+3; the segment's border voxels saw the first FC layer's padding
    torch.testing.assert_close(segment_out[..., 1:8, 1:8, 1:8], region_out[..., 0:7, 0:7, 0:7], rtol=1e-10, atol=1e-10)
    # a region shifted by one voxel puts the grid elsewhere: the same voxels get other values
    with torch.no_grad():
        shifted = net(volume[:, :, r0 + 1 : r0 + 60, r0 : r0 + 59, r0 : r0 + 59])
    assert not torch.allclose(shifted[..., 0:6, 0:7, 0:7], region_out[..., 1:7, 0:7, 0:7])


def test_freeze_pathway_layers():
    net = DeepMedic(**TINY)
    assert freeze_pathway_layers(net, 2) is net
    for pathway in (net.normal, net.subsampled):
        trainable = [any(p.requires_grad for p in layer.parameters()) for layer in pathway.layers]
        assert trainable == [False, False, True]
    assert all(p.requires_grad for p in net.fc.parameters())
    freeze_pathway_layers(net, -1)
    assert not any(p.requires_grad for p in net.normal.parameters())
    assert not any(p.requires_grad for p in net.subsampled.parameters())
    freeze_pathway_layers(net, 0)
    assert all(p.requires_grad for p in net.normal.parameters())
    with pytest.raises(ValueError, match="cannot freeze 4"):
        freeze_pathway_layers(net, 4)


def test_torchscript_matches_eager_in_both_modes():
    net = DeepMedic(**TINY).eval()
    scripted = torch.jit.script(net)
    region = torch.rand(1, 3, 2 * net.margin + 6, 2 * net.margin + 3, 2 * net.margin + 3)
    segment, context = torch.rand(2, 3, 15, 15, 15), torch.rand(2, 3, 9, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(scripted(region), net(region))
        torch.testing.assert_close(scripted(segment, context), net(segment, context))


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = DeepMedic(**TINY)
    segment, context = torch.rand(4, 3, 15, 15, 15), torch.rand(4, 3, 9, 9, 9)
    label = (segment[:, :1, 3:-3, 3:-3, 3:-3] > 0.5).long()[:, 0]
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(segment, context), label)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
