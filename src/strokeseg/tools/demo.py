"""``strokeseg demo``: synthetic data for every layout, then each bundle's quick pipeline, then a report.

The demo drives the bundles exactly as a user would, through ``python -m monai.bundle run`` and
``ckpt_export`` in subprocesses, on a copy of each bundle (so nothing is written into ``bundles/``).
Per bundle, as its self-description (:mod:`strokeseg.runtime.description`) names them: quick training of
every stage (``train.json`` + ``quick.json``, then each ``train_<stage>.json`` + ``quick.json``), inference on
the synthetic test cases, evaluation of those predictions against the phantoms' hidden reference masks with
the shared toolkit, TorchScript export of every exported network.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from strokeseg.data.datalist import build_datalist, write_datalist
from strokeseg.data.layouts import LAYOUT_NAMES
from strokeseg.data.phantoms import synthesize_dataset
from strokeseg.errors import StrokesegError
from strokeseg.knobs import as_bool
from strokeseg.metrics.report import evaluate_folders
from strokeseg.runtime.description import bundle_folders, default_bundles_dir, describe_bundle
from strokeseg.runtime.inputs import inference_cases
from strokeseg.tools.runner import config_arg, run_monai_bundle
from strokeseg.tools.verify.smoke import copy_bundle

__all__ = ["run_demo", "BundleRun", "default_bundles_dir"]

logger = logging.getLogger(__name__)

#: cases per layout when no bundle asks for more (quick.json ``demo_cases`` / ``demo_test_cases``)
DEFAULT_CASES, DEFAULT_TEST_CASES = 3, 1


@dataclass
class BundleRun:
    """What the demo did with one bundle (times in seconds)."""

    name: str
    layout: str
    times: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    report_dir: Path | None = None
    exports: dict[str, Path] = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _monai(verb: str, args: list[str], log: Path, cwd: Path, timeout: float | None = None) -> float:
    """Run ``python -m monai.bundle <verb> <args>``; return seconds.

    Raises:
        StrokesegError: the command failed (the message carries the end of its log).
    """
    run = run_monai_bundle(verb, args, log, cwd=cwd, timeout=timeout)
    if not run.ok:
        raise StrokesegError(run.failure())
    return run.seconds


def _test_images(data_dir: Path, layout: str) -> dict[str, str]:
    """``{case: first image file}`` of a layout's test cases: the grey background of the overlay figures."""
    images: dict[str, str] = {}
    try:
        entries = inference_cases(data_dir, layout, "test")
    except StrokesegError as err:  # the figures are then drawn without the image
        logger.warning("no test images for the overlay figures: %s", err)
        return images
    for entry in entries:
        image = entry.get("image")
        image = image[0] if isinstance(image, (list, tuple)) and image else image
        if isinstance(image, str) and entry.get("case"):
            images[str(entry["case"])] = image
    return images


def _run_bundle(bundle_src: Path, out: Path, data_dir: Path, quick: bool) -> BundleRun:
    """Quick training of every stage, inference, evaluation and export of every network of one bundle copy."""
    description = describe_bundle(bundle_src)
    name = description.name
    bundle = out / "bundles" / name
    copy_bundle(bundle_src, bundle)
    run = BundleRun(name=name, layout=description.layout)
    logs = out / "logs" / name
    work = out / "runs" / name
    common = ["--bundle_root", str(bundle), "--dataset_dir", str(data_dir), "--ckpt_dir", str(bundle / "models")]
    quick_file = ["configs/quick.json"] if quick and (bundle / "configs" / "quick.json").is_file() else []

    for stage in description.stages:
        files = description.stage_configs(stage) + quick_file
        run.times[stage] = _monai(
            "run",
            ["--config_file", config_arg(files), "--output_dir", str(work / "train"), *common],
            logs / f"{stage}.log",
            cwd=bundle,
        )
    pred_dir = work / "test_predictions"
    infer_config = config_arg(["configs/inference.json", *quick_file])
    # a second demo into the same folder retrains, so its predictions are recomputed rather than refused
    run.times["inference"] = _monai(
        "run",
        [
            "--config_file",
            infer_config,
            *common[:4],
            "--output_dir",
            str(pred_dir),
            "--infer_split",
            "test",
            "--overwrite",
            "true",
        ],
        logs / "inference.log",
        cwd=bundle,
    )
    start = time.perf_counter()
    per_slice = as_bool(_read_json(bundle / "configs" / "evaluate.json").get("lesion_per_slice", False))
    report_dir = evaluate_folders(
        pred_dir,
        data_dir / "reference_test_labels",
        work / "test_evaluation",
        per_slice=per_slice,
        images=_test_images(data_dir, run.layout),
    )
    run.times["evaluate"] = time.perf_counter() - start
    run.report_dir = Path(report_dir)
    run.summary = _read_json(run.report_dir / "summary.json")
    export_seconds = 0.0
    for network in description.networks:
        export = work / f"{Path(network.checkpoint).stem}.ts"
        export_seconds += _monai(
            "ckpt_export",
            [network.id, "--filepath", str(export), "--ckpt_file", str(bundle / network.checkpoint)]
            + ["--meta_file", "configs/metadata.json", "--config_file", infer_config, "--bundle_root", str(bundle)],
            logs / f"export_{network.id}.log",
            cwd=bundle,
        )
        run.exports[network.id] = export
    run.times["export"] = export_seconds
    return run


def _summary_value(summary: dict, key: str) -> str:
    """A number from a ``summary.json`` of :mod:`strokeseg.metrics.report`: a lesion-wise summary row
    (``m#FP``, ``DR``, …) or the mean of a per-case metric (``dice``, ``hd95``, …)."""
    value = summary.get("lesionwise", {}).get(key)
    if value is None:
        entry = summary.get("metrics", {}).get(key)
        value = entry.get("mean") if isinstance(entry, dict) else None
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _write_readme(out: Path, datasets: dict[str, dict], runs: list[BundleRun], seconds: float) -> Path:
    lines = [
        "# strokeseg demo output",
        "",
        "Everything here was generated on this machine from synthetic stroke phantoms "
        "(`strokeseg synth`). **Synthetic results are not clinical results.**",
        "",
        "## Synthetic datasets",
        "",
        "| layout | folder | training cases | test cases | datalist | previews | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for layout, info in datasets.items():
        lines.append(
            f"| {layout} | `{info['dir'].relative_to(out)}` | {info['training']} | {info['testing']} | "
            f"`{info['datalist'].relative_to(out)}` | `{info['previews'].relative_to(out)}/` | {info['seconds']:.1f} |"
        )
    if runs:
        lines += [
            "",
            "## Bundles (quick configuration, synthetic test cases)",
            "",
            "| bundle | layout | Dice | m#FP | m#FN | DR | HD95 (mm) | train s | inference s | report |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in runs:
            train_s = sum(v for k, v in run.times.items() if k.startswith("train"))
            report = f"`{run.report_dir.relative_to(out)}/summary.md`" if run.report_dir else "n/a"
            lines.append(
                f"| {run.name} | {run.layout} | {_summary_value(run.summary, 'dice')} | "
                f"{_summary_value(run.summary, 'm#FP')} | {_summary_value(run.summary, 'm#FN')} | "
                f"{_summary_value(run.summary, 'DR')} | {_summary_value(run.summary, 'hd95')} | "
                f"{train_s:.0f} | {run.times.get('inference', 0):.1f} | {report} |"
            )
        lines.append("")
        for run in runs:
            figures = sorted((run.report_dir / "figures").glob("*.png")) if run.report_dir else []
            lines.append(f"### {run.name}")
            lines.append("")
            for net_id, export in run.exports.items():
                lines.append(f"- TorchScript export of `{net_id}`: `{export.relative_to(out)}`")
            for fig in figures:
                lines.append(f"- ![{fig.stem}]({fig.relative_to(out)})")
            lines.append("")
    lines += ["", f"Total wall time: {seconds:.0f} s.", ""]
    readme = out / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def run_demo(
    out: str | Path = "demo_out",
    bundles: str | list[str] | tuple[str, ...] | None = None,
    quick: bool = True,
    seed: int = 0,
    bundles_dir: str | Path | None = None,
) -> Path:
    """Synthesise every layout, build datalists and previews, run the bundles, write ``<out>/README.md``.

    Args:
        out: output folder (recreated).
        bundles: bundle names to run (comma-separated string or list); default every bundle folder;
            ``"none"`` runs only the data part.
        quick: use each bundle's ``configs/quick.json``.
        seed: synthetic data seed.
        bundles_dir: where the bundles live (default: the checkout's ``bundles/``).

    Returns:
        Path of the README written.
    """
    start = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    available = [p.name for p in bundle_folders(root)]
    if bundles is None:
        selected = available
    elif isinstance(bundles, str):
        selected = [] if bundles == "none" else [b.strip() for b in bundles.split(",") if b.strip()]
    else:
        selected = list(bundles)
    unknown = sorted(set(selected) - set(available))
    if unknown:
        raise StrokesegError(f"unknown bundle(s) {unknown}; available in {root}: {available}")

    sizes = {layout: (DEFAULT_CASES, DEFAULT_TEST_CASES) for layout in LAYOUT_NAMES}
    for name in selected:
        quick_cfg = _read_json(root / name / "configs" / "quick.json")
        layout = describe_bundle(root / name).layout
        cases = max(sizes[layout][0], int(quick_cfg.get("demo_cases", DEFAULT_CASES)))
        test_cases = max(sizes[layout][1], int(quick_cfg.get("demo_test_cases", DEFAULT_TEST_CASES)))
        sizes[layout] = (cases, test_cases)

    datasets: dict[str, dict] = {}
    for layout in LAYOUT_NAMES:
        cases, test_cases = sizes[layout]
        data_dir = out / "data" / layout
        t0 = time.perf_counter()
        logger.info("synthesising %s: %d training + %d test cases", layout, cases, test_cases)
        synthesize_dataset(
            layout, data_dir, cases=cases, test_cases=test_cases, seed=seed, overwrite=True, preview=True
        )
        datalist = build_datalist(layout, data_dir, folds=min(5, cases), seed=seed)
        datalist_file = write_datalist(datalist, out / "datalists" / f"{layout}.json")
        datasets[layout] = {
            "dir": data_dir,
            "training": len(datalist["training"]),
            "testing": len(datalist["testing"]),
            "datalist": datalist_file,
            "previews": data_dir / "preview",
            "seconds": time.perf_counter() - t0,
        }

    runs = []
    for name in selected:
        layout = describe_bundle(root / name).layout
        logger.info("running bundle %s on %s", name, layout)
        runs.append(_run_bundle(root / name, out, out / "data" / layout, quick))
    return _write_readme(out, datasets, runs, time.perf_counter() - start)
