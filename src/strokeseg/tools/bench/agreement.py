"""How far each inference variant's network output is from the plain fp32 path, on one synthetic case.

The bundle's own ``inference.json`` evaluator preprocesses one case and runs its inferer in this process with the
network's calls recorded (:func:`record_inference`); :func:`variant_agreement` does so once per variant and
compares the outputs with fp32's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import list_data_collate
from monai.transforms import CenterSpatialCrop

from strokeseg.errors import BundleError
from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics
from strokeseg.runtime.description import describe_bundle
from strokeseg.tools.bench.calls import CallRecorder, NetworkCall, batch_voxels, tensors_in
from strokeseg.tools.bench.timing import time_call
from strokeseg.tools.bench.variants import VARIANTS, variant_knobs, variant_overrides
from strokeseg.tools.bench.workspace import bench_copy, inference_parser, loaded_evaluator

__all__ = ["variant_agreement", "record_inference", "ran_channels_last"]


def _centre_crop(inputs: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` voxels (at most) of every spatial dimension of a ``(B, C, *S)`` batch (MONAI's
    ``CenterSpatialCrop`` per item, which never pads)."""
    crop = CenterSpatialCrop(roi_size=[min(size, n) for n in inputs.shape[2:]])
    return torch.stack([crop(item) for item in inputs])


def record_inference(parser, description, bundle: Path, crop: int | None = None, item: Any = None) -> dict[str, Any]:
    """Preprocess one case and run one evaluator iteration with the network's calls recorded (this process).

    ``crop`` keeps only the central ``crop`` voxels of each spatial dimension of the network's input (for
    checks that compare variants and need no whole case); ``item`` is an already preprocessed case (the
    returned ``"item"`` of an earlier call), so that preprocessing runs once.

    Returns:
        ``item``, ``evaluator``, ``network``, ``calls`` (:class:`~strokeseg.tools.bench.calls.NetworkCall`),
        ``prediction_shape``, ``predicted_voxels``, ``output``, ``preprocess_s`` and ``recorded_inference_s``.

    Raises:
        BundleError: the inferer never called the network or returned no tensor.
    """
    if item is None:
        preprocess_s, item = time_call(lambda: parser.get_parsed_content("dataset")[0])
    else:
        preprocess_s = 0.0
    if isinstance(item, list):  # a dataset yielding several samples per case: the first one
        item = item[0]
    evaluator, network = loaded_evaluator(parser, description, bundle)
    # what SupervisedEvaluator._iteration does up to the prediction (its postprocessing handlers are not fired)
    prepared = evaluator.prepare_batch(
        list_data_collate([item]), evaluator.state.device, evaluator.non_blocking, **evaluator.to_kwargs
    )
    inputs, args, kwargs = (prepared[0], (), {}) if len(prepared) == 2 else (prepared[0], prepared[2], prepared[3])
    if crop is not None:
        inputs = _centre_crop(inputs, crop)

    def infer():
        with evaluator.mode(network):
            return evaluator.inferer(inputs, network, *args, **kwargs)

    with CallRecorder(network) as recorder, torch.inference_mode():
        infer_s, output = time_call(infer)
    if not recorder.calls:
        raise BundleError(f"{description.name}: the inferer never called the network {type(network).__name__}.")
    prediction = tensors_in(output)
    if not prediction:
        raise BundleError(f"{description.name}: the inferer returned no tensor.")
    pred = prediction[0]
    return {
        "item": item,
        "evaluator": evaluator,
        "network": network,
        "calls": recorder.calls,
        "prediction_shape": list(pred.shape),
        "predicted_voxels": batch_voxels(pred.shape),
        "output": pred,
        "preprocess_s": preprocess_s,
        "recorded_inference_s": infer_s,
    }


def _decision_agreement(out: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """Dice of the foreground decisions (``argmax != 0``) of two class-score outputs ``(B, C >= 2, *S)``.

    Empty in both counts as 1. Outputs with one channel (a probability or a logit: the bundle decides) get none.
    """
    if out.shape != reference.shape or out.ndim < 3 or out.shape[1] < 2:
        return {}
    a, b = out.argmax(1) != 0, reference.argmax(1) != 0
    tp, fp, fn, tn = confusion_counts(a.numpy(), b.numpy())
    return {
        "decision_dice": 1.0 if tp + fp + fn == 0 else confusion_metrics(tp, fp, fn, tn)["dice"],
        "decision_voxels": [int(a.sum()), int(b.sum())],
        "decision_differ": int((a ^ b).sum()),
    }


def _strictly_channels_last(t: torch.Tensor) -> bool:
    """``t`` is laid out channels-last and not also plain contiguous (size-1 dimensions make both true)."""
    if t.ndim not in (4, 5):
        return False
    fmt = torch.channels_last if t.ndim == 4 else torch.channels_last_3d
    return t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def ran_channels_last(network: torch.nn.Module, calls: Sequence[NetworkCall]) -> bool:
    """Whether the network ran channels-last: a convolution weight or a call's input is laid out so.

    Only layouts that differ from the plain one count, so a single-channel input proves nothing either way.
    """
    weights = any(_strictly_channels_last(p) for p in network.parameters())
    inputs = any(_strictly_channels_last(t) for call in calls for t in tensors_in((call.args, call.kwargs)))
    return weights or inputs


def variant_agreement(
    bundle_dir: str | Path,
    work_dir: str | Path,
    variants: Sequence[str] = ("fp32_channels_last", "bf16", "bf16_channels_last"),
    ckpt_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    crop: int | None = 64,
) -> dict[str, dict[str, Any]]:
    """How far each inference variant's network output is from the plain fp32 path, on one synthetic case.

    The bundle's own ``inference.json`` evaluator preprocesses one test case of its layout and runs its inferer
    once per variant (the knobs of :func:`~strokeseg.tools.bench.variants.variant_overrides`; bf16 runs whether or
    not the CPU has it natively: emulated bf16 rounds as native bf16 does, only slower). Variants the bundle has
    no knob for are left out.

    Args:
        bundle_dir: the bundle folder.
        work_dir: an empty scratch folder.
        variants: variants compared with ``fp32``.
        ckpt_dir: trained checkpoints (default: fresh weights, seed ``seed``).
        overrides: config ids on top of ``inference.json`` (e.g. the bundle's ``smoke_overrides``).
        seed: seed of data and weights.
        crop: infer only the central ``crop`` voxels of each spatial dimension of the preprocessed case
            (``None``: all of it); emulated bf16 is 20–40× slower than fp32, and the comparison needs no whole head.

    Returns:
        ``{variant: {"rel_l2": ‖out − out_fp32‖ / ‖out_fp32‖, "max_abs": ..., "dtype": ..., "shape": [...],
        "identical": bool, "ran_channels_last": bool}}`` (:func:`ran_channels_last`) for every variant the
        bundle can run, plus ``decision_dice`` (foreground of the
        argmax), ``decision_voxels`` and ``decision_differ`` for class-score outputs of two or more channels.
    """
    description = describe_bundle(bundle_dir)
    work = Path(work_dir)
    extra = dict(overrides or {})
    data_root, bundle, _ = bench_copy(bundle_dir, work, description.layout, description.name, seed, ckpt_dir, extra)
    base = {"bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(work / "unused"), **extra}
    knobs = variant_knobs(inference_parser(bundle, base).config)

    cache: dict[str, Any] = {}

    def output(variant: str) -> torch.Tensor:
        torch.manual_seed(seed)
        parser = inference_parser(bundle, {**base, **variant_overrides(knobs, variant)})
        recorded = record_inference(parser, description, bundle, crop=crop, item=cache.get("item"))
        cache["item"] = recorded["item"]
        cache["channels_last"] = ran_channels_last(recorded["network"], recorded["calls"])
        return recorded["output"].detach().clone()

    reference = output("fp32")
    results: dict[str, dict[str, Any]] = {}
    for variant in variants:
        channels_last, bf16 = VARIANTS[variant]
        if (channels_last and not knobs["channels_last"]) or (bf16 and not knobs["precision"]):
            continue
        out = output(variant)
        diff = (out.float() - reference.float()) if out.shape == reference.shape else None
        results[variant] = {
            "dtype": str(out.dtype).replace("torch.", ""),
            "shape": list(out.shape),
            "rel_l2": None if diff is None else float(diff.norm() / reference.float().norm().clamp_min(1e-12)),
            "max_abs": None if diff is None else float(diff.abs().max()),
            "identical": diff is not None and bool(torch.equal(out, reference)),
            "ran_channels_last": cache["channels_last"],
            **_decision_agreement(out, reference),
        }
    return results
