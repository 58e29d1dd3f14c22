"""Dense inference of a valid-convolution network over large non-overlapping tiles (DeepMedic's inference).

A valid-convolution network maps an input tile of ``T`` voxels to ``T - 2 * margin`` outputs, each of which depends
only on voxels of its tile. Tiling the volume with a stride equal to the output size, after padding it by the margin
(reflection by default), therefore gives every voxel exactly one prediction, with nothing to average and no seam:
the segmentation does not depend on the tile size (Pérez Malla et al. 2019, §2.2; Kamnitsas et al., 2017,
doi:10.1016/j.media.2016.10.004, §2.1). MONAI's ``SlidingWindowInferer`` assumes an output the size of its window
and blends overlapping windows, so it cannot run such a network; hence this inferer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from strokeseg.errors import DataError
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.transforms.padding import padding_index

__all__ = ["ValidTileInferer"]

PADDING_MODES = ("reflect", "replicate", "constant")


MAX_SPLIT = 16  # tiles per dimension that the voxel-budget split considers


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _per_dim(value: int | Sequence[int], dims: int, name: str) -> list[int]:
    values = [int(value)] * dims if isinstance(value, (int, float)) else [int(v) for v in value]
    if len(values) != dims:
        raise ValueError(f"{name} has {len(values)} entries for a {dims}-D input: {values}")
    return values


class ValidTileInferer(Inferer):
    """Infer ``(B, C, *S)`` -> ``(B, C_out, *S)`` with a network whose outputs are ``2 * margin`` smaller than its
    inputs, over tiles of ``tile_size``, stride = output size, no overlap and no averaging.

    The volume is padded by ``margin`` on both sides (``padding_mode``) and, at the end, by as much as the last tile
    needs; the outputs of the padded part are dropped. Each tile's output size must be a multiple of
    ``output_multiple`` (DeepMedic: its subsampling factor, so that the low-resolution grid lands on the same voxels
    in every tile). Where the volume is smaller than one tile's output, the tile is shrunk to the smallest output
    multiple that covers it. Extra positional and keyword arguments are passed on to the network unchanged.

    Args:
        tile_size: input tile (per dimension or one int), e.g. 80 for DeepMedic outputs of 30³.
        margin: input minus output size, per side; ``None``: the network's ``margin`` attribute.
        output_multiple: ``None``: the network's ``output_multiple`` attribute, else 1.
        tile_batch_size: tiles per network call.
        padding_mode: ``"reflect"`` (DeepMedic), ``"replicate"`` or ``"constant"`` (zeros).
        autocast_bf16: run the network under ``torch.autocast`` in bfloat16; outputs are float32.
        max_tile_voxels: choose the tiles per volume instead of ``tile_size``: the split (tiles per dimension) with
            the fewest input voxels in all, each tile holding at most this many input voxels (memory grows with
            it; outputs split evenly, each a multiple of ``output_multiple``). ``tile_size`` is then only used
            when no split fits the budget (a tile of ``tile_size`` is always allowed).
        channels_last: feed the network channels-last tiles (``channels_last_3d`` in 3-D) and convert a
            ``torch.nn.Module`` network's parameters to that memory format (oneDNN's faster convolutions on
            CPUs; the values are the same up to float rounding).

    Raises:
        DataError: an input that is not ``(B, C, *S)`` with the tile's number of spatial dimensions.
        ValueError: a tile whose output size is not a positive multiple of ``output_multiple``.

    Example:
        >>> net = DeepMedic().eval()  # margin 25, output multiple 3
        >>> logits = ValidTileInferer(tile_size=80)(image, net)  # tiles 80³ -> 30³ outputs
    """

    def __init__(
        self,
        tile_size: int | Sequence[int],
        margin: int | Sequence[int] | None = None,
        output_multiple: int | Sequence[int] | None = None,
        tile_batch_size: int = 1,
        padding_mode: str = "reflect",
        autocast_bf16: bool = False,
        channels_last: BoolKnob = False,
        max_tile_voxels: int | None = None,
    ) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be >= 1, got {tile_batch_size}")
        self.tile_size = tile_size
        self.margin = margin
        self.output_multiple = output_multiple
        self.tile_batch_size = int(tile_batch_size)
        self.padding_mode = padding_mode
        self.autocast_bf16 = bool(autocast_bf16)
        self.channels_last = as_bool(channels_last, "channels_last")
        if max_tile_voxels is not None and int(max_tile_voxels) < 1:
            raise ValueError(f"max_tile_voxels must be >= 1 or None, got {max_tile_voxels}")
        self.max_tile_voxels = None if max_tile_voxels is None else int(max_tile_voxels)

    def geometry(self, network: Any, spatial: Sequence[int]) -> tuple[list[int], list[int]]:
        """Margin and tile output size per dimension for a volume of spatial shape ``spatial``."""
        dims = len(spatial)
        margin = self.margin if self.margin is not None else getattr(network, "margin", None)
        if margin is None:
            raise ValueError("ValidTileInferer: give margin=..., or a network with a 'margin' attribute")
        margins = _per_dim(margin, dims, "margin")
        multiple = self.output_multiple if self.output_multiple is not None else getattr(network, "output_multiple", 1)
        multiples = _per_dim(multiple, dims, "output_multiple")
        tiles = _per_dim(self.tile_size, dims, "tile_size")
        outputs = []
        for d in range(dims):
            out = tiles[d] - 2 * margins[d]
            if out < 1 or out % multiples[d] != 0:
                raise ValueError(
                    f"ValidTileInferer: tile size {tiles[d]} gives {out} outputs (tile - 2 * margin {margins[d]}); "
                    f"it must be a positive multiple of {multiples[d]}"
                )
            covering = math.ceil(spatial[d] / multiples[d]) * multiples[d]
            outputs.append(min(out, covering))
        if self.max_tile_voxels is not None:
            outputs = self._budget_outputs(spatial, margins, multiples, outputs)
        return margins, outputs

    def _budget_outputs(
        self, spatial: Sequence[int], margins: list[int], multiples: list[int], fallback: list[int]
    ) -> list[int]:
        """Per-dimension output sizes of the split with the fewest input voxels whose tiles fit the budget."""

        def even(size: int, count: int, multiple: int) -> int:
            return math.ceil(math.ceil(size / count) / multiple) * multiple

        options = []
        for d, size in enumerate(spatial):
            cells = math.ceil(size / multiples[d])
            sizes = sorted({even(size, n, multiples[d]) for n in range(1, min(cells, MAX_SPLIT) + 1)}, reverse=True)
            options.append([(o, math.ceil(size / o)) for o in sizes])  # (output size, tiles) per dimension
        best: tuple[int, list[int]] | None = None
        fallback_work = math.prod(
            math.ceil(s / o) * (o + 2 * m) for s, o, m in zip(spatial, fallback, margins, strict=True)
        )
        for combo in itertools.product(*options):
            tile_voxels = math.prod(o + 2 * m for (o, _), m in zip(combo, margins, strict=True))
            if tile_voxels > self.max_tile_voxels:
                continue
            work = math.prod(n * (o + 2 * m) for (o, n), m in zip(combo, margins, strict=True))
            if best is None or work < best[0]:
                best = (work, [o for o, _ in combo])
        if best is None or best[0] >= fallback_work:
            return fallback
        return best[1]

    def _pad(self, x: torch.Tensor, margins: list[int], ends: list[int]) -> torch.Tensor:
        if self.padding_mode == "constant":
            pads: list[int] = []
            for m, e in zip(reversed(margins), reversed(ends), strict=True):
                pads += [m, e]
            return F.pad(x, pads)
        for d, (m, e) in enumerate(zip(margins, ends, strict=True)):
            x = x.index_select(2 + d, padding_index(x.shape[2 + d], m, e, self.padding_mode, x.device))
        return x

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Tile ``inputs`` ``(B, C, *S)`` and return the network's ``(B, C_out, *S)`` float32 output (a MetaTensor
        input keeps its meta)."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 3:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise DataError(f"ValidTileInferer expects a (B, C, *spatial) tensor, got {shape}")
        image = _plain(inputs)
        spatial = list(image.shape[2:])
        margins, outputs = self.geometry(network, spatial)
        counts = [math.ceil(s / o) for s, o in zip(spatial, outputs, strict=True)]
        ends = [m + n * o - s for m, n, o, s in zip(margins, counts, outputs, spatial, strict=True)]
        padded = self._pad(image, margins, ends)
        starts = list(itertools.product(*[range(0, n * o, o) for n, o in zip(counts, outputs, strict=True)]))
        tile = [o + 2 * m for o, m in zip(outputs, margins, strict=True)]
        batch = image.shape[0]
        memory_format = torch.contiguous_format
        if self.channels_last and len(spatial) in (2, 3):
            memory_format = torch.channels_last if len(spatial) == 2 else torch.channels_last_3d
            if isinstance(network, torch.nn.Module):
                network.to(memory_format=memory_format)
        result: torch.Tensor | None = None
        pending = [(b, start) for start in starts for b in range(batch)]
        for first in range(0, len(pending), self.tile_batch_size):
            chunk = pending[first : first + self.tile_batch_size]
            pieces = []
            for b, start in chunk:
                piece = padded[b : b + 1]
                for d in range(len(spatial)):
                    piece = piece.narrow(2 + d, start[d], tile[d])
                pieces.append(piece)
            with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                out = network(torch.cat(pieces).contiguous(memory_format=memory_format), *args, **kwargs)
            if not isinstance(out, torch.Tensor) or list(out.shape[2:]) != outputs:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"ValidTileInferer: the network turned tiles of {tile} into {got}, not the expected "
                    f"outputs of {outputs} (margin {margins})"
                )
            out = out.float()
            if result is None:
                full = [n * o for n, o in zip(counts, outputs, strict=True)]
                result = torch.empty(batch, out.shape[1], *full, dtype=torch.float32, device=out.device)
            for k, (b, start) in enumerate(chunk):
                target = result[b]
                for d in range(len(spatial)):
                    target = target.narrow(1 + d, start[d], outputs[d])
                target.copy_(out[k])
        assert result is not None  # at least one tile
        for d, s in enumerate(spatial):
            result = result.narrow(2 + d, 0, s)
        result = result.contiguous()
        if isinstance(inputs, MetaTensor):
            result = convert_to_dst_type(result, inputs, dtype=result.dtype)[0]
        return result
