"""Deprecated location of the slice inferer: it lives in :mod:`strokeseg.inferers.slices`.

Kept only as a re-export while :mod:`strokeseg.engines.muscle` and :mod:`strokeseg.transforms` still import it
from here; new code and bundle configs use ``strokeseg.inferers.slices.BatchedSliceInferer``.
"""

from __future__ import annotations

from strokeseg.inferers.slices import BatchedSliceInferer, brain_slices, slices_to_volume, volume_to_slices

__all__ = ["BatchedSliceInferer", "volume_to_slices", "slices_to_volume", "brain_slices"]
