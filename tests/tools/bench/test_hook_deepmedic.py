"""The DeepMedic bench hook: the reference volume through the bundle's dense inferer, per measured variant."""

from __future__ import annotations

import torch

from strokeseg.inferers.tiles import ValidTileInferer
from strokeseg.networks.deepmedic import DeepMedic
from strokeseg.tools.bench.hooks import deepmedic as hook

TINY = {"features": (4, 4, 4), "residual_layers": (3,), "fc_features": (6,), "fc_dropout": (0.0, 0.0)}


class _Parser:
    def __init__(self, inferer):
        self.inferer = inferer

    def get_parsed_content(self, key):
        assert key == "inferer"
        return self.inferer


def test_hook_times_each_variant_and_restores_the_network():
    net = DeepMedic(**TINY)
    inferer = ValidTileInferer(6 + 2 * net.margin)
    record = {"variants": {"fp32": {}, "fp32_channels_last": {}}}
    context = {
        "record": record,
        "parser": _Parser(inferer),
        "network": net,
        "quick": True,
        "seed": 0,
        "item": {"image": torch.zeros(3, 8, 8, 8)},
    }
    extra = hook.bench_hook(context)
    assert set(extra["variants"]) == {"fp32", "fp32_channels_last"}
    assert all(v["volume_quick_s"] > 0 for v in extra["variants"].values())
    assert extra["reference_volume"]["shape"] == list(hook.QUICK_SHAPE)
    assert extra["reference_volume"]["channels"] == 3 and "tile outputs" in extra["notes"][0]
    assert inferer.channels_last is False  # the bundle's inferer is not changed by the variants
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3))
    assert conv.weight.is_contiguous()  # converted back after the channels-last variant
    assert extra["anchor"]["threshold"] == round(hook.ORIGINAL_FORWARD_S / 2, 2)
    assert extra["anchor"]["value_key"] not in extra["variants"]["fp32"]  # no anchor row for the quick volume


def test_volume_seconds_gives_the_volume_shape():
    net = DeepMedic(**TINY)
    seconds, shape = hook.volume_seconds(ValidTileInferer(9 + 2 * net.margin), net, (10, 9, 7), channels=3)
    assert seconds > 0 and shape == [1, 2, 10, 9, 7]
