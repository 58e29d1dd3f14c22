"""Run slice-wise steps on the slices the network saw, whatever axis order the input was stored in.

A bundle that reorients its input (MONAI ``Orientationd``) and inverts the prediction back onto the input's grid
(``Invertd``) may still post-process slice by slice on that grid (the MS-DCNN's 2-D median filter), and on a scan
stored sagittally the input's last axis is not the axial one. :class:`ApplyInOrientationd` turns the given keys to
``axcodes`` (voxel permutation and flips only, no resampling), runs the wrapped transform and turns the results
back. MONAI's ``Orientationd`` + ``Invertd`` pair would do the same but needs every wrapped transform to carry the
MetaTensor's applied operations through, which the slice filters do not; here the wrapped transform sees plain
tensors and each result gets its input's metadata back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

__all__ = ["ApplyInOrientationd", "ApplyInOrientationD", "ApplyInOrientationDict", "reorient"]


def reorient(img: torch.Tensor, ornt: np.ndarray) -> torch.Tensor:
    """Apply a nibabel orientation transform ``ornt`` (``(3, 2)``: target axis, flip) to ``(C, X, Y, Z)``.

    The same voxel order as ``nibabel.orientations.apply_orientation`` on the spatial axes (flips first, then
    the permutation), on a torch tensor.

    Raises:
        ValueError: ``img`` is not ``(C, X, Y, Z)`` or ``ornt`` is not ``(3, 2)``.
    """
    ornt = np.asarray(ornt)
    if img.ndim != 4 or ornt.shape != (3, 2):
        raise ValueError(f"reorient needs a (C, X, Y, Z) image and a (3, 2) orientation, got {tuple(img.shape)}")
    flips = [axis + 1 for axis in range(3) if ornt[axis, 1] == -1]
    out = img.flip(flips) if flips else img
    return out.permute(0, *(int(axis) + 1 for axis in np.argsort(ornt[:, 0])))


class ApplyInOrientationd(MapTransform):
    """Run ``transform`` on ``keys`` turned to ``axcodes``, then turn ``out_keys`` back onto the input's grid.

    The orientation comes from the affine of the first of ``keys`` (a ``MetaTensor``); a result key that was
    not an input (``CopyItemsd`` inside ``transform``) gets the metadata of that first key.

    Args:
        keys: channel-first ``(C, X, Y, Z)`` MetaTensors on one grid (e.g. ``pred``).
        transform: the dictionary transform to run on the reoriented data (plain tensors).
        axcodes: the orientation ``transform`` expects, e.g. ``"LPS"`` (the last axis is then the axial one).
        out_keys: the keys turned back afterwards (default: ``keys``); missing ones are skipped.
        allow_missing_keys: skip missing ``keys``.

    Raises:
        TypeError: the first key is not a ``MetaTensor`` (no affine to orient by).
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[Mapping[Hashable, Any]], Mapping[Hashable, Any]],
        axcodes: str = "LPS",
        out_keys: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform
        self.axcodes = str(axcodes)
        self.target = nib.orientations.axcodes2ornt(tuple(self.axcodes))
        self.out_keys = tuple(out_keys) if out_keys is not None else tuple(self.keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return dict(self.transform(d))
        originals = {key: d[key] for key in present}
        first = originals[present[0]]
        if not isinstance(first, MetaTensor):
            raise TypeError(f"ApplyInOrientationd: {present[0]!r} must be a MetaTensor, got {type(first).__name__}")
        stored = nib.orientations.io_orientation(np.asarray(first.affine.detach().cpu(), dtype=np.float64))
        forward = nib.orientations.ornt_transform(stored, self.target)
        backward = nib.orientations.ornt_transform(self.target, stored)
        for key in present:
            d[key] = reorient(convert_to_tensor(d[key], track_meta=False), forward)
        d = dict(self.transform(d))
        for key in self.out_keys:
            if key in d:
                back = reorient(convert_to_tensor(d[key], track_meta=False), backward).contiguous()
                like = originals.get(key, first)
                if isinstance(like, MetaTensor):  # the meta dict holds the affine (no "affine overwritten" warning)
                    back = MetaTensor(back, meta=dict(like.meta), applied_operations=list(like.applied_operations))
                d[key] = back
        return d


ApplyInOrientationD = ApplyInOrientationDict = ApplyInOrientationd
