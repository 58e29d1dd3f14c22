"""What the benchmark ran on: CPU model, cores, torch threads, bf16 support, huge pages, load average."""

from __future__ import annotations

import os
import platform

import monai
import torch

from strokeseg.runtime.hardware import (
    RELEVANT_FLAGS,
    bf16_support,
    cpu_flags,
    cpu_model,
    huge_pages,
    onednn_isa_cap,
    usable_cores,
)

__all__ = ["machine_info", "load_average"]


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (``None`` where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """The machine record of ``bench.json``: CPU model, cores, torch threads, bf16 support, versions, load."""
    supported, reason = bf16_support()
    torch_check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    flags = cpu_flags()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(flags.intersection(RELEVANT_FLAGS)),
        "bf16_supported": supported,
        "bf16_reason": reason,
        "torch_mkldnn_bf16_check": bool(torch_check()) if torch_check is not None else None,
        # the vector code ATen dispatches to (ATEN_CPU_CAPABILITY can lower it) and oneDNN's cap, if any
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa_cap": "=".join(cap) if (cap := onednn_isa_cap()) else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "load_average": load_average(),
        "huge_pages": huge_pages(),
    }
