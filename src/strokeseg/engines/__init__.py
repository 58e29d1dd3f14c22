"""What MONAI's trainers and inferers do not cover: MUSCLE candidate mining and the EDD + MUSCLE inferer."""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.engines.muscle import (
    EddMuscleInferer,
    SmallCandidates,
    balanced_sample_weights,
    find_small_candidates,
    mine_muscle_samples,
    multiscale_candidate_patches,
)

__all__ = [
    "EddMuscleInferer",
    "SmallCandidates",
    "balanced_sample_weights",
    "find_small_candidates",
    "mine_muscle_samples",
    "multiscale_candidate_patches",
]

__getattr__ = lazy_submodules(__name__)
