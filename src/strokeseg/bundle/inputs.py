"""What a bundle's inference runs on: a dataset layout, a datalist, a folder of NIfTI files or one file.

Bundles call :func:`inference_cases` with their ``dataset_dir`` so the same ``inference.json`` serves a
whole ISLES tree (``--dataset_dir <root>``), one of the user's own scans (``--dataset_dir scan.nii.gz``)
or a folder of them, without editing the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from strokeseg.data.layouts import nifti_stem
from strokeseg.errors import DataError

__all__ = ["inference_cases", "case_name_from_file", "is_nifti"]


def is_nifti(path: Path) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` file names (any case)."""
    return nifti_stem(path.name) is not None


def case_name_from_file(path: Path) -> str:
    """Case name of a stand-alone NIfTI file: its name without the NIfTI extension."""
    return nifti_stem(path.name) or path.stem


def inference_cases(
    source: str | Path,
    layout: str,
    split: str = "test",
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
) -> list[dict]:
    """Cases to run inference on, as datalist entries with absolute ``image`` paths and a ``case`` name.

    Args:
        source: a NIfTI file (one single-modality case), a folder holding only NIfTI files (one case per
            file), a datalist ``.json``, or the root of an ISLES layout.
        layout: layout of ``source`` when it is a dataset root or datalist.
        split: which cases of a layout: ``test``, ``val``, ``train``, ``trainval`` or ``all``.
        fold, num_folds, seed: fold selection for ``val``/``train``.
        modalities: image channels to keep, in order (layout tokens).

    Raises:
        DataError: ``source`` does not exist or holds no case.
    """
    from strokeseg.data.datalist import cases_for

    path = Path(source)
    if not path.exists():
        raise DataError(f"inference input {path} does not exist")
    if path.is_file() and is_nifti(path):
        return [{"image": [str(path.resolve())], "case": case_name_from_file(path)}]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p))
        subdirs = [p for p in path.iterdir() if p.is_dir()]
        if files and not subdirs:
            return [{"image": [str(p.resolve())], "case": case_name_from_file(p)} for p in files]
    cases = cases_for(path, layout, split, fold, num_folds, seed, modalities)
    if not cases:
        raise DataError(f"{path}: no {split!r} case found for layout {layout} (try --infer_split all)")
    return cases
