"""Write synthetic cases to disk in the exact layout of a real ISLES release.

Files are NIfTI-1 written with nibabel (``.nii`` for ISLES 2015-2018, ``.nii.gz`` for ISLES 2022,
compressed with a zero gzip timestamp so that the same seed gives byte-identical files). Each file is
written under a hidden temporary name in its final folder and moved into place with ``os.replace``,
so an interrupted run never leaves a truncated volume under a final name.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib

from strokeseg.atomic_io import atomic_path, write_bytes_atomic
from strokeseg.data.layouts import get_layout, isles2022_paths, isles_legacy_name
from strokeseg.data.phantoms.case import PhantomCase, Volume, plan_cases, synthesize_case
from strokeseg.data.phantoms.difficulty import get_difficulty
from strokeseg.data.phantoms.preview import write_preview
from strokeseg.errors import DataError

__all__ = ["REFERENCE_FOLDER", "MANIFEST", "synthesize_dataset", "write_case", "write_nifti", "case_paths"]

REFERENCE_FOLDER = "reference_test_labels"
MANIFEST = "phantom_dataset.json"
_FILE_ID_BASE = 70000  # ISLES-style numeric file ids: unique per (case, token) within a dataset


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) atomically and deterministically.

    Args:
        volume: data ``(I, J, K[, 1], [T])`` and its grid; ``dt_s`` sets the time zoom of series.
        path: destination; its parent is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(volume.data, volume.affine)
    header = image.header
    header.set_qform(volume.affine, code=1)
    header.set_sform(volume.affine, code=1)
    header.set_xyzt_units("mm", "sec")
    if volume.data.ndim > 3:
        zooms = list(volume.grid.spacing) + [1.0] * (volume.data.ndim - 3)
        zooms[-1] = float(volume.dt_s or 1.0)
        header.set_zooms(zooms)
    if path.name.endswith(".gz"):
        write_bytes_atomic(path, gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))
    else:
        with atomic_path(path) as tmp:
            nib.save(image, tmp)
    return path


def case_paths(case: PhantomCase, out: Path) -> dict[str, Path]:
    """Destination of every file of ``case``: one entry per volume token, ``label`` (training) or
    ``reference`` (testing), and ``phantom.json``."""
    layout = get_layout(case.plan.layout)
    paths: dict[str, Path] = {}
    if layout.bids:
        bids = isles2022_paths(out, case.plan.name)
        keys = {"dwi": "dwi", "adc": "adc", "FLAIR": "flair"}
        for token in case.volumes:
            paths[token] = bids[keys[token]]
        case_dir = out / "rawdata" / case.plan.name
        label_path = bids["label"]
    else:
        case_dir = out / case.plan.name
        tokens = list(layout.modalities) + [extra.token for extra in layout.extras] + [layout.label_token]
        for token in [*case.volumes, layout.label_token]:
            file_id = _FILE_ID_BASE + 16 * case.plan.number + tokens.index(token)
            name = isles_legacy_name(layout, token, file_id)
            paths[token] = case_dir / name[: -len(layout.suffix)] / name
        label_path = paths.pop(layout.label_token)
    if case.plan.split == "training":
        paths["label"] = label_path
    else:
        paths["reference"] = out / REFERENCE_FOLDER / f"{case.plan.name}.nii.gz"
    paths["phantom.json"] = case_dir / "phantom.json"
    return paths


def write_case(case: PhantomCase, out: str | Path) -> dict[str, Path]:
    """Write every volume, the label (training) or reference mask (testing) and ``phantom.json``."""
    out = Path(out)
    paths = case_paths(case, out)
    for token, volume in case.volumes.items():
        write_nifti(volume, paths[token])
    target = paths.get("label", paths.get("reference"))
    write_nifti(case.label, target)
    meta = dict(case.meta)
    meta["files"] = {key: str(path.relative_to(out)) for key, path in paths.items() if key != "phantom.json"}
    paths["phantom.json"].parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(paths["phantom.json"], (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return paths


def synthesize_dataset(
    layout: str,
    out: str | Path,
    cases: int = 4,
    test_cases: int = 0,
    seed: int = 0,
    difficulty: str = "standard",
    overwrite: bool = False,
    preview: bool = False,
) -> Path:
    """Write a synthetic stroke dataset in the on-disk layout of ``layout`` into ``out``.

    Training cases are numbered 1..``cases`` (with labels), test cases ``cases``+1.. (no label inside
    the layout; their reference masks go to ``<out>/reference_test_labels/<case>.nii.gz``). A manifest
    ``<out>/phantom_dataset.json`` lists cases, splits and patients.

    Args:
        layout: isles2015_siss | isles2015_spes | isles2017 | isles2018 | isles2022.
        out: output folder; must be empty or absent unless ``overwrite``.
        cases: number of training cases.
        test_cases: number of unlabelled test cases.
        seed: same seed ⇒ byte-identical files.
        difficulty: easy | standard | hard.
        overwrite: allow writing into a non-empty folder (existing files of the same names are replaced).
        preview: also write ``<out>/preview/<case>.png`` montages.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: unknown layout or difficulty, bad counts, or a non-empty ``out`` without ``overwrite``.
    """
    try:
        get_layout(layout)
    except ValueError as err:
        raise DataError(str(err)) from None
    get_difficulty(difficulty)
    plans = plan_cases(layout, int(cases), int(test_cases), int(seed))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output folder {out} is not empty; choose an empty folder or pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"layout": layout, "seed": int(seed), "difficulty": difficulty, "cases": []}
    for plan in plans:
        case = synthesize_case(layout, seed=int(seed), difficulty=difficulty, plan=plan)
        paths = write_case(case, out)
        manifest["cases"].append(
            {
                "case": plan.name,
                "split": plan.split,
                "patient": plan.patient,
                "phantom": str(paths["phantom.json"].relative_to(out)),
            }
        )
        if preview:
            write_preview(case, out / "preview" / f"{plan.name}.png")
    write_bytes_atomic(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return out
