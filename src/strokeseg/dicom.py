"""DICOM series as hospitals store them: a folder of slice files, recognised, checked and described without
loading its voxels.

A folder that holds the files of one series is one 3-D volume wherever a NIfTI file is (MONAI's ``LoadImage``
reads it with ``ITKReader``, which groups the files with ITK's GDCM series names generator). MONAI reads the
*first* series of a folder that holds several, with a warning, and reads a lone slice file as a 2-D image;
both would give a wrong prediction, so :func:`read_series_info` refuses them with one line that says what to
give instead. ITK has no single call for "the grid of a series without its pixels"; ``ImageSeriesReader``'s
``UpdateOutputInformation`` is that call, and the affine is built as MONAI's ``ITKReader`` builds it (LPS to
RAS), so the header checks and the loaded image agree on the grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from strokeseg.errors import DataError
from strokeseg.naming import nifti_stem

__all__ = [
    "DICOM_SUFFIXES",
    "DicomSeriesInfo",
    "is_dicom_file",
    "dicom_files",
    "is_dicom_folder",
    "lone_dicom_file_error",
    "read_series_info",
]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
"""File name endings taken for DICOM without reading the file (any case)."""

_PREAMBLE = 128  # a DICOM Part 10 file: 128-byte preamble, then "DICM"


@dataclass(frozen=True)
class DicomSeriesInfo:
    """The grid of one DICOM series folder as MONAI's ``ITKReader`` loads it.

    Attributes:
        path: the series folder.
        shape: the spatial shape ``(X, Y, Z)`` (a single 2-D slice has ``Z = 1``).
        affine: 4 × 4 voxel-to-world matrix in RAS millimetres.
        spacing: voxel size in millimetres along the three axes.
        uid: the series instance UID.
        files: how many files the series has.
    """

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    uid: str
    files: int


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM image file: a DICOM name ending, or ``DICM`` after the 128-byte preamble (a NIfTI
    name never is, nor a ``DICOMDIR`` index)."""
    path = Path(path)
    if not path.is_file() or nifti_stem(path.name) is not None or path.name.upper() == "DICOMDIR":
        return False
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(_PREAMBLE)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files directly inside ``folder`` (hidden files left out), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` directly holds DICOM files and no NIfTI file (a series folder, possibly of several
    series)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(nifti_stem(p.name) is not None for p in entries):
        return False
    return any(is_dicom_file(p) for p in entries)


def lone_dicom_file_error(path: str | os.PathLike) -> DataError:
    """The one-line error for a single DICOM file given where a volume is expected."""
    path = Path(path)
    return DataError(
        f"{path}: is a single DICOM file (one slice of a series); give the folder that holds the series "
        f"({path.parent}) instead"
    )


def _series_names(folder: Path):
    """ITK's series names generator over ``folder``, set up as MONAI's ``ITKReader`` sets it up."""
    import itk  # slow to import (≈ 2 s): only when a DICOM input is met

    generator = itk.GDCMSeriesFileNames.New()
    generator.SetUseSeriesDetails(True)
    generator.AddSeriesRestriction("0008|0021")  # series date, as ITKReader
    generator.SetGlobalWarningDisplay(False)
    generator.SetDirectory(str(folder))
    return generator


def read_series_info(folder: str | os.PathLike) -> DicomSeriesInfo:
    """Check that ``folder`` holds exactly one DICOM series and read its grid without its pixels.

    Args:
        folder: a folder holding the files of one DICOM series.

    Raises:
        DataError: the folder holds no DICOM file, files ITK cannot group into a series, several series (their
            UIDs are listed), or a series without a valid spacing / orientation. The message starts with the
            folder.
    """
    import itk

    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise DataError(f"{folder}: is a folder without DICOM files; give a DICOM series folder or a NIfTI file")
    generator = _series_names(folder)
    uids = [str(uid) for uid in generator.GetSeriesUIDs()]
    if not uids:
        raise DataError(f"{folder}: holds {len(files)} DICOM file(s) but ITK finds no image series in them")
    if len(uids) > 1:
        shown = ", ".join(uids[:4]) + (", …" if len(uids) > 4 else "")
        raise DataError(f"{folder}: holds {len(uids)} DICOM series ({shown}); give one series per folder")
    names = [str(name) for name in generator.GetFileNames(uids[0])]
    try:
        reader = itk.ImageSeriesReader[itk.Image[itk.F, 3]].New(FileNames=names, ImageIO=itk.GDCMImageIO.New())
        reader.UpdateOutputInformation()
        image = reader.GetOutput()
        size = tuple(int(s) for s in image.GetLargestPossibleRegion().GetSize())
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        origin = np.asarray(image.GetOrigin(), dtype=np.float64)
        direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
    except Exception as exc:  # ITK raises RuntimeError with a multi-line ITK message
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{folder}: cannot read the DICOM series {uids[0]} ({first})") from exc
    if size[2] == 1:
        raise DataError(f"{folder}: the DICOM series {uids[0]} is a single 2-D slice; a 3-D volume is expected")
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS (DICOM, ITK) to RAS (NIfTI, MONAI)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{folder}: the DICOM series {uids[0]} has no valid voxel spacing or orientation")
    return DicomSeriesInfo(
        path=folder,
        shape=(size[0], size[1], size[2]),
        affine=affine,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        uid=uids[0],
        files=len(names),
    )
