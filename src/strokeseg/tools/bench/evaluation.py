"""Timing of the evaluation toolkit for ``strokeseg bench``: ``evaluate_folders`` on synthetic NIfTI cases."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from strokeseg.metrics.report import evaluate_folders

__all__ = ["benchmark_evaluate"]


def _synthetic_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A reference with 1–3 ellipsoid lesions and a prediction that shifts them and adds a small FP blob."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    ref = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        centre = [rng.uniform(0.3, 0.7) * s for s in shape]
        radii = [rng.uniform(4, 14) for _ in shape]
        shift = rng.normal(0, 1.5, size=len(shape))
        ref |= sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1
        pred |= (
            sum(((g - c - d) / (r * 0.95)) ** 2 for g, c, r, d in zip(grids, centre, radii, shift, strict=True)) <= 1
        )
    blob = [int(rng.uniform(0.2, 0.8) * s) for s in shape]
    pred[tuple(slice(b, b + 2) for b in blob)] = True
    return pred, ref


def benchmark_evaluate(num_cases: int = 20, shape: tuple[int, ...] = (230, 230, 154), with_prob: bool = False) -> dict:
    """Time :func:`evaluate_folders` (with figures) on synthetic NIfTI cases written to a temporary folder.

    Args:
        num_cases: number of cases.
        shape: volume shape (default the 1 mm ISLES 2015 SISS grid).
        with_prob: also write a float32 ``<case>_prob.nii.gz`` per case (PR/ROC curves).

    Returns:
        ``{"num_cases", "shape", "with_prob", "seconds", "seconds_per_case", "cpu_count"}``; the target is
        ``seconds < 30`` for 20 cases on 2 cores.
    """
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    with tempfile.TemporaryDirectory(prefix="strokeseg-bench-") as tmp:
        pred_dir, label_dir = Path(tmp) / "pred", Path(tmp) / "labels"
        for i in range(num_cases):
            case = f"case_{i:03d}"
            pred, ref = _synthetic_case(rng, shape)
            (pred_dir / case).mkdir(parents=True)
            label_dir.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), pred_dir / case / f"{case}_seg.nii.gz")
            nib.save(nib.Nifti1Image(ref.astype(np.uint8), affine), label_dir / f"{case}.nii.gz")
            if with_prob:
                prob = gaussian_filter(pred.astype(np.float32), 2.0)
                nib.save(nib.Nifti1Image(prob, affine), pred_dir / case / f"{case}_prob.nii.gz")
        start = time.perf_counter()
        evaluate_folders(pred_dir, label_dir, Path(tmp) / "report", figures=True)
        seconds = time.perf_counter() - start
    return {
        "num_cases": num_cases,
        "shape": list(shape),
        "with_prob": with_prob,
        "seconds": round(seconds, 3),
        "seconds_per_case": round(seconds / max(num_cases, 1), 4),
        "cpu_count": os.cpu_count(),
    }
