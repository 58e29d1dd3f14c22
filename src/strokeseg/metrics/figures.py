"""Report figures (PNG, matplotlib's Agg canvas, no pyplot state): Dice box plot, Bland-Altman plot of
volumes, PR and ROC curves with the fitted thresholds, and overlay montages (TP green, FP red, FN blue,
the colours of the figures of Clèrigues et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from strokeseg.atomic_io import atomic_path

__all__ = [
    "OverlaySlices",
    "overlay_slices",
    "save_dice_boxplot",
    "save_bland_altman",
    "save_threshold_curves",
    "save_overlay_montage",
]

_COLOURS = np.array([[0, 0, 0], [0.1, 0.85, 0.1], [0.95, 0.1, 0.1], [0.15, 0.35, 1.0]])  # bg, TP, FP, FN


@dataclass(frozen=True)
class OverlaySlices:
    """A few axial slices of one case, small enough to keep for every case until the report is written.

    Attributes:
        codes: ``(K, H', W')`` uint8, 0 background, 1 TP, 2 FP, 3 FN (cropped around the lesions).
        background: ``(K, H', W')`` float32 in ``[0, 1]`` (an image channel), or ``None``.
        indices: the slice indices along the last axis.
    """

    codes: np.ndarray
    background: np.ndarray | None
    indices: tuple[int, ...]


def overlay_slices(
    pred: np.ndarray, ref: np.ndarray, background: np.ndarray | None = None, max_slices: int = 4, margin: int = 16
) -> OverlaySlices:
    """Pick the ``max_slices`` axial slices (last axis) with the most lesion voxels (pred ∪ ref).

    Args:
        pred: predicted mask ``(H, W[, D])``.
        ref: reference mask, same shape.
        background: optional image of the same shape, shown in grey under the colours.
        max_slices: number of slices kept.
        margin: in-plane margin (voxels) around the lesions' bounding box.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.ndim == 2:
        pred, ref = pred[..., None], ref[..., None]
        background = None if background is None else np.asarray(background)[..., None]
    union = pred | ref
    per_slice = union.sum(axis=(0, 1))
    if per_slice.max() == 0:
        chosen = np.array([pred.shape[-1] // 2])
    else:
        ranked = np.argsort(per_slice, kind="stable")[::-1]
        chosen = np.sort(ranked[: min(max_slices, int((per_slice > 0).sum()))])
    rows, cols = np.flatnonzero(union.any(axis=(1, 2))), np.flatnonzero(union.any(axis=(0, 2)))
    if rows.size:
        r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, pred.shape[0])
        c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, pred.shape[1])
    else:
        r0, r1, c0, c1 = 0, pred.shape[0], 0, pred.shape[1]
    p = np.moveaxis(pred[r0:r1, c0:c1][..., chosen], -1, 0)
    r = np.moveaxis(ref[r0:r1, c0:c1][..., chosen], -1, 0)
    codes = np.zeros(p.shape, dtype=np.uint8)
    codes[p & r], codes[p & ~r], codes[~p & r] = 1, 2, 3
    bg = None
    if background is not None:
        b = np.moveaxis(np.asarray(background, dtype=np.float32)[r0:r1, c0:c1][..., chosen], -1, 0)
        lo, hi = np.percentile(b, (1, 99)) if b.size else (0.0, 1.0)
        bg = np.clip((b - lo) / (hi - lo), 0, 1).astype(np.float32) if hi > lo else np.zeros_like(b)
    return OverlaySlices(codes=codes, background=bg, indices=tuple(int(i) for i in chosen))


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return Path(path)


def _values(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    return np.array([float(r.get(name, math.nan)) for r in rows], dtype=np.float64)


def save_dice_boxplot(rows: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]], path: Path) -> Path:
    """Box plot of per-case Dice for all cases and each named group of case names, with the points."""
    by_case = {str(r["case"]): float(r["dice"]) for r in rows}
    data = {"all": list(by_case.values())}
    data.update({name: [by_case[c] for c in cases if c in by_case] for name, cases in groups.items()})
    data = {k: v for k, v in data.items() if v}
    fig = Figure(figsize=(1.6 + 1.4 * len(data), 4))
    ax = fig.add_subplot()
    ax.boxplot(list(data.values()), showmeans=True)
    ax.set_xticks(range(1, len(data) + 1), [f"{k}\n(n={len(v)})" for k, v in data.items()])
    rng = np.random.default_rng(0)
    for i, values in enumerate(data.values(), start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6, color="k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice")
    ax.set_title("Per-case Dice")
    return _save(fig, path)


def save_bland_altman(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Bland-Altman plot of predicted vs reference volumes (mL): difference against mean, bias ± 1.96 SD."""
    vp, vr = _values(rows, "vol_pred"), _values(rows, "vol_ref")
    mean, diff = (vp + vr) / 2.0, vp - vr
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    ax.scatter(mean, diff, s=14)
    bias, sd = float(np.mean(diff)), float(np.std(diff, ddof=1)) if diff.size > 1 else 0.0
    for y, style, label in (
        (bias, "-", f"bias {bias:.2f}"),
        (bias + 1.96 * sd, "--", "+1.96 SD"),
        (bias - 1.96 * sd, "--", "-1.96 SD"),
    ):
        ax.axhline(y, color="grey", linestyle=style, linewidth=1, label=label)
    ax.set_xlabel("mean of predicted and reference volume (mL)")
    ax.set_ylabel("predicted − reference volume (mL)")
    ax.set_title("Bland-Altman: lesion volume")
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_threshold_curves(
    pr: tuple[np.ndarray, np.ndarray, np.ndarray],
    roc: tuple[np.ndarray, np.ndarray, np.ndarray],
    pr_path: Path,
    roc_path: Path,
    tht0: float | None = None,
    tht1: float | None = None,
) -> tuple[Path, Path]:
    """PR curve with THT0 and ROC curve with THT1 marked.

    Args:
        pr: ``(precision, recall, thresholds)`` (decreasing thresholds).
        roc: ``(fpr, tpr, thresholds)``.
        pr_path / roc_path: PNG files to write.
        tht0 / tht1: thresholds to mark (the nearest curve point is marked).
    """
    precision, recall, t_pr = pr
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.plot(recall, precision, linewidth=1.5)
    if tht0 is not None:
        k = int(np.argmin(np.abs(t_pr - tht0)))
        ax.scatter([recall[k]], [precision[k]], color="red", zorder=3, label=f"THT0 = {tht0:.3f}")
        ax.legend(loc="lower left")
    ax.set_xlabel("recall (TPR)")
    ax.set_ylabel("precision (PPV)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title("Precision-recall (voxels)")
    _save(fig, pr_path)

    fpr, tpr, t_roc = roc
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.plot(np.r_[0.0, fpr], np.r_[0.0, tpr], linewidth=1.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    if tht1 is not None:
        k = int(np.argmin(np.abs(t_roc - tht1)))
        ax.scatter([fpr[k]], [tpr[k]], color="red", zorder=3, label=f"THT1 = {tht1:.3f}")
        ax.legend(loc="lower right")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("false positive rate (symlog)")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (voxels)")
    _save(fig, roc_path)
    return Path(pr_path), Path(roc_path)


def save_overlay_montage(overlay: OverlaySlices, title: str, path: Path) -> Path:
    """One row of slices: grey background, TP green, FP red, FN blue."""
    k = overlay.codes.shape[0]
    fig = Figure(figsize=(2.6 * k, 3.0))
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        codes = overlay.codes[i]
        grey = overlay.background[i] if overlay.background is not None else np.zeros(codes.shape, np.float32)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        lesion = codes > 0
        rgb[lesion] = 0.35 * rgb[lesion] + 0.65 * _COLOURS[codes[lesion]]
        ax.imshow(np.swapaxes(rgb, 0, 1), origin="lower", interpolation="nearest")
        ax.set_title(f"slice {overlay.indices[i]}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{title}  (TP green, FP red, FN blue)", fontsize=9)
    return _save(fig, path)
