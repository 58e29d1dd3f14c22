"""Losses MONAI does not provide as the five papers need them."""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.losses.deep_supervision import DeepSupervisionCrossEntropy, LabelMapCrossEntropy

__all__ = ["DeepSupervisionCrossEntropy", "LabelMapCrossEntropy"]

__getattr__ = lazy_submodules(__name__)
