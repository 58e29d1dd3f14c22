"""Building blocks the seeds need and MONAI lacks."""

from __future__ import annotations

from strokeseg.layers.pooling import MaxPoolWithIndices, MaxUnpoolWithIndices

__all__ = ["MaxPoolWithIndices", "MaxUnpoolWithIndices"]
