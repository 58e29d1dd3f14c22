"""What this machine computes fast: native bfloat16 (CPU flags, oneDNN's instruction-set cap) and huge pages.

The bundles' ``auto`` precision knobs (:mod:`strokeseg.runtime.precision`) and the bench's machine record both read
it. Huge pages are never turned on by importing strokeseg: the ``strokeseg`` command and each bundle config call
:func:`enable_huge_pages` (PyTorch reads its switch at the process's first CPU allocation, so it must run early).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = [
    "BF16_FLAGS",
    "HUGE_PAGES_VARIABLE",
    "bf16_support",
    "cpu_flags",
    "cpu_model",
    "enable_huge_pages",
    "huge_pages",
    "onednn_isa_cap",
    "usable_cores",
]

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


#: PyTorch's switch for transparent huge pages on CPU allocations of 2 MiB and more (c10/core/alloc_cpu.cpp)
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> bool:
    """Turn on PyTorch's transparent huge pages for large CPU buffers, unless the environment already decides.

    Sets ``THP_MEM_ALLOC_ENABLE=1`` when the variable is unset (``THP_MEM_ALLOC_ENABLE=0`` keeps it off). PyTorch
    reads it once, at the process's first CPU tensor allocation, so this must run before any tensor exists: the
    ``strokeseg`` command calls it first, and every bundle config calls it as the last of its ``imports``, which
    ``python -m monai.bundle run`` evaluates before it builds anything. The 3-D bundles' per-window buffers are
    otherwise returned to the system and faulted in again, 4 KiB page by page: the uResNet's end-to-end
    inference took 3.4–4.8 million minor page faults per run on a 2-core AMD EPYC VM, 0.16–0.28 million with
    huge pages, and 12.8–16.9 s instead of 17.4–21.2 s. Where the kernel's THP mode is ``never`` the variable
    changes nothing. Child processes inherit it.

    Returns:
        whether huge pages are on in this process's environment now.
    """
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
    return os.environ[HUGE_PAGES_VARIABLE] == "1"


def huge_pages() -> dict[str, str | None]:
    """PyTorch's huge-page switch as this process has it and the kernel's THP mode (the bracketed choice of
    ``/sys/kernel/mm/transparent_hugepage/enabled``; ``None`` where unreadable)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        mode = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        mode = None
    return {"variable": f"{HUGE_PAGES_VARIABLE}={os.environ.get(HUGE_PAGES_VARIABLE, '')}", "kernel_mode": mode}
