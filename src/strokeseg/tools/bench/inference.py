"""Inference of one variant, measured two ways side by side: the bare forward here, end to end in a child.

The bare forward replays the recorded calls (:mod:`strokeseg.tools.bench.calls`) through the network alone, in
the variant's memory format and precision; the end-to-end runs are ``ConfigWorkflow(inference.json).run()`` in a
child process (:mod:`strokeseg.tools.bench.endtoend`), whose peak resident memory is P5. Their ratio is P2, and
the useful FLOPs over the bare forward time, divided by the machine's conv peak, are P1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from strokeseg.runtime.precision import to_memory_format
from strokeseg.tools.bench.calls import NetworkCall, map_tensors
from strokeseg.tools.bench.endtoend import end_to_end_child
from strokeseg.tools.bench.timing import median, time_call
from strokeseg.tools.bench.variants import VARIANTS, variant_overrides

__all__ = ["replay_calls", "measure_variant", "inference_memory", "memory_record"]


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
    return [(map_tensors(fmt, c.args), map_tensors(fmt, c.kwargs)) for c in calls]


def replay_calls(network: torch.nn.Module, inputs: Sequence[tuple[tuple, dict]], bf16: bool = False) -> None:
    """The network alone over the recorded calls (``inference_mode``, optional bf16 autocast)."""
    with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
        for args, kwargs in inputs:
            network(*args, **kwargs)


def measure_variant(
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

    Args:
        context: the bench's state of this bundle: ``network``, ``knobs``, ``description``, ``case``, ``bundle``,
            ``data_root``, ``work``; by the first bare forward also ``calls``, ``spatial_dims``, ``items``,
            ``flops_useful`` and ``peak_gflops``.
        variant: a key of :data:`strokeseg.tools.bench.variants.VARIANTS`.
        out_dir: where the child writes the case's outputs.
        repeats: timed runs on each side.
        overrides: config ids of the inference workflow (the variant's knobs are added).
        record: see above.
        on_recorded: see above.
    """
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
        "end_to_end_child": {**memory_record(child), "run_minor_page_faults": child["run_minor_page_faults"]},
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
    out_dir = work / "out_rss"
    expected = [out_dir / rel for rel in description.outputs_for(case)]
    log = work / "logs" / "inference_rss.log"
    label = description.name
    child = end_to_end_child(bundle, data_root, out_dir, dict(overrides or {}), expected, 0, log, label, record=record)
    return memory_record(child)


def memory_record(child: Mapping[str, Any]) -> dict[str, Any]:
    """The memory numbers of an end-to-end child's result (P5), and how many timed runs it made."""
    keys = ("returncode", "seconds", "peak_rss_mib", "peak_rss_gib", "peak_rss_first_run_gib", "log")
    return {**{k: child.get(k) for k in keys}, "timed_runs": len(child.get("end_to_end_s", []))}
