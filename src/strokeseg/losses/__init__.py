"""Losses MONAI does not provide as the seeds need them."""

from __future__ import annotations

from strokeseg.losses.deep_supervision import DeepSupervisionCrossEntropy, LabelMapCrossEntropy

__all__ = ["DeepSupervisionCrossEntropy", "LabelMapCrossEntropy"]
