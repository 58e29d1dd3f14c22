"""``strokeseg bench``: the performance measurements of performance.md (machine peak, phantoms, evaluation, bundles).

Every bundle folder is measured by one generic harness (:mod:`strokeseg.bench.bundle`) from its self-description;
a bundle adds a hook (:mod:`strokeseg.bench.hooks`) only for a measurement the harness cannot know.

All targets are ratios measured side by side in one run on the same machine; absolute seconds are indicative.
"""

from __future__ import annotations

from strokeseg.bench.bundle import bench_bundle
from strokeseg.bench.components import bench_evaluate, bench_synth
from strokeseg.bench.machine import bf16_support, machine_info
from strokeseg.bench.peak import conv_peak, count_flops
from strokeseg.bench.runner import available_sections, resolve_sections, run_bench

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
