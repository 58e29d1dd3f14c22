"""MONAI-style transforms (array + dictionary versions) the seeds need and MONAI lacks."""

from __future__ import annotations

from strokeseg.transforms.intensity import EDDNormaliseIntensity, EDDNormaliseIntensityd
from strokeseg.transforms.sampling import RandLesionPatch2D, RandLesionPatch2Dd
from strokeseg.transforms.slices import BatchedSliceInferer

__all__ = [
    "EDDNormaliseIntensity",
    "EDDNormaliseIntensityd",
    "RandLesionPatch2D",
    "RandLesionPatch2Dd",
    "BatchedSliceInferer",
]
