"""MONAI-style transforms (array + dictionary versions) the five papers need and MONAI lacks."""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.transforms.intensity import EDDNormaliseIntensity, EDDNormaliseIntensityd
from strokeseg.transforms.sampling import RandLesionPatch2D, RandLesionPatch2Dd

__all__ = [
    "EDDNormaliseIntensity",
    "EDDNormaliseIntensityd",
    "RandLesionPatch2D",
    "RandLesionPatch2Dd",
]

__getattr__ = lazy_submodules(__name__)
