"""Input checks that name the file: NIfTI headers before loading, tensors right after loading.

MONAI loads whatever a file holds (a 4-D DWI series becomes several channels, NaNs pass through
every transform, a file without spacing is read as 1 mm, a truncated ``.nii.gz`` fails inside ``gzip``
without naming the file, a header claiming 4000³ voxels makes nibabel try to allocate 256 GB, two
modalities on different grids are stacked under the first one's affine), so a wrong input would otherwise
surface much later as a shape error deep inside a network, as a silently wrong prediction or as an
error that never says which file. Two transforms fail early instead:

* :class:`CheckNiftiHeadersd` (before ``LoadImaged``): reads only the headers (nibabel) of the files a
  datalist entry names and checks each file exists, is a non-empty NIfTI, is not larger than
  ``max_voxels``, holds exactly the bytes its header announces, has a valid spacing, has the expected
  dimensionality (3-D volume or 4-D series), and that the files of one case share one grid. It passes
  tensors through untouched, so a client that feeds tensors (the MONAI Deploy App SDK, which drops
  ``LoadImage``) can run the same ``preprocessing``.
  A folder path is a DICOM series (:mod:`strokeseg.dicom`: exactly one series, its grid read without its
  pixels, as ``LoadImaged`` will load it with ITK), and a lone DICOM slice file is refused in one line.
* :class:`CheckImaged` (after ``EnsureChannelFirstd``): channel count, dimensionality, NaN/Inf, all-zero.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from strokeseg.dicom import is_dicom_file, lone_dicom_file_error, read_series_info
from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM, affines_match, grid_tolerance
from strokeseg.knobs import BoolKnob, as_bool

__all__ = [
    "CheckImage",
    "CheckImaged",
    "CheckNiftiHeaders",
    "CheckNiftiHeadersd",
    "NiftiInfo",
    "read_nifti_header",
    "source_name",
    "gzip_payload_size",
    "DEFAULT_MAX_VOXELS",
    "GRID_TOLERANCE",
]

DEFAULT_MAX_VOXELS = 1 << 29
"""Largest file accepted (voxels, all dimensions): 2^29 ≈ 537 M, e.g. 512 × 512 × 64 × 32. ISLES volumes are
≤ 256 × 256 × 200 and the 4-D perfusion series ≤ 256 × 256 × 32 × 80 (≈ 168 M); a header beyond this is
corrupt or not one scan, and refusing it avoids allocating its size."""

GRID_TOLERANCE = GRID_TOLERANCE_MM
"""Default of ``grid_tolerance_mm``: affine entries (mm) closer than this are the same grid (:mod:`strokeseg.grids`)."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class NiftiInfo:
    """What :func:`read_nifti_header` learnt about a file without loading its voxels."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The three spatial dimensions."""
        return (tuple(self.shape[:3]) + (1, 1, 1))[:3]


def _read_start(path: Path, gz: bool, size: int) -> bytes:
    """First 540 bytes of the (decompressed) file, enough for a NIfTI-1 or NIfTI-2 header."""
    try:
        if gz:
            with gzip.open(path, "rb") as stream:
                return stream.read(540)
        with open(path, "rb") as handle:
            return handle.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def _nifti_version(start: bytes) -> int | None:
    """1 or 2 for a NIfTI header (either byte order), ``None`` otherwise."""
    for order in "<>":
        if len(start) >= 348 and struct.unpack(order + "i", start[:4])[0] == 348 and start[344:347] in (b"n+1", b"ni1"):
            return 1
        if len(start) >= 540 and struct.unpack(order + "i", start[:4])[0] == 540 and start[4:7] in (b"n+2", b"ni2"):
            return 2
    return None


def _raw_header(start: bytes, version: int) -> np.void:
    """The header fields exactly as stored in the file (either byte order)."""
    size = 348 if version == 1 else 540
    template = (nib.Nifti1Header if version == 1 else nib.Nifti2Header).template_dtype
    order = "<" if int.from_bytes(start[:4], "little") == size else ">"
    return np.frombuffer(start[:size], dtype=template.newbyteorder(order))[0]


#: bytes read at a time when a gzip file's trailer cannot be trusted
_GZIP_CHUNK = 1 << 20


def gzip_payload_size(path: Path, expected: int, where: str) -> int:
    """Uncompressed size of a gzip file: the trailer when it agrees with ``expected``, else a streamed count
    (memory stays at one chunk). Shared by the datalist's and the loaders' header checks.

    Raises:
        DataError: ``<where> is truncated or corrupt: ...`` when the compressed stream ends early or is damaged.
    """
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() >= 18:  # smallest gzip member: 10-byte header + 8-byte trailer
            handle.seek(-4, os.SEEK_END)
            if int.from_bytes(handle.read(4), "little") == expected % (1 << 32):
                return expected
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_GZIP_CHUNK):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{where} is truncated or corrupt: {type(exc).__name__}: {exc}") from exc
    return total


def _payload_size(path: Path, gz: bool, expected: int) -> int:
    """Bytes the file holds once decompressed (the datalist's gzip check, so both read a file the same way)."""
    return gzip_payload_size(path, expected, f"{path}:") if gz else path.stat().st_size


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def read_nifti_header(path: str | os.PathLike, ndim: int = 3, max_voxels: int = DEFAULT_MAX_VOXELS) -> NiftiInfo:
    """Check one NIfTI file from its header and size, without loading (or allocating) its voxels.

    Args:
        path: the file.
        ndim: ``3`` for a volume (a 4-D file with one volume counts as 3-D), ``4`` for a series (4 or more
            axes, a single time point included).
        max_voxels: largest accepted number of voxels.

    Raises:
        DataError: the file is missing, empty, not NIfTI, larger than ``max_voxels``, truncated or longer
            than its header says, has no valid spacing or orientation, or has the wrong dimensionality.
            The message starts with the file's path.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.is_dir():
        return _dicom_series_header(path, ndim, max_voxels)
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file (nor a DICOM series folder)")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    gz = magic == _GZIP_MAGIC
    if not gz and path.name.lower().endswith(".gz"):
        raise DataError(f"{path}: is not gzip-compressed although its name ends in .gz (not a NIfTI file)")
    start = _read_start(path, gz, size)
    version = _nifti_version(start)
    if version is None:
        if is_dicom_file(path):
            raise lone_dicom_file_error(path)
        if len(start) < 348:
            raise DataError(f"{path}: is not a NIfTI file or is truncated ({len(start)} bytes, a header needs 348)")
        raise DataError(f"{path}: is not a NIfTI file (no NIfTI-1/2 header)")
    try:
        image = nib.load(str(path))
        header = image.header
        shape = tuple(int(s) for s in header.get_data_shape())
        itemsize = header.get_data_dtype().itemsize
        offset = int(getattr(image.dataobj, "offset", header["vox_offset"]))
    except Exception as exc:  # nibabel raises many types for a damaged header
        raise DataError(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not shape or any(s < 1 for s in shape):
        raise DataError(f"{path}: header announces an empty shape {shape}")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > max_voxels:
        raise DataError(
            f"{path}: header announces {_shape_text(shape)} = {voxels:.3g} voxels, more than the {max_voxels:.3g} "
            "accepted (corrupt header or not a single scan)"
        )
    expected = offset + voxels * itemsize
    actual = _payload_size(path, gz, expected)
    if actual < expected:
        raise DataError(
            f"{path}: is truncated: its header announces {_shape_text(shape)} voxels ({expected} bytes) "
            f"but the file holds {actual} bytes"
        )
    if actual > expected:
        raise DataError(
            f"{path}: header size does not match its data: the header announces {_shape_text(shape)} voxels "
            f"({expected} bytes) but the file holds {actual} bytes"
        )
    # nibabel "fixes" a zero pixdim to 1 when it loads a header: read spacing and codes from the file's bytes
    raw = _raw_header(start, version)
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    codes = (int(raw["qform_code"]), int(raw["sform_code"]))
    if codes == (0, 0) and not (np.all(np.isfinite(pixdim)) and np.all(pixdim > 0)):
        raise DataError(
            f"{path}: has no valid voxel spacing (qform_code and sform_code are 0 and pixdim is "
            f"{pixdim.round(4).tolist()}); refusing to guess 1 mm"
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(linear)) < 1e-9:
        raise DataError(
            f"{path}: has no valid voxel spacing or orientation (its affine {np.round(affine[:3], 4).tolist()} "
            "is singular or not finite)"
        )
    spacing = tuple(float(v) for v in np.sqrt((linear**2).sum(axis=0)))
    series = len(shape) > 3 and int(np.prod(shape[3:])) > 1
    if ndim == 3 and series:
        raise DataError(
            f"{path}: holds a 4-D series of {int(np.prod(shape[3:]))} volumes (shape {_shape_text(shape)}); "
            "a single 3-D volume is expected"
        )
    if ndim == 3 and len(shape) < 3:
        raise DataError(f"{path}: is {len(shape)}-D (shape {_shape_text(shape)}); a 3-D volume is expected")
    if ndim == 4 and len(shape) < 4:  # a series of one time point (X, Y, Z, 1) is still a series file
        raise DataError(f"{path}: holds a single volume (shape {_shape_text(shape)}); a 4-D series is expected")
    return NiftiInfo(path=path, shape=shape, affine=affine, spacing=spacing)  # type: ignore[arg-type]


def _dicom_series_header(folder: Path, ndim: int, max_voxels: int) -> NiftiInfo:
    """The grid of a DICOM series folder (:func:`strokeseg.dicom.read_series_info`), checked like a NIfTI header.

    Raises:
        DataError: not one readable series (see :func:`~strokeseg.dicom.read_series_info`), more than
            ``max_voxels`` voxels, or a 4-D series is expected (a DICOM series folder is one 3-D volume).
    """
    info = read_series_info(folder)
    if ndim == 4:
        raise DataError(f"{folder}: is a DICOM series folder (one 3-D volume); a 4-D series is expected (as NIfTI)")
    voxels = int(np.prod(info.shape, dtype=np.int64))
    if voxels > max_voxels:
        raise DataError(
            f"{folder}: the DICOM series is {_shape_text(info.shape)} = {voxels:.3g} voxels, more than the "
            f"{max_voxels:.3g} accepted"
        )
    return NiftiInfo(path=folder, shape=info.shape, affine=info.affine, spacing=info.spacing)


def _paths(value: object) -> list[str] | None:
    """The file path(s) of a datalist value, or ``None`` for anything else (a tensor, an array)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    return None


def _check_same_grid(infos: Sequence[NiftiInfo], tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    reference = infos[0]
    for other in infos[1:]:
        if other.grid_shape != reference.grid_shape:
            raise DataError(
                f"{other.path}: grid {_shape_text(other.grid_shape)} differs from {reference.path} "
                f"({_shape_text(reference.grid_shape)}); a case's volumes must share one grid"
            )
        if not affines_match(other.affine, reference.affine, tolerance_mm):
            worst = float(np.abs(other.affine - reference.affine).max())
            raise DataError(
                f"{other.path}: affine differs from {reference.path} by up to {worst:.3g} mm (tolerance "
                f"{grid_tolerance(tolerance_mm):g} mm, grid_tolerance_mm); a case's volumes must share one grid "
                "(resample them onto one grid first)"
            )


class CheckNiftiHeaders(Transform):
    """Check the NIfTI file(s) of one value (a path or a list of co-registered paths) before loading.

    Args:
        ndim: ``3`` (volumes) or ``4`` (one 4-D series per file).
        max_voxels: largest accepted file (voxels).
        same_grid: the files of the value must share shape and affine.
        grid_tolerance_mm: largest difference between affine entries (mm) that still counts as one grid.

    Returns the value unchanged; a value that is not a path (a tensor) passes through unchecked.

    Raises:
        KnobError: ``grid_tolerance_mm`` is not a number >= 0.
    """

    def __init__(
        self,
        ndim: int = 3,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        same_grid: bool = True,
        grid_tolerance_mm: float = GRID_TOLERANCE_MM,
    ) -> None:
        if ndim not in (3, 4):
            raise ValueError(f"ndim must be 3 or 4, got {ndim}")
        self.ndim = ndim
        self.max_voxels = int(max_voxels)
        self.same_grid = same_grid
        self.grid_tolerance_mm = grid_tolerance(grid_tolerance_mm)

    def infos(self, value: object) -> list[NiftiInfo]:
        """Header information of each file of ``value`` (``[]`` for a non-path value).

        Raises:
            DataError: see :func:`read_nifti_header`, or the files' grids differ.
        """
        paths = _paths(value)
        if paths is None:
            return []
        infos = [read_nifti_header(p, self.ndim, self.max_voxels) for p in paths]
        if self.same_grid and len(infos) > 1:
            _check_same_grid(infos, self.grid_tolerance_mm)
        return infos

    def __call__(self, value: object) -> object:
        self.infos(value)
        return value


class CheckNiftiHeadersd(MapTransform):
    """Dictionary version of :class:`CheckNiftiHeaders`, run right before ``LoadImaged``.

    Args:
        keys: datalist keys holding file paths (``image``, ``label``, extras).
        ndim: ``3`` or ``4`` for every key, or a mapping key → ``3``/``4`` (e.g. ``{"perfusion_4d": 4}``;
            keys not in it are 3-D).
        same_grid_keys: keys whose files must all share one grid (spatial shape and affine); default: every
            key. A 4-D series is compared on its first three dimensions.
        max_voxels: largest accepted file (voxels).
        allow_missing_keys: don't fail on an absent key (an optional extra).
        grid_tolerance_mm: largest difference between affine entries (mm) that still counts as one grid (a
            bundle's ``grid_tolerance_mm`` knob).

    Raises:
        KnobError: ``grid_tolerance_mm`` is not a number >= 0.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ndim: int | Mapping[str, int] = 3,
        same_grid_keys: KeysCollection | None = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        allow_missing_keys: bool = False,
        grid_tolerance_mm: float = GRID_TOLERANCE_MM,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        ndims = dict(ndim) if isinstance(ndim, Mapping) else {}
        self.grid_tolerance_mm = grid_tolerance(grid_tolerance_mm)
        self.checkers = {
            key: CheckNiftiHeaders(
                ndims.get(key, 3) if ndims else int(ndim), max_voxels, grid_tolerance_mm=self.grid_tolerance_mm
            )
            for key in self.keys
        }
        if same_grid_keys is None:
            self.same_grid_keys = tuple(self.keys)
        else:
            self.same_grid_keys = (same_grid_keys,) if isinstance(same_grid_keys, str) else tuple(same_grid_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        grid: list[NiftiInfo] = []
        for key in self.key_iterator(d):
            infos = self.checkers[key].infos(d[key])
            if key in self.same_grid_keys:
                grid += infos
        if len(grid) > 1:
            _check_same_grid(grid, self.grid_tolerance_mm)
        return d


def source_name(img: torch.Tensor) -> str:
    """File name(s) a MetaTensor was loaded from, for error messages."""
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        if isinstance(name, (list, tuple)):
            return ", ".join(str(n) for n in name)
        if name:
            return str(name)
    return "<in-memory image>"


class CheckImage(Transform):
    """Validate a channel-first image ``(C, H, W[, D])`` and return it unchanged.

    Args:
        channels: expected number of channels (``None``: any).
        spatial_dims: expected number of spatial dimensions.
        allow_empty: accept an image whose values are all zero (e.g. a label).

    Raises:
        DataError: wrong channel count (e.g. a 4-D series where a 3-D volume is expected), wrong
            dimensionality, NaN/Inf values, or an all-zero image (or, for channels stacked from one file
            each, an all-zero channel); the message names the (first) file.
    """

    def __init__(self, channels: int | None = 1, spatial_dims: int = 3, allow_empty: BoolKnob = False) -> None:
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.allow_empty = as_bool(allow_empty, "allow_empty")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        name = source_name(img)
        if img.ndim != self.spatial_dims + 1:
            raise DataError(
                f"{name}: expected a {self.spatial_dims}-D volume (channel-first shape of {self.spatial_dims + 1} "
                f"dims), got shape {tuple(img.shape)}"
            )
        if self.channels is not None and img.shape[0] != self.channels:
            extra = ""
            # MONAI marks a 3-D file with NaN ("no_channel" before 1.3) and several stacked 3-D files with 0;
            # only a channel axis read from the file itself (-1 for a 4-D NIfTI) means a 4-D series.
            channel_dim = img.meta.get("original_channel_dim") if isinstance(img, MetaTensor) else None
            if isinstance(channel_dim, int) and not isinstance(channel_dim, bool) and channel_dim != 0:
                extra = " (the file holds a 4-D series; a single 3-D volume is expected)"
            raise DataError(f"{name}: expected {self.channels} channel(s), got {img.shape[0]}{extra}")
        if not torch.isfinite(img).all():
            nan = int(torch.isnan(img).sum())
            inf = int(torch.isinf(img).sum())
            what = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
            raise DataError(f"{name}: contains {what} voxel(s)")
        if not self.allow_empty:
            if not bool(torch.any(img != 0)):
                raise DataError(f"{name}: the image is empty (every voxel is 0)")
            # channels stacked from one file each (MONAI keeps only the first file's name): each must hold
            # something; the channels of one 4-D file (a series) may include a blank frame
            stacked = isinstance(img, MetaTensor) and img.meta.get("original_channel_dim") == 0
            if stacked and img.shape[0] > 1:
                for channel in range(img.shape[0]):
                    if not bool(torch.any(img[channel] != 0)):
                        raise DataError(
                            f"{name}: channel {channel} of the case (its file number {channel + 1}) is empty "
                            "(every voxel is 0)"
                        )
        return img


class CheckImaged(MapTransform):
    """Dictionary version of :class:`CheckImage`."""

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | None = 1,
        spatial_dims: int = 3,
        allow_empty: BoolKnob = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckImage(channels=channels, spatial_dims=spatial_dims, allow_empty=allow_empty)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.checker(d[key])
        return d
