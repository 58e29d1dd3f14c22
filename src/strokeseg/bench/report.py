"""The ratios of performance.md checked against their targets, and the markdown rendering of ``bench.json``."""

from __future__ import annotations

from typing import Any

from strokeseg.bench.timing import median

__all__ = ["Target", "TARGETS", "judge", "collect_ratios", "render_markdown"]


class Target:
    """One target of performance.md: ``value <op> threshold`` with ``op`` one of ``<=``, ``>=``.

    Args:
        ratio_id: ``P1`` … ``P5``.
        description: what the ratio is.
        op: ``"<="`` or ``">="``.
        threshold: the target value.
        informative: the target is quoted for context (another configuration); ``met`` is still computed.

    Raises:
        ValueError: ``op`` is neither ``<=`` nor ``>=``.
    """

    def __init__(self, ratio_id: str, description: str, op: str, threshold: float, informative: bool = False) -> None:
        if op not in ("<=", ">="):
            raise ValueError(f"op must be '<=' or '>=', got {op!r}.")
        self.ratio_id, self.description, self.op, self.threshold = ratio_id, description, op, float(threshold)
        self.informative = informative

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the target (``None`` when nothing was measured)."""
        if value is None:
            return None
        return bool(value <= self.threshold) if self.op == "<=" else bool(value >= self.threshold)


# performance.md, "Targets (ratios)"
TARGETS = {
    "P1_fp32": Target("P1", "effective inference GFLOP/s ÷ fp32 conv peak (fp32)", ">=", 0.6),
    "P1_bf16": Target("P1", "effective inference GFLOP/s ÷ fp32 conv peak (bf16 option)", ">=", 1.2),
    "P2": Target("P2", "end-to-end inference ÷ bare network forward", "<=", 1.25),
    "P4": Target("P4", "training iteration from the data pipeline ÷ on a pre-built batch", "<=", 1.15),
    "P5": Target("P5", "peak inference memory, GiB (target set for 3-D inference of 230×230×154)", "<=", 4.0, True),
    "scan": Target(
        "anchor", "end-to-end seconds per ≈20-slice scan (indicative; paper: 0.90 s on a Tesla K80)", "<=", 0.9, True
    ),
}


def judge(key: str, value: float | None, section: str, variant: str | None = None) -> dict[str, Any]:
    """One row of the ratio table: the value, its target and whether it is met.

    Args:
        key: a key of :data:`TARGETS`.
        value: the measured value (``None`` if not measured).
        section: bundle or component the ratio belongs to.
        variant: inference variant (``fp32``, ``fp32_channels_last``…), if any.
    """
    target = TARGETS[key]
    return {
        "id": target.ratio_id,
        "section": section,
        "variant": variant,
        "description": target.description,
        "value": value,
        "target": f"{target.op} {target.threshold:g}",
        "met": target.met(value),
        "informative": target.informative,
    }


def collect_ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio row of a ``bench.json`` record's bundle sections (``results["bundles"]``)."""
    rows = []
    for name, record in results.get("bundles", {}).items():
        if not isinstance(record, dict) or "variants" not in record:
            continue
        for variant, numbers in record["variants"].items():
            rows.append(judge("P1_bf16" if numbers.get("bf16") else "P1_fp32", numbers.get("p1"), name, variant))
            rows.append(judge("P2", numbers.get("p2"), name, variant))
            rows.append(judge("scan", numbers.get("end_to_end_seconds_per_20_slice_scan"), name, variant))
        if "training" in record:
            rows.append(judge("P4", record["training"].get("p4"), name))
        if "memory" in record:
            rows.append(judge("P5", record["memory"].get("peak_rss_gib"), name))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "met" if value else "**not met**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _machine_lines(machine: dict[str, Any], load_end: Any) -> list[str]:
    bf16 = "yes" if machine["bf16_supported"] else "no"
    return [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch threads "
        f"{machine['torch_threads']}, flags {', '.join(machine['cpu_flags']) or 'none'}; native bf16: {bf16} "
        f"({machine['bf16_reason']}). torch {machine['torch']}, MONAI {machine['monai']}.",
        "",
        f"Load average (1, 5, 15 min) at start {machine['load_average']}, at end {load_end}. Absolute seconds are "
        "indicative only (shared, noisy machine); the ratios are measured side by side in this run.",
        "",
    ]


def _peak_lines(peak: dict[str, Any]) -> list[str]:
    rows = []
    for key in ("conv2d_fp32", "conv3d_fp32", "conv2d_bf16", "conv3d_bf16"):
        entry = peak.get(key)
        if entry is None:
            rows.append([key, "–", "–", "–", f"not measured: {peak.get('bf16_note', '')}"])
            continue
        by = entry["by_memory_format"]
        rows.append(
            [
                key,
                "×".join(str(s) for s in entry["shape"]),
                by.get("contiguous", {}).get("gflops"),
                by.get("channels_last", {}).get("gflops"),
                entry["gflops"],
            ]
        )
    header = ["convolution", "input shape", "contiguous GFLOP/s", "channels-last GFLOP/s", "peak GFLOP/s"]
    return ["## Machine peak", "", *_table(header, rows)]


def _synth_lines(synth: dict[str, Any]) -> list[str]:
    targets = synth["targets_s"]
    rows = []
    for layout, r in synth["layouts"].items():
        row = [layout]
        for key in ("without_series", "with_series"):
            row += [
                r[f"seconds_per_case_{key}"],
                r["met"][key],
                r[f"cpu_seconds_per_case_{key}"],
                r.get("met_cpu", {}).get(key),
            ]
        rows.append(row)
    header = ["layout"]
    for key, label in (("without_series", "no series"), ("with_series", "4-D series")):
        header += [f"s/case, {label} (≤ {targets[key]:g})", "met", "CPU s/case", "met (CPU)"]
    return [
        f"## Synthetic phantoms (`strokeseg synth`, one thread, {synth['cases']} case(s) per layout)",
        "",
        "Wall seconds suffer from other processes on a shared machine; CPU seconds of the process do much less.",
        "",
        *_table(header, rows),
    ]


def _evaluate_lines(ev: dict[str, Any]) -> list[str]:
    shape = "×".join(str(s) for s in ev["shape"])
    met = ev["met"] if ev["target_applies"] else None
    note = "" if ev["target_applies"] else " (quick size: the target applies to 20 cases of 230×230×154)"
    header = ["cases", "shape", "seconds", "s/case", f"target (< {ev['target_s']:g} s)"]
    return [
        "## Evaluation (`strokeseg evaluate`, with figures)" + note,
        "",
        *_table(header, [[ev["num_cases"], shape, ev["seconds"], ev["seconds_per_case"], met]]),
    ]


def _bundle_lines(name: str, record: dict[str, Any]) -> list[str]:
    lines = [f"## Bundle `{name}`", ""]
    if "error" in record or "skipped" in record:
        return lines + [
            f"{'Failed' if 'error' in record else 'Skipped'}: {record.get('error', record.get('skipped'))}",
            "",
        ]
    case, net = record["case"], record["network"]
    lines += [
        f"Weights: {record['weights']}.",
        "",
        f"Case {case['dwi']}: preprocessed {case['preprocessed_shape']}, {case['slices_kept']} of "
        f"{case['slices_total']} slices with brain, slices {case['slice_shape']}, batch {case['slice_batch_size']}; "
        f"{net['gflop_total']} GFLOP ({net['flops_per_slice'] / 1e9:.2f} per slice); "
        f"{record['muscle_candidates']} small EDD candidates for MUSCLE.",
        "",
    ]
    rows = [
        [
            variant,
            v["bare_forward_median_s"],
            v["effective_gflops"],
            v["p1"],
            v["end_to_end_median_s"],
            v["p2"],
            v["end_to_end_seconds_per_slice"],
            v["end_to_end_seconds_per_20_slice_scan"],
        ]
        for variant, v in record["variants"].items()
    ]
    header = [
        "variant",
        "bare forward s",
        "GFLOP/s",
        "P1",
        "end-to-end s",
        "P2",
        "end-to-end s/slice",
        "s per 20-slice scan",
    ]
    lines += _table(header, rows)
    for variant, why in record.get("skipped_variants", {}).items():
        lines.append(f"- `{variant}` not measured: {why}.")
    if record.get("skipped_variants"):
        lines.append("")
    anchor = record["anchor"]
    lines += [
        f"Paper anchor (seed 000): {anchor['paper_seconds_per_scan_k80']} s per DWI scan of "
        f"≈{anchor['slices_per_scan']} slices on a Tesla K80 ({anchor['paper_edd_seconds_per_scan_k80']} s EDD); "
        "other hardware, indicative.",
        "",
    ]
    if "training" in record:
        t = record["training"]
        lines += ["### Training step (P4)", ""]
        lines += _table(
            ["batch", "pipeline iteration s", "in-memory iteration s", "data fetch s", "P4"],
            [
                [
                    str(t["batch_image_shape"]),
                    t["pipeline_median_s"],
                    t["in_memory_median_s"],
                    median(t["data_fetch_s"], 3),
                    t["p4"],
                ]
            ],
        )
    if "memory" in record:
        m = record["memory"]
        lines += [
            "### Memory (P5)",
            "",
            f"Peak RSS of `python -m monai.bundle run` inference: {m['peak_rss_gib']} GiB "
            f"(whole child process, {m['seconds']} s including start-up; informative for a 2-D bundle).",
            "",
        ]
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The ``bench.md`` text of a ``bench.json`` record: machine line, ratio table, one table per section."""
    lines = ["# strokeseg bench", ""]
    lines += _machine_lines(results["machine"], results.get("load_average_end"))
    if results.get("quick"):
        lines += ["Quick mode: reduced sizes and repeats (a smoke test of the benchmark, not a measurement).", ""]
    ratios = results.get("ratios", [])
    if ratios:
        rows = [
            [
                r["id"],
                r["section"],
                r["variant"] or "",
                r["value"],
                r["target"] + (" (informative)" if r["informative"] else ""),
                r["met"],
            ]
            for r in ratios
        ]
        lines += ["## Ratios", "", *_table(["id", "bundle", "variant", "value", "target", "met"], rows)]
    if "peak" in results:
        lines += _peak_lines(results["peak"])
    if isinstance(results.get("synth"), dict) and "layouts" in results["synth"]:
        lines += _synth_lines(results["synth"])
    elif results.get("synth"):
        lines += ["## Synthetic phantoms", "", f"Failed: {results['synth'].get('error')}", ""]
    if isinstance(results.get("evaluate"), dict) and "seconds" in results["evaluate"]:
        lines += _evaluate_lines(results["evaluate"])
    elif results.get("evaluate"):
        lines += ["## Evaluation", "", f"Failed: {results['evaluate'].get('error')}", ""]
    for name, record in results.get("bundles", {}).items():
        lines += _bundle_lines(name, record)
    return "\n".join(lines).rstrip() + "\n"
