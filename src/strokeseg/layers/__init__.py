"""Building blocks the five papers need and MONAI lacks."""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.layers.pooling import MaxPoolWithIndices, MaxUnpoolWithIndices

__all__ = ["MaxPoolWithIndices", "MaxUnpoolWithIndices"]

__getattr__ = lazy_submodules(__name__)
