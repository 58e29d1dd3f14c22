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
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeseg.atomic_io import write_text_atomic
from strokeseg.data.layouts import Layout, get_layout, modality_token
from strokeseg.errors import DataError
from strokeseg.naming import nifti_stem
from strokeseg.transforms.validation import gzip_payload_size

__all__ = ["SPLITS", "build_datalist", "write_datalist", "load_datalist", "cases_for", "select_split"]

SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test", "all")

#: affine entries (mm) closer than this are the same grid
AFFINE_TOLERANCE = 1e-3

_BIDS_RE = re.compile(r"^(?P<entities>.+)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$")


@dataclass
class _Header:
    """Spatial grid of one NIfTI file, read from its header only."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


@dataclass
class _Case:
    """One discovered case before fold assignment."""

    name: str
    folder: Path
    group: str  # container folder (ISLES 2015-2018) whose cases may be slabs of one patient
    is_test: bool = False
    image: list[Path] = field(default_factory=list)
    label: Path | None = None
    label_choice: str | None = None
    extras: dict[str, Path] = field(default_factory=dict)
    patient: str | None = None
    patient_from_sidecar: bool = False
    grid: _Header | None = None


def _natural_key(text: str) -> list:
    """Sort key putting ``case_2`` before ``case_10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def _case_regex(layout: Layout) -> re.Pattern:
    """Regex matching the train and test case-folder names of ``layout`` (``{n}`` / ``{n:04d}`` = digits)."""
    alternatives = []
    for pattern in dict.fromkeys((layout.train_case_pattern, layout.test_case_pattern)):
        pieces = re.split(r"\{n(?::[^}]*)?\}", pattern)
        alternatives.append(r"\d+".join(re.escape(piece) for piece in pieces))
    return re.compile("^(?:" + "|".join(alternatives) + ")$")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name)
    )


def _display(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root when it lies inside it (keeps messages short)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------- headers


def _read_header(path: Path, case: str, root: Path) -> _Header:
    """Read the grid of a NIfTI file without loading its voxels, and check the file holds all its voxels.

    nibabel reads only the header; a truncated file is caught by comparing the file size (``.nii``) or the
    gzip trailer's uncompressed size (``.nii.gz``, falling back to a streamed decompression, still without
    building an array) with ``vox_offset + voxels × bytes per voxel``.

    Raises:
        DataError: the file is not a readable NIfTI or is shorter than its header says.
    """
    shown = _display(path, root)
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(s) for s in header.get_data_shape())
        # the loaded header's vox_offset is reset to 0 by nibabel; the array proxy keeps the file's offset
        offset = int(getattr(img.dataobj, "offset", header["vox_offset"]))
        expected = offset + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, OSError, EOFError, ...)
        raise DataError(f"{case}: cannot read {shown} as NIfTI: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image):
        raise DataError(f"{case}: {shown} is a {type(img).__name__}, not a NIfTI image")
    if str(path).lower().endswith(".gz"):
        actual = gzip_payload_size(path, expected, f"{case}: {shown}")
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            f"{case}: {shown} is truncated or corrupt: its header announces shape {shape} "
            f"({expected} bytes with the header) but the file holds {actual} bytes"
        )
    while len(shape) < 3:
        shape = (*shape, 1)
    return _Header(path=path, shape=shape, affine=affine)


def _same_grid(a: _Header, b: _Header) -> bool:
    return a.shape[:3] == b.shape[:3] and bool(np.allclose(a.affine, b.affine, rtol=0.0, atol=AFFINE_TOLERANCE))


def _grid_text(h: _Header, root: Path) -> str:
    return f"{_display(h.path, root)} (shape {h.shape[:3]}, affine {np.round(h.affine[:3], 3).tolist()})"


def _check_grids(case: _Case, layout: Layout, root: Path) -> None:
    """Read every header of ``case`` and check ``image``, label and same-grid extras share one grid.

    Raises:
        DataError: a file is unreadable, or two files that must share a grid do not (both are named).
    """
    headers = [_read_header(p, case.name, root) for p in case.image]
    if case.label is not None:
        headers.append(_read_header(case.label, case.name, root))
    same_grid = {e.key for e in layout.extras if e.same_grid}
    for key, path in case.extras.items():
        header = _read_header(path, case.name, root)
        if key in same_grid:
            headers.append(header)
    reference = headers[0]
    for other in headers[1:]:
        if not _same_grid(reference, other):
            raise DataError(
                f"{case.name}: grid mismatch: {_grid_text(reference, root)} vs {_grid_text(other, root)}; "
                f"image volumes, label and same-grid extras must share shape and affine (±{AFFINE_TOLERANCE} mm)"
            )
    case.grid = reference


# ------------------------------------------------------------------------------------------------ discovery


def _known_tokens(layout: Layout) -> dict[str, str]:
    tokens = (*layout.modalities, layout.label_token, *(e.token for e in layout.extras))
    return {t.lower(): t for t in tokens}


def _legacy_token(name: str, known: dict[str, str]) -> str | None:
    """Layout token of an ISLES 2015-2018 file or folder name, or ``None`` when it is none of the layout's."""
    token = modality_token(name)
    if token is not None and token.lower() in known:
        return known[token.lower()]
    stem = nifti_stem(name) or name
    parts = {known[p.lower()] for p in stem.split(".") if p.lower() in known}
    return parts.pop() if len(parts) == 1 else None


def _legacy_volumes(folder: Path, known: dict[str, str]) -> dict[str, list[Path]]:
    """Files of one ISLES 2015-2018 case folder, by token (a volume folder or a file directly in the case)."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folder_token = _legacy_token(entry.name, known)
            files = sorted(p for p in entry.iterdir() if p.is_file() and nifti_stem(p.name) is not None)
            for path in files:
                token = _legacy_token(path.name, known) or folder_token
                if token is not None:
                    found.setdefault(token, []).append(path)
        elif entry.is_file() and nifti_stem(entry.name) is not None:
            token = _legacy_token(entry.name, known)
            if token is not None:
                found.setdefault(token, []).append(entry)
    return found


def _bids_volumes(folders: Sequence[Path], known: dict[str, str]) -> dict[str, list[Path]]:
    """BIDS files ``*_<suffix>.nii[.gz]`` of the given folders, by layout token (suffix compared case-blind)."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            match = _BIDS_RE.match(path.name)
            if path.is_file() and match and match.group("suffix").lower() in known:
                found.setdefault(known[match.group("suffix").lower()], []).append(path)
    return found


def _sidecar_patient(folders: Sequence[Path], case: str, root: Path) -> str | None:
    """``"patient"`` of the first ``phantom.json`` found in ``folders``, if any.

    Raises:
        DataError: a ``phantom.json`` exists but is not valid JSON.
    """
    for folder in folders:
        sidecar = folder / "phantom.json"
        if not sidecar.is_file():
            continue
        try:
            content = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{case}: cannot read {_display(sidecar, root)}: {exc}") from exc
        if isinstance(content, dict) and content.get("patient") is not None:
            return str(content["patient"])
    return None


def _penumbra_label(case: str, paths: list[Path], root: Path) -> Path:
    """The one ISLES 2015 SPES ``OT`` file whose name (or folder name) mentions penumbra.

    Raises:
        DataError: none or several of them do.
    """
    chosen = [p for p in paths if "penumbra" in p.name.lower() or "penumbra" in p.parent.name.lower()]
    if len(chosen) != 1:
        names = ", ".join(_display(p, root) for p in paths)
        raise DataError(
            f"{case}: {len(paths)} OT files ({names}) and {len(chosen)} of them mention 'penumbra'; "
            "expected exactly one penumbra label"
        )
    return chosen[0]


def _assemble(case: _Case, layout: Layout, found: dict[str, list[Path]], where: str, root: Path) -> None:
    """Fill ``case`` from the files found for it, by token.

    Raises:
        DataError: two files for one volume, or a required volume missing (lists what is missing and found).
    """
    labels = found.get(layout.label_token, [])
    if len(labels) > 1 and layout.name == "isles2015_spes":
        case.label = _penumbra_label(case.name, labels, root)
        case.label_choice = case.label.name
        found = {**found, layout.label_token: [case.label]}
    for token, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(_display(p, root) for p in paths)
            raise DataError(f"{case.name}: {len(paths)} files for {token} ({names}); expected one")
    case.label = found[layout.label_token][0] if labels else None
    case.is_test = case.label is None
    missing = [t for t in layout.modalities if t not in found]
    for extra in layout.extras:
        if extra.token in found:
            case.extras[extra.key] = found[extra.token][0]
        elif extra.required and not (extra.training_only and case.is_test):
            missing.append(extra.token)
    if missing:
        present = ", ".join(sorted(found)) or "nothing"
        raise DataError(f"{case.name}: missing {', '.join(missing)} in {where}; found: {present}")
    case.image = [found[t][0] for t in layout.modalities]


def _legacy_case_folders(layout: Layout, root: Path) -> list[tuple[str, Path, str]]:
    """``(case id, folder, group)`` of every case folder of an ISLES 2015-2018 root (see module docstring)."""
    pattern = _case_regex(layout)
    direct = [(p.name, p, "") for p in _subdirs(root) if pattern.match(p.name)]
    if direct:
        return direct
    nested = []
    for container in _subdirs(root):
        nested += [
            (f"{container.name}_{p.name}", p, container.name) for p in _subdirs(container) if pattern.match(p.name)
        ]
    return nested


def _discover_legacy(layout: Layout, root: Path, folder_info: tuple[str, Path, str]) -> _Case:
    name, folder, group = folder_info
    case = _Case(name=name, folder=folder, group=group)
    found = _legacy_volumes(folder, _known_tokens(layout))
    _assemble(case, layout, found, str(folder), root)
    case.patient = _sidecar_patient([folder], name, root)
    return case


def _bids_case_folders(layout: Layout, root: Path) -> list[tuple[str, Path, str, str | None]]:
    """``(case id, session folder, subject, session name or None)`` of every case of an ISLES 2022 root."""
    raw = root / "rawdata" if (root / "rawdata").is_dir() else root
    pattern = _case_regex(layout)
    cases = []
    for subject in _subdirs(raw):
        if not pattern.match(subject.name):
            continue
        sessions = [s for s in _subdirs(subject) if s.name.startswith("ses-")]
        if not sessions:
            cases.append((subject.name, subject, subject.name, None))
        for session in sessions:
            name = subject.name if len(sessions) == 1 else f"{subject.name}_{session.name}"
            cases.append((name, session, subject.name, session.name))
    return cases


def _discover_bids(layout: Layout, root: Path, info: tuple[str, Path, str, str | None]) -> _Case:
    name, session_dir, subject, session = info
    known = _known_tokens(layout)
    label_token = {layout.label_token.lower(): layout.label_token}
    volume_tokens = {k: v for k, v in known.items() if k not in label_token}
    found = _bids_volumes([session_dir, session_dir / "dwi", session_dir / "anat"], volume_tokens)
    label_dir = root / "derivatives" / subject / session if session else root / "derivatives" / subject
    found.update(_bids_volumes([label_dir, label_dir / "anat", label_dir / "dwi"], label_token))
    case = _Case(name=name, folder=session_dir, group=subject)
    _assemble(case, layout, found, str(session_dir), root)
    case.patient = _sidecar_patient([session_dir.parent, session_dir] if session else [session_dir], name, root)
    if case.patient is None and name != subject:
        case.patient = subject
    return case


# ------------------------------------------------------------------------------------------ patients, folds


def _same_slab_patient(a: _Header, b: _Header) -> bool:
    """ISLES 2018 heuristic: slabs of one scan share in-plane shape, in-plane affine columns and x/y origin."""
    return (
        a.shape[:2] == b.shape[:2]
        and bool(np.allclose(a.affine[:3, :2], b.affine[:3, :2], rtol=0.0, atol=AFFINE_TOLERANCE))
        and bool(np.allclose(a.affine[:2, 3], b.affine[:2, 3], rtol=0.0, atol=AFFINE_TOLERANCE))
    )


def _assign_patients(cases: list[_Case], layout: Layout) -> None:
    """Set ``case.patient`` where the sidecar did not (see module docstring)."""
    previous: _Case | None = None
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
    layout: str, root: str | Path, folds: int = 5, seed: int = 0, allow_incomplete: bool = False
) -> dict:
    """Discover every case of an ISLES tree and return its decathlon-style datalist with per-patient folds.

    Args:
        layout: layout name (``isles2015_siss``, ``isles2015_spes``, ``isles2017``, ``isles2018``, ``isles2022``).
        root: dataset root as downloaded (or as written by ``strokeseg synth``).
        folds: number of cross-validation folds K (``<= 1``: every training case is in fold 0).
        seed: seed of the per-patient fold shuffle.
        allow_incomplete: skip (with a warning, and a ``"skipped"`` record) cases that are incomplete or
            broken instead of raising.

    Returns:
        ``{"layout", "modalities", "extras", "num_folds", "seed", "training", "testing", "skipped"}``; the
        entries hold absolute path strings, ``image`` in the layout's modality order.

    Raises:
        ValueError: unknown layout or negative ``folds``.
        DataError: missing root, no case folder, or (unless ``allow_incomplete``) a bad case: missing or
            duplicated volume, unreadable / truncated NIfTI, grids that differ inside the case.
    """
    spec = get_layout(layout)
    if folds < 0:
        raise ValueError(f"folds must be >= 0, got {folds}")
    num_folds = max(int(folds), 1)
    root = Path(os.path.normpath(Path(root).absolute()))
    if not root.is_dir():
        raise DataError(f"{layout}: dataset root {root} does not exist or is not a folder")
    infos = _bids_case_folders(spec, root) if spec.bids else _legacy_case_folders(spec, root)
    discover = partial(_discover_bids if spec.bids else _discover_legacy, spec, root)
    if not infos:
        example = spec.train_case_pattern.replace("{n:04d}", "0001").replace("{n}", "1")
        seen = ", ".join(p.name for p in _subdirs(root)) or "nothing"
        where = f"{root}/rawdata" if spec.bids and (root / "rawdata").is_dir() else str(root)
        raise DataError(f"{layout}: no case folder (like {example!r}) in {where}; found: {seen}")

    cases: list[_Case] = []
    skipped: list[dict] = []
    for info in infos:
        try:
            case = discover(info)
            _check_grids(case, spec, root)
        except DataError as exc:
            if not allow_incomplete:
                raise
            warnings.warn(f"skipping case {info[0]}: {exc}", stacklevel=2)
            skipped.append({"case": info[0], "reason": str(exc)})
            continue
        cases.append(case)
    if not cases:
        raise DataError(f"{layout}: none of the {len(infos)} cases in {root} is complete ({len(skipped)} skipped)")

    _assign_patients(cases, spec)
    sizes: dict[str, int] = {}
    for case in cases:
        if not case.is_test:
            sizes[case.patient] = sizes.get(case.patient, 0) + 1
    patient_fold = _assign_folds(sizes, num_folds, seed)
    if 0 < len(sizes) < num_folds:
        warnings.warn(
            f"{layout}: {len(sizes)} training patients for {num_folds} folds; some folds are empty", stacklevel=2
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
        data = build_datalist(layout, source, folds=num_folds, seed=seed)

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
