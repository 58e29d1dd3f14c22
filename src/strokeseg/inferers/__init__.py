"""Inferers the bundles share, one module each (import from the submodules): batched 2-D slices, valid-convolution
tiles (DeepMedic), the EDD + MUSCLE candidate cascade, the paper-faithful patch mode of the residual U-Net."""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
