"""Fitting of post-processing parameters on validation folds, apart from the transforms that apply them.

- :mod:`~strokeseg.metrics.curves` — THT0 / THT1 threshold fitting on validation voxels (PR and ROC
  curves, Pérez Malla et al. 2019), also the curves of ``strokeseg evaluate``'s figures.
- :mod:`~strokeseg.fitting.closing` — the iteration count of the FH closing (Pérez Malla et al. 2019).
- :mod:`~strokeseg.fitting.lesion_size` — the (T_h, S_min) grid search of Clèrigues et al. 2020.

Fitting scores candidates with the metrics of :mod:`strokeseg.metrics` and applies the transforms of
:mod:`strokeseg.postprocessing`; those two packages import neither each other nor this one (import from the
submodules: this package file imports nothing).
"""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
