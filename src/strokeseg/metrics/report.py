"""Evaluation reports: ``metrics.csv``, ``summary.json``, ``summary.md`` and ``figures/*.png``.

:class:`ReportBuilder` collects cases one at a time (from files in :func:`evaluate_folders`, from an
evaluator in :class:`strokeseg.metrics.handlers.CaseMetricsSaver`) and keeps only small things per case:
the metric row, a few overlay slices and, for soft predictions, the voxel score histogram of the PR/ROC
curves. :func:`write_report` writes the files atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from strokeseg.atomic_io import write_text_atomic
from strokeseg.errors import DataError
from strokeseg.grids import GRID_TOLERANCE_MM, grid_tolerance
from strokeseg.metrics.case import CASE_COLUMNS, case_metrics
from strokeseg.metrics.casefiles import Volume, check_same_grid, find_labels, find_predictions, load_volume
from strokeseg.metrics.curves import CurveAccumulator
from strokeseg.metrics.figures import (
    OverlaySlices,
    overlay_slices,
    save_bland_altman,
    save_dice_boxplot,
    save_overlay_montage,
    save_threshold_curves,
)
from strokeseg.metrics.summary import LESION_SUMMARY_ROWS, summarize

__all__ = ["CaseResult", "ReportBuilder", "write_report", "evaluate_folders"]

logger = logging.getLogger(__name__)


def _is_binary(values: np.ndarray) -> bool:
    if values.dtype == bool:
        return True
    if np.issubdtype(values.dtype, np.integer):
        return bool(values.min() >= 0 and values.max() <= 1) if values.size else True
    return bool(np.all((values == 0) | (values == 1)))


@dataclass(frozen=True)
class CaseResult:
    """What one case contributes to a report: its metric row, voxel histograms, overlay slices."""

    row: dict[str, Any]
    curves: CurveAccumulator | None
    overlay: OverlaySlices | None


class ReportBuilder:
    """Accumulate cases for a report.

    Args:
        threshold: soft predictions are binarised with ``prob >= threshold`` (``AsDiscrete``'s rule).
        connectivity: lesion connectivity (``None`` = full).
        per_slice: lesion-wise metrics on 2-D components per axial slice.
        curve_bins: resolution of the PR/ROC histograms of soft predictions.
        overlays: keep overlay slices for the montages.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        connectivity: int | None = None,
        per_slice: bool = False,
        curve_bins: int = 1000,
        overlays: bool = True,
    ) -> None:
        self.threshold = float(threshold)
        self.connectivity = connectivity
        self.per_slice = per_slice
        self.keep_overlays = overlays
        self.rows: list[dict[str, Any]] = []
        self.curves = CurveAccumulator(curve_bins)
        self.overlays: dict[str, OverlaySlices] = {}

    def compute_case(
        self,
        case: str,
        pred: np.ndarray,
        ref: np.ndarray,
        spacing: Sequence[float],
        prob: np.ndarray | None = None,
        background: np.ndarray | None = None,
    ) -> CaseResult:
        """Everything the report needs from one case, without touching the builder (thread-safe).

        Args:
            case: case name (unique in the report).
            pred: ``(H, W[, D])`` binary mask, or a soft map (then thresholded and used for the curves).
            ref: reference mask, same shape (non-zero = lesion).
            spacing: voxel size in mm.
            prob: optional soft map of the same shape for the PR/ROC curves.
            background: optional image of the same shape for the overlay montage.

        Raises:
            DataError: a shape or spacing problem (names the case).
        """
        pred, ref = np.asarray(pred), np.asarray(ref) != 0
        soft = not _is_binary(pred)
        mask = pred >= self.threshold if soft else pred != 0
        if prob is None and soft:
            prob = pred
        try:
            row = {"case": case, **case_metrics(mask, ref, spacing, self.connectivity, self.per_slice)}
        except DataError as err:
            raise DataError(f"case {case}: {err}") from err
        curves = None
        if prob is not None:
            prob = np.asarray(prob)
            if prob.shape != ref.shape:
                raise DataError(f"case {case}: soft map shape {prob.shape} differs from reference shape {ref.shape}.")
            if prob.size and (prob.min() < 0 or prob.max() > 1):
                logger.warning("case %s: soft map outside [0, 1]; left out of the PR/ROC curves.", case)
            else:
                curves = CurveAccumulator(self.curves.bins)
                curves.update(prob, ref)
        overlay = overlay_slices(mask, ref, background) if self.keep_overlays else None
        return CaseResult(row=row, curves=curves, overlay=overlay)

    def add_result(self, result: CaseResult) -> dict[str, Any]:
        """Add a computed case; returns its row.

        Raises:
            DataError: the case name is already in the report.
        """
        case = result.row["case"]
        if any(r["case"] == case for r in self.rows):
            raise DataError(f"case {case} added twice to the report.")
        if result.curves is not None:
            self.curves.merge(result.curves)
        if result.overlay is not None:
            self.overlays[case] = result.overlay
        self.rows.append(result.row)
        return result.row

    def add_case(
        self,
        case: str,
        pred: np.ndarray,
        ref: np.ndarray,
        spacing: Sequence[float],
        prob: np.ndarray | None = None,
        background: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Compute and add one case (arguments of :meth:`compute_case`); returns its row."""
        if any(r["case"] == case for r in self.rows):
            raise DataError(f"case {case} added twice to the report.")
        return self.add_result(self.compute_case(case, pred, ref, spacing, prob, background))

    def write(self, out_dir: str | Path, small_lesion_voxels: float | None = None, figures: bool = True) -> Path:
        """Write the report of the cases added so far (see :func:`write_report`)."""
        return write_report(
            self.rows,
            out_dir,
            figures=figures,
            curves=self.curves if self.curves.n_voxels else None,
            small_lesion_voxels=small_lesion_voxels,
            overlays=self.overlays,
            settings={"threshold": self.threshold, "connectivity": self.connectivity, "per_slice": self.per_slice},
        )


def _json_safe(value: Any) -> Any:
    """NaN/inf → ``null`` (strict JSON), numpy scalars → Python."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _markdown(summary: Mapping[str, Any]) -> str:
    lines = [
        "# Evaluation summary",
        "",
        f"{summary['n_cases']} cases; small/large split at a mean reference lesion size of "
        f"{_fmt(summary['small_lesion_voxels'], 1)} voxels; `hd` undefined (one mask empty) in "
        f"{summary['hd_nan_count']} cases, left out of its statistics.",
        "",
        "| metric | mean ± std | median | n | NaN |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary["metrics"].items():
        lines.append(
            f"| {name} | {_fmt(s['mean'])} ± {_fmt(s['std'])} | {_fmt(s['median'])} | {s['n']} | {s['nan_count']} |"
        )
    groups = {"all": summary, **summary["groups"]}
    lines += ["", "| lesion-wise | " + " | ".join(f"{g} (n={v['n_cases']})" for g, v in groups.items()) + " |"]
    lines.append("|---" * (len(groups) + 1) + "|")
    dice_row = [_fmt(v["metrics"].get("dice", {}).get("mean", math.nan)) for v in groups.values()]
    lines.append("| Dice (mean) | " + " | ".join(dice_row) + " |")
    for key in LESION_SUMMARY_ROWS:
        lines.append(f"| {key} | " + " | ".join(_fmt(v["lesionwise"][key], 2) for v in groups.values()) + " |")
    if "thresholds" in summary:
        t = summary["thresholds"]
        lines += [
            "",
            f"Voxel-wise optimal thresholds on these cases (report only, fit on validation folds): "
            f"THT0 = {_fmt(t['THT0'])}, THT1 = {_fmt(t['THT1'])}.",
        ]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = ["case"] + [c for c in CASE_COLUMNS if any(c in r for r in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        values = []
        for c in columns:
            v = r.get(c, math.nan)
            values.append(f"{v:.6g}" if isinstance(v, float) else v)
        writer.writerow(values)
    return buffer.getvalue()


def _pick_overlay_cases(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    ranked = sorted(rows, key=lambda r: (float(r["dice"]), str(r["case"])))
    if not ranked:
        return {}
    return {"best": ranked[-1]["case"], "median": ranked[len(ranked) // 2]["case"], "worst": ranked[0]["case"]}


def write_report(
    rows: list[dict],
    out_dir: str | Path,
    figures: bool = True,
    curves: CurveAccumulator | None = None,
    small_lesion_voxels: float | None = None,
    overlays: Mapping[str, OverlaySlices] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.csv``, ``summary.json``, ``summary.md`` and (optionally) ``figures/*.png``.

    Args:
        rows: per-case rows (``case`` + metric columns).
        out_dir: report folder (created).
        figures: write the PNG figures (``dice_boxplot``, ``bland_altman``, ``pr_curve``/``roc_curve`` when
            ``curves`` is given, ``overlay_{best,median,worst}`` when ``overlays`` has those cases).
        curves: voxel score histograms of soft predictions; THT0/THT1 are fitted on them *for the report
            only* (they are optimistic on the evaluated cases; bundles fit on validation folds).
        small_lesion_voxels: small/large split (default the cohort mean; see :func:`summarize`).
        overlays: overlay slices per case name.
        settings: evaluation settings recorded in ``summary.json``.

    Returns:
        ``out_dir``.

    Raises:
        DataError: no rows.
    """
    if not rows:
        raise DataError("no case to report.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = summarize(rows, small_lesion_voxels=small_lesion_voxels)
    summary["settings"] = dict(settings or {})
    if curves is not None:
        pr, roc = curves.pr_curve(), curves.roc_curve()
        tht0, tht1 = curves.fit_pr(), curves.fit_roc()
        summary["thresholds"] = {
            "THT0": tht0,
            "THT1": tht1,
            "bins": curves.bins,
            "fitted_on": "evaluated cases (report only)",
        }
    write_text_atomic(out / "metrics.csv", _csv(rows))
    write_text_atomic(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    write_text_atomic(out / "summary.md", _markdown(summary))
    if figures:
        fig_dir = out / "figures"
        groups = {g: summary["groups"][g]["cases"] for g in ("small", "large")}
        save_dice_boxplot(rows, groups, fig_dir / "dice_boxplot.png")
        save_bland_altman(rows, fig_dir / "bland_altman.png")
        if curves is not None:
            save_threshold_curves(pr, roc, fig_dir / "pr_curve.png", fig_dir / "roc_curve.png", tht0, tht1)
        for label, case in _pick_overlay_cases(rows).items():
            if overlays and case in overlays:
                save_overlay_montage(overlays[case], f"{label}: {case}", fig_dir / f"overlay_{label}.png")
    return out


def _load_case(
    pred_files, label_path: Path, tolerance_mm: float = GRID_TOLERANCE_MM
) -> tuple[Volume, Volume, Volume | None]:
    ref = load_volume(label_path)
    seg = load_volume(pred_files.seg) if pred_files.seg is not None else None
    prob = load_volume(pred_files.prob) if pred_files.prob is not None else None
    for vol in (seg, prob):
        if vol is not None:
            check_same_grid(vol, ref, tolerance_mm)
    return ref, seg if seg is not None else prob, prob


def _overlay_background(path: str | Path | None, ref: Volume) -> np.ndarray | None:
    """The image of a case on the reference's grid for the overlay montage, or ``None`` (with a warning)."""
    if path is None:
        return None
    image = load_volume(path)
    data = image.data[..., 0] if image.data.ndim == ref.data.ndim + 1 else image.data
    if data.shape != ref.data.shape or not np.allclose(image.affine, ref.affine, atol=1e-3):
        logger.warning("%s: not on the grid of %s; its overlay is drawn without the image.", image.path, ref.path)
        return None
    return np.asarray(data, dtype=np.float32)


def evaluate_folders(
    pred: str | Path,
    labels: str | Path,
    out: str | Path,
    threshold: float = 0.5,
    connectivity: int | None = None,
    per_slice: bool = False,
    small_lesion_voxels: float | None = None,
    figures: bool = True,
    allow_missing: bool = False,
    images: Mapping[str, str | Path] | None = None,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> Path:
    """Evaluate a folder of predictions against reference masks and write the report into ``out``.

    Args:
        pred: prediction folder (``<case>/<case>_seg.nii.gz``, ``<case>_seg.nii.gz`` or ``<case>.nii.gz``,
            optional ``<case>_prob.nii.gz`` soft maps beside them).
        labels: folder of ``<case>.nii.gz`` / ``<case>_label.nii.gz`` or a datalist JSON.
        out: report folder.
        threshold: binarisation of soft predictions (``>=``).
        connectivity: lesion connectivity (``None`` = full).
        per_slice: lesion-wise metrics on 2-D components per axial slice.
        small_lesion_voxels: small/large split (default the cohort mean).
        figures: write PNG figures.
        allow_missing: evaluate the cases present on both sides with a warning instead of failing when
            a case has only a prediction or only a label.
        images: optional ``{case: image file}`` drawn in grey under the overlay montages (first channel of a
            4-D file); a case without an image, or whose image is on another grid, is drawn on black.
        grid_tolerance_mm: largest difference between the affine entries of a prediction and its reference, in
            mm, that still counts as one grid (:func:`strokeseg.grids.affines_match`).

    Returns:
        The report folder.

    Raises:
        DataError: unmatched cases (unless ``allow_missing``), no common case, a grid mismatch (names
            both files) or an unreadable file (names it).
        KnobError: ``grid_tolerance_mm`` is not a number >= 0.
    """
    tolerance = grid_tolerance(grid_tolerance_mm)
    predictions, references = find_predictions(pred), find_labels(labels)
    only_pred = sorted(set(predictions) - set(references))
    only_ref = sorted(set(references) - set(predictions))
    if only_pred or only_ref:
        message = (
            f"cases without a label: {', '.join(only_pred) or 'none'}; "
            f"cases without a prediction: {', '.join(only_ref) or 'none'} (pred {pred}, labels {labels})"
        )
        if not allow_missing:
            raise DataError(message + "; pass allow_missing=True to evaluate the common cases.")
        logger.warning(message)
    cases = sorted(set(predictions) & set(references))
    if not cases:
        raise DataError(f"no case in common between {pred} and {labels}.")

    builder = ReportBuilder(threshold=threshold, connectivity=connectivity, per_slice=per_slice)

    def evaluate_case(case: str) -> CaseResult:
        ref, seg, prob = _load_case(predictions[case], references[case], tolerance)
        soft = None if prob is None or prob is seg else prob.data
        background = _overlay_background(images.get(case), ref) if images and figures else None
        return builder.compute_case(case, seg.data, ref.data, ref.spacing, prob=soft, background=background)

    # two cases at a time: zlib inflation and most numpy work release the GIL; only the small results
    # (rows, histograms, overlay slices) are kept, the volumes are freed case by case
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        for result in pool.map(evaluate_case, cases):
            builder.add_result(result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, do not read the remaining cases
    return builder.write(out, small_lesion_voxels=small_lesion_voxels, figures=figures)
