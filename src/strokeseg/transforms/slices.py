"""Whole-volume inference of a 2-D network over axial slices, batched, skipping slices without brain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from strokeseg.errors import DataError

__all__ = ["BatchedSliceInferer", "volume_to_slices", "slices_to_volume", "brain_slices"]

# Logit gap written to skipped slices: softmax gives background probability exp(0) / (exp(0) + exp(-1e4)) == 1.0
# in float32, and every argmax gives class 0, while staying finite for losses and sigmoid.
EMPTY_SLICE_LOGIT_GAP = 1.0e4


def volume_to_slices(volume: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W, D)`` → ``(B·D, C, H, W)``: every axial slice becomes a batch item (slice ``d`` of case ``b`` is
    item ``b·D + d``)."""
    b, c, h, w, d = volume.shape
    return volume.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)


def slices_to_volume(slices: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Inverse of :func:`volume_to_slices`: ``(B·D, C, H, W)`` → ``(B, C, H, W, D)``."""
    n, c, h, w = slices.shape
    return slices.reshape(batch_size, n // batch_size, c, h, w).permute(0, 2, 3, 4, 1)


def brain_slices(slices: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` → bool ``(N,)``: slices holding at least one non-zero input value (the rest carry no brain)."""
    return slices.reshape(slices.shape[0], -1).ne(0).any(dim=1)


class BatchedSliceInferer(Inferer):
    """Run a 2-D network on all axial slices of ``(B, C, H, W, D)`` volumes as few large batches.

    Slices are stacked into ``(B·D', C, H, W)`` mini-batches of at most ``slice_batch_size`` slices, where ``D'``
    counts only the slices with a non-zero input value; the skipped (all-zero, outside-the-head) slices get
    logits ``(0, -1e4, …)`` (background probability 1 after softmax). Slices are zero-padded to a multiple of
    ``spatial_divisor`` for the network (EDD Net needs 4: two 2 × 2 pool / unpool stages) and cropped back.

    MONAI's ``SliceInferer`` goes through the sliding-window machinery (importance maps, one window per slice)
    and has no way to skip empty slices, so it is both slower and wasteful on the mostly empty top and bottom
    slices of a head scan; hence this inferer.

    Args:
        slice_batch_size: most slices per network call.
        skip_empty: skip slices whose input is all zero.
        spatial_divisor: pad H and W to a multiple of this (1 = no padding).
        autocast_bf16: run the network under ``torch.autocast`` in bfloat16 (CPU or CUDA); outputs are float32.
        channels_last: feed the network ``channels_last`` tensors and convert a ``torch.nn.Module`` network's
            parameters to that memory format (faster convolutions on recent CPUs).
        empty_logits: per-output-channel values for skipped slices (default ``(0, -1e4, -1e4, …)``).

    Raises:
        DataError: the input is not ``(B, C, H, W, D)``.

    Example:
        >>> logits = BatchedSliceInferer(spatial_divisor=4)(dwi_batch, edd_net)  # (B, 2, H, W, D)
    """

    def __init__(
        self,
        slice_batch_size: int = 64,
        skip_empty: bool = True,
        spatial_divisor: int = 1,
        autocast_bf16: bool = False,
        channels_last: bool = False,
        empty_logits: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if slice_batch_size < 1:
            raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}.")
        if spatial_divisor < 1:
            raise ValueError(f"spatial_divisor must be >= 1, got {spatial_divisor}.")
        self.slice_batch_size = int(slice_batch_size)
        self.skip_empty = skip_empty
        self.spatial_divisor = int(spatial_divisor)
        self.autocast_bf16 = autocast_bf16
        self.channels_last = channels_last
        self.empty_logits = None if empty_logits is None else tuple(float(v) for v in empty_logits)

    def _fill(self, channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if self.empty_logits is not None:
            if len(self.empty_logits) != channels:
                raise ValueError(f"empty_logits has {len(self.empty_logits)} values; the network gives {channels}.")
            values = torch.tensor(self.empty_logits, dtype=dtype, device=device)
        else:
            values = torch.full((channels,), -EMPTY_SLICE_LOGIT_GAP, dtype=dtype, device=device)
            values[0] = 0.0
        return values.reshape(1, channels, 1, 1)

    def _run(self, network: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = self.spatial_divisor
        pad_h, pad_w = (-h) % k, (-w) % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            out = network(x, *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"BatchedSliceInferer expects the network to return a tensor, got {type(out).__name__}.")
        return out[..., :h, :w].float()

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Infer ``(B, C, H, W, D)`` → ``(B, C_out, H, W, D)`` float32 (a MetaTensor input keeps its meta).

        Args:
            inputs: batch of volumes, slices along the last axis.
            network: 2-D network ``(N, C, H', W') → (N, C_out, H', W')``.
            args, kwargs: passed on to ``network``.
        """
        if inputs.ndim != 5:
            raise DataError(f"BatchedSliceInferer expects (B, C, H, W, D) inputs, got shape {tuple(inputs.shape)}.")
        source = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        batch = source.shape[0]
        slices = volume_to_slices(source)
        keep = brain_slices(slices) if self.skip_empty else torch.ones(len(slices), dtype=torch.bool)
        keep = keep.to(slices.device)
        index = torch.nonzero(keep).flatten()
        if index.numel() == 0:
            index = torch.zeros(1, dtype=torch.long, device=slices.device)  # one call, only to learn C_out
        if self.channels_last and isinstance(network, torch.nn.Module):
            network.to(memory_format=torch.channels_last)

        outputs = [
            self._run(network, slices.index_select(0, chunk), *args, **kwargs)
            for chunk in index.split(self.slice_batch_size)
        ]
        first = outputs[0]
        result = self._fill(first.shape[1], first.dtype, first.device).expand(len(slices), -1, *slices.shape[-2:])
        result = result.clone()
        result[index] = torch.cat(outputs)
        result[~keep.to(result.device)] = self._fill(first.shape[1], first.dtype, first.device)
        volume = slices_to_volume(result, batch)
        if isinstance(inputs, MetaTensor):
            return convert_to_dst_type(volume, inputs, dtype=volume.dtype)[0]
        return volume
