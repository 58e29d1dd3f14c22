"""Where end-to-end inference spends its time (what fills P2): ``cProfile`` of one ``inference.json`` run.

The bench's P2 is end to end ÷ bare forward; this module says what fills the difference. It runs the bundle's
own ``ConfigWorkflow(inference.json)`` on one synthetic case of its layout (the bench's workspace,
:mod:`strokeseg.tools.bench.workspace`), once untimed (imports, first-call costs) and once under ``cProfile``,
and groups the profile into stages by the cumulative time of the functions that make them: the networks'
top-level forward, nibabel's NIfTI open / read / write, and each transform class's ``__call__`` (MONAI's and
ours). Transforms nest (a
``Compose`` holds transforms, ``Invertd`` re-runs inverses, a reader runs inside ``LoadImaged``), so the rows
do not add up to the total.
"""

from __future__ import annotations

import cProfile
import inspect
import io
import pstats
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from strokeseg.runtime.description import describe_bundle
from strokeseg.tools.bench.workspace import bench_copy, inference_workflow

__all__ = ["profile_inference", "stage_times", "format_profile"]

_NIBABEL = {
    ("loadsave.py", "load"): "NIfTI open (nibabel.load)",
    ("arrayproxy.py", "__array__"): "NIfTI read (ArrayProxy: decompress, scale)",
    ("loadsave.py", "save"): "NIfTI write (nibabel.save: compress)",
}


def stage_times(stats: pstats.Stats, forwards: Mapping[tuple[str, int], str]) -> list[dict[str, Any]]:
    """Cumulative seconds of the networks' top-level ``forward`` and of nibabel's load / read / save.

    Args:
        stats: the profile.
        forwards: ``{(source file, first line of forward): network id}``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for (filename, line, name), (_cc, ncalls, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        path = filename.replace("\\", "/")
        stage = None
        if (path, line) in forwards and name == "forward":
            stage = f"network forward ({forwards[(path, line)]})"
        elif "/nibabel/" in path:
            stage = _NIBABEL.get((Path(path).name, name))
        if stage is None:
            continue
        row = rows.setdefault(stage, {"stage": stage, "seconds": 0.0, "calls": 0})
        row["seconds"] += cumulative
        row["calls"] += ncalls
    return sorted(rows.values(), key=lambda r: -r["seconds"])


def _class_at(path: str, line: int) -> str:
    """The class whose body holds ``line`` of ``path`` (the nearest ``class`` line above it)."""
    try:
        lines = Path(path).read_text().splitlines()[: max(line, 1)]
    except OSError:
        return "?"
    for text in reversed(lines):
        if text.startswith("class "):
            return text[6:].split("(")[0].split(":")[0].strip()
    return "?"


def _transform_classes(stats: pstats.Stats, top: int) -> list[dict[str, Any]]:
    """The transform ``__call__`` methods with most cumulative time, named by their class's module and line."""
    rows = []
    for (filename, line, name), (_cc, ncalls, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        path = filename.replace("\\", "/")
        if name == "__call__" and ("/monai/transforms/" in path or "/strokeseg/transforms/" in path):
            package = "monai" if "/monai/" in path else "strokeseg"
            rows.append({"function": f"{package} {_class_at(path, line)}", "seconds": cumulative, "calls": ncalls})
    return sorted(rows, key=lambda r: -r["seconds"])[:top]


def profile_inference(
    bundle_dir: str | Path,
    work_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    top: int = 15,
) -> dict[str, Any]:
    """Profile one end-to-end ``inference.json`` run of a bundle on one synthetic case.

    Args:
        bundle_dir: the bundle folder.
        work_dir: an empty scratch folder.
        overrides: config ids (e.g. ``{"inference_precision": "bf16"}``); default knobs otherwise.
        seed: seed of the synthetic data and the fresh weights.
        top: rows of the ``cProfile`` listing (by cumulative time) and of the transform listing.

    Returns:
        ``total_s`` (the profiled run), ``unprofiled_s`` (the same run without the profiler, after it),
        ``stages`` (:func:`stage_times`), ``transforms`` (the slowest transform ``__call__`` methods) and
        ``listing`` (pstats text: the ``top`` functions by cumulative time, then by own time).
    """
    description = describe_bundle(bundle_dir)
    work = Path(work_dir)
    data_root, bundle, _ = bench_copy(bundle_dir, work, description.layout, description.name, seed, None, overrides)
    workflow = inference_workflow(bundle, data_root, work / "out", dict(overrides or {}))
    try:
        workflow.run()  # warm: imports, first-call costs, caches
        forwards: dict[tuple[str, int], str] = {}
        for exported in description.networks:
            forward = type(workflow.parser.get_parsed_content(exported.id)).forward
            source = inspect.getsourcefile(forward)
            if source:
                forwards[(source.replace("\\", "/"), forward.__code__.co_firstlineno)] = exported.id
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(workflow.run)
        total = time.perf_counter() - start
        start = time.perf_counter()
        workflow.run()
        plain = time.perf_counter() - start
    finally:
        workflow.finalize()
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)  # where the time itself is spent
    return {
        "bundle": description.name,
        "overrides": dict(overrides or {}),
        "total_s": round(total, 3),
        "unprofiled_s": round(plain, 3),
        "stages": [{**r, "seconds": round(r["seconds"], 3)} for r in stage_times(stats, forwards)],
        "transforms": [{**r, "seconds": round(r["seconds"], 3)} for r in _transform_classes(stats, top)],
        "listing": text.getvalue(),
    }


def format_profile(result: Mapping[str, Any]) -> str:
    """Markdown tables of :func:`profile_inference`'s stages and transforms."""
    lines = [
        f"# Profile of `{result['bundle']}` inference ({result['overrides'] or 'default knobs'})",
        "",
        f"Profiled run {result['total_s']} s (the profiler adds overhead; the same run without it: "
        f"{result['unprofiled_s']} s). Stages nest, so they do not add up.",
        "",
        "| stage | cumulative s | calls |",
        "|---|---|---|",
        *[f"| {r['stage']} | {r['seconds']} | {r['calls']} |" for r in result["stages"]],
        "",
        "| transform `__call__` | cumulative s | calls |",
        "|---|---|---|",
        *[f"| {r['function']} | {r['seconds']} | {r['calls']} |" for r in result["transforms"]],
    ]
    return "\n".join(lines) + "\n"
