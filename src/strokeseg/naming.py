"""Case names, one rule for the whole package: a NIfTI file's name without its extension (and, for prediction
or label files, without the ``_seg`` / ``_prob`` / ``_label`` tail that the writers add), a DICOM series folder's
whole name.

Datalists, stand-alone inference inputs, the evaluation's file matching, the metrics handlers and the bench
all name a case from a file with :func:`case_name`, and a datalist entry with :func:`entry_case_name`, so a case
keeps the same name from the input file to the prediction folder to the metrics table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["NIFTI_SUFFIXES", "OUTPUT_TAILS", "nifti_stem", "case_name", "entry_case_name"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def nifti_stem(name: str) -> str | None:
    """File name without its NIfTI extension (``.nii`` / ``.nii.gz``, any case), or ``None`` for other files."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


#: tails the writers append to a case name (``<case>_seg.nii.gz``, ``<case>_prob.nii.gz``) and labels carry
OUTPUT_TAILS: tuple[str, ...] = ("_seg", "_prob", "_label")


def case_name(path: str | os.PathLike, tails: Sequence[str] = ()) -> str:
    """Case name of a file: its NIfTI stem (``.nii`` / ``.nii.gz``, any case), else its plain stem; an existing
    folder (a DICOM series) keeps its whole name.

    Args:
        path: file path or name.
        tails: suffixes removed from the stem (the first that matches), e.g. :data:`OUTPUT_TAILS`.

    Example:
        >>> case_name("/data/sub-01_ses-1_dwi.nii.gz")
        'sub-01_ses-1_dwi'
        >>> case_name("sub-01_seg.nii.gz", OUTPUT_TAILS)
        'sub-01'
        >>> case_name("VSD.Brain.XX.O.MR_DWI.70613.nii")
        'VSD.Brain.XX.O.MR_DWI.70613'
    """
    name = Path(path).name
    # a folder (a DICOM series, often named by its UID "1.2.840....") keeps its whole name
    stem = nifti_stem(name) or (name if os.path.isdir(path) else Path(name).stem)
    for tail in tails:
        if stem.endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def entry_case_name(
    entry: Mapping[str, Any],
    index: int | None = None,
    key: str = "case",
    image_keys: Sequence[str] = ("image",),
    tails: Sequence[str] = (),
) -> str:
    """Case name of a datalist entry or a loaded item: its ``case`` field, else the first image file's name.

    The image may be a path, a list of paths (one per modality: the first names the case) or a MetaTensor
    whose meta holds ``filename_or_obj``; its name is :func:`case_name` of that file.

    Args:
        entry: the datalist entry (``{"image": ..., "case": ...}``) or a loaded data dictionary.
        index: position of the entry, for the fallback name ``case_<index>`` (``None``: raise instead).
        key: the field holding the case name.
        image_keys: the fields whose file names the case, tried in order (a metrics handler's
            ``("label", "pred")``).
        tails: passed to :func:`case_name` (:data:`OUTPUT_TAILS` for prediction and label files).

    Raises:
        ValueError: nothing names the case and no ``index`` was given.
    """
    value = entry.get(key)
    if isinstance(value, str) and value:
        return value
    for image_key in image_keys:
        image = entry.get(image_key)
        meta = getattr(image, "meta", None)
        source: Any = meta.get("filename_or_obj") if isinstance(meta, Mapping) else image
        if isinstance(source, (list, tuple)):
            source = source[0] if source else None
        if isinstance(source, (str, os.PathLike)) and str(source):
            return case_name(source, tails)
    if index is None:
        raise ValueError(f"the entry has no {key!r} field and no file name under {list(image_keys)}: {sorted(entry)}")
    return f"case_{index}"
