"""Overlay montages drawn on the image: grey anatomy under TP green / FP red / FN blue."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from matplotlib.image import imread

from strokeseg.metrics.figures import overlay_slices, save_overlay_montage
from strokeseg.metrics.report import evaluate_folders


def _grey_pixels(png) -> int:
    rgb = imread(str(png))[..., :3]
    grey = (np.ptp(rgb, axis=-1) < 0.02) & (rgb.mean(axis=-1) > 0.15) & (rgb.mean(axis=-1) < 0.95)
    return int(grey.sum())


def _case(tmp_path, with_image: bool):
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    ref = np.zeros((40, 40, 6), np.uint8)
    ref[10:20, 10:20, 2:4] = 1
    pred = np.zeros_like(ref)
    pred[12:22, 10:20, 2:4] = 1  # TP, FP and FN all present
    image = (100 + 20 * rng.standard_normal(ref.shape)).astype(np.float32)
    for folder in ("pred", "labels", "images"):
        (tmp_path / folder).mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(pred, affine), str(tmp_path / "pred" / "c1_seg.nii.gz"))
    nib.save(nib.Nifti1Image(ref, affine), str(tmp_path / "labels" / "c1.nii.gz"))
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "images" / "c1_dwi.nii.gz"))
    return {"c1": tmp_path / "images" / "c1_dwi.nii.gz"} if with_image else None


def test_report_overlays_show_the_image_in_grey(tmp_path):
    images = _case(tmp_path, with_image=True)
    with_image = evaluate_folders(tmp_path / "pred", tmp_path / "labels", tmp_path / "with", images=images)
    without = evaluate_folders(tmp_path / "pred", tmp_path / "labels", tmp_path / "without")
    png_with = sorted((with_image / "figures").glob("overlay_*.png"))
    png_without = sorted((without / "figures").glob("overlay_*.png"))
    assert png_with and png_without
    assert _grey_pixels(png_with[0]) > 1000  # the anatomy is visible around the lesion colours
    assert _grey_pixels(png_without[0]) < _grey_pixels(png_with[0]) / 10


def test_image_on_another_grid_is_left_out_not_fatal(tmp_path):
    _case(tmp_path, with_image=True)
    other = tmp_path / "images" / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((30, 30, 6), np.float32), np.eye(4)), str(other))
    out = evaluate_folders(tmp_path / "pred", tmp_path / "labels", tmp_path / "out", images={"c1": other})
    assert sorted((out / "figures").glob("overlay_*.png"))


def test_montage_colours_blend_over_the_grey_image(tmp_path):
    ref = np.zeros((20, 20, 1), bool)
    ref[5:10, 5:10] = True
    pred = np.zeros_like(ref)
    pred[7:12, 5:10] = True
    background = np.tile(np.linspace(0, 1, 20, dtype=np.float32)[:, None, None], (1, 20, 1))
    overlay = overlay_slices(pred, ref, background, margin=5)
    assert overlay.background is not None and overlay.background.shape == overlay.codes.shape
    png = save_overlay_montage(overlay, "c", tmp_path / "m.png")
    rgb = imread(str(png))[..., :3]
    green = (rgb[..., 1] > rgb[..., 0] + 0.3) & (rgb[..., 1] > rgb[..., 2] + 0.3)
    red = (rgb[..., 0] > rgb[..., 1] + 0.3) & (rgb[..., 0] > rgb[..., 2] + 0.3)
    blue = (rgb[..., 2] > rgb[..., 0] + 0.3) & (rgb[..., 2] > rgb[..., 1] + 0.2)
    assert green.any() and red.any() and blue.any() and _grey_pixels(png) > 100
