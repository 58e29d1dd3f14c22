"""Finding and reading the files of ``strokeseg evaluate``: predictions and references matched by case.

Predictions (``pred`` folder), per case: ``<case>/<case>_seg.nii[.gz]``, ``<case>_seg.nii[.gz]`` or
``<case>.nii[.gz]``, optionally with a soft map ``<case>_prob.nii[.gz]`` beside it (a case with only a
``_prob`` file is evaluated from it). References: a folder of ``<case>.nii[.gz]`` or
``<case>_label.nii[.gz]``, another prediction folder (``<case>/<case>_seg.nii[.gz]`` or ``<case>_seg.nii[.gz]``:
two runs compared, e.g. ``--inference_precision bf16`` against ``fp32``), or a decathlon-style datalist JSON
whose ``training``/``validation``/``testing`` entries carry ``case`` and ``label`` (paths relative to the JSON's
folder).

Nothing is resampled: a prediction on another grid than its reference is an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM, affines_match, grid_tolerance
from strokeseg.naming import NIFTI_SUFFIXES, OUTPUT_TAILS, case_name, nifti_stem

__all__ = [
    "PredictionFiles",
    "Volume",
    "find_predictions",
    "find_labels",
    "load_volume",
    "check_same_grid",
]


@dataclass(frozen=True)
class PredictionFiles:
    """The files of one predicted case: the mask (or ``None``) and the soft map (or ``None``)."""

    seg: Path | None
    prob: Path | None


@dataclass(frozen=True)
class Volume:
    """A spatial array with its grid: ``data`` ``(H, W[, D])``, 4 × 4 ``affine``, ``spacing`` in mm."""

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    path: Path


def _nifti_stem(name: str) -> str | None:
    """NIfTI stem of a visible file (hidden ``.partial-*`` files of an unfinished write are not cases)."""
    return None if name.startswith(".") else nifti_stem(name)


def _add(found: dict[str, dict[str, Path]], case: str, kind: str, path: Path) -> None:
    slot = found.setdefault(case, {})
    if kind in slot:
        raise DataError(f"case {case}: two {kind} predictions, {slot[kind]} and {path}; keep one.")
    slot[kind] = path


def find_predictions(folder: str | Path) -> dict[str, PredictionFiles]:
    """Predictions in ``folder`` by case name (see the module docstring for the accepted names).

    Raises:
        DataError: the folder does not exist, holds no prediction, or a case has two masks or two soft maps.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"prediction folder {folder} does not exist.")
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            for suffix in NIFTI_SUFFIXES:
                for kind in ("seg", "prob"):
                    candidate = entry / f"{entry.name}_{kind}{suffix}"
                    if candidate.is_file():
                        _add(found, entry.name, kind, candidate)
            continue
        stem = _nifti_stem(entry.name)
        if stem is None:
            continue
        kind = "prob" if stem.endswith("_prob") else "seg"
        _add(found, case_name(entry, OUTPUT_TAILS), kind, entry)
    if not found:
        raise DataError(
            f"no prediction found in {folder}: expected <case>/<case>_seg.nii.gz, <case>_seg.nii.gz or <case>.nii.gz."
        )
    return {case: PredictionFiles(seg=f.get("seg"), prob=f.get("prob")) for case, f in sorted(found.items())}


def _labels_from_datalist(path: Path) -> dict[str, Path]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"datalist {path} cannot be read as JSON: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"datalist {path} must be a JSON object with 'training'/'testing' lists.")
    labels: dict[str, Path] = {}
    for section in ("training", "validation", "testing"):
        for index, entry in enumerate(data.get(section) or []):
            if not isinstance(entry, dict) or not entry.get("label"):
                continue  # unlabelled (test) cases have nothing to compare with
            if "case" not in entry:
                raise DataError(f"datalist {path}: {section}[{index}] has a label but no 'case' name.")
            label = Path(entry["label"])
            label = label if label.is_absolute() else path.parent / label
            case = str(entry["case"])
            if case in labels and labels[case] != label:
                raise DataError(f"datalist {path}: case {case} has two labels, {labels[case]} and {label}.")
            labels[case] = label
    if not labels:
        raise DataError(f"datalist {path} has no entry with a 'label'.")
    return labels


def find_labels(source: str | Path) -> dict[str, Path]:
    """Reference masks by case name from a folder or a datalist JSON.

    Raises:
        DataError: missing source, no label found, or two labels for one case.
    """
    source = Path(source)
    if source.is_file() and source.suffix == ".json":
        return dict(sorted(_labels_from_datalist(source).items()))
    if not source.is_dir():
        raise DataError(f"labels {source} is neither a folder nor a datalist .json file.")
    labels: dict[str, Path] = {}
    for entry in sorted(source.iterdir()):
        if entry.is_dir():  # another run's predictions, <case>/<case>_seg.nii[.gz]: compare two runs
            masks = [entry / f"{entry.name}_seg{suffix}" for suffix in NIFTI_SUFFIXES]
            masks = [m for m in masks if m.is_file()]
            if len(masks) > 1:
                raise DataError(f"case {entry.name}: two label files, {masks[0]} and {masks[1]}.")
            if masks:
                labels[entry.name] = masks[0]
            continue
        stem = _nifti_stem(entry.name) if entry.is_file() else None
        if stem is None or stem.endswith("_prob"):
            continue
        case = case_name(entry, OUTPUT_TAILS)
        if case in labels:
            raise DataError(f"case {case}: two label files, {labels[case]} and {entry}.")
        labels[case] = entry
    if not labels:
        raise DataError(f"no label file (<case>.nii.gz, <case>_label.nii.gz or <case>/<case>_seg.nii.gz) in {source}.")
    return labels


def load_volume(path: str | Path) -> Volume:
    """Read a 2-D/3-D NIfTI with nibabel (no float64 up-cast of integer masks).

    4-D/5-D files with a trailing channel axis are accepted: a singleton channel is squeezed, a 2-channel
    map gives its channel 1 (the foreground of a 2-class softmax/one-hot).

    Raises:
        DataError: the file is missing, unreadable, or not a single 2-D/3-D volume (names the file).
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for a damaged or foreign file
        raise DataError(f"cannot read {path}: {err}") from err
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector convention (X, Y, Z, 1, C)
        data = data[:, :, :, 0]
    if data.ndim == 4 and data.shape[-1] in (1, 2):
        data = data[..., data.shape[-1] - 1]
    if data.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2-D or 3-D volume, got shape {data.shape}.")
    zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    if any(not math.isfinite(z) or z <= 0 for z in zooms):
        raise DataError(f"{path}: invalid voxel size {zooms} in the header.")
    return Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), spacing=zooms, path=path)


def check_same_grid(a: Volume, b: Volume, tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    """Raise when the two volumes do not share one grid (:func:`strokeseg.grids.affines_match`).

    Args:
        a, b: the volumes (a prediction and its reference).
        tolerance_mm: largest accepted difference between affine entries, in mm (``--grid_tolerance_mm``).

    Raises:
        DataError: the shapes differ, or the affines differ by more than ``tolerance_mm`` (both files named).
        KnobError: ``tolerance_mm`` is not a number >= 0.
    """
    if a.data.shape != b.data.shape:
        raise DataError(
            f"grid mismatch: {a.path} has shape {a.data.shape} but {b.path} has {b.data.shape}; resample first."
        )
    if not affines_match(a.affine, b.affine, tolerance_mm):
        worst = float(np.abs(a.affine - b.affine).max())
        raise DataError(
            f"grid mismatch: affines of {a.path} and {b.path} differ by up to {worst:.4g} mm "
            f"(tolerance {grid_tolerance(tolerance_mm):g} mm, --grid_tolerance_mm); resample first."
        )
