"""Gaussian random fields with a power-law spectrum, the seed of turbulent structure.

A field ``g`` on a periodic box of ``shape`` cells of physical size ``spacing`` has the 3D
power spectrum ``P(k) = |g_hat(k)|^2 ~ k^-slope`` (``k`` in rad / pc, ``P(0) = 0``), zero mean
and unit variance.  A log-normal density is ``rho = rho_0 exp(sigma g - sigma^2 / 2)``, which
keeps the mean of ``rho / rho_0`` at one.

Projection law worth knowing when measuring: a thin 2D *slice* of a 3D field with
``P_3D ~ k^-slope`` has the 2D spectrum ``P_2D ~ k^-(slope - 1)``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

__all__ = ["gaussian_random_field", "lognormal_factor"]


def _wavenumbers(n: int, step: float, real: bool = False) -> np.ndarray:
    freq = np.fft.rfftfreq(n, d=step) if real else np.fft.fftfreq(n, d=step)
    return (2.0 * np.pi * freq).astype(np.float32)


def gaussian_random_field(shape, spacing, slope: float, rng: np.random.Generator,
                          dtype=np.float32, workers: int = -1) -> np.ndarray:
    """A unit-variance Gaussian random field with power spectrum ``P(k) ~ k^-slope``.

    Parameters
    ----------
    shape:
        Cells per axis, e.g. ``(distance, lon, lat)``; 1 to 3 axes.
    spacing:
        Physical size of a cell along each axis (pc), same length as ``shape``; the spectrum
        is isotropic in physical wavenumber even when cells are not cubes.
    slope:
        Spectral index ``beta`` of ``P(k) ~ k^-beta`` (3D: 11/3 is Kolmogorov, 4 is Burgers).
    rng:
        Random generator; the same generator state gives a bit-identical field.
    dtype:
        Output dtype (float32 default).
    workers:
        Threads for the inverse FFT (``-1`` = all cores; the result does not depend on it).

    Returns
    -------
    ndarray, shape ``shape``, dimensionless
        Zero mean (the k = 0 mode is zero), unit variance (normalised by the realised rms),
        periodic.
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (len(shape),)))
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise ValueError(f"gaussian_random_field needs 1 to 3 positive axis lengths, got {shape}")
    if min(spacing) <= 0:
        raise ValueError(f"cell spacing must be positive (pc), got {spacing}")
    if not np.isfinite(slope):
        raise ValueError(f"spectral slope must be finite, got {slope}")
    half = shape[:-1] + (shape[-1] // 2 + 1,)
    k2 = np.zeros(half, dtype=np.float32)
    for axis, (n, step) in enumerate(zip(shape, spacing)):
        k = _wavenumbers(n, step, real=axis == len(shape) - 1)
        index = [None] * len(shape)
        index[axis] = slice(None)
        k2 = k2 + k[tuple(index)] ** 2
    k2.flat[0] = 1.0
    amplitude = k2 ** np.float32(-slope / 4.0)  # sqrt(P) = k^(-slope/2) = (k^2)^(-slope/4)
    amplitude.flat[0] = 0.0
    del k2
    noise = rng.standard_normal(half[:-1] + (2 * half[-1],), dtype=np.float32).view(np.complex64)
    noise *= amplitude
    del amplitude
    field = scipy.fft.irfftn(noise, s=shape, workers=workers)
    del noise
    field = field.astype(dtype, copy=False)
    # the k = 0 mode is zero, so the mean vanishes; normalise by the realised rms, summed in
    # float64 over blocks of rows (deterministic, no full-size temporary)
    rows = max(1, (1 << 20) // max(1, field[0].size))
    sum_sq = sum(float(np.sum(np.square(field[i:i + rows]), dtype=np.float64))
                 for i in range(0, shape[0], rows))
    if sum_sq == 0.0:  # a box too small to hold any mode with k > 0
        return np.zeros(shape, dtype=dtype)
    field *= np.asarray(1.0 / math.sqrt(sum_sq / field.size), dtype=dtype)
    return field


def lognormal_factor(gaussian, sigma: float):
    """``exp(sigma g - sigma^2 / 2)``: a positive factor with mean one when ``g`` is unit normal.

    ``gaussian`` is an array (any shape, dimensionless); ``sigma`` is the standard deviation
    of ``ln rho``.  Returns an array of the same shape and dtype.
    """
    dtype = gaussian.dtype
    return np.exp(np.asarray(sigma, dtype) * gaussian - np.asarray(0.5 * sigma * sigma, dtype))
