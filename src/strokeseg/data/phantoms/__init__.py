"""Synthetic stroke phantoms written in the on-disk layouts of the ISLES releases.

Built on the MNI ICBM152 2009a template that ships with nilearn: per case a random deformation,
1-5 lesions (core ⊂ penumbra) in one hemisphere and vascular territory, dataset-specific contrasts,
confounders, noise, 4-D perfusion series and the native grids of each release.
"""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.data.phantoms.case import CasePlan, PhantomCase, Volume, plan_cases, synthesize_case
from strokeseg.data.phantoms.difficulty import DIFFICULTIES, get_difficulty
from strokeseg.data.phantoms.grids import Grid, mirror_voxels
from strokeseg.data.phantoms.preview import write_preview
from strokeseg.data.phantoms.template import load_template
from strokeseg.data.phantoms.writer import REFERENCE_FOLDER, case_paths, synthesize_dataset, write_case, write_nifti

__all__ = [
    "synthesize_dataset",
    "synthesize_case",
    "plan_cases",
    "write_case",
    "write_nifti",
    "case_paths",
    "write_preview",
    "load_template",
    "mirror_voxels",
    "get_difficulty",
    "CasePlan",
    "PhantomCase",
    "Volume",
    "Grid",
    "DIFFICULTIES",
    "REFERENCE_FOLDER",
]

__getattr__ = lazy_submodules(__name__)
