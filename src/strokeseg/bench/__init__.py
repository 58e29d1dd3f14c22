"""``strokeseg bench``: the performance measurements of performance.md (machine peak, phantoms, evaluation, bundles).

All targets are ratios measured side by side in one run on the same machine; absolute seconds are indicative.
"""

from __future__ import annotations

from strokeseg.bench.components import bench_evaluate, bench_synth
from strokeseg.bench.machine import bf16_support, machine_info
from strokeseg.bench.peak import conv_peak, count_flops
from strokeseg.bench.runner import available_sections, resolve_sections, run_bench

__all__ = [
    "run_bench",
    "available_sections",
    "resolve_sections",
    "conv_peak",
    "count_flops",
    "bench_synth",
    "bench_evaluate",
    "machine_info",
    "bf16_support",
]
