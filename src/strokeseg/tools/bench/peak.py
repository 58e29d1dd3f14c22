"""The machine's convolution peak: GFLOP/s of one large 2-D or 3-D convolution, measured in the same run.

This is the denominator of P1 (``docs/performance.md``): a network cannot run faster than the best large convolution
of the same library on the same cores. FLOPs come from ``torch.utils.flop_counter`` (2 per multiply-add),
exactly as the networks' FLOPs do, so the ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from strokeseg.tools.bench.timing import median, time_repeats

__all__ = ["count_flops", "conv_peak", "PEAK_SHAPES"]

#: (batch, channels, spatial size) of the peak convolutions, full and quick
PEAK_SHAPES = {
    (2, False): (8, 128, 128),
    (3, False): (1, 64, 48),
    (2, True): (2, 64, 64),
    (3, True): (1, 32, 24),
}


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` as counted by :class:`torch.utils.flop_counter.FlopCounterMode`."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def conv_peak(
    spatial_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    repeats: int = 3,
    memory_formats: Sequence[str] = ("contiguous", "channels_last"),
    seed: int = 0,
) -> dict:
    """GFLOP/s of a 3 × 3 (× 3) convolution, channels → channels, on a large batch, under ``inference_mode``.

    2-D: ``(8, 128, 128, 128)`` × 128 → 128 (quick: ``(2, 64, 64, 64)``); 3-D: ``(1, 64, 48, 48, 48)`` × 64 → 64
    (quick: ``(1, 32, 24, 24, 24)``). Each memory format is timed (median of ``repeats`` after one warm-up call)
    and the fastest is the peak, so that a network run in channels-last is not compared with a slower layout.

    Args:
        spatial_dims: 2 or 3.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (weights and input in that type).
        quick: the small shapes (unit tests).
        repeats: timed calls per memory format.
        memory_formats: any of ``contiguous``, ``channels_last`` (``channels_last_3d`` for 3-D is implied).
        seed: seed of the random input and weights.

    Returns:
        ``{"spatial_dims", "dtype", "shape", "flops", "gflops", "best_memory_format", "by_memory_format":
        {format: {"seconds": [...], "median_s", "gflops"}}}``.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, or an unknown memory format.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    unknown = set(memory_formats) - {"contiguous", "channels_last"}
    if unknown or not memory_formats:
        raise ValueError(f"memory_formats must be among 'contiguous', 'channels_last', got {list(memory_formats)}.")
    batch, channels, size = PEAK_SHAPES[(spatial_dims, quick)]
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, *([size] * spatial_dims))
    conv_type = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    conv = conv_type(channels, channels, kernel_size=3, padding=1).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.05)
    conv = conv.to(dtype)
    x = torch.randn(shape, generator=generator).to(dtype)
    cl_format = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    results = {}
    with torch.inference_mode():
        flops = count_flops(conv, x)
        for fmt in memory_formats:
            layer, inp = conv, x
            if fmt == "channels_last":
                layer = conv.to(memory_format=cl_format)
                inp = x.contiguous(memory_format=cl_format)
            seconds = time_repeats(lambda layer=layer, inp=inp: layer(inp), repeats, warmup=1)
            results[fmt] = {
                "seconds": [round(s, 4) for s in seconds],
                "median_s": median(seconds),
                "gflops": round(flops / median(seconds, digits=9) / 1e9, 2),
            }
            conv = conv.to(memory_format=torch.contiguous_format)
    best = max(results, key=lambda k: results[k]["gflops"])
    return {
        "spatial_dims": spatial_dims,
        "dtype": str(dtype).removeprefix("torch."),
        "shape": list(shape),
        "out_channels": channels,
        "kernel": [3] * spatial_dims,
        "flops": flops,
        "gflops": results[best]["gflops"],
        "best_memory_format": best,
        "by_memory_format": results,
    }
