"""FLOPs of a network's recorded calls, and the share of them that is useful (the numerator of P1).

FLOPs are counted on the calls inference made (``torch.utils.flop_counter``); the *useful* FLOPs scale them by
``min(1, predicted voxels / voxels the calls produced)``, which removes sliding-window overlap: P1 counts the
network over the brain's bounding box once.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from strokeseg.errors import BundleError
from strokeseg.tools.bench.calls import RECORD_SUMMARY, NetworkCall, batch_voxels, load_calls, map_tensors, tensors_in
from strokeseg.tools.bench.peak import count_flops

__all__ = ["count_call_flops", "useful_fraction", "recorded_call_numbers"]

logger = logging.getLogger(__name__)

FlopCount = Callable[[tuple, dict], int]


def _batch_slice(call: NetworkCall, n: int) -> tuple[tuple, dict]:
    """The call's arguments cut to their first ``n`` items: every tensor whose leading size is the call's batch."""
    cut = lambda t: t[:n] if t.ndim > 0 and t.shape[0] == call.items else t  # noqa: E731
    return map_tensors(cut, call.args), map_tensors(cut, call.kwargs)


def _item_signature(call: NetworkCall) -> tuple:
    """Shapes of the tensor arguments with the batch dimension left out: calls that cost the same per item."""
    return tuple(s[1:] if s and s[0] == call.items else s for s in call.signature())


def _meta_counter(network: torch.nn.Module) -> FlopCount:
    """``count(args, kwargs)`` with ``network`` on PyTorch's ``meta`` device: shapes only, no arithmetic."""
    meta = copy.deepcopy(network).to("meta")
    to_meta = lambda t: t.to("meta")  # noqa: E731
    return lambda args, kwargs: count_flops(meta, *map_tensors(to_meta, args), **map_tensors(to_meta, kwargs))


def count_call_flops(network: torch.nn.Module, calls: Sequence[NetworkCall]) -> tuple[int, str]:
    """FLOPs of all ``calls``, counted per item where that is exact, and the device they were counted on.

    Calls whose arguments differ only in batch size cost the same per item. For each such group the network is
    counted on one item and on two; where two items cost exactly twice one item, the group's FLOPs are per item
    × its items. Otherwise (a network whose cost is not linear in the batch) each distinct argument-shape
    signature is counted as it was called. ``FlopCounterMode`` runs the network, so a copy of it on the ``meta``
    device is counted (the same formulas on the shapes alone; a whole forward on an AVX2 machine otherwise, 15 s
    for DeepMedic), and the network itself where a layer has no meta kernel.

    Returns:
        ``(flops, "meta" or "cpu")``.
    """
    try:
        return _count_call_flops(_meta_counter(network), calls), "meta"
    except (NotImplementedError, RuntimeError, TypeError, ValueError) as err:
        logger.info("FLOPs of %s counted on the CPU (not on meta: %s)", type(network).__name__, err)
    plain = lambda args, kwargs: count_flops(network, *args, **kwargs)  # noqa: E731
    return _count_call_flops(plain, calls), "cpu"


def _count_call_flops(count: FlopCount, calls: Sequence[NetworkCall]) -> int:
    def as_called(same_cost: Sequence[NetworkCall]) -> int:
        by_shape: dict[tuple, list[NetworkCall]] = {}
        for call in same_cost:
            by_shape.setdefault(call.signature(), []).append(call)
        return sum(count(c[0].args, c[0].kwargs) * len(c) for c in by_shape.values())

    groups: dict[tuple, list[NetworkCall]] = {}
    for call in calls:
        groups.setdefault(_item_signature(call), []).append(call)
    total = 0
    with torch.inference_mode():
        for group in groups.values():
            largest = max(group, key=lambda c: c.items)
            one = count(*_batch_slice(largest, 1))
            if largest.items > 1 and count(*_batch_slice(largest, 2)) != 2 * one:
                total += as_called(group)
                continue
            total += one * sum(c.items for c in group)
    return int(total)


def useful_fraction(calls: Sequence[NetworkCall], predicted_voxels: int) -> float:
    """``min(1, predicted voxels / voxels the calls produced)``: 1 without overlap, < 1 with overlapping windows."""
    produced = sum(c.output_voxels for c in calls)
    return 1.0 if produced <= 0 else min(1.0, predicted_voxels / produced)


def recorded_call_numbers(
    folder: Path, network: torch.nn.Module, peak: Mapping[str, Any], label: str
) -> dict[str, Any]:
    """The calls recorded in ``folder`` (with the inferer's shapes beside them), their FLOPs and P1's denominator.

    Args:
        folder: where the end-to-end child's first run recorded the calls.
        network: the bundle's network (FLOPs are counted on a copy of it).
        peak: the run's peak record: the fp32 conv peak of the network's dimensionality is P1's denominator.
        label: the bundle's name, for messages.

    Returns:
        ``calls``, ``summary`` (what the inferer got and gave), ``first_input``, ``spatial_dims``, ``items``,
        ``flops_computed``, ``flops_counted_on``, ``fraction`` (:func:`useful_fraction`), ``flops_useful``,
        ``peak_key`` and ``peak_gflops``.

    Raises:
        BundleError: the network's input is neither 2-D nor 3-D.
    """
    calls = load_calls(folder)
    summary = json.loads((folder / RECORD_SUMMARY).read_text())
    first_input = (tensors_in(calls[0].args) or tensors_in(calls[0].kwargs))[0]
    spatial_dims = first_input.ndim - 2
    if spatial_dims not in (2, 3):
        raise BundleError(f"{label}: network input of shape {list(first_input.shape)} is neither 2-D nor 3-D.")
    flops, counted_on = count_call_flops(network, calls)
    predicted = sum(batch_voxels(shape) for shape in summary["predictions"])
    fraction = useful_fraction(calls, predicted)
    return {
        "calls": calls,
        "summary": summary,
        "first_input": first_input,
        "spatial_dims": spatial_dims,
        "items": sum(c.items for c in calls),
        "flops_computed": flops,
        "flops_counted_on": counted_on,
        "fraction": fraction,
        "flops_useful": flops * fraction,
        "peak_key": f"conv{spatial_dims}d_fp32",
        "peak_gflops": float(peak[f"conv{spatial_dims}d_fp32"]["gflops"]),
    }
