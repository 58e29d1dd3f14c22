"""Max-pooling that records its pool mask, and the max-unpooling that puts values back by that mask.

DeconvNet-style decoders (Chen et al. 2017, Fig. 4) do not upsample by interpolation: each unpooling layer
writes every value to the position its encoder's max-pool took the maximum from, and leaves the rest
of the window at zero, so that small bright structures keep their exact location. MONAI has no such
pair (its ``Pool`` factory only builds pools, and ``UpSample`` interpolates or learns a transposed
convolution), so these two modules provide it for 2-D and 3-D behind a ``spatial_dims`` parameter.

The pool is ``torch.nn.MaxPool{2,3}d(return_indices=True)`` from MONAI's ``Pool`` factory. Its indices
are, for each ``(batch, channel)`` plane, the flat position of the maximum inside the pre-pool spatial
grid -- what Caffe's pooling "mask" top blob stores. The unpool calls ``torch._C._nn.max_unpool{2,3}d``,
the kernels behind ``torch.nn.functional.max_unpool{2,3}d``, directly: in torch 2.13 the
``torch.nn.MaxUnpool2d`` module fails ``torch.jit.script`` ("isIntList() INTERNAL ASSERT FAILED"), the
Python function fails ``torch.jit.trace`` (its size check turns traced sizes into a bool), and
``torch.ops.aten.max_unpool2d`` traces with the example's output size frozen in. The direct call scripts,
traces with dynamic sizes, and exports to ONNX with the ``torch.export``-based exporter (``dynamo=True``,
the default; the unpool becomes ``ScatterND``); the legacy TorchScript-based ONNX exporter has no
``max_unpool2d`` symbolic and cannot export it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool
from monai.utils import ensure_tuple_rep

__all__ = ["MaxPoolWithIndices", "MaxUnpoolWithIndices"]


def _check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return int(spatial_dims)


class MaxPoolWithIndices(nn.Module):
    """Max-pooling that also returns the pool mask (argmax positions) needed by :class:`MaxUnpoolWithIndices`.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        kernel_size: pooling window, an int or one value per spatial dimension.
        stride: pooling stride; ``None`` means ``kernel_size``.

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3.

    Example::

        pool, unpool = MaxPoolWithIndices(2), MaxUnpoolWithIndices(2)
        y, idx = pool(x)                           # x: (B, C, 5, 7) -> y, idx: (B, C, 2, 3)
        z = unpool(y, idx, list(x.shape[2:]))      # z: (B, C, 5, 7), maxima back in place, zeros elsewhere
    """

    def __init__(
        self, spatial_dims: int, kernel_size: Sequence[int] | int = 2, stride: Sequence[int] | int | None = 2
    ) -> None:
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.pool = Pool[Pool.MAX, self.spatial_dims](kernel_size=kernel_size, stride=stride, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``x``.

        Args:
            x: feature map ``(B, C, H, W[, D])``; odd sizes are floored, as in ``torch.nn.MaxPool2d``.

        Returns:
            ``(pooled, indices)``: the pooled map and an ``int64`` tensor of the same shape holding, per
            ``(batch, channel)`` plane, the flat index of each maximum in the input's spatial grid.
        """
        pooled, indices = self.pool(x)
        return pooled, indices


class MaxUnpoolWithIndices(nn.Module):
    """Max-unpooling: places each value at the position recorded by :class:`MaxPoolWithIndices`, zeros elsewhere.

    The indices are absolute positions in the pre-pool grid, so the window only matters for the default
    output size ``(in - 1) * stride + kernel_size``. Pass the pre-pool size instead whenever it may be odd:
    a 5 x 5 map pooled to 2 x 2 unpools to 5 x 5 only when told so (4 x 4 otherwise).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        kernel_size: window of the matching pool, an int or one value per spatial dimension.
        stride: stride of the matching pool; ``None`` means ``kernel_size``.

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3.
    """

    def __init__(
        self, spatial_dims: int, kernel_size: Sequence[int] | int = 2, stride: Sequence[int] | int | None = 2
    ) -> None:
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.kernel_size: list[int] = [int(k) for k in ensure_tuple_rep(kernel_size, self.spatial_dims)]
        self.stride: list[int] = [
            int(s) for s in ensure_tuple_rep(kernel_size if stride is None else stride, self.spatial_dims)
        ]
        self.padding: list[int] = [0] * self.spatial_dims

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """Unpool ``x``.

        Args:
            x: pooled values ``(B, C, h, w[, d])``.
            indices: the indices the matching pool returned, same shape as ``x``.
            output_size: spatial size before pooling, ``[H, W[, D]]`` (a full ``(B, C, H, W[, D])`` shape is
                accepted too: its last ``spatial_dims`` entries are used). ``None``: computed from the window.

        Returns:
            ``(B, C, H, W[, D])`` map with ``x``'s values at ``indices`` and zeros elsewhere.
        """
        size: list[int] = []
        if output_size is None:
            for i in range(self.spatial_dims):
                size.append((x.shape[2 + i] - 1) * self.stride[i] + self.kernel_size[i])
        else:
            size = list(output_size[len(output_size) - self.spatial_dims :])
        if self.spatial_dims == 2:
            return torch._C._nn.max_unpool2d(x, indices, size)
        return torch._C._nn.max_unpool3d(x, indices, size, self.stride, self.padding)
