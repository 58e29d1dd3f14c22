"""The patch grid of the paper-faithful uResNet inference (``FaithfulPatchInferer``), for P3's extrapolation.

The faithful mode evaluates every patch whose centre is in the head on a regular grid of origins. These helpers
count those patches exactly with the inferer's own rule, restrict a real run of the inferer to a block of them,
find the voxels where that block run equals the whole-case run, and scale the block's time to the whole case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from strokeseg.inferers.patches import FaithfulPatchInferer
from strokeseg.tools.bench.calls import plain_tensor

__all__ = [
    "spatial_shape",
    "padded_as_inferer",
    "faithful_origins",
    "count_faithful_patches",
    "SelectedPatchInferer",
    "select_block",
    "coverage",
    "exact_region",
    "extrapolate_seconds",
    "isin_rows",
]


def spatial_shape(image: torch.Tensor) -> tuple[int, int, int]:
    """The last three (spatial) sizes of ``image``."""
    return tuple(int(s) for s in image.shape[-3:])  # type: ignore[return-value]


def padded_as_inferer(inferer: FaithfulPatchInferer, image: torch.Tensor) -> torch.Tensor:
    """``image`` ``(C, X, Y, Z)`` padded with each channel's minimum where it is smaller than a patch, exactly as
    ``FaithfulPatchInferer.__call__`` pads it."""
    shape = image.shape[1:]
    pad = [max(0, p - n) for n, p in zip(shape, inferer.patch_size, strict=True)]
    if not any(pad):
        return image
    background = image.reshape(image.shape[0], -1).amin(dim=1)
    padded = background.reshape(-1, 1, 1, 1).expand(-1, *[n + q for n, q in zip(shape, pad, strict=True)]).clone()
    padded[:, : shape[0], : shape[1], : shape[2]] = image
    return padded


def faithful_origins(inferer: FaithfulPatchInferer, image: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` first voxels of every patch the faithful inferer evaluates on ``image`` (``(C, X, Y, Z)`` or
    ``(1, C, X, Y, Z)``): its own ``patch_origins`` on the image padded as its ``__call__`` pads it."""
    plain = plain_tensor(image)
    if plain.ndim == 5:
        plain = plain[0]
    return inferer.patch_origins(padded_as_inferer(inferer, plain))


def count_faithful_patches(inferer: FaithfulPatchInferer, image: torch.Tensor) -> int:
    """Number of patches the faithful inferer evaluates on ``image`` (its ``last_num_patches`` after a run)."""
    return int(len(faithful_origins(inferer, image)))


class SelectedPatchInferer(FaithfulPatchInferer):
    """A :class:`FaithfulPatchInferer` whose patches are restricted to those ``keep(origins)`` selects.

    It runs the base inferer's own ``__call__`` (same patch size, step, batch size and foreground rule), so a
    subset of patches costs what those patches cost in a whole-case run.

    Args:
        base: the inferer to copy the settings of.
        keep: ``(N, 3)`` origins of the whole image -> ``(N,)`` bool mask of the patches to evaluate.
    """

    def __init__(self, base: FaithfulPatchInferer, keep: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(base.patch_size, base.step, base.batch_size, base.foreground_only)
        self.keep = keep

    def patch_origins(self, image: torch.Tensor) -> torch.Tensor:
        origins = super().patch_origins(image)
        return origins[self.keep(origins)]


def select_block(origins: torch.Tensor, centre: Sequence[int], counts: Sequence[int], patch_size: Sequence[int]):
    """Mask of the origins on ``counts`` consecutive grid values per axis, the run whose mean centre is nearest
    ``centre`` (so at a border the block slides inwards instead of shrinking).

    Args:
        origins: ``(N, 3)`` origins of the whole image (the faithful inferer's).
        centre: voxel the block's patch centres surround.
        counts: consecutive origin values per axis (fewer where the axis has fewer).
        patch_size: the inferer's patch size (a patch's centre is ``origin + size // 2``).

    Returns:
        ``(N,)`` bool mask.
    """
    keep = torch.ones(len(origins), dtype=torch.bool)
    for axis in range(3):
        values = torch.unique(origins[:, axis])  # sorted
        if len(values) == 0:
            return torch.zeros(len(origins), dtype=torch.bool)
        k = min(int(counts[axis]), len(values))
        wanted = float(centre[axis]) - patch_size[axis] // 2
        means = values.double().unfold(0, k, 1).mean(dim=1)  # every run of k consecutive values
        start = int(torch.argmin((means - wanted).abs()))
        keep &= torch.isin(origins[:, axis], values[start : start + k])
    return keep


def coverage(origins: torch.Tensor, shape: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """``shape`` int32 volume: how many patches of size ``patch_size`` at ``origins`` cover each voxel.

    A patch at ``o`` covers ``[o, o + size)``; the count is a box sum of the origins' indicator (cumulative sums
    per axis), not a loop over patches.
    """
    indicator = torch.zeros(tuple(int(s) for s in shape), dtype=torch.int32)
    if len(origins):
        ones = torch.ones(len(origins), dtype=torch.int32)
        indicator.index_put_((origins[:, 0], origins[:, 1], origins[:, 2]), ones, accumulate=True)
    out = indicator
    for axis, size in enumerate(patch_size):
        cs = torch.cumsum(out, dim=axis, dtype=torch.int32)
        shifted = torch.zeros_like(cs)
        n = cs.shape[axis]
        if size < n:
            shifted.narrow(axis, size, n - size).copy_(cs.narrow(axis, 0, n - size))
        out = cs - shifted
    return out


def exact_region(
    all_origins: torch.Tensor, selected: torch.Tensor, shape: Sequence[int], patch_size: Sequence[int]
) -> torch.Tensor:
    """Voxels where a run over the ``selected`` origins (bool mask) equals the run over all of them: covered, and
    by no patch outside the selection."""
    every = coverage(all_origins, shape, patch_size)
    chosen = coverage(all_origins[selected], shape, patch_size)
    return (chosen == every) & (every > 0)


def extrapolate_seconds(measured_s: float, measured_patches: int, total_patches: int, fixed_s: float = 0.0) -> float:
    """Whole-case seconds from a run over ``measured_patches`` of ``total_patches``.

    ``fixed + max(measured − fixed, 0) / measured_patches × total_patches``, where ``fixed_s`` is the cost of a
    run with no patch (paid once per case whatever the number of patches).

    Raises:
        ValueError: ``measured_patches`` < 1 or a negative time or count.
    """
    if measured_patches < 1:
        raise ValueError(f"need at least one measured patch, got {measured_patches}.")
    if measured_s < 0 or fixed_s < 0 or total_patches < 0:
        raise ValueError(f"negative time or count: {measured_s}, {fixed_s}, {total_patches}.")
    per_patch = max(measured_s - fixed_s, 0.0) / measured_patches
    return fixed_s + per_patch * total_patches


def isin_rows(candidates: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Rows of ``candidates`` ``(N, 3)`` that occur in ``chosen`` ``(M, 3)`` (non-negative ints)."""
    if len(candidates) == 0 or len(chosen) == 0:
        return torch.zeros(len(candidates), dtype=torch.bool)
    base = int(max(candidates.max(), chosen.max())) + 1
    key = lambda t: (t[:, 0] * base + t[:, 1]) * base + t[:, 2]  # noqa: E731
    return torch.isin(key(candidates), key(chosen))
