"""Discovery of the cases of an ISLES tree: case folders, each case's files by modality token, its patient id
from a sidecar, and the check that its files share one grid.

The rules (folder names, file tokens, ISLES 2022 sessions and derivatives, the ISLES 2015 SPES penumbra label)
are described with the datalist they feed, in :mod:`strokeseg.data.datalist`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from strokeseg.data.headers import FileGrid, grid_text, read_grid, same_grid, shown_path
from strokeseg.data.layouts import Layout, modality_token
from strokeseg.dicom import is_dicom_file, is_dicom_folder, lone_dicom_file_error
from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM
from strokeseg.naming import nifti_stem

__all__ = [
    "DiscoveredCase",
    "subfolders",
    "case_folders",
    "discover_case",
    "check_case_grids",
    "standalone_volumes",
    "narrowed_layout",
]

_BIDS_RE = re.compile(r"^(?P<entities>.+)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$")


@dataclass
class DiscoveredCase:
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
    grid: FileGrid | None = None


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


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` in natural order (``case_2`` before ``case_10``)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name)
    )


def check_case_grids(
    case: DiscoveredCase, layout: Layout, root: Path, grid_tolerance_mm: float = GRID_TOLERANCE_MM
) -> None:
    """Read every header of ``case`` and check ``image``, label and same-grid extras share one grid.

    Args:
        case: the discovered case.
        layout: its layout (which extras must share the grid).
        root: the dataset root (paths in messages are shown relative to it).
        grid_tolerance_mm: largest difference between affine entries (mm) that still counts as one grid.

    Raises:
        DataError: a file is unreadable, or two files that must share a grid do not (both are named).
    """
    headers = [read_grid(p, case.name, root) for p in case.image]
    if case.label is not None:
        headers.append(read_grid(case.label, case.name, root))
    same_grid_keys = {e.key for e in layout.extras if e.same_grid}
    for key, path in case.extras.items():
        header = read_grid(path, case.name, root)
        if key in same_grid_keys:
            headers.append(header)
    reference = headers[0]
    for other in headers[1:]:
        if not same_grid(reference, other, grid_tolerance_mm):
            raise DataError(
                f"{case.name}: grid mismatch: {grid_text(reference, root)} vs {grid_text(other, root)}; "
                "image volumes, label and same-grid extras must share shape and affine "
                f"(±{grid_tolerance_mm} mm; --grid_tolerance_mm)"
            )
    case.grid = reference


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
            raise DataError(f"{case}: cannot read {shown_path(sidecar, root)}: {exc}") from exc
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
        names = ", ".join(shown_path(p, root) for p in paths)
        raise DataError(
            f"{case}: {len(paths)} OT files ({names}) and {len(chosen)} of them mention 'penumbra'; "
            "expected exactly one penumbra label"
        )
    return chosen[0]


def _assemble(case: DiscoveredCase, layout: Layout, found: dict[str, list[Path]], where: str, root: Path) -> None:
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
            names = ", ".join(shown_path(p, root) for p in paths)
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
    """``(case id, folder, group)`` of every case folder of an ISLES 2015-2018 root, nested containers included."""
    pattern = _case_regex(layout)
    direct = [(p.name, p, "") for p in subfolders(root) if pattern.match(p.name)]
    if direct:
        return direct
    nested = []
    for container in subfolders(root):
        nested += [
            (f"{container.name}_{p.name}", p, container.name) for p in subfolders(container) if pattern.match(p.name)
        ]
    return nested


def _discover_legacy(layout: Layout, root: Path, folder_info: tuple[str, Path, str]) -> DiscoveredCase:
    name, folder, group = folder_info
    case = DiscoveredCase(name=name, folder=folder, group=group)
    found = _legacy_volumes(folder, _known_tokens(layout))
    _assemble(case, layout, found, str(folder), root)
    case.patient = _sidecar_patient([folder], name, root)
    return case


def _bids_case_folders(layout: Layout, root: Path) -> list[tuple[str, Path, str, str | None]]:
    """``(case id, session folder, subject, session name or None)`` of every case of an ISLES 2022 root."""
    raw = root / "rawdata" if (root / "rawdata").is_dir() else root
    pattern = _case_regex(layout)
    cases = []
    for subject in subfolders(raw):
        if not pattern.match(subject.name):
            continue
        sessions = [s for s in subfolders(subject) if s.name.startswith("ses-")]
        if not sessions:
            cases.append((subject.name, subject, subject.name, None))
        for session in sessions:
            name = subject.name if len(sessions) == 1 else f"{subject.name}_{session.name}"
            cases.append((name, session, subject.name, session.name))
    return cases


def _discover_bids(layout: Layout, root: Path, info: tuple[str, Path, str, str | None]) -> DiscoveredCase:
    name, session_dir, subject, session = info
    known = _known_tokens(layout)
    label_token = {layout.label_token.lower(): layout.label_token}
    volume_tokens = {k: v for k, v in known.items() if k not in label_token}
    found = _bids_volumes([session_dir, session_dir / "dwi", session_dir / "anat"], volume_tokens)
    label_dir = root / "derivatives" / subject / session if session else root / "derivatives" / subject
    found.update(_bids_volumes([label_dir, label_dir / "anat", label_dir / "dwi"], label_token))
    case = DiscoveredCase(name=name, folder=session_dir, group=subject)
    _assemble(case, layout, found, str(session_dir), root)
    case.patient = _sidecar_patient([session_dir.parent, session_dir] if session else [session_dir], name, root)
    if case.patient is None and name != subject:
        case.patient = subject
    return case


def case_folders(layout: Layout, root: Path) -> list[tuple]:
    """Every case folder of a dataset root, in natural order, as a tuple whose first item is the case id.

    ISLES 2015-2018 roots give ``(case id, folder, group)``; ISLES 2022 (BIDS) roots give ``(case id, session
    folder, subject, session name or None)``. :func:`discover_case` takes either.
    """
    return _bids_case_folders(layout, root) if layout.bids else _legacy_case_folders(layout, root)


def discover_case(layout: Layout, root: Path, info: tuple) -> DiscoveredCase:
    """The files (and, from a sidecar or the BIDS subject, the patient) of one case found by :func:`case_folders`.

    Raises:
        DataError: a required volume is missing or found twice, or a sidecar is unreadable.
    """
    return (_discover_bids if layout.bids else _discover_legacy)(layout, root, info)


def standalone_volumes(path: Path) -> list[Path] | None:
    """The volumes of a stand-alone input, one single-modality case each, or ``None`` for anything else.

    A stand-alone input is a NIfTI file, a DICOM series folder, a folder holding only NIfTI files, or a folder
    whose sub-folders are all DICOM series folders; a dataset root or a datalist gives ``None``.

    Raises:
        DataError: ``path`` is a single DICOM file (the message asks for the folder of its series).
    """
    path = Path(path)
    if path.is_file():
        if nifti_stem(path.name) is not None:
            return [path]
        if is_dicom_file(path):
            raise lone_dicom_file_error(path)
        return None
    if not path.is_dir():
        return None
    if is_dicom_folder(path):
        return [path]
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    files = sorted((p for p in entries if p.is_file() and nifti_stem(p.name) is not None), key=lambda p: p.name)
    folders = sorted((p for p in entries if p.is_dir()), key=lambda p: _natural_key(p.name))
    if files and not folders:
        return files
    if folders and not files and all(is_dicom_folder(p) for p in folders):
        return folders
    return None


def narrowed_layout(layout: Layout, modalities: Sequence[str] | None, extras: Sequence[str] | None) -> Layout:
    """``layout`` asking only for what a bundle reads: ``modalities`` (in that order) and the ``extras`` keys.

    The other extras stay known (picked up when present) but are no longer required, so inference accepts a
    case that lacks a file the bundle does not read.

    Args:
        layout: the dataset layout.
        modalities: modality tokens read, in order (case-blind); ``None``: all of the layout's.
        extras: extra keys read; ``None``: the layout's required extras stay required.

    Raises:
        ValueError: a token is none of the layout's modalities (the message lists them).
    """
    tokens = layout.modalities
    if modalities is not None:
        by_lower = {t.lower(): t for t in layout.modalities}
        unknown = [m for m in modalities if str(m).lower() not in by_lower]
        if unknown:
            raise ValueError(f"{layout.name}: unknown modality {unknown[0]!r}; available: {', '.join(tokens)}")
        tokens = tuple(by_lower[str(m).lower()] for m in modalities)
    kept = layout.extras
    if extras is not None:
        kept = tuple(e if e.key in extras else replace(e, required=False) for e in layout.extras)
    return replace(layout, modalities=tokens, extras=kept)
