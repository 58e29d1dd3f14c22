"""P3 of ``stroke_mri_uresnet_focal``: paper-faithful patch inference ÷ fast sliding-window inference.

P3 (``docs/performance.md``) is the paper-faithful patch inference time (``FaithfulPatchInferer``: every
24 × 24 × 16 patch whose centre is in the head, at a 4 × 4 × 1 step, probabilities averaged) ÷ the fast inference
time, valid only with Dice(fast binary, faithful binary) ≥ 0.95. The faithful mode over a whole 230 × 230 × 154
case takes tens of minutes on 2 cores, so it is **extrapolated** (:mod:`.faithful_patch_grid`):

- the whole case's patches are counted exactly with the inferer's own rule (``faithful_origins``, i.e.
  ``FaithfulPatchInferer.patch_origins`` on the image it pads exactly as its ``__call__`` does);
- the inferer's real ``__call__`` runs over the whole preprocessed case with its patches restricted to a block
  of consecutive grid origins (``SelectedPatchInferer``); once more with no patch at all, which is the
  fixed cost of one run (patch selection, whole-volume accumulators, normalisation). The whole-case faithful
  time is ``fixed + (block − fixed) / block patches × all patches`` (``extrapolate_seconds``);
- the fast time is the default variant's bare forward of the generic record: the network alone over exactly
  the windows the fast mode uses (its blending costs a little more, so P3 is slightly optimistic by that), and
  P3 is also given against the end-to-end time, with the faithful network time in place of the fast one. Both
  sides run in that variant's precision and memory format (``strokeseg.runtime.precision.PrecisionInferer``), so
  a bf16 fast time is never divided into an fp32 faithful one.

**Dice(fast, faithful)** is computed where the block run's output *is* the whole-case faithful output: voxels
whose every covering patch of the whole case is in the block (``exact_region``, from patch coverage counts).
The fast output there is the whole case's fast output too: the bundle's ``SlidingWindowInferer`` runs over the
whole case with ``with_coord`` and the network is evaluated only on the windows that touch the region (the
others contribute zeros to voxels outside it), so no window layout or blending differs from a full run. The
block is centred on a boundary voxel of the lesion that the harness's end-to-end run wrote (else on the head's
centre), so that the region holds both classes; both binaries are ``probability ≥ threshold`` (the bundle's
``threshold``, no small-lesion removal: that needs the whole volume). With untrained weights the Dice says
little about a trained network; pass trained checkpoints (``bench_bundle(ckpt_dir=...)``) for the real check.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.inferers import SimpleInferer
from monai.utils import ensure_tuple_rep, fall_back_tuple
from scipy import ndimage

from strokeseg.errors import BundleError
from strokeseg.inferers.patches import FaithfulPatchInferer
from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics
from strokeseg.runtime.precision import PrecisionInferer
from strokeseg.tools.bench.calls import plain_tensor
from strokeseg.tools.bench.hooks.faithful_patch_grid import (
    SelectedPatchInferer,
    exact_region,
    extrapolate_seconds,
    faithful_origins,
    isin_rows,
    padded_as_inferer,
    select_block,
    spatial_shape,
)
from strokeseg.tools.bench.targets import P3_DICE_MIN, TARGETS, p3_verdict
from strokeseg.tools.bench.timing import NetworkTimer, time_call
from strokeseg.tools.bench.variants import VARIANTS, measured_variant
from strokeseg.transforms.foreground import brain_mask

__all__ = [
    "P3_TARGET",
    "P3_DICE_MIN",
    "END_TO_END_KEY",
    "dice",
    "fast_output_in_region",
    "faithful_p3",
]

P3_TARGET = TARGETS["P3"].threshold  # faithful ÷ fast ≥ 50 with Dice(fast, faithful) ≥ 0.95
END_TO_END_KEY = "end_to_end_median_s"

EXTRAPOLATION_NOTE = (
    "faithful whole-case seconds extrapolated from a block of the case: the real FaithfulPatchInferer run over the "
    "whole preprocessed case with its patches restricted to the block, plus its fixed cost (a run with no patch), "
    "scaled to the exact number of patches the faithful mode takes over the whole case"
)
UNTRAINED_DICE_NOTE = (
    "weights are untrained, so Dice(fast, faithful) compares two random networks' outputs; pass trained checkpoints "
    "for the P3 condition to mean anything"
)


def dice(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Dice of two binary masks (the evaluation toolkit's); ``None`` when both are empty (nothing to compare)."""
    tp, fp, fn, tn = confusion_counts(a.bool().numpy(), b.bool().numpy())
    return None if tp + fp + fn == 0 else confusion_metrics(tp, fp, fn, tn)["dice"]


def _region_box(region: torch.Tensor) -> tuple[list[int], list[int]]:
    """Inclusive-exclusive bounding box of a non-empty bool volume."""
    idx = region.nonzero()
    return idx.min(0).values.tolist(), (idx.max(0).values + 1).tolist()


def fast_output_in_region(
    inferer, network: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, box: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """The fast inferer's whole-case output, evaluating the network only on the windows that touch ``box``.

    A shallow copy of the (MONAI ``SlidingWindowInferer``) ``inferer`` with ``with_coord`` runs over the whole
    ``inputs`` ``(1, C, X, Y, Z)``: same windows, weights and blending as a full run. Windows that do not touch
    the box ``(lo, hi)`` get zeros instead of the network, which changes only voxels outside the box.

    Returns:
        ``output`` (the blended output, exact inside the box), ``windows`` (of the whole case), ``evaluated``
        (windows the network ran on) and ``network_s`` (seconds of those network calls).
    """
    lo, hi = box
    spatial = inputs.shape[2:]
    roi = [int(r) for r in fall_back_tuple(ensure_tuple_rep(inferer.roi_size, len(spatial)), tuple(spatial))]
    offset = [max(r - n, 0) // 2 for r, n in zip(roi, spatial, strict=True)]  # MONAI pads small images centrally
    stats = {"windows": 0, "evaluated": 0, "network_s": 0.0, "classes": None}

    def touches(window_slices) -> bool:
        for axis, s in enumerate(window_slices[2:]):
            start, stop = s.start - offset[axis], s.stop - offset[axis]
            if stop <= lo[axis] or start >= hi[axis]:
                return False
        return True

    def predictor(window: torch.Tensor, slices, *args, **kwargs) -> torch.Tensor:
        stats["windows"] += len(slices)
        wanted = [i for i, s in enumerate(slices) if touches(s)]
        if stats["classes"] is None or wanted:
            start = time.perf_counter()
            out = network(window[wanted or [0]], *args, **kwargs)  # one untimed window to learn the classes
            if wanted:
                stats["network_s"] += time.perf_counter() - start
            stats["evaluated"] += len(wanted)
            stats["classes"] = int(out.shape[1])
            full = out.new_zeros((window.shape[0], *out.shape[1:]))
            if wanted:
                full[wanted] = out
            return full
        return window.new_zeros((window.shape[0], stats["classes"], *window.shape[2:]))

    partial = copy.copy(inferer)
    partial.with_coord = True
    output = partial(inputs, predictor)
    return {
        "output": output,
        "windows": stats["windows"],
        "evaluated": stats["evaluated"],
        "network_s": stats["network_s"],
    }


def _lesion_centre(context: Mapping[str, Any], image) -> tuple[list[int] | None, str]:
    """A boundary voxel of the harness's end-to-end lesion mask nearest its centroid, in preprocessed voxels."""
    record, description = context["record"], context["description"]
    variant = measured_variant(record)
    affine = getattr(image, "affine", None)
    if variant is None or affine is None:
        return None, "no end-to-end output or no affine"
    try:
        outputs = description.outputs_for(context["case"])
        rel = next((r for r in outputs if r.endswith("_seg.nii.gz")), outputs[0])
        path = Path(context["work"]) / f"out_{variant}" / rel
        seg = nib.load(str(path))
        mask = np.asarray(seg.dataobj) > 0
        mask = mask.reshape(mask.shape[:3]) if mask.ndim > 3 else mask
        if not mask.any():
            return None, f"the fast end-to-end mask {path.name} is empty"
        boundary = mask & ~ndimage.binary_erosion(mask)
        points = np.argwhere(boundary if boundary.any() else mask)
        centroid = np.argwhere(mask).mean(axis=0)
        voxel = points[np.argmin(((points - centroid) ** 2).sum(axis=1))]
        to_pre = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(seg.affine, dtype=np.float64)
        centre = (to_pre @ np.append(voxel, 1.0))[:3]
    except Exception as err:  # noqa: BLE001 - the centre is a convenience; the head's centre is the fallback
        return None, f"could not read the end-to-end mask ({type(err).__name__}: {err})"
    spatial = spatial_shape(image)
    return [int(min(max(round(c), 0), n - 1)) for c, n in zip(centre, spatial, strict=True)], "lesion boundary"


def _head_centre(image: torch.Tensor) -> list[int]:
    mask = brain_mask(image, background="minimum")
    idx = mask.nonzero().double()
    if len(idx) == 0:
        return [n // 2 for n in spatial_shape(image)]
    return [int(round(v)) for v in idx.mean(0).tolist()]


def faithful_p3(context: Mapping[str, Any], counts: Sequence[int]) -> dict[str, Any]:
    """P3's numbers on the bench case: patch counts, block and empty runs, extrapolation, fast region, Dice."""
    parser, network = context["parser"], context["network"]
    record = context["record"]
    base: FaithfulPatchInferer = parser.get_parsed_content("patch_inferer")
    fast = parser.get_parsed_content("fast_inferer")
    threshold = float(parser.get_parsed_content("threshold"))
    item_image = context["item"]["image"]
    image = plain_tensor(item_image).float()
    inputs = image[None]

    start = time.perf_counter()
    origins = faithful_origins(base, image)
    count_s = time.perf_counter() - start
    total = int(len(origins))
    centre, centre_source = _lesion_centre(context, item_image)
    if centre is None:
        centre, centre_source = _head_centre(image), f"head centre ({centre_source})"
    selected = select_block(origins, centre, counts, base.patch_size)
    measured = int(selected.sum())
    if measured == 0:
        raise BundleError("P3: the faithful block holds no patch (empty head?)")
    padded_shape = spatial_shape(padded_as_inferer(base, image))
    region = exact_region(origins, selected, padded_shape, base.patch_size)
    region = region[: image.shape[1], : image.shape[2], : image.shape[3]]
    chosen = origins[selected]

    # the faithful and the fast side run in the precision and memory format of the variant P3 divides by
    variant = measured_variant(record)
    if variant is None:
        raise BundleError("P3: no inference variant was measured, so there is no fast time to divide by.")
    channels_last, bf16 = VARIANTS[variant]

    def precise(inferer):
        return PrecisionInferer(inferer, autocast_bf16=bf16, channels_last=channels_last)

    simple = precise(SimpleInferer())

    def precise_network(x, *args, **kwargs):
        return simple(x, network, *args, **kwargs)

    empty = precise(SelectedPatchInferer(base, lambda c: torch.zeros(len(c), dtype=torch.bool)))
    selected_inferer = SelectedPatchInferer(base, lambda c: isin_rows(c, chosen))  # the inferer's origins are ours
    block = precise(selected_inferer)
    network.eval()
    with torch.inference_mode():
        fixed_s = time_call(lambda: empty(inputs, network))[0]
        with NetworkTimer(network) as timer:
            block_s, faithful = time_call(lambda: block(inputs, network))
    if selected_inferer.last_num_patches != measured:
        raise BundleError(
            f"P3: the block run evaluated {selected_inferer.last_num_patches} patches, expected {measured}"
        )
    faithful_s = extrapolate_seconds(block_s, measured, total, fixed_s)
    faithful_network_s = timer.seconds / measured * total

    verdict_dice, fast_numbers, region_numbers = None, {}, {"voxels": int(region.sum())}
    if region.any():
        lo, hi = _region_box(region)
        with torch.inference_mode():
            fast_run = fast_output_in_region(fast, precise_network, inputs, (lo, hi))
        fast_prob = torch.softmax(fast_run["output"].float(), dim=1)[0, 1][region]
        faithful_prob = torch.exp(faithful.float())[0, 1][region]
        fast_bin, faithful_bin = fast_prob >= threshold, faithful_prob >= threshold
        verdict_dice = dice(fast_bin, faithful_bin)
        region_numbers.update(
            {
                "box": [lo, hi],
                "fast_positive": int(fast_bin.sum()),
                "faithful_positive": int(faithful_bin.sum()),
                "agreement": round(float((fast_bin == faithful_bin).float().mean()), 4),
                "probability_mean_abs_diff": round(float((fast_prob - faithful_prob).abs().mean()), 4),
                "probability_max_abs_diff": round(float((fast_prob - faithful_prob).abs().max()), 4),
            }
        )
        fast_numbers = {
            "windows_whole_case": fast_run["windows"],
            "windows_evaluated": fast_run["evaluated"],
            "network_seconds_per_window": round(fast_run["network_s"] / max(fast_run["evaluated"], 1), 4),
        }

    numbers = record["variants"][variant]
    fast_s = float(numbers["bare_forward_median_s"])
    e2e_s = float(numbers[END_TO_END_KEY])
    ratio = faithful_s / fast_s if fast_s > 0 else None
    # the faithful mode end to end: the same run with the fast network time replaced by the faithful inference
    e2e_ratio = (e2e_s - fast_s + faithful_s) / e2e_s if e2e_s > 0 else None
    network_ratio = faithful_network_s / fast_s if fast_s > 0 else None
    verdict = p3_verdict(ratio, verdict_dice)
    untrained = str(record.get("weights", "")).startswith("untrained")
    return {
        "id": "P3",
        "description": "uResNet faithful patch inference ÷ fast sliding-window inference, with Dice(fast, faithful)",
        "value": None if ratio is None else round(ratio, 2),
        "op": ">=",
        "threshold": P3_TARGET,
        "dice": None if verdict_dice is None else round(verdict_dice, 4),
        "dice_min": P3_DICE_MIN,
        **verdict,
        "informative": untrained,
        "variant": variant,
        "faithful_seconds": round(faithful_s, 3),
        "faithful_seconds_extrapolated": True,
        "faithful_patches_total": total,
        "faithful_patches_measured": measured,
        "faithful_block_s": round(block_s, 3),
        "faithful_fixed_s": round(fixed_s, 3),
        "faithful_seconds_per_patch": round((block_s - fixed_s) / measured, 5),
        "faithful_network_fraction": round(timer.seconds / block_s, 3) if block_s > 0 else None,
        "faithful_network_seconds_extrapolated": round(faithful_network_s, 2),
        "patch_batch_size": base.batch_size,
        "patch_count_s": round(count_s, 3),
        "fast_seconds": fast_s,
        "fast_source": f"bare forward of variant {variant} (the network over exactly the fast mode's windows)",
        "end_to_end_s": e2e_s,
        "p3_end_to_end": None if e2e_ratio is None else round(e2e_ratio, 2),
        "p3_network_only": None if network_ratio is None else round(network_ratio, 2),
        "block": {
            "origins_per_axis": [int(c) for c in counts],
            "centre": centre,
            "centre_source": centre_source,
            "patch_size": list(base.patch_size),
            "step": list(base.step),
        },
        "dice_region": region_numbers,
        "dice_threshold": threshold,
        "fast_region": fast_numbers,
        "note": EXTRAPOLATION_NOTE + (f"; {UNTRAINED_DICE_NOTE}" if untrained else ""),
    }
