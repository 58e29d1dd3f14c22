"""What the benchmark ran on: CPU model, cores, torch threads, bf16 support, load average."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["cpu_flags", "cpu_model", "usable_cores", "bf16_support", "onednn_isa_cap", "machine_info", "load_average"]

#: instruction-set flags of /proc/cpuinfo that decide how fast convolutions can be
RELEVANT_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
#: flags that give native bfloat16 arithmetic (oneDNN uses them for bf16 convolutions)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: oneDNN's instruction-set caps (``ONEDNN_MAX_CPU_ISA``, formerly ``DNNL_MAX_CPU_ISA``) below its first bf16 one
#: (``AVX512_CORE_BF16``): under them oneDNN emulates bf16 even on a CPU with the flags (oneDNN's
#: "CPU Dispatcher Control" documentation; measured on an AMX Xeon with ``AVX2``: bf16 convolutions 9 GFLOP/s
#: against 84 in fp32)
ISA_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def _cpuinfo_field(name: str, cpuinfo: str | None = None) -> str | None:
    text = cpuinfo if cpuinfo is not None else _read_cpuinfo()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _read_cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.is_file() else ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where that file does not exist).

    Args:
        cpuinfo: text of ``/proc/cpuinfo`` (read from the system when ``None``).
    """
    flags = _cpuinfo_field("flags", cpuinfo)
    return set(flags.split()) if flags else set()


def cpu_model(cpuinfo: str | None = None) -> str:
    """CPU model name from ``/proc/cpuinfo``, else :func:`platform.processor`, else ``"unknown"``."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The instruction-set cap oneDNN obeys, as ``(variable, value)``, or ``None`` when none is set.

    ``ONEDNN_MAX_CPU_ISA`` wins over the older ``DNNL_MAX_CPU_ISA``, as in oneDNN.

    Args:
        environ: the environment (``os.environ`` when ``None``).
    """
    env = os.environ if environ is None else environ
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def bf16_support(cpuinfo: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether bfloat16 convolutions run natively on this CPU, and why (or why not).

    Native means a CPU flag of :data:`BF16_FLAGS` and no oneDNN instruction-set cap below bf16
    (:data:`ISA_CAPS_WITHOUT_BF16`); otherwise oneDNN emulates bf16 through fp32, which is slower than fp32 and
    would make a bf16 measurement meaningless.

    Args:
        cpuinfo: text of ``/proc/cpuinfo`` (read from the system when ``None``).
        environ: the environment, for oneDNN's cap (``os.environ`` when ``None``).
    """
    flags = cpu_flags(cpuinfo)
    native = sorted(flags.intersection(BF16_FLAGS))
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN (mkldnn)"
    cap = onednn_isa_cap(environ)
    if native and cap is not None and cap[1].upper() in ISA_CAPS_WITHOUT_BF16:
        return False, (
            f"CPU flags {', '.join(native)}, but {cap[0]}={cap[1]} caps oneDNN below AVX512_CORE_BF16; "
            "bf16 would be emulated through fp32"
        )
    if native:
        return True, f"CPU flags {', '.join(native)}"
    have = [f for f in ("avx512f", "avx2") if f in flags]
    return False, (
        f"the CPU has no {' / '.join(BF16_FLAGS)} flag (best vector extension: {have[0] if have else 'none'}); "
        "bf16 would be emulated through fp32"
    )


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (``None`` where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def huge_pages() -> dict[str, str | None]:
    """PyTorch's huge-page switch as this process has it and the kernel's THP mode (the bracketed choice of
    ``/sys/kernel/mm/transparent_hugepage/enabled``; ``None`` where unreadable)."""
    from strokeseg import HUGE_PAGES_VARIABLE

    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        mode = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        mode = None
    return {"variable": f"{HUGE_PAGES_VARIABLE}={os.environ.get(HUGE_PAGES_VARIABLE, '')}", "kernel_mode": mode}


def machine_info() -> dict:
    """The machine record of ``bench.json``: CPU model, cores, torch threads, bf16 support, versions, load."""
    import monai

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
