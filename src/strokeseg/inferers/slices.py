"""Whole-volume inference of a 2-D network over axial slices, batched, skipping slices without brain.

The network may take several volumes: extra ``(B, C', H, W, D)`` tensors given to the inferer next to the image
(positional or keyword, as a bundle's ``prepare_batch`` passes them) are sliced alongside it, with the same kept
slices, the same padding and the same mini-batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from strokeseg.errors import DataError
from strokeseg.knobs import BoolKnob, as_bool

__all__ = ["BatchedSliceInferer", "volume_to_slices", "slices_to_volume", "brain_slices", "EMPTY_SLICE_LOGIT_GAP"]

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


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class BatchedSliceInferer(Inferer):
    """Run a 2-D network on all axial slices of ``(B, C, H, W, D)`` volumes as few large batches.

    Slices are stacked into ``(B·D', C, H, W)`` mini-batches of at most ``slice_batch_size`` slices, where ``D'``
    counts only the slices with a non-zero input value (in any of the sliced inputs); the skipped (all-zero,
    outside-the-head) slices get logits ``(0, -1e4, …)`` (background probability 1 after softmax). Slices are
    zero-padded to a multiple of ``spatial_divisor`` for the network (EDD Net needs 4: two 2 × 2 pool / unpool
    stages) and cropped back.

    Several inputs: ``inputs`` may be a sequence of volumes (the first decides the output's meta), and with
    ``slice_extra_inputs`` every further positional or keyword tensor argument of shape ``(B, C', H, W, D)`` (same
    B, H, W, D as the image) is sliced alongside; the network is called as ``network(x0, x1, …, **kwargs)``. A
    network returning a tuple / list of ``(N, C_k, H, W)`` tensors gets each output stitched back into a volume.

    MONAI's ``SliceInferer`` goes through the sliding-window machinery (importance maps, one window per slice)
    and has no way to skip empty slices, so it is both slower and wasteful on the mostly empty top and bottom
    slices of a head scan; hence this inferer.

    Args:
        slice_batch_size: most slices per network call.
        skip_empty: skip slices whose inputs are all zero.
        spatial_divisor: pad H and W to a multiple of this (1 = no padding).
        autocast_bf16: run the network under ``torch.autocast`` in bfloat16 (CPU or CUDA); outputs are float32.
        channels_last: feed the network ``channels_last`` tensors and convert a ``torch.nn.Module`` network's
            parameters to that memory format (faster convolutions on recent CPUs).
        empty_logits: per-output-channel values for skipped slices (default ``(0, -1e4, -1e4, …)``).
        slice_extra_inputs: slice extra volume arguments alongside the image (see above).

    Raises:
        DataError: an input is not ``(B, C, H, W, D)``, or the sliced inputs differ in B, H, W or D.

    Example:
        >>> logits = BatchedSliceInferer(spatial_divisor=4)(dwi_batch, edd_net)  # (B, 2, H, W, D)
        >>> logits = BatchedSliceInferer()((cbf, tmax), two_input_net)  # network(cbf_slices, tmax_slices)
    """

    def __init__(
        self,
        slice_batch_size: int = 64,
        skip_empty: bool = True,
        spatial_divisor: int = 1,
        autocast_bf16: bool = False,
        channels_last: BoolKnob = False,
        empty_logits: Sequence[float] | None = None,
        slice_extra_inputs: bool = True,
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
        self.channels_last = as_bool(channels_last, "channels_last")
        self.empty_logits = None if empty_logits is None else tuple(float(v) for v in empty_logits)
        self.slice_extra_inputs = slice_extra_inputs

    def _fill(self, channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if self.empty_logits is not None:
            if len(self.empty_logits) != channels:
                raise ValueError(f"empty_logits has {len(self.empty_logits)} values; the network gives {channels}.")
            values = torch.tensor(self.empty_logits, dtype=dtype, device=device)
        else:
            values = torch.full((channels,), -EMPTY_SLICE_LOGIT_GAP, dtype=dtype, device=device)
            values[0] = 0.0
        return values.reshape(1, channels, 1, 1)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = self.spatial_divisor
        pad_h, pad_w = (-h) % k, (-w) % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run(self, network: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], hw: tuple[int, int]):
        h, w = hw
        device = next(a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)).device
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            out = network(*args, **kwargs)
        outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else None
        if not outs or not all(isinstance(o, torch.Tensor) and o.ndim == 4 for o in outs):
            raise TypeError(
                "BatchedSliceInferer expects the network to return an (N, C, H, W) tensor or a tuple of them, "
                f"got {type(out).__name__}."
            )
        return [o[..., :h, :w].float() for o in outs], not isinstance(out, torch.Tensor)

    def _is_volume_like(self, value: Any, reference: torch.Tensor) -> bool:
        return (
            self.slice_extra_inputs
            and isinstance(value, torch.Tensor)
            and value.ndim == 5
            and value.shape[0] == reference.shape[0]
            and value.shape[2:] == reference.shape[2:]
        )

    def __call__(
        self,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        network: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Infer ``(B, C, H, W, D)`` → ``(B, C_out, H, W, D)`` float32 (a MetaTensor image keeps its meta).

        Args:
            inputs: batch of volumes, slices along the last axis; or a sequence of such volumes.
            network: 2-D network ``(N, C, H', W')[, (N, C', H', W'), …] → (N, C_out, H', W')`` (or a tuple).
            args, kwargs: passed on to ``network``; volume-shaped tensors are sliced (see the class docstring).

        Returns:
            The stitched output, or a tuple of them when the network returns several outputs.
        """
        volumes = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        if not volumes or any(not isinstance(v, torch.Tensor) or v.ndim != 5 for v in volumes):
            shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in volumes]
            raise DataError(f"BatchedSliceInferer expects (B, C, H, W, D) inputs, got {shapes}.")
        image = volumes[0]
        for v in volumes[1:]:
            if v.shape[0] != image.shape[0] or v.shape[2:] != image.shape[2:]:
                raise DataError(
                    f"BatchedSliceInferer: input of shape {tuple(v.shape)} does not match the image's B, H, W, D "
                    f"{tuple(image.shape)}."
                )
        positional = [*volumes, *args]
        sliced_pos = [i for i, a in enumerate(positional) if i < len(volumes) or self._is_volume_like(a, image)]
        sliced_kw = [k for k, v in kwargs.items() if self._is_volume_like(v, image)]
        batch = image.shape[0]
        slices_of = {("p", i): volume_to_slices(_plain(positional[i])) for i in sliced_pos}
        slices_of.update({("k", k): volume_to_slices(_plain(kwargs[k])) for k in sliced_kw})
        first = slices_of[("p", 0)]
        n, hw = first.shape[0], tuple(first.shape[-2:])
        if self.skip_empty:
            keep = torch.zeros(n, dtype=torch.bool, device=first.device)
            for s in slices_of.values():
                keep |= brain_slices(s).to(first.device)
        else:
            keep = torch.ones(n, dtype=torch.bool, device=first.device)
        index = torch.nonzero(keep).flatten()
        if index.numel() == 0:
            index = torch.zeros(1, dtype=torch.long, device=first.device)  # one call, only to learn C_out
        if self.channels_last and isinstance(network, torch.nn.Module):
            network.to(memory_format=torch.channels_last)

        chunks, several = [], False
        for chunk in index.split(self.slice_batch_size):
            call_args = list(positional)
            call_kwargs = dict(kwargs)
            for i in sliced_pos:
                call_args[i] = self._prepare(slices_of[("p", i)].index_select(0, chunk))
            for k in sliced_kw:
                call_kwargs[k] = self._prepare(slices_of[("k", k)].index_select(0, chunk))
            outs, several = self._run(network, call_args, call_kwargs, hw)
            chunks.append(outs)

        results = []
        for k in range(len(chunks[0])):
            pieces = [c[k] for c in chunks]
            fill = self._fill(pieces[0].shape[1], pieces[0].dtype, pieces[0].device)
            result = fill.expand(n, -1, *hw).clone()
            result[index] = torch.cat(pieces)
            result[~keep.to(result.device)] = fill
            volume = slices_to_volume(result, batch)
            if isinstance(image, MetaTensor):
                volume = convert_to_dst_type(volume, image, dtype=volume.dtype)[0]
            results.append(volume)
        return tuple(results) if several else results[0]
