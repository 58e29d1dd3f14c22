"""DICOM series written from a volume with ITK, one file per slice, as a scanner exports them (test helper).

ITK's ``ImageSeriesWriter`` does not write the slice positions of a 3-D image it is given, so each slice is
written as a 2-D image with the tags a reader needs (position, orientation, spacing, series UID).
"""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np

__all__ = ["write_dicom_series", "write_nifti_as_dicom"]

_ROOT_UID = "1.2.826.0.1.3680043.2.1125.7"


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    series: int = 1,
    prefix: str = "IM",
) -> Path:
    """Write ``volume`` ``(X, Y, Z)`` on the RAS grid ``affine`` as an int16 DICOM series in ``folder``.

    Args:
        volume: voxel values (rounded to int16).
        affine: 4 × 4 RAS voxel-to-world matrix (as nibabel / MONAI use).
        folder: created if needed; the files are ``<prefix><k>.dcm``.
        series: distinguishes the series UID (two calls with different values give two series).
        prefix: file name prefix (two series in one folder need different ones).
    """
    import itk

    # GDCM's writer leaves the process in the "C" locale (ASCII as Python's default text encoding), which would
    # break every later open() of a UTF-8 file in this test process: put the locale back afterwards
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_slices(itk, volume, affine, folder, series, prefix)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(itk, volume: np.ndarray, affine: np.ndarray, folder: Path, series: int, prefix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    values = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    series_uid = f"{_ROOT_UID}.{series}"
    for k in range(values.shape[2]):
        image = itk.image_from_array(np.ascontiguousarray(values[:, :, k].T))  # ITK arrays are (Y, X)
        image.SetSpacing([float(spacing[0]), float(spacing[1])])
        position = lps[:3, 3] + lps[:3, 2] * k
        tags = image.GetMetaDataDictionary()
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": f"{_ROOT_UID}.{series}0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])),
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }.items():
            tags[tag] = value
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        itk.imwrite(image, str(folder / f"{prefix}{k:04d}.dcm"), imageio=io)
    return folder


def write_nifti_as_dicom(nifti: Path, folder: Path, scale: float | None = None) -> Path:
    """Write a 3-D NIfTI file as a DICOM series on its grid; values scaled to fill int16 unless ``scale`` is given."""
    import nibabel as nib

    image = nib.load(str(nifti))
    data = np.asarray(image.dataobj, dtype=np.float64)
    if scale is None:
        peak = float(np.abs(data).max()) or 1.0
        scale = 3000.0 / peak
    return write_dicom_series(data * scale, image.affine, folder)
