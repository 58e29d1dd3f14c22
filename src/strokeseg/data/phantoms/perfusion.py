"""Perfusion of the phantoms: parametric maps (CBF, CBV, MTT, Tmax, TTP) and the 4-D bolus series they
are computed from.

Each voxel's tissue curve is a gamma variate ``C(t) = K (t - t0)^α exp(-(t - t0)/β)`` for ``t > t0``,
with arrival ``t0 = bolus arrival + Tmax``, width ``β = β0 + γ·MTT`` and area ``∝ CBV``. The maps
written with a case are the parameters of that model: TTP is the curve's peak time ``t0 + αβ``, MTT
obeys the central volume theorem ``MTT = 60·CBV/CBF``, so the maps can be recovered from the series.
CT series are ``baseline HU + κ·C(t)``; MR DSC series are ``S0·exp(-k·C(t))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokeseg.data.phantoms.anatomy import TissueMaps
from strokeseg.data.phantoms.lesions import LesionMaps

__all__ = ["BolusTiming", "PerfusionMaps", "draw_timing", "perfusion_maps", "bolus_series"]

_MIN_PARENCHYMA = 0.3  # below this GM+WM fraction a voxel is CSF: time maps are 0


@dataclass(frozen=True)
class BolusTiming:
    """Shared bolus timing of a case: arrival of the bolus in normal tissue, gamma-variate shape,
    frame count and interval, and the signal scale (``kappa``: HU per unit CBV-area for CT, ``k``: the
    MR relaxivity factor)."""

    arrival_s: float
    alpha: float
    beta0_s: float
    beta_per_mtt: float
    frames: int
    dt_s: float
    scale: float

    def summary(self) -> dict:
        """JSON-ready fields."""
        return {key: round(float(value), 4) for key, value in self.__dict__.items()}


def draw_timing(rng: np.random.Generator, modality: str) -> BolusTiming:
    """Bolus timing of a CT (40-60 frames at 1 s) or MR DSC (40-80 frames) acquisition."""
    if modality == "ct":
        # GM peak enhancement +20-60 HU: peak = κ·CBV·0.224/β with CBV 4, β ≈ 1.8 s
        return BolusTiming(
            rng.uniform(4.0, 7.0), 3.0, 1.2, 0.15, int(rng.integers(40, 61)), 1.0, rng.uniform(55.0, 100.0)
        )
    # MR: 30-50 % signal drop in GM at the peak
    return BolusTiming(
        rng.uniform(5.0, 9.0), 3.0, 1.2, 0.15, int(rng.integers(40, 81)), rng.uniform(1.0, 1.6), rng.uniform(0.9, 1.5)
    )


@dataclass
class PerfusionMaps:
    """Noise-free perfusion parameters on one grid, each ``(I, J, K)`` float32.

    Args:
        cbf: ml/100 g/min.  cbv: ml/100 g.  mtt / tmax / ttp: seconds (0 outside parenchyma).
        tissue: boolean mask of voxels that carry a tissue curve.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    ttp: np.ndarray
    tissue: np.ndarray


def perfusion_maps(
    tissue: TissueMaps, lesions: LesionMaps, contrasts: dict[str, float], timing: BolusTiming
) -> PerfusionMaps:
    """Perfusion parameters of every voxel: normal GM/WM values, lowered in the penumbra and core."""
    w_pen = lesions.weight("penumbra")
    w_core = lesions.weight("core")

    def blend(normal: float, pen: float, core: float) -> np.ndarray:
        return normal + w_pen * (pen - normal) + w_core * (core - pen)

    cbf = (contrasts["cbf.wm"] * tissue.wm + contrasts["cbf.gm"] * tissue.gm) * blend(
        1.0, contrasts["cbf.penumbra_fraction"], contrasts["cbf.core_fraction"]
    )
    cbv = (contrasts["cbv.wm"] * tissue.wm + contrasts["cbv.gm"] * tissue.gm) * blend(
        1.0, contrasts["cbv.penumbra_fraction"], contrasts["cbv.core_fraction"]
    )
    mask = (tissue.parenchyma >= _MIN_PARENCHYMA) & (cbf > 0.5)
    mtt = np.where(mask, 60.0 * cbv / np.maximum(cbf, 1e-3), 0.0).astype(np.float32)
    tmax = np.where(
        mask, blend(contrasts["tmax.normal"], contrasts["tmax.penumbra"], contrasts["tmax.core"]), 0.0
    ).astype(np.float32)
    beta = timing.beta0_s + timing.beta_per_mtt * mtt
    ttp = np.where(mask, timing.arrival_s + tmax + timing.alpha * beta, 0.0).astype(np.float32)
    return PerfusionMaps(
        cbf=cbf.astype(np.float32), cbv=cbv.astype(np.float32), mtt=mtt, tmax=tmax, ttp=ttp, tissue=mask
    )


def bolus_series(
    perfusion: PerfusionMaps,
    timing: BolusTiming,
    baseline: np.ndarray,
    modality: str,
    noise_sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """4-D series ``(I, J, K, T)`` int16 of one bolus passage with noise.

    Args:
        perfusion: voxel parameters.
        timing: shared timing and signal scale.
        baseline: ``(I, J, K)`` pre-contrast signal (HU for CT, ``S0`` for MR).
        modality: ``ct`` (HU + κ·C, Gaussian noise) or ``mr`` (S0·exp(-k·C), Rician noise).
        noise_sigma: noise standard deviation per frame.
        rng: generator of the case.
    """
    index = np.flatnonzero(perfusion.tissue)
    mtt = perfusion.mtt.ravel()[index]
    onset = timing.arrival_s + perfusion.tmax.ravel()[index]
    beta = timing.beta0_s + timing.beta_per_mtt * mtt
    area = perfusion.cbv.ravel()[index]
    gamma = float(np.prod(np.arange(1, int(timing.alpha) + 1)))  # Γ(α + 1) for integer α
    amplitude = (area / (gamma * beta ** (timing.alpha + 1))).astype(np.float32)
    flat_base = baseline.ravel()
    tissue_base = flat_base[index]
    out = np.empty((*baseline.shape, timing.frames), dtype=np.int16)
    for frame in range(timing.frames):
        s = np.maximum(np.float32(frame * timing.dt_s) - onset, 0.0).astype(np.float32)
        conc = amplitude * s**timing.alpha * np.exp(-s / beta)
        signal = flat_base.copy()
        if modality == "ct":
            signal[index] = tissue_base + timing.scale * conc
            signal = signal + noise_sigma * rng.standard_normal(signal.shape, dtype=np.float32)
            low = -1024
        else:
            signal[index] = tissue_base * np.exp(-timing.scale * conc)
            real = signal + noise_sigma * rng.standard_normal(signal.shape, dtype=np.float32)
            imag = noise_sigma * rng.standard_normal(signal.shape, dtype=np.float32)
            signal = np.sqrt(real * real + imag * imag)
            low = 0
        out[..., frame] = np.clip(np.rint(signal), low, 32767).astype(np.int16).reshape(baseline.shape)
    return out
