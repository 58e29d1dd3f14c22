"""Bench hook of ``stroke_mri_deepmedic``: dense inference of the reference 161 × 161 × 86 volume, and the anchors.

The generic harness measures the bundle's own inference of one synthetic ISLES 2017 case (P1, P2, P4, P5). The
original DeepMedic figures of ``docs/performance.md`` are for a 3-channel volume of 161 × 161 × 86 voxels, so this hook
runs the bundle's dense inferer (``inferer`` of ``inference.json``: tiles of ``tile_size``, stride = output size)
and network over a random volume of exactly that size, once per measured variant (fp32, channels-last, bf16
where native), and reports the seconds beside the original's (indicative: measured on another machine; the model
card gives a side-by-side run of the original on the bench machine). In quick mode the volume is 40 × 40 × 30 and
the numbers only show that the hook works.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from strokeseg.tools.bench.variants import VARIANTS

__all__ = ["bench_hook", "REFERENCE_SHAPE", "ORIGINAL_FORWARD_S", "ORIGINAL_TRAIN_SEGMENTS_PER_S", "volume_seconds"]

# The original DeepMedic timed on a 2-core machine (docs/performance.md, reference timings): DeepMedic HEAD
# (TensorFlow 2.15 CPU), v0.6.1 architecture, 3 channels, 161×161×86: inference 23.7 s (forward), 28.6 s whole
# process; training 18 segments/s (batch 10 of 25³).
REFERENCE_SHAPE = (161, 161, 86)
ORIGINAL_FORWARD_S = 23.7
ORIGINAL_WHOLE_PROCESS_S = 28.6
ORIGINAL_TRAIN_SEGMENTS_PER_S = 18.0
QUICK_SHAPE = (40, 40, 30)
VOLUME_KEY = "volume_161x161x86_s"


def volume_seconds(
    inferer: Any, network: torch.nn.Module, shape: tuple[int, ...], channels: int, seed: int = 0
) -> tuple[float, list[int]]:
    """Seconds of ``inferer(volume, network)`` on one random ``(1, channels, *shape)`` volume, and the output shape.

    The network is left in the contiguous memory format afterwards (a channels-last inferer converts it).
    """
    generator = torch.Generator().manual_seed(seed)
    volume = torch.randn(1, channels, *shape, generator=generator)
    network.eval()
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            out = inferer(volume, network)
            seconds = time.perf_counter() - start
    finally:
        network.to(memory_format=torch.contiguous_format)
    return seconds, list(out.shape)


def bench_hook(context: dict[str, Any]) -> dict[str, Any]:
    """The reference volume's dense-inference seconds per measured variant, and the original's figures."""
    record, parser, network = context["record"], context["parser"], context["network"]
    quick = bool(context.get("quick"))
    shape = QUICK_SHAPE if quick else REFERENCE_SHAPE
    channels = int(context["item"]["image"].shape[0])
    base = parser.get_parsed_content("inferer")
    variants, notes = {}, []
    for name in record["variants"]:
        channels_last, bf16 = VARIANTS[name]
        inferer = copy.copy(base)
        inferer.channels_last, inferer.autocast_bf16 = channels_last, bf16
        seconds, out_shape = volume_seconds(inferer, network, shape, channels, seed=int(context.get("seed", 0)))
        variants[name] = {
            VOLUME_KEY if not quick else "volume_quick_s": round(seconds, 2),
            "volume_speedup_vs_original": None if quick else round(ORIGINAL_FORWARD_S / seconds, 2),
        }
        _, tile_outputs = inferer.geometry(network, list(shape))
        notes.append(
            f"{name}: dense inference of a {channels}-channel {'×'.join(map(str, shape))} volume in {seconds:.1f} s "
            f"(tile outputs {tile_outputs}, max_tile_voxels {inferer.max_tile_voxels}; output {out_shape[1:]})."
        )
    return {
        "reference_volume": {
            "shape": list(shape),
            "channels": channels,
            "tile_size": base.tile_size,
            "max_tile_voxels": base.max_tile_voxels,
        },
        "variants": variants,
        "notes": notes,
        "anchor": {
            "value_key": VOLUME_KEY,
            "column": "s per 161×161×86 volume",
            "description": (
                "dense inference of a 3-channel 161×161×86 volume, seconds (aim: ≥ 2× faster than the original "
                f"DeepMedic's {ORIGINAL_FORWARD_S} s on a 2-core machine; indicative: another machine)"
            ),
            "op": "<=",
            "threshold": round(ORIGINAL_FORWARD_S / 2, 2),
            "original_forward_s": ORIGINAL_FORWARD_S,
            "original_whole_process_s": ORIGINAL_WHOLE_PROCESS_S,
            "original_train_segments_per_s": ORIGINAL_TRAIN_SEGMENTS_PER_S,
            "text": (
                "Original DeepMedic (TensorFlow 2.15 CPU, v0.6.1 architecture, docs/performance.md): "
                f"{ORIGINAL_FORWARD_S} s forward for 161×161×86, {ORIGINAL_TRAIN_SEGMENTS_PER_S} training "
                "segments/s (batch 10 of 25³); another 2-core machine, indicative."
            ),
        },
    }
