"""Tissue and lesion contrasts of the phantoms (the tables below), drawn per case, and noise-free rendering
of the anatomical images (DWI, ADC, FLAIR, T1/T1c, T2, non-contrast CT).

Every table value is varied by up to ±15 % per case; the lesion's departure from normal tissue is
scaled by the difficulty. Lesion changes apply to the parenchymal (GM + WM) part of a voxel only, so
CSF partial volume is kept.
"""

from __future__ import annotations

import numpy as np

from strokeseg.data.phantoms.anatomy import TissueMaps
from strokeseg.data.phantoms.difficulty import Difficulty
from strokeseg.data.phantoms.lesions import LesionMaps

__all__ = ["TISSUE_VALUES", "LESION_RULES", "draw_contrasts", "render_anatomical"]

# typical brain tissue values (WM, GM, CSF) plus head layers outside the brain (skull, scalp) for the
# non-skull-stripped layouts: cortical bone / fat-rich scalp, typical values
TISSUE_VALUES: dict[str, dict[str, float]] = {
    "dwi": {"wm": 1.0, "gm": 1.1, "csf": 0.3, "skull": 0.03, "scalp": 0.15},
    "adc": {"wm": 0.75, "gm": 0.85, "csf": 3.0, "skull": 0.3, "scalp": 1.1},  # 10^-3 mm²/s
    "flair": {"wm": 1.0, "gm": 1.2, "csf": 0.2, "skull": 0.05, "scalp": 1.4},
    "t1": {"wm": 1.0, "gm": 0.7, "csf": 0.3, "skull": 0.1, "scalp": 1.3},
    "t2": {"wm": 0.6, "gm": 0.8, "csf": 1.5, "skull": 0.1, "scalp": 0.9},
    "ct": {"wm": 30.0, "gm": 40.0, "csf": 5.0, "skull": 1000.0, "scalp": 35.0},  # HU
    "cbf": {"wm": 25.0, "gm": 60.0, "csf": 0.0},  # ml/100 g/min
    "cbv": {"wm": 2.0, "gm": 4.0, "csf": 0.0},  # ml/100 g
}
# how a lesion changes each anatomical image: (kind, penumbra key, core key)
LESION_RULES: dict[str, tuple[str, str | None, str]] = {
    "dwi": ("ratio", "dwi.penumbra_ratio", "dwi.core_ratio"),
    "adc": ("absolute", None, "adc.core"),
    "flair": ("absolute", None, "flair.core"),
    "t1": ("absolute", None, "t1.core"),
    "t2": ("absolute", None, "t2.core"),
    "ct": ("additive", None, "ct.core_delta"),
}


def _vary(rng: np.random.Generator, value: float, spread: float = 0.15) -> float:
    return float(value * (1.0 + rng.uniform(-spread, spread)))


def draw_contrasts(rng: np.random.Generator, difficulty: Difficulty, subacute: bool = False) -> dict[str, float]:
    """Per-case contrast values (flat ``"modality.key": value`` dictionary, recorded in ``phantom.json``).

    Args:
        rng: the patient's generator.
        difficulty: scales the lesion contrast.
        subacute: FLAIR / T2 show the completed infarct brightly (ISLES 2015 SISS).
    """
    c = difficulty.contrast
    values: dict[str, float] = {}
    for modality, table in TISSUE_VALUES.items():
        for key, value in table.items():
            values[f"{modality}.{key}"] = _vary(rng, value, 0.03 if modality == "ct" else 0.12)
    # lesion values: drawn inside typical ranges, departure from normal tissue scaled by the difficulty
    values["dwi.core_ratio"] = 1.0 + (rng.uniform(1.75, 2.35) - 1.0) * c
    values["dwi.penumbra_ratio"] = 1.0 + (rng.uniform(1.02, 1.15) - 1.0) * c
    adc_normal = 0.8
    values["adc.core"] = adc_normal + (rng.uniform(0.43, 0.57) - adc_normal) * c
    flair_core = rng.uniform(1.35, 1.9) if subacute else rng.uniform(1.15, 1.5)
    values["flair.core"] = 1.1 + (flair_core - 1.1) * c
    values["t1.core"] = 0.85 + (_vary(rng, 0.6, 0.1) - 0.85) * c
    values["t2.core"] = 0.7 + (_vary(rng, 1.2, 0.1) - 0.7) * c
    values["ct.core_delta"] = rng.uniform(-5.5, -3.5) * c
    # perfusion: CBF < 30 % (core) / 30-60 % (penumbra); MTT target 9-12 s / 6.5-8.5 s; CBV follows
    # from the central volume theorem, capped < 60 % in the core and ≥ normal in the penumbra
    cbf_core = 1.0 - (1.0 - rng.uniform(0.10, 0.22)) * c
    cbf_pen = 1.0 - (1.0 - rng.uniform(0.42, 0.58)) * c
    mtt_normal = 4.4
    mtt_core = mtt_normal + (rng.uniform(9.0, 12.0) - mtt_normal) * c
    mtt_pen = mtt_normal + (rng.uniform(6.5, 8.5) - mtt_normal) * c
    values["cbf.core_fraction"] = cbf_core
    values["cbf.penumbra_fraction"] = cbf_pen
    values["cbv.core_fraction"] = min(cbf_core * mtt_core / mtt_normal, 0.58 if c <= 1 else 0.45)
    values["cbv.penumbra_fraction"] = max(cbf_pen * mtt_pen / mtt_normal, 1.0)
    tmax_normal = rng.uniform(0.4, 1.4)
    values["tmax.normal"] = tmax_normal
    values["tmax.penumbra"] = tmax_normal + (rng.uniform(6.2, 8.2) - tmax_normal) * c
    values["tmax.core"] = tmax_normal + (rng.uniform(10.5, 13.5) - tmax_normal) * c
    return values


def render_anatomical(
    modality: str, tissue: TissueMaps, lesions: LesionMaps, contrasts: dict[str, float]
) -> np.ndarray:
    """Noise-free image of one anatomical modality on the grid of ``tissue``.

    Args:
        modality: ``dwi`` | ``adc`` | ``flair`` | ``t1`` | ``t2`` | ``ct``.
        tissue: tissue fractions (and head layers) on the grid.
        lesions: lesion fields on the same grid.
        contrasts: output of :func:`draw_contrasts`.

    Returns:
        ``(I, J, K)`` float32 image (CT in HU, with air at -1000 where the grid has a head).
    """
    value = {key: contrasts[f"{modality}.{key}"] for key in TISSUE_VALUES[modality]}
    parenchyma = value["wm"] * tissue.wm + value["gm"] * tissue.gm
    kind, pen_key, core_key = LESION_RULES[modality]
    w_core = lesions.weight("core")
    if kind == "ratio":
        w_pen = lesions.weight("penumbra")
        f_pen, f_core = contrasts[pen_key], contrasts[core_key]
        parenchyma *= 1.0 + w_pen * (f_pen - 1.0) + w_core * (f_core - f_pen)
    elif kind == "absolute":
        parenchyma += w_core * (tissue.parenchyma * contrasts[core_key] - parenchyma)
    else:
        parenchyma += w_core * tissue.parenchyma * contrasts[core_key]
    image = parenchyma + value["csf"] * tissue.csf
    if tissue.head is not None:
        outer_csf, skull, scalp = tissue.head
        image += value["csf"] * outer_csf + value["skull"] * skull + value["scalp"] * scalp
        if modality == "ct":
            air = np.clip(1.0 - tissue.gm - tissue.wm - tissue.csf - tissue.head.sum(axis=0), 0.0, 1.0)
            image -= 1000.0 * air
    return image.astype(np.float32, copy=False)
