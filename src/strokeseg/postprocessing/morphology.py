"""Binary closing with a ball ("FH", filling holes; Pérez Malla et al. 2019, §2.4.2); the fit of its iteration count is
:func:`strokeseg.fitting.closing.fit_closing_iterations`.

MONAI has no morphological closing transform, and ``scipy.ndimage.binary_closing`` treats everything
outside the array as background during the erosion, which erodes lesions that touch the image border.
This module computes the closing with SciPy's dilation/erosion on the mask's bounding box padded by
``radius × iterations`` voxels of background: the exact closing of the mask in an unbounded background,
at the cost of the lesion's neighbourhood instead of the whole volume.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type
from scipy import ndimage
from skimage.morphology import ball, disk

from strokeseg.lesions import union_bounding_box

__all__ = ["FH_RADIUS", "binary_closing", "BinaryClosing", "BinaryClosingd"]

FH_RADIUS = 3  # Pérez Malla et al. 2019, §2.4.2: structuring element a 3D ball of radius 3 voxels


def binary_closing(mask: np.ndarray, radius: int = FH_RADIUS, iterations: int = 1) -> np.ndarray:
    """Closing of a boolean ``(H, W[, D])`` mask: ``iterations`` dilations then as many erosions with a ball.

    Args:
        mask: boolean mask; 3-D uses ``skimage.morphology.ball(radius)``, 2-D ``disk(radius)``.
        radius: radius of the structuring element in voxels.
        iterations: repetitions of the dilation (and then of the erosion); 0 returns a copy.

    Raises:
        ValueError: negative ``iterations`` or ``radius`` < 1, or a mask that is not 2-D/3-D.
    """
    if iterations < 0 or radius < 1:
        raise ValueError(f"need iterations >= 0 and radius >= 1, got iterations={iterations}, radius={radius}.")
    if mask.ndim not in (2, 3):
        raise ValueError(f"binary_closing expects a 2-D or 3-D mask, got shape {mask.shape}.")
    mask = np.asarray(mask, dtype=bool)
    box = union_bounding_box(mask, margin=0)
    if iterations == 0 or box is None:
        return mask.copy()
    footprint = ball(radius) if mask.ndim == 3 else disk(radius)
    pad = radius * iterations
    # the closing cannot reach beyond the bounding box grown by `pad`: work there, background outside
    grown = np.pad(mask[box], pad)
    closed = ndimage.binary_erosion(
        ndimage.binary_dilation(grown, footprint, iterations=iterations), footprint, iterations=iterations
    )
    out = mask.copy()
    target, source = [], []
    for sl, size in zip(box, mask.shape, strict=True):
        lo, hi = sl.start - pad, sl.stop + pad
        target.append(slice(max(lo, 0), min(hi, size)))
        source.append(slice(max(lo, 0) - lo, min(hi, size) - lo))
    out[tuple(target)] = closed[tuple(source)]
    return out


class BinaryClosing(Transform):
    """Close each channel of a channel-first binary mask ``(C, H, W[, D])`` with a ball (FH, Pérez Malla et al. 2019).

    MetaTensor in ⇒ MetaTensor out with the same affine and meta; dtype and device are kept.

    Args:
        radius: ball radius in voxels (default 3, Pérez Malla et al. 2019).
        iterations: dilation/erosion repetitions (fit with
            :func:`strokeseg.fitting.closing.fit_closing_iterations` on validation).
    """

    backend = ["numpy"]

    def __init__(self, radius: int = FH_RADIUS, iterations: int = 1) -> None:
        if iterations < 0 or radius < 1:
            raise ValueError(f"need iterations >= 0 and radius >= 1, got iterations={iterations}, radius={radius}.")
        self.radius = int(radius)
        self.iterations = int(iterations)

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Args: img: binary mask ``(C, H, W[, D])`` (non-zero = foreground)."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if arr.ndim not in (3, 4):
            raise ValueError(f"BinaryClosing expects a channel-first (C, H, W[, D]) mask, got shape {arr.shape}.")
        out = np.stack([binary_closing(c != 0, self.radius, self.iterations) for c in arr])
        return convert_to_dst_type(out, img, dtype=img.dtype)[0]


class BinaryClosingd(MapTransform):
    """Dictionary version of :class:`BinaryClosing`."""

    backend = BinaryClosing.backend

    def __init__(
        self, keys: KeysCollection, radius: int = FH_RADIUS, iterations: int = 1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.closing = BinaryClosing(radius=radius, iterations=iterations)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.closing(d[key])
        return d
