"""The generic benchmark of one bundle, read from its self-description: the ratios P1, P2, P4, P5.

The ratios are defined in ``docs/performance.md``. Everything runs on one synthetic case of the bundle's layout
(``strokeseg.runtime.description``) through the bundle's own configs in a temporary copy of it
(:mod:`strokeseg.tools.bench.workspace`), so the numbers describe what a user's ``python -m monai.bundle run``
does, not a re-implementation of it:

- network compute (P1): forward hooks on the evaluator's network record every call during the first end-to-end
  child's untimed first run (below): exactly the slices, windows or tiles that inference feeds the network,
  written to files as they happen (kept fp32 and contiguous, whatever the variant), read back here memory-mapped
  (:mod:`strokeseg.tools.bench.calls`). FLOPs are counted on those calls; the *useful* FLOPs leave out
  sliding-window overlap (:mod:`strokeseg.tools.bench.flops`). The bare forward replays the recorded calls, in
  each variant's memory format and precision;
- end-to-end (P2): ``ConfigWorkflow(inference.json).run()`` (load, preprocess, infer, post-process, invert,
  write) in a child process (:mod:`strokeseg.tools.bench.endtoend`), fresh as a user's ``python -m monai.bundle
  run``; both sides warm (the bare forward one untimed call first, the child one untimed run first, its time
  recorded as ``end_to_end_first_s``; :mod:`strokeseg.tools.bench.inference`);
- training (P4): one iteration of ``train#trainer`` (its own ``_iteration``: prepare, forward, loss, backward,
  step) on a batch drawn from ``train#dataloader`` vs on the same batch already in memory
  (:mod:`strokeseg.tools.bench.training`);
- memory (P5): peak resident memory of the default variant's end-to-end child over all its runs (where the
  default variant is not measured, of a child running the bundle's defaults once).

Variants (:mod:`strokeseg.tools.bench.variants`): ``fp32`` always; ``fp32_channels_last`` where the bundle has a
``channels_last`` knob; ``bf16`` (and ``bf16_channels_last``) where it has an ``inference_precision`` (or ``bf16``)
knob *and* the CPU has native bf16. The variant the bundle runs with its default knobs on this machine is marked
``"default": true``.

A bundle's ``bench_hook`` module (named in its description) adds what this harness cannot know, such as the
EDD bundle's MUSCLE candidates and paper anchor; see :func:`run_hook`.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from strokeseg.errors import BundleError
from strokeseg.runtime.description import describe_bundle
from strokeseg.tools.bench.flops import recorded_call_numbers
from strokeseg.tools.bench.inference import inference_memory, measure_variant
from strokeseg.tools.bench.timing import time_call
from strokeseg.tools.bench.training import training_step
from strokeseg.tools.bench.variants import VARIANTS, choose_variants, default_variant, variant_knobs, variant_overrides
from strokeseg.tools.bench.workspace import (
    bench_copy,
    configs_dir,
    first_case,
    first_item,
    inference_parser,
    loaded_evaluator,
)

__all__ = ["bench_bundle", "run_hook"]


def run_hook(module_name: str, context: dict[str, Any]) -> dict[str, Any]:
    """Call ``bench_hook(context)`` of ``module_name`` (a bundle description's ``bench_hook``).

    The context holds ``description``, ``bundle`` (the copy), ``work``, ``data_root``, ``case``, ``item`` (the
    preprocessed case), ``network``, ``calls`` (:class:`~strokeseg.tools.bench.calls.NetworkCall` list, fp32
    contiguous, recorded in the first measured variant's end-to-end child: bf16 outputs where that variant is bf16),
    ``evaluator``, ``parser``, ``record`` (the generic record so far, variants measured), ``quick``, ``seed``,
    ``machine`` and ``peak``. The hook returns a dict merged into the record: ``"variants"`` per variant into the
    variant records, ``"notes"`` appended to the record's notes, any other key set (e.g. ``"anchor"``).

    Raises:
        BundleError: the module cannot be imported, lacks ``bench_hook``, or returns no dict.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BundleError(f"bench hook {module_name} cannot be imported: {err}") from err
    hook = getattr(module, "bench_hook", None)
    if not callable(hook):
        raise BundleError(f"bench hook module {module_name} has no function bench_hook(context).")
    result = hook(context)
    if not isinstance(result, dict):
        raise BundleError(f"{module_name}.bench_hook returned {type(result).__name__}, not a dict.")
    return result


def _merge_hook(record: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if key == "variants":
            for variant, numbers in value.items():
                if variant in record["variants"]:
                    record["variants"][variant].update(numbers)
        elif key == "notes":
            record.setdefault("notes", []).extend(value)
        else:
            record[key] = value


def bench_bundle(
    bundle_dir: str | Path,
    work_dir: str | Path,
    peak: Mapping[str, Any],
    machine: Mapping[str, Any],
    quick: bool = False,
    repeats: int | None = None,
    ckpt_dir: str | Path | None = None,
    seed: int = 0,
    measure_training: bool = True,
    measure_memory: bool = True,
    overrides: Mapping[str, Any] | None = None,
    variants: Sequence[str] | str | None = None,
    quick_config: bool = False,
) -> dict[str, Any]:
    """Measure one bundle on one synthetic case of its layout (see the module docstring).

    Args:
        bundle_dir: the bundle folder (with a ``"strokeseg"`` description in ``configs/metadata.json``).
        work_dir: an empty scratch folder (data, bundle copy, outputs).
        peak: the run's peak record (``conv2d_fp32`` / ``conv3d_fp32`` with ``gflops``): the P1 denominator is
            the fp32 peak of the network's dimensionality.
        machine: the run's machine record (``bf16_supported``, ``bf16_reason``).
        quick: fp32 only, one repeat, the bundle's ``smoke_overrides`` (tiny networks), a small training batch.
        repeats: timed repeats per measurement (default 2, quick 1; training: 3 unless given, quick 1).
        ckpt_dir: trained checkpoints instead of fresh weights.
        seed: seed of data, weights and sampling.
        measure_training: include P4.
        measure_memory: include P5 (a child ``python -m monai.bundle run``).
        overrides: extra config ids for inference and training (on top of the quick smoke overrides).
        variants: measure these variants (default: :func:`choose_variants`); a comma-separated string may name
            ``default`` (the variant the bundle runs by default on this machine) or be ``all``.
        quick_config: measure the bundle as its ``configs/quick.json`` configures it (the CPU-sized networks that
            the quick configuration trains), under ``smoke_overrides`` (quick) and ``overrides``.

    Returns:
        The bundle's record of ``bench.json`` (raw numbers, per-variant P1 / P2, P4, P5, and ``stage_seconds``:
        the wall seconds of each step of this bundle's bench, where a slow machine's time goes).

    Raises:
        BundleError: the bundle cannot be described, copied or run, or its inference writes nothing.
    """
    description = describe_bundle(bundle_dir)
    work = Path(work_dir)
    train_repeats = 1 if quick else (3 if repeats is None else max(1, int(repeats)))
    repeats = repeats if repeats is not None else (1 if quick else 2)
    quick_json: dict[str, Any] = {}
    if quick_config:
        quick_path = configs_dir(Path(bundle_dir)) / "quick.json"
        if not quick_path.is_file():
            raise BundleError(f"{description.name}: quick_config asked for, but {quick_path} does not exist.")
        quick_json = json.loads(quick_path.read_text())
    extra = {**(description.smoke_overrides if quick else {}), **quick_json, **dict(overrides or {})}
    stages: dict[str, float] = {}  # wall seconds of each step of this bundle's bench, for bench.json
    step_start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal step_start
        now = time.perf_counter()
        stages[name] = round(now - step_start, 2)
        step_start = now

    data_root, bundle, weights = bench_copy(
        bundle_dir, work, description.layout, description.name, seed, ckpt_dir, extra
    )
    lap("data_and_copy")

    probe = inference_parser(bundle, {"bundle_root": str(bundle), **extra})
    knobs = variant_knobs(probe.config)
    default = default_variant(probe, knobs, bool(machine.get("bf16_supported")))
    base = {"bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(work / "unused"), **extra}
    if "overwrite" in probe.config:
        extra["overwrite"] = True
    parser = inference_parser(bundle, {**base, **variant_overrides(knobs, "fp32")})
    evaluator, network = loaded_evaluator(parser, description, bundle)
    case = first_case(parser)
    lap("evaluator")

    chosen, skipped = choose_variants(
        knobs, bool(machine.get("bf16_supported")), machine.get("bf16_reason", ""), quick, default
    )
    if isinstance(variants, str):
        variants = None if variants == "all" else [default if v == "default" else v for v in variants.split(",")]
    if variants is not None:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise BundleError(f"unknown variant(s) {unknown}; expected among {', '.join(VARIANTS)}.")
        chosen = [v for v in variants if v not in skipped or skipped[v].startswith("quick")]
        skipped = {k: why for k, why in skipped.items() if k not in chosen}
    context: dict[str, Any] = {
        "description": description,
        "bundle": bundle,
        "work": work,
        "data_root": data_root,
        "case": case,
        "network": network,
        "evaluator": evaluator,
        "parser": parser,
        "knobs": knobs,
        "quick": quick,
        "seed": seed,
        "machine": machine,
        "peak": peak,
    }
    record_dir = work / "calls"

    def analyse_calls() -> None:
        """The calls the first child recorded: their FLOPs, items and the P1 denominator, into ``context``."""
        start = time.perf_counter()
        context.update(recorded_call_numbers(record_dir, network, peak, description.name))
        stages["flop_count"] = round(time.perf_counter() - start, 2)

    records, recording_child = {}, None
    for name in chosen:
        first = not records
        records[name] = measure_variant(
            context,
            name,
            work / f"out_{name}",
            max(1, int(repeats)),
            {**base, **extra},
            record=record_dir if first else None,
            on_recorded=analyse_calls if first else None,
        )
        records[name]["default"] = name == default
        lap(f"variant_{name}")
        if first:  # the FLOP count ran inside this step, between the child's first run and the bare forward
            stages[f"variant_{name}"] = round(stages[f"variant_{name}"] - stages["flop_count"], 2)
    if "calls" not in context:  # no variant measured: one run of the bundle's defaults records the calls
        recording_child = inference_memory(bundle, data_root, work, description, case, extra, record=record_dir)
        lap("recording_run")
        analyse_calls()
        lap("flop_count")
    calls, summary, spatial_dims = context["calls"], context["summary"], context["spatial_dims"]
    first_input, items, fraction = context["first_input"], context["items"], context["fraction"]
    flops_computed = context["flops_computed"]
    preprocessed = summary["inferer_inputs"][0][1:]
    unit = "slice" if spatial_dims == 2 else "window"
    input_shapes = sorted({str(list(s)) for c in calls for s in c.signature()[:1]})
    record: dict[str, Any] = {
        "bundle": description.name,
        "config": "inference.json + quick.json" if quick_config else "inference.json",
        "weights": weights,
        "default_variant": default,
        "knobs": knobs,
        "case": {
            "name": case,
            "preprocessed_shape": preprocessed,
            "prediction_shape": summary["predictions"][0],
            "network_calls": len(calls),
            "items": items,
            "item_unit": unit,
            "batch_max": max(c.items for c in calls),
            "input_shapes": input_shapes,
            "item_shape": list(first_input.shape[2:]),
            "calls_recorded_in": f"the end-to-end child's first run ({next(iter(records), default)})",
            **({"slices_total": int(preprocessed[-1])} if spatial_dims == 2 else {}),
        },
        "network": {
            "id": description.networks[0].id,
            "class": type(network).__name__,
            "spatial_dims": spatial_dims,
            "parameters": sum(p.numel() for p in network.parameters()),
            "flops_computed": flops_computed,
            "flops_counted_on": context["flops_counted_on"],
            "useful_fraction": round(fraction, 4),
            "flops_useful": int(flops_computed * fraction),
            "flops_per_item": int(flops_computed / items) if items else None,
            "gflop_total": round(flops_computed * fraction / 1e9, 2),
        },
        "peak_key": context["peak_key"],
        "peak_gflops_fp32": context["peak_gflops"],
        "variants": records,
        "skipped_variants": skipped,
        "notes": [],
    }
    context["record"] = record
    if description.bench_hook:
        # preprocessed here only for a hook (the children preprocess their own): this process's first preprocessing
        preprocess_s, context["item"] = time_call(lambda: first_item(parser))
        record["case"]["preprocess_s"] = round(preprocess_s, 3)
        _merge_hook(record, run_hook(description.bench_hook, context))
        lap("bench_hook")
    if measure_training:
        train_extra = {**extra, **({"samples_per_case": 4} if quick else {})}
        train_extra.pop("overwrite", None)
        record["training"] = training_step(bundle, data_root, work, train_repeats, seed, train_extra)
        lap("training")
    if measure_memory and default in records:  # P5 from the default variant's end-to-end child
        record["memory"] = {**records[default]["end_to_end_child"], "variant": default, "three_d": spatial_dims == 3}
    elif measure_memory:
        if recording_child is None:
            recording_child = inference_memory(bundle, data_root, work, description, case, extra)
            lap("memory")
        record["memory"] = {**recording_child, "variant": f"{default} (bundle defaults)", "three_d": spatial_dims == 3}
    record["stage_seconds"] = stages
    return record
