"""The markdown rendering of ``bench.json``: machine, conv peak, components and one section per bundle."""

from __future__ import annotations

from typing import Any

from strokeseg.tools.bench.timing import median

__all__ = ["render_markdown"]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "met" if value else "**not met**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _cell(text: str, limit: int = 200) -> str:
    """One table cell of free text: a single line without pipes, at most ``limit`` characters."""
    flat = " ".join(str(text).split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _huge(machine: dict[str, Any]) -> str:
    pages = machine.get("huge_pages")
    if not pages:
        return ""
    return f" Huge pages: {pages['variable']}, kernel THP mode {pages['kernel_mode'] or 'unknown'}."


def _machine_lines(machine: dict[str, Any], load_end: Any) -> list[str]:
    bf16 = "yes" if machine["bf16_supported"] else "no"
    isa = f"ATen CPU capability {machine.get('aten_cpu_capability') or 'unknown'}"
    if machine.get("onednn_isa_cap"):
        isa += f", oneDNN capped by {machine['onednn_isa_cap']}"
    return [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch threads "
        f"{machine['torch_threads']}, flags {', '.join(machine['cpu_flags']) or 'none'} ({isa}); native bf16: "
        f"{bf16} ({machine['bf16_reason']}). torch {machine['torch']}, MONAI {machine['monai']}.{_huge(machine)}",
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


def _case_line(record: dict[str, Any]) -> str:
    case, net = record["case"], record["network"]
    unit = case.get("item_unit", "slice")
    if net.get("spatial_dims") == 2 and "slices_total" in case:
        shape = f"{case['items']} of {case['slices_total']} slices with brain, slices {case['item_shape']}"
    else:
        shape = f"{case['items']} {unit}s of {case['item_shape']} in {case['network_calls']} network calls"
    overlap = ""
    if net.get("useful_fraction", 1.0) < 1.0:
        overlap = (
            f" useful (the {net['flops_computed'] / 1e9:.2f} GFLOP computed × {net['useful_fraction']:.3g}: "
            "window overlap or overshoot past the image)"
        )
    notes = "".join(f" {n}" for n in record.get("notes", []))
    return (
        f"Case {case['name']}: preprocessed {case['preprocessed_shape']}, {shape}, batch {case['batch_max']}; "
        f"{net['gflop_total']} GFLOP{overlap} ({net['flops_per_item'] / 1e9:.2f} per {unit}); network "
        f"`{net['id']}` ({net['class']}, {net['parameters']} parameters), P1 against the "
        f"{record['peak_key']} peak.{notes}"
    )


def _bundle_lines(name: str, record: dict[str, Any]) -> list[str]:
    lines = [f"## Bundle `{name}`", ""]
    if "error" in record or "skipped" in record:
        return lines + [
            f"{'Failed' if 'error' in record else 'Skipped'}: {record.get('error', record.get('skipped'))}",
            "",
        ]
    unit = record["case"].get("item_unit", "slice")
    anchor = record.get("anchor")
    config = f"Configuration: {record['config']}. " if record.get("config") else ""
    lines += [f"{config}Weights: {record['weights']}.", "", _case_line(record), ""]
    if record.get("stage_seconds"):
        steps = ", ".join(f"{name.replace('_', ' ')} {s:g} s" for name, s in record["stage_seconds"].items())
        lines += [f"Where this section's {record.get('section_seconds', '?')} s went: {steps}.", ""]
    header = [
        "variant",
        "default",
        "bare forward s",
        "GFLOP/s",
        "P1",
        "end-to-end s",
        "P2",
        f"end-to-end s/{unit}",
        "first run s",
    ]
    if anchor:
        header.append(anchor.get("column", anchor["value_key"]))
    rows = []
    for variant, v in record["variants"].items():
        row = [
            variant,
            "yes" if v.get("default") else "",
            v["bare_forward_median_s"],
            v["effective_gflops"],
            v["p1"],
            v["end_to_end_median_s"],
            v["p2"],
            v["end_to_end_seconds_per_item"],
            v.get("end_to_end_first_s", "–"),
        ]
        if anchor:
            row.append(v.get(anchor["value_key"]))
        rows.append(row)
    lines += _table(header, rows)
    for variant, why in record.get("skipped_variants", {}).items():
        lines.append(f"- `{variant}` not measured: {why}.")
    if record.get("skipped_variants"):
        lines.append("")
    default = record.get("default_variant")
    if default and default not in record["variants"]:
        lines += [f"The bundle's default on this machine, `{default}`, was not measured in this run.", ""]
    if anchor and anchor.get("text"):
        lines += [anchor["text"], ""]
    if "training" in record:
        t = record["training"]
        lines += [f"### Training step (P4, stage `{t.get('stage', 'train')}`)", ""]
        lines += _table(
            ["batch", "items/s (pipeline)", "pipeline iteration s", "in-memory iteration s", "data fetch s", "P4"],
            [
                [
                    str(t["batch_image_shape"]),
                    t.get("items_per_s"),
                    t["pipeline_median_s"],
                    t["in_memory_median_s"],
                    median(t["data_fetch_s"], 3),
                    t["p4"],
                ]
            ],
        )
    if "memory" in record:
        m = record["memory"]
        scope = "3-D inference" if m.get("three_d") else "informative for a 2-D bundle"
        lines += [
            "### Memory (P5)",
            "",
            f"Peak RSS of the inference workflow ({m.get('variant', 'default')}) in a child process: "
            f"{m['peak_rss_gib']} GiB over its whole life ({m.get('timed_runs', 0)} timed run(s) after an untimed "
            f"one, {m['seconds']} s including start-up; after the first run alone "
            f"{m.get('peak_rss_first_run_gib', '–')} GiB; {scope}).",
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
                {True: "yes", False: "no"}.get(r.get("default"), ""),
                r["value"] if r["id"] != "error" else _cell(r["description"]),
                r["target"] + (" (informative)" if r["informative"] else ""),
                r["met"] if r["id"] != "error" else "**failed**",
            ]
            for r in ratios
        ]
        lines += ["## Ratios", "", *_table(["id", "bundle", "variant", "default", "value", "target", "met"], rows)]
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
