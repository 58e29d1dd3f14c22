"""PNG montage of a synthetic case: every modality on a few axial slices through the lesion, with the
label outline, and the bolus curves of a lesion region and its mirror region for 4-D series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from strokeseg.data.phantoms.case import PhantomCase, Volume
from strokeseg.data.phantoms.grids import mirror_voxels

__all__ = ["write_preview", "lesion_slices"]


def lesion_slices(label: np.ndarray, count: int = 4) -> list[int]:
    """Up to ``count`` axial slice indices spread over the lesion (the middle slices without a lesion)."""
    area = label.reshape(-1, label.shape[2]).sum(axis=0)
    present = np.flatnonzero(area)
    if present.size == 0:
        return sorted({int(round(x)) for x in np.linspace(label.shape[2] * 0.3, label.shape[2] * 0.7, count)})
    picks = np.linspace(0, present.size - 1, min(count, present.size))
    return sorted({int(present[int(round(p))]) for p in picks})


def _spatial(volume: Volume) -> np.ndarray:
    data = volume.data
    if data.ndim == 3:
        return data
    series = data.reshape(*data.shape[:3], -1).astype(np.float32)
    deviation = np.abs(series - series[..., :3].mean(axis=-1, keepdims=True)).reshape(-1, series.shape[-1])
    return series[..., int(np.argmax(deviation.mean(axis=0)))]  # frame of strongest contrast: near the peak


def _window(image: np.ndarray, token: str) -> tuple[float, float]:
    if token == "CT" or token.endswith("4DPWI") and image.min() < -100:
        return 0.0, 80.0
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.9])
    return float(low), float(high if high > low else low + 1)


def write_preview(case: PhantomCase, path: str | Path, slices: int = 4) -> Path:
    """Write a montage PNG of ``case`` (matplotlib, Agg backend) and return its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = case.label.data.astype(bool)
    picks = lesion_slices(label, slices)
    series_token = next((t for t, v in case.volumes.items() if v.data.ndim > 3), None)
    rows = list(case.volumes) + ["label"]
    ncols = len(picks) + (1 if series_token else 0)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.2 * len(rows)), squeeze=False)
    plane = case.meta["midsagittal_plane"]
    for row, token in enumerate(rows):
        volume = case.label if token == "label" else case.volumes[token]
        image = _spatial(volume).astype(np.float32)
        same_grid = volume.grid.shape == case.label.grid.shape and np.allclose(volume.affine, case.label.affine)
        low, high = (0.0, 1.0) if token == "label" else _window(image, token)
        for col, k in enumerate(picks):
            ax = axes[row, col]
            if not same_grid:  # another grid (ISLES 2022 FLAIR): the slice through the same world point
                centre = case.label.grid.world(np.array([label.shape[0] / 2, label.shape[1] / 2, k]))
                k_own = int(np.clip(np.rint(volume.grid.voxel(centre)[2]), 0, image.shape[2] - 1))
                ax.imshow(image[:, :, k_own].T, cmap="gray", origin="lower", vmin=low, vmax=high)
            else:
                ax.imshow(image[:, :, k].T, cmap="gray", origin="lower", vmin=low, vmax=high)
                if label[:, :, k].any():
                    ax.contour(label[:, :, k].T.astype(float), levels=[0.5], colors="r", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"slice {k}", fontsize=7)
            if col == 0:
                ax.set_ylabel(token, fontsize=7)
        if series_token:
            ax = axes[row, -1]
            ax.axis("off")
    if series_token:
        ax = axes[0, -1]
        ax.axis("on")
        series = case.volumes[series_token].data
        series = series.reshape(*series.shape[:3], -1)
        voxels = np.argwhere(label)
        if voxels.size:
            mirrored, inside = mirror_voxels(case.label.grid, plane["point_mm"], plane["normal"], voxels)
            t = np.arange(series.shape[-1]) * (case.volumes[series_token].dt_s or 1.0)
            lesion_curve = series[tuple(voxels.T)].mean(axis=0)
            mirror_curve = series[tuple(mirrored[inside].T)].mean(axis=0)
            ax.plot(t, lesion_curve, "r", lw=1, label="lesion")
            ax.plot(t, mirror_curve, "b", lw=1, label="mirror")
            ax.legend(fontsize=6)
        ax.set_title(series_token, fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{case.plan.layout} {case.plan.name} ({case.meta['label']['semantics']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path
