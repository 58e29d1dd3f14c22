"""Tests of the uResNet bench hook: exact patch counts, exact comparison region, extrapolation, the P3 condition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import Dataset
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose

from strokeseg.inferers.patches import FaithfulPatchInferer
from strokeseg.tools.bench.hooks import faithful_patch_grid as grid
from strokeseg.tools.bench.hooks import uresnet_focal as hook
from strokeseg.tools.bench.hooks import uresnet_p3
from strokeseg.tools.bench.targets import p3_verdict


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.PReLU(), torch.nn.Conv3d(4, 2, 1)).eval()


def _head(shape=(20, 18, 10)) -> torch.Tensor:
    """Two channels, background at each channel's minimum around an off-centre ellipsoidal head."""
    torch.manual_seed(1)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    centre = torch.tensor([n / 2.0 + 1 for n in shape]).reshape(3, 1, 1, 1)
    radius = torch.tensor([n / 2.5 for n in shape]).reshape(3, 1, 1, 1)
    inside = (((grid - centre) / radius) ** 2).sum(0) <= 1
    image = torch.rand(2, *shape) + 1.0
    image[:, ~inside] = 0.0
    return image


def test_patch_count_is_what_the_inferer_evaluates():
    net = _net()
    inferer = FaithfulPatchInferer(patch_size=(6, 6, 4), step=(3, 2, 1), batch_size=7)
    for image in (_head(), _head((20, 5, 10))):  # the second is narrower than a patch: padded like __call__ pads
        with torch.inference_mode():
            inferer(image[None], net)
        assert grid.count_faithful_patches(inferer, image) == inferer.last_num_patches > 0
        assert grid.count_faithful_patches(inferer, image[None]) == inferer.last_num_patches
    everything = FaithfulPatchInferer(patch_size=(6, 6, 4), step=(3, 2, 1), foreground_only=False)
    # without the foreground rule: the regular grid plus the last patch ending at each border
    assert grid.count_faithful_patches(everything, _head()) == len([0, 3, 6, 9, 12, 14]) * 7 * 7


def test_coverage_is_the_brute_force_count():
    origins = torch.tensor([[0, 0, 0], [2, 1, 0], [4, 3, 2], [2, 1, 1]])
    shape, size = (9, 7, 5), (3, 4, 2)
    expected = torch.zeros(shape, dtype=torch.int32)
    for o in origins.tolist():
        expected[o[0] : o[0] + size[0], o[1] : o[1] + size[1], o[2] : o[2] + size[2]] += 1
    assert torch.equal(grid.coverage(origins, shape, size), expected)
    assert grid.coverage(origins[:0], shape, size).sum() == 0


def test_select_block_takes_consecutive_grid_values_around_the_centre():
    inferer = FaithfulPatchInferer(patch_size=(6, 6, 4), step=(3, 2, 1), foreground_only=False)
    origins = grid.faithful_origins(inferer, _head())
    keep = grid.select_block(origins, centre=(10, 9, 5), counts=(2, 3, 4), patch_size=(6, 6, 4))
    chosen = origins[keep]
    assert len(chosen) == 2 * 3 * 4
    assert sorted(set(chosen[:, 0].tolist())) == [6, 9]  # centres 9, 12 around x = 10
    assert sorted(set(chosen[:, 1].tolist())) == [4, 6, 8]
    assert sorted(set(chosen[:, 2].tolist())) == [1, 2, 3, 4]  # a tie (mean 2.5 or 3.5 vs 3): the lower run
    # at a border the block slides inwards instead of shrinking
    edge = origins[grid.select_block(origins, centre=(0, 0, 0), counts=(2, 3, 4), patch_size=(6, 6, 4))]
    assert len(edge) == 24 and int(edge.min()) == 0


def test_block_run_equals_the_whole_run_on_the_exact_region():
    net, image = _net(), _head()
    base = FaithfulPatchInferer(patch_size=(6, 6, 4), step=(3, 2, 1), batch_size=5)
    origins = grid.faithful_origins(base, image)
    selected = grid.select_block(origins, centre=(10, 9, 5), counts=(4, 5, 7), patch_size=base.patch_size)
    region = grid.exact_region(origins, selected, image.shape[1:], base.patch_size)
    assert 0 < int(region.sum()) < region.numel()
    chosen = origins[selected]
    block = grid.SelectedPatchInferer(base, lambda c: grid.isin_rows(c, chosen))
    with torch.inference_mode():
        whole = base(image[None], net)
        part = block(image[None], net)
    assert block.last_num_patches == int(selected.sum()) < base.last_num_patches
    assert torch.allclose(whole[0][:, region], part[0][:, region], atol=1e-5)
    outside = grid.coverage(chosen, image.shape[1:], base.patch_size) > 0
    assert not torch.allclose(whole[0][:, outside & ~region], part[0][:, outside & ~region], atol=1e-5)


def test_fast_output_is_exact_in_the_box_with_fewer_windows():
    net, image = _net(), _head((40, 36, 20))
    inferer = SlidingWindowInferer(roi_size=(16, 16, 8), sw_batch_size=3, overlap=0.25, mode="gaussian")
    box = ([12, 10, 6], [16, 14, 9])
    with torch.inference_mode():
        full = inferer(image[None], net)
        run = uresnet_p3.fast_output_in_region(inferer, net, image[None], box)
    (lo, hi) = box
    inside = (slice(None), slice(None), *[slice(a, b) for a, b in zip(lo, hi, strict=True)])
    assert torch.allclose(full[inside], run["output"][inside], atol=1e-6)
    assert 0 < run["evaluated"] < run["windows"] and run["network_s"] >= 0
    assert not hasattr(inferer, "with_coord") or inferer.with_coord is False  # the bundle's inferer is untouched
    small = uresnet_p3.fast_output_in_region(inferer, net, image[None, :, :10], ([2, 3, 4], [5, 6, 7]))  # padded input
    with torch.inference_mode():
        assert torch.allclose(
            inferer(image[None, :, :10], net)[:, :, 2:5, 3:6, 4:7], small["output"][:, :, 2:5, 3:6, 4:7]
        )


def test_extrapolation_arithmetic():
    # 1 s fixed, 10 s for 100 patches -> 0.1 s per patch, 1000 patches -> 1 + 100 s
    assert grid.extrapolate_seconds(11.0, 100, 1000, fixed_s=1.0) == pytest.approx(101.0)
    assert grid.extrapolate_seconds(5.0, 50, 50) == pytest.approx(5.0)  # the whole case measured
    assert grid.extrapolate_seconds(0.5, 10, 1000, fixed_s=1.0) == 1.0  # noise below the fixed cost: no negative
    with pytest.raises(ValueError, match="at least one"):
        grid.extrapolate_seconds(1.0, 0, 10)
    with pytest.raises(ValueError, match="negative"):
        grid.extrapolate_seconds(-1.0, 1, 10)


def test_dice_and_the_p3_condition():
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    assert uresnet_p3.dice(a, a) == 1.0 and uresnet_p3.dice(a, torch.tensor([1, 0, 0, 0])) == pytest.approx(2 / 3)
    assert uresnet_p3.dice(torch.zeros(4), torch.zeros(4)) is None
    assert p3_verdict(60.0, 0.96) == {"ratio_met": True, "dice_met": True, "met": True}
    assert p3_verdict(60.0, 0.94)["met"] is False  # fast enough, but the fast mode disagrees
    assert p3_verdict(40.0, 0.99)["met"] is False
    assert p3_verdict(50.0, 0.95)["met"] is True  # both bounds inclusive
    assert p3_verdict(60.0, None)["met"] is None and p3_verdict(40.0, None)["met"] is False
    assert p3_verdict(None, 0.99)["met"] is None


class _Parser:
    def __init__(self, content: dict) -> None:
        self.content = content

    def get_parsed_content(self, key: str):
        return self.content[key]


class _Description:
    def outputs_for(self, case: str) -> list[str]:
        return [f"{case}/{case}_seg.nii.gz"]


def _hook_context(tmp_path: Path, network, variant: str = "fp32") -> dict:
    """A tiny fake case for the hook: a head image, the two inferers, a generic record of ``variant``."""
    image = _head((40, 36, 24))
    parser = _Parser(
        {
            "patch_inferer": FaithfulPatchInferer(patch_size=(8, 8, 4), step=(4, 4, 1), batch_size=64),
            "fast_inferer": SlidingWindowInferer(roi_size=(16, 16, 8), sw_batch_size=2, overlap=0.25, mode="gaussian"),
            "threshold": 0.5,
            "dataset": Dataset([{"image": "x.nii.gz"}], transform=Compose([])),  # no symmetric transform
        }
    )
    record = {
        "weights": "untrained: fresh",
        "default_variant": variant,
        "case": {"preprocess_s": 2.0},
        "variants": {variant: {"bare_forward_median_s": 0.01, "end_to_end_median_s": 0.5}},
    }
    return {
        "parser": parser,
        "network": network,
        "item": {"image": image},
        "record": record,
        "description": _Description(),
        "case": "case1",
        "work": tmp_path,  # no end-to-end mask there: the block is centred on the head
        "quick": True,
    }


def test_bench_hook_on_a_tiny_fake_case(tmp_path: Path):
    context = _hook_context(tmp_path, _net())
    parser, image, record = context["parser"], context["item"]["image"], context["record"]
    extra = hook.bench_hook(context)
    p3 = extra["p3"]
    assert p3["faithful_seconds_extrapolated"] is True and p3["informative"] is True
    total = grid.count_faithful_patches(parser.content["patch_inferer"], image)
    assert p3["faithful_patches_total"] == total > p3["faithful_patches_measured"] > 0
    extrapolated = grid.extrapolate_seconds(p3["faithful_block_s"], p3["faithful_patches_measured"], total)
    assert p3["faithful_seconds"] <= extrapolated + 0.01  # the fixed cost is not scaled with the patches
    assert p3["value"] == pytest.approx(p3["faithful_seconds"] / 0.01, abs=0.1)  # fast: the record's bare forward
    assert p3["block"]["centre_source"].startswith("head centre")
    assert p3["dice_region"]["voxels"] > 0 and (p3["dice"] is None or 0 <= p3["dice"] <= 1)
    assert p3["met"] == p3_verdict(p3["value"], p3["dice"])["met"]
    assert extra["preprocessing_timing"]["symmetric"] is False
    assert (
        extra["anchor"]["threshold"] == hook.AIM_END_TO_END_S
        and extra["anchor"]["value_key"] in record["variants"]["fp32"]
    )
    assert extra["variants"] == {"fp32": {"p3": p3["value"]}}
    assert extra["notes"][0].startswith("P3 (faithful ÷ fast)")


def test_bench_hook_runs_the_faithful_side_in_the_default_variants_precision(tmp_path: Path):
    """A bf16 fast time is divided into a bf16 faithful time, not an fp32 one."""
    network = _net()
    autocast_seen = []
    network.register_forward_pre_hook(lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu")))
    extra = hook.bench_hook(_hook_context(tmp_path, network, "bf16"))
    assert autocast_seen and all(autocast_seen), "the faithful / fast-region runs left bf16 autocast off"
    assert extra["variants"] == {"bf16": {"p3": extra["p3"]["value"]}}
