"""The telescope beam: a circular Gaussian applied on the (lon, lat) pixel grid.

The beam is applied as two 1D convolutions (longitude, then latitude) with kernels that
integrate the Gaussian over each pixel (``erf`` differences), normalised to unit sum, so a
point source keeps its total flux and a beam narrower than a pixel is still handled
consistently.  An axis is left alone when the beam FWHM is below :data:`MIN_BEAM_PIXELS` of
its pixels (the kernel would be a delta within float32 precision).

Edges: the sky outside the map is taken as empty (zero padding).  This is exact for
continuum-subtracted line emission of a field whose gas lies inside the grid; flux of sources
within about one beam of the map border partly leaves the map, as it would leave the
telescope's map.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..grids import Grid

__all__ = ["MIN_BEAM_PIXELS", "beam_fwhm_pixels", "gaussian_kernel", "convolve_axis", "apply_beam"]

MIN_BEAM_PIXELS = 0.1
"""Beam FWHM, in pixels, below which an axis is not convolved."""

_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))


def beam_fwhm_pixels(grid: Grid) -> tuple[float, float]:
    """The grid's beam FWHM in (lon, lat) pixels (``grid.beam_fwhm`` arcsec over the pixel sizes)."""
    fwhm_deg = grid.beam_fwhm / 3600.0
    return fwhm_deg / grid.lon.step, fwhm_deg / grid.lat.step


def gaussian_kernel(fwhm_pixels: float, truncate: float = 5.0) -> np.ndarray:
    """Pixel-integrated Gaussian kernel, float64, odd length, unit sum.

    ``fwhm_pixels`` is the FWHM in pixels (> 0).  Element ``j`` (offset ``j - K`` from the
    centre) is the Gaussian's integral over ``[j - K - 1/2, j - K + 1/2]``; the kernel extends
    ``truncate`` sigma (at least one pixel) each side.  For ``sigma`` above about one pixel its
    variance is ``sigma^2 + 1/12`` (the Gaussian convolved with the pixel).
    """
    if not (fwhm_pixels > 0 and math.isfinite(fwhm_pixels)):
        raise ValueError(f"beam FWHM must be a positive number of pixels, got {fwhm_pixels}")
    sigma = fwhm_pixels / _FWHM_PER_SIGMA
    half = max(1, int(math.ceil(truncate * sigma + 0.5)))
    edges = (np.arange(-half, half + 2) - 0.5) / (math.sqrt(2.0) * sigma)
    cdf = np.array([math.erf(e) for e in edges])
    kernel = 0.5 * np.diff(cdf)
    return kernel / kernel.sum()


def convolve_axis(x: torch.Tensor, kernel: np.ndarray, dim: int) -> torch.Tensor:
    """Convolve ``x`` along ``dim`` with a symmetric odd-length ``kernel``, zero padding.

    Returns a tensor of the same shape, dtype and device (differentiable; implemented as a sum
    of shifted copies, so it costs ``len(kernel)`` passes over ``x``).
    """
    half = (len(kernel) - 1) // 2
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = half
    pad = x.new_zeros(shape)
    padded = torch.cat([pad, x, pad], dim=dim)
    out = float(kernel[half]) * x
    in_place = not (torch.is_grad_enabled() and x.requires_grad)  # saves two full-size temporaries
    for j in range(1, half + 1):
        weight = float(kernel[half + j])
        left, right = padded.narrow(dim, half - j, n), padded.narrow(dim, half + j, n)
        if in_place:
            out.add_(left, alpha=weight).add_(right, alpha=weight)
        else:
            out = out + weight * (left + right)
    return out


def apply_beam(cube: torch.Tensor, grid: Grid, lon_dim: int = 1, lat_dim: int = 2) -> torch.Tensor:
    """Convolve a brightness cube with the grid's Gaussian beam.

    ``cube`` is e.g. ``(B, lon, lat, velocity)`` (any shape; ``lon_dim`` and ``lat_dim`` name the
    sky axes) in any linear brightness unit (K of Rayleigh-Jeans temperature, not Planck
    brightness temperature).  Returns the same shape and unit.  Axes where the beam is smaller
    than :data:`MIN_BEAM_PIXELS` pixels are left unchanged; see the module text for the edges.
    """
    for dim, fwhm in zip((lon_dim, lat_dim), beam_fwhm_pixels(grid)):
        if fwhm >= MIN_BEAM_PIXELS:
            cube = convolve_axis(cube, gaussian_kernel(fwhm), dim)
    return cube
