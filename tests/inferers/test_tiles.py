"""ValidTileInferer: reflection padding, tile-size invariance, equality with one pass over the padded volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.inferers.tiles import ValidTileInferer
from strokeseg.networks.deepmedic import DeepMedic
from strokeseg.transforms.padding import padding_index

TINY = {"features": (4, 4, 4), "residual_layers": (3,), "fc_features": (6,), "fc_dropout": (0.0, 0.0)}


@pytest.mark.parametrize("size,before,after", [(5, 2, 3), (4, 9, 11), (1, 3, 2), (7, 0, 0)])
def test_padding_index_matches_numpy_reflect_and_edge(size, before, after):
    values = np.arange(size)
    reflect = padding_index(size, before, after, "reflect").numpy()
    expected = np.pad(values, (before, after), mode="reflect" if size > 1 else "edge")
    np.testing.assert_array_equal(reflect, expected)
    np.testing.assert_array_equal(
        padding_index(size, before, after, "replicate").numpy(), np.pad(values, (before, after), mode="edge")
    )


def test_plain_valid_convolution_equals_one_pass_over_the_reflected_volume():
    conv = torch.nn.Conv3d(2, 3, kernel_size=5).double()  # margin 2, any output size
    volume = torch.rand(2, 2, 11, 9, 7, dtype=torch.float64)
    padded = np.pad(volume.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2), (2, 2)], mode="reflect")
    with torch.no_grad():
        expected = conv(torch.from_numpy(padded))
        for tile, batch in ((5, 1), (8, 3), (30, 2)):
            got = ValidTileInferer(tile, margin=2, tile_batch_size=batch)(volume, conv)
            torch.testing.assert_close(got, expected.float(), rtol=1e-6, atol=1e-6)
            assert got.dtype == torch.float32


def test_deepmedic_segmentation_does_not_depend_on_the_tile_size():
    net = DeepMedic(**TINY).double().eval()
    volume = torch.rand(1, 3, 23, 20, 17, dtype=torch.float64)
    results = []
    with torch.no_grad():
        for output in (3, 6, 9, 12, 24):  # the last tile covers the volume at once
            inferer = ValidTileInferer(output + 2 * net.margin)
            results.append(inferer(volume, net))
        # one pass over the whole (reflected, end-padded) volume, the output size a multiple of 3
        sizes = [24, 21, 18]
        pads = [(net.margin, net.margin + s - v) for s, v in zip(sizes, volume.shape[2:], strict=True)]
        padded = np.pad(volume.numpy(), [(0, 0), (0, 0), *pads], mode="reflect")
        whole = net(torch.from_numpy(padded))[..., :23, :20, :17]
    assert results[0].shape == (1, 2, 23, 20, 17)
    for result in results:
        torch.testing.assert_close(result, whole.float(), rtol=1e-5, atol=1e-5)
        assert torch.equal(result.argmax(1), results[0].argmax(1))


def test_default_deepmedic_tiles_agree_and_meta_is_kept():
    net = DeepMedic().eval()
    volume = MetaTensor(torch.rand(1, 3, 8, 7, 6), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    with torch.no_grad():
        small = ValidTileInferer(53)(volume, net)  # outputs 3³
        large = ValidTileInferer(59)(volume, net)  # outputs 9³ (shrunk to cover 8 x 7 x 6)
    assert isinstance(small, MetaTensor)
    torch.testing.assert_close(small.affine, volume.affine)
    torch.testing.assert_close(small.as_tensor(), large.as_tensor(), rtol=1e-5, atol=1e-5)


def test_channels_last_tiles_give_the_contiguous_result():
    net = DeepMedic(**TINY).eval()
    volume = torch.rand(1, 3, 23, 20, 17)
    with torch.no_grad():
        plain = ValidTileInferer(6 + 2 * net.margin)(volume, net)
        fast = ValidTileInferer(6 + 2 * net.margin, channels_last=True)(volume, net)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert fast.is_contiguous()  # the result is handed on in the plain layout
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.argmax(1), plain.argmax(1))


def test_voxel_budget_picks_the_cheapest_split_that_fits():
    inferer = ValidTileInferer(110, margin=25, output_multiple=3, max_tile_voxels=2_400_000)
    # 161 x 161 x 86: four tiles of 131 x 131 x 137 (2.35 M voxels each) beat 18 tiles of 110³ and fit the budget
    assert inferer.geometry(None, [161, 161, 86]) == ([25, 25, 25], [81, 81, 87])
    roomy = ValidTileInferer(110, margin=25, output_multiple=3, max_tile_voxels=10_000_000)
    assert roomy.geometry(None, [161, 161, 86])[1] == [162, 162, 87]  # the whole volume in one tile
    tight = ValidTileInferer(110, margin=25, output_multiple=3, max_tile_voxels=1000)
    assert tight.geometry(None, [161, 161, 86])[1] == [60, 60, 60]  # nothing fits: tile_size applies
    with pytest.raises(ValueError, match="max_tile_voxels"):
        ValidTileInferer(110, max_tile_voxels=0)


def test_voxel_budget_tiles_give_the_same_segmentation():
    net = DeepMedic(**TINY).double().eval()
    volume = torch.rand(1, 3, 23, 20, 17, dtype=torch.float64)
    with torch.no_grad():
        reference = ValidTileInferer(6 + 2 * net.margin)(volume, net)
        splits = set()
        for budget in (40_000, 60_000, 10**6):
            inferer = ValidTileInferer(6 + 2 * net.margin, max_tile_voxels=budget)
            splits.add(tuple(inferer.geometry(net, [23, 20, 17])[1]))
            got = inferer(volume, net)
            torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-6)
    assert len(splits) == 3  # three different tilings, one segmentation


def test_bad_tiles_and_inputs_are_refused():
    net = DeepMedic(**TINY).eval()
    with pytest.raises(ValueError, match="multiple of 3"):
        ValidTileInferer(2 * net.margin + 4)(torch.rand(1, 3, 9, 9, 9), net)
    with pytest.raises(ValueError, match="margin"):
        ValidTileInferer(9)(torch.rand(1, 3, 9, 9, 9), torch.nn.Identity())
    with pytest.raises(DataError, match="B, C"):
        ValidTileInferer(9, margin=1)(torch.rand(9), torch.nn.Identity())
    with pytest.raises(ValueError, match="padding_mode"):
        ValidTileInferer(9, padding_mode="wrap")
