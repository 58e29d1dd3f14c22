"""strokeseg: five published stroke-lesion segmentation methods as MONAI bundles.

Importing strokeseg turns on PyTorch's transparent huge pages for large CPU buffers
(``THP_MEM_ALLOC_ENABLE=1``) unless the environment already sets that variable (``THP_MEM_ALLOC_ENABLE=0``
keeps it off). PyTorch reads it once, at the process's first CPU tensor allocation, which in
``python -m monai.bundle run`` comes after the bundle's ``imports`` (they name ``strokeseg`` first of our
modules). The 3-D bundles' per-window buffers are otherwise returned to the system and faulted in again, 4 KiB
page by page: the uResNet's end-to-end inference took 3.4–4.8 million minor page faults per run on a 2-core
AMD EPYC VM, 0.16–0.28 million with huge pages, and 12.8–16.9 s instead of 17.4–21.2 s (README, Performance).
Where the kernel's THP mode is ``never`` the variable changes nothing. Child processes inherit it.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"
__all__ = ["__version__", "HUGE_PAGES_VARIABLE"]

#: PyTorch's switch for transparent huge pages on CPU allocations of 2 MiB and more (c10/core/alloc_cpu.cpp)
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
_os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
