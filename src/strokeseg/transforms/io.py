"""Writing predictions: ``<output_dir>/<case>/<case>_<postfix>.nii.gz``, atomically.

MONAI's ``SaveImaged`` names outputs after the input file stem (for ISLES 2022 that is
``sub-…_ses-…_dwi``, not the case) and writes in place, so a crash can leave a truncated file under
the final name. This transform reuses MONAI's ``NibabelWriter`` for the NIfTI encoding (affine taken
from the MetaTensor, so the prediction overlays its input in any viewer) and adds the two things it
lacks: case naming from the datalist entry and write-to-temporary-then-``os.replace``; the affine is written
as the MetaTensor holds it (MONAI's writer resamples even with ``resample=False`` and fails on permuted axes).
A process killed while writing leaves at most a hidden ``.partial-<pid>-…`` file, never a half-written file under
the final name; the next inference run removes it (:func:`strokeseg.runtime.inputs.remove_stale_partials`).

In a bundle the savers are the ``writers`` of ``inference.json``, which the evaluator runs after the
tensor-only ``postprocessing`` (what a MONAI Deploy client runs), so the case name is needed only here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform, Transform

from strokeseg.atomic_io import atomic_path
from strokeseg.errors import DataError

__all__ = ["SaveCasePrediction", "SaveCasePredictiond"]


class SaveCasePrediction(Transform):
    """Write a ``(C, H, W[, D])`` MetaTensor to ``<output_dir>/<case>/<case>_<postfix>.nii.gz`` atomically.

    Args:
        output_dir: root folder of the predictions.
        postfix: file name suffix, e.g. ``seg`` or ``prob``.
        output_dtype: stored dtype (``uint8`` for masks, ``float32`` for probabilities).
        channel: write only this channel (``None`` writes all channels; a single channel is squeezed).
    """

    def __init__(
        self,
        output_dir: str | Path,
        postfix: str = "seg",
        output_dtype: type | np.dtype | str = np.uint8,
        channel: int | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.output_dtype = np.dtype(output_dtype)
        self.channel = channel

    def path(self, case: str) -> Path:
        """The file written for ``case``."""
        return self.output_dir / case / f"{case}_{self.postfix}.nii.gz"

    def __call__(self, img: torch.Tensor, case: str) -> Path:
        if not isinstance(img, MetaTensor):
            raise TypeError(f"{case}: expected a MetaTensor carrying the affine to save, got {type(img).__name__}")
        data = img if self.channel is None else img[self.channel : self.channel + 1]
        final = self.path(case)
        writer = NibabelWriter(output_dtype=self.output_dtype)
        writer.set_data_array(data.detach().cpu(), channel_dim=0)
        # not ``set_metadata(resample=False)``: that still runs MONAI's ``SpatialResample``, which fails on a
        # single-channel volume whose affine permutes the axes (sagittal storage: "Affine ... is not invertible");
        # the data are on their own grid already, so the affine is taken as it is
        writer.affine = to_affine_nd(3, np.asarray(data.affine.detach().cpu(), dtype=np.float64))
        try:
            with atomic_path(final) as tmp:
                writer.write(tmp)
        except OSError as exc:  # full disk, read-only folder: name the file, leave nothing behind
            raise DataError(f"{final}: cannot be written ({exc.strerror or exc})") from exc
        return final


class SaveCasePredictiond(MapTransform):
    """Dictionary version of :class:`SaveCasePrediction`; the case name is read from ``data[case_key]``.

    The path written is stored under ``f"{key}_path"`` so later handlers can report it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        case_key: str = "case",
        postfix: str = "seg",
        output_dtype: type | np.dtype | str = np.uint8,
        channel: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.case_key = case_key
        self.saver = SaveCasePrediction(output_dir, postfix=postfix, output_dtype=output_dtype, channel=channel)

    def path(self, case: str) -> Path:
        """The file written for ``case``."""
        return self.saver.path(case)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        case = d.get(self.case_key)
        if not isinstance(case, str) or not case:
            raise KeyError(f"SaveCasePredictiond: the data has no case name under {self.case_key!r}")
        for key in self.key_iterator(d):
            d[f"{key}_path"] = str(self.saver(d[key], case))
        return d
