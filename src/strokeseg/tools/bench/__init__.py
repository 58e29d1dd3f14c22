"""``strokeseg bench``: the performance measurements (machine peak, phantoms, evaluation, bundles).

The ratios and their targets are those of ``docs/performance.md``.

Every bundle folder is measured by one generic harness (:mod:`strokeseg.tools.bench.bundle`) from its self-description;
a bundle adds a hook (:mod:`strokeseg.tools.bench.hooks`) only for a measurement the harness cannot know.

All targets are ratios measured side by side in one run on the same machine; absolute seconds are indicative.
"""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.runtime.hardware import bf16_support
from strokeseg.tools.bench.bundle import bench_bundle
from strokeseg.tools.bench.components import bench_evaluate, bench_synth
from strokeseg.tools.bench.machine import machine_info
from strokeseg.tools.bench.peak import conv_peak, count_flops
from strokeseg.tools.bench.runner import available_sections, resolve_sections, run_bench

__all__ = [
    "run_bench",
    "bench_bundle",
    "available_sections",
    "resolve_sections",
    "conv_peak",
    "count_flops",
    "bench_synth",
    "bench_evaluate",
    "machine_info",
    "bf16_support",
]

__getattr__ = lazy_submodules(__name__)
