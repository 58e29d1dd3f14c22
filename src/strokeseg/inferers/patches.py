"""Paper-faithful patch inference (Clèrigues et al. 2020, §3.5): 24 x 24 x 16 patches at a 4 x 4 x 1 step, averaged.

Clèrigues A et al. Acute and sub-acute stroke lesion segmentation from multimodal MRI. Comput Methods Programs
Biomed 194 (2020) 105521, doi:10.1016/j.cmpb.2020.105521.

Every patch whose centre lies in the brain is predicted and the softmax probabilities are averaged over the
overlaps (tens of thousands of patches per 1 mm volume). It is the reference the fast mode (MONAI's
``SlidingWindowInferer`` over large windows with Gaussian blending; the network is fully convolutional) is
checked against; MONAI's ``SlidingWindowInferer`` cannot restrict windows to the foreground and blends
logits, not probabilities, hence this inferer. Patches are cut from a strided view (``Tensor.unfold``, no copy),
run in batches, and accumulated with one ``index_add_`` per batch (no Python loop over patches or voxels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import ensure_tuple_rep

from strokeseg.transforms.foreground import brain_mask
from strokeseg.transforms.patches3d import URESNET_PATCH_SIZE

__all__ = ["FAITHFUL_STEP", "FaithfulPatchInferer"]

FAITHFUL_STEP = (4, 4, 1)  # Clèrigues et al. 2020, §3.5, and the authors' code: prediction step 4 x 4 x 1


class FaithfulPatchInferer(Inferer):
    """Average softmax probabilities of overlapping patches centred in the brain; return their logarithm.

    The output has the network's shape ``(1, classes, X, Y, Z)`` and holds ``log(mean probability)``, so the
    ``softmax`` of the usual post-processing returns the averaged probabilities unchanged. Voxels that no patch
    covers get probability 1 for class 0 (background).

    Args:
        patch_size: patch size (24 x 24 x 16, Clèrigues et al. 2020).
        step: step between patch origins (4 x 4 x 1, Clèrigues et al. 2020).
        batch_size: patches per network call.
        foreground_only: skip patches whose centre voxel is background (every channel at its minimum).

    Raises:
        ValueError: an input that is not ``(1, C, X, Y, Z)``.

    Example::

        inferer = FaithfulPatchInferer(batch_size=512)
        logp = inferer(image[None], network)        # (1, 2, X, Y, Z)
    """

    def __init__(
        self,
        patch_size: Sequence[int] = URESNET_PATCH_SIZE,
        step: Sequence[int] = FAITHFUL_STEP,
        batch_size: int = 256,
        foreground_only: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(int(s) for s in ensure_tuple_rep(patch_size, 3))
        self.step = tuple(int(s) for s in ensure_tuple_rep(step, 3))
        self.batch_size = int(batch_size)
        self.foreground_only = bool(foreground_only)
        self.last_num_patches = 0

    def patch_origins(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` first voxels of the patches of a padded ``(C, X, Y, Z)`` image."""
        axes = []
        for n, p, s in zip(image.shape[1:], self.patch_size, self.step, strict=True):
            starts = list(range(0, n - p + 1, s))
            if starts[-1] != n - p:
                starts.append(n - p)  # the last patch ends at the border
            axes.append(torch.tensor(starts))
        origins = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        if self.foreground_only:
            mask = brain_mask(image, background="minimum")
            centres = origins + torch.tensor([p // 2 for p in self.patch_size])
            origins = origins[mask[centres[:, 0], centres[:, 1], centres[:, 2]]]
        return origins

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[0] != 1:
            raise ValueError(f"FaithfulPatchInferer expects a (1, C, X, Y, Z) input, got {tuple(inputs.shape)}")
        image = (inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs)[0]
        shape = image.shape[1:]
        pad = [max(0, p - n) for n, p in zip(shape, self.patch_size, strict=True)]
        if any(pad):
            background = image.reshape(image.shape[0], -1).amin(dim=1)
            padded = background.reshape(-1, 1, 1, 1).expand(-1, *[n + q for n, q in zip(shape, pad, strict=True)])
            padded = padded.clone()
            padded[:, : shape[0], : shape[1], : shape[2]] = image
            image = padded
        full = image.shape[1:]
        origins = self.patch_origins(image)
        self.last_num_patches = int(len(origins))
        view = image.unfold(1, self.patch_size[0], 1).unfold(2, self.patch_size[1], 1).unfold(3, self.patch_size[2], 1)
        # view: (C, nx, ny, nz, px, py, pz); offsets of a patch's voxels in the flattened volume
        grid = torch.stack(torch.meshgrid(*[torch.arange(p) for p in self.patch_size], indexing="ij"), dim=0)
        strides = torch.tensor([full[1] * full[2], full[2], 1])
        offsets = (grid.reshape(3, -1) * strides[:, None]).sum(0)
        prob_sum: torch.Tensor | None = None
        count = torch.zeros(int(torch.tensor(full).prod()), dtype=torch.float32, device=image.device)
        for start in range(0, len(origins), self.batch_size):
            batch_origins = origins[start : start + self.batch_size]
            patches = view[:, batch_origins[:, 0], batch_origins[:, 1], batch_origins[:, 2]].permute(1, 0, 2, 3, 4)
            probs = torch.softmax(network(patches.contiguous(), *args, **kwargs).float(), dim=1)
            classes = probs.shape[1]
            if prob_sum is None:
                prob_sum = torch.zeros(classes, count.numel(), dtype=torch.float32, device=image.device)
            index = ((batch_origins * strides).sum(1)[:, None] + offsets[None, :]).reshape(-1).to(image.device)
            prob_sum.index_add_(
                1, index, probs.reshape(len(batch_origins), classes, -1).permute(1, 0, 2).reshape(classes, -1)
            )
            count.index_add_(0, index, torch.ones(index.numel(), device=image.device))
        if prob_sum is None:  # no patch in the brain
            with torch.no_grad():
                classes = network(
                    image[None, :, : self.patch_size[0], : self.patch_size[1], : self.patch_size[2]]
                ).shape[1]
            prob_sum = torch.zeros(classes, count.numel(), device=image.device)
        prob = prob_sum / count.clamp(min=1)
        prob[0, count == 0] = 1.0
        prob = prob.reshape(prob.shape[0], *full)[:, : shape[0], : shape[1], : shape[2]]
        return torch.log(prob.clamp(min=1e-12))[None]
