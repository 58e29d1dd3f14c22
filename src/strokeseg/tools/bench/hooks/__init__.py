"""Bench hooks: one module per bundle that needs a measurement the generic harness cannot know.

A bundle names its hook in the ``bench_hook`` field of its description; the module defines
``bench_hook(context) -> dict`` (see :func:`strokeseg.tools.bench.bundle.run_hook` for the context and the merge).
A hook whose measurement is large keeps it in modules of its own beside it (``uresnet_focal``: ``uresnet_p3`` and
``faithful_patch_grid``); those define no ``bench_hook``.
"""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
