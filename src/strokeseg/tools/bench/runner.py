"""``strokeseg bench``: pick the sections, measure them in one process, write ``bench.json`` and ``bench.md``."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from monai.utils import set_determinism

from strokeseg.atomic_io import write_text_atomic
from strokeseg.errors import BundleError
from strokeseg.runtime.description import bundle_folders, default_bundles_dir
from strokeseg.runtime.hardware import usable_cores
from strokeseg.tools.bench.bundle import bench_bundle
from strokeseg.tools.bench.components import bench_evaluate, bench_synth
from strokeseg.tools.bench.machine import load_average, machine_info
from strokeseg.tools.bench.peak import conv_peak
from strokeseg.tools.bench.report import render_markdown
from strokeseg.tools.bench.targets import collect_ratios

__all__ = ["run_bench", "available_sections", "resolve_sections", "SHARED_SECTIONS"]

logger = logging.getLogger(__name__)

SHARED_SECTIONS = ("synth", "evaluate")
SCHEMA = "strokeseg-bench/1"


def available_sections(bundles_dir: str | Path | None = None) -> list[str]:
    """``synth``, ``evaluate`` and every bundle folder (one with ``configs/metadata.json``) under ``bundles_dir``.

    Every bundle is measured by the generic harness (:mod:`strokeseg.tools.bench.bundle`) from its description.

    Args:
        bundles_dir: the checkout's ``bundles/`` (default :func:`strokeseg.runtime.description.default_bundles_dir`).
    """
    folder = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    return [*SHARED_SECTIONS, *(p.name for p in bundle_folders(folder))]


def resolve_sections(bundles: str | Sequence[str] | None, bundles_dir: str | Path | None = None) -> list[str]:
    """The sections to run, in the order given (default: all of :func:`available_sections`).

    Args:
        bundles: comma-separated names, or a list / tuple of names (python-fire turns ``a,b`` into a tuple).
        bundles_dir: where bundle folders are looked up.

    Raises:
        BundleError: a name is neither ``synth`` nor ``evaluate`` nor a bundle folder.
    """
    available = available_sections(bundles_dir)
    if bundles is None:
        return available
    raw = bundles.split(",") if isinstance(bundles, str) else [str(b) for b in bundles]
    names = list(dict.fromkeys(n.strip() for n in raw if n.strip()))
    if not names:
        raise BundleError(f"no benchmark section named; choose among: {', '.join(available)}.")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BundleError(f"unknown benchmark section(s) {', '.join(unknown)}; choose among: {', '.join(available)}.")
    return names


def _measure_peak(quick: bool, machine: dict[str, Any]) -> dict[str, Any]:
    """fp32 2-D and 3-D conv peaks; bf16 (2-D and 3-D) only where the CPU has native bf16, else ``None``."""
    repeats = 1 if quick else 3
    peak: dict[str, Any] = {
        "conv2d_fp32": conv_peak(2, torch.float32, quick=quick, repeats=repeats),
        "conv3d_fp32": conv_peak(3, torch.float32, quick=quick, repeats=repeats),
    }
    bf16 = machine["bf16_supported"]
    for dims in (2, 3):
        peak[f"conv{dims}d_bf16"] = conv_peak(dims, torch.bfloat16, quick=quick, repeats=repeats) if bf16 else None
    peak["bf16_note"] = machine["bf16_reason"]
    return peak


def _guarded(name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; a failure is recorded in its place (and reported at the end) instead of losing the others."""
    logger.info("bench: measuring %s", name)
    start = time.perf_counter()
    try:
        record = fn()
    except Exception as err:  # noqa: BLE001 - recorded, then re-raised as one BundleError after writing
        logger.exception("bench section %s failed", name)
        trace = traceback.format_exc().strip().splitlines()[-12:]
        return {"error": f"{type(err).__name__}: {err}", "traceback_tail": trace}
    record["section_seconds"] = round(time.perf_counter() - start, 2)
    return record


def run_bench(
    bundles: str | list[str] | None = None,
    out: str | Path = "bench.json",
    quick: bool = False,
    bundles_dir: str | Path | None = None,
    bundle_options: dict[str, Any] | None = None,
) -> Path:
    """Measure the performance ratios of ``docs/performance.md`` and write ``bench.json`` and ``bench.md`` next to it.

    One process, torch threads = usable cores, fixed seeds. Always: the machine record and the fp32 conv peak
    (2-D, plus 3-D unless only 2-D work is measured; bf16 only where the CPU has native bf16). Then per section:
    ``synth`` (phantom generator), ``evaluate`` (evaluation toolkit) and each named bundle's benchmark.

    Args:
        bundles: comma-separated names among ``synth``, ``evaluate`` and the folders of the checkout's
            ``bundles/`` (default: all of them).
        out: JSON file to write; the markdown table goes to the same path with ``.md``.
        quick: reduced sizes and repeats (one synthetic case, small evaluation, small peak convolutions), for
            unit tests; the numbers then only show that the benchmark works.
        bundles_dir: where bundle folders are looked up (default: the checkout's ``bundles/``).
        bundle_options: extra keyword arguments of :func:`strokeseg.tools.bench.bundle.bench_bundle` for every bundle
            (``overrides``, ``repeats``, ``measure_memory``...), for tests.

    Returns:
        The path of the JSON file.

    Raises:
        BundleError: an unknown section name (before anything runs), or a section failed (after both files are
            written, with the error recorded in them; the other sections still ran).
    """
    bundles_dir = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    options = dict(bundle_options or {})
    names = resolve_sections(bundles, bundles_dir)
    out = Path(out)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    set_determinism(seed=0)  # torch, numpy and random
    try:
        machine = machine_info()
        started = time.perf_counter()
        bundle_names = [n for n in names if n not in SHARED_SECTIONS]
        results: dict[str, Any] = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": quick,
            "sections": names,
            "machine": machine,
        }
        results["peak"] = _measure_peak(quick, machine)
        if "synth" in names:
            results["synth"] = _guarded("synth", lambda: bench_synth(quick=quick))
        if "evaluate" in names:
            results["evaluate"] = _guarded("evaluate", lambda: bench_evaluate(quick=quick))
        results["bundles"] = {}
        for name in bundle_names:
            with tempfile.TemporaryDirectory(prefix=f"strokeseg-bench-{name}-") as work:
                results["bundles"][name] = _guarded(
                    name,
                    lambda n=name, w=work: bench_bundle(
                        bundles_dir / n, Path(w), results["peak"], machine, quick=quick, **options
                    ),
                )
        results["ratios"] = collect_ratios(results)
        results["total_seconds"] = round(time.perf_counter() - started, 2)
        results["load_average_end"] = load_average()
    finally:
        torch.set_num_threads(previous_threads)
    write_text_atomic(out, json.dumps(results, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), render_markdown(results))
    failed = [n for n in ("synth", "evaluate") if "error" in results.get(n, {})]
    failed += [n for n, r in results["bundles"].items() if "error" in r]
    if failed:
        raise BundleError(f"benchmark section(s) {', '.join(failed)} failed; see {out} for the errors.")
    return out
