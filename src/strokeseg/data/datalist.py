"""Discovery of ISLES dataset trees and the MONAI decathlon-style datalists built from them.

A datalist is the dictionary (and JSON file) every bundle reads its cases from::

    {"layout": "isles2018", "modalities": ["CT", "CT_CBF", ...], "extras": ["perfusion_4d", "dwi"],
     "num_folds": 5, "seed": 0,
     "training": [{"case": "case_1", "patient": "case_1", "fold": 3, "image": [...], "label": "...",
                   "perfusion_4d": "...", "dwi": "..."}, ...],
     "testing": [{"case": "case_95", "patient": "case_95", "image": [...], "perfusion_4d": "..."}, ...],
     "skipped": [{"case": ..., "reason": ...}]}

Discovery rules (see :mod:`strokeseg.data.layouts` for what each layout holds):

* ISLES 2015-2018: case folders match the layout's case pattern (``12``, ``training_12``, ``test_12``,
  ``case_12``); anything else in the root (``preview/``, ``reference_test_labels/``, a datalist) is
  ignored. If the root holds no case folder but its sub-folders do (a ``Training/`` and a ``Testing/``
  download side by side, whose case numbers overlap), every such sub-folder is scanned and its name is
  prepended to the case id (``Testing_12``). Inside a case, a volume is a file ``*.nii`` / ``*.nii.gz``
  in a folder named like its stem, or directly in the case folder; it is identified by its modality token
  (:func:`strokeseg.data.layouts.modality_token`), never by prefix or numeric id. When that parser finds
  no known token, a dot-separated part of the name equal to a known token is used instead (so
  ``VSD.Brain_1more.XX.XX.OT.penumbra.70618.nii`` is an ``OT`` file).
* ISLES 2022 (BIDS): subject folders ``sub-strokecaseNNNN`` in ``<root>/rawdata`` (or ``<root>``),
  session folders ``ses-*`` (a subject with several sessions gives one case per session, named
  ``<subject>_<session>``, grouped as one patient), volumes ``*_dwi``, ``*_adc``, ``*_FLAIR`` (any case)
  in the session folder or its ``dwi/`` / ``anat/`` sub-folders, masks ``*_msk`` under
  ``<root>/derivatives/<subject>/<session>/[anat/|dwi/]``.
* A case without a label is a test case. A case lacking a required volume, holding two files for one
  volume, holding an unreadable NIfTI or whose ``image`` volumes, label and same-grid extras disagree in
  shape (first three dimensions) or affine (by more than 1e-3 mm) raises :class:`DataError`; with
  ``allow_incomplete=True`` it is skipped with a warning and listed under ``"skipped"``.
* ISLES 2015 SPES: when a case holds several ``OT`` files, the one whose name mentions "penumbra" is
  the label and the entry records it under ``"label_choice"``.

Patients and folds. Folds are drawn per patient so that no patient is on both sides of a split. The
patient of a case is, in this order: the ``"patient"`` field of a ``phantom.json`` in the case folder
(written by the synthetic generator); the BIDS subject for multi-session ISLES 2022 data; for ISLES 2018
(whose release splits a patient's CT scan into several slabs, numbered consecutively, without a patient
id) consecutive cases of the same split whose first ``image`` volume shares the in-plane shape, the two
in-plane affine columns and the x/y origin (all within 1e-3) are taken as slabs of one patient, named
after the first slab. The heuristic can merge two patients scanned with an identical in-plane geometry
(the safe direction: it never splits a patient). Otherwise each case is its own patient.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from strokeseg.atomic_io import write_text_atomic
from strokeseg.data.discovery import DiscoveredCase, case_folders, check_case_grids, discover_case, subfolders
from strokeseg.data.headers import AFFINE_TOLERANCE, FileGrid
from strokeseg.data.layouts import Layout, get_layout
from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM

__all__ = ["SPLITS", "build_datalist", "write_datalist", "load_datalist", "cases_for", "select_split"]

SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test", "all")


# ------------------------------------------------------------------------------------------ patients, folds


def _same_slab_patient(a: FileGrid, b: FileGrid) -> bool:
    """ISLES 2018 heuristic: slabs of one scan share in-plane shape, in-plane affine columns and x/y origin."""
    return (
        a.shape[:2] == b.shape[:2]
        and bool(np.allclose(a.affine[:3, :2], b.affine[:3, :2], rtol=0.0, atol=AFFINE_TOLERANCE))
        and bool(np.allclose(a.affine[:2, 3], b.affine[:2, 3], rtol=0.0, atol=AFFINE_TOLERANCE))
    )


def _assign_patients(cases: list[DiscoveredCase], layout: Layout) -> None:
    """Set ``case.patient`` where the sidecar did not (see module docstring)."""
    previous: DiscoveredCase | None = None
    for case in cases:
        case.patient_from_sidecar = case.patient is not None
        if case.patient is None:
            case.patient = case.name
            if (
                layout.name == "isles2018"
                and previous is not None
                and not previous.patient_from_sidecar
                and previous.group == case.group
                and previous.is_test == case.is_test
                and _same_slab_patient(previous.grid, case.grid)
            ):
                case.patient = previous.patient
        previous = case


def _assign_folds(patient_sizes: dict[str, int], num_folds: int, seed: int) -> dict[str, int]:
    """Fold of each patient: seeded shuffle, then the largest patients first into the least filled fold.

    Written here because MONAI's ``partition_dataset`` / ``CrossValidation`` split items, not groups of
    items, and cannot balance folds by the number of cases (slabs) per patient.
    """
    patients = list(patient_sizes)
    order = [patients[i] for i in np.random.RandomState(seed).permutation(len(patients))]
    order.sort(key=lambda p: -patient_sizes[p])  # stable: equal sizes keep the shuffled order
    load = [0] * num_folds
    folds = {}
    for patient in order:
        fold = int(np.argmin(load))
        folds[patient] = fold
        load[fold] += patient_sizes[patient]
    return folds


# ------------------------------------------------------------------------------------------------ public API


def build_datalist(
    layout: str | Layout,
    root: str | Path,
    folds: int = 5,
    seed: int = 0,
    allow_incomplete: bool = False,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> dict:
    """Discover every case of an ISLES tree and return its decathlon-style datalist with per-patient folds.

    Args:
        layout: layout name (``isles2015_siss``, ``isles2015_spes``, ``isles2017``, ``isles2018``, ``isles2022``)
            or a :class:`~strokeseg.data.layouts.Layout` (e.g. one narrowed to what a bundle reads,
            :func:`strokeseg.data.discovery.narrowed_layout`).
        root: dataset root as downloaded (or as written by ``strokeseg synth``).
        folds: number of cross-validation folds K (``<= 1``: every training case is in fold 0).
        seed: seed of the per-patient fold shuffle.
        allow_incomplete: skip (with a warning, and a ``"skipped"`` record) cases that are incomplete or
            broken instead of raising.
        grid_tolerance_mm: largest difference between affine entries (mm) of one case's files.

    Returns:
        ``{"layout", "modalities", "extras", "num_folds", "seed", "training", "testing", "skipped"}``; the
        entries hold absolute path strings, ``image`` in the layout's modality order.

    Raises:
        ValueError: unknown layout or negative ``folds``.
        DataError: missing root, no case folder, or (unless ``allow_incomplete``) a bad case: missing or
            duplicated volume, unreadable / truncated NIfTI, grids that differ inside the case.
    """
    spec = layout if isinstance(layout, Layout) else get_layout(layout)
    if folds < 0:
        raise ValueError(f"folds must be >= 0, got {folds}")
    num_folds = max(int(folds), 1)
    root = Path(os.path.normpath(Path(root).absolute()))
    if not root.is_dir():
        raise DataError(f"{spec.name}: dataset root {root} does not exist or is not a folder")
    infos = case_folders(spec, root)
    if not infos:
        example = spec.train_case_pattern.replace("{n:04d}", "0001").replace("{n}", "1")
        seen = ", ".join(p.name for p in subfolders(root)) or "nothing"
        where = f"{root}/rawdata" if spec.bids and (root / "rawdata").is_dir() else str(root)
        raise DataError(f"{spec.name}: no case folder (like {example!r}) in {where}; found: {seen}")

    cases: list[DiscoveredCase] = []
    skipped: list[dict] = []
    for info in infos:
        try:
            case = discover_case(spec, root, info)
            check_case_grids(case, spec, root, grid_tolerance_mm)
        except DataError as exc:
            if not allow_incomplete:
                raise
            warnings.warn(f"skipping case {info[0]}: {exc}", stacklevel=2)
            skipped.append({"case": info[0], "reason": str(exc)})
            continue
        cases.append(case)
    if not cases:
        raise DataError(f"{spec.name}: none of the {len(infos)} cases in {root} is complete ({len(skipped)} skipped)")

    _assign_patients(cases, spec)
    sizes: dict[str, int] = {}
    for case in cases:
        if not case.is_test:
            sizes[case.patient] = sizes.get(case.patient, 0) + 1
    patient_fold = _assign_folds(sizes, num_folds, seed)
    if 0 < len(sizes) < num_folds:
        warnings.warn(
            f"{spec.name}: {len(sizes)} training patients for {num_folds} folds; some folds are empty", stacklevel=2
        )

    training, testing = [], []
    for case in cases:
        entry: dict = {"case": case.name, "patient": case.patient}
        if not case.is_test:
            entry["fold"] = patient_fold[case.patient]
        entry["image"] = [str(p) for p in case.image]
        if case.label is not None:
            entry["label"] = str(case.label)
        if case.label_choice is not None:
            entry["label_choice"] = case.label_choice
        entry.update({key: str(path) for key, path in case.extras.items()})
        (testing if case.is_test else training).append(entry)
    return {
        "layout": spec.name,
        "modalities": list(spec.modalities),
        "extras": [e.key for e in spec.extras],
        "num_folds": num_folds,
        "seed": int(seed),
        "training": training,
        "testing": testing,
        "skipped": skipped,
    }


def _path_keys(data: dict) -> tuple[str, ...]:
    return ("image", "label", *data.get("extras", ()))


def _map_paths(data: dict, convert) -> dict:
    """Copy of ``data`` with ``convert`` applied to every path of every training / testing entry."""
    keys = _path_keys(data)
    out = dict(data)
    for split in ("training", "testing"):
        entries = []
        for entry in data.get(split, []):
            entry = dict(entry)
            for key in keys:
                if key not in entry:
                    continue
                value = entry[key]
                entry[key] = [convert(v) for v in value] if isinstance(value, list) else convert(value)
            entries.append(entry)
        out[split] = entries
    return out


def write_datalist(data: dict, out: str | Path) -> Path:
    """Write ``data`` as JSON (indent 4) with its paths relative to the JSON file's folder, atomically.

    Relative paths keep machine-specific prefixes out of the file and are what
    ``monai.data.load_decathlon_datalist`` resolves (against the file's folder).

    Args:
        data: a datalist as returned by :func:`build_datalist` (absolute paths).
        out: JSON file to write; its folder is created if needed.

    Returns:
        The path of the written file.
    """
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    base = str(out.parent)
    relative = _map_paths(data, lambda p: Path(os.path.relpath(str(p), base)).as_posix())
    return write_text_atomic(out, json.dumps(relative, indent=4) + "\n")


def load_datalist(path: str | Path) -> dict:
    """Read a datalist JSON and make its paths absolute (relative ones are taken from the file's folder).

    Raises:
        DataError: the file is missing, not JSON, or lacks ``training`` / ``testing`` lists.
    """
    path = Path(path).absolute()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"datalist {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"datalist {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("training", "testing")):
        raise DataError(f"datalist {path}: expected a JSON object with 'training' and 'testing' lists")
    base = str(path.parent)
    return _map_paths(data, lambda p: os.path.normpath(os.path.join(base, p)))


def _select_modalities(entries: list[dict], available: list[str], wanted: Sequence[str], layout: str) -> list[dict]:
    """Restrict and reorder each entry's ``image`` list to ``wanted`` tokens.

    Raises:
        ValueError: a token is not one of the layout's modalities (the message lists them).
    """
    if isinstance(wanted, str):
        wanted = [wanted]
    index = []
    for token in wanted:
        if token in available:
            index.append(available.index(token))
            continue
        folded = [i for i, t in enumerate(available) if t.lower() == str(token).lower()]
        if len(folded) != 1:
            raise ValueError(f"{layout}: unknown modality {token!r}; available: {', '.join(available)}")
        index.append(folded[0])
    if not index:
        raise ValueError(f"{layout}: empty modality selection; available: {', '.join(available)}")
    return [{**e, "image": [e["image"][i] for i in index]} for e in entries]


def cases_for(
    source: str | Path,
    layout: str,
    split: str = "train",
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> list[dict]:
    """Cases of one split, as bundle configs ask for them (``$strokeseg.data.datalist.cases_for(...)``).

    Args:
        source: a dataset root (discovered now, strictly) or a datalist ``.json`` (its folds are used as
            written; ``seed`` is then ignored).
        layout: layout name; must match the datalist's.
        split: ``train`` (training cases outside ``fold``), ``val`` (inside ``fold``), ``trainval`` (all
            training), ``test`` (unlabelled cases) or ``all`` (training then testing). With
            ``num_folds <= 1``, ``train`` and ``val`` are all training cases.
        fold: validation fold, ``0 <= fold < num_folds``.
        num_folds: number of folds K.
        seed: fold shuffle seed (dataset roots only).
        modalities: tokens the ``image`` list keeps, in this order (default: all, in layout order).
        grid_tolerance_mm: largest difference between affine entries (mm) of one case's files (dataset roots).

    Returns:
        Entries (dicts, absolute path strings), in datalist order: same inputs, same list.

    Raises:
        ValueError: unknown split or modality, fold out of range.
        DataError: the datalist does not match ``layout`` / ``num_folds``, or discovery fails.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    if num_folds > 1 and not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    source = Path(source)
    if source.is_file() or source.suffix.lower() == ".json":
        data = load_datalist(source)
        if data.get("layout") != layout:
            raise DataError(f"datalist {source} is for layout {data.get('layout')!r}, not {layout!r}")
        if num_folds > 1 and data.get("num_folds") != num_folds:
            raise DataError(
                f"datalist {source} has {data.get('num_folds')} folds but num_folds={num_folds} was requested; "
                f"rebuild it with `strokeseg datalist {layout} ROOT --folds {num_folds}`"
            )
    else:
        data = build_datalist(layout, source, folds=num_folds, seed=seed, grid_tolerance_mm=grid_tolerance_mm)

    return select_split(data, split, fold, num_folds, modalities)


def select_split(
    data: dict, split: str, fold: int = 0, num_folds: int = 5, modalities: Sequence[str] | None = None
) -> list[dict]:
    """Entries of one split of a datalist dict (see :func:`cases_for` for the meaning of the arguments).

    Raises:
        ValueError: unknown split or modality.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    layout = data.get("layout", "?")
    training, testing = data["training"], data["testing"]
    if split in ("train", "val") and num_folds <= 1 or split == "trainval":
        entries = training
    elif split == "train":
        entries = [e for e in training if e["fold"] != fold]
    elif split == "val":
        entries = [e for e in training if e["fold"] == fold]
    elif split == "test":
        entries = testing
    else:
        entries = training + testing
    entries = [dict(e, image=list(e["image"])) for e in entries]
    if modalities is not None:
        entries = _select_modalities(entries, list(data["modalities"]), modalities, layout)
    return entries
