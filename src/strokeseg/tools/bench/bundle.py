"""The generic benchmark of one bundle, read from its self-description: P1, P2, P4, P5 of performance.md.

Everything runs on one synthetic case of the bundle's layout (``strokeseg.runtime.description``) through the
bundle's own configs in a temporary copy of it, so the numbers describe what a user's ``python -m monai.bundle
run`` does, not a re-implementation of it:

- network compute (P1): forward hooks on the evaluator's network record every call during the first end-to-end
  child's untimed first run (below): exactly the slices, windows or tiles that inference feeds the network,
  written to files as they happen (kept fp32 and contiguous, whatever the variant), read back here memory-mapped.
  FLOPs are counted on those calls (``torch.utils.flop_counter``); the *useful*
  FLOPs scale them by ``min(1, predicted voxels / voxels the calls produced)``, which removes sliding-window
  overlap (performance.md: "the network over the brain's bounding box once"). The bare forward replays the
  recorded calls, in each variant's memory format and precision;
- end-to-end (P2): ``ConfigWorkflow(inference.json).run()`` (load, preprocess, infer, post-process, invert,
  write) in a child process (:mod:`strokeseg.tools.bench.endtoend`), fresh as a user's ``python -m monai.bundle
  run``; both sides warm (the bare forward one untimed call first, the child one untimed run first, its time
  recorded as ``end_to_end_first_s``);
- training (P4): one iteration of ``train#trainer`` (its own ``_iteration``: prepare, forward, loss, backward,
  step) on a batch drawn from ``train#dataloader`` vs on the same batch already in memory;
- memory (P5): peak resident memory of the default variant's end-to-end child over all its runs (where the
  default variant is not measured, of a child running the bundle's defaults once).

Variants: ``fp32`` always; ``fp32_channels_last`` where the bundle has a ``channels_last`` knob; ``bf16`` (and
``bf16_channels_last``) where it has an ``inference_precision`` (or ``bf16``) knob *and* the CPU has native
bf16. The variant the bundle runs with its default knobs on this machine is marked ``"default": true``.

A bundle's ``bench_hook`` module (named in its description) adds what this harness cannot know, such as the
EDD bundle's MUSCLE candidates and paper anchor; see :func:`run_hook`.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from strokeseg.errors import BundleError
from strokeseg.runtime.precision import to_memory_format
from strokeseg.tools.bench.endtoend import RECORD_SUMMARY
from strokeseg.tools.bench.peak import count_flops
from strokeseg.tools.bench.timing import median, time_call

__all__ = [
    "VARIANTS",
    "NetworkCall",
    "CallRecorder",
    "load_calls",
    "prepare_bundle_copy",
    "variant_knobs",
    "variant_overrides",
    "default_variant",
    "choose_variants",
    "replay_calls",
    "count_call_flops",
    "useful_fraction",
    "bench_bundle",
    "inference_workflow",
    "run_hook",
    "variant_agreement",
    "UNTRAINED_NOTE",
]

logger = logging.getLogger(__name__)

#: inference variants: name → (channels_last, bf16 autocast)
VARIANTS = {
    "fp32": (False, False),
    "fp32_channels_last": (True, False),
    "bf16": (False, True),
    "bf16_channels_last": (True, True),
}
UNTRAINED_NOTE = (
    "freshly initialised weights (seed 0): FLOPs, forward time and memory do not depend on the weights, but any "
    "data-dependent step of inference does, so end-to-end times with trained weights may differ"
)


def _configs(bundle: Path) -> Path:
    return bundle / "configs"


def _tree_map(fn, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_tree_map(fn, v) for v in value)
    if isinstance(value, Mapping):
        return {k: _tree_map(fn, v) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _tree_map(lambda t: found.append(t) or t, value)
    return found


def _detached(t: torch.Tensor) -> torch.Tensor:
    plain = t.as_tensor() if hasattr(t, "as_tensor") else t
    return plain.detach().clone()


@dataclass
class NetworkCall:
    """One recorded call of a network: its (detached, copied) arguments and what it produced.

    Attributes:
        args, kwargs: the call's arguments (tensors copied, MetaTensors as plain tensors).
        items: batch size of the first tensor argument (slices, windows or tiles in this call).
        output_voxels: spatial voxels of the first output tensor, summed over its batch.
        output: that first output tensor (float32 copy), for a hook to inspect.
    """

    args: tuple
    kwargs: dict
    items: int = 0
    output_voxels: int = 0
    output: torch.Tensor | None = None

    def signature(self) -> tuple:
        """Shapes of every tensor argument: calls of equal signature cost the same FLOPs."""
        return tuple(tuple(t.shape) for t in _tensors((self.args, self.kwargs)))


def _batch_voxels(shape: Sequence[int]) -> int:
    """Spatial voxels of a ``(B, C, *S)`` shape summed over its batch (``B`` where it has no spatial axes)."""
    return int(shape[0] * math.prod(shape[2:])) if len(shape) > 2 else int(shape[0]) if shape else 1


def _stored(t: torch.Tensor, plain_fp32: bool) -> torch.Tensor:
    """A copy of ``t`` to keep: detached, a plain tensor; with ``plain_fp32`` also contiguous and, if floating
    point, float32 (how a bf16 or channels-last run's calls are kept for replay in any variant)."""
    if not plain_fp32:
        return _detached(t)
    plain = (t.as_tensor() if hasattr(t, "as_tensor") else t).detach()
    dtype = torch.float32 if plain.is_floating_point() else plain.dtype
    return plain.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


CALL_INDEX = "calls.json"


@dataclass
class CallRecorder:
    """Context manager recording every call of ``module`` (forward pre- and post-hooks, kwargs included).

    Args:
        module: the network to watch.
        keep_outputs: keep a float32 copy of each call's first output tensor in :attr:`NetworkCall.output`.
        folder: write each call's arguments and output to files there as it happens (``call_NNNNN_in.pt`` /
            ``_out.pt``, an index ``calls.json`` on exit; :func:`load_calls` reads them) and keep only their
            sizes in :attr:`calls`: the process holds one call's copy at a time, so recording does not raise
            the peak memory of the inference it watches (the end-to-end child's, which is P5).
        plain_fp32: keep arguments and outputs contiguous and floating point as float32 (see :func:`_stored`).

    Attributes:
        calls: the recorded calls.
        seconds: time spent in the hooks (copying and writing), for a caller to take out of the run's time.
    """

    module: torch.nn.Module
    keep_outputs: bool = True
    folder: Path | None = None
    plain_fp32: bool = False
    calls: list[NetworkCall] = field(default_factory=list)
    seconds: float = 0.0

    def _file(self, kind: str) -> Path:
        return Path(self.folder) / f"call_{len(self.calls) - 1:05d}_{kind}.pt"

    def _pre(self, module, args, kwargs):
        start = time.perf_counter()
        first = _tensors(args) or _tensors(kwargs)
        items = int(first[0].shape[0]) if first and first[0].ndim > 0 else 1
        store = lambda t: _stored(t, self.plain_fp32)  # noqa: E731
        self.calls.append(NetworkCall(_tree_map(store, args), _tree_map(store, kwargs), items))
        if self.folder is not None:
            call = self.calls[-1]
            torch.save({"args": call.args, "kwargs": call.kwargs}, self._file("in"))
            call.args, call.kwargs = (), {}
        self.seconds += time.perf_counter() - start

    def _post(self, module, args, kwargs, output):
        start = time.perf_counter()
        outs = _tensors(output)
        if outs and self.calls:
            first = outs[0]
            self.calls[-1].output_voxels = _batch_voxels(first.shape)
            if self.keep_outputs:
                kept = _stored(first, self.plain_fp32).float()
                if self.folder is not None:
                    torch.save(kept, self._file("out"))
                else:
                    self.calls[-1].output = kept
        self.seconds += time.perf_counter() - start

    def __enter__(self) -> CallRecorder:
        if self.folder is not None:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
        self._handles = [
            self.module.register_forward_pre_hook(self._pre, with_kwargs=True),
            self.module.register_forward_hook(self._post, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        if self.folder is not None:
            index = [{"items": c.items, "output_voxels": c.output_voxels} for c in self.calls]
            (Path(self.folder) / CALL_INDEX).write_text(json.dumps(index))


def load_calls(folder: str | Path) -> list[NetworkCall]:
    """The calls a :class:`CallRecorder` with a ``folder`` wrote there (tensors memory-mapped from the files).

    Raises:
        BundleError: the folder holds no call index or misses a call's file.
    """
    folder = Path(folder)
    if not (folder / CALL_INDEX).is_file():
        raise BundleError(f"{folder} holds no recorded network calls ({CALL_INDEX} missing).")
    calls = []
    for i, entry in enumerate(json.loads((folder / CALL_INDEX).read_text())):
        inputs, output = folder / f"call_{i:05d}_in.pt", folder / f"call_{i:05d}_out.pt"
        if not inputs.is_file():
            raise BundleError(f"recorded call {i} has no {inputs.name} in {folder}.")
        saved = torch.load(inputs, mmap=True, weights_only=True)
        out = torch.load(output, mmap=True, weights_only=True) if output.is_file() else None
        args, kwargs = tuple(saved["args"]), dict(saved["kwargs"])
        calls.append(NetworkCall(args, kwargs, entry["items"], entry["output_voxels"], out))
    return calls


def prepare_bundle_copy(
    bundle_dir: str | Path,
    dest: str | Path,
    ckpt_dir: str | Path | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Copy the bundle (without weights or outputs) to ``dest`` and put every exported network's checkpoint there.

    Args:
        bundle_dir: the bundle folder.
        dest: where the copy goes (must not exist).
        ckpt_dir: folder holding trained checkpoints under the file names of the description's networks;
            ``None`` writes freshly initialised networks built from ``inference.json`` under
            ``torch.manual_seed(seed)``.
        seed: seed of the fresh initialisation.
        overrides: config ids applied before the fresh networks are built (e.g. a smoke run's tiny widths).

    Returns:
        A description of the weights used.

    Raises:
        BundleError: the bundle does not describe itself, has no ``configs/inference.json``, or ``ckpt_dir``
            lacks a checkpoint.
    """
    from monai.bundle import ConfigParser

    from strokeseg.runtime.description import describe_bundle

    bundle_dir, dest = Path(bundle_dir), Path(dest)
    description = describe_bundle(bundle_dir)
    if not (_configs(bundle_dir) / "inference.json").is_file():
        raise BundleError(f"{bundle_dir} has no configs/inference.json; is it a bundle folder?")
    shutil.copytree(bundle_dir, dest, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval", "data", "models"))
    if ckpt_dir is not None:
        for network in description.networks:
            source = Path(ckpt_dir) / network.checkpoint_name
            if not source.is_file():
                names = ", ".join(n.checkpoint_name for n in description.networks)
                raise BundleError(f"checkpoint folder {ckpt_dir} has no {network.checkpoint_name} (need {names}).")
            (dest / network.checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / network.checkpoint)
        return f"trained weights from {ckpt_dir}"
    parser = ConfigParser()
    parser.read_config(str(_configs(dest) / "inference.json"))
    parser.update({"bundle_root": str(dest), **dict(overrides or {})})
    torch.manual_seed(seed)
    for network in description.networks:
        (dest / network.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(parser.get_parsed_content(network.id).state_dict(), dest / network.checkpoint)
    return f"untrained: {UNTRAINED_NOTE}"


def bench_copy(
    bundle_dir: str | Path,
    work: Path,
    layout: str,
    name: str,
    seed: int = 0,
    ckpt_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, Path, str]:
    """The synthetic data and the bundle copy every bench measurement runs on.

    Two training cases (they fill a training batch of two and leave one for training under any fold split) and
    one test case of ``layout`` under ``work/data``; the bundle copied to ``work/<name>`` with its weights
    (:func:`prepare_bundle_copy`).

    Returns:
        ``(data_root, bundle copy, description of the weights)``.
    """
    from strokeseg.data.phantoms import synthesize_dataset

    data_root = synthesize_dataset(layout, work / "data", cases=2, test_cases=1, seed=seed)
    bundle = work / name
    weights = prepare_bundle_copy(bundle_dir, bundle, ckpt_dir=ckpt_dir, seed=seed, overrides=dict(overrides or {}))
    return data_root, bundle, weights


def variant_knobs(config: Mapping[str, Any]) -> dict[str, str | None]:
    """Which top-level ids of ``inference.json`` set precision and memory format.

    Returns:
        ``{"precision": "inference_precision" | "bf16" | None, "channels_last": "channels_last" | None}``.
    """
    precision = "inference_precision" if "inference_precision" in config else "bf16" if "bf16" in config else None
    return {"precision": precision, "channels_last": "channels_last" if "channels_last" in config else None}


def variant_overrides(knobs: Mapping[str, str | None], variant: str) -> dict[str, Any]:
    """Config overrides that make inference run ``variant`` (only the knobs the bundle has).

    Raises:
        BundleError: the variant needs a knob the bundle lacks.
    """
    channels_last, bf16 = VARIANTS[variant]
    overrides: dict[str, Any] = {}
    if knobs["precision"] == "inference_precision":
        overrides["inference_precision"] = "bf16" if bf16 else "fp32"
    elif knobs["precision"] == "bf16":
        overrides["bf16"] = bf16
    elif bf16:
        raise BundleError(f"variant {variant} needs an inference_precision (or bf16) knob; the bundle has none.")
    if knobs["channels_last"]:
        overrides[knobs["channels_last"]] = channels_last
    elif channels_last:
        raise BundleError(f"variant {variant} needs a channels_last knob; the bundle has none.")
    return overrides


def _truthy(value: Any) -> bool:
    from strokeseg.runtime.knobs import as_bool

    return bool(as_bool(value, "knob")) if isinstance(value, (str, int, bool)) else bool(value)


def default_variant(parser, knobs: Mapping[str, str | None], bf16_supported: bool) -> str:
    """The variant the bundle runs with its default knobs on this machine.

    ``inference_precision`` ``auto`` means bf16 where the CPU has native bf16 (issue 11), else fp32.

    Args:
        parser: a ``ConfigParser`` of ``inference.json`` without variant overrides.
        knobs: from :func:`variant_knobs`.
        bf16_supported: the machine has native bf16.
    """
    bf16 = False
    if knobs["precision"] == "inference_precision":
        raw = str(parser.config["inference_precision"]).strip().lower()
        bf16 = raw == "bf16" or (raw == "auto" and bf16_supported)
    elif knobs["precision"] == "bf16":
        bf16 = _truthy(parser.get_parsed_content("bf16"))
    channels_last = bool(knobs["channels_last"]) and _truthy(parser.get_parsed_content(knobs["channels_last"]))
    return ("bf16" if bf16 else "fp32") + ("_channels_last" if channels_last else "")


def choose_variants(
    knobs: Mapping[str, str | None], bf16_supported: bool, bf16_reason: str, quick: bool, default: str = "fp32"
) -> tuple[list[str], dict[str, str]]:
    """Variants to measure and, for the others, why not.

    Quick mode measures only the bundle's ``default`` variant (``fp32`` if that cannot be measured here).
    """
    chosen, skipped = [], {}
    for name, (channels_last, bf16) in VARIANTS.items():
        if channels_last and not knobs["channels_last"]:
            skipped[name] = "the bundle has no channels_last knob"
        elif bf16 and not knobs["precision"]:
            skipped[name] = "the bundle has no inference_precision (or bf16) knob"
        elif bf16 and not bf16_supported:
            skipped[name] = bf16_reason or "no native bf16"
        else:
            chosen.append(name)
    if quick:
        keep = default if default in chosen else "fp32"
        skipped.update({name: "quick mode (the default variant only)" for name in chosen if name != keep})
        chosen = [keep]
    return chosen, skipped


def _network_format(network: torch.nn.Module, spatial_dims: int, channels_last: bool) -> None:
    if channels_last:
        network.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)
    else:
        network.to(memory_format=torch.contiguous_format)


def _formatted(calls: Sequence[NetworkCall], channels_last: bool | None) -> list[tuple[tuple, dict]]:
    """The calls' arguments in the variant's memory format (``None``: as recorded)."""
    if channels_last is None:
        return [(c.args, c.kwargs) for c in calls]
    fmt = lambda t: to_memory_format(t, channels_last)  # noqa: E731
    return [(_tree_map(fmt, c.args), _tree_map(fmt, c.kwargs)) for c in calls]


def replay_calls(network: torch.nn.Module, inputs: Sequence[tuple[tuple, dict]], bf16: bool = False) -> None:
    """The network alone over the recorded calls (``inference_mode``, optional bf16 autocast)."""
    with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
        for args, kwargs in inputs:
            network(*args, **kwargs)


def _batch_slice(call: NetworkCall, n: int) -> tuple[tuple, dict]:
    """The call's arguments cut to their first ``n`` items: every tensor whose leading size is the call's batch."""
    cut = lambda t: t[:n] if t.ndim > 0 and t.shape[0] == call.items else t  # noqa: E731
    return _tree_map(cut, call.args), _tree_map(cut, call.kwargs)


def _item_signature(call: NetworkCall) -> tuple:
    """Shapes of the tensor arguments with the batch dimension left out: calls that cost the same per item."""
    return tuple(s[1:] if s and s[0] == call.items else s for s in call.signature())


def _meta_counter(network: torch.nn.Module):
    """``count(args, kwargs)`` with ``network`` on PyTorch's ``meta`` device: shapes only, no arithmetic."""
    import copy

    meta = copy.deepcopy(network).to("meta")
    to_meta = lambda t: t.to("meta")  # noqa: E731
    return lambda args, kwargs: count_flops(meta, *_tree_map(to_meta, args), **_tree_map(to_meta, kwargs))


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


def _count_call_flops(count, calls: Sequence[NetworkCall]) -> int:
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


def _case_of(item: Mapping[str, Any]) -> str:
    from strokeseg.naming import entry_case_name

    return entry_case_name(item, index=0)


def _inference_parser(bundle: Path, overrides: Mapping[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "inference.json"))
    parser.read_meta(str(_configs(bundle) / "metadata.json"))
    parser.update(dict(overrides))
    return parser


def _centre_crop(inputs: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` voxels (at most) of every spatial dimension of a ``(B, C, *S)`` batch (MONAI's
    ``CenterSpatialCrop`` per item, which never pads)."""
    from monai.transforms import CenterSpatialCrop

    crop = CenterSpatialCrop(roi_size=[min(size, n) for n in inputs.shape[2:]])
    return torch.stack([crop(item) for item in inputs])


def _loaded_evaluator(parser, description, bundle: Path):
    """The ``evaluator`` of ``parser`` with every exported network's checkpoint of ``bundle`` loaded, and its
    network (in eval mode)."""
    from strokeseg.networks.weights import load_network_state

    evaluator = parser.get_parsed_content("evaluator")
    for exported in description.networks:
        load_network_state(parser.get_parsed_content(exported.id), bundle / exported.checkpoint)
    evaluator.network.eval()
    return evaluator, evaluator.network


def _first_item(parser) -> Any:
    """The first case of ``parser``'s inference dataset, preprocessed (a multi-sample case: its first sample)."""
    item = parser.get_parsed_content("dataset")[0]
    return item[0] if isinstance(item, list) else item


def _first_case(parser) -> str:
    """Name of the first case of ``parser``'s inference dataset (from its datalist entry: nothing preprocessed)."""
    dataset = parser.get_parsed_content("dataset")
    data = getattr(dataset, "data", None)
    return _case_of(data[0]) if isinstance(data, Sequence) and data else _case_of(_first_item(parser))


def _record_inference(parser, description, bundle: Path, crop: int | None = None, item: Any = None) -> dict[str, Any]:
    """Preprocess one case and run one evaluator iteration with the network's calls recorded.

    ``crop`` keeps only the central ``crop`` voxels of each spatial dimension of the network's input (for
    checks that compare variants and need no whole case); ``item`` is an already preprocessed case (the
    returned ``"item"`` of an earlier call), so that preprocessing runs once.
    """
    from monai.data import list_data_collate

    if item is None:
        preprocess_s, item = time_call(lambda: parser.get_parsed_content("dataset")[0])
    else:
        preprocess_s = 0.0
    if isinstance(item, list):  # a dataset yielding several samples per case: the first one
        item = item[0]
    evaluator, network = _loaded_evaluator(parser, description, bundle)
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
    prediction = _tensors(output)
    if not prediction:
        raise BundleError(f"{description.name}: the inferer returned no tensor.")
    pred = prediction[0]
    return {
        "item": item,
        "evaluator": evaluator,
        "network": network,
        "calls": recorder.calls,
        "prediction_shape": list(pred.shape),
        "predicted_voxels": _batch_voxels(pred.shape),
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
    from strokeseg.metrics.voxelwise import confusion_counts, confusion_metrics

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
    inputs = any(_strictly_channels_last(t) for call in calls for t in _tensors((call.args, call.kwargs)))
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
    once per variant (the knobs of :func:`variant_overrides`; bf16 runs whether or not the CPU has it natively:
    emulated bf16 rounds as native bf16 does, only slower). Variants the bundle has no knob for are left out.

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
    from strokeseg.runtime.description import describe_bundle

    description = describe_bundle(bundle_dir)
    work = Path(work_dir)
    extra = dict(overrides or {})
    data_root, bundle, _ = bench_copy(bundle_dir, work, description.layout, description.name, seed, ckpt_dir, extra)
    base = {"bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(work / "unused"), **extra}
    knobs = variant_knobs(_inference_parser(bundle, base).config)

    cache: dict[str, Any] = {}

    def output(variant: str) -> torch.Tensor:
        torch.manual_seed(seed)
        parser = _inference_parser(bundle, {**base, **variant_overrides(knobs, variant)})
        recorded = _record_inference(parser, description, bundle, crop=crop, item=cache.get("item"))
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


def inference_workflow(bundle: Path, data_root: Path, out_dir: Path, overrides: Mapping[str, Any]):
    """The bundle's ``inference.json`` as an initialised ``monai.bundle.ConfigWorkflow``."""
    from monai.bundle import ConfigWorkflow

    values = {**dict(overrides), "bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(out_dir)}
    workflow = ConfigWorkflow(
        config_file=str(_configs(bundle) / "inference.json"),
        meta_file=str(_configs(bundle) / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        **values,
    )
    workflow.initialize()
    return workflow


def _measure_variant(
    context: dict[str, Any],
    variant: str,
    out_dir: Path,
    repeats: int,
    overrides: Mapping[str, Any],
    record: Path | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Bare forward (here) and end-to-end inference (in a child process) of one variant, alternated ``repeats``
    times (each bare forward while the child waits before its next run), so that a drifting machine load hits
    both sides alike.

    Both sides are warm, as for every case of a dataset after the first: the bare forward gets one small
    untimed warm-up call, and the end-to-end child (:func:`strokeseg.tools.bench.endtoend.end_to_end_child`: the
    workflow ``python -m monai.bundle run`` builds, in a fresh process as a user's) one whole run before the
    timed ones. That first run (lazy imports, the network's conversion to channels-last, first-touch memory,
    oneDNN primitives of first-seen shapes) is recorded as ``end_to_end_first_s`` and not in P2; the child's peak
    memory is P5. Each end-to-end run must write the case's outputs anew.

    With ``record``, the child's first run records the network's calls into that folder, and
    ``on_recorded()`` (which puts them into ``context["calls"]``) runs after it, before the first bare forward.
    """
    from strokeseg.tools.bench.endtoend import end_to_end_child

    network, knobs = context["network"], context["knobs"]
    channels_last, bf16 = VARIANTS[variant]
    layout = channels_last if knobs["channels_last"] else None
    expected = [out_dir / rel for rel in context["description"].outputs_for(context["case"])]
    bare: list[float] = []
    inputs: list[tuple[tuple, dict]] = []

    def time_bare_forward(i: int) -> None:
        if i == 0:  # after the child's first run: its calls are recorded by now
            if on_recorded is not None:
                on_recorded()
            if layout is not None:
                _network_format(network, context["spatial_dims"], layout)
            inputs.extend(_formatted(context["calls"], layout))
            replay_calls(network, inputs[:1], bf16)  # warm-up
        bare.append(time_call(lambda: replay_calls(network, inputs, bf16))[0])

    try:
        child = end_to_end_child(
            context["bundle"],
            context["data_root"],
            out_dir,
            {**overrides, **variant_overrides(knobs, variant)},
            expected,
            repeats,
            context["work"] / "logs" / f"end_to_end_{variant}.log",
            f"{context['description'].name} ({variant})",
            before_each_run=time_bare_forward,
            record=record,
        )
    finally:
        if layout is not None:
            _network_format(network, context.get("spatial_dims", 2), False)
    end_to_end = child["end_to_end_s"]
    bare_s, e2e_s = median(bare, 9), median(end_to_end, 9)
    effective = context["flops_useful"] / bare_s / 1e9
    items = context["items"]
    return {
        "channels_last": channels_last,
        "bf16": bf16,
        "overrides": variant_overrides(knobs, variant),
        "bare_forward_s": [round(s, 3) for s in bare],
        "end_to_end_s": [round(s, 3) for s in end_to_end],
        "end_to_end_first_s": round(child["first_s"], 3),
        **({"end_to_end_first_recording_s": round(child["recording_s"], 3)} if record is not None else {}),
        "written": [str(p.relative_to(out_dir)) for p in expected],
        "bare_forward_median_s": round(bare_s, 3),
        "effective_gflops": round(effective, 2),
        "p1": round(effective / context["peak_gflops"], 3),
        "end_to_end_median_s": round(e2e_s, 3),
        "p2": round(e2e_s / bare_s, 3),
        "bare_seconds_per_item": round(bare_s / items, 4),
        "end_to_end_seconds_per_item": round(e2e_s / items, 4),
        "end_to_end_child": {**_memory_record(child), "run_minor_page_faults": child["run_minor_page_faults"]},
    }


def _first_tensor_shape(batch: Any) -> list[int]:
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), torch.Tensor):
        return list(batch["image"].shape)
    found = _tensors(batch)
    return list(found[0].shape) if found else []


#: P4 runs a second warm-up iteration when the first took less than this (seconds)
SECOND_WARM_UP_BELOW_S = 30.0


def training_step(
    bundle: Path,
    data_root: Path,
    work: Path,
    repeats: int,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """P4: ``train#trainer``'s own iteration on a batch from ``train#dataloader`` vs on a batch in memory.

    The loader runs with ``num_workers`` 0 and ``cache_rate`` 1 (deterministic transforms cached, as a real
    run after its first epoch); ``num_folds`` 1 puts every synthetic case into the training split (unless that
    empties the bundle's training split). Only the knobs the config has are set.
    """
    import monai
    from monai.bundle import ConfigParser

    def make_parser(single_fold: bool):
        parser = ConfigParser()
        parser.read_config(str(_configs(bundle) / "train.json"))
        parser.read_meta(str(_configs(bundle) / "metadata.json"))
        wanted = {"num_workers": 0, "cache_rate": 1.0, "seed": seed, **({"num_folds": 1} if single_fold else {})}
        updates: dict[str, Any] = {"bundle_root": str(bundle), "dataset_dir": str(data_root)}
        updates.update({k: v for k, v in wanted.items() if k in parser.config})
        for key, value in {"output_dir": work / "train_out", "ckpt_dir": work / "train_ckpt"}.items():
            if key in parser.config:
                updates[key] = str(value)
        updates.update(dict(overrides or {}))
        parser.update(updates)
        return parser

    # num_folds 1 puts every synthetic case into training where the bundle's split allows it (strokeseg's
    # cases_for); a bundle whose own split then leaves training empty keeps its folds.
    parser = make_parser(single_fold=True)
    monai.utils.set_determinism(seed=seed)
    start = time.perf_counter()
    if "num_folds" in parser.config and len(parser.get_parsed_content("train#dataset")) == 0:
        parser = make_parser(single_fold=False)
    cache_s, trainer = time_call(lambda: parser.get_parsed_content("train#trainer"))
    cache_s = time.perf_counter() - start
    loader = trainer.data_loader
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    def iteration(batch) -> None:
        trainer._iteration(trainer, batch)

    fetch_s, prebuilt = time_call(next_batch)
    # Warm-up: allocator, optimiser state and oneDNN backward primitives. The iteration after the first was
    # still ~1 s slower than the later ones in every 2-D bundle (MS-DCNN 5.65 s, then 4.74 / 4.64 s), which
    # with one repeat landed on the pipeline side alone; a second warm-up runs unless one iteration is long.
    if time_call(lambda: iteration(prebuilt))[0] < SECOND_WARM_UP_BELOW_S:
        iteration(prebuilt)
    pipeline, in_memory, data_only = [], [], []
    for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
        start = time.perf_counter()
        batch = next_batch()
        data_only.append(time.perf_counter() - start)
        iteration(batch)
        pipeline.append(time.perf_counter() - start)
        in_memory.append(time_call(lambda: iteration(prebuilt))[0])
    ratio = median(pipeline, 9) / median(in_memory, 9)
    shape = _first_tensor_shape(prebuilt)
    return {
        "stage": "train",
        "batch_image_shape": shape,
        # items (slices, patches, segments) of one batch per second, from the pipeline as a real run sees it
        "items_per_s": round(shape[0] / median(pipeline, 9), 2) if shape and median(pipeline, 9) > 0 else None,
        "train_batch_size": parser.config.get("train_batch_size"),
        "samples_per_case": parser.config.get("samples_per_case"),
        "cache_build_s": round(cache_s, 3),
        "first_fetch_s": round(fetch_s, 3),
        "pipeline_iteration_s": [round(s, 3) for s in pipeline],
        "in_memory_iteration_s": [round(s, 3) for s in in_memory],
        "data_fetch_s": [round(s, 3) for s in data_only],
        "pipeline_median_s": median(pipeline, 3),
        "in_memory_median_s": median(in_memory, 3),
        "p4": round(ratio, 3),
    }


def inference_memory(
    bundle: Path,
    data_root: Path,
    work: Path,
    description,
    case: str,
    overrides: Mapping[str, Any] | None = None,
    record: Path | None = None,
) -> dict[str, Any]:
    """P5: peak RSS of the bundle's inference (default knobs) in a child process, one run.

    Used only where the default variant was not measured (its end-to-end child gives P5 otherwise); with
    ``record``, that run also records the network's calls there (where no variant was measured at all).

    Raises:
        BundleError: the child failed (with the last lines of its log).
    """
    from strokeseg.tools.bench.endtoend import end_to_end_child

    out_dir = work / "out_rss"
    expected = [out_dir / rel for rel in description.outputs_for(case)]
    log = work / "logs" / "inference_rss.log"
    label = description.name
    child = end_to_end_child(bundle, data_root, out_dir, dict(overrides or {}), expected, 0, log, label, record=record)
    return _memory_record(child)


def _memory_record(child: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("returncode", "seconds", "peak_rss_mib", "peak_rss_gib", "peak_rss_first_run_gib", "log")
    return {**{k: child.get(k) for k in keys}, "timed_runs": len(child.get("end_to_end_s", []))}


def run_hook(module_name: str, context: dict[str, Any]) -> dict[str, Any]:
    """Call ``bench_hook(context)`` of ``module_name`` (a bundle description's ``bench_hook``).

    The context holds ``description``, ``bundle`` (the copy), ``work``, ``data_root``, ``case``, ``item`` (the
    preprocessed case), ``network``, ``calls`` (:class:`NetworkCall` list, fp32 contiguous, recorded in the first
    measured variant's end-to-end child: bf16 outputs where that variant is bf16), ``evaluator``,
    ``parser``, ``record`` (the generic record so far, variants measured), ``quick``, ``seed``, ``machine`` and
    ``peak``. The hook returns a dict merged into the record: ``"variants"`` per variant into the variant
    records, ``"notes"`` appended to the record's notes, any other key set (e.g. ``"anchor"``).

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
    from strokeseg.runtime.description import describe_bundle

    description = describe_bundle(bundle_dir)
    work = Path(work_dir)
    train_repeats = 1 if quick else (3 if repeats is None else max(1, int(repeats)))
    repeats = repeats if repeats is not None else (1 if quick else 2)
    quick_json: dict[str, Any] = {}
    if quick_config:
        quick_path = _configs(Path(bundle_dir)) / "quick.json"
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

    probe = _inference_parser(bundle, {"bundle_root": str(bundle), **extra})
    knobs = variant_knobs(probe.config)
    default = default_variant(probe, knobs, bool(machine.get("bf16_supported")))
    base = {"bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(work / "unused"), **extra}
    if "overwrite" in probe.config:
        extra["overwrite"] = True
    parser = _inference_parser(bundle, {**base, **variant_overrides(knobs, "fp32")})
    evaluator, network = _loaded_evaluator(parser, description, bundle)
    case = _first_case(parser)
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
        calls = load_calls(record_dir)
        summary = json.loads((record_dir / RECORD_SUMMARY).read_text())
        first_input = (_tensors(calls[0].args) or _tensors(calls[0].kwargs))[0]
        spatial_dims = first_input.ndim - 2
        if spatial_dims not in (2, 3):
            raise BundleError(
                f"{description.name}: network input of shape {list(first_input.shape)} is neither 2-D nor 3-D."
            )
        flops, counted_on = count_call_flops(network, calls)
        predicted = sum(_batch_voxels(shape) for shape in summary["predictions"])
        fraction = useful_fraction(calls, predicted)
        context.update(
            calls=calls,
            summary=summary,
            first_input=first_input,
            spatial_dims=spatial_dims,
            items=sum(c.items for c in calls),
            flops_computed=flops,
            flops_counted_on=counted_on,
            fraction=fraction,
            flops_useful=flops * fraction,
            peak_key=f"conv{spatial_dims}d_fp32",
            peak_gflops=float(peak[f"conv{spatial_dims}d_fp32"]["gflops"]),
        )
        stages["flop_count"] = round(time.perf_counter() - start, 2)

    records, recording_child = {}, None
    for name in chosen:
        first = not records
        records[name] = _measure_variant(
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
        preprocess_s, context["item"] = time_call(lambda: _first_item(parser))
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
