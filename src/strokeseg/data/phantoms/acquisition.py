"""Acquisition effects of the phantoms: MR bias field, Rician (MR) and Gaussian (CT, parametric maps)
noise, skull stripping and quantisation to the stored data type."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bias_field", "rician", "gaussian", "to_int16"]


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(p(x, y, z))`` with ``p`` a random polynomial of total degree ≤ 2 in
    the normalised voxel coordinates, ``max |p| = amplitude``.

    The polynomial is evaluated on a grid of at most 16 nodes per axis and upsampled trilinearly
    (``torch.nn.functional.interpolate``), which is exact enough for such a smooth field and cheap.

    Args:
        shape: ``(I, J, K)``.
        rng: generator of the case.
        amplitude: peak log-amplitude (0.06 ≈ ±6 %).

    Returns:
        ``(I, J, K)`` float32 field.
    """
    coarse_shape = [min(n, 16) for n in shape]
    x, y, z = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in coarse_shape), indexing="ij")
    coeffs = rng.uniform(-1.0, 1.0, size=(3, 3, 3))
    log_field = sum(
        coeffs[p, q, r] * x**p * y**q * z**r for p in range(3) for q in range(3 - p) for r in range(3 - p - q)
    )
    log_field -= log_field.mean()
    log_field *= amplitude / max(float(np.abs(log_field).max()), 1e-6)
    coarse = torch.from_numpy(np.exp(log_field).astype(np.float32))[None, None]
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _magnitude(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``|values + sigma·(n_re + i·n_im)|`` in float32, computed in place on two buffers (real part drawn first)."""
    real = rng.standard_normal(values.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += values
    np.multiply(real, real, out=real)
    imag = rng.standard_normal(values.shape, dtype=np.float32)
    imag *= np.float32(sigma)
    np.multiply(imag, imag, out=imag)
    real += imag
    return np.sqrt(real, out=real)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma`` (float32).

    With ``mask`` (skull-stripped data) only the masked voxels are noised and the rest is set to 0.
    """
    if mask is None:
        return _magnitude(image, sigma, rng)
    out = np.zeros(image.shape, dtype=np.float32)
    out[mask] = _magnitude(image[mask], sigma, rng)
    return out


def gaussian(
    image: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    floor: float | None = None,
) -> np.ndarray:
    """Image plus Gaussian noise (CT, parametric maps); masked voxels only when ``mask`` is given (rest 0),
    clipped below at ``floor`` when given."""
    if mask is None:
        out = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    else:
        out = np.zeros_like(image)
        values = image[mask]
        out[mask] = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    if floor is not None:
        np.maximum(out, floor, out=out)
        if mask is not None:
            out[~mask] = 0
    return out.astype(np.float32)


def to_int16(image: np.ndarray, low: int = -1024, high: int = 32767) -> np.ndarray:
    """Round and clip to int16 (CT in HU, raw 4-D signal)."""
    return np.clip(np.rint(image), low, high).astype(np.int16)
